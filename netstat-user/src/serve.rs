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
    net::TcpListener,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use netstat_common::{AF_INET, AF_INET6};

use crate::{
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
/// of events (an audit log, say) is one more field and one more line in
/// [`Consumers::apply`].
struct Consumers {
    /// The live table: sockets by protocol and state.
    model: Model,
    /// Totals since start: transitions, opens, resets, retransmits, events.
    counters: Counters,
}

impl Consumers {
    fn apply(&mut self, event: &Event) {
        self.model.apply(event);
        self.counters.apply(event);
    }
}

/// Serves metrics on `listener` until SIGINT or SIGTERM.
pub fn run(kernel: &mut Kernel, listener: TcpListener) -> Result<()> {
    let units = Units::read()?;
    let mut consumers = Consumers {
        model: seeded(kernel)?,
        counters: Counters::default(),
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
        kernel.drain(|record| {
            // A record this build cannot read says nothing about the table.
            if let Ok(event) = decode(record) {
                consumers.apply(&event);
            }
        });
        if stop {
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
    let scope = seed::Scope {
        protos: vec![Proto::Tcp, Proto::Udp],
        families: vec![AF_INET, AF_INET6],
        all_netns: true,
    };
    let mut model = Model::default();
    for (cookie, sock) in seed::take(kernel, clock::boottime_ns(), &scope)? {
        model.seed(cookie, sock);
    }
    Ok(model)
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
