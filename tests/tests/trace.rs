//! `bnetstat trace` against real loopback connections: the exact
//! transitions of every socket, and the owner on each of them.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use bnetstat_tests::{
    Bnetstat, Start, TempDir, boottime_ns, by_socket, free_port, transitions, wait_for_line,
    wait_timeout,
};
use serde_json::Value;

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const T: Duration = Duration::from_secs(20);

/// A server process accepts one connection from a client process; the
/// client fills the server's window, closes and exits at once; the server
/// starts reading only a second later, reads to EOF, holds the connection
/// 200 ms, then closes. The client's FIN can only be acknowledged once the
/// server reads, so its last two transitions happen after it is gone.
fn client_and_server(addr: &str, family: &str) {
    let port = free_port(addr);
    let tracer = Bnetstat::start(&["trace", "--json", "--port", &port.to_string()]);
    let dir = TempDir::new();
    let server_comm = format!("srv{port}");
    let client_comm = format!("cli{port}");
    let mut server = Command::new(dir.exe(NETSCENE, &server_comm))
        .args([
            "listen",
            addr,
            &port.to_string(),
            "--delay-ms",
            "1000",
            "--linger-ms",
            "200",
        ])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let mut client = Command::new(dir.exe(NETSCENE, &client_comm))
        .args(["connect", addr, &port.to_string(), "--fill"])
        .start();
    let client_pid = u64::from(client.id());
    assert!(wait_timeout(&mut client, T, "client").success());
    let client_gone_ns = boottime_ns();
    assert!(wait_timeout(&mut server, T, "server").success());
    let server_pid = u64::from(server.id());
    thread::sleep(Duration::from_millis(100));
    let out = tracer.stop();
    assert!(out.status.success(), "bnetstat failed: {}", out.stderr);
    assert!(!out.stderr.contains("lost"), "{}", out.stderr);

    let events = out.json_lines();
    let socks = by_socket(&events);
    let role = |first: &str| -> &Vec<&Value> {
        let found: Vec<_> = socks
            .values()
            .filter(|evs| transitions(evs)[0] == first)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one socket starting with {first}: {socks:#?}"
        );
        found[0]
    };
    let listener = role("CLOSE -> LISTEN");
    let client_sock = role("CLOSE -> SYN_SENT");
    let accepted = role("LISTEN -> SYN_RECV");
    assert_eq!(socks.len(), 3, "only the test's three sockets: {socks:#?}");

    assert_eq!(
        transitions(listener),
        ["CLOSE -> LISTEN", "LISTEN -> CLOSE"]
    );
    assert_eq!(
        transitions(client_sock),
        [
            "CLOSE -> SYN_SENT",
            "SYN_SENT -> ESTABLISHED",
            "ESTABLISHED -> FIN_WAIT1",
            "FIN_WAIT1 -> FIN_WAIT2",
            "FIN_WAIT2 -> CLOSE"
        ]
    );
    assert_eq!(
        transitions(accepted),
        [
            "LISTEN -> SYN_RECV",
            "SYN_RECV -> ESTABLISHED",
            "ESTABLISHED -> CLOSE_WAIT",
            "CLOSE_WAIT -> LAST_ACK",
            "LAST_ACK -> CLOSE"
        ]
    );

    for (evs, pid, comm) in [
        (listener, server_pid, &server_comm),
        (accepted, server_pid, &server_comm),
        (client_sock, client_pid, &client_comm),
    ] {
        for ev in evs {
            assert_eq!(ev["pid"], pid, "owner pid of {ev}");
            assert_eq!(ev["comm"], comm.as_str(), "owner comm of {ev}");
            assert_eq!(ev["family"], family, "{ev}");
        }
    }

    // Endpoints: the client's remote is the server's port, and the accepted
    // socket is the other end of the client's.
    let (c, a) = (last(client_sock), last(accepted));
    assert_eq!(
        (c["raddr"].as_str(), c["rport"].as_u64()),
        (Some(addr), Some(u64::from(port)))
    );
    assert_eq!(
        (a["laddr"].as_str(), a["lport"].as_u64()),
        (Some(addr), Some(u64::from(port)))
    );
    assert_eq!(a["rport"], c["lport"]);

    // The client's last two transitions came after it exited, and are still
    // its own (checked above).
    for after_exit in &client_sock[3..] {
        let ts = after_exit["ts_ns"].as_u64().expect("ts_ns");
        assert!(ts > client_gone_ns, "{after_exit} before the client exited");
    }
    // Time in the old state is known for every transition after the first.
    for evs in [listener, client_sock, accepted] {
        assert!(
            evs[1..]
                .iter()
                .all(|e| e["ms_in_old"].as_f64().is_some_and(|ms| ms >= 0.0))
        );
    }
}

fn last<'a>(evs: &[&'a Value]) -> &'a Value {
    evs.last().expect("events")
}

#[test]
fn ipv4_client_and_server_have_exact_transitions_and_owners() {
    client_and_server("127.0.0.1", "inet");
}

#[test]
fn ipv6_client_and_server_have_exact_transitions_and_owners() {
    client_and_server("::1", "inet6");
}

#[test]
fn count_stops_trace_by_itself() {
    let port = free_port("127.0.0.1");
    let tracer = Bnetstat::start(&[
        "trace",
        "--json",
        "--count",
        "3",
        "--port",
        &port.to_string(),
    ]);
    let dir = TempDir::new();
    let mut server = Command::new(dir.exe(NETSCENE, "count-srv"))
        .args(["listen", "127.0.0.1", &port.to_string()])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let status = Command::new(dir.exe(NETSCENE, "count-cli"))
        .args(["connect", "127.0.0.1", &port.to_string()])
        .status()
        .expect("client");
    assert!(status.success());
    assert!(wait_timeout(&mut server, T, "server").success());
    let out = tracer.wait();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json_lines().len(), 3, "{}", out.stdout);
}

#[test]
fn duration_stops_trace_by_itself() {
    let tracer = Bnetstat::start(&["trace", "--duration", "0.5", "--port", "1"]);
    let started = std::time::Instant::now();
    let out = tracer.wait();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.stdout.starts_with("TIME"),
        "the header line: {}",
        out.stdout
    );
}

/// A `netscene listen` at `addr:port`, listening.
fn server(dir: &TempDir, addr: &str, port: u16, tag: &str) -> std::process::Child {
    let mut server = Command::new(dir.exe(NETSCENE, &format!("srv{tag}")))
        .args(["listen", addr, &port.to_string()])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    server
}

/// One `netscene connect` to `addr:port`, run to its end; and the
/// server's end.
fn connect_once(dir: &TempDir, mut server: std::process::Child, addr: &str, port: u16, tag: &str) {
    let mut client = Command::new(dir.exe(NETSCENE, &format!("cli{tag}")))
        .args(["connect", addr, &port.to_string()])
        .start();
    assert!(wait_timeout(&mut client, T, "client").success());
    assert!(wait_timeout(&mut server, T, "server").success());
}

#[test]
fn a_family_filter_keeps_only_that_family() {
    let dir = TempDir::new();
    let (v4, v6) = (free_port("127.0.0.1"), free_port("::1"));
    let tracer = Bnetstat::start(&[
        "trace",
        "--json",
        "-6",
        "--port",
        &v4.to_string(),
        "--port",
        &v6.to_string(),
    ]);
    let s4 = server(&dir, "127.0.0.1", v4, &format!("f4{v4}"));
    connect_once(&dir, s4, "127.0.0.1", v4, &format!("f4{v4}"));
    let s6 = server(&dir, "::1", v6, &format!("f6{v6}"));
    connect_once(&dir, s6, "::1", v6, &format!("f6{v6}"));
    thread::sleep(Duration::from_millis(200));
    let events = tracer.stop().json_lines();
    // The IPv6 pair's three sockets, and nothing of the IPv4 one.
    assert_eq!(by_socket(&events).len(), 3, "{events:#?}");
    for ev in &events {
        assert_eq!(ev["family"], "inet6", "{ev}");
        assert!(ev["lport"] == v6 || ev["rport"] == v6, "{ev}");
    }
}

#[test]
fn a_pid_filter_keeps_only_that_processs_sockets() {
    let dir = TempDir::new();
    let port = free_port("127.0.0.1");
    let srv = server(&dir, "127.0.0.1", port, &format!("p{port}"));
    let pid = srv.id();
    let tracer = Bnetstat::start(&[
        "trace",
        "--json",
        "--pid",
        &pid.to_string(),
        "--port",
        &port.to_string(),
    ]);
    connect_once(&dir, srv, "127.0.0.1", port, &format!("p{port}"));
    thread::sleep(Duration::from_millis(200));
    let events = tracer.stop().json_lines();
    let seen: Vec<String> = by_socket(&events)
        .values()
        .map(|evs| transitions(evs)[0].clone())
        .collect();
    // The listener and the connection it accepted; not the client's socket.
    assert_eq!(seen.len(), 2, "{events:#?}");
    assert!(seen.contains(&"LISTEN -> SYN_RECV".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"CLOSE -> SYN_SENT".to_owned()), "{seen:?}");
    assert!(events.iter().all(|ev| ev["pid"] == pid), "{events:#?}");
}
