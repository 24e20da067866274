//! How `bnetstat -i` and `bnetstat --ethernet` print interfaces: tables
//! like net-tools' `netstat -i` and Windows' `netstat -e`, or JSON lines.
//! Pure functions of the links they are given.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    escape::printable,
    links::{Link, Stats},
};

/// How to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opts {
    pub json: bool,
    /// `Some(secs)` when the counters are per-second rates over the last
    /// `secs` seconds, `None` when they are totals.
    pub rate_over: Option<f64>,
}

/// The interface table (`-i`).
pub fn render(links: &[Link], opts: &Opts) -> String {
    let mut out = String::new();
    if opts.json {
        for link in links {
            let _ = writeln!(out, "{}", interface_json(link, opts));
        }
        return out;
    }
    match opts.rate_over {
        None => out.push_str("Kernel Interface table\n"),
        Some(s) => {
            let _ = writeln!(out, "Kernel Interface table, per second over {s:.1} s");
        }
    }
    out.push_str(
        "Iface             MTU    RX-OK RX-ERR RX-DRP RX-OVR    TX-OK TX-ERR TX-DRP TX-OVR Flg\n",
    );
    for link in links {
        let _ = write!(out, "{:<15} {:>5} ", printable(&link.name), link.mtu);
        match &link.stats {
            Some(s) => {
                let _ = write!(
                    out,
                    "{:>8} {:>6} {:>6} {:<6} {:>8} {:>6} {:>6} {:>6} ",
                    s.rx_packets,
                    s.rx_errors,
                    s.rx_discards(),
                    s.rx_fifo_errors,
                    s.tx_packets,
                    s.tx_errors,
                    s.tx_dropped,
                    s.tx_fifo_errors
                );
            }
            None => {
                let _ = write!(out, "{:<56}", "     - no statistics available -");
            }
        }
        out.push_str(&flags(link.flags));
        out.push('\n');
    }
    out
}

/// net-tools' flag letters, in its order; `P` is both promiscuous and
/// point-to-point there, and stays so here.
pub fn flags(flags: u32) -> String {
    if flags == 0 {
        return "[NO FLAGS]".to_owned();
    }
    const LETTERS: [(u32, char); 14] = [
        (libc::IFF_ALLMULTI as u32, 'A'),
        (libc::IFF_BROADCAST as u32, 'B'),
        (libc::IFF_DEBUG as u32, 'D'),
        (libc::IFF_LOOPBACK as u32, 'L'),
        (libc::IFF_MULTICAST as u32, 'M'),
        (libc::IFF_DYNAMIC as u32, 'd'),
        (libc::IFF_PROMISC as u32, 'P'),
        (libc::IFF_NOTRAILERS as u32, 'N'),
        (libc::IFF_NOARP as u32, 'O'),
        (libc::IFF_POINTOPOINT as u32, 'P'),
        (libc::IFF_SLAVE as u32, 's'),
        (libc::IFF_MASTER as u32, 'm'),
        (libc::IFF_RUNNING as u32, 'R'),
        (libc::IFF_UP as u32, 'U'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|&(_, c)| c)
        .collect()
}

/// The `-i --json` object: the table's columns. Its keys are a documented
/// interface: add, never rename.
#[derive(Serialize)]
struct InterfaceJson<'a> {
    iface: &'a str,
    ifindex: u32,
    mtu: u32,
    flags: String,
    rx_ok: Option<u64>,
    rx_err: Option<u64>,
    rx_drp: Option<u64>,
    rx_ovr: Option<u64>,
    tx_ok: Option<u64>,
    tx_err: Option<u64>,
    tx_drp: Option<u64>,
    tx_ovr: Option<u64>,
    rate_over_s: Option<f64>,
}

fn interface_json(link: &Link, opts: &Opts) -> String {
    let s = link.stats.as_ref();
    let get = |f: fn(&Stats) -> u64| s.map(f);
    json_line(&InterfaceJson {
        iface: &link.name,
        ifindex: link.index,
        mtu: link.mtu,
        flags: flags(link.flags),
        rx_ok: get(|s| s.rx_packets),
        rx_err: get(|s| s.rx_errors),
        rx_drp: get(Stats::rx_discards),
        rx_ovr: get(|s| s.rx_fifo_errors),
        tx_ok: get(|s| s.tx_packets),
        tx_err: get(|s| s.tx_errors),
        tx_drp: get(|s| s.tx_dropped),
        tx_ovr: get(|s| s.tx_fifo_errors),
        rate_over_s: opts.rate_over,
    })
}

/// The Windows `netstat -e` view (`--ethernet`), one block per interface.
/// Linux counts multicast only on receive, so the sent side has no
/// unicast/non-unicast split: it shows `-` there and the total on a
/// `Packets` line.
pub fn render_ethernet(links: &[Link], opts: &Opts) -> String {
    let mut out = String::new();
    if opts.json {
        for link in links {
            let _ = writeln!(out, "{}", ethernet_json(link, opts));
        }
        return out;
    }
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "Interface Statistics: {}", printable(&link.name));
        if let Some(s) = opts.rate_over {
            let _ = write!(out, ", per second over {s:.1} s");
        }
        out.push_str("\n\n");
        let Some(s) = &link.stats else {
            out.push_str("  - no statistics available -\n");
            continue;
        };
        let mut row = |label: &str, rx: String, tx: String| {
            let line = format!("{label:<20}{rx:>18}{tx:>16}");
            let _ = writeln!(out, "{}", line.trim_end());
        };
        row("", "Received".into(), "Sent".into());
        row("Bytes", s.rx_bytes.to_string(), s.tx_bytes.to_string());
        row(
            "Packets",
            s.rx_packets.to_string(),
            s.tx_packets.to_string(),
        );
        row("Unicast packets", unicast(s).to_string(), "-".into());
        row("Non-unicast packets", s.multicast.to_string(), "-".into());
        row(
            "Discards",
            s.rx_discards().to_string(),
            s.tx_dropped.to_string(),
        );
        row("Errors", s.rx_errors.to_string(), s.tx_errors.to_string());
        row(
            "Unknown protocols",
            s.rx_nohandler.map_or_else(|| "-".into(), |n| n.to_string()),
            String::new(),
        );
    }
    out
}

/// Received packets that were not multicast (Linux has no broadcast
/// counter; broadcasts count as multicast).
fn unicast(s: &Stats) -> u64 {
    s.rx_packets.saturating_sub(s.multicast)
}

/// The `--ethernet --json` object. Its keys are a documented interface:
/// add, never rename.
#[derive(Serialize)]
struct EthernetJson<'a> {
    iface: &'a str,
    ifindex: u32,
    rx_bytes: Option<u64>,
    tx_bytes: Option<u64>,
    rx_packets: Option<u64>,
    tx_packets: Option<u64>,
    rx_unicast: Option<u64>,
    rx_non_unicast: Option<u64>,
    rx_discards: Option<u64>,
    tx_discards: Option<u64>,
    rx_errors: Option<u64>,
    tx_errors: Option<u64>,
    rx_unknown_protos: Option<u64>,
    rate_over_s: Option<f64>,
}

fn ethernet_json(link: &Link, opts: &Opts) -> String {
    let s = link.stats.as_ref();
    let get = |f: fn(&Stats) -> u64| s.map(f);
    json_line(&EthernetJson {
        iface: &link.name,
        ifindex: link.index,
        rx_bytes: get(|s| s.rx_bytes),
        tx_bytes: get(|s| s.tx_bytes),
        rx_packets: get(|s| s.rx_packets),
        tx_packets: get(|s| s.tx_packets),
        rx_unicast: get(unicast),
        rx_non_unicast: get(|s| s.multicast),
        rx_discards: get(Stats::rx_discards),
        tx_discards: get(|s| s.tx_dropped),
        rx_errors: get(|s| s.rx_errors),
        tx_errors: get(|s| s.tx_errors),
        rx_unknown_protos: s.and_then(|s| s.rx_nohandler),
        rate_over_s: opts.rate_over,
    })
}

fn json_line(obj: &impl Serialize) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_string(obj).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, flags: u32, stats: Option<Stats>) -> Link {
        Link {
            index: 2,
            name: name.to_owned(),
            mtu: 1500,
            flags,
            stats,
        }
    }

    fn stats() -> Stats {
        Stats {
            rx_packets: 5188,
            tx_packets: 4661,
            rx_bytes: 900_000,
            tx_bytes: 400_000,
            rx_errors: 1,
            tx_errors: 2,
            rx_dropped: 3,
            tx_dropped: 4,
            multicast: 10,
            rx_fifo_errors: 5,
            rx_missed_errors: 6,
            tx_fifo_errors: 7,
            rx_nohandler: Some(8),
        }
    }

    const BMRU: u32 =
        (libc::IFF_BROADCAST | libc::IFF_MULTICAST | libc::IFF_RUNNING | libc::IFF_UP) as u32;

    #[test]
    fn the_table_lines_up_like_net_tools() {
        let out = render(&[link("eth0", BMRU, Some(stats()))], &Opts::default());
        assert_eq!(
            out,
            "Kernel Interface table\n\
             Iface             MTU    RX-OK RX-ERR RX-DRP RX-OVR    TX-OK TX-ERR TX-DRP TX-OVR Flg\n\
             eth0             1500     5188      1      9 5          4661      2      4      7 BMRU\n"
        );
    }

    #[test]
    fn flags_follow_net_tools_letters_and_order() {
        let lo = (libc::IFF_LOOPBACK | libc::IFF_RUNNING | libc::IFF_UP) as u32;
        assert_eq!(flags(lo), "LRU");
        let tun = (libc::IFF_POINTOPOINT | libc::IFF_NOARP | libc::IFF_MULTICAST) as u32;
        assert_eq!(flags(tun), "MOP");
        assert_eq!(flags(libc::IFF_ALLMULTI as u32 | BMRU), "ABMRU");
        assert_eq!(flags(0), "[NO FLAGS]");
    }

    #[test]
    fn hostile_names_are_escaped_and_missing_stats_said() {
        let out = render(&[link("ev\x1b[2Jil", 0, None)], &Opts::default());
        let row = out.lines().nth(2).expect("a row");
        assert!(row.starts_with("ev\\x1b[2Jil"), "{row}");
        assert!(row.contains("no statistics available"), "{row}");
    }

    #[test]
    fn rates_are_labelled() {
        let opts = Opts {
            rate_over: Some(2.0),
            ..Opts::default()
        };
        let out = render(&[link("eth0", BMRU, Some(stats()))], &opts);
        assert!(out.starts_with("Kernel Interface table, per second over 2.0 s\n"));
    }

    #[test]
    fn interface_json_has_the_columns() {
        let opts = Opts {
            json: true,
            rate_over: None,
        };
        let out = render(&[link("eth0", BMRU, Some(stats()))], &opts);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).expect("json");
        assert_eq!(v["iface"], "eth0");
        assert_eq!(v["flags"], "BMRU");
        assert_eq!(
            (v["rx_ok"].as_u64(), v["rx_drp"].as_u64()),
            (Some(5188), Some(9))
        );
        assert_eq!(
            (v["tx_ovr"].as_u64(), v["rate_over_s"].is_null()),
            (Some(7), true)
        );
        let none = render(&[link("x", 0, None)], &opts);
        let v: serde_json::Value = serde_json::from_str(none.trim_end()).expect("json");
        assert!(v["rx_ok"].is_null());
    }

    #[test]
    fn the_ethernet_view_splits_received_packets() {
        let out = render_ethernet(&[link("eth0", BMRU, Some(stats()))], &Opts::default());
        assert_eq!(
            out,
            "Interface Statistics: eth0\n\
             \n                              Received            Sent\n\
             Bytes                           900000          400000\n\
             Packets                           5188            4661\n\
             Unicast packets                   5178               -\n\
             Non-unicast packets                 10               -\n\
             Discards                             9               4\n\
             Errors                               1               2\n\
             Unknown protocols                    8\n"
        );
    }

    #[test]
    fn ethernet_json_has_the_rows() {
        let opts = Opts {
            json: true,
            rate_over: Some(1.0),
        };
        let out = render_ethernet(&[link("eth0", BMRU, Some(stats()))], &opts);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).expect("json");
        assert_eq!(
            (v["rx_unicast"].as_u64(), v["rx_non_unicast"].as_u64()),
            (Some(5178), Some(10))
        );
        assert_eq!(
            (v["rx_unknown_protos"].as_u64(), v["rate_over_s"].as_f64()),
            (Some(8), Some(1.0))
        );
    }
}
