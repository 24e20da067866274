//! Part 5: `bnetstat serve` under steady paced churn for minutes, its
//! resident memory sampled as it goes: flat once the table has reached its
//! steady size, and nothing lost at a rate below the ceiling.

use std::{
    fmt::Write as _,
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Tools,
    churn::{Load, Loading, TRANSITIONS_PER_CONNECTION},
    free_ports, metric_sum, resident_mib, scrape, spawn_logged, wait_until,
};

/// Connections a second by default: 50,000 transitions a second, which the
/// generator reaches with room to spare on the 2-CPU machine this was
/// written on, and which serve took there without a loss. Check it against
/// the ceiling `cargo xtask bench` measures on yours.
pub const RATE: u64 = 5_000;
/// How long `TIME_WAIT` rows stay in the table (`TCP_TIMEWAIT_LEN`): under
/// steady churn the table grows for this long before expiries balance the
/// closes, so the warm-up is this plus one sampling period.
const TIME_WAIT: Duration = Duration::from_secs(60);
/// Samples after the warm-up needed to judge flatness.
const JUDGED_FROM: usize = 3;
/// Flat: after warm-up, max − min within this share of the mean...
const FLAT_SHARE: f64 = 0.05;
/// ... or within this many MiB, whichever is larger.
const FLAT_MIB: f64 = 2.0;

/// How long, how often and how hard.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub secs: u64,
    /// Seconds between memory samples.
    pub every: u64,
    /// Connections a second, paced evenly.
    pub rate: u64,
    /// Client threads (and as many server threads) in the load generator.
    pub threads: u64,
}

impl Plan {
    /// `cargo xtask soak --minutes N`, and the bench's short soak.
    pub fn minutes(minutes: u64, rate: u64) -> Plan {
        Plan {
            secs: minutes * 60,
            every: 10,
            rate,
            threads: 4,
        }
    }

    /// Seconds of it: checks the soak runs and prints figures.
    pub fn smoke() -> Plan {
        Plan {
            secs: 20,
            every: 5,
            rate: 2_000,
            threads: 2,
        }
    }

    /// Samples before this are the warm-up: the table's `TIME_WAIT` rows
    /// reach their steady number after a minute. A soak too short to leave
    /// [`JUDGED_FROM`] samples after it shows the figures after its first
    /// third, unjudged.
    fn warm_up(&self) -> (u64, bool) {
        let full = TIME_WAIT.as_secs() + self.every;
        let after = (full..=self.secs).step_by(self.every as usize).count();
        if after >= JUDGED_FROM {
            (full, true)
        } else {
            (self.secs / 3, false)
        }
    }
}

/// What the bench knew of the ceiling when the soak ran.
#[derive(Clone, Copy, Debug)]
pub enum Ceiling {
    /// Not measured in this run (`cargo xtask soak` alone).
    Unmeasured,
    /// The search never lost events: the highest rate it ran.
    Unreached(Option<f64>),
    /// The lowest rate, in transitions a second, that lost events.
    At(f64),
}

/// One soak.
#[derive(Debug)]
pub struct Results {
    plan: Plan,
    /// (seconds since the load started, resident MiB).
    samples: Vec<(u64, f64)>,
    load: Load,
    /// `bnetstat_events_lost_total`, both causes, at the end.
    lost: Option<u64>,
    /// `bnetstat_transitions_total` at the end: every transition serve
    /// counted on the host, the load's and any other.
    counted: Option<u64>,
    /// `TIME_WAIT` sockets at the end: in serve's table, and the kernel's.
    time_wait: (Option<u64>, usize),
}

/// Memory after the warm-up.
#[derive(Debug, PartialEq)]
struct Steady {
    from: u64,
    samples: usize,
    min: f64,
    max: f64,
    mean: f64,
    /// The last sample less the first after warm-up, MiB.
    growth: f64,
    /// Seconds between those two.
    over: u64,
}

impl Steady {
    fn flat(&self) -> bool {
        self.max - self.min <= (FLAT_SHARE * self.mean).max(FLAT_MIB)
    }

    fn per_hour(&self) -> Option<f64> {
        (self.over > 0).then(|| self.growth / self.over as f64 * 3600.0)
    }
}

impl Results {
    fn steady(&self) -> Option<Steady> {
        let (from, _) = self.plan.warm_up();
        let after: Vec<(u64, f64)> = self
            .samples
            .iter()
            .copied()
            .filter(|&(t, _)| t >= from)
            .collect();
        let (&first, &last) = (after.first()?, after.last()?);
        let mibs = after.iter().map(|s| s.1);
        Some(Steady {
            from,
            samples: after.len(),
            min: mibs.clone().fold(f64::INFINITY, f64::min),
            max: mibs.clone().fold(f64::NEG_INFINITY, f64::max),
            mean: mibs.sum::<f64>() / after.len() as f64,
            growth: last.1 - first.1,
            over: last.0 - first.0,
        })
    }

    /// Whether memory stayed flat after warm-up; None when the soak was
    /// too short to say.
    pub fn flat(&self) -> Option<bool> {
        let (_, judged) = self.plan.warm_up();
        self.steady().filter(|_| judged).map(|s| s.flat())
    }

    pub fn lost(&self) -> Option<u64> {
        self.lost
    }

    /// Transitions a second the load caused.
    pub fn rate(&self) -> f64 {
        self.load.transitions as f64 / self.load.seconds
    }

    /// The spread of memory after warm-up, in MiB, when judged.
    pub fn steady_range(&self) -> Option<f64> {
        self.flat().and(self.steady()).map(|s| s.max - s.min)
    }
}

/// Starts `bnetstat serve`, runs the paced load for the plan's length while
/// sampling serve's memory, then reads its counters. Fails only when serve
/// dies or the soak cannot run.
pub fn run(plan: &Plan, tools: &Tools) -> Result<Results> {
    let (port, metrics) = free_ports()?;
    let (mut guard, _, err) = spawn_logged(
        Command::new(&tools.bnetstat).args(["serve", "--metrics", &format!("127.0.0.1:{metrics}")]),
        &tools.scratch,
        "soak",
    )?;
    let said = || {
        fs::read_to_string(&err)
            .unwrap_or_default()
            .lines()
            .last()
            .unwrap_or("it said nothing")
            .to_owned()
    };
    let mut exited = None;
    wait_until("bnetstat serve to start", Duration::from_secs(60), || {
        exited = guard.0.try_wait().ok().flatten();
        exited.is_some() || fs::read_to_string(&err).is_ok_and(|s| s.contains("Tracing"))
    })?;
    if let Some(status) = exited {
        bail!(
            "bnetstat serve exited ({status}) before it was attached: {}",
            said()
        );
    }
    let pid = guard.pid();
    let loading = Loading::start(tools, port, plan.threads, plan.secs, Some(plan.rate))?;
    let start = Instant::now();
    let mut samples = Vec::new();
    for at in (0..=plan.secs).step_by(plan.every as usize) {
        thread::sleep((start + Duration::from_secs(at)).saturating_duration_since(Instant::now()));
        if let Some(status) = guard.0.try_wait()? {
            bail!(
                "bnetstat serve died ({status}) {at} s into the soak: {}",
                said()
            );
        }
        let mib = resident_mib(pid)?;
        eprintln!("xtask: soak: {at} s, bnetstat serve resident {mib:.1} MiB");
        samples.push((at, mib));
    }
    let load = loading.finish()?;
    // What the kernel already queued reaches the counters, and a render.
    thread::sleep(Duration::from_secs(1));
    if let Some(status) = guard.0.try_wait()? {
        bail!(
            "bnetstat serve died ({status}) at the end of the soak: {}",
            said()
        );
    }
    let text = scrape(metrics).context("scraping bnetstat serve's metrics")?;
    let kernel_time_wait = crate::output("ss", &["-tanH", "state", "time-wait"])?
        .lines()
        .count();
    guard.interrupt()?;
    Ok(Results {
        plan: *plan,
        samples,
        load,
        lost: metric_sum(&text, "bnetstat_events_lost_total"),
        counted: metric_sum(&text, "bnetstat_transitions_total"),
        time_wait: (time_wait(&text), kernel_time_wait),
    })
}

/// `bnetstat_sockets` in `TIME_WAIT`, TCP and TCP6.
fn time_wait(metrics: &str) -> Option<u64> {
    let rows: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("bnetstat_sockets{") && l.contains("state=\"TIME_WAIT\""))
        .collect();
    metric_sum(&rows.join("\n"), "bnetstat_sockets")
}

/// Part 5 of the report.
pub fn report(md: &mut String, results: &Results, ceiling: Ceiling) -> Result<()> {
    let plan = &results.plan;
    let load = &results.load;
    writeln!(md, "## Soak\n")?;
    writeln!(
        md,
        "`bnetstat serve --metrics 127.0.0.1:METRICS` for {secs} s under `loadgen churn PORT \
         {t} {secs} {rate}`: {rate} connections a second paced evenly, {caused} transitions a \
         second. Its resident memory (VmRSS, /proc/PID/status) is sampled every {every} s from \
         when the load starts; what it lost and counted come from one scrape of its metrics \
         after a 1 s drain. {ceiling}\n",
        secs = plan.secs,
        t = plan.threads,
        rate = plan.rate,
        caused = plan.rate * TRANSITIONS_PER_CONNECTION,
        every = plan.every,
        ceiling = match ceiling {
            Ceiling::Unmeasured => "The ceiling is not measured by the soak: `cargo xtask \
                                    bench` measures it (for `bnetstat trace`)."
                .to_owned(),
            Ceiling::Unreached(highest) => format!(
                "The ceiling search above lost no events up to {} transitions a second.",
                highest.map_or("-".into(), |h| format!("{h:.0}"))
            ),
            Ceiling::At(at) => format!(
                "The ceiling search above first lost events at {at:.0} transitions a second; \
                 the soak ran at {:.0}% of that.",
                100.0 * results.rate() / at
            ),
        },
    )?;
    writeln!(
        md,
        "The load made {} connections in {:.1} s ({:.0} transitions a second), {} of them \
         failed part-way.\n",
        load.connections,
        load.seconds,
        results.rate(),
        load.errors
    )?;
    samples_table(md, results)?;
    let (from, judged) = plan.warm_up();
    writeln!(
        md,
        "\nWarm-up: {}.\n",
        if judged {
            format!(
                "the first {from} s: `TIME_WAIT` rows stay in the table {} s, so under \
                 steady churn it grows for that long before expiries balance the closes, plus one \
                 sampling period",
                TIME_WAIT.as_secs()
            )
        } else {
            format!(
                "this soak is too short to leave {JUDGED_FROM} samples after a {} s warm-up (the \
                 table fills with `TIME_WAIT` rows, which stay {} s, before it reaches its \
                 steady size), so the figures below are after its first third ({from} s) and \
                 not judged",
                TIME_WAIT.as_secs() + plan.every,
                TIME_WAIT.as_secs()
            )
        }
    )?;
    let steady = results.steady();
    match &steady {
        Some(s) => writeln!(
            md,
            "- after warm-up ({} samples from {} s): min {:.1} MiB, max {:.1} MiB, mean {:.1} \
             MiB; from the first of them to the last {:+.1} MiB over {} s ({})",
            s.samples,
            s.from,
            s.min,
            s.max,
            s.mean,
            s.growth,
            s.over,
            match s.per_hour() {
                Some(h) if judged => format!("{h:+.1} MiB an hour, extrapolated"),
                _ => "no hourly rate: the table is still filling".into(),
            }
        )?,
        None => writeln!(md, "- no sample after warm-up")?,
    }
    writeln!(
        md,
        "- events lost (`bnetstat_events_lost_total`, both causes): {}",
        results.lost.map_or("-".into(), |l| l.to_string())
    )?;
    writeln!(
        md,
        "- transitions serve counted (`bnetstat_transitions_total`, every socket on the host): \
         {}, against {} the load caused",
        results.counted.map_or("-".into(), |c| c.to_string()),
        load.transitions
    )?;
    writeln!(
        md,
        "- `TIME_WAIT` sockets at the end: {} in serve's table (`bnetstat_sockets`), {} in the \
         kernel's (`ss -tanH state time-wait`, a moment later); the table keeps each for {} s, \
         so where the kernel ends one sooner (a new connection on the same addresses and ports \
         takes it over) the two differ, and serve's memory with them",
        results.time_wait.0.map_or("-".into(), |n| n.to_string()),
        results.time_wait.1,
        TIME_WAIT.as_secs()
    )?;
    let tolerance = format!(
        "tolerance: max − min within {:.0}% of the mean or {FLAT_MIB:.0} MiB, whichever is larger",
        FLAT_SHARE * 100.0
    );
    writeln!(md)?;
    match (&steady, judged) {
        (Some(s), true) if s.flat() => writeln!(
            md,
            "**flat after warm-up** (max − min {:.1} MiB; {tolerance})\n",
            s.max - s.min
        )?,
        (Some(s), true) => writeln!(
            md,
            "**not flat after warm-up** (max − min {:.1} MiB; {tolerance})\n",
            s.max - s.min
        )?,
        _ => writeln!(
            md,
            "flatness not judged: the soak is too short ({tolerance})\n"
        )?,
    }
    match (results.lost, results.counted) {
        (Some(0), Some(c)) if c >= load.transitions => writeln!(md, "**no event lost**\n")?,
        (Some(0), _) => writeln!(
            md,
            "**no event reported lost, but serve counted fewer transitions than the load caused**\n"
        )?,
        (Some(l), _) => writeln!(md, "**{l} events lost**\n")?,
        (None, _) => writeln!(md, "events lost: not reported by the metrics\n")?,
    }
    Ok(())
}

/// The samples, a row per minute (or per six samples).
fn samples_table(md: &mut String, results: &Results) -> Result<()> {
    const PER_ROW: usize = 6;
    let every = results.plan.every;
    write!(md, "| from |")?;
    for i in 0..PER_ROW {
        write!(md, " +{} s |", i as u64 * every)?;
    }
    writeln!(md, "\n|{}", " --- |".repeat(PER_ROW + 1))?;
    for row in results.samples.chunks(PER_ROW) {
        write!(md, "| {} s |", row[0].0)?;
        for (_, mib) in row {
            write!(md, " {mib:.1} MiB |")?;
        }
        writeln!(md, "{}", " |".repeat(PER_ROW - row.len()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak(plan: Plan, mibs: &[f64]) -> Results {
        Results {
            plan,
            samples: (0..).step_by(plan.every as usize).zip(mibs.iter().copied()).collect(),
            load: serde_json::from_str(
                r#"{"pid":1,"server_pid":2,"port":3,"connections":10,"errors":0,"seconds":1.0,"transitions":102}"#,
            )
            .expect("a load"),
            lost: Some(0),
            counted: Some(102),
            time_wait: (Some(0), 0),
        }
    }

    #[test]
    fn time_wait_is_summed_over_tcp_and_tcp6_only() {
        let text = "bnetstat_sockets{proto=\"tcp\",state=\"ESTABLISHED\"} 5\n\
                    bnetstat_sockets{proto=\"tcp\",state=\"TIME_WAIT\"} 7\n\
                    bnetstat_sockets{proto=\"tcp6\",state=\"TIME_WAIT\"} 2\n";
        assert_eq!(time_wait(text), Some(9));
        assert_eq!(time_wait(""), None);
    }

    #[test]
    fn warm_up_is_a_minute_of_time_wait_and_a_sample() {
        assert_eq!(Plan::minutes(2, RATE).warm_up(), (70, true));
        // 70, 80 and 90 s: just enough to judge.
        assert_eq!(
            Plan {
                secs: 90,
                ..Plan::minutes(1, RATE)
            }
            .warm_up(),
            (70, true)
        );
        assert_eq!(Plan::minutes(1, RATE).warm_up(), (20, false));
        assert_eq!(Plan::smoke().warm_up(), (6, false));
    }

    #[test]
    fn memory_that_stops_growing_after_warm_up_is_flat() {
        // 0..120 s every 10 s: growth for the first minute, then within 2 MiB.
        let mibs = [
            30., 50., 70., 90., 110., 130., 140., 141., 140.5, 141.5, 141., 140.8, 141.2,
        ];
        let r = soak(Plan::minutes(2, RATE), &mibs);
        let s = r.steady().expect("samples after warm-up");
        assert_eq!((s.from, s.samples, s.over), (70, 6, 50));
        assert_eq!((s.min, s.max), (140.5, 141.5));
        assert_eq!(r.flat(), Some(true));
    }

    #[test]
    fn memory_that_keeps_growing_is_not_flat() {
        let mibs: Vec<f64> = (0..13).map(|i| 30.0 + 3.0 * f64::from(i)).collect();
        let r = soak(Plan::minutes(2, RATE), &mibs);
        assert_eq!(r.flat(), Some(false));
        let s = r.steady().expect("samples after warm-up");
        assert_eq!(s.per_hour(), Some(15.0 / 50.0 * 3600.0));
    }

    #[test]
    fn a_short_soak_is_not_judged() {
        let r = soak(Plan::smoke(), &[30., 31., 32., 33., 34.]);
        assert_eq!(r.flat(), None);
        assert_eq!(r.steady().map(|s| s.samples), Some(3));
    }
}
