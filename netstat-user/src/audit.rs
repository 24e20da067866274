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

use crate::{
    cgroups::CgroupNames,
    clock,
    decode::{Event, decode},
    expect::{Expected, Opened},
    kernel::{self, Kernel, Lost},
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
enum Out<'o> {
    Stdout(&'o mut dyn Write),
    File(LogFile),
}

impl Out<'_> {
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

/// An audit in progress: what it knows of processes and sockets, and where
/// its records go. `audit` drives one; `serve --output` keeps one beside
/// its table.
pub struct Recording<'a> {
    auditor: Auditor<'a>,
    out: Out<'a>,
}

impl<'a> Recording<'a> {
    /// Starts recording to `--output`, or else to `stdout`: learns the
    /// processes running now and records the ports open now (`existing`),
    /// from `socks`, the start-up snapshot.
    pub fn start(
        opts: &'a Options,
        stdout: &'a mut dyn Write,
        socks: &[(u64, crate::model::Sock)],
        now_ns: u64,
    ) -> Result<Recording<'a>> {
        let out = match &opts.output {
            Some(path) => Out::File(
                LogFile::open(path).with_context(|| format!("opening {}", path.display()))?,
            ),
            None => Out::Stdout(stdout),
        };
        let mut auditor = Auditor {
            opts,
            procs: Processes::default(),
            recorder: Recorder::new(opts.connects),
            users: names::users(),
            cgroups: CgroupNames::new(kernel::cgroup2_root().ok()),
            boot_to_wall: clock::boot_to_wall_ns(),
            written: 0,
            unexpected: 0,
        };
        // Processes first: the sockets are owned by them.
        for (pid, p) in seed::processes() {
            auditor.procs.seed(pid, p);
        }
        let mut recording = Recording { auditor, out };
        for (cookie, sock) in socks {
            if let Some(record) = recording.auditor.recorder.existing(*cookie, now_ns, sock) {
                recording.auditor.write(&record, recording.out.writer())?;
            }
        }
        recording.out.sync()?;
        Ok(recording)
    }

    /// Whether `--count` is reached.
    pub fn full(&self) -> bool {
        self.auditor.full()
    }

    /// Records what `event` does to ports (once `--count` is reached,
    /// nothing).
    pub fn event(&mut self, event: &Event) -> io::Result<()> {
        self.auditor.procs.apply(event);
        for record in self.auditor.recorder.apply(event) {
            if self.auditor.full() {
                break;
            }
            self.auditor.write(&record, self.out.writer())?;
        }
        Ok(())
    }

    /// Between drains: writes what the last one recorded, and re-opens the
    /// output after a SIGHUP.
    pub fn tick(&mut self) -> Result<()> {
        if signals::take_hangup()
            && let Out::File(f) = &mut self.out
        {
            f.reopen().context("re-opening the output after SIGHUP")?;
        }
        self.out.writer().flush().context("writing records")
    }

    /// Reports lost events into the records too (JSON mode).
    fn lost(&mut self, report: &mut LostReport, lost: Lost) -> io::Result<()> {
        let json = self.auditor.opts.json;
        report.report(lost, json, &mut self.out.writer())
    }

    /// Writes the connects still waiting for their outcome and syncs:
    /// nothing accepted is lost. Returns (records written, unexpected).
    pub fn finish(mut self) -> Result<(u64, u64)> {
        for record in self.auditor.recorder.flush() {
            if self.auditor.full() {
                break;
            }
            self.auditor.write(&record, self.out.writer())?;
        }
        self.out.sync().context("writing the last records")?;
        Ok((self.auditor.written, self.auditor.unexpected))
    }
}

/// Records port events until a stop condition or a signal; fails at the
/// end when `--fail-on-unexpected` and a record broke `--expect`.
pub fn run(kernel: &mut Kernel, opts: &Options, stdout: &mut impl Write) -> Result<()> {
    let now = clock::boottime_ns();
    let socks = seed::take(
        kernel,
        now,
        &seed::Scope::everywhere(&[Proto::Tcp, Proto::Udp]),
    )?;
    let mut recording = Recording::start(opts, stdout, &socks, now)?;
    drop(socks);
    eprintln!("Tracing port events. Ctrl-C to stop.");

    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut lost = LostReport::default();
    let mut next_lost_check = Instant::now() + LOST_CHECK;
    let result: Result<()> = loop {
        // One drain after a stop request: what the kernel delivered is kept.
        let stop = signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d);
        let mut written = Ok(());
        kernel.drain(|record| {
            // A record this build cannot read has nothing to audit.
            if written.is_ok()
                && let Ok(event) = decode(record)
            {
                written = recording.event(&event);
            }
        });
        if let Err(e) = written
            .map_err(anyhow::Error::from)
            .and_then(|()| recording.tick())
        {
            break Err(e);
        }
        if stop || recording.full() {
            break Ok(());
        }
        if Instant::now() >= next_lost_check {
            recording.lost(&mut lost, kernel.lost()?)?;
            next_lost_check = Instant::now() + LOST_CHECK;
        }
        let wait = deadline.map_or(TICK, |d| {
            TICK.min(d.saturating_duration_since(Instant::now()))
        });
        kernel.wait(wait).context("waiting for events")?;
    };
    if let Err(e) = result {
        // A reader that went away (`| head`) is a normal end.
        return match e.downcast_ref::<io::Error>() {
            Some(io) if io.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            _ => Err(e),
        };
    }
    recording.lost(&mut lost, kernel.lost()?)?;
    let (written, unexpected) = recording.finish()?;
    if opts.expect.is_some() {
        eprintln!("bnetstat: {written} records, {unexpected} unexpected");
        if opts.fail_on_unexpected && unexpected > 0 {
            bail!("records that broke the expected listeners: {unexpected}");
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
