//! Load for `cargo xtask bench`: loopback TCP churn whose transitions it can
//! count exactly, and connections held open in bulk. It lives next to
//! `netscene` because it is the same kind of thing, a scene actor, and so is
//! built in release with it; xtask stays a task runner.
//!
//! ```text
//! loadgen churn PORT THREADS SECONDS [RATE]
//! loadgen hold PORT COUNT
//! ```
//! `churn` starts a server, a second `loadgen` process listening on
//! 127.0.0.1:PORT, and from THREADS client threads opens a connection to
//! it, sends a byte, reads the server's byte and EOF, and closes, again and
//! again for SECONDS (with RATE, at most RATE connections a second in all,
//! evenly paced); THREADS server threads accept, read the byte, answer
//! and close first. Client and server are separate processes so that an
//! owner taken from whatever task a softirq interrupted (on loopback, the
//! peer) shows as wrong. It prints one JSON object: `pid` (the client's),
//! `server_pid`, `port`, `connections` (completed), `errors` (attempts that
//! failed part-way), `seconds`, and `transitions`, the state changes it
//! caused on PORT: 10 per completed connection (client `CLOSE -> SYN_SENT
//! -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE`, server `LISTEN ->
//! SYN_RECV -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE`) and 2 for
//! the listener. It is exact only when `errors` is 0.
//!
//! `hold` listens on 127.0.0.1:PORT, opens COUNT connections to itself,
//! prints `ready`, and holds both ends until its stdin closes. Every socket
//! is set to reset on close, so a scene of 100,000 connections leaves no
//! TIME_WAIT behind to swell the next table.

use std::{
    io::{BufRead as _, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Command, ExitCode, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

/// State changes of one loopback connection whose server closes first.
const TRANSITIONS_PER_CONNECTION: u64 = 10;
/// How many missed slots a paced thread makes up after falling behind.
const CATCH_UP: u32 = 4;
/// The listener's `CLOSE -> LISTEN` and `LISTEN -> CLOSE`.
const LISTENER_TRANSITIONS: u64 = 2;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("'{s}' is not a number"))
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["churn", port, threads, seconds, ref rate @ ..] if rate.len() <= 1 => {
            let threads = number(threads)?;
            if threads == 0 {
                return Err("THREADS must be at least 1".into());
            }
            let pace = match rate.first() {
                Some(r) => match number(r)? {
                    0 => return Err("RATE must be at least 1".into()),
                    r => Some(Duration::from_secs_f64(threads as f64 / r as f64)),
                },
                None => None,
            };
            churn(
                port_arg(port)?,
                threads,
                Duration::from_secs(number(seconds)?),
                pace,
            )
        }
        // Started by `churn`, never by hand.
        ["serve", port, threads] => serve(port_arg(port)?, number(threads)?),
        ["hold", port, count] => hold(port_arg(port)?, number(count)?),
        _ => {
            Err("usage: loadgen churn PORT THREADS SECONDS [RATE] | loadgen hold PORT COUNT".into())
        }
    }
}

fn port_arg(s: &str) -> Result<SocketAddr, String> {
    let port: u16 = s.parse().map_err(|_| format!("'{s}' is not a port"))?;
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Churns for `length`; with `pace`, each thread starts a connection at
/// most once per `pace`.
fn churn(
    at: SocketAddr,
    threads: u64,
    length: Duration,
    pace: Option<Duration>,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding myself: {e}"))?;
    let mut server = Command::new(exe)
        .args(["serve", &at.port().to_string(), &threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    let mut ready = String::new();
    if let Some(out) = server.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut ready);
    }
    if ready.trim() != "listening" {
        let _ = server.kill();
        let _ = server.wait();
        return Err("the server did not start".into());
    }
    let connections = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut next = Instant::now();
                while start.elapsed() < length {
                    if let Some(pace) = pace {
                        let now = Instant::now();
                        thread::sleep(next.saturating_duration_since(now));
                        // Late slots are made up, but at most a few.
                        let floor = now.checked_sub(pace * CATCH_UP).unwrap_or(now);
                        next = next.max(floor) + pace;
                    }
                    match once(at) {
                        Ok(()) => connections.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    // Its stdin closing tells the server to close its listener and exit.
    drop(server.stdin.take());
    let status = server
        .wait()
        .map_err(|e| format!("waiting for the server: {e}"))?;
    if !status.success() {
        return Err(format!("the server failed ({status})"));
    }
    let connections = connections.load(Ordering::Relaxed);
    println!(
        "{{\"pid\":{},\"server_pid\":{},\"port\":{},\"connections\":{connections},\"errors\":{},\"seconds\":{seconds:.3},\"transitions\":{}}}",
        std::process::id(),
        server.id(),
        at.port(),
        errors.load(Ordering::Relaxed),
        TRANSITIONS_PER_CONNECTION * connections + LISTENER_TRANSITIONS
    );
    Ok(())
}

/// Accepts, reads a byte, answers and closes first, until stdin closes.
fn serve(at: SocketAddr, threads: u64) -> Result<(), String> {
    let listener = TcpListener::bind(at).map_err(|e| format!("listen on {at}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // Ends when the listener is shut down below.
                while let Ok((mut conn, _)) = listener.accept() {
                    let mut byte = [0u8];
                    // A failed serve shows as the client's error.
                    let _ = conn
                        .read_exact(&mut byte)
                        .and_then(|()| conn.write_all(b"a"));
                }
            });
        }
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        // Wakes the acceptors: on Linux, shutting a listener down makes a
        // blocked accept() fail, and moves it LISTEN -> CLOSE.
        // SAFETY: the fd is the listener's, open for the whole scope.
        unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    });
    Ok(())
}

/// One connection: a byte each way, the server closes first.
fn once(at: SocketAddr) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(at)?;
    conn.write_all(b"q")?;
    let mut reply = Vec::with_capacity(1);
    conn.read_to_end(&mut reply)?;
    if reply != b"a" {
        return Err(std::io::Error::other("short reply"));
    }
    Ok(())
}

fn hold(at: SocketAddr, count: u64) -> Result<(), String> {
    raise_fd_limit()?;
    let listener = TcpListener::bind(at).map_err(|e| format!("listen on {at}: {e}"))?;
    let held = thread::scope(|s| {
        // Accepting alongside the connects keeps the backlog from filling.
        let acceptor = s.spawn(|| {
            (0..count)
                .map(|_| listener.accept().map(|(c, _)| reset_on_close(c)))
                .collect::<std::io::Result<Vec<_>>>()
        });
        let connected = (0..count)
            .map(|_| TcpStream::connect(at).map(reset_on_close))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| format!("connect {at}: {e}"));
        let accepted = acceptor
            .join()
            .map_err(|_| "acceptor panicked".to_owned())?
            .map_err(|e| format!("accept on {at}: {e}"));
        Ok::<_, String>((connected?, accepted?))
    })?;
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop(held);
    Ok(())
}

/// A reset instead of a FIN on close: no TIME_WAIT left behind.
fn reset_on_close(conn: TcpStream) -> TcpStream {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd and a linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    conn
}

/// Two fds per held connection: the soft limit goes up to the hard one.
fn raise_fd_limit() -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "raising the open-file limit: {}",
            std::io::Error::last_os_error()
        ))
    }
}
