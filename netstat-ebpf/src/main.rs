//! bnetstat's kernel side: TCP state transitions with their owners.
//!
//! `tp_btf/inet_sock_set_state` rather than the classic tracepoint: it is
//! called with the `struct sock *` directly, so the kernel does not build a
//! trace record first (about 0.7 µs per hit against 1.9 µs here), and it
//! needs no tracefs. The price is reading `struct sock` fields ourselves, at
//! offsets user space takes from the running kernel's BTF.
//!
//! Owners come from process context only. A socket's owner is whoever
//! called `connect()` (the `CLOSE -> SYN_SENT` transition) or `listen()`
//! (`CLOSE -> LISTEN`); both run in the caller's syscall. A connection the
//! kernel accepts is born in softirq (`LISTEN -> SYN_RECV`), where the
//! current task is whoever was interrupted: it inherits its listener's owner
//! instead. Every later transition reuses the owner stored for the socket,
//! so softirq transitions and those after the owner exited are still right.
#![no_std]
#![no_main]
// The BPF target has no atomic read-modify-write in `core::sync::atomic`,
// but the BPF instruction set has an atomic add: the intrinsic reaches it.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd for the per-socket byte counters"
)]

mod procs;
mod queues;
mod stats;
mod udp;

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_seq_write, bpf_skc_to_tcp_sock,
        },
    },
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use netstat_common::{
    AF_INET, AF_INET6, EVENT_STATE_CHANGE, ListenKey, Listener, MAX_PORTS, Offsets, Owner,
    SockInfo, SocketFile, StateChange, closer, counter, tcp_state,
};

pub(crate) const IPPROTO_TCP: u16 = 6;

/// Every event for user space. Sized by user space at load time.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// Per-CPU counters user space sums: see `netstat_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per CPU, 1 while `inet_sock_set_state` runs: see `inet_sock_set_state_nested`.
#[map]
static BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per-socket owner and time of the last transition, by socket cookie.
/// Removed when the socket reaches `CLOSE`; LRU so a missed close cannot
/// fill it.
#[map]
pub(crate) static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(1 << 18, 0);

/// Listening sockets' owners, by where they listen.
#[map]
static LISTENERS: LruHashMap<ListenKey, Listener> = LruHashMap::with_max_entries(1 << 16, 0);

/// Ports to follow (either end), set by user space before load; all zero
/// follows every socket. Filtering here keeps a busy host's other
/// connections out of the ring buffer of a `trace --port` run.
#[unsafe(no_mangle)]
static PORTS: [u16; MAX_PORTS] = [0; MAX_PORTS];

/// Kernel struct offsets, filled in by user space before load.
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: Offsets = Offsets {
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_family: 0,
    skc_net: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    sk_protocol: 0,
    inet_sport: 0,
    net_ns_inum: 0,
    task_tgid: 0,
    task_comm: 0,
    file_inode: 0,
    inode_mode: 0,
    inode_ino: 0,
    sk_err: 0,
    task_nsproxy: 0,
    nsproxy_net_ns: 0,
    task_pid: 0,
    task_real_parent: 0,
    task_mm: 0,
    mm_exe_file: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    file_path_mnt: 0,
    file_path_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    vfsmount_root: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    skc_state: 0,
    sk_ack_backlog: 0,
    sk_max_ack_backlog: 0,
    sk_rmem_alloc: 0,
    udp_forward_deficit: 0,
    sk_wmem_alloc: 0,
    tcp_rcv_nxt: 0,
    tcp_copied_seq: 0,
    tcp_write_seq: 0,
    tcp_snd_una: 0,
};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    set_busy(1);
    state_change(&ctx);
    set_busy(0);
    0
}

/// The kernel skips a tracing program that would nest on a CPU: when a
/// softirq interrupts `inet_sock_set_state` (which runs in process context
/// for connect, listen and close) and changes another socket's state, that
/// transition would be lost. This second program on the same tracepoint has
/// its own nesting guard, so it still runs then; it does the work only in
/// that case, when it finds the first one busy on this CPU.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested(ctx: BtfTracePointContext) -> i32 {
    if BUSY.get(0).is_some_and(|b| *b != 0) {
        count(counter::RECOVERED);
        state_change(&ctx);
    }
    0
}

fn state_change(ctx: &BtfTracePointContext) {
    let sk: *const u8 = ctx.arg(0);
    let oldstate: i32 = ctx.arg(1);
    let newstate: i32 = ctx.arg(2);

    // SCTP and MPTCP reach this tracepoint too.
    if field::<u16>(sk, offset!(sk_protocol)) != IPPROTO_TCP {
        return;
    }
    let family = field::<u16>(sk, offset!(skc_family));
    let (mut saddr, mut daddr) = ([0u8; 16], [0u8; 16]);
    match family {
        AF_INET => {
            saddr[..4].copy_from_slice(&field::<u32>(sk, offset!(skc_rcv_saddr)).to_ne_bytes());
            daddr[..4].copy_from_slice(&field::<u32>(sk, offset!(skc_daddr)).to_ne_bytes());
        }
        AF_INET6 => {
            saddr = ipv6(sk, offset!(skc_v6_rcv_saddr));
            daddr = ipv6(sk, offset!(skc_v6_daddr));
        }
        _ => return,
    }
    // `inet_sport` lies past `struct sock`, in `struct inet_sock`, which the
    // verifier only lets us load from through the socket's full type.
    // SAFETY: `sk` is the tracepoint's typed `struct sock *`; the helper
    // checks it is a TCP socket and returns NULL otherwise.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as *const u8;
    if tp.is_null() {
        return;
    }
    let sport = u16::from_be(field(tp, offset!(inet_sport)));
    let dport = u16::from_be(field(sk, offset!(skc_dport)));
    // SAFETY: written by user space before load; volatile keeps the zeros it
    // was declared with from being folded in.
    let ports = unsafe { core::ptr::read_volatile(&PORTS) };
    if ports[0] != 0 && !ports.iter().any(|&p| p != 0 && (p == sport || p == dport)) {
        return;
    }
    let net = field::<*const u8>(sk, offset!(skc_net));
    let netns = field::<u32>(net, offset!(net_ns_inum));

    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: `sk` is the tracepoint's typed `struct sock *`.
    let sock = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    let (oldstate, newstate) = (oldstate as u8, newstate as u8);
    let listen_key = |addr| ListenKey {
        netns,
        port: sport,
        family,
        addr,
    };

    // The socket's entry, if it has one: looked up once, updated in place,
    // never rewritten whole, since `life`'s byte counters in it may move
    // meanwhile on another CPU.
    let mut entry = None;
    // A new socket is born in the first three arms; it gets a fresh entry.
    let mut info = match (oldstate, newstate) {
        // connect() and listen(): the caller's syscall, so `current` owns it.
        (_, tcp_state::SYN_SENT) | (_, tcp_state::LISTEN) => {
            let owner = current_owner();
            if newstate == tcp_state::LISTEN {
                let _ = LISTENERS.insert(listen_key(saddr), Listener { sock, owner }, 0);
            }
            born(owner)
        }
        // A connection the kernel accepted, in softirq: its listener's owner.
        (tcp_state::LISTEN, tcp_state::SYN_RECV) => {
            // SAFETY: map values copied out at once.
            let listener = unsafe { LISTENERS.get(listen_key(saddr)) }
                .or_else(|| unsafe { LISTENERS.get(listen_key([0; 16])) })
                .copied();
            born(listener.map(|l| l.owner).unwrap_or_default())
        }
        _ => match SOCKS.get_ptr_mut(sock) {
            Some(e) => {
                entry = Some(e);
                // SAFETY: a map value pointer, valid for this program run.
                unsafe { *e }
            }
            // Open before bnetstat and not seeded: first sight, owner unknown.
            None => SockInfo::default(),
        },
    };
    let prev_ts_ns = info.since_ns;
    info.since_ns = now;
    if info.first_ns == 0 {
        info.first_ns = now;
    }
    if info.closer == closer::UNKNOWN {
        info.closer = match newstate {
            tcp_state::FIN_WAIT1 => closer::LOCAL,
            tcp_state::CLOSE_WAIT => closer::REMOTE,
            _ => closer::UNKNOWN,
        };
    }

    let mut error = 0;
    if newstate == tcp_state::CLOSE {
        // A reset or timeout leaves its errno; a clean close leaves 0, and
        // only a clean close from FIN_WAIT*/CLOSING leaves a TIME_WAIT behind.
        error = field::<i32>(sk, offset!(sk_err)) as u32;
        if entry.is_some() {
            let _ = SOCKS.remove(sock);
        }
        if oldstate == tcp_state::LISTEN {
            let key = listen_key(saddr);
            if unsafe { LISTENERS.get(key) }.is_some_and(|l| l.sock == sock) {
                let _ = LISTENERS.remove(key);
            }
        }
    } else {
        match entry {
            // SAFETY: as above; the byte counters are left to their adders.
            Some(e) => unsafe {
                (*e).since_ns = now;
                (*e).first_ns = info.first_ns;
                (*e).closer = info.closer;
            },
            None => {
                let _ = SOCKS.insert(sock, info, 0);
            }
        }
    }

    let Some(mut slot) = EVENTS.reserve::<StateChange>(0) else {
        count(counter::RING_FULL);
        return;
    };
    // Written field by field into the ring, not built on the stack and
    // copied there.
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` is the reserved, exclusively ours record.
    unsafe {
        (*ev).kind = EVENT_STATE_CHANGE;
        (*ev).netns = netns;
        (*ev).ts_ns = now;
        (*ev).sock = sock;
        (*ev).prev_ts_ns = prev_ts_ns;
        (*ev).first_ts_ns = info.first_ns;
        (*ev).bytes_sent = info.bytes_sent;
        (*ev).bytes_received = info.bytes_received;
        (*ev).saddr = saddr;
        (*ev).daddr = daddr;
        (*ev).owner = info.owner;
        (*ev).sport = sport;
        (*ev).dport = dport;
        (*ev).family = family;
        (*ev).oldstate = oldstate;
        (*ev).newstate = newstate;
        (*ev).error = error;
        (*ev).closer = info.closer;
        (*ev).born = info.born;
        (*ev)._pad = 0;
    }
    slot.submit(0);
}

/// An `in6_addr` in the socket at `off`, loaded as the four words it is
/// aligned for.
#[inline(always)]
fn ipv6(sk: *const u8, off: u32) -> [u8; 16] {
    let words = field::<[u32; 4]>(sk, off);
    let mut addr = [0u8; 16];
    for (bytes, word) in addr.chunks_exact_mut(4).zip(words) {
        bytes.copy_from_slice(&word.to_ne_bytes());
    }
    addr
}

/// A fresh entry for a socket bnetstat saw being born.
fn born(owner: Owner) -> SockInfo {
    SockInfo {
        owner,
        born: 1,
        ..SockInfo::default()
    }
}

/// Walks every process's open files (`iter/task_file`) and writes one
/// [`SocketFile`] per socket, so owners of sockets opened before bnetstat
/// started come from the kernel's own fd tables, not from `/proc/*/fd`.
/// aya-ebpf has no macro for iterators: the section names the program type.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn socket_owners(ctx: *mut c_void) -> i32 {
    let _ = try_socket_owners(ctx as *const u64);
    0
}

fn try_socket_owners(ctx: *const u64) -> Result<(), i64> {
    const S_IFMT: u16 = 0o170000;
    const S_IFSOCK: u16 = 0o140000;
    // SAFETY: `struct bpf_iter__task_file { meta; task; u32 fd; file; }`,
    // each member 8 bytes apart; task and file are NULL on the last call.
    let (meta, task, fd, file) = unsafe {
        (
            *ctx as *const *mut c_void,
            *ctx.add(1) as *const u8,
            *ctx.add(2) as u32,
            *ctx.add(3) as *const u8,
        )
    };
    if task.is_null() || file.is_null() {
        return Ok(());
    }
    let off = unsafe { core::ptr::read_volatile(&OFFSETS) };
    let inode = read::<u64>(file, off.file_inode)? as *const u8;
    if read::<u16>(inode, off.inode_mode)? & S_IFMT != S_IFSOCK {
        return Ok(());
    }
    let record = SocketFile {
        ino: read(inode, off.inode_ino)?,
        pid: read(task, off.task_tgid)?,
        fd,
        comm: read(task, off.task_comm)?,
    };
    // SAFETY: meta->seq is the iterator's seq_file; the record lives on our stack.
    unsafe {
        bpf_seq_write(
            (*meta).cast(),
            (&raw const record).cast(),
            size_of::<SocketFile>() as u32,
        );
    }
    Ok(())
}

pub(crate) fn current_owner() -> Owner {
    Owner {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        uid: bpf_get_current_uid_gid() as u32,
        // SAFETY: a helper call with no arguments to check.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

pub(crate) fn count(index: u32) {
    if let Some(n) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot. The only writer that can interrupt this
        // one is the nested program, which finishes before we resume, so
        // the increment is never torn; an atomic add would cost more.
        unsafe { *n += 1 };
    }
}

fn set_busy(v: u32) {
    if let Some(b) = BUSY.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, written only by this program.
        unsafe { *b = v };
    }
}

/// The offset user space wrote into [`OFFSETS`] for one field. `.rodata`
/// is frozen before load, so the verifier knows it as a constant and can
/// check a [`field`] load at it against the kernel's types.
macro_rules! offset {
    ($name:ident) => {
        // SAFETY: a plain read of our own static; volatile keeps the zeros
        // it was declared with from being folded in.
        unsafe { core::ptr::read_volatile(&raw const $crate::OFFSETS.$name) }
    };
}
pub(crate) use offset;

/// Loads a `T` at `off` bytes into `base`, a kernel object the verifier
/// knows the BTF type of (a `tp_btf` argument, or a pointer loaded from
/// one): a plain load, which the verifier checks against that type and makes
/// fault-safe, rather than a `bpf_probe_read_kernel` call per field, which
/// was a sixth of the cost of a transition.
#[inline(always)]
pub(crate) fn field<T>(base: *const u8, off: u32) -> T {
    // SAFETY: see above; the verifier refuses the program if `off` is not
    // a field of `base`'s type of the size of `T`.
    unsafe { core::ptr::read_volatile(base.wrapping_add(off as usize).cast::<T>()) }
}

/// Reads a `T` at `off` bytes into the kernel object at `base`, through
/// `bpf_probe_read_kernel`: for objects the verifier has no type for.
#[inline(always)]
pub(crate) fn read<T>(base: *const u8, off: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) }
        .map_err(|e| e as i64)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
