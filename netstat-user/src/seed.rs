//! The start-up snapshot: every socket that already exists, with its owner,
//! straight from the kernel (`sock_diag` for sockets, `iter/task_file` for
//! who holds them), handed to the model and to the kernel side.

use std::{collections::HashMap, net::IpAddr, os::unix::fs::MetadataExt as _};

use anyhow::{Context as _, Result};
use netstat_common::{AF_INET, AF_INET6, ListenKey, Listener, Owner as RawOwner, SocketFile};

use crate::{
    decode::{Family, Owner, TcpState, comm_string, split_args},
    kernel::Kernel,
    model::{Sock, Timer, TimerKind},
    netns,
    procs::Process,
    sockdiag::{self, DiagSocket, Proto},
};

/// Inode number of the network namespace bnetstat runs in.
pub fn own_netns() -> Result<u32> {
    let meta = std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    Ok(meta.ino() as u32)
}

/// Which sockets a snapshot takes: dumping only what will be shown is most
/// of what makes a cold start fast.
#[derive(Clone)]
pub struct Scope {
    pub protos: Vec<Proto>,
    /// `AF_INET`, `AF_INET6`.
    pub families: Vec<u16>,
    /// Every network namespace, not only bnetstat's own.
    pub all_netns: bool,
}

impl Scope {
    /// The network namespaces it covers besides bnetstat's own.
    pub fn others(&self) -> Result<Vec<netns::NetNs>> {
        if self.all_netns {
            netns::others()
        } else {
            Ok(Vec::new())
        }
    }

    /// Every socket of `protos`, both families, every network namespace.
    pub fn everywhere(protos: &[Proto]) -> Scope {
        Scope {
            protos: protos.to_vec(),
            families: vec![AF_INET, AF_INET6],
            all_netns: true,
        }
    }
}

/// Takes the snapshot at `now_ns` (`CLOCK_BOOTTIME`) and tells the kernel
/// side the owners it found.
pub fn take(kernel: &mut Kernel, now_ns: u64, scope: &Scope) -> Result<Vec<(u64, Sock)>> {
    // Sockets first, then files: a socket the dump saw and that still exists
    // has its file in the later walk.
    let diag = dump_scope(scope, &scope.others()?)?;
    let owners = owners_by_inode(&kernel.socket_files()?);
    let rows: Vec<(u64, Sock)> = diag
        .into_iter()
        .flat_map(|(netns, socks)| socks.into_iter().map(move |d| (netns, d)))
        .filter_map(|(netns, d)| {
            let owner = owners.get(&u64::from(d.inode)).cloned();
            Some((d.cookie, sock(d, owner, netns, now_ns)?))
        })
        .collect();
    kernel.seed_owners(
        rows.iter()
            .filter_map(|(cookie, s)| Some((*cookie, raw_owner(s.owner.as_ref()?))))
            .collect::<Vec<_>>(),
        rows.iter()
            .filter(|(_, s)| s.proto == Proto::Tcp && s.state == TcpState::Listen)
            .filter_map(|(cookie, s)| {
                let owner = raw_owner(s.owner.as_ref()?);
                Some((
                    listen_key(s),
                    Listener {
                        sock: *cookie,
                        owner,
                    },
                ))
            })
            .collect::<Vec<_>>(),
    )?;
    Ok(rows)
}

/// Tells the kernel side who owns every TCP socket open now, so that the
/// transitions of connections older than bnetstat, and the connections
/// their listeners accept, name their owner.
pub fn owners(kernel: &mut Kernel) -> Result<()> {
    let scope = Scope::everywhere(&[Proto::Tcp]);
    take(kernel, crate::clock::boottime_ns(), &scope).map(drop)
}

/// Every process running now, read once from `/proc` at start-up: later
/// ones are told of by the kernel side's exec and fork events.
pub fn processes() -> Vec<(u32, Process)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // Gone while we look: its events, if any, say the rest.
        .filter_map(|pid| Some((pid, process(pid)?)))
        .collect()
}

fn process(pid: u32) -> Option<Process> {
    let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let args = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    Some(Process::existing(
        parent_pid(&stat)?,
        exe,
        split_args(&args),
        unified_cgroup(&cgroup),
    ))
}

/// The parent's pid from `/proc/PID/stat`: the second field after the
/// `(comm)`, which may itself hold spaces and parentheses.
fn parent_pid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The cgroup v2 path from `/proc/PID/cgroup` (its `0::` line).
fn unified_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Every UNIX socket in bnetstat's own network namespace with its owner.
/// No hook sees UNIX sockets come and go, so each table dumps them afresh.
pub fn unix(kernel: &mut Kernel) -> Result<Vec<crate::views::unix::Row>> {
    let socks = sockdiag::dump_unix().context("dumping UNIX sockets over sock_diag")?;
    let owners = owners_by_inode(&kernel.socket_files()?);
    Ok(socks
        .into_iter()
        .map(|s| {
            let owner = owners.get(&u64::from(s.inode)).cloned();
            (s, owner)
        })
        .collect())
}

/// Every TCP socket's timer now, by cookie, for `-o` redisplays: timers
/// run down with no event to tell, and `sock_diag` is what reports them in
/// milliseconds. The rows themselves still come only from events. `others`
/// are the namespaces besides bnetstat's own, as [`Scope::others`] lists.
pub fn timers(scope: &Scope, others: &[netns::NetNs]) -> Result<Vec<(u64, Option<Timer>)>> {
    if !scope.protos.contains(&Proto::Tcp) {
        return Ok(Vec::new());
    }
    let tcp = Scope {
        protos: vec![Proto::Tcp],
        ..scope.clone()
    };
    Ok(dump_scope(&tcp, others)?
        .into_iter()
        .flat_map(|(_, socks)| socks)
        .map(|d| (d.cookie, timer(&d)))
        .collect())
}

/// The sockets in `scope`, in bnetstat's namespace and in `others`, by the
/// inode of their network namespace.
fn dump_scope(scope: &Scope, others: &[netns::NetNs]) -> Result<Vec<(u32, Vec<DiagSocket>)>> {
    let dump = || dump_all(scope);
    let mut diag = vec![(own_netns()?, dump()?)];
    for ns in others {
        // A namespace that vanished since it was listed has no sockets.
        if let Ok(Ok(socks)) = netns::inside(ns, dump) {
            diag.push((ns.inode, socks));
        }
    }
    Ok(diag)
}

/// The sockets in `scope` of the calling thread's network namespace.
fn dump_all(scope: &Scope) -> Result<Vec<DiagSocket>> {
    let mut all = Vec::new();
    for &family in &scope.families {
        for &proto in &scope.protos {
            all.extend(
                sockdiag::dump(family, proto)
                    .with_context(|| format!("dumping {proto:?} sockets over sock_diag"))?,
            );
        }
    }
    Ok(all)
}

/// Who holds each socket inode: the lowest pid, as netstat shows one.
fn owners_by_inode(files: &[SocketFile]) -> HashMap<u64, Owner> {
    let mut owners: HashMap<u64, Owner> = HashMap::new();
    for f in files {
        let candidate = Owner {
            pid: f.pid,
            uid: 0,
            comm: comm_string(&f.comm),
            cgroup: 0,
        };
        owners
            .entry(f.ino)
            .and_modify(|o| {
                if f.pid < o.pid {
                    *o = candidate.clone();
                }
            })
            .or_insert(candidate);
    }
    owners
}

/// A model row from a `sock_diag` record; `None` for request sockets
/// (`NEW_SYN_RECV`), which no event would ever remove.
fn sock(d: DiagSocket, owner: Option<Owner>, netns: u32, now_ns: u64) -> Option<Sock> {
    let state = TcpState::try_from(d.state).ok()?;
    if state == TcpState::NewSynRecv {
        return None;
    }
    let family = if d.family == AF_INET6 {
        Family::Inet6
    } else {
        Family::Inet
    };
    let timer = timer(&d);
    let expires_ns = (state == TcpState::TimeWait)
        .then(|| now_ns.saturating_add(u64::from(d.timer_ms) * 1_000_000));
    Some(Sock {
        proto: d.proto,
        family,
        laddr: d.laddr,
        lport: d.lport,
        raddr: d.raddr,
        rport: d.rport,
        state,
        netns,
        owner: owner.map(|o| Owner { uid: d.uid, ..o }),
        uid: Some(d.uid),
        inode: (d.inode != 0).then_some(d.inode),
        recv_q: Some(d.recv_q),
        send_q: Some(d.send_q),
        timer,
        since_ns: None,
        expires_ns,
    })
}

/// The timer a `sock_diag` record reports.
fn timer(d: &DiagSocket) -> Option<Timer> {
    timer_kind(d.timer).map(|kind| Timer {
        kind,
        left_ms: d.timer_ms,
        retransmits: d.retrans,
    })
}

fn timer_kind(timer: u8) -> Option<TimerKind> {
    Some(match timer {
        0 => TimerKind::Off,
        1 => TimerKind::On,
        2 => TimerKind::Keepalive,
        3 => TimerKind::TimeWait,
        4 => TimerKind::Probe,
        _ => return None,
    })
}

/// Where a listener waits, as the kernel side keys it.
fn listen_key(s: &Sock) -> ListenKey {
    let (family, addr) = match s.laddr {
        IpAddr::V4(a) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&a.octets());
            (AF_INET, addr)
        }
        IpAddr::V6(a) => (AF_INET6, a.octets()),
    };
    ListenKey {
        netns: s.netns,
        port: s.lport,
        family,
        addr,
    }
}

fn raw_owner(o: &Owner) -> RawOwner {
    let mut comm = [0u8; 16];
    let n = o.comm.len().min(15);
    comm[..n].copy_from_slice(&o.comm.as_bytes()[..n]);
    RawOwner {
        pid: o.pid,
        uid: o.uid,
        cgroup: o.cgroup,
        comm,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn file(ino: u64, pid: u32, comm: &str) -> SocketFile {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        SocketFile {
            ino,
            pid,
            fd: 3,
            comm: c,
        }
    }

    fn diag(state: u8) -> DiagSocket {
        DiagSocket {
            proto: Proto::Tcp,
            family: AF_INET,
            state,
            laddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lport: 22,
            raddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            rport: 0,
            cookie: 1,
            inode: 77,
            uid: 0,
            recv_q: 0,
            send_q: 128,
            timer: 0,
            timer_ms: 0,
            retrans: 0,
        }
    }

    #[test]
    fn a_socket_shared_after_fork_is_owned_by_the_lowest_pid() {
        let owners = owners_by_inode(&[
            file(77, 300, "worker"),
            file(77, 200, "master"),
            file(78, 5, "x"),
        ]);
        assert_eq!(owners[&77].pid, 200);
        assert_eq!(owners[&77].comm, "master");
        assert_eq!(owners[&78].pid, 5);
    }

    #[test]
    fn a_diag_record_becomes_a_row_with_its_owner_and_uid() {
        let owner = Owner {
            pid: 9,
            uid: 0,
            comm: "sshd".into(),
            cgroup: 0,
        };
        let mut d = diag(10);
        d.uid = 1000;
        let s = sock(d, Some(owner), 5, 0).expect("row");
        assert_eq!(
            (s.state, s.netns, s.uid, s.inode),
            (TcpState::Listen, 5, Some(1000), Some(77))
        );
        assert_eq!(s.owner.map(|o| (o.pid, o.uid)), Some((9, 1000)));
        assert_eq!(s.timer.map(|t| t.kind), Some(TimerKind::Off));
    }

    #[test]
    fn request_sockets_are_left_out_and_time_wait_gets_its_expiry() {
        assert_eq!(sock(diag(12), None, 1, 0), None);
        let mut tw = diag(6);
        tw.timer = 3;
        tw.timer_ms = 1500;
        let s = sock(tw, None, 1, 10).expect("row");
        assert_eq!(s.expires_ns, Some(10 + 1_500_000_000));
    }

    #[test]
    fn listener_keys_match_what_the_kernel_side_reads() {
        let mut s = sock(diag(10), None, 4, 0).expect("row");
        let key = listen_key(&s);
        assert_eq!((key.netns, key.port, key.family), (4, 22, AF_INET));
        assert_eq!(&key.addr[..4], &[127, 0, 0, 1]);
        assert!(key.addr[4..].iter().all(|&b| b == 0));
        s.laddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        assert_eq!(listen_key(&s).family, AF_INET6);
    }

    #[test]
    fn a_parent_pid_is_found_past_a_comm_with_spaces_and_parentheses() {
        assert_eq!(parent_pid("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn the_unified_cgroup_is_the_zero_line() {
        let text = "12:pids:/user.slice\n1:name=systemd:/x\n0::/user.slice/session-1.scope\n";
        assert_eq!(
            unified_cgroup(text).as_deref(),
            Some("/user.slice/session-1.scope")
        );
        assert_eq!(unified_cgroup("1:cpu:/\n"), None);
    }

    #[test]
    fn this_process_is_among_the_processes() {
        let me = std::process::id();
        let found = processes().into_iter().find(|(pid, _)| *pid == me);
        let (_, p) = found.expect("this process");
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert_eq!(
            p.exe.as_deref(),
            std::env::current_exe()
                .ok()
                .as_deref()
                .and_then(|e| e.to_str())
        );
    }

    #[test]
    fn long_comms_are_cut_to_what_the_kernel_holds() {
        let raw = raw_owner(&Owner {
            pid: 1,
            uid: 2,
            comm: "a-very-long-process-name".into(),
            cgroup: 0,
        });
        assert_eq!(&raw.comm[..15], b"a-very-long-pro");
        assert_eq!(raw.comm[15], 0);
    }
}
