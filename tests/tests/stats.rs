//! `bnetstat -s` against the real kernel: its kernel counters agree with
//! `nstat` read around it, and its event counters with a scene of known
//! connections, a reset and a forced retransmit, each in a network
//! namespace of the test's own.

use std::{collections::BTreeMap, process::Stdio, thread, time::Duration};

use bnetstat_tests::{Bnetstat, NetNs, Start, TempDir, run_ok, wait_for_line, wait_timeout};
use serde_json::Value;

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const T: Duration = Duration::from_secs(20);

/// `nstat -asz --json` in `ns`: every counter, absolute, zeros included,
/// without touching nstat's history.
fn nstat(ns: &NetNs) -> BTreeMap<String, u64> {
    let out = run_ok(ns.command("nstat").args(["-asz", "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("nstat JSON: {e}: {out}"));
    v["kernel"]
        .as_object()
        .expect("nstat's kernel object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or_else(|| panic!("{k}: {v}"))))
        .collect()
}

/// Some loopback connections in `ns`, so its counters are not all zero.
fn traffic(ns: &NetNs, dir: &TempDir, port: u16, count: u32) {
    let mut server = ns
        .command(dir.exe(NETSCENE, &format!("nsrv{port}")))
        .args([
            "listen",
            "127.0.0.1",
            &port.to_string(),
            "--accept",
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let status = ns
        .command(dir.exe(NETSCENE, &format!("ncli{port}")))
        .args([
            "connect",
            "127.0.0.1",
            &port.to_string(),
            "--count",
            &count.to_string(),
        ])
        .status()
        .expect("client");
    assert!(status.success());
    assert!(wait_timeout(&mut server, T, "server").success());
}

#[test]
fn kernel_counters_agree_with_nstat_taken_around_them() {
    let ns = NetNs::new();
    let dir = TempDir::new();
    traffic(&ns, &dir, 7001, 5);
    let before = nstat(&ns);
    let shown = ns.bnetstat_json(&["-s"]);
    let after = nstat(&ns);
    assert_eq!(shown.len(), 1, "one display: {shown:?}");
    assert!(
        shown[0]["events"].is_null(),
        "no event counters without an interval"
    );
    let kernel = shown[0]["kernel"].as_object().expect("kernel counters");
    let mut compared = 0;
    for (name, value) in kernel {
        let (Some(lo), Some(hi)) = (before.get(name), after.get(name)) else {
            continue;
        };
        // nstat prints the kernel's unsigned view of the few signed entries.
        let mine = value.as_i64().unwrap_or_else(|| panic!("{name}: {value}")) as u64;
        assert!(
            (*lo.min(hi)..=*lo.max(hi)).contains(&mine),
            "{name}: bnetstat {mine}, nstat {lo} then {hi}"
        );
        compared += 1;
    }
    assert!(
        compared > 100,
        "only {compared} counters in common with nstat"
    );
    for name in [
        "TcpActiveOpens",
        "TcpPassiveOpens",
        "Ip6InReceives",
        "UdpInDatagrams",
    ] {
        assert!(kernel.contains_key(name), "no {name}");
    }
    assert_eq!(kernel["TcpActiveOpens"], 5, "the scene's five connections");
    // --proto and -u keep their groups only.
    let udp = ns.bnetstat_json(&["-s", "-u"]);
    let names: Vec<&String> = udp[0]["kernel"]
        .as_object()
        .expect("kernel")
        .keys()
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("Udp")),
        "{names:?}"
    );
    let icmp6 = ns.bnetstat_json(&["-s", "--proto", "icmp6"]);
    let names: Vec<&String> = icmp6[0]["kernel"]
        .as_object()
        .expect("kernel")
        .keys()
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("Icmp6")),
        "{names:?}"
    );
}

/// Sums one process's event counters over every display.
fn counts_of(displays: &[Value], comm: &str) -> BTreeMap<String, u64> {
    let mut sum = BTreeMap::new();
    for d in displays {
        let Some(procs) = d["events"]["processes"].as_array() else {
            continue;
        };
        for p in procs.iter().filter(|p| p["comm"] == comm) {
            for key in [
                "active_opens",
                "passive_opens",
                "resets_sent",
                "resets_received",
                "retransmits",
            ] {
                *sum.entry(key.to_owned()).or_default() += p[key].as_u64().expect(key);
            }
            for (t, n) in p["transitions"].as_object().expect("transitions") {
                *sum.entry(t.clone()).or_default() += n.as_u64().expect("count");
            }
        }
    }
    sum
}

/// K connections from one process to another, a connection refused with a
/// reset, and one whose SYN an nftables rule drops until the kernel
/// retransmits it; each actor's counters are exactly its share.
#[test]
fn event_counters_match_a_scene_of_connections_a_reset_and_a_retransmit() {
    const K: u64 = 4;
    let ns = NetNs::new();
    let dir = TempDir::new();
    let stats = Bnetstat::start(&["-s", "--proto", "tcp", "--json", "60"]);
    let exe = |role: &str| dir.exe(NETSCENE, role);

    // K connections.
    let mut server = ns
        .command(exe("esrv"))
        .args(["listen", "127.0.0.1", "7101", "--accept", &K.to_string()])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let status = ns
        .command(exe("ecli"))
        .args(["connect", "127.0.0.1", "7101", "--count", &K.to_string()])
        .status()
        .expect("client");
    assert!(status.success());
    assert!(wait_timeout(&mut server, T, "server").success());

    // Nothing listens on 7102: the kernel answers the SYN with a reset.
    let status = ns
        .command(exe("erst"))
        .args(["connect", "127.0.0.1", "7102"])
        .stderr(Stdio::null())
        .status()
        .expect("refused client");
    assert!(!status.success(), "nothing should listen on 7102");

    // The first SYN to 7103 is dropped; the rule goes before the kernel's
    // first retransmit (1 s), so exactly one retransmit connects.
    let mut server = ns
        .command(exe("ersrv"))
        .args(["listen", "127.0.0.1", "7103"])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let nft = |script: &str| run_ok(ns.command("nft").arg(script));
    nft("add table inet bnst");
    nft("add chain inet bnst out { type filter hook output priority 0 ; }");
    nft("add rule inet bnst out tcp dport 7103 tcp flags syn drop");
    let mut client = ns
        .command(exe("ertx"))
        .args(["connect", "127.0.0.1", "7103"])
        .start();
    thread::sleep(Duration::from_millis(300));
    nft("delete table inet bnst");
    assert!(wait_timeout(&mut client, T, "retransmitting client").success());
    assert!(wait_timeout(&mut server, T, "server").success());

    thread::sleep(Duration::from_millis(200));
    let out = stats.stop();
    assert!(out.status.success(), "bnetstat failed: {}", out.stderr);
    let displays = out.json_lines();
    assert!(
        displays.len() >= 2,
        "a first display and a last one: {}",
        out.stdout
    );

    let get = |c: &BTreeMap<String, u64>, k: &str| c.get(k).copied().unwrap_or(0);
    let cli = counts_of(&displays, "ecli");
    assert_eq!(get(&cli, "active_opens"), K, "{cli:?}");
    assert_eq!(get(&cli, "CLOSE -> SYN_SENT"), K, "{cli:?}");
    assert_eq!(get(&cli, "SYN_SENT -> ESTABLISHED"), K, "{cli:?}");
    assert_eq!(get(&cli, "ESTABLISHED -> FIN_WAIT1"), K, "{cli:?}");
    assert_eq!(
        (get(&cli, "passive_opens"), get(&cli, "retransmits")),
        (0, 0),
        "{cli:?}"
    );
    let srv = counts_of(&displays, "esrv");
    assert_eq!(get(&srv, "passive_opens"), K, "{srv:?}");
    assert_eq!(get(&srv, "LISTEN -> SYN_RECV"), K, "{srv:?}");
    assert_eq!(get(&srv, "CLOSE -> LISTEN"), 1, "{srv:?}");
    assert_eq!(get(&srv, "ESTABLISHED -> CLOSE_WAIT"), K, "{srv:?}");
    assert_eq!(get(&srv, "active_opens"), 0, "{srv:?}");

    let rst = counts_of(&displays, "erst");
    assert_eq!(get(&rst, "resets_received"), 1, "{rst:?}");
    assert_eq!(get(&rst, "SYN_SENT -> CLOSE"), 1, "{rst:?}");
    // The reset for a port nobody holds is sent for no socket: it counts
    // in the total only.
    let total_resets: u64 = displays
        .iter()
        .filter_map(|d| d["events"]["total"]["resets_sent"].as_u64())
        .sum();
    assert!(total_resets >= 1, "{}", out.stdout);

    let rtx = counts_of(&displays, "ertx");
    assert_eq!(get(&rtx, "retransmits"), 1, "{rtx:?}");
    assert_eq!(get(&rtx, "active_opens"), 1, "{rtx:?}");
    assert_eq!(get(&counts_of(&displays, "ersrv"), "passive_opens"), 1);
}
