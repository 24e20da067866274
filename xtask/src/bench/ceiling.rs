//! Part 4: the event rate at which `bnetstat trace` starts losing events,
//! and what the ring buffer's size and the reader's batching window change
//! about it. The load is paced (`loadgen churn ... RATE`) and doubled step
//! by step until the tracer loses events or the machine cannot generate
//! more.

use std::{fmt::Write as _, fs, process::Command, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    Plan, Spread, Tools,
    churn::{self, Load},
    free_port, show, spawn_logged, wait_until,
};

/// Reader settings: `--ring-mib` and `--batch-ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub ring_mib: u32,
    pub batch_ms: u64,
}

/// bnetstat's defaults come first: the ceiling the goals speak of.
const SETTINGS: [Setting; 4] = [
    Setting {
        ring_mib: 8,
        batch_ms: 10,
    },
    Setting {
        ring_mib: 8,
        batch_ms: 0,
    },
    Setting {
        ring_mib: 1,
        batch_ms: 10,
    },
    Setting {
        ring_mib: 1,
        batch_ms: 50,
    },
];

/// One paced run.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Transitions a second the load caused.
    pub rate: f64,
    /// Transitions the tracer printed.
    delivered: u64,
    /// Of those, the ones naming the right pid, judged as under churn.
    right_pid: u64,
    /// Transitions the load caused.
    caused: u64,
    /// What the tracer said it lost.
    lost: u64,
}

impl Step {
    fn lossless(&self) -> bool {
        self.lost == 0 && self.delivered >= self.caused
    }

    /// Transitions printed over transitions caused.
    pub fn delivered_share(&self) -> f64 {
        self.delivered as f64 / self.caused as f64
    }

    /// Printed transitions naming the right pid over those printed.
    pub fn owner_share(&self) -> f64 {
        self.right_pid as f64 / self.delivered.max(1) as f64
    }

    /// How far it falls short on either count: the worst step has the least.
    fn score(&self) -> f64 {
        self.delivered_share().min(1.0).min(self.owner_share())
    }
}

/// One search from the lowest rate up.
#[derive(Debug)]
pub struct Search {
    setting: Setting,
    steps: Vec<Step>,
    /// Whether the last step still lost nothing: the generator, not the
    /// tracer, set the limit.
    unreached: bool,
}

impl Search {
    /// The highest rate with nothing lost.
    fn clean(&self) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.lossless())
            .map(|s| s.rate)
            .reduce(f64::max)
    }

    /// The first step that lost events.
    fn first_loss(&self) -> Option<&Step> {
        self.steps.iter().find(|s| !s.lossless())
    }

    /// The share of right owners in the worst step before the first loss.
    fn clean_owner_share(&self) -> Option<f64> {
        self.steps
            .iter()
            .take_while(|s| s.lossless())
            .map(Step::owner_share)
            .reduce(f64::min)
    }
}

/// Every setting's searches, one per repetition.
pub struct Results {
    searches: Vec<Search>,
}

impl Results {
    fn of(&self, setting: Setting) -> impl Iterator<Item = &Search> {
        self.searches.iter().filter(move |s| s.setting == setting)
    }

    fn spread(&self, setting: Setting, f: impl Fn(&Search) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.of(setting).filter_map(f))
    }

    /// With bnetstat's defaults: the lowest rate any repetition lost
    /// events at (`None`: none did), and the highest rate every repetition
    /// delivered completely.
    pub fn defaults(&self) -> (Option<f64>, Option<f64>) {
        let searches: Vec<_> = self.of(SETTINGS[0]).collect();
        let loss = searches
            .iter()
            .filter_map(|s| s.first_loss().map(|l| l.rate))
            .reduce(f64::min);
        let clean = searches
            .iter()
            .map(|s| s.clean())
            .collect::<Option<Vec<f64>>>()
            .and_then(|c| c.into_iter().reduce(f64::min));
        (loss, clean)
    }

    /// With bnetstat's defaults, every step below the ceiling (every step
    /// when none lost events), and the worst of them.
    pub fn below_ceiling(&self) -> (usize, Option<Step>) {
        let (loss, _) = self.defaults();
        let below: Vec<Step> = self
            .of(SETTINGS[0])
            .flat_map(|s| &s.steps)
            .filter(|s| loss.is_none_or(|l| s.rate < l))
            .copied()
            .collect();
        let worst = below
            .iter()
            .copied()
            .reduce(|a, b| if b.score() < a.score() { b } else { a });
        (below.len(), worst)
    }
}

/// Connections a second at the first step, and how many steps at most.
fn ladder(plan: &Plan) -> (u64, usize) {
    if plan.smoke { (2_000, 2) } else { (1_000, 6) }
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Results> {
    let settings: &[Setting] = if plan.smoke {
        &SETTINGS[..2]
    } else {
        &SETTINGS
    };
    let mut searches = Vec::new();
    for rep in 0..plan.reps {
        for i in 0..settings.len() {
            let setting = settings[(i + rep) % settings.len()];
            searches.push(search(setting, plan, tools).with_context(|| {
                format!(
                    "the ceiling with --ring-mib {} --batch-ms {}",
                    setting.ring_mib, setting.batch_ms
                )
            })?);
        }
    }
    Ok(Results { searches })
}

fn search(setting: Setting, plan: &Plan, tools: &Tools) -> Result<Search> {
    let (mut connections, max_steps) = ladder(plan);
    let mut steps = Vec::new();
    loop {
        eprintln!(
            "xtask: bench ceiling: --ring-mib {} --batch-ms {} at {connections} connections/s",
            setting.ring_mib, setting.batch_ms
        );
        let step = paced(setting, connections, plan, tools)?;
        // The generator fell well short: the machine is at its limit.
        let saturated = step.rate < 0.8 * (connections * churn::TRANSITIONS_PER_CONNECTION) as f64;
        steps.push(step);
        if !step.lossless() || saturated || steps.len() == max_steps {
            let unreached = step.lossless();
            return Ok(Search {
                setting,
                steps,
                unreached,
            });
        }
        connections *= 2;
    }
}

/// `bnetstat trace` with `setting` under `connections` a second.
fn paced(setting: Setting, connections: u64, plan: &Plan, tools: &Tools) -> Result<Step> {
    let port = free_port()?;
    let (guard, out, err) = spawn_logged(
        Command::new(&tools.bnetstat).args([
            "trace",
            "--json",
            "--port",
            &port.to_string(),
            "--ring-mib",
            &setting.ring_mib.to_string(),
            "--batch-ms",
            &setting.batch_ms.to_string(),
        ]),
        &tools.scratch,
        "ceiling",
    )?;
    wait_until("bnetstat trace to start", Duration::from_secs(60), || {
        fs::read_to_string(&err).is_ok_and(|s| s.contains("Tracing"))
    })?;
    let load: Load = churn::load(tools, port, plan.threads, plan.step_secs, Some(connections))?;
    std::thread::sleep(Duration::from_millis(500));
    guard.interrupt()?;
    let text = fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let _ = fs::remove_file(&out);
    let lines = churn::trace_lines(&text, &load);
    Ok(Step {
        rate: load.transitions as f64 / load.seconds,
        delivered: lines.delivered,
        right_pid: lines.right_pid,
        caused: load.transitions,
        lost: lines.lost,
    })
}

/// Part 4 of the report.
pub fn report(md: &mut String, plan: &Plan, results: &Results) -> Result<()> {
    let (first, steps) = ladder(plan);
    writeln!(md, "## Ceiling\n")?;
    writeln!(
        md,
        "`bnetstat trace --json --port PORT --ring-mib R --batch-ms B` under `loadgen churn PORT \
         {t} {s} RATE`, RATE connections a second paced evenly, from {first} doubling for at \
         most {steps} steps, until the tracer loses events (reports a loss, or prints fewer transitions than the load \
         caused) or the generator falls below 80% of RATE (the machine, not the tracer, is \
         then the limit). Rates are transitions a second \
         the load caused (10 per connection). The ring holds R MiB of 136-byte records; while \
         events flow the reader drains it at most once per B ms, so a ring of N records \
         overflows above roughly N / B transitions a second, or when the reader's CPU share \
         cannot keep up. Right pid: printed transitions naming the right process (the server for \
         sockets on PORT, the client otherwise, as under churn), in the worst step before the \
         first loss; below the ceiling delivery is complete by the ceiling's definition, the owners \
         are checked on their own. {reps} search(es) per setting, settings in rotating order.\n",
        t = plan.threads,
        s = plan.step_secs,
        reps = plan.reps,
    )?;
    writeln!(
        md,
        "| --ring-mib | --batch-ms | highest rate with nothing lost | right pid below that | first rate that lost events | lost there | searches that ended without loss |\n| --- | --- | --- | --- | --- | --- | --- |"
    )?;
    let settings = SETTINGS.iter().filter(|s| results.of(**s).next().is_some());
    for &setting in settings {
        let lost_share = |s: &Search| {
            s.first_loss()
                .map(|l| 100.0 * (l.caused.saturating_sub(l.delivered)) as f64 / l.caused as f64)
        };
        let unreached = results.of(setting).filter(|s| s.unreached).count();
        let total = results.of(setting).count();
        writeln!(
            md,
            "| {} | {}{} | {} | {} | {} | {} | {unreached} of {total} |",
            setting.ring_mib,
            setting.batch_ms,
            if setting == SETTINGS[0] {
                " (defaults)"
            } else {
                ""
            },
            show(results.spread(setting, Search::clean), 0),
            results
                .spread(setting, |s| s.clean_owner_share().map(|x| x * 100.0))
                .map_or("-".into(), |s| format!("{}%", s.show(3))),
            show(
                results.spread(setting, |s| s.first_loss().map(|l| l.rate)),
                0
            ),
            results
                .spread(setting, lost_share)
                .map_or("-".into(), |s| format!("{}%", s.show(2))),
        )?;
    }
    writeln!(md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, lost: u64) -> Step {
        Step {
            rate,
            delivered: 100 - lost,
            right_pid: 100 - lost,
            caused: 100,
            lost,
        }
    }

    #[test]
    fn the_ceiling_is_the_last_clean_rate_before_the_first_loss() {
        let s = Search {
            setting: SETTINGS[0],
            steps: vec![step(1e4, 0), step(2e4, 0), step(4e4, 3)],
            unreached: false,
        };
        assert_eq!(s.clean(), Some(2e4));
        assert_eq!(s.first_loss().map(|l| l.rate), Some(4e4));
    }

    #[test]
    fn an_undercount_without_a_reported_loss_is_a_loss_too() {
        let mut s = step(1e4, 0);
        s.delivered = 99;
        assert!(!s.lossless());
    }

    #[test]
    fn defaults_take_the_worst_repetition() {
        let searches = vec![
            Search {
                setting: SETTINGS[0],
                steps: vec![step(1e4, 0), step(2e4, 0)],
                unreached: true,
            },
            Search {
                setting: SETTINGS[0],
                steps: vec![step(1e4, 0), step(2e4, 5)],
                unreached: false,
            },
        ];
        let r = Results { searches };
        assert_eq!(r.defaults(), (Some(2e4), Some(1e4)));
    }

    #[test]
    fn below_the_ceiling_the_worst_step_is_the_one_with_most_wrong_owners() {
        let mut wrong = step(1e4, 0);
        wrong.right_pid = 90;
        let searches = vec![
            Search {
                setting: SETTINGS[0],
                steps: vec![step(1e4, 0), step(2e4, 0), step(4e4, 0)],
                unreached: true,
            },
            Search {
                setting: SETTINGS[0],
                steps: vec![wrong, step(2e4, 0), step(4e4, 5)],
                unreached: false,
            },
        ];
        let r = Results { searches };
        let (below, worst) = r.below_ceiling();
        // The clean 4e4 step of the first search is at the ceiling, not below.
        assert_eq!(below, 4);
        assert_eq!(worst.map(|w| w.owner_share()), Some(0.9));
    }
}
