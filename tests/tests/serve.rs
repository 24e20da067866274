//! `bnetstat serve` scraped over real HTTP while a known scene runs: the
//! text passes promtool's parser and linter, and its values follow the
//! scene. The kernel is shared with other tests, so every check is one the
//! scene guarantees on a busy host: at least this many, grew by at least
//! that much.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use bnetstat_tests::{Bnetstat, Holder, TempDir, bnetstat_bin, free_port};

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
/// How long values may take to show: the ring's batching plus the 250 ms
/// refresh, with room for a loaded machine.
const T: Duration = Duration::from_secs(15);

/// An HTTP answer: status line, headers (lower-case names) and body.
struct Answer {
    status: String,
    headers: BTreeMap<String, String>,
    body: String,
}

fn get(addr: &str, path: &str) -> Answer {
    let mut conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).expect("read answer");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head: {raw:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// One scrape's samples by their exact text before the value
/// (`name{label="v",...}`).
struct Metrics {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// A sample's value; a counter not yet seen (a transition pair) is 0.
    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// The sample's growth since `before`.
    fn grew(&self, before: &Metrics, key: &str) -> f64 {
        self.get(key) - before.get(key)
    }
}

/// Scrapes `/metrics` and checks it with promtool, Prometheus's own parser
/// and linter.
fn scrape(addr: &str) -> Metrics {
    let answer = get(addr, "/metrics");
    assert_eq!(answer.status, "HTTP/1.1 200 OK", "{}", answer.body);
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.body.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
        answer.body
    );
    let samples = answer
        .body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("a sample");
            let value = value.parse().unwrap_or_else(|e| panic!("{l}: {e}"));
            (key.to_owned(), value)
        })
        .collect();
    Metrics {
        text: answer.body,
        samples,
    }
}

/// Scrapes until `failed` finds nothing wrong, or panics with what is still
/// wrong after [`T`].
fn scrape_until(addr: &str, failed: impl Fn(&Metrics) -> Vec<String>) -> Metrics {
    let deadline = Instant::now() + T;
    loop {
        let m = scrape(addr);
        let wrong = failed(&m);
        if wrong.is_empty() {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "after {T:?}: {}\n{}",
            wrong.join("; "),
            m.text
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `what` is at least `want`, or says why not.
fn at_least(what: &str, got: f64, want: f64) -> Option<String> {
    (got < want).then(|| format!("{what} is {got}, want at least {want}"))
}

const LOST: [&str; 2] = [
    r#"bnetstat_events_lost_total{cause="ring_full"}"#,
    r#"bnetstat_events_lost_total{cause="nested"}"#,
];

#[test]
fn metrics_follow_listeners_connections_and_closes() {
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let bnetstat = Bnetstat::start(&["serve", "--metrics", &addr]);
    let before = scrape(&addr);
    for lost in LOST {
        assert_eq!(before.get(lost), 0.0, "{lost}");
    }

    // Three TCP listeners (one IPv6) and a UDP socket, then four
    // connections to them from another process.
    let dir = TempDir::new();
    let (a, b) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let (c, u) = (free_port("::1"), free_port("127.0.0.1"));
    let server = Holder::start(
        Command::new(dir.exe(NETSCENE, "srv-server")),
        &[
            format!("tcp-listen=127.0.0.1:{a}"),
            format!("tcp-listen=127.0.0.1:{b}"),
            format!("tcp-listen=[::1]:{c}"),
            format!("udp-bind=127.0.0.1:{u}"),
        ],
    );
    let client = Holder::start(
        Command::new(dir.exe(NETSCENE, "srv-client")),
        &[
            format!("tcp-connect=127.0.0.1:{a}"),
            format!("tcp-connect=127.0.0.1:{a}"),
            format!("tcp-connect=127.0.0.1:{b}"),
            format!("tcp-connect=[::1]:{c}"),
        ],
    );
    let open = scrape_until(&addr, |m| {
        [
            at_least(
                "tcp listeners",
                m.get(r#"bnetstat_listeners{proto="tcp"}"#),
                2.0,
            ),
            at_least(
                "tcp6 listeners",
                m.get(r#"bnetstat_listeners{proto="tcp6"}"#),
                1.0,
            ),
            at_least(
                "udp listeners",
                m.get(r#"bnetstat_listeners{proto="udp"}"#),
                1.0,
            ),
            at_least(
                "CLOSE -> LISTEN growth",
                m.grew(
                    &before,
                    r#"bnetstat_transitions_total{old_state="CLOSE",new_state="LISTEN"}"#,
                ),
                3.0,
            ),
            at_least(
                "connects growth",
                m.grew(&before, "bnetstat_connects_total"),
                4.0,
            ),
            at_least(
                "accepts growth",
                m.grew(&before, "bnetstat_accepts_total"),
                4.0,
            ),
            // Both ends of each connection.
            at_least(
                "tcp ESTABLISHED",
                m.get(r#"bnetstat_sockets{proto="tcp",state="ESTABLISHED"}"#),
                6.0,
            ),
            at_least(
                "tcp6 ESTABLISHED",
                m.get(r#"bnetstat_sockets{proto="tcp6",state="ESTABLISHED"}"#),
                2.0,
            ),
            at_least(
                "events growth",
                m.grew(&before, "bnetstat_events_total"),
                // Per connection: connect, its SYN_SENT -> ESTABLISHED,
                // the accept and its SYN_RECV -> ESTABLISHED.
                3.0 + 4.0 * 4.0 + 1.0,
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    });

    // The client exits: it closes first, so its ends go through FIN_WAIT1
    // and wait out TIME_WAIT.
    drop(client);
    let closed = scrape_until(&addr, |m| {
        [
            at_least(
                "ESTABLISHED -> FIN_WAIT1 growth",
                m.grew(
                    &open,
                    r#"bnetstat_transitions_total{old_state="ESTABLISHED",new_state="FIN_WAIT1"}"#,
                ),
                4.0,
            ),
            at_least(
                "tcp TIME_WAIT",
                m.get(r#"bnetstat_sockets{proto="tcp",state="TIME_WAIT"}"#),
                3.0,
            ),
            at_least(
                "tcp6 TIME_WAIT",
                m.get(r#"bnetstat_sockets{proto="tcp6",state="TIME_WAIT"}"#),
                1.0,
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    });
    drop(server);
    for lost in LOST {
        assert_eq!(closed.get(lost), 0.0, "{lost}\n{}", closed.text);
    }

    // Its own use, as a Prometheus client library reports a process's.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = closed.get("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 300.0,
        "started at {started}, now {now}"
    );
    assert!(closed.get("process_resident_memory_bytes") > 1e6);
    assert!(
        closed.get("process_cpu_seconds_total") >= before.get("process_cpu_seconds_total"),
        "CPU time never goes back"
    );

    let out = bnetstat.stop_with(libc::SIGTERM);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert!(
        TcpStream::connect(&addr).is_err(),
        "nothing listens once it stopped"
    );
}

#[test]
fn a_silent_client_does_not_hold_up_scrapes_and_other_paths_are_404() {
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let bnetstat = Bnetstat::start(&["serve", "--metrics", &addr]);
    let silent = TcpStream::connect(&addr).expect("connect");
    let asked = Instant::now();
    scrape(&addr);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "a client that sends nothing is given up on: {:?}",
        asked.elapsed()
    );
    drop(silent);
    for path in ["/", "/metricsx", "/favicon.ico"] {
        let answer = get(&addr, path);
        assert_eq!(answer.status, "HTTP/1.1 404 Not Found", "{path}");
    }
    let out = bnetstat.stop();
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
}

fn assert_one_line_failure(out: &Output, mention: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(mention), "{mention:?} in {stderr}");
}

#[test]
fn a_bad_or_busy_metrics_address_is_one_line_and_a_failure() {
    let serve = |addr: &str| {
        Command::new(bnetstat_bin())
            .args(["serve", "--metrics", addr])
            .output()
            .expect("run bnetstat")
    };
    assert_one_line_failure(&serve("nonsense"), "nonsense");
    assert_one_line_failure(&serve("127.0.0.1:99999"), "127.0.0.1:99999");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr").to_string();
    assert_one_line_failure(&serve(&busy), "in use");
}

#[test]
fn the_units_capabilities_are_enough_without_root() {
    // What dist/bnetstat.service grants, to a nobody user.
    let dir = TempDir::new();
    let bin = dir.exe(bnetstat_bin(), "bnetstat");
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let caps = "+bpf,+perfmon,+net_admin,+sys_ptrace,+dac_read_search";
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(&bin)
        .args(["serve", "--metrics", &addr])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run setpriv (util-linux)");
    let up = scrape_until_up(&addr, &mut child);
    // It follows events too: a connection is counted.
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let conn = TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
    scrape_until(&addr, |m| {
        at_least(
            "connects growth",
            m.grew(&up, "bnetstat_connects_total"),
            1.0,
        )
        .into_iter()
        .collect()
    });
    drop((conn, server));
    // SAFETY: signalling our own child (setpriv execs bnetstat in place).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scrapes once `addr` answers; panics with bnetstat's words if it exits
/// first.
fn scrape_until_up(addr: &str, child: &mut std::process::Child) -> Metrics {
    let deadline = Instant::now() + T;
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("bnetstat exited ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "not serving within {T:?}");
        thread::sleep(Duration::from_millis(50));
    }
    scrape(addr)
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/bnetstat.service"
    ))
    .expect("dist/bnetstat.service");
    let exec = "ExecStart=/usr/local/bin/bnetstat serve --metrics 127.0.0.1:9830";
    assert!(unit.lines().any(|l| l == exec), "{exec} in:\n{unit}");
    // systemd-analyze checks that the program exists: point it at this build.
    let dir = TempDir::new();
    let path = dir.path().join("bnetstat.service");
    let bin = bnetstat_bin();
    let here = unit.replace("/usr/local/bin/bnetstat", bin.to_str().expect("UTF-8 path"));
    std::fs::write(&path, here).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze (Debian's systemd package)");
    // It warns of unknown keys and bad values on stderr and still exits 0.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
