//! `bnetstat -r` against a routing table built in a namespace of the
//! test's own, compared with `ip -j route` and `ip -6 -j route` there.

use std::collections::BTreeSet;

use bnetstat_tests::{VETH_A, VethPair};
use serde_json::Value;

/// What identifies a route: family, destination, prefix length, gateway,
/// interface, type, metric.
type Key = (
    String,
    String,
    u64,
    Option<String>,
    Option<String>,
    String,
    u64,
);

fn from_ip(family: &str, r: &Value) -> Key {
    let full = if family == "inet" { 32 } else { 128 };
    let unspecified = if family == "inet" { "0.0.0.0" } else { "::" };
    let dst = r["dst"].as_str().expect("dst");
    let (addr, len) = match dst.split_once('/') {
        _ if dst == "default" => (unspecified.to_owned(), 0),
        Some((a, l)) => (a.to_owned(), l.parse().expect("prefix length")),
        None => (dst.to_owned(), full),
    };
    (
        family.to_owned(),
        addr,
        len,
        r["gateway"].as_str().map(str::to_owned),
        r["dev"].as_str().map(str::to_owned),
        r["type"].as_str().unwrap_or("unicast").to_owned(),
        r["metric"].as_u64().unwrap_or(0),
    )
}

fn from_bnetstat(r: &Value) -> Key {
    (
        r["family"].as_str().expect("family").to_owned(),
        r["dst"].as_str().expect("dst").to_owned(),
        r["prefix_len"].as_u64().expect("prefix_len"),
        r["gateway"].as_str().map(str::to_owned),
        r["iface"].as_str().map(str::to_owned),
        r["type"].as_str().expect("type").to_owned(),
        r["metric"].as_u64().expect("metric"),
    )
}

/// A table with a default route, a gateway route with metrics, a host
/// route and a blackhole, an unreachable and a prohibit route, in both
/// families where the kernel has them.
fn scene() -> VethPair {
    let pair = VethPair::new(72);
    let a = &pair.a;
    for route in [
        &["route", "add", "default", "via", "10.72.0.2"][..],
        &[
            "route",
            "add",
            "10.172.0.0/16",
            "via",
            "10.72.0.2",
            "advmss",
            "1400",
            "window",
            "8192",
            "rtt",
            "80ms",
        ],
        &["route", "add", "10.173.0.9", "dev", VETH_A],
        &[
            "route",
            "add",
            "10.177.0.0/16",
            "via",
            "10.72.0.2",
            "metric",
            "50",
        ],
        &["route", "add", "blackhole", "10.174.0.0/16"],
        &["route", "add", "unreachable", "10.175.0.0/16"],
        &["route", "add", "prohibit", "10.176.0.0/16"],
        &["-6", "route", "add", "default", "via", "fd48::2"],
        &["-6", "route", "add", "fd99::/64", "via", "fd48::2"],
        &["-6", "route", "add", "fd97::5/128", "dev", VETH_A],
        &["-6", "route", "add", "blackhole", "fd98::/64"],
    ] {
        a.ip(route);
    }
    pair
}

#[test]
fn both_tables_match_ip_route() {
    let pair = scene();
    let a = &pair.a;
    let rows = a.bnetstat_json(&["-r", "-4", "-6"]);
    let mut want = BTreeSet::new();
    for (family, flag) in [("inet", "-4"), ("inet6", "-6")] {
        for r in a.ip_json(&[flag, "route"]).as_array().expect("array") {
            want.insert(from_ip(family, r));
        }
    }
    assert!(want.len() >= 13, "ip sees the scene's routes: {want:?}");
    let got: BTreeSet<Key> = rows.iter().map(from_bnetstat).collect();
    assert_eq!(got, want, "bnetstat -r against ip route");
    assert_eq!(rows.len(), want.len(), "no route twice");

    let find = |dst: &str| -> &Value {
        rows.iter()
            .find(|r| r["dst"] == dst)
            .unwrap_or_else(|| panic!("no route to {dst}: {rows:?}"))
    };
    for (dst, flags) in [
        ("0.0.0.0", "UG"),
        ("10.172.0.0", "UG"),
        ("10.173.0.9", "UH"),
        ("10.174.0.0", "U!"),
        ("10.175.0.0", "U!"),
        ("10.176.0.0", "U!"),
        ("::", "UG"),
        ("fd99::", "UG"),
        ("fd97::5", "UH"),
        ("fd98::", "U!"),
    ] {
        assert_eq!(find(dst)["flags"], flags, "{dst}");
    }
    let metrics = find("10.172.0.0");
    assert_eq!(
        (&metrics["advmss"], &metrics["window"], &metrics["irtt_ms"]),
        (&Value::from(1400), &Value::from(8192), &Value::from(80))
    );
}

#[test]
fn the_numeric_tables_read_like_netstat_rn() {
    let pair = scene();
    let text = pair.a.bnetstat(&["-rn"]);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Kernel IP routing table"));
    assert_eq!(
        lines.next(),
        Some("Destination     Gateway         Genmask         Flags   MSS Window  irtt Iface")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    for want in [
        [
            "0.0.0.0",
            "10.72.0.2",
            "0.0.0.0",
            "UG",
            "0",
            "0",
            "0",
            VETH_A,
        ],
        [
            "10.172.0.0",
            "10.72.0.2",
            "255.255.0.0",
            "UG",
            "1440",
            "8192",
            "80",
            VETH_A,
        ],
        [
            "10.173.0.9",
            "0.0.0.0",
            "255.255.255.255",
            "UH",
            "0",
            "0",
            "0",
            VETH_A,
        ],
        [
            "10.174.0.0",
            "0.0.0.0",
            "255.255.0.0",
            "U!",
            "0",
            "0",
            "0",
            "*",
        ],
    ] {
        assert!(rows.contains(&want.to_vec()), "{want:?} in:\n{text}");
    }
    assert!(!text.contains("fd99"), "IPv4 only by default:\n{text}");

    let text6 = pair.a.bnetstat(&["-rn", "-6"]);
    assert!(text6.starts_with(
        "Kernel IPv6 routing table\nDestination                    Next Hop                   Flag Met Ref  Use If\n"
    ));
    let rows6: Vec<Vec<&str>> = text6
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    for want in [
        ["fd99::/64", "fd48::2", "UG", "1024", "0", "0", VETH_A],
        ["fd97::5/128", "::", "UH", "1024", "0", "0", VETH_A],
        ["fd98::/64", "::", "U!", "1024", "0", "0", "lo"],
    ] {
        assert!(rows6.contains(&want.to_vec()), "{want:?} in:\n{text6}");
    }
}

#[test]
fn without_n_the_default_route_is_called_default() {
    let pair = scene();
    let text = pair.a.bnetstat(&["-r"]);
    assert!(
        text.lines().any(|l| l.starts_with("default ")),
        "netstat -r says default:\n{text}"
    );
    let text6 = pair.a.bnetstat(&["-r", "-6"]);
    assert!(text6.lines().any(|l| l.starts_with("default ")), "{text6}");
}
