//! The live socket table: fed once by the seed, then kept current by
//! events. Pure: no I/O, no clock of its own; O(1) per event.
//!
//! Rows are keyed by socket cookie, which the kernel never reuses, so a
//! socket reopened at the same address or 4-tuple is a new row. They are
//! kept side by side, each with a [`Brief`] of it, so a view that ranks
//! every row each frame reads 64 bytes a row, one after the other.
//!
//! The seed is a snapshot taken after the programs are attached, so events
//! queued meanwhile may predate it. Applying them in order after the seed
//! still ends in the kernel's state: each carries the socket's full new
//! state and addresses, so a replayed one is overwritten by the later ones
//! that follow it, and a socket that closed before the snapshot gets its
//! row created and removed again. A row is keyed by cookie, so
//! nothing seen both ways is listed twice.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

// Randomly seeded per process, as std's SipHash is, but several times
// cheaper: `serve` spent a sixth of its time hashing cookies and tuples.
use foldhash::{HashMap, HashSet};

use crate::{
    decode::{
        Event, ExecInfo, Family, Owner, ProcChange, StateChangeEvent, TcpState, UdpOp,
        UdpSocketEvent,
    },
    sockdiag::Proto,
};

/// One socket as netstat shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sock {
    pub proto: Proto,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// UDP uses `Established` for a connected socket and `Close` for the rest,
    /// as the kernel does.
    pub state: TcpState,
    /// Inode number of its network namespace.
    pub netns: u32,
    pub owner: Option<Owner>,
    pub uid: Option<u32>,
    pub inode: Option<u32>,
    /// Queues and timer as last read from the kernel; events do not carry
    /// them, so a state change forgets the timer.
    pub recv_q: Option<u32>,
    pub send_q: Option<u32>,
    pub timer: Option<Timer>,
    /// When it entered `state` (`CLOCK_BOOTTIME` ns), if seen.
    pub since_ns: Option<u64>,
    /// For `TIME_WAIT`: when the kernel lets it go (`CLOCK_BOOTTIME` ns).
    pub expires_ns: Option<u64>,
}

/// A row in brief: what choosing and ordering the rows of a big table
/// looks at, in 64 bytes with nothing behind a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Brief {
    pub cookie: u64,
    /// `Sock::since_ns`, or `NEVER`.
    since_ns: u64,
    pub netns: u32,
    /// The owner's pid, or `NO_PID`.
    pid: u32,
    /// The addresses as numbers (see [`End`]); `v6` says which are IPv6.
    laddr: u128,
    raddr: u128,
    pub lport: u16,
    pub rport: u16,
    pub proto: Proto,
    pub family: Family,
    pub state: TcpState,
    /// `LOCAL_V6` and `REMOTE_V6`, set for the addresses that are IPv6.
    v6: u8,
}

const _: () = assert!(size_of::<Brief>() == 64);

/// A `since_ns` no clock reaches: not seen.
const NEVER: u64 = u64::MAX;
/// A pid the kernel never hands out (they stop at 2^22): no owner.
const NO_PID: u32 = u32::MAX;
const LOCAL_V6: u8 = 1;
const REMOTE_V6: u8 = 2;

impl Brief {
    /// The brief of `cookie`'s row `sock`.
    pub fn of(cookie: u64, sock: &Sock) -> Brief {
        let v6 = |addr: IpAddr, bit| if addr.is_ipv6() { bit } else { 0 };
        Brief {
            cookie,
            since_ns: sock.since_ns.unwrap_or(NEVER),
            netns: sock.netns,
            pid: sock.owner.as_ref().map_or(NO_PID, |o| o.pid),
            laddr: number(sock.laddr),
            raddr: number(sock.raddr),
            lport: sock.lport,
            rport: sock.rport,
            proto: sock.proto,
            family: sock.family,
            state: sock.state,
            v6: v6(sock.laddr, LOCAL_V6) | v6(sock.raddr, REMOTE_V6),
        }
    }

    /// The owner's pid, if the owner is known.
    pub fn pid(&self) -> Option<u32> {
        (self.pid != NO_PID).then_some(self.pid)
    }

    /// When it entered its state (`CLOCK_BOOTTIME` ns), if seen.
    pub fn since_ns(&self) -> Option<u64> {
        (self.since_ns != NEVER).then_some(self.since_ns)
    }

    /// The local address and port.
    pub fn local(&self) -> End {
        End {
            v6: self.v6 & LOCAL_V6 != 0,
            addr: self.laddr,
            port: self.lport,
        }
    }

    /// The remote address and port.
    pub fn remote(&self) -> End {
        End {
            v6: self.v6 & REMOTE_V6 != 0,
            addr: self.raddr,
            port: self.rport,
        }
    }
}

/// One end of a connection, ordered as `(IpAddr, u16)` is: IPv4 before
/// IPv6, then by address, then by port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct End {
    v6: bool,
    addr: u128,
    port: u16,
}

/// An address as a number, which orders addresses of one version as
/// `Ipv4Addr` and `Ipv6Addr` do.
fn number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// What one event did to the table, for views that show change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A row appeared.
    Opened(u64),
    /// A row changed in place.
    Changed(u64),
    /// A row went away; this was its last state.
    Closed(u64, Sock),
    /// Nothing: the close of a socket never seen.
    Nothing,
}

/// How long a connection stays in `TIME_WAIT` (`TCP_TIMEWAIT_LEN`).
pub const TIME_WAIT_NS: u64 = 60_000_000_000;

/// A socket timer, as `netstat -o` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    pub kind: TimerKind,
    /// Time left, ms.
    pub left_ms: u32,
    pub retransmits: u8,
}

/// Which timer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    Off,
    /// Retransmission (netstat says `on`).
    On,
    Keepalive,
    TimeWait,
    /// Zero-window probe.
    Probe,
}

/// Where a connection is: namespace, local and remote address and port.
type Tuple = (u32, IpAddr, u16, IpAddr, u16);

/// The live table.
#[derive(Debug, Default)]
pub struct Model {
    /// Every row, side by side: a removal moves the last row into the gap.
    socks: Vec<Sock>,
    /// Each row's brief, at its row's index.
    briefs: Vec<Brief>,
    /// Each row's index in `socks` and `briefs`, by cookie.
    slots: HashMap<u64, usize>,
    /// `TIME_WAIT` rows by expiry: no event marks their end.
    expiries: BinaryHeap<Reverse<(u64, u64)>>,
    /// Rows by owner pid, so an exec renames its rows without a scan.
    by_pid: HashMap<u32, HashSet<u64>>,
    /// `TIME_WAIT` rows by where they are: the kernel ends one early when a
    /// new connection takes its addresses and ports, and says nothing.
    time_wait: HashMap<Tuple, u64>,
    /// The names pids exec'd into since bnetstat started, until they exit:
    /// the kernel side keeps the name an owner had when it opened the
    /// socket, and later events still carry that one.
    renamed: HashMap<u32, String>,
}

impl Model {
    /// Adds a socket from the seed.
    pub fn seed(&mut self, cookie: u64, sock: Sock) {
        if let Some(at) = sock.expires_ns {
            self.expiries.push(Reverse((at, cookie)));
        }
        self.insert(cookie, sock);
    }

    /// `cookie`'s row, if it has one.
    fn get(&self, cookie: u64) -> Option<&Sock> {
        self.slots.get(&cookie).map(|&i| &self.socks[i])
    }

    /// Adds a row at the end, with its brief; returns its index.
    fn push(&mut self, cookie: u64, sock: Sock) -> usize {
        let i = self.socks.len();
        self.briefs.push(Brief::of(cookie, &sock));
        self.socks.push(sock);
        self.slots.insert(cookie, i);
        i
    }

    /// Adds or replaces a row, keeping the indexes.
    fn insert(&mut self, cookie: u64, sock: Sock) {
        let pid = sock.owner.as_ref().map(|o| o.pid);
        if sock.state == TcpState::TimeWait {
            self.time_wait.insert(sock.tuple(), cookie);
        }
        let before = match self.slots.get(&cookie) {
            Some(&i) => {
                self.briefs[i] = Brief::of(cookie, &sock);
                Some(mem::replace(&mut self.socks[i], sock))
            }
            None => {
                self.push(cookie, sock);
                None
            }
        };
        self.forget_time_wait(cookie, before.as_ref());
        self.reindex(cookie, before.and_then(|old| old.owner.map(|o| o.pid)), pid);
    }

    /// Removes a row, keeping the indexes.
    fn remove(&mut self, cookie: u64) -> Option<Sock> {
        let i = self.slots.remove(&cookie)?;
        let sock = self.socks.swap_remove(i);
        self.briefs.swap_remove(i);
        if let Some(moved) = self.briefs.get(i) {
            self.slots.insert(moved.cookie, i);
        }
        self.forget_time_wait(cookie, Some(&sock));
        self.reindex(cookie, sock.owner.as_ref().map(|o| o.pid), None);
        Some(sock)
    }

    /// Drops `cookie`'s entry in the `TIME_WAIT` index, if `old` (its row
    /// as it was) put one there.
    fn forget_time_wait(&mut self, cookie: u64, old: Option<&Sock>) {
        if let Some(old) = old.filter(|s| s.state == TcpState::TimeWait)
            && self.time_wait.get(&old.tuple()) == Some(&cookie)
        {
            self.time_wait.remove(&old.tuple());
        }
    }

    /// A socket other than `cookie` now uses `tuple`: a `TIME_WAIT` row
    /// there is gone from the kernel, which reused it.
    fn reused(&mut self, tuple: Tuple, cookie: u64) {
        if let Some(&old) = self.time_wait.get(&tuple)
            && old != cookie
        {
            self.remove(old);
        }
    }

    /// Moves `cookie` in the pid index from `before` to `after`.
    fn reindex(&mut self, cookie: u64, before: Option<u32>, after: Option<u32>) {
        if before == after {
            return;
        }
        if let Some(pid) = before
            && let Some(set) = self.by_pid.get_mut(&pid)
        {
            set.remove(&cookie);
            if set.is_empty() {
                self.by_pid.remove(&pid);
            }
        }
        if let Some(pid) = after {
            self.by_pid.entry(pid).or_default().insert(cookie);
        }
    }

    /// The pid of `cookie`'s owner, if it has a row and an owner.
    fn owner_pid(&self, cookie: u64) -> Option<u32> {
        self.get(cookie)?.owner.as_ref().map(|o| o.pid)
    }

    /// An event's owner under the name its pid exec'd into, if it did.
    fn named(&self, owner: &Option<Owner>) -> Option<Owner> {
        let mut owner = owner.clone()?;
        if let Some(name) = self.renamed.get(&owner.pid) {
            owner.comm.clone_from(name);
        }
        Some(owner)
    }

    /// A process started a new program: its rows take the new name.
    fn exec(&mut self, ev: &ExecInfo) {
        let pid = ev.owner.pid;
        for cookie in self.by_pid.get(&pid).into_iter().flatten() {
            // The pid stays, and a brief has no name: it stays as it is.
            if let Some(owner) = self
                .slots
                .get(cookie)
                .and_then(|&i| self.socks[i].owner.as_mut())
            {
                owner.comm.clone_from(&ev.owner.comm);
            }
        }
        self.renamed.insert(pid, ev.owner.comm.clone());
    }

    /// Drops the `TIME_WAIT` rows that have expired by `now_ns`
    /// (`CLOCK_BOOTTIME`), and returns them.
    pub fn prune(&mut self, now_ns: u64) -> Vec<(u64, Sock)> {
        let mut gone = Vec::new();
        while let Some(&Reverse((at, cookie))) = self.expiries.peek() {
            if at > now_ns {
                break;
            }
            self.expiries.pop();
            if self.get(cookie).is_some_and(|s| s.expires_ns == Some(at)) {
                gone.extend(self.remove(cookie).map(|s| (cookie, s)));
            }
        }
        gone
    }

    /// Applies one kernel event and says what it did to the table.
    pub fn apply(&mut self, event: &Event) -> Change {
        match event {
            Event::StateChange(ev) => self.state_change(ev),
            Event::Udp(ev) => self.udp(ev),
            Event::Exec(ev) => {
                self.exec(ev);
                Change::Nothing
            }
            Event::Proc {
                change: ProcChange::Exit { pid },
                ..
            } => {
                self.renamed.remove(pid);
                Change::Nothing
            }
            Event::Tcp(_) | Event::Proc { .. } => Change::Nothing,
        }
    }

    /// Removes a row, saying so.
    fn close(&mut self, cookie: u64) -> Change {
        self.remove(cookie)
            .map_or(Change::Nothing, |last| Change::Closed(cookie, last))
    }

    /// Changes `cookie`'s row by `update`, made by `new` first if there is
    /// none yet, keeping its brief and the pid index in step; says which.
    fn row(
        &mut self,
        cookie: u64,
        new: impl FnOnce() -> Sock,
        update: impl FnOnce(&mut Sock),
    ) -> Change {
        let before = self.owner_pid(cookie);
        let (i, change) = match self.slots.get(&cookie) {
            Some(&i) => (i, Change::Changed(cookie)),
            None => (self.push(cookie, new()), Change::Opened(cookie)),
        };
        let sock = &mut self.socks[i];
        update(sock);
        let after = sock.owner.as_ref().map(|o| o.pid);
        self.briefs[i] = Brief::of(cookie, sock);
        self.reindex(cookie, before, after);
        change
    }

    fn udp(&mut self, ev: &UdpSocketEvent) -> Change {
        if ev.op == UdpOp::Close {
            return self.close(ev.sock);
        }
        let owner = self.named(&ev.owner);
        let new = || Sock::new(Proto::Udp, ev.family, TcpState::Close, ev.netns);
        self.row(ev.sock, new, |sock| {
            match ev.op {
                UdpOp::Bind => (sock.laddr, sock.lport) = (ev.addr, ev.port),
                // The kernel connects after this hook returns; a connect that
                // fails leaves a row that says connected until the socket
                // closes.
                _ => {
                    (sock.raddr, sock.rport) = (ev.addr, ev.port);
                    sock.state = TcpState::Established;
                }
            }
            sock.since_ns = Some(ev.ts_ns);
            sock.adopt(owner);
        })
    }

    fn state_change(&mut self, ev: &StateChangeEvent) -> Change {
        if ev.new == TcpState::Close {
            let closed = self.close(ev.sock);
            // A clean active close hands the connection to a TIME_WAIT
            // socket that keeps the cookie; no event marks its end.
            if ev.error == 0
                && matches!(
                    ev.old,
                    TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing
                )
            {
                let at = ev.ts_ns.saturating_add(TIME_WAIT_NS);
                let mut tw = Sock::from_event(ev);
                (tw.state, tw.since_ns, tw.expires_ns) =
                    (TcpState::TimeWait, Some(ev.ts_ns), Some(at));
                (tw.recv_q, tw.send_q) = (Some(0), Some(0));
                self.insert(ev.sock, tw);
                self.expiries.push(Reverse((at, ev.sock)));
                return Change::Changed(ev.sock);
            }
            return closed;
        }
        if ev.lport != 0 && ev.rport != 0 {
            self.reused((ev.netns, ev.laddr, ev.lport, ev.raddr, ev.rport), ev.sock);
        }
        let owner = self.named(&ev.owner);
        let new = || Sock::from_event(ev);
        self.row(ev.sock, new, |sock| {
            sock.state = ev.new;
            sock.since_ns = Some(ev.ts_ns);
            sock.timer = None;
            sock.expires_ns = None;
            // connect() reports the state change before it picks the local
            // port: keep what is known rather than show port 0.
            if ev.lport != 0 || sock.lport == 0 {
                (sock.laddr, sock.lport) = (ev.laddr, ev.lport);
            }
            (sock.raddr, sock.rport) = (ev.raddr, ev.rport);
            sock.adopt(owner);
        })
    }

    /// Sets a row's queues to what the kernel reads now; a socket with no
    /// row is left to its events. A brief has no queues: it stays as it is.
    pub fn queues(&mut self, cookie: u64, recv_q: u32, send_q: u32) {
        if let Some(&i) = self.slots.get(&cookie) {
            let sock = &mut self.socks[i];
            (sock.recv_q, sock.send_q) = (Some(recv_q), Some(send_q));
        }
    }

    /// Drops the `TIME_WAIT` rows of namespace `netns` that a walk of every
    /// TCP socket there did not find among `alive`: the kernel ends one
    /// early with no event, when a reset reaches it. (Its socket is in the
    /// kernel's tables before the close that makes the row, so a walk after
    /// that close finds it.)
    pub fn time_waits_gone(&mut self, netns: u32, alive: &HashSet<u64>) {
        let gone: Vec<u64> = self
            .briefs
            .iter()
            .filter(|b| b.state == TcpState::TimeWait && b.netns == netns)
            .map(|b| b.cookie)
            .filter(|cookie| !alive.contains(cookie))
            .collect();
        for cookie in gone {
            self.remove(cookie);
        }
    }

    /// Sets a row's timer to what the kernel reads now, as [`Self::queues`].
    pub fn timer(&mut self, cookie: u64, timer: Option<Timer>) {
        if let Some(&i) = self.slots.get(&cookie) {
            self.socks[i].timer = timer;
        }
    }

    /// How many sockets it tracks.
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Every socket, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Sock)> {
        self.rows().map(|(b, s)| (b.cookie, s))
    }

    /// Every socket with its brief, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (&Brief, &Sock)> {
        self.briefs.iter().zip(&self.socks)
    }
}

impl Sock {
    fn tuple(&self) -> Tuple {
        (self.netns, self.laddr, self.lport, self.raddr, self.rport)
    }

    /// Takes the owner an event names, if it names one.
    fn adopt(&mut self, owner: Option<Owner>) {
        if let Some(owner) = owner {
            self.uid.get_or_insert(owner.uid);
            self.owner = Some(owner);
        }
    }

    /// A row with nothing known but what it is: addresses unspecified.
    pub(crate) fn new(proto: Proto, family: Family, state: TcpState, netns: u32) -> Sock {
        let unspecified = match family {
            Family::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Sock {
            proto,
            family,
            laddr: unspecified,
            lport: 0,
            raddr: unspecified,
            rport: 0,
            state,
            netns,
            owner: None,
            uid: None,
            inode: None,
            recv_q: None,
            send_q: None,
            timer: None,
            since_ns: None,
            expires_ns: None,
        }
    }

    /// A TCP row from what a transition says, for a socket not seen before.
    fn from_event(ev: &StateChangeEvent) -> Sock {
        Sock {
            laddr: ev.laddr,
            lport: ev.lport,
            raddr: ev.raddr,
            rport: ev.rport,
            ..Sock::new(Proto::Tcp, ev.family, ev.new, ev.netns)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn owner(pid: u32, comm: &str) -> Option<Owner> {
        Some(Owner {
            pid,
            uid: 1000,
            comm: comm.into(),
            cgroup: 0,
        })
    }

    fn change(sock: u64, ts: u64, old: TcpState, new: TcpState, owner: Option<Owner>) -> Event {
        Event::StateChange(StateChangeEvent {
            ts_ns: ts,
            sock,
            netns: 1,
            family: Family::Inet,
            laddr: LO,
            lport: if new == SynSent { 0 } else { 40000 },
            raddr: LO,
            rport: 80,
            old,
            new,
            ns_in_old: None,
            owner,
            error: 0,
            end: None,
        })
    }

    fn seeded(state: TcpState, owner: Option<Owner>) -> Sock {
        Sock {
            proto: Proto::Tcp,
            family: Family::Inet,
            laddr: LO,
            lport: 80,
            raddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            rport: 0,
            state,
            netns: 1,
            owner,
            uid: Some(0),
            inode: Some(99),
            recv_q: Some(0),
            send_q: Some(128),
            timer: None,
            since_ns: None,
            expires_ns: None,
        }
    }

    use TcpState::*;

    #[test]
    fn a_connection_the_seed_missed_is_created_by_its_events_and_removed_at_close() {
        let mut m = Model::default();
        m.apply(&change(7, 1, Close, SynSent, owner(42, "curl")));
        assert_eq!(m.get(7).map(|s| s.state), Some(SynSent));
        m.apply(&change(7, 2, SynSent, Established, owner(42, "curl")));
        let s = m.get(7).expect("row");
        assert_eq!(
            (s.state, s.lport, s.since_ns),
            (Established, 40000, Some(2))
        );
        assert_eq!(s.owner.as_ref().map(|o| o.pid), Some(42));
        m.apply(&change(7, 3, Established, FinWait1, owner(42, "curl")));
        m.apply(&change(7, 4, FinWait1, FinWait2, owner(42, "curl")));
        m.apply(&change(7, 5, FinWait2, Close, owner(42, "curl")));
        assert_eq!(
            m.get(7).map(|s| s.state),
            Some(TimeWait),
            "TIME_WAIT stays behind"
        );
        m.prune(5 + TIME_WAIT_NS - 1);
        assert_eq!(m.len(), 1);
        m.prune(5 + TIME_WAIT_NS);
        assert_eq!(m.len(), 0, "gone when the kernel lets it go");
    }

    #[test]
    fn a_reset_leaves_no_time_wait() {
        let mut m = Model::default();
        m.apply(&change(7, 1, Close, SynSent, owner(42, "curl")));
        let Event::StateChange(mut ev) = change(7, 2, FinWait1, Close, None) else {
            panic!("a state change")
        };
        ev.error = libc::ECONNRESET as u32;
        m.apply(&Event::StateChange(ev));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_passive_close_leaves_no_time_wait() {
        let mut m = Model::default();
        m.apply(&change(8, 1, LastAck, Close, None));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_seeded_time_wait_expires_when_its_timer_says() {
        let mut m = Model::default();
        let mut tw = seeded(TimeWait, None);
        tw.expires_ns = Some(1_000);
        m.seed(1, tw);
        m.prune(999);
        assert_eq!(m.len(), 1);
        m.prune(1_000);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_time_wait_reopened_before_expiry_is_not_pruned_by_the_old_timer() {
        let mut m = Model::default();
        m.apply(&change(3, 10, FinWait2, Close, None));
        m.apply(&change(3, 20, Close, SynSent, owner(1, "again")));
        m.prune(10 + TIME_WAIT_NS);
        assert_eq!(m.get(3).map(|s| s.state), Some(SynSent));
    }

    #[test]
    fn every_event_says_what_it_did_to_the_table() {
        let mut m = Model::default();
        assert_eq!(
            m.apply(&change(1, 1, Close, SynSent, None)),
            Change::Opened(1)
        );
        assert_eq!(
            m.apply(&change(1, 2, SynSent, Established, None)),
            Change::Changed(1)
        );
        assert_eq!(
            m.apply(&change(1, 3, FinWait1, Close, None)),
            Change::Changed(1),
            "TIME_WAIT"
        );
        let gone = m.prune(3 + TIME_WAIT_NS);
        assert_eq!(
            gone.iter().map(|(c, s)| (*c, s.state)).collect::<Vec<_>>(),
            [(1, TimeWait)]
        );
        m.apply(&change(2, 4, Close, SynSent, None));
        let Change::Closed(2, last) = m.apply(&change(2, 5, SynSent, Close, None)) else {
            panic!("closed")
        };
        assert_eq!(last.state, SynSent);
        assert_eq!(
            m.apply(&change(3, 6, LastAck, Close, None)),
            Change::Nothing
        );
    }

    #[test]
    fn a_seeded_owner_survives_events_that_do_not_know_it() {
        let mut m = Model::default();
        m.seed(5, seeded(Established, owner(10, "sshd")));
        m.apply(&change(5, 9, Established, CloseWait, None));
        let s = m.get(5).expect("row");
        assert_eq!(s.state, CloseWait);
        assert_eq!(s.owner.as_ref().map(|o| o.comm.as_str()), Some("sshd"));
        assert_eq!(s.inode, Some(99), "seed facts events do not carry are kept");
    }

    #[test]
    fn events_from_before_the_seed_replay_into_the_same_final_state() {
        // The seed saw ESTABLISHED; the ring still holds the SYN_SENT that
        // preceded it and the FIN_WAIT1 that followed.
        let mut m = Model::default();
        m.seed(3, seeded(Established, owner(8, "app")));
        m.apply(&change(3, 1, SynSent, Established, owner(8, "app")));
        m.apply(&change(3, 2, Established, FinWait1, owner(8, "app")));
        assert_eq!(m.get(3).map(|s| s.state), Some(FinWait1));
        assert_eq!(m.len(), 1, "not counted twice");
    }

    #[test]
    fn a_socket_closed_before_the_seed_leaves_no_row() {
        let mut m = Model::default();
        m.apply(&change(4, 1, Close, SynSent, owner(1, "a")));
        m.apply(&change(4, 2, SynSent, Close, owner(1, "a")));
        m.apply(&change(5, 3, LastAck, Close, None));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_new_socket_on_the_same_four_tuple_is_a_new_row() {
        let mut m = Model::default();
        m.apply(&change(1, 1, Close, SynSent, owner(1, "old")));
        m.apply(&change(1, 2, SynSent, Established, owner(1, "old")));
        m.apply(&change(2, 3, Close, SynSent, owner(2, "new")));
        m.apply(&change(2, 4, SynSent, Established, owner(2, "new")));
        m.apply(&change(1, 5, Established, Close, owner(1, "old")));
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.get(2).and_then(|s| s.owner.as_ref()).map(|o| o.pid),
            Some(2)
        );
    }

    #[test]
    fn connect_keeps_the_local_port_once_known() {
        let mut m = Model::default();
        m.apply(&change(9, 1, Close, SynSent, owner(1, "a")));
        assert_eq!(m.get(9).map(|s| s.lport), Some(0));
        m.apply(&change(9, 2, SynSent, Established, owner(1, "a")));
        assert_eq!(m.get(9).map(|s| s.lport), Some(40000));
    }

    fn udp(sock: u64, op: UdpOp, port: u16) -> Event {
        Event::Udp(UdpSocketEvent {
            ts_ns: 1,
            sock,
            netns: 1,
            family: Family::Inet,
            op,
            addr: LO,
            port,
            owner: owner(77, "dns"),
        })
    }

    #[test]
    fn a_udp_socket_is_bound_connected_and_closed_by_its_events() {
        let mut m = Model::default();
        m.apply(&udp(1, UdpOp::Bind, 5353));
        let s = m.get(1).expect("row");
        assert_eq!(
            (s.proto, s.state, s.lport, s.rport),
            (Proto::Udp, Close, 5353, 0)
        );
        m.apply(&udp(1, UdpOp::Connect, 53));
        let s = m.get(1).expect("row");
        assert_eq!((s.state, s.lport, s.rport), (Established, 5353, 53));
        assert_eq!(s.owner.as_ref().map(|o| o.pid), Some(77));
        m.apply(&udp(1, UdpOp::Close, 0));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_state_change_forgets_the_timer_it_no_longer_has() {
        let mut m = Model::default();
        let mut s = seeded(Established, None);
        s.timer = Some(Timer {
            kind: TimerKind::Keepalive,
            left_ms: 5000,
            retransmits: 0,
        });
        m.seed(6, s);
        m.apply(&change(6, 1, Established, CloseWait, None));
        assert_eq!(m.get(6).and_then(|s| s.timer), None);
    }

    fn exec(pid: u32, comm: &str) -> Event {
        Event::Exec(ExecInfo {
            ts_ns: 9,
            owner: owner(pid, comm).expect("owner"),
            ppid: 1,
            exe: None,
            args: Vec::new(),
        })
    }

    #[test]
    fn an_exec_renames_its_processs_rows_and_later_events_keep_the_new_name() {
        let mut m = Model::default();
        m.apply(&change(1, 1, Close, Listen, owner(50, "sh")));
        m.apply(&change(2, 1, Close, Listen, owner(60, "other")));
        m.apply(&exec(50, "nginx"));
        let comm = |m: &Model, c| m.get(c).and_then(|s| s.owner.clone()).map(|o| o.comm);
        assert_eq!(comm(&m, 1).as_deref(), Some("nginx"));
        assert_eq!(comm(&m, 2).as_deref(), Some("other"));
        // The kernel side still names the socket's first owner's name.
        m.apply(&change(3, 2, Listen, SynRecv, owner(50, "sh")));
        assert_eq!(comm(&m, 3).as_deref(), Some("nginx"));
        // Gone with the process: a new process at that pid has its own name.
        m.apply(&Event::Proc {
            ts_ns: 3,
            change: ProcChange::Exit { pid: 50 },
        });
        m.apply(&change(4, 4, Close, SynSent, owner(50, "curl")));
        assert_eq!(comm(&m, 4).as_deref(), Some("curl"));
    }

    #[test]
    fn the_pid_index_follows_owners_and_forgets_closed_rows() {
        let mut m = Model::default();
        m.apply(&change(1, 1, Close, SynSent, owner(50, "a")));
        m.apply(&change(1, 2, SynSent, Established, owner(51, "b")));
        assert_eq!(m.by_pid.get(&50), None);
        assert!(m.by_pid[&51].contains(&1));
        m.apply(&change(1, 3, Established, Close, owner(51, "b")));
        m.apply(&udp(2, UdpOp::Bind, 53));
        m.apply(&udp(2, UdpOp::Close, 0));
        assert!(m.by_pid.is_empty(), "{:?}", m.by_pid);
    }

    #[test]
    fn a_time_wait_row_goes_when_a_new_connection_reuses_its_ports() {
        let mut m = Model::default();
        // An active close leaves a TIME_WAIT row on 40000 -> 80.
        for (old, new) in [
            (Close, SynSent),
            (SynSent, Established),
            (Established, FinWait1),
            (FinWait1, FinWait2),
            (FinWait2, Close),
        ] {
            m.apply(&change(1, 1, old, new, owner(9, "c")));
        }
        assert_eq!(m.get(1).map(|s| s.state), Some(TimeWait));
        // The kernel hands those ports to a new connection at once.
        m.apply(&change(2, 2, Close, SynSent, owner(9, "c")));
        assert_eq!(m.len(), 2, "a connect has no local port yet");
        m.apply(&change(2, 3, SynSent, Established, owner(9, "c")));
        assert_eq!(m.get(1), None, "the TIME_WAIT row is gone");
        assert_eq!(m.len(), 1);
        assert!(m.time_wait.is_empty());
        // An expired one leaves no index entry behind either.
        m.apply(&change(2, 4, Established, FinWait1, None));
        m.apply(&change(2, 5, FinWait1, Close, None));
        assert_eq!(m.time_wait.len(), 1);
        m.prune(5 + TIME_WAIT_NS);
        assert!(m.time_wait.is_empty() && m.len() == 0);
    }

    /// Every row is where its cookie says, with its brief up to date.
    fn assert_consistent(m: &Model) {
        assert_eq!(m.briefs.len(), m.socks.len());
        assert_eq!(m.slots.len(), m.socks.len());
        for (i, (brief, sock)) in m.rows().enumerate() {
            assert_eq!(m.slots.get(&brief.cookie), Some(&i), "{brief:?}");
            assert_eq!(*brief, Brief::of(brief.cookie, sock));
        }
    }

    fn cookies(m: &Model) -> Vec<u64> {
        let mut all: Vec<u64> = m.iter().map(|(c, _)| c).collect();
        all.sort_unstable();
        all
    }

    fn listeners(m: &mut Model, cookies: impl IntoIterator<Item = u64>) {
        for c in cookies {
            let mut s = seeded(Listen, owner(c as u32, "srv"));
            s.lport = 1000 + c as u16;
            m.seed(c, s);
        }
    }

    #[test]
    fn queues_and_timers_read_afresh_change_only_rows_the_table_has() {
        let mut m = Model::default();
        listeners(&mut m, [1]);
        let keepalive = Timer {
            kind: TimerKind::Keepalive,
            left_ms: 7_000,
            retransmits: 0,
        };
        m.queues(1, 3, 128);
        m.timer(1, Some(keepalive));
        m.queues(2, 9, 9);
        m.timer(2, Some(keepalive));
        let row = m.get(1).expect("row");
        assert_eq!((row.recv_q, row.send_q), (Some(3), Some(128)));
        assert_eq!(row.timer, Some(keepalive));
        assert_eq!(m.len(), 1, "no row for a socket its events never showed");
        assert_consistent(&m);
    }

    #[test]
    fn a_row_that_goes_from_the_middle_leaves_its_place_to_the_last() {
        let mut m = Model::default();
        listeners(&mut m, 1..=5);
        m.apply(&change(2, 1, Listen, Close, None));
        assert_consistent(&m);
        assert_eq!(cookies(&m), [1, 3, 4, 5]);
        assert_eq!(m.get(5).map(|s| s.lport), Some(1005), "the last moved");
        m.apply(&change(4, 2, Listen, Close, None));
        m.apply(&change(1, 3, Listen, Close, None));
        assert_consistent(&m);
        assert_eq!(cookies(&m), [3, 5]);
        m.apply(&change(5, 4, Listen, Close, None));
        m.apply(&change(3, 5, Listen, Close, None));
        assert_consistent(&m);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_cookie_back_after_its_row_went_gets_a_new_row() {
        let mut m = Model::default();
        listeners(&mut m, 1..=3);
        m.apply(&change(1, 1, Listen, Close, None));
        assert_eq!(
            m.apply(&change(1, 2, Close, SynSent, owner(9, "again"))),
            Change::Opened(1)
        );
        assert_consistent(&m);
        let s = m.get(1).expect("row");
        assert_eq!((s.state, s.lport, s.since_ns), (SynSent, 0, Some(2)));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn every_change_to_a_row_is_in_its_brief() {
        let mut m = Model::default();
        let brief = |m: &Model, c| {
            assert_consistent(m);
            m.rows().find(|(b, _)| b.cookie == c).map(|(b, _)| *b)
        };
        m.apply(&udp(1, UdpOp::Bind, 5353));
        let b = brief(&m, 1).expect("bound");
        assert_eq!(
            (b.proto, b.state, b.lport, b.pid()),
            (Proto::Udp, Close, 5353, Some(77))
        );
        assert_eq!(b.since_ns(), Some(1));
        m.apply(&udp(1, UdpOp::Connect, 53));
        let b = brief(&m, 1).expect("connected");
        assert_eq!((b.state, b.rport), (Established, 53));
        m.seed(2, seeded(Established, None));
        let b = brief(&m, 2).expect("seeded");
        assert_eq!((b.pid(), b.since_ns()), (None, None));
        m.apply(&change(2, 7, Established, FinWait1, owner(5, "late")));
        let b = brief(&m, 2).expect("closing");
        assert_eq!(
            (b.state, b.pid(), b.since_ns()),
            (FinWait1, Some(5), Some(7))
        );
        m.apply(&exec(5, "renamed"));
        assert_eq!(brief(&m, 2).and_then(|b| b.pid()), Some(5));
        m.apply(&change(2, 8, FinWait1, Close, None));
        assert_eq!(brief(&m, 2).map(|b| b.state), Some(TimeWait));
        m.apply(&udp(1, UdpOp::Close, 0));
        assert_eq!(brief(&m, 1), None);
    }

    #[test]
    fn a_time_wait_a_walk_of_its_namespace_did_not_find_is_gone() {
        let mut m = Model::default();
        for (cookie, state, netns) in [
            (1, TimeWait, 1),
            (2, TimeWait, 1),
            (3, Established, 1),
            (4, TimeWait, 2),
        ] {
            m.seed(
                cookie,
                Sock {
                    netns,
                    ..seeded(state, None)
                },
            );
        }
        // Namespace 1's walk found 2 but not 1 (a reset ended it) nor 3,
        // which is no TIME_WAIT and so is left to its events; namespace 2
        // was not walked.
        m.time_waits_gone(1, &[2].into_iter().collect());
        assert_eq!(cookies(&m), [2, 3, 4]);
        assert!(!m.time_wait.values().any(|&c| c == 1));
        assert_consistent(&m);
    }

    #[test]
    fn a_reused_time_wait_and_expired_ones_leave_every_row_in_its_place() {
        let mut m = Model::default();
        listeners(&mut m, [10, 11]);
        // TIME_WAITs on 40000 -> 80 (cookie 1), then 40001 .. 40003.
        for (c, lport) in [(1, 40000), (2, 40001), (3, 40002), (4, 40003)] {
            let Event::StateChange(mut ev) = change(c, c, FinWait2, Close, None) else {
                unreachable!()
            };
            ev.lport = lport;
            m.apply(&Event::StateChange(ev));
        }
        listeners(&mut m, [12]);
        assert_consistent(&m);
        m.apply(&change(5, 9, SynSent, Established, owner(9, "c")));
        assert_eq!(m.get(1), None, "reused");
        assert_consistent(&m);
        m.prune(3 + TIME_WAIT_NS);
        assert_eq!(cookies(&m), [4, 5, 10, 11, 12]);
        assert_consistent(&m);
        m.prune(4 + TIME_WAIT_NS);
        assert_eq!(cookies(&m), [5, 10, 11, 12]);
        assert_consistent(&m);
    }

    #[test]
    fn ends_sort_as_addresses_and_ports_do() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().map(IpAddr::V4).expect("v4");
        let v6 = |s: &str| s.parse::<Ipv6Addr>().map(IpAddr::V6).expect("v6");
        let ends = [
            (v4("0.0.0.0"), 0),
            (v4("0.0.0.1"), 80),
            (v4("9.255.255.255"), 1),
            (v4("10.0.0.1"), 80),
            (v4("10.0.0.1"), 443),
            (v4("255.255.255.255"), 65535),
            (v6("::"), 0),
            (v6("::1"), 80),
            (v6("::ffff:10.0.0.1"), 80),
            (v6("fe80::1"), 22),
            (v6("ffff::"), 1),
        ];
        let end = |(addr, port): (IpAddr, u16)| {
            let mut s = seeded(Listen, None);
            (s.laddr, s.lport) = (addr, port);
            Brief::of(0, &s).local()
        };
        for a in ends {
            for b in ends {
                assert_eq!(end(a).cmp(&end(b)), a.cmp(&b), "{a:?} against {b:?}");
            }
        }
    }
}
