//! `bnetstat`'s connection table against `ss` on a busy scene: listeners and
//! established pairs over IPv4 and IPv6, UDP sockets bound and connected,
//! processes started before and after bnetstat, and a twin listener in
//! another network namespace that must not show.

use std::{
    io::Write as _,
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use bnetstat_tests::{
    Holder, NetNs, Start, TempDir, bnetstat_bin, bnetstat_json, free_port,
    ss::{Row, assert_same, from_bnetstat, ss},
};

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const T: Duration = Duration::from_secs(20);

struct Ports {
    tcp4: u16,
    tcp6: u16,
    udp4: u16,
    udp6: u16,
    udp_client: u16,
}

impl Ports {
    fn pick() -> Ports {
        Ports {
            tcp4: free_port("127.0.0.1"),
            tcp6: free_port("::1"),
            udp4: free_port("127.0.0.1"),
            udp6: free_port("::1"),
            udp_client: free_port("127.0.0.1"),
        }
    }

    fn all(&self) -> Vec<u16> {
        self.typed().into_iter().map(|(_, port)| port).collect()
    }

    /// Each port with the protocol the scene uses it for.
    fn typed(&self) -> Vec<(&'static str, u16)> {
        vec![
            ("tcp", self.tcp4),
            ("tcp6", self.tcp6),
            ("udp", self.udp4),
            ("udp6", self.udp6),
            ("udp", self.udp_client),
        ]
    }
}

/// The scene's servers, clients, and the twin in another namespace.
fn start_scene(dir: &TempDir, p: &Ports, ns: &NetNs) -> (Holder, Holder, Holder) {
    let server = Holder::start(
        Command::new(dir.exe(NETSCENE, "tbl-server")),
        &[
            format!("tcp-listen=127.0.0.1:{}", p.tcp4),
            format!("tcp-listen=[::1]:{}", p.tcp6),
            format!("udp-bind=127.0.0.1:{}", p.udp4),
            format!("udp-bind=[::1]:{}", p.udp6),
        ],
    );
    let client = Holder::start(
        Command::new(dir.exe(NETSCENE, "tbl-client")),
        &[
            format!("tcp-connect=127.0.0.1:{}", p.tcp4),
            format!("tcp-connect=[::1]:{}", p.tcp6),
            format!(
                "udp-connect=127.0.0.1:{}>127.0.0.1:{}",
                p.udp_client, p.udp4
            ),
        ],
    );
    let twin = Holder::start(
        ns.command(dir.exe(NETSCENE, "tbl-twin")),
        &[format!("tcp-listen=127.0.0.1:{}", p.tcp4)],
    );
    // Let the server accept, so ss sees an owner on every accepted socket.
    thread::sleep(Duration::from_millis(300));
    (server, client, twin)
}

fn rows_on(rows: impl IntoIterator<Item = Row>, ports: &[(&str, u16)]) -> Vec<Row> {
    rows.into_iter().filter(|r| r.uses_any(ports)).collect()
}

#[test]
fn the_table_matches_ss_row_for_row() {
    let dir = TempDir::new();
    let ns = NetNs::new();
    let p = Ports::pick();
    let (server, client, _twin) = start_scene(&dir, &p, &ns);

    let ours = rows_on(
        bnetstat_json(&["-tuanp", "--json"])
            .iter()
            .map(from_bnetstat),
        &p.typed(),
    );
    let theirs = rows_on(ss(), &p.typed());
    // 2 listeners + 2 established pairs + 2 bound + 1 connected UDP.
    assert_eq!(ours.len(), 9, "{ours:#?}");
    assert_same(&ours, &theirs);
    assert!(ours.iter().any(|r| r.pids.contains(&server.pid())));
    assert!(ours.iter().any(|r| r.pids.contains(&client.pid())));
}

/// Reads complete tables (JSON lines ended by an empty line) from a file
/// bnetstat keeps appending to.
fn tables(text: &str) -> Vec<Vec<Row>> {
    let complete = match text.rfind("\n\n") {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    complete
        .split("\n\n")
        .map(|t| {
            t.lines()
                .filter(|l| !l.is_empty())
                .map(|l| from_bnetstat(&serde_json::from_str(l).expect("JSON line")))
                .collect()
        })
        .collect()
}

fn wait_for_tables(path: &std::path::Path, n: usize) -> Vec<Vec<Row>> {
    let deadline = Instant::now() + T;
    loop {
        let all = tables(&std::fs::read_to_string(path).unwrap_or_default());
        if all.len() >= n {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} tables within {T:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_interval_table_follows_the_scene_from_events_alone() {
    let dir = TempDir::new();
    let ns = NetNs::new();
    let p = Ports::pick();
    let (server, client, _twin) = start_scene(&dir, &p, &ns);

    // The late process's ports, known now so the table can be limited to
    // the test's own sockets: the shared host may hold many others.
    let (late_tcp, late_udp) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let mut ports = p.all();
    ports.extend([late_tcp, late_udp]);
    let mut args: Vec<String> = ["-tuanp", "--json", "0.5"].map(String::from).to_vec();
    args.extend(
        ports
            .iter()
            .flat_map(|p| ["--port".to_owned(), p.to_string()]),
    );

    // strace records every socket bnetstat opens and every file it reads.
    let trace = dir.path().join("strace");
    let stdout = dir.path().join("tables");
    let mut bnetstat = Stopper(
        Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=socket,openat", "-o"])
            .arg(&trace)
            .arg(bnetstat_bin())
            .args(&args)
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .start(),
    );
    let first = wait_for_tables(&stdout, 1);
    assert_same(
        &rows_on(first[0].clone(), &p.typed()),
        &rows_on(ss(), &p.typed()),
    );

    // Change the scene: the client goes away (its connections close), and a
    // process started after bnetstat opens a new listener and a UDP socket.
    drop(client);
    let late = Holder::start(
        Command::new(dir.exe(NETSCENE, "tbl-late")),
        &[
            format!("tcp-listen=127.0.0.1:{late_tcp}"),
            format!("udp-bind=127.0.0.1:{late_udp}"),
        ],
    );
    thread::sleep(Duration::from_millis(500));
    let seen = wait_for_tables(&stdout, 1).len();
    let tables = wait_for_tables(&stdout, seen + 1);
    let theirs = ss();
    let mut typed = p.typed();
    typed.extend([("tcp", late_tcp), ("udp", late_udp)]);
    let ours = rows_on(tables[seen].clone(), &typed);
    assert_same(&ours, &rows_on(theirs, &typed));
    assert!(
        ours.iter().any(|r| r.state == "TIME_WAIT"),
        "closed connections linger: {ours:#?}"
    );
    assert!(
        ours.iter()
            .any(|r| r.lport == late_tcp && r.pids.contains(&late.pid()))
    );
    assert!(
        ours.iter()
            .any(|r| r.lport == late_udp && r.pids.contains(&late.pid()))
    );
    drop(server);

    let child = child_of(bnetstat.0.id()).expect("bnetstat under strace");
    // SAFETY: signalling bnetstat, strace's child, to stop.
    unsafe { libc::kill(child, libc::SIGINT) };
    let status = bnetstat.0.wait().expect("wait");
    assert!(status.success(), "{status}");
    let calls = std::fs::read_to_string(&trace).expect("strace output");
    assert!(!calls.contains("/proc/net/"), "read /proc/net:\n{calls}");
    let dumps = calls
        .lines()
        .filter(|l| l.contains("NETLINK_SOCK_DIAG"))
        .count();
    assert_eq!(
        dumps, 4,
        "one sock_diag dump per family and protocol, at start only:\n{calls}"
    );
    assert!(tables.len() > seen, "several tables were printed");
}

/// bnetstat, or strace and the bnetstat under it, killed if the test
/// fails first.
struct Stopper(Child);

impl Drop for Stopper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Some(child) = child_of(self.0.id()) {
                // SAFETY: signalling our own grandchild, a real pid.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The process strace runs.
fn child_of(pid: u32) -> Option<libc::pid_t> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
}

#[test]
fn other_namespaces_show_only_when_asked() {
    let dir = TempDir::new();
    let ns = NetNs::new();
    let port = free_port("127.0.0.1");
    let _twin = Holder::start(
        ns.command(dir.exe(NETSCENE, "ns-twin")),
        &[format!("tcp-listen=127.0.0.1:{port}")],
    );
    let port_arg = port.to_string();
    let list = |extra: &[&str]| {
        bnetstat_json(&[&["-tanp", "--json", "--port", &port_arg], extra].concat())
    };
    assert_eq!(list(&[]).len(), 0, "not in bnetstat's own namespace");
    let all = list(&["--all-netns"]);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["netns"], ns.inode());
    assert_eq!(all[0]["comm"], "ns-twin");
    let out = Command::new(bnetstat_bin())
        .args(["-tanl", "--all-netns", "--port", &port.to_string()])
        .output()
        .expect("bnetstat");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port}")))
        .expect("the row");
    assert!(
        row.starts_with(ns.name()),
        "the namespace's name leads the row: {text}"
    );
}

#[test]
fn unix_listeners_are_listed_with_their_owner() {
    let dir = TempDir::new();
    let path = dir.path().join("listener.sock");
    let holder = Holder::start(
        Command::new(dir.exe(NETSCENE, "unix-holder")),
        &[format!("unix-listen={}", path.display())],
    );
    let rows = bnetstat_json(&["-xlp", "--json"]);
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| r["laddr"].as_str() == path.to_str())
        .collect();
    assert_eq!(ours.len(), 1, "{rows:#?}");
    assert_eq!(ours[0]["state"], "LISTENING");
    assert_eq!(ours[0]["pid"], holder.pid());
    assert_eq!(ours[0]["comm"], "unix-holder");
    // ss agrees on the inode.
    let ss = Command::new("ss").args(["-xlnH"]).output().expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    let line = ss
        .lines()
        .find(|l| l.contains(path.to_str().expect("utf8")))
        .expect("ss row");
    let inode = ours[0]["inode"].to_string();
    assert!(line.split_whitespace().any(|f| f == inode), "{line}");
}

#[test]
fn a_process_that_execs_holding_its_listener_shows_under_its_new_name() {
    let dir = TempDir::new();
    let port = free_port("127.0.0.1");
    let out = dir.path().join("tables");
    let mut bnetstat = Command::new(bnetstat_bin())
        .args(["-tlnp", "--json", "0.3", "--port", &port.to_string()])
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .start();
    wait_for_json_tables(&out, 1);
    // Listens as `tbl-execer`, then becomes `cat` with the listener open.
    let holder = Holder::start(
        Command::new(dir.exe(NETSCENE, "tbl-execer")),
        &[
            format!("tcp-listen=127.0.0.1:{port}"),
            "exec=/bin/cat".into(),
        ],
    );
    let deadline = Instant::now() + T;
    let owner = loop {
        let tables = wait_for_json_tables(&out, 1);
        let last = tables.last().cloned().unwrap_or_default();
        let row = last.iter().find(|r| r["lport"] == port).cloned();
        if let Some(row) = row.filter(|r| r["comm"] == "cat") {
            break row;
        }
        assert!(Instant::now() < deadline, "no row named cat: {last:?}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(owner["pid"], holder.pid());
    let _ = bnetstat.kill();
    let _ = bnetstat.wait();
}

/// The complete JSON tables in `path` so far, at least `n` of them.
fn wait_for_json_tables(path: &std::path::Path, n: usize) -> Vec<Vec<serde_json::Value>> {
    let deadline = Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
        let tables: Vec<Vec<serde_json::Value>> = complete
            .split("\n\n")
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_str(l).expect("JSON line"))
                    .collect()
            })
            .collect();
        if tables.len() >= n {
            return tables;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} tables within {T:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_redisplay_shows_each_sockets_queues_as_they_are_now() {
    let dir = TempDir::new();
    // Bound at once to ports the kernel picks: no window in which another
    // test takes them.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tcp = listener.local_addr().expect("addr").port();
    let udp = receiver.local_addr().expect("addr").port();
    let out = dir.path().join("tables");
    let _bnetstat = Stopper(
        Command::new(bnetstat_bin())
            .args(["-tuan", "--json", "0.3", "--port", &tcp.to_string()])
            .args(["--port", &udp.to_string()])
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .start(),
    );
    let first = wait_for_json_tables(&out, 1);
    // Another test may hold the same port number in the other protocol.
    let queues = |rows: &[serde_json::Value], proto: &str, lport: u16, rport: u16| {
        rows.iter()
            .find(|r| r["proto"] == proto && r["lport"] == lport && r["rport"] == rport)
            .map(|r| (r["recv_q"].clone(), r["send_q"].clone()))
    };
    assert_eq!(
        queues(&first[0], "tcp", tcp, 0),
        Some((0.into(), 128.into()))
    );

    // After the first table: 1234 bytes the server has not read, a
    // connection the listener has not accepted, and a datagram waiting.
    let mut client = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    let (_server, _) = listener.accept().expect("accept");
    let _waiting = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    client.write_all(&[7; 1234]).expect("send");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender.send_to(&[7; 100], ("127.0.0.1", udp)).expect("send");
    // What ss reads for the datagram: its buffer's size, not its length.
    let udp_q = ss_recv_q(udp);
    assert!(udp_q > 100, "{udp_q}");

    let client_port = client.local_addr().expect("addr").port();
    let deadline = Instant::now() + T;
    let table = loop {
        let tables = wait_for_json_tables(&out, 1);
        let last = tables.last().cloned().unwrap_or_default();
        if queues(&last, "tcp", tcp, client_port).is_some_and(|(r, _)| r == 1234) {
            break last;
        }
        assert!(Instant::now() < deadline, "no unread bytes shown: {last:?}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(queues(&table, "tcp", tcp, 0), Some((1.into(), 128.into())));
    assert_eq!(
        queues(&table, "udp", udp, 0),
        Some((udp_q.into(), 0.into()))
    );
}

/// Recv-Q of the UDP socket bound to `port`, as `ss` shows it.
fn ss_recv_q(port: u16) -> u64 {
    let out = Command::new("ss")
        .args(["-uanH", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().expect("ss shows the socket");
    // `-u` alone prints no Netid column: State, then Recv-Q.
    line.split_whitespace()
        .nth(1)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("a Recv-Q in {line}"))
}

#[test]
fn a_redisplay_with_timers_shows_a_keepalive_set_after_the_first_table() {
    const HEADER: &str = "Active Internet connections";
    let dir = TempDir::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let out = dir.path().join("tables");
    let _bnetstat = Stopper(
        Command::new(bnetstat_bin())
            .args(["-tno", "--port", &port.to_string(), "0.3"])
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .start(),
    );
    let deadline = Instant::now() + T;
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains(HEADER)
    {
        assert!(Instant::now() < deadline, "no first table");
        thread::sleep(Duration::from_millis(50));
    }

    // Made after the first table, with its keepalive due in 100 s.
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (_server, _) = listener.accept().expect("accept");
    keepalive(&client, 100);
    let endpoint = format!("127.0.0.1:{} ", client.local_addr().expect("addr").port());
    let line = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        // The last complete table: the one before the one being written.
        let last = text.rsplit(HEADER).nth(1).unwrap_or_default();
        let row = last
            .lines()
            .find(|l| l.contains(&endpoint) && l.contains("keepalive ("));
        if let Some(row) = row {
            break row.to_owned();
        }
        assert!(Instant::now() < deadline, "no keepalive timer:\n{text}");
        thread::sleep(Duration::from_millis(100));
    };
    let left: f64 = line
        .split("keepalive (")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("seconds left in {line}"));
    assert!((90.0..=100.0).contains(&left), "{line}");
}

/// Turns keepalive on for `stream`, first probe after `idle_s` seconds.
fn keepalive(stream: &TcpStream, idle_s: libc::c_int) {
    use std::os::fd::AsRawFd as _;
    let fd = stream.as_raw_fd();
    for (level, option, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_s),
    ] {
        // SAFETY: an int option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
    }
}
