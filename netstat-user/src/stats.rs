//! `bnetstat -s`: per-protocol statistics from two sources, side by side.
//!
//! - The kernel's own MIB counters, read from `/proc/net/snmp`,
//!   `/proc/net/netstat` and `/proc/net/snmp6` (the kernel's MIB interface,
//!   what `nstat` reads; not a connection table).
//! - bnetstat's counters from TCP events since it started: transitions by
//!   old and new state, active and passive opens, resets sent and received
//!   and retransmits, in total and per process.
//!
//! `serve` keeps the same event counters as running totals ([`Counters`]).
//!
//! Parsing and counting are pure; `run` does the I/O.

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    cli::StatsProto,
    decode::{Event, Family, Owner, TcpOp, TcpState, decode},
    kernel::Kernel,
    signals,
    views::stats as view,
};

/// Where the kernel publishes its MIB counters, for this network namespace.
const MIB_FILES: [&str; 3] = ["/proc/net/snmp", "/proc/net/netstat", "/proc/net/snmp6"];

/// One kernel counter, named as `nstat` names it (`TcpActiveOpens`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    /// The MIB group: `Ip`, `IpExt`, `Tcp`, `TcpExt`, `Icmp6`, ...
    pub group: String,
    /// The counter within it: `ActiveOpens`.
    pub field: String,
    /// Signed: a few entries are not counters (`TcpMaxConn` is -1).
    pub value: i64,
}

impl Counter {
    /// `nstat`'s name: group and field run together.
    pub fn name(&self) -> String {
        format!("{}{}", self.group, self.field)
    }
}

/// Which protocol `-s` files a MIB group under; `None` for groups it does
/// not show (MPTCP, SCTP). The kernel keeps one TCP MIB for both families,
/// so it is filed under `tcp` and `tcp6` has no kernel counters.
pub fn group_proto(group: &str) -> Option<StatsProto> {
    Some(match group {
        "Ip" | "IpExt" => StatsProto::Ip,
        "Icmp" | "IcmpMsg" => StatsProto::Icmp,
        "Tcp" | "TcpExt" => StatsProto::Tcp,
        "Udp" | "UdpLite" => StatsProto::Udp,
        "Ip6" => StatsProto::Ip6,
        "Icmp6" => StatsProto::Icmp6,
        "Udp6" | "UdpLite6" => StatsProto::Udp6,
        _ => return None,
    })
}

/// Parses `/proc/net/snmp` or `/proc/net/netstat`: pairs of lines, a
/// group's field names then its values (`Tcp: RtoAlgorithm ...` /
/// `Tcp: 1 ...`).
pub fn parse_pairs(text: &str) -> Result<Vec<Counter>> {
    let mut out = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(names) = lines.next() {
        let values = lines
            .next()
            .with_context(|| format!("MIB group without values: {names}"))?;
        let (group, names) = names
            .split_once(':')
            .with_context(|| format!("not a MIB line: {names}"))?;
        let (vgroup, values) = values
            .split_once(':')
            .with_context(|| format!("not a MIB line: {values}"))?;
        if group != vgroup {
            anyhow::bail!("MIB names of {group} followed by values of {vgroup}");
        }
        for (field, value) in names.split_whitespace().zip(values.split_whitespace()) {
            out.push(Counter {
                group: group.to_owned(),
                field: field.to_owned(),
                value: value
                    .parse()
                    .with_context(|| format!("{group}{field} is not a number: {value}"))?,
            });
        }
    }
    Ok(out)
}

/// Parses `/proc/net/snmp6`: one `Ip6InReceives 123` per line.
pub fn parse_snmp6(text: &str) -> Result<Vec<Counter>> {
    // Longest first: `Udp6` would match `UdpLite6InDatagrams` too early.
    const GROUPS: [&str; 4] = ["UdpLite6", "Icmp6", "Udp6", "Ip6"];
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        let (Some(name), Some(value)) = (f.next(), f.next()) else {
            anyhow::bail!("not a MIB line: {line}");
        };
        let Some(group) = GROUPS.into_iter().find(|g| name.starts_with(g)) else {
            continue;
        };
        out.push(Counter {
            group: group.to_owned(),
            field: name[group.len()..].to_owned(),
            value: value
                .parse()
                .with_context(|| format!("{name} is not a number: {value}"))?,
        });
    }
    Ok(out)
}

/// Every kernel counter `-s` shows, in the kernel's order.
fn read_mib() -> Result<Vec<Counter>> {
    let mut all = Vec::new();
    for path in MIB_FILES {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let parsed = if path.ends_with("snmp6") {
            parse_snmp6(&text)
        } else {
            parse_pairs(&text)
        };
        all.extend(parsed.with_context(|| format!("parsing {path}"))?);
    }
    Ok(all)
}

/// Counts of TCP events, for one process or for all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `CLOSE -> SYN_SENT`: connections this end opened.
    pub active_opens: u64,
    /// `LISTEN -> SYN_RECV`: connections a listener accepted.
    pub passive_opens: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub retransmits: u64,
    /// Every transition by old and new state.
    pub transitions: BTreeMap<(TcpState, TcpState), u64>,
}

impl Counts {
    /// Counts one event, whatever its owner and family.
    pub fn count(&mut self, event: &Event) {
        match event {
            Event::StateChange(ev) => {
                *self.transitions.entry((ev.old, ev.new)).or_default() += 1;
                match (ev.old, ev.new) {
                    (TcpState::Close, TcpState::SynSent) => self.active_opens += 1,
                    (TcpState::Listen, TcpState::SynRecv) => self.passive_opens += 1,
                    _ => {}
                }
            }
            Event::Tcp(ev) => match ev.op {
                TcpOp::Retransmit => self.retransmits += 1,
                TcpOp::SendReset => self.resets_sent += 1,
                TcpOp::ReceiveReset => self.resets_received += 1,
            },
            Event::Udp(_) | Event::Exec(_) | Event::Proc { .. } => {}
        }
    }
}

/// Totals since start, for `serve`: no per-process split, so they stay
/// the same size however long it runs (transitions are at most 12 x 12).
/// Pure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every decoded event, of any kind.
    pub events: u64,
    pub tcp: Counts,
}

impl Counters {
    /// Counts one decoded event.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        self.tcp.count(event);
    }
}

/// Who an event's socket belongs to: pid and comm, or `None` when unknown.
pub type ProcessKey = Option<(u32, String)>;

/// bnetstat's event counters since they were last taken. Pure.
#[derive(Clone, Debug, Default)]
pub struct EventCounts {
    /// Only events of this family, when set (`--proto tcp6` alone).
    family: Option<Family>,
    pub total: Counts,
    pub processes: HashMap<ProcessKey, Counts>,
}

impl EventCounts {
    pub fn new(family: Option<Family>) -> EventCounts {
        EventCounts {
            family,
            ..EventCounts::default()
        }
    }

    /// Counts one decoded event.
    pub fn apply(&mut self, event: &Event) {
        let (family, owner) = match event {
            Event::StateChange(ev) => (Some(ev.family), &ev.owner),
            Event::Tcp(ev) => (ev.family, &ev.owner),
            Event::Udp(_) | Event::Exec(_) | Event::Proc { .. } => return,
        };
        // A reset sent for no socket has no family: it counts only when
        // both families are shown.
        if self.family.is_some() && family != self.family {
            return;
        }
        let key = owner
            .as_ref()
            .map(|Owner { pid, comm, .. }| (*pid, comm.clone()));
        let per = self.processes.entry(key).or_default();
        self.total.count(event);
        per.count(event);
    }

    /// The counts so far, starting again from zero.
    pub fn take(&mut self) -> EventCounts {
        let family = self.family;
        std::mem::replace(self, EventCounts::new(family))
    }
}

/// How `-s` runs.
pub struct Options {
    /// Protocols to show; every one when empty.
    pub protos: Vec<StatsProto>,
    pub json: bool,
    /// Redisplay every so often, showing changes; event counters need it.
    pub interval: Option<Duration>,
}

impl Options {
    fn shows(&self, proto: StatsProto) -> bool {
        self.protos.is_empty() || self.protos.contains(&proto)
    }

    /// Whether TCP event counters are shown at all.
    pub fn shows_tcp(&self) -> bool {
        self.shows(StatsProto::Tcp) || self.shows(StatsProto::Tcp6)
    }

    /// The family event counters keep: `tcp` is TCP over both families, as
    /// the kernel's TCP MIB is; `tcp6` without `tcp` narrows to IPv6.
    pub fn tcp_family(&self) -> Option<Family> {
        (self.shows(StatsProto::Tcp6) && !self.shows(StatsProto::Tcp)).then_some(Family::Inet6)
    }

    /// The kernel counters to show, in order.
    fn select(&self, all: Vec<Counter>) -> Vec<Counter> {
        all.into_iter()
            .filter(|c| group_proto(&c.group).is_some_and(|p| self.shows(p)))
            .collect()
    }
}

/// `now` minus `before`, counter by counter (by name; a counter new since
/// then counts from zero).
pub fn delta(now: &[Counter], before: &[Counter]) -> Vec<Counter> {
    let old: HashMap<(&str, &str), i64> = before
        .iter()
        .map(|c| ((c.group.as_str(), c.field.as_str()), c.value))
        .collect();
    now.iter()
        .map(|c| Counter {
            value: c.value.wrapping_sub(
                old.get(&(c.group.as_str(), c.field.as_str()))
                    .copied()
                    .unwrap_or(0),
            ),
            ..c.clone()
        })
        .collect()
}

/// Prints the statistics once, or with an interval until a signal; the
/// kernel side (loaded only with an interval and TCP shown) feeds the
/// event counters.
pub fn run(kernel: Option<&mut Kernel>, opts: &Options, out: &mut impl Write) -> Result<()> {
    let first = opts.select(read_mib()?);
    let Some(interval) = opts.interval else {
        let mut text = view::render(&first, None, None, opts.json);
        if opts.shows_tcp() && !opts.json {
            text.push_str(view::INTERVAL_NOTE);
        }
        return print(out, &text);
    };
    eprintln!("Tracing TCP events for statistics. Ctrl-C to stop.");
    let mut counts = EventCounts::new(opts.tcp_family());
    let mut kernel = kernel;
    let mut before = first.clone();
    let started = kernel.is_some().then(|| counts.clone());
    print(
        out,
        &view::render(&first, None, started.as_ref(), opts.json),
    )?;
    let mut last = Instant::now();
    loop {
        let due = last + interval;
        let stop = loop {
            if signals::stop_requested() {
                break true;
            }
            let now = Instant::now();
            if now >= due {
                break false;
            }
            match kernel.as_deref_mut() {
                Some(k) => {
                    k.wait((due - now).min(Duration::from_millis(100)))
                        .context("waiting for events")?;
                    k.drain(|record| {
                        if let Ok(ev) = decode(record) {
                            counts.apply(&ev);
                        }
                    });
                }
                None => std::thread::sleep((due - now).min(Duration::from_millis(100))),
            }
        };
        let now_mib = opts.select(read_mib()?);
        let events = kernel.is_some().then(|| counts.take());
        let elapsed = last.elapsed();
        last = Instant::now();
        // A stop shows the part interval too, so nothing counted is lost.
        print(
            out,
            &view::render(
                &delta(&now_mib, &before),
                Some(elapsed),
                events.as_ref(),
                opts.json,
            ),
        )?;
        before = now_mib;
        if stop {
            return Ok(());
        }
    }
}

fn print(out: &mut impl Write, text: &str) -> Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A reader that went away (`| head`) is a normal end.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use netstat_common::tcp_state;

    use super::*;
    use crate::decode::{
        TcpOpEvent,
        tests::{bytes_of, raw_state_change},
    };

    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 100\n\
                        Tcp: MaxConn ActiveOpens\nTcp: -1 7\n";
    const SNMP6: &str =
        "Ip6InReceives                   \t5\nUdpLite6InDatagrams 2\nUdp6InDatagrams 3\n";

    #[test]
    fn snmp_pairs_name_counters_as_nstat_does() {
        let c = parse_pairs(SNMP).expect("parses");
        let names: Vec<_> = c.iter().map(|c| (c.name(), c.value)).collect();
        assert_eq!(
            names,
            [
                ("IpForwarding".into(), 1),
                ("IpDefaultTTL".into(), 64),
                ("IpInReceives".into(), 100),
                ("TcpMaxConn".into(), -1),
                ("TcpActiveOpens".into(), 7)
            ]
        );
        assert!(parse_pairs("Ip: A B\nTcp: 1 2\n").is_err());
        assert!(parse_pairs("Ip: A\nIp: x\n").is_err());
    }

    #[test]
    fn snmp6_groups_by_the_longest_prefix() {
        let c = parse_snmp6(SNMP6).expect("parses");
        let groups: Vec<_> = c
            .iter()
            .map(|c| (c.group.as_str(), c.field.as_str()))
            .collect();
        assert_eq!(
            groups,
            [
                ("Ip6", "InReceives"),
                ("UdpLite6", "InDatagrams"),
                ("Udp6", "InDatagrams")
            ]
        );
    }

    #[test]
    fn proto_list_picks_groups_and_tcp6_alone_means_only_ipv6_events() {
        let opts = |protos: Vec<StatsProto>| Options {
            protos,
            json: false,
            interval: None,
        };
        let mut all = parse_pairs(SNMP).expect("parses");
        all.extend(parse_snmp6(SNMP6).expect("parses"));
        let tcp = opts(vec![StatsProto::Tcp]);
        assert!(tcp.select(all.clone()).iter().all(|c| c.group == "Tcp"));
        assert_eq!(tcp.tcp_family(), None);
        assert_eq!(
            opts(vec![StatsProto::Tcp6]).tcp_family(),
            Some(Family::Inet6)
        );
        assert!(opts(vec![StatsProto::Tcp6]).select(all.clone()).is_empty());
        assert_eq!(opts(vec![]).tcp_family(), None);
        assert!(!opts(vec![StatsProto::Udp]).shows_tcp());
        assert_eq!(opts(vec![]).select(all).len(), 8);
    }

    #[test]
    fn delta_is_the_change_per_counter() {
        let before = parse_pairs(SNMP).expect("parses");
        let now = parse_pairs(&SNMP.replace("1 64 100", "1 64 150")).expect("parses");
        let d: Vec<_> = delta(&now, &before).iter().map(|c| c.value).collect();
        assert_eq!(d, [0, 0, 50, 0, 0]);
    }

    fn change(old: u8, new: u8) -> Event {
        decode(&bytes_of(&raw_state_change(old, new))).expect("decodes")
    }

    #[test]
    fn opens_resets_and_retransmits_are_counted_per_process() {
        let mut counts = EventCounts::new(None);
        counts.apply(&change(tcp_state::CLOSE, tcp_state::SYN_SENT));
        counts.apply(&change(tcp_state::SYN_SENT, tcp_state::ESTABLISHED));
        counts.apply(&change(tcp_state::LISTEN, tcp_state::SYN_RECV));
        let tcp = |op, owner| {
            Event::Tcp(TcpOpEvent {
                ts_ns: 1,
                sock: 1,
                op,
                family: Some(Family::Inet),
                owner,
            })
        };
        let curl = match change(tcp_state::CLOSE, tcp_state::SYN_SENT) {
            Event::StateChange(ev) => ev.owner,
            _ => None,
        };
        counts.apply(&tcp(TcpOp::Retransmit, curl.clone()));
        counts.apply(&tcp(TcpOp::ReceiveReset, curl));
        counts.apply(&tcp(TcpOp::SendReset, None));
        let mine = &counts.processes[&Some((42, "curl".to_owned()))];
        assert_eq!(
            (
                mine.active_opens,
                mine.passive_opens,
                mine.retransmits,
                mine.resets_received
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(mine.transitions[&(TcpState::Close, TcpState::SynSent)], 1);
        assert_eq!(counts.processes[&None].resets_sent, 1);
        assert_eq!(counts.total.resets_sent, 1);
        assert_eq!(counts.total.transitions.values().sum::<u64>(), 3);
        let taken = counts.take();
        assert_eq!(taken.total.active_opens, 1);
        assert_eq!(counts.total, Counts::default());
        assert!(counts.processes.is_empty());
    }

    #[test]
    fn a_family_filter_drops_the_other_family_and_resets_without_a_socket() {
        let mut counts = EventCounts::new(Some(Family::Inet6));
        counts.apply(&change(tcp_state::CLOSE, tcp_state::SYN_SENT));
        counts.apply(&Event::Tcp(TcpOpEvent {
            ts_ns: 1,
            sock: 0,
            op: TcpOp::SendReset,
            family: None,
            owner: None,
        }));
        assert_eq!(counts.total, Counts::default());
    }

    #[test]
    fn serves_totals_count_every_event_and_keep_no_processes() {
        let mut totals = Counters::default();
        totals.apply(&change(tcp_state::CLOSE, tcp_state::LISTEN));
        totals.apply(&change(tcp_state::LISTEN, tcp_state::SYN_RECV));
        totals.apply(&Event::Tcp(TcpOpEvent {
            ts_ns: 1,
            sock: 0,
            op: TcpOp::SendReset,
            family: None,
            owner: None,
        }));
        assert_eq!(totals.events, 3);
        assert_eq!((totals.tcp.passive_opens, totals.tcp.resets_sent), (1, 1));
        assert_eq!(totals.tcp.transitions.len(), 2);
    }
}
