//! `bnetstat top --json` against real loopback traffic: a client sending
//! at a known rate shows that rate in every whole interval and exactly its
//! bytes summed over all of them, on its own connection and process and on
//! the server's; a known number of connections shows as that many opened
//! and accepted.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use bnetstat_tests::{Bnetstat, Start as _, TempDir, free_port, wait_for_line, wait_timeout};
use serde_json::Value;

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const T: Duration = Duration::from_secs(30);

/// The paced client: CHUNK bytes every TICK_MS, TICKS times (3 s) unless
/// a test says otherwise.
const CHUNK: u64 = 10_000;
const TICKS: u64 = 30;
const TICK_MS: u64 = 100;
/// Bytes per second it sends.
const RATE: f64 = (CHUNK * 1000 / TICK_MS) as f64;

/// When `bnetstat top` starts.
#[derive(PartialEq)]
enum Start {
    BeforeTheScene,
    /// Half a second into the client's run.
    WhileTheClientRuns,
}

/// A server that reads whatever `connect` sends, `accept` times, and a
/// client with `client_args`, each under its own name; returns their pids
/// and what `bnetstat top --json` printed meanwhile, one object per interval.
fn scene(tag: &str, accept: u64, client_args: &[&str], when: Start) -> (Actor, Actor, Vec<Value>) {
    let port = free_port("127.0.0.1");
    let p = port.to_string();
    let top_args = ["top", "--json", "--rows", "100", "--port", &p];
    let mut top = (when == Start::BeforeTheScene).then(|| Bnetstat::start(&top_args));
    let dir = TempDir::new();
    let server_comm = format!("{tag}s{port}");
    let client_comm = format!("{tag}c{port}");
    let mut server = Command::new(dir.exe(NETSCENE, &server_comm))
        .args(["listen", "127.0.0.1", &p, "--accept", &accept.to_string()])
        .stdout(Stdio::piped())
        .start();
    let _stdout = wait_for_line(server.stdout.take().expect("stdout"), "listening", T);
    let mut client = Command::new(dir.exe(NETSCENE, &client_comm))
        .args(["connect", "127.0.0.1", &p])
        .args(client_args)
        .start();
    if top.is_none() {
        thread::sleep(Duration::from_millis(500));
        top = Some(Bnetstat::start(&top_args));
    }
    assert!(wait_timeout(&mut client, T, "client").success());
    assert!(wait_timeout(&mut server, T, "server").success());
    // One more whole interval, so the last bytes are read, not only
    // flushed by the stop.
    thread::sleep(Duration::from_millis(1500));
    let out = top.expect("started").stop();
    assert!(out.status.success(), "bnetstat failed: {}", out.stderr);
    assert!(!out.stderr.contains("lost"), "{}", out.stderr);
    let intervals = out.json_lines();
    let actor = |comm: String, pid: u32| Actor { comm, pid, port };
    (
        actor(server_comm, server.id()),
        actor(client_comm, client.id()),
        intervals,
    )
}

/// One process of the scene.
struct Actor {
    comm: String,
    pid: u32,
    /// The server's port.
    port: u16,
}

impl Actor {
    /// Its connections in one interval; each checked to be its own.
    fn conns<'a>(&self, interval: &'a Value) -> Vec<&'a Value> {
        let rows = interval["connections"].as_array().expect("connections");
        let mine: Vec<&Value> = rows.iter().filter(|c| c["comm"] == self.comm).collect();
        for c in &mine {
            assert_eq!(c["pid"], u64::from(self.pid), "{c}");
            assert_eq!(
                (&c["family"], &c["laddr"], &c["raddr"]),
                (&"inet".into(), &"127.0.0.1".into(), &"127.0.0.1".into()),
                "{c}"
            );
            assert!(
                c["lport"] == u64::from(self.port) || c["rport"] == u64::from(self.port),
                "{c}"
            );
        }
        mine
    }

    /// Its process row in one interval, if it has one.
    fn process<'a>(&self, interval: &'a Value) -> Option<&'a Value> {
        let rows = interval["processes"].as_array().expect("processes");
        let row = rows.iter().find(|p| p["pid"] == u64::from(self.pid))?;
        assert_eq!(row["comm"], self.comm.as_str(), "{row}");
        Some(row)
    }

    /// `key` of its connections in each interval, summed per interval.
    fn conn_bytes(&self, intervals: &[Value], key: &str) -> Vec<u64> {
        intervals
            .iter()
            .map(|i| {
                self.conns(i)
                    .iter()
                    .map(|c| c[key].as_u64().expect("bytes"))
                    .sum()
            })
            .collect()
    }

    /// `key` of its process row, summed over every interval.
    fn process_total(&self, intervals: &[Value], key: &str) -> u64 {
        intervals
            .iter()
            .filter_map(|i| self.process(i))
            .map(|p| p[key].as_u64().expect("number"))
            .sum()
    }
}

/// The paced client's arguments, for `ticks` sends.
fn paced(ticks: u64) -> Vec<String> {
    [
        "--paced",
        &CHUNK.to_string(),
        "--ticks",
        &ticks.to_string(),
        "--tick-ms",
        &TICK_MS.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Checks that every interval between the first and the last in which
/// the client sent saw the client's rate, sent and received: a 1 s window
/// holds 9 to 11 of its 10 sends per second, and 30% leaves room for a
/// sender or reader held up by a busy machine around a boundary. Counting
/// totals instead of growth, or a whole transfer in one interval, is far
/// outside.
fn assert_rate_in_whole_intervals(intervals: &[Value], sent: &[u64], received: &[u64]) {
    let busy: Vec<usize> = (0..sent.len()).filter(|&i| sent[i] > 0).collect();
    assert!(!busy.is_empty(), "no bytes sent");
    let (first, last) = (busy[0], busy[busy.len() - 1]);
    assert!(last - first >= 2, "no whole interval: {sent:?}");
    for i in first + 1..last {
        let seconds = intervals[i]["interval_s"].as_f64().expect("interval_s");
        for (what, bytes) in [("sent", sent[i]), ("received", received[i])] {
            let rate = bytes as f64 / seconds;
            assert!(
                (0.7 * RATE..=1.3 * RATE).contains(&rate),
                "{what} {rate:.0} B/s in interval {i} against {RATE} B/s: {sent:?} {received:?}"
            );
        }
    }
}

#[test]
fn a_known_rate_shows_in_every_whole_interval_and_sums_exactly() {
    let args = paced(TICKS);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (server, client, intervals) = scene("tr", 1, &args, Start::BeforeTheScene);
    let total = CHUNK * TICKS;
    let sent = client.conn_bytes(&intervals, "tx_bytes");
    let received = server.conn_bytes(&intervals, "rx_bytes");
    assert_eq!(
        sent.iter().sum::<u64>(),
        total,
        "client sent, per interval: {sent:?}"
    );
    assert_eq!(
        received.iter().sum::<u64>(),
        total,
        "server received, per interval: {received:?}"
    );
    assert_eq!(
        client
            .conn_bytes(&intervals, "rx_bytes")
            .iter()
            .sum::<u64>(),
        0
    );
    assert_eq!(
        server
            .conn_bytes(&intervals, "tx_bytes")
            .iter()
            .sum::<u64>(),
        0
    );
    for (who, key) in [(&client, "tx_bytes"), (&server, "rx_bytes")] {
        assert_eq!(
            who.process_total(&intervals, key),
            total,
            "{} {key}",
            who.comm
        );
    }
    assert_eq!(client.process_total(&intervals, "opened"), 1);
    assert_eq!(server.process_total(&intervals, "accepted"), 1);
    // The transfer spans about three intervals.
    assert_rate_in_whole_intervals(&intervals, &sent, &received);
}

#[test]
fn a_transfer_already_running_when_top_starts_shows_from_the_first_interval() {
    // Longer than the rest: bnetstat takes a while to load and seed.
    let ticks = 2 * TICKS;
    let args = paced(ticks);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (server, client, intervals) = scene("tp", 1, &args, Start::WhileTheClientRuns);
    let sent = client.conn_bytes(&intervals, "tx_bytes");
    let received = server.conn_bytes(&intervals, "rx_bytes");
    // Seeded with its owners, so bytes show at once, under the right pids.
    assert!(sent[0] > 0 && received[0] > 0, "{sent:?} {received:?}");
    assert!(
        sent.iter().sum::<u64>() <= CHUNK * (ticks - 1),
        "the first send came before bnetstat: {sent:?}"
    );
    assert_eq!(
        client.process_total(&intervals, "opened"),
        0,
        "opened before"
    );
    assert_rate_in_whole_intervals(&intervals, &sent, &received);
}

#[test]
fn new_connections_count_as_opened_by_the_client_and_accepted_by_the_server() {
    const N: u64 = 25;
    let (server, client, intervals) =
        scene("tn", N, &["--count", &N.to_string()], Start::BeforeTheScene);
    assert_eq!(client.process_total(&intervals, "opened"), N);
    assert_eq!(client.process_total(&intervals, "accepted"), 0);
    assert_eq!(server.process_total(&intervals, "accepted"), N);
    assert_eq!(server.process_total(&intervals, "opened"), 0);
    let sum = |key: &str| -> u64 { intervals.iter().map(|i| i[key].as_u64().expect(key)).sum() };
    assert_eq!((sum("opened"), sum("accepted")), (N, N));
    // Each connection carried one "hello\n".
    assert_eq!(client.process_total(&intervals, "tx_bytes"), 6 * N);
    assert_eq!(server.process_total(&intervals, "rx_bytes"), 6 * N);
    let socks: std::collections::BTreeSet<&str> = intervals
        .iter()
        .flat_map(|i| client.conns(i))
        .map(|c| c["sock"].as_str().expect("sock"))
        .collect();
    assert_eq!(socks.len() as u64, N, "one row per client connection");
}

#[test]
fn text_has_both_tables_and_count_stops_it() {
    let port = free_port("127.0.0.1");
    let out = Command::new(bnetstat_tests::bnetstat_bin())
        .args(["top", "--count", "2", "--port", &port.to_string(), "0.3"])
        .output()
        .expect("run bnetstat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\x1b'),
        "no screen clearing into a pipe: {text}"
    );
    let headers = text.lines().filter(|l| l.contains("RX_KB")).count();
    assert_eq!(headers, 4, "two tables per interval, two intervals: {text}");
    assert!(
        text.contains("LADDR") && text.contains("ACCEPTED"),
        "{text}"
    );
}
