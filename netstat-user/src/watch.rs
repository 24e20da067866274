//! `bnetstat watch`: the live table on a full screen. This is the loop that
//! feeds it (kernel events, keys, resizes, the clock) and owns the
//! terminal; what the screen shows is `views::watch`.

use std::{
    io::{self, IsTerminal as _, Stdout},
    panic,
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use crossterm::{
    cursor::{Hide, Show},
    event::{self, Event, KeyEventKind},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};

use crate::{
    clock, connections,
    decode::{self, decode},
    kernel::Kernel,
    model::{Change, Model},
    names::SystemNames,
    seed, signals,
    views::{
        table,
        watch::{Flow, Stats, WatchState, render},
    },
};

/// How `bnetstat watch` runs.
pub struct Options {
    /// Which sockets it shows at all.
    pub select: table::Options,
    /// `-n`.
    pub numeric: bool,
}

/// Shortest time between two frames: a flood of events redraws at most 20
/// times a second.
const FRAME: Duration = Duration::from_millis(50);
/// Longest time between two frames, so ages and the event rate move.
const TICK: Duration = Duration::from_secs(1);

/// Seeds the table, then shows it live until `q`, Ctrl-C or SIGTERM.
pub fn run(kernel: &mut Kernel, opts: &Options) -> Result<()> {
    if !io::stdout().is_terminal() {
        bail!("watch needs a terminal; `bnetstat -c` prints the table to a pipe");
    }
    let mut model = Model::default();
    let scope = connections::scope(&opts.select);
    for (cookie, sock) in seed::take(kernel, clock::boottime_ns(), &scope)? {
        model.seed(cookie, sock);
    }
    let names = SystemNames::new(opts.numeric);
    let mut state = WatchState::new(opts.select.clone());
    let mut screen = Screen::enter().context("setting up the terminal")?;
    // Dropping `screen` restores the terminal, also when this fails.
    show(
        kernel,
        &mut model,
        &mut state,
        &names,
        &opts.select,
        &mut screen.terminal,
    )
}

/// The loop: drain the kernel, read keys, redraw when something changed.
fn show(
    kernel: &mut Kernel,
    model: &mut Model,
    state: &mut WatchState,
    names: &SystemNames,
    select: &table::Options,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
) -> Result<()> {
    let mut rate = EventRate::new(clock::boottime_ns());
    let mut last_frame: Option<Instant> = None;
    let mut frame_us = None;
    let mut dirty = true;
    // Names come in the background; a later frame shows them. Asked for
    // every row once, then for the addresses events bring: asking for all
    // of 100,000 rows again each frame cost more than the frame.
    let selection = table::Selection::new(select);
    names.prefetch(
        model
            .rows()
            .filter(|(b, _)| selection.picks(b))
            .flat_map(|(_, s)| [s.laddr, s.raddr]),
        Duration::ZERO,
    );
    let mut fresh = Vec::new();
    loop {
        if signals::stop_requested() {
            return Ok(());
        }
        // Input wakes the loop at once; kernel events wait for the next
        // frame, which is as soon as they could be shown.
        let mut urgent = false;
        if event::poll(FRAME).context("reading the terminal")? {
            loop {
                match event::read().context("reading the terminal")? {
                    Event::Key(key) if key.kind != KeyEventKind::Release => {
                        match state.key(key, model, clock::boottime_ns()) {
                            Flow::Quit => return Ok(()),
                            Flow::Redraw => urgent = true,
                            Flow::Same => {}
                        }
                    }
                    Event::Resize(..) => urgent = true,
                    _ => {}
                }
                if !event::poll(Duration::ZERO).context("reading the terminal")? {
                    break;
                }
            }
        }
        let now = clock::boottime_ns();
        let mut events = 0;
        kernel.drain(|record| {
            // A record this build cannot read says nothing about the table.
            if let Ok(event) = decode(record) {
                events += 1;
                fresh.extend(addresses(&event));
                state.note(model.apply(&event), now);
            }
        });
        for (cookie, sock) in model.prune(now) {
            state.note(Change::Closed(cookie, sock), now);
        }
        dirty |= events > 0;
        dirty |= state.expire(now);
        dirty |= rate.add(events, now);
        let since = last_frame.map(|t| t.elapsed());
        let due = since.is_none_or(|s| (dirty && s >= FRAME) || s >= TICK);
        if !(urgent || due) {
            continue;
        }
        let stats = Stats {
            events_per_sec: rate.per_second(),
            lost: kernel.lost()?.total(),
            frame_us,
        };
        let started = Instant::now();
        names.prefetch(fresh.drain(..), Duration::ZERO);
        let mut shown = None;
        terminal
            .draw(|frame| {
                let area = frame.area();
                shown = Some(render(
                    area,
                    frame.buffer_mut(),
                    model,
                    state,
                    names,
                    stats,
                    now,
                ));
            })
            .context("drawing")?;
        state.shown(shown.unwrap_or_default());
        frame_us = u64::try_from(started.elapsed().as_micros()).ok();
        last_frame = Some(Instant::now());
        dirty = false;
    }
}

/// The addresses an event names, for the name cache.
fn addresses(event: &decode::Event) -> impl Iterator<Item = std::net::IpAddr> {
    let (a, b) = match event {
        decode::Event::StateChange(ev) => (Some(ev.laddr), Some(ev.raddr)),
        decode::Event::Udp(ev) => (Some(ev.addr), None),
        _ => (None, None),
    };
    a.into_iter().chain(b)
}

/// Events per second, counted over whole seconds.
struct EventRate {
    /// Start of the second being counted (`CLOCK_BOOTTIME` ns).
    start_ns: u64,
    count: u64,
    /// The count of the last whole second.
    last: u64,
}

impl EventRate {
    fn new(now_ns: u64) -> EventRate {
        EventRate {
            start_ns: now_ns,
            count: 0,
            last: 0,
        }
    }

    /// Counts `n` events at `now_ns`; says whether a second ended, which
    /// changes the rate shown.
    fn add(&mut self, n: u64, now_ns: u64) -> bool {
        const SECOND: u64 = 1_000_000_000;
        let elapsed = now_ns.saturating_sub(self.start_ns);
        let ended = elapsed >= SECOND;
        if ended {
            // A loop stalled past the next second saw nothing in it.
            self.last = if elapsed < 2 * SECOND { self.count } else { 0 };
            self.start_ns = now_ns - elapsed % SECOND;
            self.count = 0;
        }
        self.count += n;
        ended
    }

    fn per_second(&self) -> u64 {
        self.last
    }
}

/// Whether the terminal is in raw mode on the alternate screen, so it is
/// restored exactly once whichever way bnetstat leaves.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// The terminal in full-screen mode, restored when dropped.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // A panic message printed on the alternate screen in raw mode
            // is lost when the screen goes: restore first, then report.
            let report = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                restore();
                report(info);
            }));
        });
        enable_raw_mode()?;
        ENTERED.store(true, Ordering::SeqCst);
        let entered = execute!(io::stdout(), EnterAlternateScreen, Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor, if
/// bnetstat had taken the terminal.
fn restore() {
    if ENTERED.swap(false, Ordering::SeqCst) {
        // Nothing better to do on failure: the process is leaving.
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_rate_is_the_count_of_the_last_whole_second() {
        let mut r = EventRate::new(10 * S);
        assert!(!r.add(5, 10 * S + S / 2));
        assert!(!r.add(7, 10 * S + S - 1));
        assert_eq!(r.per_second(), 0, "no whole second yet");
        assert!(r.add(3, 11 * S + 1), "a second ended");
        assert_eq!(r.per_second(), 12);
        assert!(r.add(0, 12 * S + 5));
        assert_eq!(r.per_second(), 3);
    }

    #[test]
    fn a_stall_longer_than_a_second_reports_no_events_for_it() {
        let mut r = EventRate::new(0);
        r.add(100, S / 2);
        assert!(r.add(0, 5 * S + S / 2));
        assert_eq!(r.per_second(), 0);
    }
}
