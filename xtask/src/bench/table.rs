//! Part 3: the wall time to a complete table with many established
//! connections held open, bnetstat's memory holding that table live, and
//! what redisplaying it from the live model costs.

use std::{
    fmt::Write as _,
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Guard, Plan, Spread, Tools, cpu_seconds, file_len, first_line, free_port, resident_mib, show,
    spawn_logged, ticks_per_second, wait_until,
};

/// Connections per holder process: two fds each must fit under the hard
/// RLIMIT_NOFILE of 20,000, with room for the process's own.
const PER_HOLDER: usize = 9_000;
/// Longest a single table may take.
const TABLE_LIMIT: Duration = Duration::from_secs(300);
/// Seconds between redisplays while their cost is measured.
const REDISPLAY_EVERY: f64 = 0.2;
/// How long redisplays are watched at least, after the first table...
const REDISPLAY_FOR: Duration = Duration::from_secs(3);
/// ... and how many at least, however long they take.
const REDISPLAYS: usize = 5;
/// The line each text table starts with (netstat-user/src/views/table.rs).
const TABLE_HEADER: &str = "Active Internet connections";

/// The tables timed: (label, program, args), `bnetstat` standing for the
/// binary under test.
const TABLES: [(&str, &str, &[&str]); 6] = [
    ("bnetstat -tan", "bnetstat", &["-tan"]),
    ("bnetstat -tanp", "bnetstat", &["-tanp"]),
    ("ss -tan", "ss", &["-tan"]),
    ("ss -tanp", "ss", &["-tanp"]),
    ("netstat -tan", "netstat", &["-tan"]),
    ("netstat -tanp", "netstat", &["-tanp"]),
];

/// The figures at one size.
pub struct Size {
    pub held: usize,
    /// TCP sockets on the host while timing (`ss -tanH | wc -l`).
    pub sockets: usize,
    /// Seconds per table, in `TABLES` order, one value per repetition.
    times: Vec<Vec<f64>>,
    /// Resident memory of a live `bnetstat -tan 60` after its first table.
    pub rss_mib: Option<f64>,
    /// What a redisplay of `bnetstat -tan 0.2` costs.
    pub redisplay: Option<Redisplay>,
    /// What `bnetstat watch` says its frames cost (ms), in a terminal of
    /// `WATCH_SIZE`.
    pub frame_ms: Option<Spread>,
}

/// The cost of one redisplay from the live model, averaged over a window.
#[derive(Clone, Copy)]
pub struct Redisplay {
    /// Redisplays in the window.
    pub tables: usize,
    /// CPU ms (user+system) of the bnetstat process per redisplay.
    pub cpu_ms: f64,
    /// Wall ms per redisplay, the wait between redisplays taken out.
    pub wall_ms: f64,
}

impl Size {
    /// Median over repetitions of `slow`'s time over `fast`'s.
    pub fn ratio(&self, slow: &str, fast: &str) -> Option<f64> {
        self.ratios(slow, fast).map(|s| s.median)
    }

    fn ratios(&self, slow: &str, fast: &str) -> Option<Spread> {
        let times = |label: &str| {
            TABLES
                .iter()
                .position(|t| t.0 == label)
                .map(|i| &self.times[i])
        };
        let (slow, fast) = (times(slow)?, times(fast)?);
        Spread::of(slow.iter().zip(fast).map(|(s, f)| s / f))
    }
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Vec<Size>> {
    plan.held
        .iter()
        .map(|&held| size(plan, tools, held))
        .collect()
}

fn size(plan: &Plan, tools: &Tools, held: usize) -> Result<Size> {
    eprintln!("xtask: bench table: holding {held} loopback connections");
    let _holders = hold(tools, held)?;
    let sockets = crate::output("ss", &["-tanH"])?.lines().count();
    let mut times = vec![Vec::new(); TABLES.len()];
    for rep in 0..plan.reps {
        for i in 0..TABLES.len() {
            let i = (i + rep) % TABLES.len();
            let (label, program, args) = TABLES[i];
            eprintln!("xtask: bench table {}/{}: {label}", rep + 1, plan.reps);
            times[i].push(time_table(tools, program, args).with_context(|| label.to_owned())?);
        }
    }
    let rss_mib = Some(live_rss(tools).context("bnetstat -tan 60")?);
    eprintln!("xtask: bench table: redisplays of bnetstat -tan {REDISPLAY_EVERY}");
    let redisplay = Some(redisplay(tools).context("redisplaying bnetstat -tan")?);
    eprintln!("xtask: bench table: bnetstat watch frames");
    let frame_ms = Some(watch_frames(tools).context("bnetstat watch in tmux")?);
    Ok(Size {
        held,
        sockets,
        times,
        rss_mib,
        redisplay,
        frame_ms,
    })
}

/// Holder processes with `held` connections open between them, each to its
/// own listening port so no one (address, port) pair runs out of ephemeral
/// ports. Killed when dropped.
fn hold(tools: &Tools, held: usize) -> Result<Vec<Guard>> {
    let mut holders = Vec::new();
    let mut left = held;
    while left > 0 {
        let n = left.min(PER_HOLDER);
        left -= n;
        let guard = Guard::spawn(
            Command::new(&tools.loadgen)
                .args(["hold", &free_port()?.to_string(), &n.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )?;
        holders.push(guard);
    }
    for holder in &mut holders {
        let stdout = holder.0.stdout.take().context("holder stdout")?;
        let line = first_line(stdout, Duration::from_secs(120), "a holder to connect")?;
        if line.trim() != "ready" {
            bail!("a connection holder failed (see its message above)");
        }
    }
    Ok(holders)
}

/// Wall seconds from start to exit, output to /dev/null.
fn time_table(tools: &Tools, program: &str, args: &[&str]) -> Result<f64> {
    let program = if program == "bnetstat" {
        tools.bnetstat.as_os_str()
    } else {
        program.as_ref()
    };
    let start = Instant::now();
    let mut guard = Guard::spawn(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let stderr = guard.0.stderr.take().context("stderr")?;
    // Read alongside, so a chatty stderr cannot block it.
    let errors = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = guard.finish(TABLE_LIMIT, "a table")?;
    let seconds = start.elapsed().as_secs_f64();
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        bail!("failed ({status}): {}", errors.trim());
    }
    Ok(seconds)
}

/// VmRSS of `bnetstat -tan 60` once its first table is out (its output
/// stops growing), in MiB.
fn live_rss(tools: &Tools) -> Result<f64> {
    let (guard, out, _) = spawn_logged(
        Command::new(&tools.bnetstat).args(["-tan", "60"]),
        &tools.scratch,
        "live-table",
    )?;
    let mut last = (0, Instant::now());
    wait_until("the first table", Duration::from_secs(120), || {
        let len = file_len(&out);
        if len != last.0 {
            last = (len, Instant::now());
        }
        len > 0 && last.1.elapsed() > Duration::from_secs(1)
    })?;
    let mib = resident_mib(guard.pid())?;
    drop(guard);
    let _ = fs::remove_file(&out);
    Ok(mib)
}

/// `bnetstat -tan 0.2` for `REDISPLAY_FOR` and `REDISPLAYS` after its
/// first table, so start-up (load, seed, first table) is left out. While
/// it runs, its output's length, the time and its CPU are sampled whenever
/// the length changes; afterwards the table headers in the output say
/// where each table ended, and the first sample that reached an end is when
/// that table was out (a write of megabytes grows the file in steps, so a
/// change of length alone is not a table). Between tables bnetstat only
/// waits, so the samples at two ends bracket exactly the redisplays between
/// them.
fn redisplay(tools: &Tools) -> Result<Redisplay> {
    let (guard, out, _) = spawn_logged(
        Command::new(&tools.bnetstat).args(["-tan", &REDISPLAY_EVERY.to_string()]),
        &tools.scratch,
        "redisplay",
    )?;
    let mut samples: Vec<(u64, Instant, f64)> = Vec::new();
    // Tables begun, told apart by the wait between them: only to know when
    // to stop (the headers count them afterwards).
    let mut begun = 0;
    let start = Instant::now();
    loop {
        let len = file_len(&out);
        if samples.last().map_or(len > 0, |s| s.0 != len) {
            let now = Instant::now();
            let wait = Duration::from_secs_f64(REDISPLAY_EVERY / 2.0);
            begun += usize::from(samples.last().is_none_or(|s| now - s.1 > wait));
            samples.push((len, now, cpu_seconds(guard.pid())?));
        }
        match samples.first() {
            // The first table, REDISPLAYS, and one begun after: all ended.
            Some(first) if first.1.elapsed() > REDISPLAY_FOR && begun > REDISPLAYS + 1 => break,
            _ if start.elapsed() > TABLE_LIMIT => {
                bail!("fewer than {REDISPLAYS} redisplays within {TABLE_LIMIT:?}")
            }
            _ => thread::sleep(Duration::from_millis(1)),
        }
    }
    drop(guard);
    let text = fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let _ = fs::remove_file(&out);
    // A table ends where the next begins; the last may be cut short.
    let out_at = |end: usize| samples.iter().find(|s| s.0 >= end as u64);
    let ends: Vec<_> = text
        .match_indices(TABLE_HEADER)
        .skip(1)
        .filter_map(|(end, _)| out_at(end))
        .collect();
    let [first, .., last] = ends[..] else {
        bail!("no redisplay ended");
    };
    let tables = ends.len() - 1;
    let per_table = |x: f64| x / tables as f64 * 1e3;
    Ok(Redisplay {
        tables,
        cpu_ms: per_table(last.2 - first.2),
        wall_ms: per_table((last.1 - first.1).as_secs_f64()) - REDISPLAY_EVERY * 1e3,
    })
}

/// The terminal `bnetstat watch` runs in: columns, rows.
const WATCH_SIZE: (u16, u16) = (160, 50);
/// How long its frames are read.
const WATCH_FOR: Duration = Duration::from_secs(6);

/// `bnetstat watch -n` in a detached tmux terminal: the frame cost its
/// status line shows (`frame 1.2 ms`, the last frame's build and draw),
/// read off the screen several times a second; each new reading is a
/// frame (it redraws at least once a second, and at most 20 times).
fn watch_frames(tools: &Tools) -> Result<Spread> {
    let session = format!("bnetstat-bench-{}", std::process::id());
    let (cols, rows) = WATCH_SIZE;
    let command = format!("{} watch -n", tools.bnetstat.display());
    crate::output(
        "tmux",
        &[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            &command,
        ],
    )?;
    let screen = || crate::output("tmux", &["capture-pane", "-p", "-t", &session]);
    let reading = |text: &str| -> Option<f64> {
        let at = text.find("frame ")? + "frame ".len();
        text[at..].split_whitespace().next()?.parse().ok()
    };
    let mut frames = Vec::new();
    let result = (|| {
        wait_until("bnetstat watch's first frame cost", TABLE_LIMIT, || {
            screen().is_ok_and(|s| reading(&s).is_some())
        })?;
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < WATCH_FOR {
            let text = screen()?;
            let now = reading(&text);
            if now.is_some() && now != last {
                frames.extend(now);
                last = now;
            }
            thread::sleep(Duration::from_millis(100));
        }
        Spread::of(frames.iter().copied()).context("no frame cost on the screen")
    })();
    let _ = crate::output("tmux", &["kill-session", "-t", &session]);
    result
}

/// Part 3 of the report.
pub fn report(md: &mut String, plan: &Plan, sizes: &[Size]) -> Result<()> {
    writeln!(md, "## Time to a complete table\n")?;
    writeln!(
        md,
        "Established loopback connections held open by `loadgen hold PORT N` processes \
         (at most {PER_HOLDER} connections each, both ends in the holder, each holder on its \
         own port). Each tool's full output goes to /dev/null; wall time from start to exit, \
         bnetstat from a cold start (programs loaded, seeded, table printed). {} repetition(s) \
         per size, tools in rotating order. The ratio is the same-repetition time of `ss` with \
         the same flags over the tool's time (above 1: faster than ss).\n",
        plan.reps
    )?;
    writeln!(
        md,
        "Redisplay: `bnetstat -tan {REDISPLAY_EVERY}` with its output to a file, watched for at \
         least {} s and {REDISPLAYS} redisplays after its first table (so program load and seed \
         are left out), every table a full text table of every socket. CPU is the process's user plus system time \
         (/proc/PID/stat, counted in 1/{} s ticks) over the redisplays in the window; wall is \
         the time between the ends of the first and the last table in the window over the \
         redisplays between them, less the {REDISPLAY_EVERY} s bnetstat waits between tables.\n",
        REDISPLAY_FOR.as_secs(),
        ticks_per_second()
    )?;
    for size in sizes {
        writeln!(
            md,
            "### {} connections held ({} TCP sockets on the host)\n",
            size.held, size.sockets
        )?;
        writeln!(
            md,
            "| command | seconds | ss (same flags) time / this |\n| --- | --- | --- |"
        )?;
        for (i, (label, _, args)) in TABLES.iter().enumerate() {
            let ss = if args.contains(&"-tanp") {
                "ss -tanp"
            } else {
                "ss -tan"
            };
            writeln!(
                md,
                "| `{label}` | {} | {} |",
                show(Spread::of(size.times[i].iter().copied()), 3),
                show(size.ratios(ss, label), 2)
            )?;
        }
        writeln!(
            md,
            "\nbnetstat's resident memory holding this table live (`bnetstat -tan 60`, VmRSS after \
             its first table): {}\n",
            size.rss_mib.map_or("-".into(), |m| format!("{m:.1} MiB"))
        )?;
        writeln!(
            md,
            "A frame of `bnetstat watch -n` over that live table, as its status line reports \
             it (build and draw, {}×{} terminal): {} ms\n",
            WATCH_SIZE.0,
            WATCH_SIZE.1,
            show(size.frame_ms, 2)
        )?;
        writeln!(
            md,
            "A redisplay of that live table (`bnetstat -tan {REDISPLAY_EVERY}`): {}\n",
            size.redisplay.map_or("-".into(), |r| format!(
                "{:.2} ms CPU (user+system) and {:.2} ms wall each, over {} redisplays",
                r.cpu_ms, r.wall_ms, r.tables
            ))
        )?;
    }
    Ok(())
}
