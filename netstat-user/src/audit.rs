//! `bnetstat audit`: one record per port event, with everything known of
//! the process that caused it, to the terminal or appended to a file.
//!
//! Events flow kernel -> `decode` -> `procs` (who each pid is) and
//! `records` (port events) -> here, where each record is told its process,
//! user and cgroup, checked against `--expect`, and written by
//! `views::audit`.

use std::{
    collections::HashMap,
    io::{self, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netstat_common::{AF_INET, AF_INET6};

use crate::{
    cgroups::CgroupNames,
    clock,
    decode::{Event, decode},
    expect::{Expected, Opened},
    kernel::{self, Kernel},
    logfile::LogFile,
    names,
    procs::Processes,
    records::{Record, Recorder},
    seed, signals,
    sockdiag::Proto,
    trace::LostReport,
    views::audit::{self as view, Entry},
};

/// How `audit` runs.
pub struct Options {
    pub json: bool,
    /// Record outgoing connects too.
    pub connects: bool,
    /// Append to this file instead of writing to stdout.
    pub output: Option<PathBuf>,
    pub expect: Option<Expected>,
    /// Exit non-zero when a record broke `expect`.
    pub fail_on_unexpected: bool,
    pub duration: Option<Duration>,
    /// Stop after this many records.
    pub count: Option<u64>,
}

/// How often lost events are checked and reported.
const LOST_CHECK: Duration = Duration::from_secs(1);
/// Longest wait for events before checking signals and deadlines.
const TICK: Duration = Duration::from_millis(100);

/// Where records go.
enum Out<'a, W> {
    Stdout(&'a mut W),
    File(LogFile),
}

impl<W: Write> Out<'_, W> {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::Stdout(w) => *w,
            Out::File(f) => f,
        }
    }

    /// Nothing accepted so far is lost after this.
    fn sync(&mut self) -> io::Result<()> {
        match self {
            Out::Stdout(w) => w.flush(),
            Out::File(f) => f.sync(),
        }
    }
}

/// Records port events until a stop condition or a signal; fails at the
/// end when `--fail-on-unexpected` and a record broke `--expect`.
pub fn run(kernel: &mut Kernel, opts: &Options, stdout: &mut impl Write) -> Result<()> {
    let mut out = match &opts.output {
        Some(path) => {
            Out::File(LogFile::open(path).with_context(|| format!("opening {}", path.display()))?)
        }
        None => Out::Stdout(stdout),
    };
    let mut audit = Auditor {
        opts,
        procs: Processes::default(),
        recorder: Recorder::new(opts.connects),
        users: names::users(),
        cgroups: CgroupNames::new(kernel::cgroup2_root().ok()),
        boot_to_wall: clock::boot_to_wall_ns(),
        written: 0,
        unexpected: 0,
    };
    // Processes first: the sockets found next are owned by them.
    for (pid, p) in seed::processes() {
        audit.procs.seed(pid, p);
    }
    let now = clock::boottime_ns();
    let scope = seed::Scope {
        protos: vec![Proto::Tcp, Proto::Udp],
        families: vec![AF_INET, AF_INET6],
        all_netns: true,
    };
    for (cookie, sock) in seed::take(kernel, now, &scope)? {
        if let Some(record) = audit.recorder.existing(cookie, now, &sock) {
            audit.write(&record, out.writer())?;
        }
    }
    out.sync()?;
    eprintln!("Tracing port events. Ctrl-C to stop.");

    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut lost = LostReport::default();
    let mut next_lost_check = Instant::now() + LOST_CHECK;
    let result: io::Result<()> = loop {
        // One drain after a stop request: what the kernel delivered is kept.
        let stop = signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d);
        if signals::take_hangup()
            && let Out::File(f) = &mut out
        {
            f.reopen().context("re-opening the output after SIGHUP")?;
        }
        let mut written = Ok(());
        kernel.drain(|record| {
            if written.is_ok() && !audit.full() {
                written = audit.event(record, out.writer());
            }
        });
        if let Err(e) = written.and_then(|()| out.writer().flush()) {
            break Err(e);
        }
        if stop || audit.full() {
            break Ok(());
        }
        if Instant::now() >= next_lost_check {
            lost.report(kernel.lost()?, opts.json, &mut out.writer())?;
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
    for record in audit.recorder.flush() {
        if audit.full() {
            break;
        }
        audit.write(&record, out.writer())?;
    }
    lost.report(kernel.lost()?, opts.json, &mut out.writer())?;
    out.sync().context("writing the last records")?;
    if opts.expect.is_some() {
        eprintln!(
            "bnetstat: {} records, {} unexpected",
            audit.written, audit.unexpected
        );
        if opts.fail_on_unexpected && audit.unexpected > 0 {
            bail!(
                "records that broke the expected listeners: {}",
                audit.unexpected
            );
        }
    }
    Ok(())
}

/// What the run keeps between events.
struct Auditor<'a> {
    opts: &'a Options,
    procs: Processes,
    recorder: Recorder,
    users: HashMap<u32, String>,
    cgroups: CgroupNames,
    boot_to_wall: i128,
    written: u64,
    unexpected: u64,
}

impl Auditor<'_> {
    /// Whether `--count` is reached.
    fn full(&self) -> bool {
        self.opts.count.is_some_and(|c| self.written >= c)
    }

    fn event(&mut self, raw: &[u8], out: &mut dyn Write) -> io::Result<()> {
        // A record this build cannot read has nothing to audit.
        let Ok(event) = decode(raw) else {
            return Ok(());
        };
        self.procs.apply(&event);
        if matches!(event, Event::StateChange(_) | Event::Udp(_)) {
            for record in self.recorder.apply(&event) {
                if self.full() {
                    break;
                }
                self.write(&record, out)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, record: &Record, out: &mut dyn Write) -> io::Result<()> {
        let owner = record.owner.as_ref();
        let process = owner.and_then(|o| self.procs.get(o.pid));
        // The cgroup it acted in; for one learned at start-up, the one
        // `/proc` named then.
        let cgroup = owner
            .and_then(|o| self.cgroups.path(o.cgroup))
            .or_else(|| process.and_then(|p| p.cgroup.clone()));
        let unexpected = match &self.opts.expect {
            Some(expect) if record.action.opens_port() => !expect.allows(&Opened {
                proto: record.proto,
                family: record.family,
                port: record.lport,
                comm: owner.map(|o| o.comm.as_str()),
                exe: process.and_then(|p| p.exe.as_deref()),
            }),
            _ => false,
        };
        let entry = Entry {
            record,
            wall_ns: self.boot_to_wall + i128::from(record.ts_ns),
            process,
            user: owner
                .and_then(|o| self.users.get(&o.uid))
                .map(String::as_str),
            cgroup: cgroup.as_deref(),
            unexpected,
        };
        if self.opts.json {
            view::write_json(out, &entry)?;
        } else {
            writeln!(out, "{}", view::line(&entry))?;
        }
        self.written += 1;
        self.unexpected += u64::from(unexpected);
        Ok(())
    }
}
