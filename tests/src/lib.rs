//! Helpers for integration tests that run the real `bnetstat` against the
//! real kernel. Tests panic with a message on any failure: a kernel side
//! that cannot load fails the test and says why, it never skips it.
//!
//! The kernel is shared with every other test and with the host, so each
//! test uses its own port and processes and looks only at those.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    net::{TcpListener, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod ss;

/// The `bnetstat` under test: `$BNETSTAT_BIN` (set by `cargo xtask test`),
/// else the debug build next to this test binary.
pub fn bnetstat_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("BNETSTAT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let guess = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("bnetstat"));
    match guess {
        Some(path) if path.exists() => path,
        _ => panic!("bnetstat binary not found: run the tests with `cargo xtask test`"),
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bnetstat-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create temp dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The executable `src` under the name `name`, so processes started
    /// from it have `name` as their `comm`. A hard link where it can be: a
    /// copy is open for writing for a moment, and a child another test
    /// thread forks meanwhile keeps it open, so exec'ing the copy then
    /// fails with "Text file busy".
    pub fn exe(&self, src: impl AsRef<Path>, name: &str) -> PathBuf {
        assert!(name.len() <= 15, "comm is at most 15 bytes: {name}");
        let dst = self.0.join(name);
        if fs::hard_link(src.as_ref(), &dst).is_ok() {
            return dst;
        }
        fs::copy(src.as_ref(), &dst).unwrap_or_else(|e| {
            panic!("copy {} to {}: {e}", src.as_ref().display(), dst.display())
        });
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).expect("chmod exe");
        dst
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Starting a process from an executable a test just copied.
pub trait Start {
    /// Spawns, retrying while the executable is "busy": a copy just written
    /// by this process can still be open in a child that another test
    /// thread forked meanwhile, until that child execs.
    fn start(&mut self) -> Child;
}

impl Start for Command {
    fn start(&mut self) -> Child {
        for _ in 0..100 {
            match self.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    thread::sleep(Duration::from_millis(20));
                }
                other => return other.unwrap_or_else(|e| panic!("spawn {self:?}: {e}")),
            }
        }
        panic!("{self:?} stayed busy")
    }
}

/// A port free right now for TCP and UDP on both loopback addresses (the
/// kernel picks it, bound on `addr`). All four, because tests filter rows
/// by port number alone and run at once: a port one test holds for UDP, or
/// on the other family, must not be another's.
pub fn free_port(addr: &str) -> u16 {
    loop {
        let l = TcpListener::bind((addr, 0)).unwrap_or_else(|e| panic!("bind {addr}:0: {e}"));
        let port = l.local_addr().expect("local_addr").port();
        let free = ["127.0.0.1", "::1"].into_iter().all(|other| {
            UdpSocket::bind((other, port)).is_ok()
                && (other == addr || TcpListener::bind((other, port)).is_ok())
        });
        if free {
            return port;
        }
    }
}

/// Reads lines from `out` until one equals `want`; panics after `timeout`.
pub fn wait_for_line(out: ChildStdout, want: &str, timeout: Duration) -> ChildStdout {
    let (tx, rx) = mpsc::channel();
    let wanted = want.to_owned();
    thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) if line.trim_end() == wanted => {
                    let _ = tx.send(Some(reader.into_inner()));
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(Some(out)) => out,
        Ok(None) => panic!("output ended before {want:?}"),
        Err(_) => panic!("no {want:?} within {timeout:?}"),
    }
}

/// Waits for `child` to exit, killing it and panicking after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `CLOCK_BOOTTIME` now, in ns: the clock of bnetstat's `ts_ns`.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A running `bnetstat`, its stdout going to a file.
pub struct Bnetstat {
    child: Child,
    stdout: PathBuf,
    stderr: mpsc::Receiver<String>,
    _dir: TempDir,
}

/// What a stopped `bnetstat` left.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Stdout as JSON lines; panics on a line that is not JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// How long bnetstat may take to load its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Bnetstat {
    /// Starts `bnetstat ARGS` and waits until it says it is tracing.
    /// Panics with bnetstat's own words when it cannot start.
    pub fn start(args: &[&str]) -> Bnetstat {
        let dir = TempDir::new();
        let stdout = dir.path().join("stdout");
        let mut child = Command::new(bnetstat_bin())
            .args(args)
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bnetstat");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("Tracing") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let status = wait_timeout(&mut child, Duration::from_secs(5), "bnetstat");
                    panic!(
                        "bnetstat {args:?} did not start tracing ({status}): {}",
                        seen.join(" | ")
                    );
                }
            }
        }
        Bnetstat {
            child,
            stdout,
            stderr: rx,
            _dir: dir,
        }
    }

    /// Sends SIGINT, waits for bnetstat to exit and returns what it printed.
    pub fn stop(self) -> Output {
        self.stop_with(libc::SIGINT)
    }

    /// Sends `signal`, waits for bnetstat to exit and returns what it printed.
    pub fn stop_with(self, signal: libc::c_int) -> Output {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        self.wait()
    }

    /// Sends `sig` to bnetstat.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Waits for bnetstat to exit by itself.
    pub fn wait(mut self) -> Output {
        let status = wait_timeout(&mut self.child, Duration::from_secs(30), "bnetstat");
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        Output {
            status,
            stdout: fs::read_to_string(&self.stdout).expect("read stdout"),
            stderr: stderr.join("\n"),
        }
    }
}

/// `bnetstat ARGS` run to completion; panics unless it succeeds; its
/// stdout as JSON lines.
pub fn bnetstat_json(args: &[&str]) -> Vec<Value> {
    let out = Command::new(bnetstat_bin())
        .args(args)
        .output()
        .expect("run bnetstat");
    assert!(
        out.status.success(),
        "bnetstat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A `netscene hold` process: its sockets live until it is dropped.
pub struct Holder(Child);

impl Holder {
    /// Runs `cmd hold SPECS...` and waits until its sockets are open.
    pub fn start(mut cmd: Command, specs: &[String]) -> Holder {
        let mut child = cmd
            .arg("hold")
            .args(specs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .start();
        let _stdout = wait_for_line(
            child.stdout.take().expect("stdout"),
            "ready",
            Duration::from_secs(20),
        );
        Holder(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing its stdin is its signal to close everything and exit.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Transitions grouped by socket id, each socket's in the order received.
pub fn by_socket(events: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut socks: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for ev in events {
        let sock = ev["sock"]
            .as_str()
            .unwrap_or_else(|| panic!("no sock in {ev}"));
        socks.entry(sock.to_owned()).or_default().push(ev);
    }
    socks
}

/// `"OLD -> NEW"` for each transition.
pub fn transitions(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} -> {}",
                e["old_state"].as_str().unwrap_or("?"),
                e["new_state"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A network namespace of the test's own (`bnst-<pid>-<n>`, loopback up),
/// deleted with everything in it when dropped, even when the test fails.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bnst-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // From here on Drop cleans up.
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode number, as bnetstat reports it.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(format!("/run/netns/{}", self.name))
            .expect("netns file")
            .ino()
    }

    /// `ip -n NAME ARGS`; panics on failure; stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip -n NAME -j ARGS`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let out = run_ok(Command::new("ip").args(["-n", &self.name, "-j"]).args(args));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }

    /// `PROGRAM ARGS` run inside the namespace, not waited for.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `bnetstat ARGS` run to completion inside the namespace; panics
    /// unless it succeeds with nothing on stderr.
    pub fn bnetstat(&self, args: &[&str]) -> String {
        let out = self
            .command(bnetstat_bin())
            .args(args)
            .output()
            .expect("run ip netns exec bnetstat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "bnetstat {args:?} in {} ({}): {stderr}",
            self.name,
            out.status
        );
        String::from_utf8(out.stdout).expect("bnetstat prints UTF-8")
    }

    /// [`NetNs::bnetstat`] with `--json`, one value per line.
    pub fn bnetstat_json(&self, args: &[&str]) -> Vec<Value> {
        let mut args = args.to_vec();
        args.push("--json");
        self.bnetstat(&args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its interfaces, routes and veth
        // ends (and so their peers elsewhere).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` has `veth_a` with
/// `10.<net>.0.1/24` and `fd<net>::1/64`, `b` has `veth_b` with the `.2` and
/// `::2` addresses. IPv6 addresses skip duplicate detection so they are
/// usable at once.
pub struct VethPair {
    pub a: NetNs,
    pub b: NetNs,
}

/// The name of each veth end, inside its own namespace.
pub const VETH_A: &str = "bnst-a";
pub const VETH_B: &str = "bnst-b";

impl VethPair {
    pub fn new(net: u8) -> VethPair {
        let (a, b) = (NetNs::new(), NetNs::new());
        a.ip(&[
            "link",
            "add",
            VETH_A,
            "type",
            "veth",
            "peer",
            "name",
            VETH_B,
            "netns",
            b.name(),
        ]);
        for (ns, dev, host) in [(&a, VETH_A, 1), (&b, VETH_B, 2)] {
            ns.ip(&["addr", "add", &format!("10.{net}.0.{host}/24"), "dev", dev]);
            ns.ip(&[
                "addr",
                "add",
                &format!("fd{net:02x}::{host}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        VethPair { a, b }
    }
}

/// Runs `cmd` to completion; panics with its stderr unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
