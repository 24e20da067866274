//! How `bnetstat -s` prints: the kernel's counters grouped as netstat -s
//! groups them, then bnetstat's event counters, each under a heading that
//! names its source; or one JSON object per display. Pure.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;

use crate::{
    escape::printable,
    stats::{Counter, Counts, EventCounts},
};

/// One display. `elapsed` is `None` for the first (absolute) one and the
/// interval since the previous display otherwise; `events` is `None` when
/// bnetstat does not count events (no interval, or no TCP asked for).
pub fn render(
    kernel: &[Counter],
    elapsed: Option<Duration>,
    events: Option<&EventCounts>,
    json: bool,
) -> String {
    if json {
        return render_json(kernel, elapsed, events) + "\n";
    }
    let mut out = String::new();
    let span = elapsed.map(|e| format!("change in the last {:.1} s", e.as_secs_f64()));
    let _ = writeln!(
        out,
        "Kernel counters (/proc/net/snmp, /proc/net/netstat, /proc/net/snmp6), {}:",
        span.as_deref().unwrap_or("since boot")
    );
    let mut group = "";
    for c in kernel {
        if c.group != group {
            group = &c.group;
            let _ = writeln!(out, "{group}:");
        }
        let _ = writeln!(out, "    {:<32} {}", c.field, c.value);
    }
    if let Some(ev) = events {
        let _ = writeln!(
            out,
            "bnetstat TCP event counters, {}:",
            span.as_deref().unwrap_or("since bnetstat started")
        );
        counts(&mut out, &ev.total, "    ");
        let mut procs: Vec<_> = ev.processes.iter().collect();
        procs.sort_by(|a, b| a.0.cmp(b.0));
        for (key, c) in procs {
            let who = key.as_ref().map_or_else(
                || "unknown process".to_owned(),
                |(pid, comm)| format!("{pid}/{}", printable(comm)),
            );
            let _ = writeln!(out, "  {who}:");
            counts(&mut out, c, "    ");
        }
    }
    out.push('\n');
    out
}

/// Said after a one-shot display: event counters count from bnetstat's
/// start, so a single display has none to show.
pub const INTERVAL_NOTE: &str = "bnetstat TCP event counters count from when bnetstat starts: give an interval (bnetstat -s 5).\n";

fn counts(out: &mut String, c: &Counts, indent: &str) {
    for (name, v) in [
        ("active opens", c.active_opens),
        ("passive opens", c.passive_opens),
        ("resets sent", c.resets_sent),
        ("resets received", c.resets_received),
        ("retransmits", c.retransmits),
    ] {
        let _ = writeln!(out, "{indent}{name:<30} {v}");
    }
    for ((old, new), v) in &c.transitions {
        let _ = writeln!(out, "{indent}{:<30} {v}", format!("{old} -> {new}"));
    }
}

/// Event counts in JSON. Keys are a documented interface.
#[derive(Serialize)]
struct CountsJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm: Option<&'a str>,
    active_opens: u64,
    passive_opens: u64,
    resets_sent: u64,
    resets_received: u64,
    retransmits: u64,
    transitions: BTreeMap<String, u64>,
}

impl<'a> CountsJson<'a> {
    fn new(c: &Counts, who: Option<&'a (u32, String)>) -> CountsJson<'a> {
        CountsJson {
            pid: who.map(|w| w.0),
            comm: who.map(|w| w.1.as_str()),
            active_opens: c.active_opens,
            passive_opens: c.passive_opens,
            resets_sent: c.resets_sent,
            resets_received: c.resets_received,
            retransmits: c.retransmits,
            transitions: c
                .transitions
                .iter()
                .map(|((o, n), v)| (format!("{o} -> {n}"), *v))
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct EventsJson<'a> {
    total: CountsJson<'a>,
    processes: Vec<CountsJson<'a>>,
}

#[derive(Serialize)]
struct DisplayJson<'a> {
    interval_s: Option<f64>,
    kernel: serde_json::Map<String, serde_json::Value>,
    events: Option<EventsJson<'a>>,
}

fn render_json(
    kernel: &[Counter],
    elapsed: Option<Duration>,
    events: Option<&EventCounts>,
) -> String {
    let obj = DisplayJson {
        interval_s: elapsed.map(|e| e.as_secs_f64()),
        kernel: kernel.iter().map(|c| (c.name(), c.value.into())).collect(),
        events: events.map(|ev| {
            let mut procs: Vec<_> = ev.processes.iter().collect();
            procs.sort_by(|a, b| a.0.cmp(b.0));
            EventsJson {
                total: CountsJson::new(&ev.total, None),
                processes: procs
                    .into_iter()
                    .map(|(k, c)| CountsJson::new(c, k.as_ref()))
                    .collect(),
            }
        }),
    };
    serde_json::to_string(&obj).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::{Event, Family, Owner, TcpOp, TcpOpEvent},
        stats::parse_pairs,
    };

    fn scene() -> (Vec<Counter>, EventCounts) {
        let kernel = parse_pairs("Tcp: ActiveOpens RetransSegs\nTcp: 3 1\n").expect("parses");
        let mut ev = EventCounts::new(None);
        ev.apply(&Event::Tcp(TcpOpEvent {
            ts_ns: 1,
            sock: 1,
            op: TcpOp::Retransmit,
            family: Some(Family::Inet),
            owner: Some(Owner {
                pid: 9,
                uid: 0,
                comm: "evil\x1b[2J".into(),
                cgroup: 0,
            }),
        }));
        (kernel, ev)
    }

    #[test]
    fn kernel_counters_alone_are_grouped_by_mib() {
        let (kernel, _) = scene();
        let text = render(&kernel, None, None, false);
        assert!(text.starts_with("Kernel counters"), "{text}");
        assert!(
            text.contains("since boot:\nTcp:\n    ActiveOpens"),
            "{text}"
        );
        assert!(!text.contains("event counters"), "{text}");
    }

    #[test]
    fn both_sources_are_named_and_comms_escaped() {
        let (kernel, ev) = scene();
        let text = render(&kernel, Some(Duration::from_secs(2)), Some(&ev), false);
        assert!(text.contains("Kernel counters") && text.contains("change in the last 2.0 s"));
        assert!(text.contains("bnetstat TCP event counters"), "{text}");
        assert!(text.contains("9/evil\\x1b[2J:"), "{text}");
    }

    #[test]
    fn json_has_kernel_counters_by_nstat_name_and_events_per_process() {
        let (kernel, ev) = scene();
        let v: serde_json::Value = serde_json::from_str(&render(
            &kernel,
            Some(Duration::from_secs(1)),
            Some(&ev),
            true,
        ))
        .expect("JSON");
        assert_eq!(v["kernel"]["TcpActiveOpens"], 3);
        assert_eq!(v["interval_s"], 1.0);
        assert_eq!(v["events"]["total"]["retransmits"], 1);
        assert_eq!(v["events"]["processes"][0]["pid"], 9);
        let once: serde_json::Value =
            serde_json::from_str(&render(&kernel, None, None, true)).expect("JSON");
        assert!(once["events"].is_null());
    }
}
