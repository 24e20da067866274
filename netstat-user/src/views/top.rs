//! How `bnetstat top` prints an interval: a screen like tcptop's
//! (connections, then processes) or one JSON object. Pure functions of the
//! interval.

use serde::Serialize;

use crate::{
    escape::printable,
    traffic::{ConnRow, Interval, ProcRow},
    views::trace::{clock, endpoint},
};

/// What an interval is printed with.
pub struct Frame {
    /// Rows shown per table, at most.
    pub rows: usize,
    /// Wall-clock time at the interval's end (ns since the epoch).
    pub wall_ns: i128,
    /// `CLOCK_BOOTTIME` at the interval's end, ns.
    pub ts_ns: u64,
    /// How long the interval really lasted, s.
    pub seconds: f64,
}

/// The interval as text: a summary line, the busiest connections, the
/// busiest processes. KB are 1024 bytes over the interval, as in tcptop.
pub fn render(interval: &Interval, frame: &Frame) -> String {
    let kb = |b: u64| b / 1024;
    let mut text = format!(
        "{}  {:.2} s  RX {} KB  TX {} KB  opened {}  accepted {}\n\n",
        clock(frame.wall_ns),
        frame.seconds,
        kb(interval.rx_bytes()),
        kb(interval.tx_bytes()),
        interval.opened(),
        interval.accepted(),
    );
    text += &format!(
        "{:>7} {:<16} {:<27} {:<27} {:>9} {:>9}\n",
        "PID", "COMM", "LADDR", "RADDR", "RX_KB", "TX_KB"
    );
    for c in interval.conns.iter().take(frame.rows) {
        let (pid, comm) = who(c.conn.owner.as_ref().map(|o| (o.pid, o.comm.as_str())));
        text += &format!(
            "{:>7} {:<16} {:<27} {:<27} {:>9} {:>9}\n",
            pid,
            comm,
            endpoint(c.conn.laddr, c.conn.lport),
            endpoint(c.conn.raddr, c.conn.rport),
            kb(c.rx_bytes),
            kb(c.tx_bytes),
        );
    }
    text += &format!(
        "\n{:>7} {:<16} {:>9} {:>9} {:>7} {:>8}\n",
        "PID", "COMM", "RX_KB", "TX_KB", "OPENED", "ACCEPTED"
    );
    for p in interval.procs.iter().take(frame.rows) {
        let (pid, comm) = who(p.pid.map(|pid| (pid, p.comm.as_deref().unwrap_or("-"))));
        text += &format!(
            "{:>7} {:<16} {:>9} {:>9} {:>7} {:>8}\n",
            pid,
            comm,
            kb(p.rx_bytes),
            kb(p.tx_bytes),
            p.opened,
            p.accepted,
        );
    }
    text
}

/// A pid and escaped name, or dashes for an unknown owner.
fn who(owner: Option<(u32, &str)>) -> (String, String) {
    match owner {
        Some((pid, comm)) => (pid.to_string(), printable(comm).into_owned()),
        None => ("-".to_owned(), "-".to_owned()),
    }
}

/// The `--json` object of an interval. Its keys are a documented
/// interface: add, never rename.
#[derive(Serialize)]
struct IntervalJson<'a> {
    ts_ns: u64,
    interval_s: f64,
    rx_bytes: u64,
    tx_bytes: u64,
    opened: u64,
    accepted: u64,
    connections: Vec<ConnJson<'a>>,
    processes: Vec<ProcJson<'a>>,
}

#[derive(Serialize)]
struct ConnJson<'a> {
    pid: Option<u32>,
    comm: Option<&'a str>,
    family: &'static str,
    laddr: String,
    lport: u16,
    raddr: String,
    rport: u16,
    rx_bytes: u64,
    tx_bytes: u64,
    closed: bool,
    sock: String,
}

#[derive(Serialize)]
struct ProcJson<'a> {
    pid: Option<u32>,
    comm: Option<&'a str>,
    rx_bytes: u64,
    tx_bytes: u64,
    opened: u64,
    accepted: u64,
}

fn conn_json(c: &ConnRow) -> ConnJson<'_> {
    ConnJson {
        pid: c.conn.owner.as_ref().map(|o| o.pid),
        comm: c.conn.owner.as_ref().map(|o| o.comm.as_str()),
        family: c.conn.family.name(),
        laddr: c.conn.laddr.to_string(),
        lport: c.conn.lport,
        raddr: c.conn.raddr.to_string(),
        rport: c.conn.rport,
        rx_bytes: c.rx_bytes,
        tx_bytes: c.tx_bytes,
        closed: c.closed,
        sock: format!("{:x}", c.sock),
    }
}

fn proc_json(p: &ProcRow) -> ProcJson<'_> {
    ProcJson {
        pid: p.pid,
        comm: p.comm.as_deref(),
        rx_bytes: p.rx_bytes,
        tx_bytes: p.tx_bytes,
        opened: p.opened,
        accepted: p.accepted,
    }
}

/// The interval as one JSON object on one line. The totals cover every
/// row, not only the `frame.rows` listed.
pub fn json(interval: &Interval, frame: &Frame) -> String {
    let obj = IntervalJson {
        ts_ns: frame.ts_ns,
        interval_s: frame.seconds,
        rx_bytes: interval.rx_bytes(),
        tx_bytes: interval.tx_bytes(),
        opened: interval.opened(),
        accepted: interval.accepted(),
        connections: interval
            .conns
            .iter()
            .take(frame.rows)
            .map(conn_json)
            .collect(),
        processes: interval
            .procs
            .iter()
            .take(frame.rows)
            .map(proc_json)
            .collect(),
    };
    serde_json::to_string(&obj).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;
    use crate::{
        decode::{Family, Owner},
        traffic::Conn,
    };

    fn interval(comm: &str) -> Interval {
        let owner = Some(Owner {
            pid: 42,
            uid: 0,
            comm: comm.into(),
            cgroup: 0,
        });
        let conn = |sock, rx_bytes| ConnRow {
            sock,
            conn: Conn {
                family: Family::Inet6,
                laddr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                lport: 40000,
                raddr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                rport: 443,
                owner: owner.clone(),
            },
            tx_bytes: 2048,
            rx_bytes,
            closed: sock == 2,
        };
        Interval {
            conns: vec![conn(1, 10240), conn(2, 1024)],
            procs: vec![ProcRow {
                pid: Some(42),
                comm: Some(comm.into()),
                tx_bytes: 4096,
                rx_bytes: 11264,
                opened: 3,
                accepted: 0,
            }],
        }
    }

    fn frame(rows: usize) -> Frame {
        Frame {
            rows,
            wall_ns: 0,
            ts_ns: 7,
            seconds: 1.0,
        }
    }

    #[test]
    fn json_lists_the_top_rows_with_totals_over_all() {
        let v: serde_json::Value =
            serde_json::from_str(&json(&interval("curl"), &frame(1))).expect("JSON");
        assert_eq!(
            (v["rx_bytes"].as_u64(), v["tx_bytes"].as_u64()),
            (Some(11264), Some(4096))
        );
        assert_eq!(
            (v["opened"].as_u64(), v["interval_s"].as_f64()),
            (Some(3), Some(1.0))
        );
        let conns = v["connections"].as_array().expect("array");
        assert_eq!(conns.len(), 1, "--top 1");
        assert_eq!(conns[0]["rx_bytes"], 10240);
        assert_eq!(conns[0]["laddr"], "::1");
        assert_eq!(conns[0]["family"], "inet6");
        assert_eq!(conns[0]["closed"], false);
        assert_eq!(v["processes"][0]["comm"], "curl");
        assert_eq!(v["processes"][0]["opened"], 3);
    }

    #[test]
    fn text_shows_kilobytes_and_both_tables() {
        let text = render(&interval("curl"), &frame(10));
        assert!(text.contains("RX 11 KB  TX 4 KB  opened 3"), "{text}");
        let conn = text
            .lines()
            .find(|l| l.contains("[::1]:40000"))
            .expect("connection row");
        assert!(conn.ends_with("       10         2"), "{conn}");
        assert!(text.contains("ACCEPTED"), "{text}");
    }

    #[test]
    fn hostile_comm_is_escaped() {
        let text = render(&interval("a\x1b[2Jb"), &frame(10));
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("a\\x1b[2Jb"), "{text}");
    }
}
