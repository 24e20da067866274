//! `bnetstat life` against a real loopback transfer: exactly the bytes the
//! scene moved each way, the owner of each end, the duration within the
//! measured wall time, and which end closed first.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use bnetstat_tests::{Bnetstat, Start, TempDir, free_port, wait_for_line, wait_timeout};
use serde_json::Value;

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const T: Duration = Duration::from_secs(20);

/// A client sends exactly N bytes, the server reads them and sends exactly
/// N back (N spans many segments and several reads), the client closes
/// first, then the server at EOF. Each end's line has N bytes each way,
/// its own process, and a duration no longer than the scene took.
fn exchange(addr: &str, family: &str, n: u64) {
    let port = free_port(addr);
    let life = Bnetstat::start(&["life", "--json", "--port", &port.to_string()]);
    let dir = TempDir::new();
    let server_comm = format!("lsrv{port}");
    let client_comm = format!("lcli{port}");
    let started = Instant::now();
    let mut server = Command::new(dir.exe(NETSCENE, &server_comm))
        .args([
            "listen",
            addr,
            &port.to_string(),
            "--exchange",
            &n.to_string(),
        ])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let mut client = Command::new(dir.exe(NETSCENE, &client_comm))
        .args([
            "connect",
            addr,
            &port.to_string(),
            "--exchange",
            &n.to_string(),
        ])
        .start();
    assert!(wait_timeout(&mut client, T, "client").success());
    assert!(wait_timeout(&mut server, T, "server").success());
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    thread::sleep(Duration::from_millis(100));
    let out = life.stop();
    assert!(out.status.success(), "bnetstat failed: {}", out.stderr);
    assert!(!out.stderr.contains("lost"), "{}", out.stderr);

    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "one line per end: {}", out.stdout);
    let end = |comm: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["comm"] == comm)
            .unwrap_or_else(|| panic!("no line owned by {comm}: {}", out.stdout))
    };
    let (srv, cli) = (end(&server_comm), end(&client_comm));
    assert_eq!(srv["pid"], u64::from(server.id()), "{srv}");
    assert_eq!(cli["pid"], u64::from(client.id()), "{cli}");
    for l in [srv, cli] {
        assert_eq!(l["tx_bytes"], n, "bytes sent: {l}");
        assert_eq!(l["rx_bytes"], n, "bytes received: {l}");
        assert_eq!(l["family"], family, "{l}");
        assert_eq!(l["partial"], false, "{l}");
        let ms = l["ms"].as_f64().unwrap_or_else(|| panic!("no ms: {l}"));
        assert!(
            ms > 0.0 && ms <= wall_ms,
            "{ms} ms against {wall_ms} ms of wall time: {l}"
        );
    }
    assert_eq!(cli["closed_first"], "local", "{cli}");
    assert_eq!(srv["closed_first"], "remote", "{srv}");
    assert_eq!(
        (srv["lport"].as_u64(), cli["rport"].as_u64()),
        (Some(u64::from(port)), Some(u64::from(port)))
    );
    assert_eq!(srv["rport"], cli["lport"]);
}

#[test]
fn ipv4_transfer_has_exact_bytes_owners_and_duration() {
    exchange("127.0.0.1", "inet", 1_234_567);
}

#[test]
fn ipv6_transfer_has_exact_bytes_owners_and_duration() {
    exchange("::1", "inet6", 99_999);
}

#[test]
fn count_stops_life_by_itself_and_lines_have_a_header() {
    let port = free_port("127.0.0.1");
    let life = Bnetstat::start(&["life", "--count", "1", "--port", &port.to_string()]);
    let dir = TempDir::new();
    let mut server = Command::new(dir.exe(NETSCENE, "lcount-srv"))
        .args(["listen", "127.0.0.1", &port.to_string(), "--exchange", "10"])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let status = Command::new(dir.exe(NETSCENE, "lcount-cli"))
        .args([
            "connect",
            "127.0.0.1",
            &port.to_string(),
            "--exchange",
            "10",
        ])
        .status()
        .expect("client");
    assert!(status.success());
    assert!(wait_timeout(&mut server, T, "server").success());
    let out = life.wait();
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<_> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("TX_BYTES"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("lcount-"), "{}", lines[1]);
}
