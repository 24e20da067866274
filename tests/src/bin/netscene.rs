//! A scene actor for the integration tests: a TCP server or client in its
//! own process, so owners can be told apart. Copied to a unique name per
//! test, its `comm` names its role.
//!
//! ```text
//! netscene listen ADDR PORT [--accept N] [--close-first] [--delay-ms MS] [--linger-ms MS] [--exchange N]
//! netscene connect ADDR PORT [--count N] [--wait-eof | --fill | --exchange N | --paced BYTES --ticks N --tick-ms MS]
//! netscene hold SPEC...
//! netscene udp ADDR PORT [--count N] [--interval-ms MS]
//! ```
//! `listen` prints `listening` once it listens. Each accepted connection is
//! left unread for `--delay-ms`, read to EOF, held `--linger-ms`, then
//! closed; with `--close-first` it is closed at once instead. `connect`
//! sends a line and closes; with `--wait-eof` it reads until the server
//! closes, then closes; with `--fill` it writes until the server's window
//! is full and closes without waiting, so its FIN goes out only when the
//! server reads. With `--exchange N` (both ends) the client sends N bytes,
//! the server reads them all and sends N back, the client reads them and
//! closes first, then the server closes at EOF: a known transfer each way.
//! With `--paced BYTES` the client sends BYTES every `--tick-ms`, on a
//! fixed schedule from its start, `--ticks` times, then closes: a known rate.
//! `udp` sends
//! `--count` datagrams of 100 bytes, `--interval-ms` apart: known traffic
//! for the interface counters.
//!
//! `hold` opens every socket its SPECs name, prints `ready`, and holds them
//! until its stdin closes. SPECs: `tcp-listen=ADDR:PORT` (accepted
//! connections are held until the peer closes, then closed),
//! `tcp-connect=ADDR:PORT`, `udp-bind=ADDR:PORT`,
//! `udp-connect=ADDR:PORT>ADDR:PORT` (bound, then connected),
//! `unix-listen=PATH`. IPv6 addresses go in brackets. A last
//! `exec=PROGRAM` makes it, once ready, exec PROGRAM (no arguments) with
//! its sockets kept open: a process that changes its name while it holds
//! them.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    thread,
    time::Duration,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netscene: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "hold") {
        return hold(&args[1..]).map_err(|e| e.to_string());
    }
    let [mode, addr, port, flags @ ..] = args.as_slice() else {
        return Err("usage: netscene listen|connect ADDR PORT [flags]".into());
    };
    let addr: IpAddr = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
    let port: u16 = port.parse().map_err(|e| format!("port {port}: {e}"))?;
    let at = SocketAddr::new(addr, port);
    let flag = |name: &str| flags.iter().any(|f| f == name);
    let value = |name: &str, default: u64| -> Result<u64, String> {
        match flags.iter().position(|f| f == name) {
            Some(i) => flags
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number")),
            None => Ok(default),
        }
    };
    match mode.as_str() {
        "listen" if flag("--exchange") => exchange_server(at, value("--exchange", 0)?),
        "connect" if flag("--exchange") => exchange_client(at, value("--exchange", 0)?),
        "connect" if flag("--paced") => paced_client(
            at,
            value("--paced", 0)?,
            value("--ticks", 1)?,
            Duration::from_millis(value("--tick-ms", 100)?),
        ),
        "listen" => listen(
            at,
            value("--accept", 1)?,
            flag("--close-first"),
            (value("--delay-ms", 0)?, value("--linger-ms", 0)?),
        ),
        "connect" => connect(at, value("--count", 1)?, flag("--wait-eof"), flag("--fill")),
        "udp" => udp(at, value("--count", 1)?, value("--interval-ms", 0)?),
        other => return Err(format!("unknown mode {other}")),
    }
    .map_err(|e| e.to_string())
}

fn hold(specs: &[String]) -> std::io::Result<()> {
    let bad = |spec: &str| std::io::Error::other(format!("bad spec {spec}"));
    let addr = |s: &str| s.parse::<SocketAddr>().map_err(|_| bad(s));
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut fds = Vec::new();
    let mut exec = None;
    for spec in specs {
        let (kind, rest) = spec.split_once('=').ok_or_else(|| bad(spec))?;
        match kind {
            "exec" => exec = Some(rest.to_owned()),
            "tcp-listen" => {
                let listener = TcpListener::bind(addr(rest)?)?;
                fds.push(std::os::fd::AsRawFd::as_raw_fd(&listener));
                thread::spawn(move || {
                    for conn in listener.incoming().map_while(Result::ok) {
                        thread::spawn(move || {
                            let mut conn = conn;
                            let _ = std::io::copy(&mut conn, &mut std::io::sink());
                        });
                    }
                });
            }
            "tcp-connect" => held.push(Box::new(TcpStream::connect(addr(rest)?)?)),
            "udp-bind" => held.push(Box::new(UdpSocket::bind(addr(rest)?)?)),
            "unix-listen" => held.push(Box::new(std::os::unix::net::UnixListener::bind(rest)?)),
            "udp-connect" => {
                let (local, remote) = rest.split_once('>').ok_or_else(|| bad(spec))?;
                let socket = UdpSocket::bind(addr(local)?)?;
                socket.connect(addr(remote)?)?;
                held.push(Box::new(socket));
            }
            _ => return Err(bad(spec)),
        }
    }
    println!("ready");
    std::io::stdout().flush()?;
    if let Some(program) = exec {
        use std::os::unix::process::CommandExt as _;
        for fd in fds {
            // SAFETY: clearing FD_CLOEXEC on a descriptor this process holds.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        }
        return Err(std::process::Command::new(program).exec());
    }
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    drop(held);
    Ok(())
}

fn listen(
    at: SocketAddr,
    accept: u64,
    close_first: bool,
    (delay_ms, linger_ms): (u64, u64),
) -> std::io::Result<()> {
    let listener = TcpListener::bind(at)?;
    println!("listening");
    std::io::stdout().flush()?;
    for _ in 0..accept {
        let (mut conn, _) = listener.accept()?;
        if !close_first {
            thread::sleep(Duration::from_millis(delay_ms));
            std::io::copy(&mut conn, &mut std::io::sink())?;
            thread::sleep(Duration::from_millis(linger_ms));
        }
        drop(conn);
    }
    Ok(())
}

fn connect(at: SocketAddr, count: u64, wait_eof: bool, fill: bool) -> std::io::Result<()> {
    for _ in 0..count {
        let mut conn = TcpStream::connect(at)?;
        if wait_eof {
            conn.read_to_end(&mut Vec::new())?;
        } else if fill {
            conn.set_nonblocking(true)?;
            let chunk = [0x42u8; 64 << 10];
            loop {
                match conn.write(&chunk) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    other => other?,
                };
            }
        } else {
            conn.write_all(b"hello\n")?;
        }
    }
    Ok(())
}

/// N bytes in, N bytes out, then waits for the client to close first.
fn exchange_server(at: SocketAddr, n: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind(at)?;
    println!("listening");
    std::io::stdout().flush()?;
    let (mut conn, _) = listener.accept()?;
    read_exactly(&mut conn, n)?;
    write_bytes(&mut conn, n)?;
    // EOF: the client's FIN, so the client is the end that closed first.
    conn.read_to_end(&mut Vec::new())?;
    Ok(())
}

/// N bytes out, N bytes in, then closes.
fn exchange_client(at: SocketAddr, n: u64) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(at)?;
    write_bytes(&mut conn, n)?;
    read_exactly(&mut conn, n)?;
    Ok(())
}

/// `bytes` every `tick`, `ticks` times, on a schedule that catches up
/// after a late wake-up, so the rate holds on a busy machine.
fn paced_client(at: SocketAddr, bytes: u64, ticks: u64, tick: Duration) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(at)?;
    let start = std::time::Instant::now();
    for k in 0..ticks {
        let due = start + tick * u32::try_from(k).unwrap_or(u32::MAX);
        thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        write_bytes(&mut conn, bytes)?;
    }
    Ok(())
}

fn write_bytes(conn: &mut TcpStream, n: u64) -> std::io::Result<()> {
    let chunk = [0x42u8; 8192];
    let mut left = n;
    while left > 0 {
        let len = left.min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..len])?;
        left -= len as u64;
    }
    Ok(())
}

fn read_exactly(conn: &mut TcpStream, n: u64) -> std::io::Result<()> {
    let got = std::io::copy(&mut conn.take(n), &mut std::io::sink())?;
    if got != n {
        return Err(std::io::Error::other(format!("got {got} of {n} bytes")));
    }
    Ok(())
}

fn udp(at: SocketAddr, count: u64, interval_ms: u64) -> std::io::Result<()> {
    let any: IpAddr = if at.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        [0u16; 8].into()
    };
    let sock = UdpSocket::bind((any, 0))?;
    for _ in 0..count {
        sock.send_to(&[0x55; 100], at)?;
        thread::sleep(Duration::from_millis(interval_ms));
    }
    Ok(())
}
