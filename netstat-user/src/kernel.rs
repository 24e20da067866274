//! Loads bnetstat's eBPF programs, attaches them, and hands out the raw
//! records they send and the count of those they could not.

use std::{
    io::{self, Read as _},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader, Endianness, Pod,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, Iter, ProgramError,
        iter::IterLink,
    },
};
use netstat_common::{
    COUNTERS_MAP, EVENTS_MAP, LISTENERS_MAP, ListenKey, Listener, MAX_PORTS, OFFSETS_GLOBAL, Owner,
    PORTS_GLOBAL, SOCKS_MAP, SockInfo, SocketFile, SocketQueues, counter,
};

use crate::{
    netns::{self, NetNs},
    offsets,
    sockdiag::Proto,
};

/// The eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netstat"));

/// The tracing programs and the tracepoint each attaches to.
const TRACEPOINTS: &[(&str, &str)] = &[
    (STATE_PROGRAM, "inet_sock_set_state"),
    ("inet_sock_set_state_nested", "inet_sock_set_state"),
];
/// Retransmits and resets, for `-s`'s event counters.
const TCP_EVENT_TRACEPOINTS: &[&str] =
    &["tcp_retransmit_skb", "tcp_send_reset", "tcp_receive_reset"];
/// Bytes through `sendmsg`/`recvmsg`, for `life` and `top`: they run on
/// every send and receive of every socket, so only those pay for them.
const BYTE_TRACEPOINTS: &[&str] = &["sock_send_length", "sock_recv_length"];
/// Processes' execs, forks and exits, for what `audit` says of each owner.
const PROC_TRACEPOINTS: &[&str] = &[
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_exit",
];
/// UDP hooks on `struct bpf_sock` (bind, release).
const UDP_SOCK_HOOKS: [&str; 3] = ["udp_bind4", "udp_bind6", "udp_release"];
/// UDP hooks on `struct bpf_sock_addr` (connect).
const UDP_ADDR_HOOKS: [&str; 2] = ["udp_connect4", "udp_connect6"];
/// The iterator that lists every process's socket files.
const OWNERS_ITERATOR: (&str, &str) = ("socket_owners", "task_file");
/// The iterators that read every socket's queues, one per protocol.
const QUEUE_ITERATORS: [(Proto, (&str, &str)); 2] = [
    (Proto::Tcp, ("tcp_queues", "tcp")),
    (Proto::Udp, ("udp_queues", "udp")),
];
/// The program whose nesting misses `inet_sock_set_state_nested` makes up for.
const STATE_PROGRAM: &str = "inet_sock_set_state";

/// How bnetstat's kernel side is set up.
pub struct Options<'a> {
    /// Kernel BTF to read struct offsets and attach points from.
    pub btf: &'a Path,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// How long a busy reader lets records gather between drains: see
    /// [`Kernel::wait`].
    pub batch: Duration,
    /// Follow events: TCP transitions.
    pub events: bool,
    /// With `events`: UDP sockets' binds, connects and closes, through
    /// cgroup hooks (which need CAP_NET_ADMIN).
    pub udp: bool,
    /// What a socket table needs: the fd-table iterator.
    pub sockets: bool,
    /// What a redisplayed socket table needs: the queue iterators.
    pub queues: bool,
    /// With `events`: retransmits and resets too.
    pub tcp_events: bool,
    /// With `events`: count each socket's bytes sent and received.
    pub bytes: bool,
    /// With `events`: processes' execs (program and command line), forks
    /// and exits.
    pub procs: bool,
    /// Follow only TCP sockets with one of these ports at either end; every
    /// socket when empty or when there are more than the kernel side holds.
    pub ports: &'a [u16],
}

/// The loaded, attached kernel side.
pub struct Kernel {
    /// Owns the programs and their links: dropping it detaches them.
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    /// Whether the event programs are attached.
    following: bool,
    /// When the last drain that found records ended, and the window before
    /// the next: see [`Kernel::wait`].
    drained: Instant,
    batch: Duration,
}

impl Kernel {
    /// Checks privileges, loads every program and attaches it.
    pub fn load(opts: &Options<'_>) -> Result<Kernel> {
        check_privileges(opts.events && opts.udp)?;
        let bytes = offsets::read(opts.btf)?;
        let offsets = offsets::parse(opts.btf, &bytes)?;
        let btf = Btf::parse(&bytes, Endianness::default())
            .map_err(|e| anyhow!("cannot parse kernel BTF {}: {e}", opts.btf.display()))?;
        // Without events nothing writes to the ring: a page will do.
        let ring_bytes = if opts.events { opts.ring_bytes } else { 4096 };
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(PORTS_GLOBAL, &port_filter(opts.ports), true)
            .map_max_entries(EVENTS_MAP, ring_bytes)
            .load(OBJECT)
            .map_err(load_error)?;
        if opts.events {
            for &(name, tracepoint) in TRACEPOINTS {
                let prog: &mut BtfTracePoint = program(&mut ebpf, name)?.try_into()?;
                prog.load(tracepoint, &btf)
                    .map_err(|e| program_error(name, e))?;
                prog.attach().map_err(|e| program_error(name, e))?;
            }
            let extra = [
                (opts.tcp_events, TCP_EVENT_TRACEPOINTS),
                (opts.bytes, BYTE_TRACEPOINTS),
                (opts.procs, PROC_TRACEPOINTS),
            ];
            for name in extra.iter().filter(|(on, _)| *on).flat_map(|(_, n)| *n) {
                // Each program is named after its tracepoint.
                let prog: &mut BtfTracePoint = program(&mut ebpf, name)?.try_into()?;
                prog.load(name, &btf).map_err(|e| program_error(name, e))?;
                prog.attach().map_err(|e| program_error(name, e))?;
            }
        }
        let iterators = [(opts.sockets, OWNERS_ITERATOR)]
            .into_iter()
            .chain(QUEUE_ITERATORS.map(|(_, it)| (opts.queues, it)));
        for (name, target) in iterators.filter(|(on, _)| *on).map(|(_, it)| it) {
            let iter: &mut Iter = program(&mut ebpf, name)?.try_into()?;
            iter.load(target, &btf)
                .map_err(|e| program_error(name, e))?;
        }
        if opts.events && opts.udp {
            attach_udp_hooks(&mut ebpf)?;
        }
        let events = RingBuf::try_from(take_map(&mut ebpf, EVENTS_MAP)?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, COUNTERS_MAP)?)?;
        Ok(Kernel {
            ebpf,
            events,
            counters,
            following: opts.events,
            drained: Instant::now(),
            batch: opts.batch,
        })
    }

    /// Waits until records are ready or `timeout` passes; `Ok(false)` on a
    /// timeout or a signal.
    ///
    /// Reads are batched: within the batching window of the last drain it
    /// sleeps first, so a busy ring is read at most once per window, not
    /// once per record. The kernel wakes a reader only when it had caught
    /// up, so a reader that keeps up would otherwise take a wake-up (and
    /// the producer an irq_work) for nearly every record. The first record
    /// after a quiet spell is still read at once.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let settle = self.batch.saturating_sub(self.drained.elapsed());
        let nap = settle.min(timeout);
        if !nap.is_zero() {
            thread::sleep(nap);
        }
        let mut pfd = libc::pollfd {
            fd: self.events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = timeout - nap;
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, ms) } {
            -1 => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
                e => Err(e),
            },
            n => Ok(n > 0),
        }
    }

    /// Hands every record now in the ring buffer to `f`, oldest first.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        let mut any = false;
        while let Some(record) = self.events.next() {
            f(&record);
            any = true;
        }
        if any {
            self.drained = Instant::now();
        }
    }

    /// Every socket file every process holds, straight from the kernel's fd
    /// tables (one `iter/task_file` walk).
    pub fn socket_files(&mut self) -> Result<Vec<SocketFile>> {
        let (name, _) = OWNERS_ITERATOR;
        let walk = self.iterator(name)?;
        let bytes = read_walk(walk).context("walking open files")?;
        Ok(records(&bytes))
    }

    /// The queues of every socket of `protos` now, in bnetstat's own
    /// network namespace (`own`) and in each of `others` it can still
    /// enter, by namespace inode: an iterator walks the sockets of the
    /// namespace that opens it.
    pub fn queues(
        &mut self,
        protos: &[Proto],
        own: u32,
        others: &[NetNs],
    ) -> Result<Vec<(u32, Vec<SocketQueues>)>> {
        let names: Vec<&str> = QUEUE_ITERATORS
            .iter()
            .filter(|(p, _)| protos.contains(p))
            .map(|(_, (name, _))| *name)
            .collect();
        let mut links =
            || -> Result<Vec<IterLink>> { names.iter().map(|name| self.iterator(name)).collect() };
        let read_all = |walks: Vec<IterLink>| -> Result<Vec<SocketQueues>> {
            let mut bytes = Vec::new();
            for walk in walks {
                bytes.extend(read_walk(walk)?);
            }
            Ok(records(&bytes))
        };
        let mut all = vec![(own, read_all(links()?).context("reading socket queues")?)];
        for ns in others {
            let walks = links()?;
            // A namespace that vanished since it was listed has no sockets.
            if let Ok(Ok(queues)) = netns::inside(ns, || read_all(walks)) {
                all.push((ns.inode, queues));
            }
        }
        Ok(all)
    }

    /// A fresh link of the iterator program `name`, ready to be opened.
    fn iterator(&mut self, name: &str) -> Result<IterLink> {
        let iter: &mut Iter = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let link = iter.attach().map_err(|e| program_error(name, e))?;
        Ok(iter.take_link(link)?)
    }

    /// Tells the kernel side who owns sockets that existed before it was
    /// loaded, so their later transitions, and connections their listeners
    /// accept, carry the owner. Never overwrites what the kernel captured
    /// itself in the meantime.
    pub fn seed_owners(
        &mut self,
        socks: impl IntoIterator<Item = (u64, Owner)>,
        listeners: impl IntoIterator<Item = (ListenKey, Listener)>,
    ) -> Result<()> {
        const BPF_NOEXIST: u64 = 1;
        if !self.following {
            // No program will read them.
            return Ok(());
        }
        let mut map: HashMap<_, u64, SockInfo> = HashMap::try_from(self.map_mut(SOCKS_MAP)?)?;
        for (cookie, owner) in socks {
            ignore_exists(map.insert(
                cookie,
                SockInfo {
                    owner,
                    ..SockInfo::default()
                },
                BPF_NOEXIST,
            ))?;
        }
        let mut map: HashMap<_, ListenKey, Listener> =
            HashMap::try_from(self.map_mut(LISTENERS_MAP)?)?;
        for (key, listener) in listeners {
            ignore_exists(map.insert(key, listener, BPF_NOEXIST))?;
        }
        Ok(())
    }

    /// Bytes sent and received so far by each of `socks` the kernel side
    /// still follows (`bytes` must be on), as `(cookie, sent, received)`.
    pub fn byte_totals(
        &self,
        socks: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<(u64, u64, u64)>> {
        let map = self
            .ebpf
            .map(SOCKS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no map {SOCKS_MAP}"))?;
        let map: HashMap<_, u64, SockInfo> = HashMap::try_from(map)?;
        let mut totals = Vec::new();
        for sock in socks {
            match map.get(&sock, 0) {
                Ok(info) => totals.push((sock, info.bytes_sent, info.bytes_received)),
                // Closed since: its change to `CLOSE` carries its totals.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading socket byte counters"),
            }
        }
        Ok(totals)
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("eBPF object has no map {name}"))
    }

    /// Events lost since load.
    pub fn lost(&self) -> Result<Lost> {
        if !self.following {
            return Ok(Lost::default());
        }
        let counter = |index: u32| -> Result<u64> {
            Ok(self
                .counters
                .get(&index, 0)
                .context("reading counters")?
                .iter()
                .sum())
        };
        let prog = self
            .ebpf
            .program(STATE_PROGRAM)
            .ok_or_else(|| anyhow!("no program {STATE_PROGRAM}"))?;
        let missed = recursion_misses(prog.fd()?.as_fd())?;
        Ok(Lost {
            ring_full: counter(counter::RING_FULL)?,
            nested: missed.saturating_sub(counter(counter::RECOVERED)?),
        })
    }
}

/// Events the kernel side could not deliver, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// The ring buffer had no room: user space fell behind.
    pub ring_full: u64,
    /// The kernel skipped the program as nested on a CPU
    /// (`recursion_misses`) and its stand-in did not catch the transition.
    pub nested: u64,
}

impl Lost {
    pub fn total(self) -> u64 {
        self.ring_full + self.nested
    }
}

/// Opens an iterator link in the calling thread's network namespace and
/// reads all it writes.
fn read_walk(walk: IterLink) -> Result<Vec<u8>> {
    let mut file = walk.into_file().context("opening the iterator")?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The `T` records an iterator wrote, back to back.
fn records<T: Pod>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(size_of::<T>())
        // SAFETY: a Pod is valid for any bytes; each chunk is exactly one.
        .map(|c| unsafe { c.as_ptr().cast::<T>().read_unaligned() })
        .collect()
}

fn program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("eBPF object has no program {name}"))
}

/// Attaches the UDP socket hooks at the root of the cgroup v2 hierarchy, so
/// they see every process. A cgroup link always runs beside the programs
/// already attached there; the kernel wants no flags for that.
fn attach_udp_hooks(ebpf: &mut Ebpf) -> Result<()> {
    let root = cgroup2_root()?;
    let cgroup = std::fs::File::open(&root)
        .with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
    for name in UDP_SOCK_HOOKS {
        let prog: &mut CgroupSock = program(ebpf, name)?.try_into()?;
        prog.load().map_err(|e| program_error(name, e))?;
        prog.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| program_error(name, e))?;
    }
    for name in UDP_ADDR_HOOKS {
        let prog: &mut CgroupSockAddr = program(ebpf, name)?.try_into()?;
        prog.load().map_err(|e| program_error(name, e))?;
        prog.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| program_error(name, e))?;
    }
    Ok(())
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on most systems,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> Result<PathBuf> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(dir))
        })
        .ok_or_else(|| {
            anyhow!(
                "cgroup v2 is not mounted: mount it with `mount -t cgroup2 none /sys/fs/cgroup`"
            )
        })
}

/// The kernel side's port filter: the ports, or all zeros (no filter) when
/// there are none or too many.
fn port_filter(ports: &[u16]) -> [u16; MAX_PORTS] {
    let mut filter = [0u16; MAX_PORTS];
    if ports.len() <= MAX_PORTS && !ports.contains(&0) {
        filter[..ports.len()].copy_from_slice(ports);
    }
    filter
}

/// An entry that is already there is one the kernel filled in itself.
fn ignore_exists(result: Result<(), MapError>) -> Result<()> {
    match result {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => Ok(other?),
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("eBPF object has no map {name}"))
}

/// Fails early, in one line, when bnetstat cannot load programs at all.
/// `cgroup_hooks`: the UDP hooks will be attached, which needs
/// CAP_NET_ADMIN as well.
fn check_privileges(cgroup_hooks: bool) -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| anyhow!("no CapEff in /proc/self/status"))?;
    let has = |cap: u32| eff & (1 << cap) != 0;
    if !(has(CAP_SYS_ADMIN) || has(CAP_BPF) && has(CAP_PERFMON)) {
        bail!(
            "bnetstat needs root (or CAP_BPF and CAP_PERFMON) to load its eBPF programs: run it with sudo"
        );
    }
    if cgroup_hooks && !(has(CAP_SYS_ADMIN) || has(CAP_NET_ADMIN)) {
        bail!(
            "following UDP sockets needs CAP_NET_ADMIN too (for its cgroup hooks): run it with sudo"
        );
    }
    Ok(())
}

fn load_error(err: EbpfError) -> anyhow::Error {
    match err {
        EbpfError::MapError(e) => anyhow!("the kernel refused one of bnetstat's eBPF maps: {e}"),
        EbpfError::BtfRelocationError(e) => {
            anyhow!("bnetstat's eBPF object does not fit this kernel's BTF: {e}")
        }
        e => anyhow!("cannot load bnetstat's eBPF object: {e}"),
    }
}

fn program_error(name: &str, err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let last = verifier_log.to_string();
            // The verifier ends with statistics; the reason is the line before.
            let last = last
                .lines()
                .rev()
                .find(|l| {
                    let l = l.trim();
                    !l.is_empty()
                        && !["processed ", "verification time", "stack depth"]
                            .iter()
                            .any(|stat| l.starts_with(stat))
                })
                .unwrap_or("");
            anyhow!(
                "the kernel refused bnetstat's eBPF program {name} ({io_error}); verifier: {last}"
            )
        }
        e => anyhow::Error::new(e).context(format!("cannot attach bnetstat's eBPF program {name}")),
    }
}

/// Reads a program's `recursion_misses` with `BPF_OBJ_GET_INFO_BY_FD`
/// (aya does not expose it).
fn recursion_misses(fd: BorrowedFd<'_>) -> Result<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};
    // SAFETY: both are plain C structs for which all zeros is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_prog_info>() as u32;
    attr.info.info = (&raw mut info) as u64;
    // SAFETY: attr points at info, which lives across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error()).context("BPF_OBJ_GET_INFO_BY_FD");
    }
    Ok(info.recursion_misses)
}

#[cfg(test)]
mod tests {
    use aya_obj::VerifierLog;

    use super::*;

    #[test]
    fn the_kernel_filters_ports_only_when_it_can_hold_them_all() {
        assert_eq!(port_filter(&[]), [0; MAX_PORTS]);
        assert_eq!(port_filter(&[80, 443])[..3], [80, 443, 0]);
        assert_eq!(
            port_filter(&[1; MAX_PORTS + 1]),
            [0; MAX_PORTS],
            "too many: user space filters"
        );
    }

    #[test]
    fn a_refused_program_is_named_in_one_line_with_the_verifiers_reason() {
        let err = program_error(
            "inet_sock_set_state",
            ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(libc::EACCES),
                verifier_log: VerifierLog::new(
                    "0: (79) r1 = *(u64 *)(r1 +0)\nR1 invalid mem access 'scalar'\n\n".into(),
                ),
            },
        )
        .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("refused") && err.contains("inet_sock_set_state"),
            "{err}"
        );
        assert!(err.ends_with("R1 invalid mem access 'scalar'"), "{err}");
    }
}
