//! `cargo xtask bench`: bnetstat against its peers, every figure a ratio to
//! a peer measured in the same run, repetitions interleaved.

mod ceiling;
mod churn;
pub mod soak;
mod table;

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

/// How big and how long.
pub struct Plan {
    pub smoke: bool,
    /// Every configuration runs once per repetition, in rotating order.
    pub reps: usize,
    /// Seconds of churn per run.
    pub load_secs: u64,
    /// Client threads in the load generator (and as many server threads).
    pub threads: u64,
    /// Seconds of paced churn per step of the ceiling search.
    pub step_secs: u64,
    /// Established connections held open for the table timings.
    pub held: Vec<usize>,
    /// The short soak at the end.
    pub soak: soak::Plan,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            reps: 5,
            load_secs: 8,
            threads: 4,
            step_secs: 3,
            held: vec![10_000, 50_000, 100_000],
            soak: soak::Plan::minutes(2, soak::RATE),
        }
    }

    /// Seconds of work: checks the bench runs and prints figures.
    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            reps: 1,
            load_secs: 2,
            threads: 2,
            step_secs: 1,
            held: vec![1_000],
            soak: soak::Plan::smoke(),
        }
    }
}

/// A part of the bench that can run alone.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Part {
    /// Part 3: time to a complete table, memory holding it live, the cost
    /// of a redisplay and of a `bnetstat watch` frame.
    Table,
}

/// The binaries under test and where scratch output goes.
pub struct Tools {
    pub bnetstat: PathBuf,
    pub loadgen: PathBuf,
    pub scratch: PathBuf,
}

/// Runs the plan and returns the report (Markdown).
pub fn run(plan: &Plan, tools: &Tools) -> Result<String> {
    fs::create_dir_all(&tools.scratch)
        .with_context(|| format!("creating {}", tools.scratch.display()))?;
    let machine = machine()?;
    // Tables first: churn leaves TIME_WAIT sockets that would swell them
    // for the next 60 s.
    let tables = table::run(plan, tools)?;
    let churn = churn::run(plan, tools)?;
    let ceiling = ceiling::run(plan, tools)?;
    eprintln!("xtask: bench soak: {} s", plan.soak.secs);
    let soak = soak::run(&plan.soak, tools)?;
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench`{}. Every figure is a median over {} repetition(s) with \
         the min–max range in brackets; within a repetition every configuration runs once, in \
         an order that rotates between repetitions, so a ratio compares runs made minutes apart \
         on the same machine.\n",
        if plan.smoke { " --smoke" } else { "" },
        plan.reps
    )?;
    md.push_str(&machine);
    churn::report(&mut md, plan, tools, &churn)?;
    ceiling::report(&mut md, plan, &ceiling)?;
    table::report(&mut md, plan, &tables)?;
    let at = match ceiling.defaults() {
        (Some(loss), _) => soak::Ceiling::At(loss),
        (None, clean) => soak::Ceiling::Unreached(clean),
    };
    soak::report(&mut md, &soak, at)?;
    goals(&mut md, &churn, &ceiling, &tables, &soak)?;
    writeln!(
        md,
        "## Not measured yet\n\n\
         - The ceiling of `bnetstat serve` itself: the search runs `bnetstat trace`, whose \
         reader formats and writes every event; serve's only keeps the table and counters. The \
         soak's rate is judged against trace's ceiling.\n\
         - What `bnetstat serve` delivered and with which owner, event by event: it prints no \
         events, so its rows have its lost-event count instead.\n\
         - A soak of release length: the bench's is {} s; `cargo xtask soak --minutes N` runs \
         one of any length by itself.\n",
        plan.soak.secs
    )?;
    Ok(md)
}

/// One part alone: the machine, then the part's section of the report.
pub fn part(part: Part, plan: &Plan, tools: &Tools) -> Result<String> {
    fs::create_dir_all(&tools.scratch)
        .with_context(|| format!("creating {}", tools.scratch.display()))?;
    let mut md = machine()?;
    match part {
        Part::Table => {
            let tables = table::run(plan, tools)?;
            table::report(&mut md, plan, &tables)?;
        }
    }
    Ok(md)
}

/// `cargo xtask soak` alone: part 5's section, the ceiling not measured.
pub fn soak(plan: &soak::Plan, tools: &Tools) -> Result<String> {
    fs::create_dir_all(&tools.scratch)
        .with_context(|| format!("creating {}", tools.scratch.display()))?;
    let results = soak::run(plan, tools)?;
    let mut md = String::new();
    soak::report(&mut md, &results, soak::Ceiling::Unmeasured)?;
    Ok(md)
}

/// The goals of the bench's issue, each with whether this run met it.
fn goals(
    md: &mut String,
    churn: &churn::Results,
    ceiling: &ceiling::Results,
    tables: &[table::Size],
    soak: &soak::Results,
) -> Result<()> {
    writeln!(md, "## Goals\n")?;
    writeln!(md, "| goal | this run | met |\n| --- | --- | --- |")?;
    let mut row = |goal: &str, figure: String, met: Option<bool>| {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        writeln!(md, "| {goal} | {figure} | {met} |")
    };
    let loss = churn.median_ratio(churn::Config::Trace).map(|r| 1.0 - r);
    let tcpstates_loss = churn
        .median_ratio(churn::Config::Tcpstates)
        .map(|r| 1.0 - r);
    row(
        "connection-rate loss with `bnetstat trace` at most 3%",
        loss.map_or("-".into(), |l| format!("{:.1}%", l * 100.0)),
        loss.map(|l| l <= 0.03),
    )?;
    row(
        "... and no worse than with `tcpstates`",
        match (loss, tcpstates_loss) {
            (Some(l), Some(t)) => format!("{:.1}% against {:.1}%", l * 100.0, t * 100.0),
            _ => "-".into(),
        },
        loss.zip(tcpstates_loss).map(|(l, t)| l <= t),
    )?;
    let delivered = churn.worst_share(churn::Config::Trace, |r| r.delivered_share());
    row(
        "100% of transitions delivered (bnetstat trace)",
        delivered.map_or("-".into(), |s| format!("worst run {:.4}%", s * 100.0)),
        delivered.map(|s| s >= 1.0),
    )?;
    let owned = churn.worst_share(churn::Config::Trace, |r| r.owner_share());
    row(
        "100% attributed to the right owner (bnetstat trace)",
        owned.map_or("-".into(), |s| format!("worst run {:.4}%", s * 100.0)),
        owned.map(|s| s >= 1.0),
    )?;
    // The goals speak of 100,000 sockets: the size nearest that (each held
    // connection is two sockets on loopback).
    let biggest = tables.iter().min_by_key(|s| s.sockets.abs_diff(100_000));
    let at = biggest.map_or_else(String::new, |s| {
        format!("{} sockets ({} connections held)", s.sockets, s.held)
    });
    let speedup = biggest.and_then(|s| s.ratio("ss -tanp", "bnetstat -tanp"));
    row(
        &format!("cold `bnetstat -tanp` at {at} at least 3× faster than `ss -tanp`"),
        speedup.map_or("-".into(), |x| format!("{x:.2}× faster")),
        speedup.map(|x| x >= 3.0),
    )?;
    let rss = biggest.and_then(|s| s.rss_mib);
    row(
        &format!("live memory at {at} under 100 MiB"),
        rss.map_or("-".into(), |m| format!("{m:.1} MiB")),
        rss.map(|m| m < 100.0),
    )?;
    let frame = biggest.and_then(|s| s.frame_ms);
    row(
        &format!("a `bnetstat watch` frame at {at} well under a frame (16.7 ms)"),
        frame.map_or("-".into(), |f| {
            format!("median {:.2} ms, worst {:.2} ms", f.median, f.max)
        }),
        frame.map(|f| f.max < 1000.0 / 60.0),
    )?;
    // Met when the slower of CPU and wall is under one frame; how far
    // under is "well" is the reader's call, with the figure in front of them.
    let redisplay = biggest.and_then(|s| s.redisplay);
    row(
        &format!(
            "... and a text redisplay (`bnetstat -tan 0.2` from its live model, every row \
             printed) at {at}"
        ),
        redisplay.map_or("-".into(), |r| {
            format!("{:.2} ms CPU, {:.2} ms wall", r.cpu_ms, r.wall_ms)
        }),
        redisplay.map(|r| r.cpu_ms.max(r.wall_ms) < 1000.0 / 60.0),
    )?;
    let cpu = churn.median_cpu(churn::Config::Trace);
    row(
        "user-space CPU under 1 s per million events: CPU seconds (user+system) of the \
         tracer's own process (`bnetstat trace`) per million events",
        cpu.map_or("-".into(), |c| format!("{c:.2} s")),
        cpu.map(|c| c < 1.0),
    )?;
    let (loss, _) = ceiling.defaults();
    let (below, worst) = ceiling.below_ceiling();
    let ceiling_at = match loss {
        Some(l) => format!("the ceiling is {l:.0} transitions/s"),
        None => "the ceiling was not reached, so every step counts".into(),
    };
    row(
        "100% of transitions delivered and 100% attributed to the right owner below the \
         ceiling (`bnetstat trace`, defaults, paced)",
        worst.map_or(format!("{ceiling_at}; no step below it"), |w| {
            format!(
                "{ceiling_at}; the worst of {below} steps, at {:.0}/s: {:.4}% delivered, \
                 {:.4}% right pid",
                w.rate,
                w.delivered_share() * 100.0,
                w.owner_share() * 100.0
            )
        }),
        worst.map(|w| w.delivered_share() >= 1.0 && w.owner_share() >= 1.0),
    )?;
    let below = loss.is_none_or(|l| soak.rate() < l);
    row(
        "soak: `bnetstat serve`'s resident memory flat after warm-up and no event lost, at a \
         rate below the ceiling",
        format!(
            "{}, {} lost, at {:.0} transitions/s{}",
            soak.steady_range()
                .map_or("memory not judged (soak too short)".into(), |r| {
                    format!("max − min {r:.1} MiB after warm-up")
                }),
            soak.lost().map_or("-".into(), |l| l.to_string()),
            soak.rate(),
            if below { "" } else { ", not below the ceiling" }
        ),
        soak.flat()
            .zip(soak.lost())
            .filter(|_| below)
            .map(|(flat, lost)| flat && lost == 0),
    )?;
    writeln!(md)?;
    Ok(())
}

/// `nproc`, memory, CPU model, kernel, peers' versions and the commit.
fn machine() -> Result<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim());
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    let text = |program: &str, args: &[&str]| {
        crate::output(program, args).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
    };
    let mut md = String::from("## Machine\n\n");
    writeln!(md, "- CPUs (`nproc`): {}", text("nproc", &[]))?;
    writeln!(md, "- CPU model: {model}")?;
    writeln!(md, "- memory: {:.1} GiB", mem_kib as f64 / (1 << 20) as f64)?;
    writeln!(md, "- kernel (`uname -r`): {}", text("uname", &["-r"]))?;
    writeln!(
        md,
        "- bnetstat: commit {}",
        text("git", &["rev-parse", "--short", "HEAD"])
    )?;
    for pkg in crate::BENCH_PACKAGES {
        writeln!(
            md,
            "- {pkg} {}",
            text("dpkg-query", &["-W", "-f", "${Version}", pkg])
        )?;
    }
    writeln!(
        md,
        "- the machine is shared: other work may run at the same time, which the \
         interleaving spreads evenly over the configurations but does not remove\n"
    )?;
    Ok(md)
}

/// Median, min and max.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let (&min, &max) = (v.first()?, v.last()?);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Some(Spread { median, min, max })
    }

    /// `median (min–max)` with `digits` decimals; a single run has no range.
    pub fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            format!("{:.digits$}", self.median)
        } else {
            format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// `Spread::show`, or `-` when there is nothing to show.
pub fn show(spread: Option<Spread>, digits: usize) -> String {
    spread.map_or_else(|| "-".to_owned(), |s| s.show(digits))
}

/// A child killed when dropped, so a failing bench leaves nothing running.
pub struct Guard(pub Child);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Result<Guard> {
        cmd.spawn()
            .map(Guard)
            .with_context(|| format!("starting {:?}", cmd.get_program()))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGINT, as a person at a terminal would stop it; SIGKILL after 10 s.
    pub fn interrupt(mut self) -> Result<()> {
        // SAFETY: kill has no memory preconditions; the pid is our child's,
        // not yet reaped.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGINT) };
        wait_until(
            "a tracer to stop after SIGINT",
            Duration::from_secs(10),
            || matches!(self.0.try_wait(), Ok(Some(_))),
        )
    }

    /// Waits for it to exit by itself, at most `limit`.
    pub fn finish(mut self, limit: Duration, what: &str) -> Result<std::process::ExitStatus> {
        let mut status = None;
        wait_until(what, limit, || {
            status = self.0.try_wait().ok().flatten();
            status.is_some()
        })?;
        status.context("no exit status")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `done` every 20 ms until it holds, or fails after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The first line `stdout` prints, within `limit`.
pub fn first_line(stdout: ChildStdout, limit: Duration, what: &str) -> Result<String> {
    first_line_later(stdout)
        .recv_timeout(limit)
        .with_context(|| format!("timed out after {limit:?} waiting for {what}"))
}

/// The first line `stdout` prints, read on a thread of its own and sent
/// when it comes, so the caller can do other things meanwhile.
pub fn first_line_later(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx
}

/// Resident memory of `pid` (VmRSS in /proc/PID/status), in MiB.
pub fn resident_mib(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib / 1024.0)
}

/// The text `bnetstat serve` answers at `http://127.0.0.1:PORT/metrics`.
pub fn scrape(port: u16) -> Result<String> {
    let at = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut conn = TcpStream::connect_timeout(&at, Duration::from_secs(5))
        .with_context(|| format!("connecting to {at}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .with_context(|| format!("asking {at} for /metrics"))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .with_context(|| format!("reading {at}'s answer"))?;
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => bail!(
            "{at}/metrics answered {:?}",
            answer.lines().next().unwrap_or("nothing")
        ),
    }
}

/// A metric summed over its labels (`bnetstat_events_lost_total` over its
/// causes); None when the text has no such metric.
pub fn metric_sum(metrics: &str, name: &str) -> Option<u64> {
    let samples: Vec<u64> = metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// CPU seconds (user plus system) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesised comm, which may hold spaces: state is
    // field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (ticks(14), ticks(15)) else {
        bail!("{path}: no utime and stime");
    };
    Ok((utime + stime) as f64 / ticks_per_second())
}

/// The unit of CPU times in /proc/PID/stat.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// A loopback port free right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free loopback port")?
        .port())
}

/// Two different loopback ports free right now: the load's and the
/// metrics'. Each is free once its probe closes, so the second could
/// otherwise be the first again.
pub fn free_ports() -> Result<(u16, u16)> {
    let first = free_port()?;
    loop {
        let second = free_port()?;
        if second != first {
            return Ok((first, second));
        }
    }
}

/// Bytes in `path`, 0 when it does not exist yet.
pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// A command as a person would type it, for the report.
pub fn typed(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(|a| {
            if a.contains([' ', '(', ')']) {
                format!("'{a}'")
            } else {
                a.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `cmd` with stdout and stderr in files under `scratch`.
pub fn spawn_logged(
    cmd: &mut Command,
    scratch: &Path,
    name: &str,
) -> Result<(Guard, PathBuf, PathBuf)> {
    let out = scratch.join(format!("{name}.out"));
    let err = scratch.join(format!("{name}.err"));
    let file = |p: &Path| fs::File::create(p).with_context(|| format!("creating {}", p.display()));
    let guard = Guard::spawn(
        cmd.stdin(Stdio::null())
            .stdout(file(&out)?)
            .stderr(file(&err)?),
    )?;
    Ok((guard, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_has_the_middle_value_or_the_mean_of_the_two() {
        assert_eq!(
            Spread::of([3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(
            Spread::of([4.0, 1.0, 2.0, 3.0]).map(|s| s.median),
            Some(2.5)
        );
        assert_eq!(Spread::of([]), None);
    }

    #[test]
    fn a_single_run_shows_no_range() {
        assert_eq!(show(Spread::of([0.5]), 2), "0.50");
        assert_eq!(show(Spread::of([0.5, 1.0, 0.25]), 1), "0.5 (0.2–1.0)");
        assert_eq!(show(None, 1), "-");
    }

    #[test]
    fn lost_events_are_summed_over_their_causes() {
        let text = "# HELP bnetstat_events_lost_total Events lost.\n\
                    # TYPE bnetstat_events_lost_total counter\n\
                    bnetstat_events_lost_total{cause=\"ring_full\"} 12\n\
                    bnetstat_events_lost_total{cause=\"nested\"} 3\n\
                    bnetstat_events_total 900\n";
        assert_eq!(metric_sum(text, "bnetstat_events_lost_total"), Some(15));
        assert_eq!(metric_sum(text, "bnetstat_events"), None);
        assert_eq!(metric_sum(text, "bnetstat_events_total"), Some(900));
    }

    #[test]
    fn commands_are_quoted_where_a_shell_needs_it() {
        assert_eq!(
            typed("ss", &["-tanpH", "( sport = :80 )"]),
            "ss -tanpH '( sport = :80 )'"
        );
    }
}
