//! `bnetstat top`: the busiest TCP connections and processes by bytes and
//! by new connections, every interval, like tcptop.
//!
//! Sockets that already exist are seeded from the kernel, so a long
//! transfer started before bnetstat shows too. Each interval ends by
//! reading the byte totals the kernel keeps per followed socket (one map
//! lookup each, no record per `sendmsg`); connections that closed meanwhile
//! bring their final totals in their change to `CLOSE`.

use std::{
    io::{self, IsTerminal as _, Write},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use netstat_common::{AF_INET, AF_INET6};

use crate::{
    clock,
    decode::{Event, Family, TcpState, decode},
    kernel::Kernel,
    seed, signals,
    sockdiag::Proto,
    trace::{Filter, LostReport},
    traffic::{Conn, Sort, Traffic},
    views::top::{self as view, Frame},
};

/// How `top` runs.
pub struct Options {
    pub json: bool,
    pub filter: Filter,
    pub sort: Sort,
    /// Rows per table.
    pub rows: usize,
    /// Length of an interval.
    pub interval: Duration,
    /// Stop after this many intervals.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Never clear the screen between intervals.
    pub no_clear: bool,
}

/// Longest wait for events before checking stop conditions.
const TICK: Duration = Duration::from_millis(100);
/// Moves the cursor home and clears the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Prints every interval until a stop condition or a signal; a stop in the
/// middle of an interval still prints what it saw so far.
pub fn run(kernel: &mut Kernel, opts: &Options, out: &mut impl Write) -> Result<()> {
    let mut traffic = Traffic::new(opts.filter.clone());
    for (sock, s) in seed::take(kernel, clock::boottime_ns(), &scope(opts.filter.family))? {
        if s.proto == Proto::Tcp && s.state != TcpState::Listen {
            let conn = Conn {
                family: s.family,
                laddr: s.laddr,
                lport: s.lport,
                raddr: s.raddr,
                rport: s.rport,
                owner: s.owner,
            };
            traffic.seed(sock, conn);
        }
    }
    let clear = !opts.no_clear && !opts.json && io::stdout().is_terminal();
    if !clear {
        eprintln!("Tracing TCP traffic. Ctrl-C to stop.");
    }
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let (mut shown, mut undecodable) = (0u64, 0u64);
    let mut lost = LostReport::default();
    let mut start = Instant::now();
    loop {
        let end = deadline.map_or(start + opts.interval, |d| d.min(start + opts.interval));
        let stopped = loop {
            kernel.drain(|record| match decode(record) {
                Ok(Event::StateChange(ev)) => traffic.apply(&ev),
                Ok(_) => {}
                Err(_) => undecodable += 1,
            });
            if signals::stop_requested() {
                break true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break deadline.is_some_and(|d| end >= d);
            }
            kernel.wait(left.min(TICK)).context("waiting for events")?;
        };
        let followed: Vec<u64> = traffic.followed().collect();
        traffic.read(&kernel.byte_totals(followed)?);
        let interval = traffic.take(opts.sort);
        let now = Instant::now();
        let frame = Frame {
            rows: opts.rows,
            wall_ns: clock::boot_to_wall_ns() + i128::from(clock::boottime_ns()),
            ts_ns: clock::boottime_ns(),
            seconds: now.duration_since(start).as_secs_f64(),
        };
        start = now;
        let text = if opts.json {
            view::json(&interval, &frame) + "\n"
        } else if clear {
            format!("{CLEAR}{}", view::render(&interval, &frame))
        } else {
            view::render(&interval, &frame) + "\n"
        };
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            // A reader that went away (`| head`) is a normal end.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        lost.report(kernel.lost()?, opts.json, out)?;
        shown += 1;
        if stopped || opts.count.is_some_and(|c| shown >= c) {
            break;
        }
    }
    if undecodable > 0 {
        eprintln!("bnetstat: {undecodable} kernel records could not be decoded");
    }
    Ok(())
}

/// The sockets worth seeding: TCP, of the families shown.
fn scope(family: Option<Family>) -> seed::Scope {
    let families = match family {
        Some(Family::Inet) => vec![AF_INET],
        Some(Family::Inet6) => vec![AF_INET6],
        None => vec![AF_INET, AF_INET6],
    };
    seed::Scope {
        protos: vec![Proto::Tcp],
        families,
        all_netns: false,
    }
}
