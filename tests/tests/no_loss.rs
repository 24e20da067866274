//! Nothing lost and every owner right at 20,000 connections opened as fast
//! as one client process can.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use bnetstat_tests::{
    Bnetstat, Start, TempDir, by_socket, free_port, transitions, wait_for_line, wait_timeout,
};

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const CONNECTIONS: usize = 20_000;

#[test]
fn twenty_thousand_fast_connections_lose_nothing() {
    let addr = "127.0.0.1";
    let port = free_port(addr);
    let tracer = Bnetstat::start(&["trace", "--json", "--port", &port.to_string()]);
    let dir = TempDir::new();
    let n = CONNECTIONS.to_string();
    // The server closes first so TIME_WAIT stays on its side and the
    // client never runs short of ephemeral ports.
    let mut server = Command::new(dir.exe(NETSCENE, "churn-srv"))
        .args([
            "listen",
            addr,
            &port.to_string(),
            "--accept",
            &n,
            "--close-first",
        ])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(
        server.stdout.take().expect("stdout"),
        "listening",
        Duration::from_secs(20),
    );
    let mut client = Command::new(dir.exe(NETSCENE, "churn-cli"))
        .args([
            "connect",
            addr,
            &port.to_string(),
            "--count",
            &n,
            "--wait-eof",
        ])
        .start();
    let limit = Duration::from_secs(300);
    assert!(wait_timeout(&mut client, limit, "client").success());
    assert!(wait_timeout(&mut server, limit, "server").success());
    let (client_pid, server_pid) = (u64::from(client.id()), u64::from(server.id()));
    thread::sleep(Duration::from_millis(500));
    let out = tracer.stop();
    assert!(out.status.success(), "bnetstat failed: {}", out.stderr);
    assert!(!out.stderr.contains("lost"), "{}", out.stderr);

    let events = out.json_lines();
    assert!(
        events.iter().all(|e| e.get("lost").is_none()),
        "a lost line"
    );
    let socks = by_socket(&events);
    let mut shapes: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for evs in socks.values() {
        *shapes.entry(transitions(evs)).or_default() += 1;
        let first = &evs[0];
        let want = if first["old_state"] == "CLOSE" && first["new_state"] == "SYN_SENT" {
            (client_pid, "churn-cli")
        } else {
            (server_pid, "churn-srv")
        };
        for ev in evs {
            assert_eq!(
                (ev["pid"].as_u64(), ev["comm"].as_str()),
                (Some(want.0), Some(want.1)),
                "{ev}"
            );
        }
    }
    let client_shape = [
        "CLOSE -> SYN_SENT",
        "SYN_SENT -> ESTABLISHED",
        "ESTABLISHED -> CLOSE_WAIT",
        "CLOSE_WAIT -> LAST_ACK",
        "LAST_ACK -> CLOSE",
    ];
    let server_shape = [
        "LISTEN -> SYN_RECV",
        "SYN_RECV -> ESTABLISHED",
        "ESTABLISHED -> FIN_WAIT1",
        "FIN_WAIT1 -> FIN_WAIT2",
        "FIN_WAIT2 -> CLOSE",
    ];
    let listener_shape = ["CLOSE -> LISTEN", "LISTEN -> CLOSE"];
    let count = |shape: &[&str]| {
        shapes
            .get(&shape.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (
            count(&client_shape),
            count(&server_shape),
            count(&listener_shape),
            socks.len()
        ),
        (CONNECTIONS, CONNECTIONS, 1, 2 * CONNECTIONS + 1),
        "sockets by transition sequence: {shapes:#?}"
    );
    assert_eq!(events.len(), 10 * CONNECTIONS + 2);
}
