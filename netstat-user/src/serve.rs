//! `bnetstat serve`: continuous tracing, for days. Keeps the live table of
//! every network namespace and running totals of events, and serves them
//! as Prometheus metrics over HTTP.
//!
//! One thread owns the table: it drains the kernel, hands each decoded
//! event to every one of its [`Consumers`], and every [`REFRESH`] renders
//! the metrics into the page the HTTP thread serves. Nothing it keeps
//! grows with time: closed rows leave the table, `TIME_WAIT` rows expire,
//! the totals have a fixed shape and the page is replaced whole.

use std::{
    io,
    net::TcpListener,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    audit::{self, Recording},
    clock,
    decode::{Event, decode},
    http::{self, Page},
    kernel::Kernel,
    model::Model,
    seed, signals,
    sockdiag::Proto,
    stats::Counters,
    usage::Units,
    views::metrics,
};

/// How often the metrics are rendered afresh: a scrape sees the state of
/// at most this long ago.
const REFRESH: Duration = Duration::from_millis(250);
/// The shortest time between two re-seeds after lost events.
const RESYNC_EVERY: Duration = Duration::from_secs(60);

/// Everything a decoded event is handed to, in this order. A new consumer
/// of events is one more field and one more line in [`Consumers::apply`].
struct Consumers<'a> {
    /// The live table: sockets by protocol and state.
    model: Model,
    /// Totals since start: transitions, opens, resets, retransmits, events.
    counters: Counters,
    /// The audit log, with `--output`.
    audit: Option<Recording<'a>>,
}

impl Consumers<'_> {
    fn apply(&mut self, event: &Event) -> io::Result<()> {
        self.model.apply(event);
        self.counters.apply(event);
        match &mut self.audit {
            Some(log) => log.event(event),
            None => Ok(()),
        }
    }
}

/// Serves metrics on `listener` until SIGINT or SIGTERM; with `audit`,
/// writes its log too.
pub fn run(
    kernel: &mut Kernel,
    listener: TcpListener,
    audit: Option<&audit::Options>,
) -> Result<()> {
    let units = Units::read()?;
    let now = clock::boottime_ns();
    let socks = seed::take(
        kernel,
        now,
        &seed::Scope::everywhere(&[Proto::Tcp, Proto::Udp]),
    )?;
    // The log is a file: nothing is written to stdout.
    let mut nowhere = io::sink();
    let log = match audit {
        Some(opts) => Some(Recording::start(opts, &mut nowhere, &socks, now)?),
        None => None,
    };
    let mut consumers = Consumers {
        model: model_of(socks),
        counters: Counters::default(),
        audit: log,
    };
    let page = Page::default();
    let at = listener
        .local_addr()
        .context("reading the metrics address")?;
    let mut resync = Resync::new(Instant::now());
    let mut render = |consumers: &mut Consumers, kernel: &mut Kernel| -> Result<()> {
        let lost = kernel.lost()?;
        if resync.due(lost.total(), Instant::now()) {
            consumers.model = seeded(kernel)?;
        }
        let text = metrics::render(&consumers.model, &consumers.counters, lost, &units.now()?);
        *page.lock().unwrap_or_else(PoisonError::into_inner) = text;
        Ok(())
    };
    // The first scrape already sees the seeded table.
    render(&mut consumers, kernel)?;
    http::spawn(listener, Arc::clone(&page)).context("starting the metrics thread")?;
    eprintln!(
        "Tracing sockets of every network namespace; metrics on http://{at}/metrics. Ctrl-C to stop."
    );
    let mut next = Instant::now() + REFRESH;
    loop {
        // Drain once more after a stop request: what the kernel already
        // delivered reaches every consumer.
        let stop = signals::stop_requested();
        let mut written = Ok(());
        kernel.drain(|record| {
            // A record this build cannot read says nothing about the table.
            if written.is_ok()
                && let Ok(event) = decode(record)
            {
                written = consumers.apply(&event);
            }
        });
        written.context("writing the audit log")?;
        if let Some(log) = &mut consumers.audit {
            log.tick()?;
        }
        if stop {
            if let Some(log) = consumers.audit.take() {
                log.finish()?;
            }
            return Ok(());
        }
        consumers.model.prune(clock::boottime_ns());
        if Instant::now() >= next {
            render(&mut consumers, kernel)?;
            next = Instant::now() + REFRESH;
        }
        kernel
            .wait(next.saturating_duration_since(Instant::now()))
            .context("waiting for events")?;
    }
}

/// The table of every TCP and UDP socket of every network namespace, as
/// the kernel has it now.
fn seeded(kernel: &mut Kernel) -> Result<Model> {
    Ok(model_of(seed::take(
        kernel,
        clock::boottime_ns(),
        &seed::Scope::everywhere(&[Proto::Tcp, Proto::Udp]),
    )?))
}

fn model_of(socks: Vec<(u64, crate::model::Sock)>) -> Model {
    let mut model = Model::default();
    for (cookie, sock) in socks {
        model.seed(cookie, sock);
    }
    model
}

/// When to take the table afresh. A lost close would leave its row in the
/// table for ever (and in the gauges), so after events are lost the table
/// is seeded again, at most once per [`RESYNC_EVERY`]. The counters stay:
/// what they counted happened.
struct Resync {
    /// Events lost as of the last seed.
    lost: u64,
    at: Instant,
}

impl Resync {
    fn new(now: Instant) -> Resync {
        Resync { lost: 0, at: now }
    }

    /// Whether to seed again now, with `lost` events lost since start;
    /// when it says so, it counts the seed as taken.
    fn due(&mut self, lost: u64, now: Instant) -> bool {
        let due = lost > self.lost && now.duration_since(self.at) >= RESYNC_EVERY;
        if due {
            (self.lost, self.at) = (lost, now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_reseeds_once_and_not_more_than_once_a_minute() {
        let start = Instant::now();
        let mut r = Resync::new(start);
        assert!(!r.due(0, start + RESYNC_EVERY * 5), "nothing lost");
        assert!(!r.due(3, start + RESYNC_EVERY / 2), "too soon after start");
        assert!(r.due(3, start + RESYNC_EVERY));
        assert!(
            !r.due(3, start + RESYNC_EVERY * 3 / 2),
            "that loss is mended"
        );
        assert!(
            !r.due(4, start + RESYNC_EVERY * 3 / 2),
            "too soon after the last"
        );
        assert!(r.due(4, start + RESYNC_EVERY * 2));
    }
}
