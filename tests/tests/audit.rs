//! `bnetstat audit` against the real kernel: processes that open ports and
//! exit within milliseconds are named in full (pid, parent, executable,
//! command line, user), in another network namespace and in a child
//! cgroup too; `--expect` flags what is not on the list; `--output`
//! survives a rotation (SIGHUP) and a stop (SIGTERM) without losing a
//! record.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bnetstat_tests::{Bnetstat, NetNs, Start as _, TempDir, free_port, wait_timeout};
use serde_json::Value;

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const T: Duration = Duration::from_secs(20);

/// A `netscene hold SPECS` that opens its sockets and exits at once (its
/// stdin is empty), run through `wrapper` (e.g. setpriv); returns its pid.
fn flash(wrapper: &mut Command, specs: &[String]) -> u32 {
    let mut child = wrapper
        .arg("hold")
        .args(specs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .start();
    let started = Instant::now();
    let status = wait_timeout(&mut child, T, "netscene hold");
    assert!(status.success(), "netscene hold {specs:?}: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a short-lived process, not {:?}",
        started.elapsed()
    );
    child.id()
}

/// The records about `port`, as `(event, record)`.
fn about(records: &[Value], port: u16) -> Vec<(String, &Value)> {
    records
        .iter()
        .filter(|r| r["lport"] == port)
        .map(|r| (r["event"].as_str().unwrap_or("").to_owned(), r))
        .collect()
}

fn events(records: &[(String, &Value)]) -> Vec<String> {
    records.iter().map(|(e, _)| e.clone()).collect()
}

#[test]
fn a_process_that_exits_at_once_is_named_in_every_record_of_its_ports() {
    let dir = TempDir::new();
    let name = format!("aud-{}", std::process::id() % 100_000);
    let exe = dir.exe(NETSCENE, &name);
    let (tcp, udp) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let specs = [
        format!("tcp-listen=127.0.0.1:{tcp}"),
        format!("udp-bind=127.0.0.1:{udp}"),
    ];

    let audit = Bnetstat::start(&["audit", "--json"]);
    let pid = flash(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe),
        &specs,
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = audit.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let records = out.json_lines();

    let tcp_records = about(&records, tcp);
    let udp_records = about(&records, udp);
    assert_eq!(
        events(&tcp_records),
        ["listen", "stop_listen"],
        "{records:?}"
    );
    assert_eq!(events(&udp_records), ["bind", "close"], "{records:?}");
    let exe = exe.to_str().expect("utf-8 path");
    let mut cmdline = vec![exe.to_owned(), "hold".to_owned()];
    cmdline.extend(specs.iter().cloned());
    for (event, r) in tcp_records.iter().chain(&udp_records) {
        let proto = if r["lport"] == tcp { "tcp" } else { "udp" };
        assert_eq!(r["proto"], proto, "{event}: {r}");
        assert_eq!(r["pid"], pid, "{event}: {r}");
        assert_eq!(r["ppid"], std::process::id(), "{event}: {r}");
        assert_eq!(r["exe"], exe, "{event}: {r}");
        assert_eq!(r["cmdline"], serde_json::json!(cmdline), "{event}: {r}");
        assert_eq!(r["comm"], name.as_str(), "{event}: {r}");
        assert_eq!(
            (r["uid"].as_u64(), r["user"].as_str()),
            (Some(65534), Some("nobody"))
        );
        assert_eq!(r["existing"], false);
        assert!(
            r["time"]
                .as_str()
                .is_some_and(|t| t.len() == 30 && t.ends_with('Z')),
            "RFC 3339 with ns: {r}"
        );
    }
    for (event, r) in [&tcp_records[1], &udp_records[1]] {
        let ms = r["open_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{event} has open_ms: {r}"));
        assert!(ms < 2000.0, "{event}: open {ms} ms");
    }
}

/// A child cgroup of the cgroup v2 root, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    rel: String,
}

impl Cgroup {
    fn new() -> Cgroup {
        let mounts = fs::read_to_string("/proc/self/mounts").expect("mounts");
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("cgroup v2 is mounted");
        let rel = format!("/bnetstat-audit-{}", std::process::id());
        let dir = root.join(&rel[1..]);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup { dir, rel }
    }

    fn procs(&self) -> String {
        self.dir.join("cgroup.procs").display().to_string()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

#[test]
fn records_name_the_network_namespace_and_the_cgroup_the_process_acted_in() {
    let dir = TempDir::new();
    let exe = dir.exe(NETSCENE, &format!("audns-{}", std::process::id() % 100_000));
    let ns = NetNs::new();
    let cgroup = Cgroup::new();
    let (in_ns, in_cgroup) = (free_port("127.0.0.1"), free_port("127.0.0.1"));

    let audit = Bnetstat::start(&["audit", "--json"]);
    let ns_pid = flash(
        &mut ns.command(&exe),
        &[format!("tcp-listen=127.0.0.1:{in_ns}")],
    );
    // The shell moves itself into the cgroup, then becomes netscene.
    let cg_pid = flash(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && exec \"$0\" \"$@\"",
                cgroup.procs()
            ))
            .arg(&exe),
        &[format!("udp-bind=127.0.0.1:{in_cgroup}")],
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = audit.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let records = out.json_lines();

    let ns_records = about(&records, in_ns);
    assert_eq!(
        events(&ns_records),
        ["listen", "stop_listen"],
        "{records:?}"
    );
    for (event, r) in &ns_records {
        assert_eq!(r["netns"], ns.inode(), "{event}: {r}");
        assert_eq!(r["pid"], ns_pid, "{event}: {r}");
        assert_eq!(r["exe"], exe.to_str().expect("utf-8"), "{event}: {r}");
    }
    let cg_records = about(&records, in_cgroup);
    assert_eq!(events(&cg_records), ["bind", "close"], "{records:?}");
    for (event, r) in &cg_records {
        assert_eq!(r["cgroup"], cgroup.rel.as_str(), "{event}: {r}");
        assert_eq!(r["pid"], cg_pid, "{event}: {r}");
        assert_eq!(r["container"], Value::Null);
    }
}

/// Runs `audit --expect` over `specs` opened by `exe`; its exit status and
/// records.
fn audit_expecting(rules: &str, exe: &Path, specs: &[String]) -> (bool, String, Vec<Value>) {
    let dir = TempDir::new();
    let list = dir.path().join("expected");
    fs::write(&list, rules).expect("write expect file");
    let list = list.to_str().expect("utf-8");
    let audit = Bnetstat::start(&[
        "audit",
        "--json",
        "--expect",
        list,
        "--fail-on-unexpected",
        "--duration",
        "3",
    ]);
    flash(&mut Command::new(exe), specs);
    let out = audit.wait();
    (out.status.success(), out.stderr.clone(), out.json_lines())
}

#[test]
fn expect_flags_an_unexpected_listener_and_fail_on_unexpected_exits_non_zero() {
    let dir = TempDir::new();
    let exe = dir.exe(NETSCENE, &format!("audex-{}", std::process::id() % 100_000));
    let (allowed, rogue) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let path = exe.to_str().expect("utf-8");
    // Everything on the host is expected but the rogue port, so other
    // tests' listeners cannot make the check fail.
    let rules = format!(
        "{path} tcp {allowed}\n* tcp 0-{}\n* tcp {}-65535\n* udp *\n",
        rogue - 1,
        rogue + 1
    );
    let (ok, stderr, records) = audit_expecting(
        &rules,
        &exe,
        &[
            format!("tcp-listen=127.0.0.1:{allowed}"),
            format!("tcp-listen=127.0.0.1:{rogue}"),
        ],
    );
    assert!(!ok, "a rogue listener fails the check: {stderr}");
    assert!(stderr.contains("unexpected"), "{stderr}");
    let flag = |port, event: &str| {
        about(&records, port)
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, r)| r["unexpected"].clone())
    };
    assert_eq!(
        flag(rogue, "listen"),
        Some(Value::Bool(true)),
        "{records:?}"
    );
    assert_eq!(
        flag(allowed, "listen"),
        Some(Value::Bool(false)),
        "{records:?}"
    );
    // Closing a port is never what the list speaks of.
    assert_eq!(flag(rogue, "stop_listen"), Some(Value::Bool(false)));

    let (ok, stderr, records) =
        audit_expecting(&rules, &exe, &[format!("tcp-listen=127.0.0.1:{allowed}")]);
    assert!(ok, "only expected listeners: {stderr}");
    assert_eq!(about(&records, allowed).len(), 2, "{records:?}");
}

#[test]
fn a_bad_expect_file_is_one_line_naming_the_line() {
    let dir = TempDir::new();
    let list = dir.path().join("expected");
    fs::write(&list, "sshd tcp 22\nnginx sctp 80\n").expect("write");
    let out = Command::new(bnetstat_tests::bnetstat_bin())
        .args(["audit", "--expect"])
        .arg(&list)
        .output()
        .expect("run bnetstat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("line 2: unknown proto \"sctp\""),
        "{stderr}"
    );
}

/// The ports of `comm`'s `listen` records in a JSON-lines file (other
/// tests' processes may have used the same ports meanwhile).
fn listens_in(path: &Path, comm: &str) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|r| r["event"] == "listen" && r["comm"] == comm)
        .filter_map(|r| r["lport"].as_u64())
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {T:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reopens_the_output_and_sigterm_loses_nothing_already_captured() {
    let dir = TempDir::new();
    let comm = format!("audlog-{}", std::process::id() % 100_000);
    let exe = dir.exe(NETSCENE, &comm);
    let log = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let audit = Bnetstat::start(&["audit", "--json", "--output", log.to_str().expect("utf-8")]);
    let listen = |port: u16| {
        flash(
            &mut Command::new(&exe),
            &[format!("tcp-listen=127.0.0.1:{port}")],
        )
    };
    let ports: Vec<u16> = (0..3).map(|_| free_port("127.0.0.1")).collect();

    listen(ports[0]);
    wait_for("first record in the log", || {
        listens_in(&log, &comm).contains(&u64::from(ports[0]))
    });
    fs::rename(&log, &rotated).expect("rotate");
    audit.signal(libc::SIGHUP);
    // Re-opened: a new file at the old path, where the next record goes.
    wait_for("a new log after SIGHUP", || log.exists());
    listen(ports[1]);
    wait_for("a record in the new log", || {
        listens_in(&log, &comm).contains(&u64::from(ports[1]))
    });
    listen(ports[2]);
    // At once: what the kernel captured before SIGTERM must still be written.
    audit.signal(libc::SIGTERM);
    let out = audit.wait();
    assert!(out.status.success(), "{}", out.stderr);

    let (old, new) = (listens_in(&rotated, &comm), listens_in(&log, &comm));
    assert!(old.contains(&u64::from(ports[0])), "{old:?}");
    for port in [ports[1], ports[2]] {
        assert!(new.contains(&u64::from(port)), "port {port} in {new:?}");
        assert!(
            !old.contains(&u64::from(port)),
            "port {port} after rotation in {old:?}"
        );
    }
    assert!(!new.contains(&u64::from(ports[0])));
}

#[test]
fn serve_writes_the_audit_log_beside_its_metrics() {
    let dir = TempDir::new();
    let comm = format!("audsrv-{}", std::process::id() % 100_000);
    let exe = dir.exe(NETSCENE, &comm);
    let log = dir.path().join("audit.jsonl");
    let metrics = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    // Picked before: `free_port` listens, and serve would record it.
    let port = free_port("127.0.0.1");
    let serve = Bnetstat::start(&[
        "serve",
        "--metrics",
        &metrics,
        "--output",
        log.to_str().expect("utf-8"),
    ]);
    let pid = flash(
        &mut Command::new(&exe),
        &[format!("tcp-listen=127.0.0.1:{port}")],
    );
    wait_for("the listener's records in the log", || {
        listens_in(&log, &comm).contains(&u64::from(port))
    });
    serve.signal(libc::SIGTERM);
    let out = serve.wait();
    assert!(out.status.success(), "{}", out.stderr);
    let records: Vec<Value> = fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let ours = about(&records, port);
    assert_eq!(events(&ours), ["listen", "stop_listen"], "{records:?}");
    for (event, r) in &ours {
        assert_eq!(r["pid"], pid, "{event}: {r}");
        assert_eq!(r["exe"], exe.to_str().expect("utf-8"), "{event}: {r}");
    }
}
