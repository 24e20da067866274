//! `bnetstat [-atulnpeoWb] [INTERVAL]`: the connection table, seeded once
//! from the kernel and then kept current by events. With an interval it is
//! redisplayed from the live model; nothing is read again.

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use netstat_common::{AF_INET, AF_INET6};

use crate::{
    clock,
    decode::{Family, decode},
    kernel::Kernel,
    model::Model,
    names::SystemNames,
    seed, signals,
    sockdiag::Proto,
    views::{table, unix},
};

/// How `bnetstat` lists connections.
pub struct Options {
    pub view: table::Options,
    pub json: bool,
    /// `-n`.
    pub numeric: bool,
    /// Redisplay this often (`-c`, or a trailing number of seconds).
    pub interval: Option<Duration>,
}

/// How long a table may wait for host names before it shows numbers.
const NAME_PATIENCE: Duration = Duration::from_millis(300);
/// Longest wait for events between checks for a stop request.
const TICK: Duration = Duration::from_millis(100);

/// Prints the table once, or every interval until stopped.
pub fn run(kernel: &mut Kernel, opts: &Options, out: &mut impl Write) -> Result<()> {
    let mut model = Model::default();
    let scope = scope(&opts.view);
    let own_netns = seed::own_netns()?;
    for (cookie, sock) in seed::take(kernel, clock::boottime_ns(), &scope)? {
        model.seed(cookie, sock);
    }
    let names = SystemNames::new(opts.numeric);
    let mut reported_lost = 0;
    let mut first = true;
    loop {
        apply_pending(kernel, &mut model);
        model.prune(clock::boottime_ns());
        // The seed read the first table's queues and timers; no event
        // carries them. The walk that reads the queues also finds the
        // `TIME_WAIT` sockets the kernel ended early.
        if !first && opts.view.inet() {
            let others = scope.others()?;
            for (netns, queues) in kernel.queues(&scope.protos, own_netns, &others)? {
                for q in &queues {
                    model.queues(q.sock, q.recv_q, q.send_q);
                }
                if scope.protos.contains(&Proto::Tcp) {
                    model.time_waits_gone(netns, &queues.iter().map(|q| q.sock).collect());
                }
            }
            if opts.view.timers {
                for (cookie, timer) in seed::timers(&scope, &others)? {
                    model.timer(cookie, timer);
                }
            }
        }
        first = false;
        let lost = kernel.lost()?.total();
        if lost > reported_lost {
            eprintln!(
                "bnetstat: {} events lost: the table may be out of date",
                lost - reported_lost
            );
            reported_lost = lost;
        }
        let unix = if opts.view.unix {
            seed::unix(kernel)?
        } else {
            Vec::new()
        };
        match print(&model, &unix, opts, &names, out) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        let Some(interval) = opts.interval else {
            return Ok(());
        };
        let next = Instant::now() + interval;
        loop {
            if signals::stop_requested() {
                return Ok(());
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            kernel.wait(left.min(TICK)).context("waiting for events")?;
            apply_pending(kernel, &mut model);
        }
    }
}

fn print(
    model: &Model,
    unix_rows: &[unix::Row],
    opts: &Options,
    names: &SystemNames,
    out: &mut impl Write,
) -> io::Result<()> {
    let now = clock::boottime_ns();
    let inet = opts.view.inet();
    if !opts.numeric && inet {
        let rows = table::select(model, &opts.view);
        names.prefetch(
            rows.iter().flat_map(|(_, s)| [s.laddr, s.raddr]),
            NAME_PATIENCE,
        );
    }
    let mut text = String::new();
    if opts.json {
        if inet {
            text += &table::json(model, &opts.view, names);
        }
        if opts.view.unix {
            text += &unix::json(unix_rows, &opts.view, names, seed_netns(opts));
        }
        // Redisplayed, tables are told apart by an empty line.
        if opts.interval.is_some() {
            text.push('\n');
        }
    } else {
        if inet {
            text += &table::render(model, &opts.view, names, now);
        }
        if opts.view.unix {
            text += &unix::render(unix_rows, &opts.view, names);
        }
    }
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The sockets a table with `view` can show, and so the ones to dump.
pub fn scope(view: &table::Options) -> seed::Scope {
    let protos = match (view.tcp, view.udp, view.inet()) {
        (_, _, false) => vec![],
        (false, false, true) => vec![Proto::Tcp, Proto::Udp],
        (tcp, udp, true) => [(tcp, Proto::Tcp), (udp, Proto::Udp)]
            .into_iter()
            .filter_map(|(on, p)| on.then_some(p))
            .collect(),
    };
    let families = match view.family {
        Some(Family::Inet) => vec![AF_INET],
        Some(Family::Inet6) => vec![AF_INET6],
        None => vec![AF_INET, AF_INET6],
    };
    seed::Scope {
        protos,
        families,
        all_netns: view.netns.is_none(),
    }
}

/// The namespace UNIX rows come from: bnetstat's own.
fn seed_netns(opts: &Options) -> u32 {
    opts.view
        .netns
        .or_else(|| seed::own_netns().ok())
        .unwrap_or(0)
}

/// Applies every event the kernel has delivered so far.
fn apply_pending(kernel: &mut Kernel, model: &mut Model) {
    kernel.drain(|record| {
        // A record this build cannot read says nothing about the table.
        if let Ok(event) = decode(record) {
            model.apply(&event);
        }
    });
}
