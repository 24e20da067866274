//! What `bnetstat top` shows: the bytes each TCP connection and each
//! process moved in one interval, and the connections each process opened
//! and accepted. Pure: transitions and counter readings in, one interval's
//! rows out; no I/O, no clock.
//!
//! The kernel keeps each socket's bytes sent and received as running
//! totals (no record per `sendmsg`). An interval's bytes are the growth of
//! those totals between two readings; a connection that closes reports its
//! final totals in its change to `CLOSE`, so what it moved after the last
//! reading still counts, once. Summed over intervals, a connection's bytes
//! are exactly what its owners sent and received while bnetstat watched.

use std::{
    cmp::Reverse,
    collections::{HashMap, HashSet, hash_map::Entry},
    net::IpAddr,
};

use crate::{
    decode::{Family, Owner, StateChangeEvent, TcpState},
    trace::Filter,
};

/// A connection's addresses and owner.
#[derive(Clone, Debug, PartialEq)]
pub struct Conn {
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// `None` when bnetstat never learnt who owns it.
    pub owner: Option<Owner>,
}

impl Conn {
    fn of(ev: &StateChangeEvent) -> Conn {
        Conn {
            family: ev.family,
            laddr: ev.laddr,
            lport: ev.lport,
            raddr: ev.raddr,
            rport: ev.rport,
            owner: ev.owner.clone(),
        }
    }
}

/// One connection's traffic in an interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    /// Socket cookie.
    pub sock: u64,
    pub conn: Conn,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Whether it closed during the interval.
    pub closed: bool,
}

/// One process's traffic and new connections in an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRow {
    /// `None` gathers connections whose owner bnetstat does not know.
    pub pid: Option<u32>,
    /// The last name seen for the pid; untrusted.
    pub comm: Option<String>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Connections it started (`connect()`: `CLOSE -> SYN_SENT`).
    pub opened: u64,
    /// Connections its listeners took in (`LISTEN -> SYN_RECV`).
    pub accepted: u64,
}

impl ProcRow {
    fn new(owner: Option<&Owner>) -> ProcRow {
        ProcRow {
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.clone()),
            tx_bytes: 0,
            rx_bytes: 0,
            opened: 0,
            accepted: 0,
        }
    }

    fn bytes(&self) -> u64 {
        self.tx_bytes + self.rx_bytes
    }

    fn new_connections(&self) -> u64 {
        self.opened + self.accepted
    }
}

/// How processes are ranked.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// Bytes sent and received, then new connections.
    #[default]
    Bytes,
    /// New connections (opened and accepted), then bytes.
    Conns,
}

/// One interval, every row that moved bytes or opened connections, the
/// busiest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interval {
    /// Connections that moved bytes, most bytes first.
    pub conns: Vec<ConnRow>,
    /// Processes that moved bytes or opened or accepted connections.
    pub procs: Vec<ProcRow>,
}

impl Interval {
    /// Bytes sent by every connection shown.
    pub fn tx_bytes(&self) -> u64 {
        self.conns.iter().map(|c| c.tx_bytes).sum()
    }

    /// Bytes received by every connection shown.
    pub fn rx_bytes(&self) -> u64 {
        self.conns.iter().map(|c| c.rx_bytes).sum()
    }

    /// Connections opened by every process shown.
    pub fn opened(&self) -> u64 {
        self.procs.iter().map(|p| p.opened).sum()
    }

    /// Connections accepted by every process shown.
    pub fn accepted(&self) -> u64 {
        self.procs.iter().map(|p| p.accepted).sum()
    }
}

/// A connection being followed, with its totals as last read.
#[derive(Debug)]
struct Followed {
    conn: Conn,
    sent: u64,
    received: u64,
    /// Missing from the last reading.
    missed: bool,
}

/// The traffic of the interval under way.
#[derive(Debug)]
pub struct Traffic {
    filter: Filter,
    followed: HashMap<u64, Followed>,
    /// Bytes moved this interval, by socket cookie.
    moved: HashMap<u64, ConnRow>,
    /// New connections this interval, by owner pid.
    opens: HashMap<Option<u32>, ProcRow>,
}

impl Traffic {
    /// Follows the connections that pass `filter`.
    pub fn new(filter: Filter) -> Traffic {
        Traffic {
            filter,
            followed: HashMap::new(),
            moved: HashMap::new(),
            opens: HashMap::new(),
        }
    }

    /// Follows a connection that was open before bnetstat started; its
    /// totals count from when the kernel side was told about it.
    pub fn seed(&mut self, sock: u64, conn: Conn) {
        if self.passes(&conn) {
            self.followed.entry(sock).or_insert(Followed {
                conn,
                sent: 0,
                received: 0,
                missed: false,
            });
        }
    }

    /// Applies one TCP state change: follows new connections, counts
    /// opens, and books what a closing connection moved since the last
    /// reading.
    pub fn apply(&mut self, ev: &StateChangeEvent) {
        let conn = Conn::of(ev);
        if !self.passes(&conn) {
            self.followed.remove(&ev.sock);
            return;
        }
        let kind = match (ev.old, ev.new) {
            (TcpState::Close, TcpState::SynSent) => Some(true),
            (TcpState::Listen, TcpState::SynRecv) => Some(false),
            _ => None,
        };
        if let Some(opened) = kind {
            let pid = conn.owner.as_ref().map(|o| o.pid);
            let row = self
                .opens
                .entry(pid)
                .or_insert_with(|| ProcRow::new(conn.owner.as_ref()));
            if opened {
                row.opened += 1;
            } else {
                row.accepted += 1;
            }
        }
        if ev.new == TcpState::Close {
            let (sent, received) = ev
                .end
                .as_ref()
                .map_or((0, 0), |e| (e.bytes_sent, e.bytes_received));
            // A connection never followed counts from zero: its kernel
            // entry, and so its totals, began when bnetstat first saw it.
            let before = self.followed.remove(&ev.sock);
            let (sent0, received0) = before.as_ref().map_or((0, 0), |f| (f.sent, f.received));
            let conn = before.map_or(conn, |f| f.conn);
            self.book(ev.sock, conn, sent, received, (sent0, received0));
            if let Some(row) = self.moved.get_mut(&ev.sock) {
                row.closed = true;
            }
            return;
        }
        match self.followed.entry(ev.sock) {
            Entry::Occupied(mut e) => {
                // An owner learnt late replaces an unknown one, never the reverse.
                let f = e.get_mut();
                let owner = conn.owner.clone().or(f.conn.owner.take());
                f.conn = Conn { owner, ..conn };
            }
            Entry::Vacant(e) => {
                e.insert(Followed {
                    conn,
                    sent: 0,
                    received: 0,
                    missed: false,
                });
            }
        }
    }

    /// The connections whose totals the next reading should take.
    pub fn followed(&self) -> impl Iterator<Item = u64> + '_ {
        self.followed.keys().copied()
    }

    /// Takes one reading: `(cookie, sent, received)` for each followed
    /// connection the kernel side still holds. One missing has closed, and
    /// its change to `CLOSE` may still be on its way; missing from two
    /// readings in a row, that change was lost, and it is forgotten.
    pub fn read(&mut self, totals: &[(u64, u64, u64)]) {
        let mut found = HashSet::with_capacity(totals.len());
        for &(sock, sent, received) in totals {
            let Some(f) = self.followed.get_mut(&sock) else {
                continue;
            };
            found.insert(sock);
            f.missed = false;
            let before = (f.sent, f.received);
            (f.sent, f.received) = (f.sent.max(sent), f.received.max(received));
            let conn = f.conn.clone();
            self.book(sock, conn, sent, received, before);
        }
        self.followed.retain(|sock, f| {
            if found.contains(sock) {
                return true;
            }
            let keep = !f.missed;
            f.missed = true;
            keep
        });
    }

    /// Adds the growth from `before` to (`sent`, `received`) to the interval.
    fn book(&mut self, sock: u64, conn: Conn, sent: u64, received: u64, before: (u64, u64)) {
        let tx = sent.saturating_sub(before.0);
        let rx = received.saturating_sub(before.1);
        if tx == 0 && rx == 0 {
            return;
        }
        let row = self.moved.entry(sock).or_insert(ConnRow {
            sock,
            conn,
            tx_bytes: 0,
            rx_bytes: 0,
            closed: false,
        });
        row.tx_bytes += tx;
        row.rx_bytes += rx;
    }

    /// Ends the interval: its rows, the busiest first, and a fresh start.
    pub fn take(&mut self, sort: Sort) -> Interval {
        let mut procs = std::mem::take(&mut self.opens);
        let mut conns: Vec<ConnRow> = self.moved.drain().map(|(_, row)| row).collect();
        for c in &conns {
            let owner = c.conn.owner.as_ref();
            let row = procs
                .entry(owner.map(|o| o.pid))
                .or_insert_with(|| ProcRow::new(owner));
            if row.comm.is_none() {
                row.comm = owner.map(|o| o.comm.clone());
            }
            row.tx_bytes += c.tx_bytes;
            row.rx_bytes += c.rx_bytes;
        }
        conns.sort_by_key(|c| (Reverse(c.tx_bytes + c.rx_bytes), c.sock));
        let mut procs: Vec<ProcRow> = procs.into_values().collect();
        match sort {
            Sort::Bytes => {
                procs.sort_by_key(|p| (Reverse(p.bytes()), Reverse(p.new_connections()), p.pid))
            }
            Sort::Conns => {
                procs.sort_by_key(|p| (Reverse(p.new_connections()), Reverse(p.bytes()), p.pid))
            }
        }
        Interval { conns, procs }
    }

    fn passes(&self, conn: &Conn) -> bool {
        self.filter
            .matches_socket(conn.owner.as_ref(), conn.family, conn.lport, conn.rport)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::decode::Ending;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn owner(pid: u32, comm: &str) -> Option<Owner> {
        Some(Owner {
            pid,
            uid: 0,
            comm: comm.into(),
            cgroup: 0,
        })
    }

    fn ev(sock: u64, old: TcpState, new: TcpState, owner: Option<Owner>) -> StateChangeEvent {
        StateChangeEvent {
            ts_ns: 0,
            sock,
            netns: 1,
            family: Family::Inet,
            laddr: LO,
            lport: 40000 + sock as u16,
            raddr: LO,
            rport: 8080,
            old,
            new,
            ns_in_old: None,
            owner,
            error: 0,
            end: None,
        }
    }

    fn close(sock: u64, owner: Option<Owner>, sent: u64, received: u64) -> StateChangeEvent {
        StateChangeEvent {
            end: Some(Ending {
                first_ts_ns: None,
                born: true,
                bytes_sent: sent,
                bytes_received: received,
                first_fin: None,
            }),
            ..ev(sock, TcpState::FinWait2, TcpState::Close, owner)
        }
    }

    fn connect(t: &mut Traffic, sock: u64, pid: u32) {
        t.apply(&ev(
            sock,
            TcpState::Close,
            TcpState::SynSent,
            owner(pid, "curl"),
        ));
    }

    #[test]
    fn an_interval_holds_the_growth_since_the_last_reading() {
        let mut t = Traffic::new(Filter::default());
        connect(&mut t, 1, 7);
        t.read(&[(1, 1000, 10)]);
        let first = t.take(Sort::Bytes);
        assert_eq!(
            (first.conns[0].tx_bytes, first.conns[0].rx_bytes),
            (1000, 10)
        );
        t.read(&[(1, 3000, 10)]);
        let second = t.take(Sort::Bytes);
        assert_eq!(
            (second.conns[0].tx_bytes, second.conns[0].rx_bytes),
            (2000, 0)
        );
        t.read(&[(1, 3000, 10)]);
        assert!(t.take(Sort::Bytes).conns.is_empty(), "idle: no row");
    }

    #[test]
    fn bytes_after_the_last_reading_count_once_at_close() {
        let mut t = Traffic::new(Filter::default());
        connect(&mut t, 1, 7);
        t.read(&[(1, 500, 0)]);
        t.take(Sort::Bytes);
        t.apply(&close(1, owner(7, "curl"), 800, 40));
        let last = t.take(Sort::Bytes);
        assert_eq!(last.conns.len(), 1);
        let row = &last.conns[0];
        assert_eq!((row.tx_bytes, row.rx_bytes, row.closed), (300, 40, true));
        // A reading that raced the close finds nothing left to follow.
        t.read(&[(1, 800, 40)]);
        assert!(t.take(Sort::Bytes).conns.is_empty());
    }

    #[test]
    fn a_connection_opened_and_closed_within_an_interval_still_counts() {
        let mut t = Traffic::new(Filter::default());
        connect(&mut t, 1, 7);
        t.apply(&close(1, owner(7, "curl"), 100, 200));
        let i = t.take(Sort::Bytes);
        assert_eq!((i.tx_bytes(), i.rx_bytes(), i.opened()), (100, 200, 1));
        assert_eq!(i.procs[0].pid, Some(7));
    }

    #[test]
    fn processes_sum_their_connections_and_count_opens_and_accepts() {
        let mut t = Traffic::new(Filter::default());
        connect(&mut t, 1, 7);
        connect(&mut t, 2, 7);
        t.apply(&ev(
            3,
            TcpState::Listen,
            TcpState::SynRecv,
            owner(9, "nginx"),
        ));
        t.seed(
            4,
            Conn {
                owner: owner(9, "nginx"),
                ..Conn::of(&ev(4, TcpState::Established, TcpState::Established, None))
            },
        );
        t.read(&[(1, 10, 1), (2, 20, 1), (3, 1000, 1), (4, 5, 1)]);
        let i = t.take(Sort::Bytes);
        let rows: Vec<_> = i
            .procs
            .iter()
            .map(|p| (p.pid, p.tx_bytes, p.rx_bytes, p.opened, p.accepted))
            .collect();
        assert_eq!(rows, [(Some(9), 1005, 2, 0, 1), (Some(7), 30, 2, 2, 0)]);
        assert_eq!(i.conns[0].sock, 3, "busiest connection first");
        let by_conns = {
            connect(&mut t, 5, 7);
            t.apply(&ev(
                6,
                TcpState::Listen,
                TcpState::SynRecv,
                owner(9, "nginx"),
            ));
            connect(&mut t, 7, 7);
            t.read(&[(3, 1_000_000, 1)]);
            t.take(Sort::Conns)
        };
        let order: Vec<_> = by_conns.procs.iter().map(|p| p.pid).collect();
        assert_eq!(order, [Some(7), Some(9)]);
    }

    #[test]
    fn a_connection_whose_close_was_lost_is_forgotten_after_two_readings() {
        let mut t = Traffic::new(Filter::default());
        connect(&mut t, 1, 7);
        connect(&mut t, 2, 7);
        t.read(&[(1, 10, 0), (2, 10, 0)]);
        t.read(&[(2, 20, 0)]);
        // Its close arriving after one missed reading still counts.
        t.apply(&close(1, owner(7, "curl"), 15, 0));
        let tx: Vec<_> = t
            .take(Sort::Bytes)
            .conns
            .iter()
            .map(|c| (c.sock, c.tx_bytes))
            .collect();
        assert_eq!(tx, [(2, 20), (1, 15)]);
        t.read(&[]);
        assert_eq!(t.followed().count(), 1, "missed once: still followed");
        t.read(&[]);
        assert_eq!(t.followed().count(), 0, "missed twice: forgotten");
        let i = t.take(Sort::Bytes);
        assert!(i.conns.is_empty());
    }

    #[test]
    fn filtered_out_connections_are_not_followed() {
        let mut t = Traffic::new(Filter {
            ports: vec![8081],
            ..Filter::default()
        });
        connect(&mut t, 1, 7);
        assert_eq!(t.followed().count(), 0);
        t.read(&[(1, 100, 100)]);
        t.apply(&close(1, owner(7, "curl"), 100, 100));
        assert_eq!(t.take(Sort::Bytes), Interval::default());
    }

    #[test]
    fn an_owner_learnt_later_is_kept() {
        let mut t = Traffic::new(Filter::default());
        t.apply(&ev(1, TcpState::Established, TcpState::FinWait1, None));
        t.apply(&ev(
            1,
            TcpState::FinWait1,
            TcpState::FinWait2,
            owner(3, "ssh"),
        ));
        t.apply(&ev(1, TcpState::FinWait2, TcpState::FinWait2, None));
        t.read(&[(1, 1, 0)]);
        let i = t.take(Sort::Bytes);
        assert_eq!(i.conns[0].conn.owner, owner(3, "ssh"));
        assert_eq!(i.procs[0].comm.as_deref(), Some("ssh"));
    }
}
