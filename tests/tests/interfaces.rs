//! `bnetstat -i` and `--ethernet` against interfaces built in namespaces of
//! the test's own, compared with what `ip -s -s -j link` says about them.
//! Counters move between two commands (IPv6 neighbour discovery, ICMP
//! replies), so each of bnetstat's counters must lie between ip's reading
//! before and after it; names, MTUs and flags must match exactly.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    thread,
    time::Duration,
};

use bnetstat_tests::{NetNs, VETH_A, VethPair, run_ok, wait_timeout};
use serde_json::Value;

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");

/// `count` UDP datagrams from `a` to `b`'s address across the veth.
fn udp_burst(pair: &VethPair, net: u8, count: u32) {
    run_ok(pair.a.command(NETSCENE).args([
        "udp",
        &format!("10.{net}.0.2"),
        "9",
        "--count",
        &count.to_string(),
    ]));
}

/// ip's links by ifindex.
fn ip_links(ns: &NetNs) -> BTreeMap<u64, Value> {
    let links = ns.ip_json(&["-s", "-s", "link", "show"]);
    links
        .as_array()
        .expect("ip -j link prints an array")
        .iter()
        .map(|l| (l["ifindex"].as_u64().expect("ifindex"), l.clone()))
        .collect()
}

/// bnetstat's rows by ifindex.
fn rows_by_index(rows: Vec<Value>) -> BTreeMap<u64, Value> {
    rows.into_iter()
        .map(|r| (r["ifindex"].as_u64().expect("ifindex"), r))
        .collect()
}

/// A counter from ip's `stats64`, e.g. `("rx", "packets")`.
fn stat(link: &Value, dir: &str, key: &str) -> u64 {
    link["stats64"][dir][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no stats64.{dir}.{key} in {link}"))
}

/// `got` must be within what ip read before and after.
fn bracketed(what: &str, got: &Value, before: u64, after: u64) {
    let got = got
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!(
        before <= got && got <= after,
        "{what}: bnetstat {got}, ip {before} before and {after} after"
    );
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .any(|f| f == flag)
}

#[test]
fn the_interface_table_matches_ip_link_after_known_traffic() {
    let pair = VethPair::new(71);
    pair.a.ip(&["link", "set", VETH_A, "mtu", "1400"]);
    udp_burst(&pair, 71, 50);
    let before = ip_links(&pair.a);
    let rows = rows_by_index(pair.a.bnetstat_json(&["-i"]));
    let after = ip_links(&pair.a);

    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same interfaces as ip"
    );
    for (index, link) in &after {
        let row = &rows[index];
        let name = link["ifname"].as_str().expect("ifname");
        assert_eq!(row["iface"], name);
        assert_eq!(row["mtu"], link["mtu"], "{name}");
        let flags = row["flags"].as_str().expect("flags");
        for (letter, ip_flag) in [
            ('U', "UP"),
            ('B', "BROADCAST"),
            ('M', "MULTICAST"),
            ('L', "LOOPBACK"),
            ('O', "NOARP"),
        ] {
            assert_eq!(
                flags.contains(letter),
                has_flag(link, ip_flag),
                "{name}: {letter} in {flags} iff {ip_flag}"
            );
        }
        // RUNNING: up, and operationally up (or unknown, as for lo).
        let running = has_flag(link, "UP")
            && ["UP", "UNKNOWN"].contains(&link["operstate"].as_str().unwrap_or(""));
        assert_eq!(flags.contains('R'), running, "{name}: R in {flags}");
        let b = &before[index];
        for (col, dir, keys) in [
            ("rx_ok", "rx", &["packets"][..]),
            ("rx_err", "rx", &["errors"]),
            ("rx_drp", "rx", &["dropped", "missed_errors"]),
            ("rx_ovr", "rx", &["fifo_errors"]),
            ("tx_ok", "tx", &["packets"]),
            ("tx_err", "tx", &["errors"]),
            ("tx_drp", "tx", &["dropped"]),
            ("tx_ovr", "tx", &["fifo_errors"]),
        ] {
            let sum = |l: &Value| keys.iter().map(|k| stat(l, dir, k)).sum();
            bracketed(&format!("{name} {col}"), &row[col], sum(b), sum(link));
        }
        assert!(row["rate_over_s"].is_null());
    }
    let veth = rows
        .values()
        .find(|r| r["iface"] == VETH_A)
        .expect("veth row");
    assert!(
        veth["tx_ok"].as_u64().expect("tx_ok") >= 50,
        "the 50 datagrams sent: {veth}"
    );
    assert_eq!(
        (veth["mtu"].as_u64(), veth["flags"].as_str()),
        (Some(1400), Some("BMRU"))
    );

    let text = pair.a.bnetstat(&["-i"]);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Kernel Interface table"));
    assert_eq!(
        lines.next(),
        Some(
            "Iface             MTU    RX-OK RX-ERR RX-DRP RX-OVR    TX-OK TX-ERR TX-DRP TX-OVR Flg"
        )
    );
    let row: Vec<&str> = lines
        .find(|l| l.starts_with(VETH_A))
        .unwrap_or_else(|| panic!("no {VETH_A} row in:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        (row.len(), row[1], row[10]),
        (11, "1400", "BMRU"),
        "{row:?}"
    );
}

#[test]
fn the_ethernet_view_matches_ip_link() {
    let pair = VethPair::new(73);
    udp_burst(&pair, 73, 30);
    let before = ip_links(&pair.a);
    let rows = rows_by_index(pair.a.bnetstat_json(&["--ethernet"]));
    let after = ip_links(&pair.a);
    assert_eq!(rows.len(), after.len(), "one object per interface");
    for (index, link) in &after {
        let (row, b) = (&rows[index], &before[index]);
        let name = link["ifname"].as_str().expect("ifname");
        assert_eq!(row["iface"], name);
        for (col, dir, key) in [
            ("rx_bytes", "rx", "bytes"),
            ("tx_bytes", "tx", "bytes"),
            ("rx_packets", "rx", "packets"),
            ("tx_packets", "tx", "packets"),
            ("rx_non_unicast", "rx", "multicast"),
            ("tx_discards", "tx", "dropped"),
            ("rx_errors", "rx", "errors"),
            ("tx_errors", "tx", "errors"),
        ] {
            bracketed(
                &format!("{name} {col}"),
                &row[col],
                stat(b, dir, key),
                stat(link, dir, key),
            );
        }
        let discards = |l: &Value| stat(l, "rx", "dropped") + stat(l, "rx", "missed_errors");
        bracketed(
            &format!("{name} rx_discards"),
            &row["rx_discards"],
            discards(b),
            discards(link),
        );
        let unicast = |l: &Value, other: &Value| {
            stat(l, "rx", "packets").saturating_sub(stat(other, "rx", "multicast"))
        };
        bracketed(
            &format!("{name} rx_unicast"),
            &row["rx_unicast"],
            unicast(b, link),
            unicast(link, b),
        );
        // Linux 4.6 and later count packets no protocol wanted.
        assert!(row["rx_unknown_protos"].is_u64(), "{row}");
    }
    let veth = rows
        .values()
        .find(|r| r["iface"] == VETH_A)
        .expect("veth row");
    assert!(
        veth["tx_bytes"].as_u64().expect("tx_bytes") >= 30 * 100,
        "{veth}"
    );

    let text = pair.a.bnetstat(&["--ethernet"]);
    let block = text
        .split("\n\n")
        .position(|b| b == format!("Interface Statistics: {VETH_A}"))
        .map(|i| text.split("\n\n").nth(i + 1).expect("its table"))
        .unwrap_or_else(|| panic!("no {VETH_A} block in:\n{text}"));
    let labels: Vec<&str> = block
        .lines()
        .map(|l| l.get(..20).unwrap_or(l).trim())
        .collect();
    assert_eq!(
        labels,
        [
            "",
            "Bytes",
            "Packets",
            "Unicast packets",
            "Non-unicast packets",
            "Discards",
            "Errors",
            "Unknown protocols"
        ]
    );
}

#[test]
fn hostile_interface_names_are_escaped_in_the_table_and_exact_in_json() {
    let ns = NetNs::new();
    let evil = "ev\x1b[2Jil";
    ns.ip(&[
        "link",
        "add",
        evil,
        "type",
        "veth",
        "peer",
        "name",
        "bnst-peer",
    ]);
    let text = ns.bnetstat(&["-i"]);
    assert!(
        !text.contains('\x1b'),
        "a raw escape reached the terminal:\n{text:?}"
    );
    assert!(text.contains("\nev\\x1b[2Jil "), "escaped name in:\n{text}");
    let ethernet = ns.bnetstat(&["--ethernet"]);
    assert!(
        !ethernet.contains('\x1b') && ethernet.contains("Interface Statistics: ev\\x1b[2Jil"),
        "{ethernet}"
    );
    let rows = ns.bnetstat_json(&["-i"]);
    assert!(rows.iter().any(|r| r["iface"] == evil), "{rows:?}");
}

#[test]
fn an_interval_shows_per_second_rates_while_traffic_flows() {
    let pair = VethPair::new(74);
    let mut sender = pair
        .a
        .command(NETSCENE)
        .args([
            "udp",
            "10.74.0.2",
            "9",
            "--count",
            "400",
            "--interval-ms",
            "10",
        ])
        .spawn()
        .expect("spawn netscene");
    let mut child = pair
        .a
        .command(bnetstat_tests::bnetstat_bin())
        .args(["-i", "--json", "0.5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn bnetstat");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut displays = Vec::new();
    while displays.len() < 3 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("bnetstat redisplays within 10 s");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["iface"] == VETH_A {
            displays.push(v);
        }
    }
    // SAFETY: signalling our own child (ip netns exec became bnetstat).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = wait_timeout(&mut child, Duration::from_secs(10), "bnetstat");
    let _ = sender.kill();
    let _ = sender.wait();
    assert!(
        status.success(),
        "bnetstat stops cleanly on Ctrl-C: {status}"
    );

    assert!(
        displays[0]["rate_over_s"].is_null(),
        "totals first: {}",
        displays[0]
    );
    for d in &displays[1..] {
        let secs = d["rate_over_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("a rate: {d}"));
        assert!((0.4..3.0).contains(&secs), "about the interval: {d}");
        let tx = d["tx_ok"].as_u64().expect("tx_ok");
        // About 100 datagrams a second are sent; a loaded machine sends fewer.
        assert!((5..=400).contains(&tx), "packets per second: {d}");
    }
}
