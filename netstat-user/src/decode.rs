//! Ring-buffer records to typed events.
//!
//! Records are copied out with a length check first and every kernel value
//! that names something (state, family) is checked, never transmuted.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netstat_common::{
    AF_INET, AF_INET6, EVENT_EXEC, EVENT_PROC, EVENT_STATE_CHANGE, EVENT_TCP, EVENT_UDP, ExecEvent,
    Owner as RawOwner, ProcEvent, StateChange, TcpEvent, UdpEvent, closer, proc_op, tcp_op,
    tcp_state, udp_op,
};

/// A TCP state, named as netstat prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = 1,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
}

impl TcpState {
    /// Every state, in the kernel's order.
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// The name netstat prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl TryFrom<u8> for TcpState {
    type Error = DecodeError;

    fn try_from(v: u8) -> Result<Self, DecodeError> {
        TcpState::ALL
            .get(usize::from(v).wrapping_sub(1))
            .copied()
            .ok_or(DecodeError::BadState(v))
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Address family of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    /// The name used in JSON output (`inet`, `inet6`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }
}

/// The process that owns a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub uid: u32,
    /// Raw `comm` from the kernel: untrusted, escape before printing.
    pub comm: String,
    /// Its cgroup v2 id when the kernel side saw it act; 0 when unknown.
    pub cgroup: u64,
}

/// One TCP state transition.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChangeEvent {
    /// `CLOCK_BOOTTIME` ns.
    pub ts_ns: u64,
    /// Socket cookie.
    pub sock: u64,
    pub netns: u32,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub old: TcpState,
    pub new: TcpState,
    /// Time spent in `old`, when the socket was seen entering it.
    pub ns_in_old: Option<u64>,
    /// `None` for a socket whose owner bnetstat never saw (opened before it
    /// started).
    pub owner: Option<Owner>,
    /// On a change to `CLOSE`, the socket's pending errno (`ECONNRESET`
    /// after a reset); 0 for a clean close.
    pub error: u32,
    /// On a change to `CLOSE`: what bnetstat knows of the socket's life.
    pub end: Option<Ending>,
}

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Local,
    Remote,
}

impl End {
    /// The name used in output (`local`, `remote`).
    pub fn name(self) -> &'static str {
        match self {
            End::Local => "local",
            End::Remote => "remote",
        }
    }
}

/// A socket's life as its change to `CLOSE` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    /// When bnetstat first saw it (`CLOCK_BOOTTIME` ns), if ever.
    pub first_ts_ns: Option<u64>,
    /// Whether that was its birth: otherwise it was open before bnetstat
    /// started, and the time and bytes cover only what bnetstat saw.
    pub born: bool,
    /// Bytes through `sendmsg` and `recvmsg`, when `life` counted them.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Which end sent the first FIN, when one was seen.
    pub first_fin: Option<End>,
}

/// What a [`TcpOpEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOp {
    Retransmit,
    SendReset,
    ReceiveReset,
}

/// A retransmit or a reset.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpOpEvent {
    pub ts_ns: u64,
    /// Socket cookie; 0 when the kernel acted for no socket.
    pub sock: u64,
    pub op: TcpOp,
    /// `None` with no socket.
    pub family: Option<Family>,
    pub owner: Option<Owner>,
}

/// What happened to a UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpOp {
    /// Bound to `addr`:`port`.
    Bind,
    /// Connected to `addr`:`port`.
    Connect,
    Close,
}

/// A UDP socket's bind, connect or close, with the process that did it.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpSocketEvent {
    pub ts_ns: u64,
    pub sock: u64,
    pub netns: u32,
    pub family: Family,
    pub op: UdpOp,
    pub addr: IpAddr,
    pub port: u16,
    pub owner: Option<Owner>,
}

/// A process started a new program, as the kernel saw it at exec.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecInfo {
    pub ts_ns: u64,
    /// The process (pid, uid, comm and cgroup after the exec).
    pub owner: Owner,
    pub ppid: u32,
    /// The executable's full path, as `/proc/PID/exe` shows it; `None`
    /// when the kernel side could not walk it. A path too long to walk
    /// whole starts with `...`. Untrusted.
    pub exe: Option<String>,
    /// The arguments, as `/proc/PID/cmdline` has them (at most
    /// [`netstat_common::ARGS_BYTES`] bytes of them). Untrusted.
    pub args: Vec<String>,
}

/// A process forked or exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcChange {
    /// `pid` was forked by `ppid` (a process, not a thread).
    Fork { pid: u32, ppid: u32 },
    /// `pid`'s main thread exited.
    Exit { pid: u32 },
}

/// Everything the kernel side sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    StateChange(StateChangeEvent),
    Udp(UdpSocketEvent),
    Tcp(TcpOpEvent),
    Exec(ExecInfo),
    Proc { ts_ns: u64, change: ProcChange },
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind needs (or than a kind).
    Truncated {
        kind: u32,
        len: usize,
    },
    /// A kind this build does not know: the kernel side is newer.
    UnknownKind(u32),
    BadState(u8),
    BadFamily(u16),
    BadUdpOp(u16),
    BadTcpOp(u32),
    BadProcOp(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { kind, len } => {
                write!(f, "record of kind {kind} truncated at {len} bytes")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            DecodeError::BadState(s) => write!(f, "unknown TCP state {s}"),
            DecodeError::BadFamily(x) => write!(f, "unknown address family {x}"),
            DecodeError::BadUdpOp(x) => write!(f, "unknown UDP operation {x}"),
            DecodeError::BadTcpOp(x) => write!(f, "unknown TCP event {x}"),
            DecodeError::BadProcOp(x) => write!(f, "unknown process event {x}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Event, DecodeError> {
    let kind = record
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Truncated {
            kind: 0,
            len: record.len(),
        })?;
    match kind {
        EVENT_STATE_CHANGE => {
            let raw: StateChange = copy_out(kind, record)?;
            state_change(&raw).map(Event::StateChange)
        }
        EVENT_UDP => {
            let raw: UdpEvent = copy_out(kind, record)?;
            udp(&raw).map(Event::Udp)
        }
        EVENT_TCP => {
            let raw: TcpEvent = copy_out(kind, record)?;
            tcp(&raw).map(Event::Tcp)
        }
        EVENT_EXEC => {
            let raw: ExecEvent = copy_out(kind, record)?;
            Ok(Event::Exec(exec(&raw)))
        }
        EVENT_PROC => {
            let raw: ProcEvent = copy_out(kind, record)?;
            let change = match raw.op {
                proc_op::FORK => ProcChange::Fork {
                    pid: raw.pid,
                    ppid: raw.ppid,
                },
                proc_op::EXIT => ProcChange::Exit { pid: raw.pid },
                other => return Err(DecodeError::BadProcOp(other)),
            };
            Ok(Event::Proc {
                ts_ns: raw.ts_ns,
                change,
            })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn exec(raw: &ExecEvent) -> ExecInfo {
    let depth = raw.exe_depth as usize;
    // Components come file name first, each NUL-terminated.
    let mut parts: Vec<String> = raw
        .exe
        .split(|&b| b == 0)
        .take(depth)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.reverse();
    // No name is empty: an empty one is past what the kernel side wrote.
    let whole = parts.len() == depth && parts.iter().all(|p| !p.is_empty());
    let exe = (whole && depth > 0).then(|| {
        let lead = if raw.exe_cut != 0 { "..." } else { "" };
        format!("{lead}/{}", parts.join("/"))
    });
    let len = (raw.args_len as usize).min(raw.args.len());
    ExecInfo {
        ts_ns: raw.ts_ns,
        owner: Owner {
            pid: raw.pid,
            uid: raw.owner.uid,
            comm: comm_string(&raw.owner.comm),
            cgroup: raw.owner.cgroup,
        },
        ppid: raw.ppid,
        exe,
        args: split_args(&raw.args[..len]),
    }
}

/// NUL-separated arguments, as `/proc/PID/cmdline` and the kernel side
/// give them, lossily as UTF-8 (still to be escaped).
pub fn split_args(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn tcp(raw: &TcpEvent) -> Result<TcpOpEvent, DecodeError> {
    let op = match raw.op {
        tcp_op::RETRANSMIT => TcpOp::Retransmit,
        tcp_op::SEND_RESET => TcpOp::SendReset,
        tcp_op::RECEIVE_RESET => TcpOp::ReceiveReset,
        other => return Err(DecodeError::BadTcpOp(other)),
    };
    Ok(TcpOpEvent {
        ts_ns: raw.ts_ns,
        sock: raw.sock,
        op,
        family: match raw.family {
            0 => None,
            f => Some(family(f)?),
        },
        owner: owner(&raw.owner),
    })
}

fn udp(raw: &UdpEvent) -> Result<UdpSocketEvent, DecodeError> {
    let family = family(raw.family)?;
    let op = match raw.op {
        udp_op::BIND => UdpOp::Bind,
        udp_op::CONNECT => UdpOp::Connect,
        udp_op::CLOSE => UdpOp::Close,
        other => return Err(DecodeError::BadUdpOp(other)),
    };
    Ok(UdpSocketEvent {
        ts_ns: raw.ts_ns,
        sock: raw.sock,
        netns: raw.netns,
        family,
        op,
        addr: ip(family, raw.addr),
        port: raw.port,
        owner: owner(&raw.owner),
    })
}

fn family(raw: u16) -> Result<Family, DecodeError> {
    match raw {
        AF_INET => Ok(Family::Inet),
        AF_INET6 => Ok(Family::Inet6),
        other => Err(DecodeError::BadFamily(other)),
    }
}

fn owner(raw: &RawOwner) -> Option<Owner> {
    (raw.pid != 0).then(|| Owner {
        pid: raw.pid,
        uid: raw.uid,
        comm: comm_string(&raw.comm),
        cgroup: raw.cgroup,
    })
}

/// Copies a `#[repr(C)]` plain-integer struct out of a record.
fn copy_out<T: Copy>(kind: u32, record: &[u8]) -> Result<T, DecodeError> {
    if record.len() < size_of::<T>() {
        return Err(DecodeError::Truncated {
            kind,
            len: record.len(),
        });
    }
    // SAFETY: the length is checked and T (a netstat-common event) is made of
    // integers only, so every bit pattern is valid; the read is unaligned.
    Ok(unsafe { record.as_ptr().cast::<T>().read_unaligned() })
}

fn state_change(raw: &StateChange) -> Result<StateChangeEvent, DecodeError> {
    let family = family(raw.family)?;
    let owner = owner(&raw.owner);
    Ok(StateChangeEvent {
        ts_ns: raw.ts_ns,
        sock: raw.sock,
        netns: raw.netns,
        family,
        laddr: ip(family, raw.saddr),
        lport: raw.sport,
        raddr: ip(family, raw.daddr),
        rport: raw.dport,
        old: TcpState::try_from(raw.oldstate)?,
        new: TcpState::try_from(raw.newstate)?,
        ns_in_old: (raw.prev_ts_ns != 0).then(|| raw.ts_ns.saturating_sub(raw.prev_ts_ns)),
        owner,
        error: raw.error,
        end: (raw.newstate == tcp_state::CLOSE).then(|| Ending {
            first_ts_ns: (raw.first_ts_ns != 0).then_some(raw.first_ts_ns),
            born: raw.born != 0,
            bytes_sent: raw.bytes_sent,
            bytes_received: raw.bytes_received,
            first_fin: match raw.closer {
                closer::LOCAL => Some(End::Local),
                closer::REMOTE => Some(End::Remote),
                _ => None,
            },
        }),
    })
}

fn ip(family: Family, bytes: [u8; 16]) -> IpAddr {
    match family {
        Family::Inet => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Inet6 => IpAddr::V6(Ipv6Addr::from(bytes)),
    }
}

/// `comm` up to its first NUL, lossily as UTF-8 (still to be escaped).
pub fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use netstat_common::{Owner as RawOwner, tcp_state};

    use super::*;

    /// A raw record as the kernel side would write it.
    pub(crate) fn raw_state_change(old: u8, new: u8) -> StateChange {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        StateChange {
            kind: EVENT_STATE_CHANGE,
            netns: 4026531840,
            ts_ns: 5_000_000,
            sock: 0x1234,
            prev_ts_ns: 2_000_000,
            first_ts_ns: 1_000_000,
            bytes_sent: 0,
            bytes_received: 0,
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            owner: RawOwner {
                pid: 42,
                uid: 1000,
                cgroup: 0,
                comm,
            },
            sport: 40000,
            dport: 443,
            family: AF_INET,
            oldstate: old,
            newstate: new,
            error: 0,
            closer: 0,
            born: 1,
            _pad: 0,
        }
    }

    pub(crate) fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-integer struct.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn a_state_change_round_trips() {
        let raw = raw_state_change(tcp_state::SYN_SENT, tcp_state::ESTABLISHED);
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(ev.old, TcpState::SynSent);
        assert_eq!(ev.new, TcpState::Established);
        assert_eq!(ev.laddr.to_string(), "127.0.0.1");
        assert_eq!(ev.raddr.to_string(), "10.1.2.3");
        assert_eq!((ev.lport, ev.rport), (40000, 443));
        assert_eq!(ev.ns_in_old, Some(3_000_000));
        let owner = ev.owner.expect("owner");
        assert_eq!(
            (owner.pid, owner.uid, owner.comm.as_str()),
            (42, 1000, "curl")
        );
    }

    #[test]
    fn a_close_carries_the_sockets_life_and_other_changes_do_not() {
        let mut raw = raw_state_change(tcp_state::LAST_ACK, tcp_state::CLOSE);
        (raw.bytes_sent, raw.bytes_received, raw.closer) = (10, 20, closer::REMOTE);
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(
            ev.end,
            Some(Ending {
                first_ts_ns: Some(1_000_000),
                born: true,
                bytes_sent: 10,
                bytes_received: 20,
                first_fin: Some(End::Remote),
            })
        );
        (raw.first_ts_ns, raw.born, raw.closer) = (0, 0, closer::UNKNOWN);
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        let end = ev.end.expect("end");
        assert_eq!(
            (end.first_ts_ns, end.born, end.first_fin),
            (None, false, None)
        );
        raw.newstate = tcp_state::TIME_WAIT;
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(ev.end, None);
    }

    #[test]
    fn a_reset_without_a_socket_has_no_owner_or_family() {
        let raw = TcpEvent {
            kind: EVENT_TCP,
            op: tcp_op::SEND_RESET,
            ts_ns: 1,
            sock: 0,
            owner: RawOwner::default(),
            family: 0,
            _pad: [0; 3],
        };
        let Ok(Event::Tcp(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!((ev.op, ev.family, ev.owner), (TcpOp::SendReset, None, None));
        let bad = TcpEvent { op: 9, ..raw };
        assert_eq!(decode(&bytes_of(&bad)), Err(DecodeError::BadTcpOp(9)));
        let retransmit = TcpEvent {
            op: tcp_op::RETRANSMIT,
            family: AF_INET6,
            ..raw
        };
        let Ok(Event::Tcp(ev)) = decode(&bytes_of(&retransmit)) else {
            panic!("decodes")
        };
        assert_eq!((ev.op, ev.family), (TcpOp::Retransmit, Some(Family::Inet6)));
    }

    #[test]
    fn ipv6_addresses_use_all_sixteen_bytes() {
        let mut raw = raw_state_change(tcp_state::CLOSE, tcp_state::SYN_SENT);
        raw.family = AF_INET6;
        raw.saddr = Ipv6Addr::LOCALHOST.octets();
        raw.daddr = "2001:db8::1".parse::<Ipv6Addr>().expect("addr").octets();
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(ev.family, Family::Inet6);
        assert_eq!(ev.laddr.to_string(), "::1");
        assert_eq!(ev.raddr.to_string(), "2001:db8::1");
    }

    #[test]
    fn unknown_owner_and_unknown_entry_time_stay_unknown() {
        let mut raw = raw_state_change(tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT);
        raw.owner = RawOwner::default();
        raw.prev_ts_ns = 0;
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(ev.owner, None);
        assert_eq!(ev.ns_in_old, None);
    }

    #[test]
    fn every_kernel_state_has_its_netstat_name() {
        let names: Vec<_> = (1..=12)
            .map(|s| TcpState::try_from(s).expect("state").name())
            .collect();
        assert_eq!(
            names,
            [
                "ESTABLISHED",
                "SYN_SENT",
                "SYN_RECV",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "TIME_WAIT",
                "CLOSE",
                "CLOSE_WAIT",
                "LAST_ACK",
                "LISTEN",
                "CLOSING",
                "NEW_SYN_RECV"
            ]
        );
        assert_eq!(TcpState::try_from(0), Err(DecodeError::BadState(0)));
        assert_eq!(TcpState::try_from(13), Err(DecodeError::BadState(13)));
    }

    #[test]
    fn a_udp_connect_round_trips() {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"dig");
        let raw = UdpEvent {
            kind: EVENT_UDP,
            netns: 7,
            ts_ns: 1,
            sock: 2,
            addr: [9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            owner: RawOwner {
                pid: 5,
                uid: 0,
                cgroup: 0,
                comm,
            },
            port: 53,
            family: AF_INET,
            op: udp_op::CONNECT,
            _pad: 0,
        };
        let Ok(Event::Udp(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(
            (ev.op, ev.addr.to_string(), ev.port),
            (UdpOp::Connect, "9.9.9.9".into(), 53)
        );
        assert_eq!(ev.owner.map(|o| o.comm), Some("dig".into()));
        let bad = UdpEvent { op: 9, ..raw };
        assert_eq!(decode(&bytes_of(&bad)), Err(DecodeError::BadUdpOp(9)));
    }

    fn raw_exec(components: &[&[u8]], cut: u32, args: &[u8]) -> ExecEvent {
        let mut raw = ExecEvent {
            kind: EVENT_EXEC,
            pid: 300,
            ts_ns: 9,
            owner: RawOwner {
                pid: 300,
                uid: 65534,
                cgroup: 77,
                comm: *b"short-lived\0\0\0\0\0",
            },
            ppid: 299,
            args_len: args.len() as u32,
            exe_depth: components.len() as u32,
            exe_cut: cut,
            exe: [0; netstat_common::EXE_LIMIT + netstat_common::EXE_COMPONENT],
            args: [0; netstat_common::ARGS_BYTES],
        };
        let mut at = 0;
        for c in components {
            raw.exe[at..at + c.len()].copy_from_slice(c);
            at += c.len() + 1;
        }
        raw.args[..args.len()].copy_from_slice(args);
        raw
    }

    #[test]
    fn an_exec_names_the_whole_path_root_first_and_every_argument() {
        let raw = raw_exec(
            &[b"short-lived", b"tmp", b"x"],
            0,
            b"./short-lived\0--port\08080\0",
        );
        let Ok(Event::Exec(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(ev.exe.as_deref(), Some("/x/tmp/short-lived"));
        assert_eq!(ev.args, ["./short-lived", "--port", "8080"]);
        assert_eq!(
            (ev.owner.pid, ev.ppid, ev.owner.uid, ev.owner.cgroup),
            (300, 299, 65534, 77)
        );
        assert_eq!(ev.owner.comm, "short-lived");
    }

    #[test]
    fn a_cut_or_unwalked_exe_path_says_so() {
        let raw = raw_exec(&[b"bin", b"deep"], 1, b"");
        let Ok(Event::Exec(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        assert_eq!(ev.exe.as_deref(), Some(".../deep/bin"));
        assert!(ev.args.is_empty());
        let none = raw_exec(&[], 0, b"a");
        let Ok(Event::Exec(ev)) = decode(&bytes_of(&none)) else {
            panic!("decodes")
        };
        assert_eq!((ev.exe, ev.args), (None, vec!["a".to_owned()]));
        // A depth the buffer does not hold is not made up.
        let mut lying = raw_exec(&[b"a"], 0, b"");
        lying.exe_depth = 3;
        let Ok(Event::Exec(ev)) = decode(&bytes_of(&lying)) else {
            panic!("decodes")
        };
        assert_eq!(ev.exe, None);
    }

    #[test]
    fn forks_and_exits_decode_and_an_unknown_one_is_an_error() {
        let raw = ProcEvent {
            kind: EVENT_PROC,
            op: proc_op::FORK,
            ts_ns: 3,
            pid: 11,
            ppid: 10,
        };
        assert_eq!(
            decode(&bytes_of(&raw)),
            Ok(Event::Proc {
                ts_ns: 3,
                change: ProcChange::Fork { pid: 11, ppid: 10 }
            })
        );
        let exit = ProcEvent {
            op: proc_op::EXIT,
            ..raw
        };
        assert_eq!(
            decode(&bytes_of(&exit)),
            Ok(Event::Proc {
                ts_ns: 3,
                change: ProcChange::Exit { pid: 11 }
            })
        );
        let bad = ProcEvent { op: 7, ..raw };
        assert_eq!(decode(&bytes_of(&bad)), Err(DecodeError::BadProcOp(7)));
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let good = bytes_of(&raw_state_change(tcp_state::CLOSE, tcp_state::LISTEN));
        assert_eq!(decode(&[]), Err(DecodeError::Truncated { kind: 0, len: 0 }));
        assert_eq!(
            decode(&good[..50]),
            Err(DecodeError::Truncated {
                kind: EVENT_STATE_CHANGE,
                len: 50
            })
        );
        let mut unknown = good.clone();
        unknown[0] = 99;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(99)));
        let mut bad_state = raw_state_change(tcp_state::CLOSE, 77);
        assert_eq!(
            decode(&bytes_of(&bad_state)),
            Err(DecodeError::BadState(77))
        );
        bad_state.family = 1;
        assert_eq!(
            decode(&bytes_of(&bad_state)),
            Err(DecodeError::BadFamily(1))
        );
    }
}
