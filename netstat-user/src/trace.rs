//! `bnetstat trace`: every TCP state transition as it happens.

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    clock,
    decode::{Event, Family, Owner, StateChangeEvent, decode},
    kernel::{Kernel, Lost},
    seed, signals,
    views::trace as view,
};

/// Which transitions to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Owner pids; empty means any.
    pub pids: Vec<u32>,
    /// Ports at either end; empty means any.
    pub ports: Vec<u16>,
    /// Only this family, when set.
    pub family: Option<Family>,
}

impl Filter {
    /// Whether `ev` passes. A `--pid` filter drops transitions whose owner is
    /// unknown.
    pub fn matches(&self, ev: &StateChangeEvent) -> bool {
        self.matches_socket(ev.owner.as_ref(), ev.family, ev.lport, ev.rport)
    }

    /// Whether a socket with this owner, family and ports passes.
    pub fn matches_socket(
        &self,
        owner: Option<&Owner>,
        family: Family,
        lport: u16,
        rport: u16,
    ) -> bool {
        (self.pids.is_empty() || owner.is_some_and(|o| self.pids.contains(&o.pid)))
            && (self.ports.is_empty() || self.ports.contains(&lport) || self.ports.contains(&rport))
            && self.family.is_none_or(|f| f == family)
    }
}

/// How `trace` runs.
pub struct Options {
    pub json: bool,
    pub filter: Filter,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after printing this many transitions.
    pub count: Option<u64>,
}

/// How often lost events are checked and reported.
const LOST_CHECK: Duration = Duration::from_secs(1);
/// Longest wait for events before checking stop conditions.
const TICK: Duration = Duration::from_millis(100);

/// Streams transitions to `out` until a stop condition or a signal.
pub fn run(kernel: &mut Kernel, opts: &Options, out: &mut impl Write) -> Result<()> {
    let deadline = opts.duration.map(|d| Instant::now() + d);
    seed::owners(kernel)?;
    eprintln!("Tracing TCP state transitions. Ctrl-C to stop.");
    let mut sink = Sink {
        opts,
        out,
        boot_to_wall: clock::boot_to_wall_ns(),
        printed: 0,
        undecodable: 0,
    };
    if !opts.json {
        writeln!(sink.out, "{}", view::header())?;
    }
    let mut lost = LostReport::default();
    let mut next_lost_check = Instant::now() + LOST_CHECK;
    let result = loop {
        // Drain once more after a stop request: what the kernel already
        // delivered is printed, not dropped.
        let stop = signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d);
        let mut written = Ok(());
        kernel.drain(|record| {
            if written.is_ok() && !sink.full() {
                written = sink.record(record);
            }
        });
        if let Err(e) = written.and_then(|()| sink.out.flush()) {
            break Err(e);
        }
        if stop || sink.full() {
            break Ok(());
        }
        if Instant::now() >= next_lost_check {
            lost.report(kernel.lost()?, opts.json, sink.out)?;
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
    lost.report(kernel.lost()?, opts.json, sink.out)?;
    if sink.undecodable > 0 {
        eprintln!(
            "bnetstat: {} kernel records could not be decoded",
            sink.undecodable
        );
    }
    Ok(())
}

/// Where decoded, filtered transitions go.
struct Sink<'a, W> {
    opts: &'a Options,
    out: &'a mut W,
    boot_to_wall: i128,
    printed: u64,
    undecodable: u64,
}

impl<W: Write> Sink<'_, W> {
    /// Whether `--count` is reached.
    fn full(&self) -> bool {
        self.opts.count.is_some_and(|c| self.printed >= c)
    }

    fn record(&mut self, record: &[u8]) -> io::Result<()> {
        let ev = match decode(record) {
            Ok(Event::StateChange(ev)) => ev,
            Ok(Event::Udp(_) | Event::Tcp(_) | Event::Exec(_) | Event::Proc { .. }) => {
                return Ok(());
            }
            Err(_) => {
                self.undecodable += 1;
                return Ok(());
            }
        };
        if !self.opts.filter.matches(&ev) {
            return Ok(());
        }
        self.printed += 1;
        if self.opts.json {
            view::write_json(self.out, &ev)
        } else {
            writeln!(
                self.out,
                "{}",
                view::line(&ev, self.boot_to_wall + i128::from(ev.ts_ns))
            )
        }
    }
}

/// Reports lost events once each: the count since the last report.
#[derive(Default)]
pub(crate) struct LostReport {
    reported: u64,
}

impl LostReport {
    pub(crate) fn report(
        &mut self,
        lost: Lost,
        json: bool,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let new = lost.total().saturating_sub(self.reported);
        if new == 0 {
            return Ok(());
        }
        self.reported = lost.total();
        eprintln!(
            "bnetstat: {new} events lost (so far: {} with the ring buffer full, {} skipped by the kernel as nested)",
            lost.ring_full, lost.nested
        );
        if json {
            writeln!(out, "{}", view::lost_json(new))?;
            out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use netstat_common::tcp_state;

    use super::*;
    use crate::decode::tests::{bytes_of, raw_state_change};

    fn event() -> StateChangeEvent {
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw_state_change(
            tcp_state::SYN_SENT,
            tcp_state::ESTABLISHED,
        ))) else {
            panic!("decodes")
        };
        ev
    }

    #[test]
    fn an_empty_filter_passes_everything() {
        assert!(Filter::default().matches(&event()));
    }

    #[test]
    fn port_filter_matches_either_end() {
        let ev = event();
        assert!(
            Filter {
                ports: vec![443],
                ..Filter::default()
            }
            .matches(&ev)
        );
        assert!(
            Filter {
                ports: vec![40000],
                ..Filter::default()
            }
            .matches(&ev)
        );
        assert!(
            !Filter {
                ports: vec![80],
                ..Filter::default()
            }
            .matches(&ev)
        );
    }

    #[test]
    fn pid_filter_drops_unknown_owners() {
        let mut ev = event();
        assert!(
            Filter {
                pids: vec![42],
                ..Filter::default()
            }
            .matches(&ev)
        );
        assert!(
            !Filter {
                pids: vec![43],
                ..Filter::default()
            }
            .matches(&ev)
        );
        ev.owner = None;
        assert!(
            !Filter {
                pids: vec![42],
                ..Filter::default()
            }
            .matches(&ev)
        );
    }

    #[test]
    fn family_filter() {
        let ev = event();
        assert!(
            Filter {
                family: Some(Family::Inet),
                ..Filter::default()
            }
            .matches(&ev)
        );
        assert!(
            !Filter {
                family: Some(Family::Inet6),
                ..Filter::default()
            }
            .matches(&ev)
        );
    }

    #[test]
    fn lost_events_are_reported_once_each_and_as_json() {
        let mut report = LostReport::default();
        let mut out = Vec::new();
        let lost = |ring_full, nested| Lost { ring_full, nested };
        report.report(lost(0, 0), true, &mut out).expect("write");
        report.report(lost(3, 2), true, &mut out).expect("write");
        report.report(lost(3, 2), true, &mut out).expect("write");
        report.report(lost(4, 3), true, &mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "{\"lost\":5}\n{\"lost\":2}\n"
        );
    }
}
