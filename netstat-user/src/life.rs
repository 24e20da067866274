//! `bnetstat life`: one line per TCP connection when it ends, like
//! tcplife, with its owner, bytes each way, duration and who closed first.

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    clock,
    decode::{Event, StateChangeEvent, TcpState, decode},
    kernel::Kernel,
    seed, signals,
    trace::{Filter, LostReport},
    views::life as view,
};

/// How `life` runs.
pub struct Options {
    pub json: bool,
    pub filter: Filter,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after printing this many connections.
    pub count: Option<u64>,
}

/// How often lost events are checked and reported.
const LOST_CHECK: Duration = Duration::from_secs(1);
/// Longest wait for events before checking stop conditions.
const TICK: Duration = Duration::from_millis(100);

/// Whether a transition is the end of a connection `life` reports: a
/// listener closing is not one.
pub fn is_end(ev: &StateChangeEvent) -> bool {
    ev.new == TcpState::Close && ev.old != TcpState::Listen && ev.end.is_some()
}

/// Prints connections as they end, until a stop condition or a signal.
pub fn run(kernel: &mut Kernel, opts: &Options, out: &mut impl Write) -> Result<()> {
    let deadline = opts.duration.map(|d| Instant::now() + d);
    seed::owners(kernel)?;
    eprintln!("Tracing TCP connections until they close. Ctrl-C to stop.");
    let boot_to_wall = clock::boot_to_wall_ns();
    if !opts.json {
        writeln!(out, "{}", view::header())?;
    }
    let (mut printed, mut undecodable) = (0u64, 0u64);
    let full = |printed: u64| opts.count.is_some_and(|c| printed >= c);
    let mut lost = LostReport::default();
    let mut next_lost_check = Instant::now() + LOST_CHECK;
    let result: io::Result<()> = loop {
        // Drain once more after a stop request: what the kernel already
        // delivered is printed, not dropped.
        let stop = signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d);
        let mut written = Ok(());
        kernel.drain(|record| {
            if written.is_err() || full(printed) {
                return;
            }
            match decode(record) {
                Ok(Event::StateChange(ev)) if is_end(&ev) && opts.filter.matches(&ev) => {
                    printed += 1;
                    written = if opts.json {
                        writeln!(out, "{}", view::json(&ev))
                    } else {
                        writeln!(out, "{}", view::line(&ev, boot_to_wall))
                    };
                }
                Ok(_) => {}
                Err(_) => undecodable += 1,
            }
        });
        if let Err(e) = written.and_then(|()| out.flush()) {
            break Err(e);
        }
        if stop || full(printed) {
            break Ok(());
        }
        if Instant::now() >= next_lost_check {
            lost.report(kernel.lost()?, opts.json, out)?;
            next_lost_check = Instant::now() + LOST_CHECK;
        }
        let wait = deadline.map_or(TICK, |d| {
            TICK.min(d.saturating_duration_since(Instant::now()))
        });
        kernel.wait(wait).context("waiting for events")?;
    };
    match result {
        // A reader that went away (`| head`) is a normal end.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other?,
    }
    lost.report(kernel.lost()?, opts.json, out)?;
    if undecodable > 0 {
        eprintln!("bnetstat: {undecodable} kernel records could not be decoded");
    }
    Ok(())
}
