//! `serve`'s Prometheus metrics, in the text exposition format 0.0.4.
//! Pure: the model, the event totals and bnetstat's own use in, text out.
//!
//! Every label value comes from a fixed set (a protocol, a state, a
//! cause), never a pid, port or address, so however many connections come
//! and go the number of series stays the same: 28 socket gauges, 4
//! listener gauges, at most 12 x 12 transition pairs.

use std::{fmt::Display, fmt::Write as _};

use foldhash::HashMap;

use crate::{
    decode::TcpState,
    kernel::Lost,
    model::{Model, Sock},
    sockdiag::Proto,
    stats::Counters,
    usage::SelfUsage,
    views::table::{is_listening, proto_name},
};

/// The content type of what [`render`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const TCP_PROTOS: [&str; 2] = ["tcp", "tcp6"];
const UDP_PROTOS: [&str; 2] = ["udp", "udp6"];
/// UDP's states as bnetstat's JSON names them.
const UDP_STATES: [&str; 2] = ["UNCONN", "ESTABLISHED"];

/// Every metric, from the live table, the event totals since start, the
/// events lost since start and bnetstat's own use.
pub fn render(model: &Model, counters: &Counters, lost: Lost, usage: &SelfUsage) -> String {
    let mut by_state: HashMap<(&str, &str), u64> = HashMap::default();
    let mut listeners: HashMap<&str, u64> = HashMap::default();
    for (_, s) in model.iter() {
        *by_state.entry((proto_name(s), state_label(s))).or_default() += 1;
        if is_listening(s.proto, s.state) {
            *listeners.entry(proto_name(s)).or_default() += 1;
        }
    }
    let tcp_pairs = TCP_PROTOS
        .iter()
        .flat_map(|p| TcpState::ALL.iter().map(move |s| (*p, s.name())));
    let udp_pairs = UDP_PROTOS
        .iter()
        .flat_map(|p| UDP_STATES.iter().map(move |s| (*p, *s)));
    let tcp = &counters.tcp;
    let mut t = Text::default();

    t.family(
        "bnetstat_sockets",
        "gauge",
        "TCP and UDP sockets of every network namespace, by protocol and state.",
    );
    for (proto, state) in tcp_pairs.chain(udp_pairs) {
        let n = by_state.get(&(proto, state)).copied().unwrap_or(0);
        t.sample("bnetstat_sockets", &[("proto", proto), ("state", state)], n);
    }
    t.family(
        "bnetstat_listeners",
        "gauge",
        "Listening sockets as netstat -l counts them: TCP in LISTEN, UDP not connected.",
    );
    for proto in TCP_PROTOS.iter().chain(&UDP_PROTOS) {
        let n = listeners.get(proto).copied().unwrap_or(0);
        t.sample("bnetstat_listeners", &[("proto", proto)], n);
    }
    t.family(
        "bnetstat_transitions_total",
        "counter",
        "TCP state transitions since bnetstat started, by old and new state.",
    );
    for ((old, new), n) in &tcp.transitions {
        t.sample(
            "bnetstat_transitions_total",
            &[("old_state", old.name()), ("new_state", new.name())],
            n,
        );
    }
    for (name, help, value) in [
        (
            "bnetstat_connects_total",
            "TCP connections opened by this host (active opens: CLOSE -> SYN_SENT).",
            tcp.active_opens,
        ),
        (
            "bnetstat_accepts_total",
            "TCP connections taken in by listeners (passive opens: LISTEN -> SYN_RECV).",
            tcp.passive_opens,
        ),
        (
            "bnetstat_resets_sent_total",
            "TCP resets sent.",
            tcp.resets_sent,
        ),
        (
            "bnetstat_resets_received_total",
            "TCP resets received.",
            tcp.resets_received,
        ),
        (
            "bnetstat_retransmits_total",
            "TCP segments retransmitted.",
            tcp.retransmits,
        ),
        (
            "bnetstat_events_total",
            "Events received from the kernel side.",
            counters.events,
        ),
    ] {
        t.family(name, "counter", help);
        t.sample(name, &[], value);
    }
    t.family(
        "bnetstat_events_lost_total",
        "counter",
        "Events the kernel side could not deliver: the ring buffer was full \
         (ring_full) or the kernel skipped a program nested on a CPU (nested).",
    );
    for (cause, n) in [("ring_full", lost.ring_full), ("nested", lost.nested)] {
        t.sample("bnetstat_events_lost_total", &[("cause", cause)], n);
    }
    t.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    t.sample("process_resident_memory_bytes", &[], usage.resident_bytes);
    t.family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    t.sample("process_cpu_seconds_total", &[], usage.cpu_seconds);
    t.family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    t.sample("process_start_time_seconds", &[], usage.start_time_seconds);
    t.0
}

/// The state label: netstat's name for TCP; for UDP, `ESTABLISHED` when
/// connected and `UNCONN` otherwise, as bnetstat's JSON says.
fn state_label(s: &Sock) -> &'static str {
    match (s.proto, s.state) {
        (Proto::Udp, TcpState::Established) => "ESTABLISHED",
        (Proto::Udp, _) => "UNCONN",
        (Proto::Tcp, state) => state.name(),
    }
}

/// The exposition text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    /// A family's `HELP` and `TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                let comma = if i == 0 { "" } else { "," };
                let _ = write!(self.0, "{comma}{label}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value as the format wants it: `\`, `"` and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// Help text as the format wants it: `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::{
        decode::{Event, Family, StateChangeEvent, TcpOp, TcpOpEvent},
        model::Sock,
    };

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn sock(proto: Proto, laddr: IpAddr, port: u16, state: TcpState) -> Sock {
        let family = if laddr.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        };
        Sock {
            laddr,
            lport: port,
            raddr: laddr,
            ..Sock::new(proto, family, state, 1)
        }
    }

    fn change(old: TcpState, new: TcpState) -> Event {
        Event::StateChange(StateChangeEvent {
            ts_ns: 1,
            sock: 9,
            netns: 1,
            family: Family::Inet,
            laddr: LO,
            lport: 8080,
            raddr: LO,
            rport: 40000,
            old,
            new,
            ns_in_old: None,
            owner: None,
            error: 0,
            end: None,
        })
    }

    /// A web server on 8080 with one client connected, a closed IPv6
    /// connection waiting out TIME_WAIT, a DNS-like UDP socket and a
    /// connected IPv6 UDP one; the events that made the connection, a
    /// reset, and a few lost events.
    fn scene() -> String {
        use TcpState::*;
        let mut model = Model::default();
        model.seed(1, sock(Proto::Tcp, LO, 8080, Listen));
        model.seed(2, sock(Proto::Tcp, LO, 8080, Established));
        model.seed(3, sock(Proto::Tcp, LO, 40000, Established));
        model.seed(4, sock(Proto::Tcp, LO6, 443, TimeWait));
        model.seed(5, sock(Proto::Udp, LO, 53, Close));
        model.seed(6, sock(Proto::Udp, LO6, 5353, Established));
        let mut counters = Counters::default();
        for (old, new) in [
            (Close, Listen),
            (Close, SynSent),
            (Listen, SynRecv),
            (SynSent, Established),
            (SynRecv, Established),
        ] {
            counters.apply(&change(old, new));
        }
        counters.apply(&Event::Tcp(TcpOpEvent {
            ts_ns: 2,
            sock: 0,
            op: TcpOp::SendReset,
            family: None,
            owner: None,
        }));
        let lost = Lost {
            ring_full: 2,
            nested: 1,
        };
        let usage = SelfUsage {
            resident_bytes: 4_096_000,
            cpu_seconds: 1.5,
            start_time_seconds: 1_700_000_000.25,
        };
        render(&model, &counters, lost, &usage)
    }

    /// The lines of one family, `HELP` and `TYPE` first.
    fn family<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
        text.lines()
            .filter(|l| {
                let bare = l
                    .strip_prefix("# HELP ")
                    .or_else(|| l.strip_prefix("# TYPE "))
                    .unwrap_or(l);
                bare.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .collect()
    }

    #[test]
    fn a_small_scene_is_counted_line_by_line() {
        let text = scene();
        let sockets: Vec<_> = family(&text, "bnetstat_sockets")
            .into_iter()
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        assert_eq!(
            sockets,
            [
                "# HELP bnetstat_sockets TCP and UDP sockets of every network namespace, by protocol and state.",
                "# TYPE bnetstat_sockets gauge",
                r#"bnetstat_sockets{proto="tcp",state="ESTABLISHED"} 2"#,
                r#"bnetstat_sockets{proto="tcp",state="LISTEN"} 1"#,
                r#"bnetstat_sockets{proto="tcp6",state="TIME_WAIT"} 1"#,
                r#"bnetstat_sockets{proto="udp",state="UNCONN"} 1"#,
                r#"bnetstat_sockets{proto="udp6",state="ESTABLISHED"} 1"#,
            ]
        );
        assert_eq!(
            family(&text, "bnetstat_sockets").len(),
            2 + 28,
            "every state of every protocol, zeros too"
        );
        assert_eq!(
            family(&text, "bnetstat_listeners")[2..],
            [
                r#"bnetstat_listeners{proto="tcp"} 1"#,
                r#"bnetstat_listeners{proto="tcp6"} 0"#,
                r#"bnetstat_listeners{proto="udp"} 1"#,
                r#"bnetstat_listeners{proto="udp6"} 0"#,
            ]
        );
        assert_eq!(
            family(&text, "bnetstat_transitions_total")[1..],
            [
                "# TYPE bnetstat_transitions_total counter",
                r#"bnetstat_transitions_total{old_state="SYN_SENT",new_state="ESTABLISHED"} 1"#,
                r#"bnetstat_transitions_total{old_state="SYN_RECV",new_state="ESTABLISHED"} 1"#,
                r#"bnetstat_transitions_total{old_state="CLOSE",new_state="SYN_SENT"} 1"#,
                r#"bnetstat_transitions_total{old_state="CLOSE",new_state="LISTEN"} 1"#,
                r#"bnetstat_transitions_total{old_state="LISTEN",new_state="SYN_RECV"} 1"#,
            ],
            "only the pairs seen"
        );
        for line in [
            "bnetstat_connects_total 1",
            "bnetstat_accepts_total 1",
            "bnetstat_resets_sent_total 1",
            "bnetstat_resets_received_total 0",
            "bnetstat_retransmits_total 0",
            "bnetstat_events_total 6",
            r#"bnetstat_events_lost_total{cause="ring_full"} 2"#,
            r#"bnetstat_events_lost_total{cause="nested"} 1"#,
            "process_resident_memory_bytes 4096000",
            "process_cpu_seconds_total 1.5",
            "process_start_time_seconds 1700000000.25",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = scene();
        let mut described: Vec<(String, String)> = Vec::new();
        let mut helped = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("name and text");
                assert!(!help.is_empty(), "{line}");
                helped = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("name and type");
                assert_eq!(helped.as_deref(), Some(name), "HELP then TYPE: {line}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(
                    described.iter().all(|(n, _)| n != name),
                    "{name} described twice"
                );
                described.push((name.to_owned(), kind.to_owned()));
            } else {
                let name = line.split(['{', ' ']).next().expect("a name");
                let (current, _) = described.last().expect("a family first");
                assert_eq!(current, name, "a sample outside its family: {line}");
                let value = line.rsplit(' ').next().expect("a value");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert_eq!(described.len(), 13);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut t = Text::default();
        t.family("x", "gauge", "a \\ b\nc");
        t.sample("x", &[("a", "say \"hi\"\\\n")], 1);
        assert_eq!(
            t.0,
            "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{a=\"say \\\"hi\\\"\\\\\\n\"} 1\n"
        );
    }
}
