//! Types that cross the kernel boundary, shared by `netstat-ebpf` and
//! `netstat-user`.
//!
//! Everything here is `#[repr(C)]`, built from fixed-width integers only
//! (no `bool`, enum or `Option`), ordered so there is no implicit padding,
//! and its size is pinned by a `const` assertion so both sides agree.
#![no_std]

use core::mem::size_of;

/// Name of the ring buffer that carries every event to user space.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU counters, indexed by [`counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the per-socket owner map.
pub const SOCKS_MAP: &str = "SOCKS";
/// Name of the listener owner map.
pub const LISTENERS_MAP: &str = "LISTENERS";
/// Name of the global that holds the ports to follow.
pub const PORTS_GLOBAL: &str = "PORTS";
/// How many ports the kernel side can filter on; with more, user space
/// filters alone.
pub const MAX_PORTS: usize = 8;
/// Name of the global that holds kernel struct offsets.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Indexes into the per-CPU counters map.
pub mod counter {
    /// Events the ring buffer had no room for.
    pub const RING_FULL: u32 = 0;
    /// Transitions the first program missed by nesting and the second caught.
    pub const RECOVERED: u32 = 1;
    /// How many counters there are.
    pub const COUNT: u32 = 2;
}

/// `kind` of a [`StateChange`].
pub const EVENT_STATE_CHANGE: u32 = 1;

/// `kind` of a [`UdpEvent`].
pub const EVENT_UDP: u32 = 2;

/// `kind` of a [`TcpEvent`].
pub const EVENT_TCP: u32 = 3;

/// `kind` of an [`ExecEvent`].
pub const EVENT_EXEC: u32 = 4;

/// `kind` of a [`ProcEvent`].
pub const EVENT_PROC: u32 = 5;

/// What a [`ProcEvent`] reports.
pub mod proc_op {
    /// A new process (not a thread) was forked: `pid` is the child.
    pub const FORK: u32 = 1;
    /// A process's main thread exited.
    pub const EXIT: u32 = 2;
}

/// Bytes of [`ExecEvent::exe`] that components may start in; a path
/// longer than this is cut (and flagged).
pub const EXE_LIMIT: usize = 512;
/// The longest component the kernel side copies (`NAME_MAX` + NUL).
pub const EXE_COMPONENT: usize = 256;
/// How many components of a path the kernel side walks up at most.
pub const EXE_DEPTH: u32 = 24;
/// Bytes of the command line an [`ExecEvent`] carries.
pub const ARGS_BYTES: usize = 512;

/// What a [`TcpEvent`] reports.
pub mod tcp_op {
    /// The kernel retransmitted a segment (`tcp:tcp_retransmit_skb`).
    pub const RETRANSMIT: u32 = 1;
    /// The kernel sent a reset (`tcp:tcp_send_reset`); the socket may be
    /// none, for a reset answering a segment no socket wanted.
    pub const SEND_RESET: u32 = 2;
    /// A socket received a reset (`tcp:tcp_receive_reset`).
    pub const RECEIVE_RESET: u32 = 3;
}

/// Which end closed a connection first, as [`StateChange::closer`] says.
pub mod closer {
    /// Not known: neither end's FIN was seen.
    pub const UNKNOWN: u8 = 0;
    /// This end sent the first FIN (`ESTABLISHED -> FIN_WAIT1`).
    pub const LOCAL: u8 = 1;
    /// The peer did (`ESTABLISHED -> CLOSE_WAIT`).
    pub const REMOTE: u8 = 2;
}

/// What a [`UdpEvent`] reports.
pub mod udp_op {
    /// `bind()` succeeded: `addr`/`port` are local.
    pub const BIND: u16 = 1;
    /// `connect()` was called: `addr`/`port` are the peer.
    pub const CONNECT: u16 = 2;
    /// The socket was released.
    pub const CLOSE: u16 = 3;
}

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
/// Address families as the kernel numbers them.
pub const AF_INET6: u16 = 10;

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// The process a socket belongs to, captured in process context.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Thread-group id (what netstat calls the PID); 0 when unknown.
    pub pid: u32,
    /// Real uid of the process.
    pub uid: u32,
    /// Its cgroup v2 id (the cgroup directory's inode number) at that
    /// moment; 0 when unknown.
    pub cgroup: u64,
    /// `comm` of the process, NUL-padded, untrusted.
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<Owner>() == 32);

/// One TCP state transition, as `sock:inet_sock_set_state` saw it.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct StateChange {
    /// Always [`EVENT_STATE_CHANGE`]; first in every event.
    pub kind: u32,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// `CLOCK_BOOTTIME` in ns.
    pub ts_ns: u64,
    /// Socket cookie: unique for the socket's life and never reused.
    pub sock: u64,
    /// When the socket entered its old state (`CLOCK_BOOTTIME` ns); 0 when unknown.
    pub prev_ts_ns: u64,
    /// When bnetstat first saw the socket (`CLOCK_BOOTTIME` ns); 0 when unknown.
    pub first_ts_ns: u64,
    /// Bytes the socket's owners handed to `sendmsg` since bnetstat saw it;
    /// set only on the change to `CLOSE`, and only while `life` counts.
    pub bytes_sent: u64,
    /// Bytes they took from `recvmsg` (peeks not counted), as `bytes_sent`.
    pub bytes_received: u64,
    /// Local address: IPv4 in the first 4 bytes, or IPv6; network order.
    pub saddr: [u8; 16],
    /// Remote address, as `saddr`.
    pub daddr: [u8; 16],
    /// Who owns the socket (not who happened to be on the CPU).
    pub owner: Owner,
    /// Local port, host order.
    pub sport: u16,
    /// Remote port, host order.
    pub dport: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// State before (see [`tcp_state`]).
    pub oldstate: u8,
    /// State after (see [`tcp_state`]).
    pub newstate: u8,
    /// On a change to `CLOSE`, the socket's pending error (`sk_err`, an
    /// errno such as `ECONNRESET`); 0 for a clean close and other changes.
    pub error: u32,
    /// Which end sent the first FIN (see [`closer`]).
    pub closer: u8,
    /// 1 when bnetstat saw the socket born (`connect`, `listen`, or a
    /// listener accepting it), so `first_ts_ns` and the byte counts cover
    /// its whole life; 0 for one already open when bnetstat started.
    pub born: u8,
    /// Keeps the size a multiple of 8.
    pub _pad: u16,
}
const _: () = assert!(size_of::<StateChange>() == 136);

/// A retransmit or reset, with the socket's owner when bnetstat knows it.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct TcpEvent {
    /// Always [`EVENT_TCP`].
    pub kind: u32,
    /// See [`tcp_op`].
    pub op: u32,
    /// `CLOCK_BOOTTIME` in ns.
    pub ts_ns: u64,
    /// Socket cookie; 0 when the kernel acted for no socket.
    pub sock: u64,
    /// The socket's owner; all zeros when unknown.
    pub owner: Owner,
    /// [`AF_INET`] or [`AF_INET6`]; 0 when there is no socket.
    pub family: u16,
    /// Keeps the size a multiple of 8.
    pub _pad: [u16; 3],
}
const _: () = assert!(size_of::<TcpEvent>() == 64);

/// A UDP socket's bind, connect or close, seen in the caller's syscall.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct UdpEvent {
    /// Always [`EVENT_UDP`].
    pub kind: u32,
    /// Inode number of the caller's network namespace.
    pub netns: u32,
    /// `CLOCK_BOOTTIME` in ns.
    pub ts_ns: u64,
    /// Socket cookie.
    pub sock: u64,
    /// Local address for `BIND`, peer for `CONNECT`; IPv4 in the first 4
    /// bytes; network order.
    pub addr: [u8; 16],
    /// The calling process.
    pub owner: Owner,
    /// Port, host order.
    pub port: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// See [`udp_op`].
    pub op: u16,
    /// Keeps the size a multiple of 8.
    pub _pad: u16,
}
const _: () = assert!(size_of::<UdpEvent>() == 80);

/// A process image started (`sched_process_exec`), captured at that
/// moment so a process that exits a millisecond later is still named.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct ExecEvent {
    /// Always [`EVENT_EXEC`].
    pub kind: u32,
    /// Thread-group id.
    pub pid: u32,
    /// `CLOCK_BOOTTIME` in ns.
    pub ts_ns: u64,
    /// The process that execs (its comm, uid and cgroup now).
    pub owner: Owner,
    /// Thread-group id of its parent (`real_parent`).
    pub ppid: u32,
    /// How many bytes of `args` hold the command line: NUL-separated
    /// arguments, as `/proc/PID/cmdline` has them.
    pub args_len: u32,
    /// How many components `exe` holds.
    pub exe_depth: u32,
    /// 1 when the path was longer or deeper than the kernel side walks:
    /// `exe` then holds its last components only.
    pub exe_cut: u32,
    /// The executable's path (`mm->exe_file`, what `/proc/PID/exe` shows)
    /// as NUL-terminated components, file name first, up to its root.
    /// Untrusted.
    pub exe: [u8; EXE_LIMIT + EXE_COMPONENT],
    /// The command line, untrusted.
    pub args: [u8; ARGS_BYTES],
}
const _: () = assert!(size_of::<ExecEvent>() == 64 + EXE_LIMIT + EXE_COMPONENT + ARGS_BYTES);

/// A process forked or exited.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ProcEvent {
    /// Always [`EVENT_PROC`].
    pub kind: u32,
    /// See [`proc_op`].
    pub op: u32,
    /// `CLOCK_BOOTTIME` in ns.
    pub ts_ns: u64,
    /// The child for a fork, the process for an exit.
    pub pid: u32,
    /// The parent for a fork; 0 for an exit.
    pub ppid: u32,
}
const _: () = assert!(size_of::<ProcEvent>() == 24);

/// Per-socket state the kernel side carries between events.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct SockInfo {
    /// When the socket entered its current state (`CLOCK_BOOTTIME` ns); 0
    /// for an entry user space seeded, whose state bnetstat did not see begin.
    pub since_ns: u64,
    /// When bnetstat first saw a transition of it; 0 for a seeded entry.
    pub first_ns: u64,
    /// Bytes sent and received through `sendmsg`/`recvmsg` while `life`
    /// counts; added to atomically, as threads share sockets.
    pub bytes_sent: u64,
    /// See `bytes_sent`.
    pub bytes_received: u64,
    /// Who owns it.
    pub owner: Owner,
    /// See [`StateChange::closer`].
    pub closer: u8,
    /// See [`StateChange::born`].
    pub born: u8,
    /// Keeps the size a multiple of 8.
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<SockInfo>() == 72);

/// Key of the listener table: where a listening socket waits.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct ListenKey {
    /// Network namespace inode.
    pub netns: u32,
    /// Local port, host order.
    pub port: u16,
    /// Address family.
    pub family: u16,
    /// Bound address; all zeros for a wildcard listener.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<ListenKey>() == 24);

/// A listening socket's owner, handed to the connections it accepts.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct Listener {
    /// The listening socket's cookie, so only its own close removes the entry.
    pub sock: u64,
    /// Who listens.
    pub owner: Owner,
}
const _: () = assert!(size_of::<Listener>() == 40);

/// Byte offsets of the kernel struct fields the programs read, taken from
/// the running kernel's BTF at start-up (Rust eBPF has no CO-RE).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `sock.__sk_common.skc_daddr` (IPv4 remote, followed by `skc_rcv_saddr`).
    pub skc_daddr: u32,
    /// `sock.__sk_common.skc_rcv_saddr`.
    pub skc_rcv_saddr: u32,
    /// `sock.__sk_common.skc_dport`.
    pub skc_dport: u32,
    /// `sock.__sk_common.skc_family`.
    pub skc_family: u32,
    /// `sock.__sk_common.skc_net` (a `struct net *`).
    pub skc_net: u32,
    /// `sock.__sk_common.skc_v6_daddr`.
    pub skc_v6_daddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr`.
    pub skc_v6_rcv_saddr: u32,
    /// `sock.sk_protocol` (a `u16` since Linux 5.6).
    pub sk_protocol: u32,
    /// `inet_sock.inet_sport`: still set at `CLOSE`, unlike `skc_num`.
    pub inet_sport: u32,
    /// `net.ns.inum`.
    pub net_ns_inum: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.comm`.
    pub task_comm: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `sock.sk_err`.
    pub sk_err: u32,
    /// `task_struct.nsproxy`.
    pub task_nsproxy: u32,
    /// `nsproxy.net_ns`.
    pub nsproxy_net_ns: u32,
    /// `task_struct.pid` (the thread id).
    pub task_pid: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `mm_struct.arg_start`.
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`.
    pub mm_arg_end: u32,
    /// `file.f_path.mnt`.
    pub file_path_mnt: u32,
    /// `file.f_path.dentry`.
    pub file_path_dentry: u32,
    /// `dentry.d_parent`.
    pub dentry_parent: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `mount.mnt`: where the `vfsmount` sits inside its `struct mount`.
    pub mount_mnt: u32,
    /// `mount.mnt_parent`.
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `sock.__sk_common.skc_state`.
    pub skc_state: u32,
    /// `sock.sk_ack_backlog`: a listener's Recv-Q.
    pub sk_ack_backlog: u32,
    /// `sock.sk_max_ack_backlog`: a listener's Send-Q.
    pub sk_max_ack_backlog: u32,
    /// `sock.sk_backlog.rmem_alloc`: a UDP socket's Recv-Q, with...
    pub sk_rmem_alloc: u32,
    /// ... `udp_sock.forward_deficit` taken off it.
    pub udp_forward_deficit: u32,
    /// `sock.sk_wmem_alloc`: a UDP socket's Send-Q, plus one.
    pub sk_wmem_alloc: u32,
    /// `tcp_sock.rcv_nxt`, less `copied_seq`: a connection's Recv-Q.
    pub tcp_rcv_nxt: u32,
    /// `tcp_sock.copied_seq`.
    pub tcp_copied_seq: u32,
    /// `tcp_sock.write_seq`, less `snd_una`: a connection's Send-Q.
    pub tcp_write_seq: u32,
    /// `tcp_sock.snd_una`.
    pub tcp_snd_una: u32,
}
const _: () = assert!(size_of::<Offsets>() == 168);

/// An open socket file of a process, as the `iter/task_file` walk finds it.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct SocketFile {
    /// The socket's inode number (what `sock_diag` calls `idiag_inode`).
    pub ino: u64,
    /// Thread-group id of the process holding it.
    pub pid: u32,
    /// Its file descriptor there.
    pub fd: u32,
    /// `comm` of the process, NUL-padded, untrusted.
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<SocketFile>() == 32);

/// A socket's queues now, as the `iter/tcp` and `iter/udp` walks read
/// them: what `sock_diag` reports as `idiag_rqueue` and `idiag_wqueue`.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct SocketQueues {
    /// Socket cookie.
    pub sock: u64,
    /// Recv-Q: bytes not yet read, or a listener's connections not yet
    /// accepted.
    pub recv_q: u32,
    /// Send-Q: bytes not yet acknowledged, or a listener's backlog.
    pub send_q: u32,
}
const _: () = assert!(size_of::<SocketQueues>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, made only of integers, with no padding.
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::ListenKey {}
    unsafe impl aya::Pod for super::Listener {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::SocketFile {}
    unsafe impl aya::Pod for super::SocketQueues {}
}
