//! Audit records, one per port event, from kernel events. Pure: no I/O, no
//! clock of its own; what it keeps is pruned when the socket closes.
//!
//! - TCP `listen()` is `CLOSE -> LISTEN`, its end `LISTEN -> CLOSE`: the
//!   kernel side's time in the old state is how long the port was open.
//! - UDP binds and closes come from the cgroup hooks; a close is recorded
//!   only for a socket bnetstat saw bound (or found bound at start-up), and
//!   names the bind's owner, not whoever happened to release it.
//! - With connects: a TCP connect is recorded when its outcome is known
//!   (`SYN_SENT -> ESTABLISHED` or `-> CLOSE`), since the kernel picks the
//!   local port only after `CLOSE -> SYN_SENT`; the record keeps the time
//!   of the attempt. A UDP connect is recorded as it happens.

use std::{collections::HashMap, net::IpAddr};

use crate::{
    decode::{Event, Family, Owner, StateChangeEvent, TcpState, UdpOp, UdpSocketEvent},
    sockdiag::Proto,
};

/// TCP connects waiting for their outcome at most: past that, a new one is
/// recorded at once with the local port it has then.
const PENDING_CONNECTS: usize = 1 << 16;

/// What a record reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A TCP socket started listening.
    Listen,
    /// A listening TCP socket closed.
    StopListen,
    /// A UDP socket was bound.
    Bind,
    /// A bound UDP socket closed.
    Close,
    /// An outgoing TCP or UDP connect.
    Connect,
}

impl Action {
    /// The name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Action::Listen => "listen",
            Action::StopListen => "stop_listen",
            Action::Bind => "bind",
            Action::Close => "close",
            Action::Connect => "connect",
        }
    }

    /// Whether this record opens a port for others to reach: what an
    /// expected-listeners list speaks of.
    pub fn opens_port(self) -> bool {
        matches!(self, Action::Listen | Action::Bind)
    }
}

/// One audit record, before it is told who the owner's process is.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// When it happened (`CLOCK_BOOTTIME` ns).
    pub ts_ns: u64,
    pub action: Action,
    pub proto: Proto,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    /// The peer, for connects.
    pub remote: Option<(IpAddr, u16)>,
    pub owner: Option<Owner>,
    pub netns: u32,
    /// For `StopListen` and `Close`: how long the port was open, when
    /// bnetstat saw it open.
    pub open_ns: Option<u64>,
    /// Found open at start-up, not seen happen.
    pub existing: bool,
}

/// A UDP socket bnetstat knows to be bound.
#[derive(Clone, Debug)]
struct Bound {
    since_ns: Option<u64>,
    family: Family,
    laddr: IpAddr,
    lport: u16,
    owner: Option<Owner>,
    netns: u32,
}

/// Turns events into records.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Record connects too.
    connects: bool,
    udp_bound: HashMap<u64, Bound>,
    /// TCP connects by socket cookie, waiting for their outcome.
    pending: HashMap<u64, Record>,
}

impl Recorder {
    pub fn new(connects: bool) -> Recorder {
        Recorder {
            connects,
            ..Recorder::default()
        }
    }

    /// A socket found open at start-up: a TCP listener or a bound UDP
    /// socket is recorded as `existing`, so a check of expected listeners
    /// covers what was there before; anything else is not a port event.
    pub fn existing(
        &mut self,
        cookie: u64,
        now_ns: u64,
        sock: &crate::model::Sock,
    ) -> Option<Record> {
        let action = match (sock.proto, sock.state) {
            (Proto::Tcp, TcpState::Listen) => Action::Listen,
            (Proto::Udp, _) if sock.lport != 0 => {
                self.udp_bound.insert(
                    cookie,
                    Bound {
                        since_ns: None,
                        family: sock.family,
                        laddr: sock.laddr,
                        lport: sock.lport,
                        owner: sock.owner.clone(),
                        netns: sock.netns,
                    },
                );
                Action::Bind
            }
            _ => return None,
        };
        Some(Record {
            ts_ns: now_ns,
            action,
            proto: sock.proto,
            family: sock.family,
            laddr: sock.laddr,
            lport: sock.lport,
            remote: None,
            owner: sock.owner.clone(),
            netns: sock.netns,
            open_ns: None,
            existing: true,
        })
    }

    /// The records `event` makes, in order (at most two).
    pub fn apply(&mut self, event: &Event) -> Vec<Record> {
        match event {
            Event::StateChange(ev) => self.tcp(ev),
            Event::Udp(ev) => self.udp(ev).into_iter().collect(),
            Event::Tcp(_) | Event::Exec(_) | Event::Proc { .. } => Vec::new(),
        }
    }

    /// TCP connects still waiting for their outcome, as recorded now: what
    /// a stopping bnetstat writes last.
    pub fn flush(&mut self) -> Vec<Record> {
        let mut left: Vec<Record> = self.pending.drain().map(|(_, r)| r).collect();
        left.sort_by_key(|r| r.ts_ns);
        left
    }

    fn tcp(&mut self, ev: &StateChangeEvent) -> Vec<Record> {
        let record = |action, remote, open_ns| Record {
            ts_ns: ev.ts_ns,
            action,
            proto: Proto::Tcp,
            family: ev.family,
            laddr: ev.laddr,
            lport: ev.lport,
            remote,
            owner: ev.owner.clone(),
            netns: ev.netns,
            open_ns,
            existing: false,
        };
        match (ev.old, ev.new) {
            (_, TcpState::Listen) => vec![record(Action::Listen, None, None)],
            (TcpState::Listen, TcpState::Close) => {
                vec![record(Action::StopListen, None, ev.ns_in_old)]
            }
            (_, TcpState::SynSent) if self.connects => {
                let attempt = record(Action::Connect, Some((ev.raddr, ev.rport)), None);
                if self.pending.len() >= PENDING_CONNECTS {
                    return vec![attempt];
                }
                self.pending.insert(ev.sock, attempt);
                Vec::new()
            }
            (TcpState::SynSent, _) => match self.pending.remove(&ev.sock) {
                // Now the local end is known.
                Some(attempt) => vec![Record {
                    laddr: ev.laddr,
                    lport: ev.lport,
                    ..attempt
                }],
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn udp(&mut self, ev: &UdpSocketEvent) -> Option<Record> {
        let record = |action, laddr, lport, remote, owner: Option<Owner>, open_ns| Record {
            ts_ns: ev.ts_ns,
            action,
            proto: Proto::Udp,
            family: ev.family,
            laddr,
            lport,
            remote,
            owner,
            netns: ev.netns,
            open_ns,
            existing: false,
        };
        match ev.op {
            UdpOp::Bind => {
                self.udp_bound.insert(
                    ev.sock,
                    Bound {
                        since_ns: Some(ev.ts_ns),
                        family: ev.family,
                        laddr: ev.addr,
                        lport: ev.port,
                        owner: ev.owner.clone(),
                        netns: ev.netns,
                    },
                );
                Some(record(
                    Action::Bind,
                    ev.addr,
                    ev.port,
                    None,
                    ev.owner.clone(),
                    None,
                ))
            }
            UdpOp::Connect if self.connects => {
                let (laddr, lport) = match self.udp_bound.get(&ev.sock) {
                    Some(b) => (b.laddr, b.lport),
                    None => (unspecified(ev.family), 0),
                };
                Some(record(
                    Action::Connect,
                    laddr,
                    lport,
                    Some((ev.addr, ev.port)),
                    ev.owner.clone(),
                    None,
                ))
            }
            UdpOp::Connect => None,
            UdpOp::Close => {
                let b = self.udp_bound.remove(&ev.sock)?;
                Some(Record {
                    family: b.family,
                    netns: b.netns,
                    ..record(
                        Action::Close,
                        b.laddr,
                        b.lport,
                        None,
                        b.owner,
                        b.since_ns.map(|t| ev.ts_ns.saturating_sub(t)),
                    )
                })
            }
        }
    }
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Family::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn owner(pid: u32) -> Option<Owner> {
        Some(Owner {
            pid,
            uid: 1000,
            comm: "srv".into(),
            cgroup: 5,
        })
    }

    fn tcp(
        ts_ns: u64,
        sock: u64,
        (old, new): (TcpState, TcpState),
        lport: u16,
        ns_in_old: Option<u64>,
    ) -> Event {
        Event::StateChange(StateChangeEvent {
            ts_ns,
            sock,
            netns: 9,
            family: Family::Inet,
            laddr: LOCAL,
            lport,
            raddr: LOCAL,
            rport: if new == TcpState::Listen { 0 } else { 80 },
            old,
            new,
            ns_in_old,
            owner: owner(7),
            error: 0,
            end: None,
        })
    }

    fn udp(ts_ns: u64, sock: u64, op: UdpOp, port: u16, pid: u32) -> Event {
        Event::Udp(UdpSocketEvent {
            ts_ns,
            sock,
            netns: 9,
            family: Family::Inet,
            op,
            addr: LOCAL,
            port,
            owner: owner(pid),
        })
    }

    #[test]
    fn a_listener_is_recorded_when_it_opens_and_closes_with_how_long_it_was_open() {
        let mut r = Recorder::new(false);
        let open = r.apply(&tcp(1, 3, (TcpState::Close, TcpState::Listen), 4444, None));
        assert_eq!(open.len(), 1);
        assert_eq!(
            (
                open[0].action,
                open[0].lport,
                open[0].owner.as_ref().map(|o| o.pid)
            ),
            (Action::Listen, 4444, Some(7))
        );
        let close = r.apply(&tcp(
            50,
            3,
            (TcpState::Listen, TcpState::Close),
            4444,
            Some(49),
        ));
        assert_eq!(
            (close[0].action, close[0].open_ns, close[0].netns),
            (Action::StopListen, Some(49), 9)
        );
        // Connections and their ends are no port events.
        assert!(
            r.apply(&tcp(
                60,
                4,
                (TcpState::Listen, TcpState::SynRecv),
                4444,
                None
            ))
            .is_empty()
        );
    }

    #[test]
    fn a_udp_close_names_the_binder_and_how_long_it_was_bound() {
        let mut r = Recorder::new(false);
        let bind = r.apply(&udp(10, 1, UdpOp::Bind, 5353, 7));
        assert_eq!((bind[0].action, bind[0].lport), (Action::Bind, 5353));
        // Released by another process (a child that inherited it).
        let close = r.apply(&udp(35, 1, UdpOp::Close, 0, 8));
        assert_eq!(close[0].action, Action::Close);
        assert_eq!(close[0].owner.as_ref().map(|o| o.pid), Some(7));
        assert_eq!((close[0].lport, close[0].open_ns), (5353, Some(25)));
        // Unbound sockets closing are no port events, and the table is empty.
        assert!(r.apply(&udp(40, 2, UdpOp::Close, 0, 7)).is_empty());
        assert!(r.udp_bound.is_empty());
    }

    #[test]
    fn connects_are_recorded_only_when_asked_with_the_port_the_kernel_picked() {
        let syn = tcp(1, 8, (TcpState::Close, TcpState::SynSent), 0, None);
        let est = tcp(
            2,
            8,
            (TcpState::SynSent, TcpState::Established),
            40001,
            Some(1),
        );
        let mut quiet = Recorder::new(false);
        assert!(quiet.apply(&syn).is_empty() && quiet.apply(&est).is_empty());
        assert!(quiet.apply(&udp(3, 2, UdpOp::Connect, 53, 7)).is_empty());

        let mut r = Recorder::new(true);
        assert!(r.apply(&syn).is_empty(), "waits for the outcome");
        let done = r.apply(&est);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].action, done[0].ts_ns, done[0].lport, done[0].remote),
            (Action::Connect, 1, 40001, Some((LOCAL, 80)))
        );
        assert!(r.pending.is_empty());
        let udp_connect = r.apply(&udp(3, 2, UdpOp::Connect, 53, 7));
        assert_eq!(udp_connect[0].remote, Some((LOCAL, 53)));
    }

    #[test]
    fn a_connect_still_pending_at_the_end_is_written_as_it_stands() {
        let mut r = Recorder::new(true);
        r.apply(&tcp(5, 8, (TcpState::Close, TcpState::SynSent), 0, None));
        r.apply(&tcp(3, 9, (TcpState::Close, TcpState::SynSent), 0, None));
        let left = r.flush();
        assert_eq!(left.iter().map(|r| r.ts_ns).collect::<Vec<_>>(), [3, 5]);
        assert!(r.flush().is_empty());
    }

    #[test]
    fn existing_listeners_and_bound_udp_sockets_are_recorded_as_existing() {
        use crate::model::Sock;
        let sock = |proto, state, lport| Sock {
            laddr: LOCAL,
            lport,
            raddr: LOCAL,
            owner: owner(3),
            uid: Some(0),
            ..Sock::new(proto, Family::Inet, state, 9)
        };
        let mut r = Recorder::new(false);
        let l = r.existing(1, 100, &sock(Proto::Tcp, TcpState::Listen, 22));
        assert_eq!(
            l.map(|l| (l.action, l.existing)),
            Some((Action::Listen, true))
        );
        let b = r.existing(2, 100, &sock(Proto::Udp, TcpState::Close, 53));
        assert_eq!(b.map(|b| b.action), Some(Action::Bind));
        assert_eq!(
            r.existing(3, 100, &sock(Proto::Tcp, TcpState::Established, 22)),
            None
        );
        // Its close is recorded, with no known duration.
        let close = r.apply(&udp(200, 2, UdpOp::Close, 0, 3));
        assert_eq!((close[0].lport, close[0].open_ns), (53, None));
    }
}
