//! Parts 1 and 2: the connection rate with each tracer attached, and what
//! each tracer delivered of the transitions the load generator caused.

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use super::{
    Guard, Plan, Spread, Tools, cpu_seconds, first_line_later, free_ports, metric_sum, scrape,
    show, spawn_logged, typed, wait_until,
};

/// What is attached while the load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Nothing,
    Trace,
    Serve,
    Tcpstates,
    Tcplife,
    SsPoll,
}

const CONFIGS: [Config; 6] = [
    Config::Nothing,
    Config::Trace,
    Config::Serve,
    Config::Tcpstates,
    Config::Tcplife,
    Config::SsPoll,
];

/// How often `ss` is polled.
const SS_EVERY: Duration = Duration::from_millis(100);

impl Config {
    fn slug(self) -> &'static str {
        match self {
            Config::Nothing => "nothing",
            Config::Trace => "trace",
            Config::Serve => "serve",
            Config::Tcpstates => "tcpstates",
            Config::Tcplife => "tcplife",
            Config::SsPoll => "ss-poll",
        }
    }

    /// The program and arguments, `PORT` standing for the run's port and
    /// `METRICS` for the metrics' port.
    fn command(self, tools: &Tools) -> Option<(String, Vec<&'static str>)> {
        let bnetstat = tools.bnetstat.display().to_string();
        Some(match self {
            Config::Nothing => return None,
            Config::Trace => (bnetstat, vec!["trace", "--json", "--port", "PORT"]),
            // The live table of every socket, kept by events, and its
            // metrics rendered every 250 ms; it has no port filter.
            Config::Serve => (bnetstat, vec!["serve", "--metrics", "127.0.0.1:METRICS"]),
            // Neither can filter on a port at either end (-L and -D must
            // both match), so they trace everything and only lines with the
            // run's port are counted.
            Config::Tcpstates => ("tcpstates".into(), vec![]),
            Config::Tcplife => ("tcplife".into(), vec![]),
            Config::SsPoll => (
                "ss".into(),
                vec!["-tanpH", "( sport = :PORT or dport = :PORT )"],
            ),
        })
    }

    fn label(self) -> &'static str {
        match self {
            Config::Nothing => "nothing attached",
            Config::Trace => "`bnetstat trace --json`",
            Config::Serve => "`bnetstat serve` (model plus metrics)",
            Config::Tcpstates => "`tcpstates`",
            Config::Tcplife => "`tcplife`",
            Config::SsPoll => "`ss -tanp` every 100 ms",
        }
    }
}

/// Transitions one completed `loadgen churn` connection causes.
pub const TRANSITIONS_PER_CONNECTION: u64 = 10;

/// What the load generator reports.
#[derive(Deserialize, Debug, Clone, Copy)]
pub struct Load {
    pid: u32,
    server_pid: u32,
    port: u16,
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    pub transitions: u64,
}

/// One run of the load with one configuration.
#[derive(Debug, Clone)]
pub struct Run {
    config: Config,
    load: Load,
    /// Lines (transitions, or sessions for tcplife) about the run's port.
    delivered: Option<u64>,
    /// Of those, the ones naming the right pid: the server's for sockets
    /// on the port, the client's for the others.
    right_pid: Option<u64>,
    /// What the tracer said it lost.
    lost: Option<u64>,
    /// The tracer's CPU seconds during the load.
    cpu: Option<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.load.connections as f64 / self.load.seconds
    }

    /// What a complete tracer would have delivered: transitions, or for
    /// tcplife one session per socket.
    fn expected(&self) -> u64 {
        match self.config {
            Config::Tcplife => 2 * self.load.connections,
            Config::SsPoll => self.load.connections,
            _ => self.load.transitions,
        }
    }

    pub fn delivered_share(&self) -> Option<f64> {
        self.delivered.map(|d| d as f64 / self.expected() as f64)
    }

    pub fn owner_share(&self) -> Option<f64> {
        match (self.right_pid, self.delivered) {
            (Some(r), Some(d)) if d > 0 => Some(r as f64 / d as f64),
            _ => None,
        }
    }

    /// CPU seconds (user+system) of the tracer's own process per million
    /// transitions the load caused.
    fn cpu_per_million(&self) -> Option<f64> {
        self.cpu.map(|c| c / self.load.transitions as f64 * 1e6)
    }
}

/// Every run, by repetition.
pub struct Results {
    reps: Vec<Vec<Run>>,
}

impl Results {
    fn runs(&self, config: Config) -> impl Iterator<Item = &Run> {
        self.reps
            .iter()
            .flatten()
            .filter(move |r| r.config == config)
    }

    /// Each repetition's connection rate with `config` over its rate with
    /// nothing attached.
    fn ratios(&self, config: Config) -> Option<Spread> {
        Spread::of(self.reps.iter().filter_map(|rep| {
            let of = |c| rep.iter().find(|r| r.config == c).map(Run::rate);
            Some(of(config)? / of(Config::Nothing)?)
        }))
    }

    pub fn median_ratio(&self, config: Config) -> Option<f64> {
        self.ratios(config).map(|s| s.median)
    }

    pub fn median_cpu(&self, config: Config) -> Option<f64> {
        Spread::of(self.runs(config).filter_map(Run::cpu_per_million)).map(|s| s.median)
    }

    /// The lowest share over every run of `config`.
    pub fn worst_share(&self, config: Config, share: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
        Spread::of(self.runs(config).filter_map(share)).map(|s| s.min)
    }

    fn spread(&self, config: Config, f: impl Fn(&Run) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.runs(config).filter_map(f))
    }
}

pub fn run(plan: &Plan, tools: &Tools) -> Result<Results> {
    let mut reps = Vec::new();
    for rep in 0..plan.reps {
        let mut runs = Vec::new();
        for i in 0..CONFIGS.len() {
            let config = CONFIGS[(i + rep) % CONFIGS.len()];
            eprintln!(
                "xtask: bench churn {}/{}: {}",
                rep + 1,
                plan.reps,
                config.label()
            );
            let run = measure(config, plan, tools)
                .with_context(|| format!("churn with {}", config.label()))?;
            if run.load.errors > 0 {
                eprintln!(
                    "xtask: {} connection attempts failed part-way: transition counts are approximate",
                    run.load.errors
                );
            }
            runs.push(run);
        }
        reps.push(runs);
    }
    Ok(Results { reps })
}

/// Whatever watches the load.
enum Watcher {
    Nothing,
    Process {
        guard: Guard,
        out: std::path::PathBuf,
    },
    Poller {
        stop: Arc<AtomicBool>,
        polls: thread::JoinHandle<Result<Vec<String>>>,
    },
}

fn measure(config: Config, plan: &Plan, tools: &Tools) -> Result<Run> {
    let (port, metrics) = free_ports()?;
    let (p, m) = (port.to_string(), metrics.to_string());
    let command = config.command(tools);
    let args = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .map(|a| a.replace("METRICS", &m).replace("PORT", &p))
            .collect()
    };
    let watcher = match (config, command) {
        (Config::SsPoll, Some((program, a))) => {
            let stop = Arc::new(AtomicBool::new(false));
            let polls = thread::spawn({
                let stop = Arc::clone(&stop);
                let a = args(&a);
                move || poll(&program, &a, &stop)
            });
            Watcher::Poller { stop, polls }
        }
        (_, Some((program, a))) => {
            let (guard, out, err) = spawn_logged(
                Command::new(&program).args(args(&a)),
                &tools.scratch,
                config.slug(),
            )?;
            // Attached once it says so on stderr: bnetstat trace, and serve
            // (which says so once its metrics answer). libbpf-tools print
            // their header into a buffer flushed only at exit, so for them:
            // a BPF link and the epoll their perf buffer is read through,
            // which they create after attaching.
            let mut guard = guard;
            let pid = guard.pid();
            let mut exited = None;
            wait_until(
                &format!("{program} to start"),
                Duration::from_secs(60),
                || {
                    exited = guard.0.try_wait().ok().flatten();
                    exited.is_some()
                        || match config {
                            Config::Trace | Config::Serve => {
                                fs::read_to_string(&err).is_ok_and(|s| s.contains("Tracing"))
                            }
                            _ => has_fds(pid, &["anon_inode:bpf_link", "anon_inode:[eventpoll]"]),
                        }
                },
            )?;
            if let Some(status) = exited {
                let said = fs::read_to_string(&err).unwrap_or_default();
                bail!(
                    "{program} exited ({status}) before it was attached: {}",
                    said.lines().last().unwrap_or("it said nothing")
                );
            }
            Watcher::Process { guard, out }
        }
        (_, None) => Watcher::Nothing,
    };
    let cpu_before = match &watcher {
        Watcher::Process { guard, .. } => Some(cpu_seconds(guard.pid())?),
        _ => None,
    };
    let load = load(tools, port, plan.threads, plan.load_secs, None)?;
    // What the kernel already queued is drained before the count.
    thread::sleep(Duration::from_millis(if plan.smoke { 500 } else { 1000 }));
    let mut run = Run {
        config,
        load,
        delivered: None,
        right_pid: None,
        lost: None,
        cpu: None,
    };
    match watcher {
        Watcher::Nothing => {}
        Watcher::Poller { stop, polls } => {
            stop.store(true, Ordering::Relaxed);
            let polls = polls
                .join()
                .map_err(|_| anyhow::anyhow!("the ss poller panicked"))??;
            let (seen, right) = ss_seen(&polls, &load);
            run.delivered = Some(seen);
            run.right_pid = Some(right);
        }
        Watcher::Process { guard, out } => {
            let after = cpu_seconds(guard.pid())?;
            run.cpu = cpu_before.map(|b| after - b);
            if config == Config::Serve {
                // Once, after the drain: the counter only grows.
                run.lost = match scrape(metrics) {
                    Ok(text) => metric_sum(&text, "bnetstat_events_lost_total"),
                    Err(e) => {
                        eprintln!("xtask: no lost-event count from bnetstat serve: {e:#}");
                        None
                    }
                };
            }
            guard.interrupt()?;
            let text =
                fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
            match config {
                Config::Trace => {
                    let t = trace_lines(&text, &load);
                    run.delivered = Some(t.delivered);
                    run.right_pid = Some(t.right_pid);
                    run.lost = Some(t.lost);
                }
                Config::Tcpstates => {
                    (run.delivered, run.right_pid) = columns(&text, &load, 1, 4, 6);
                }
                Config::Tcplife => {
                    (run.delivered, run.right_pid) = columns(&text, &load, 0, 3, 5);
                }
                Config::Nothing | Config::Serve | Config::SsPoll => {}
            }
            // Hundreds of megabytes at full size: not kept.
            let _ = fs::remove_file(&out);
        }
    }
    Ok(run)
}

/// Whether `pid` holds an fd to each of `targets` (as readlink shows them).
fn has_fds(pid: u32, targets: &[&str]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let links: Vec<_> = fds
        .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .collect();
    targets
        .iter()
        .all(|t| links.iter().any(|l| l.as_os_str() == *t))
}

/// Runs the load generator, bounded in time: `threads` clients for `secs`,
/// at most `rate` connections a second when given.
pub fn load(tools: &Tools, port: u16, threads: u64, secs: u64, rate: Option<u64>) -> Result<Load> {
    Loading::start(tools, port, threads, secs, rate)?.finish()
}

/// The load generator running; killed (with its server) when dropped.
pub struct Loading {
    guard: Guard,
    result: mpsc::Receiver<String>,
    secs: u64,
}

impl Loading {
    /// Starts what [`load`] runs, and returns at once.
    pub fn start(
        tools: &Tools,
        port: u16,
        threads: u64,
        secs: u64,
        rate: Option<u64>,
    ) -> Result<Loading> {
        let mut args = vec![
            "churn".to_owned(),
            port.to_string(),
            threads.to_string(),
            secs.to_string(),
        ];
        args.extend(rate.map(|r| r.to_string()));
        let mut guard = Guard::spawn(
            Command::new(&tools.loadgen)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        )?;
        let stdout = guard.0.stdout.take().context("loadgen stdout")?;
        Ok(Loading {
            guard,
            result: first_line_later(stdout),
            secs,
        })
    }

    /// Waits for its result.
    pub fn finish(self) -> Result<Load> {
        let limit = Duration::from_secs(self.secs + 60);
        let line = self.result.recv_timeout(limit).with_context(|| {
            format!("timed out after {limit:?} waiting for the load generator's result")
        })?;
        let status = self
            .guard
            .finish(Duration::from_secs(10), "the load generator to exit")?;
        if !status.success() {
            bail!("the load generator failed ({status})");
        }
        serde_json::from_str(&line).with_context(|| format!("the load generator printed {line:?}"))
    }
}

/// Polls `ss` until told to stop; returns each poll's output.
fn poll(program: &str, args: &[String], stop: &AtomicBool) -> Result<Vec<String>> {
    let mut polls = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new(program)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        polls.push(String::from_utf8_lossy(&out.stdout).into_owned());
        thread::sleep(SS_EVERY);
    }
    Ok(polls)
}

/// Connections `ss` saw live (not yet in TIME_WAIT, which outlives the run
/// by a minute and would count every connection as seen), and for how many
/// of those the first line seen named the right owner. A connection is
/// known by the client's port; one seen in two polls in a row is counted
/// once.
fn ss_seen(polls: &[String], load: &Load) -> (u64, u64) {
    let owner = |pid: u32| format!("pid={pid},");
    let (client, server) = (owner(load.pid), owner(load.server_pid));
    let mut previous: HashSet<u16> = HashSet::new();
    let (mut seen, mut right) = (0, 0);
    for poll in polls {
        let mut current: HashSet<u16> = HashSet::new();
        for line in poll.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [state, _, _, local, peer, ..] = f[..] else {
                continue;
            };
            if state == "TIME-WAIT" || state == "LISTEN" {
                continue;
            }
            let port_of = |a: &str| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            let server_side = port_of(local) == Some(load.port);
            let Some(client_port) = (if server_side {
                port_of(peer)
            } else {
                port_of(local)
            }) else {
                continue;
            };
            if current.insert(client_port) && !previous.contains(&client_port) {
                seen += 1;
                let want = if server_side { &server } else { &client };
                right += u64::from(line.contains(want.as_str()));
            }
        }
        previous = current;
    }
    (seen, right)
}

/// What `bnetstat trace --json` printed.
pub struct TraceLines {
    pub delivered: u64,
    /// Of those, the ones naming the right pid (see `Run::right_pid`).
    pub right_pid: u64,
    pub lost: u64,
}

pub fn trace_lines(text: &str, load: &Load) -> TraceLines {
    let mut t = TraceLines {
        delivered: 0,
        right_pid: 0,
        lost: 0,
    };
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("{\"lost\":") {
            t.lost += n.trim_end_matches('}').parse::<u64>().unwrap_or(0);
        } else if !line.is_empty() {
            t.delivered += 1;
            let want = if json_number(line, "lport") == Some(u64::from(load.port)) {
                load.server_pid
            } else {
                load.pid
            };
            t.right_pid += u64::from(json_number(line, "pid") == Some(u64::from(want)));
        }
    }
    t
}

/// The number after `"key":` in a flat JSON line: a full parse of a
/// million lines costs seconds in the unoptimised xtask.
fn json_number(line: &str, key: &str) -> Option<u64> {
    let (_, rest) = line.split_once(&format!("\"{key}\":"))?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Lines of a libbpf-tools table with the run's port in the LPORT or
/// RPORT column, and how many of them have the right owner in the PID
/// column (columns from 0).
fn columns(
    text: &str,
    load: &Load,
    pid_col: usize,
    lport: usize,
    rport: usize,
) -> (Option<u64>, Option<u64>) {
    let port = load.port.to_string();
    let (client, server) = (load.pid.to_string(), load.server_pid.to_string());
    let (mut delivered, mut right) = (0, 0);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let server_side = f.get(lport) == Some(&port.as_str());
        if server_side || f.get(rport) == Some(&port.as_str()) {
            delivered += 1;
            let want = if server_side { &server } else { &client };
            right += u64::from(f.get(pid_col) == Some(&want.as_str()));
        }
    }
    (Some(delivered), Some(right))
}

/// Parts 1 and 2 of the report.
pub fn report(md: &mut String, plan: &Plan, tools: &Tools, results: &Results) -> Result<()> {
    writeln!(md, "## Overhead and completeness under churn\n")?;
    writeln!(
        md,
        "The load: `loadgen churn PORT {t} {s}` (tests/src/bin/loadgen.rs): {t} client threads \
         open a loopback connection, send a byte, read the answer and the server's FIN, and \
         close, for {s} s; {t} server threads in a second loadgen process accept, answer and \
         close first. Each completed connection causes exactly 10 TCP state transitions (5 per \
         side: checked once against `bnetstat trace --json --port PORT`, which printed \
         exactly 10 per connection plus 2), plus 2 for the listener; the generator prints that \
         count. The right owner of a socket on PORT is the server process, of the others the \
         client process: on loopback the peer's packets are processed in the sender's \
         softirq, so a tracer that names the current task names the wrong one. A fresh port \
         per run; \
         each tracer's output goes to a file (not /dev/null) so what it delivered can be \
         counted afterwards.\n",
        t = plan.threads,
        s = plan.load_secs
    )?;
    writeln!(
        md,
        "| attached | connections/s | rate vs nothing attached | CPU seconds (user+system) of the tracer's own process per million events | delivered | right pid | lost (reported) |\n| --- | --- | --- | --- | --- | --- | --- |"
    )?;
    for config in CONFIGS {
        let pct = |f: &dyn Fn(&Run) -> Option<f64>| {
            let s = results.spread(config, |r| f(r).map(|x| x * 100.0));
            if s.is_some() {
                format!("{}%", show(s, 3))
            } else {
                "-".into()
            }
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            config.label(),
            show(results.spread(config, |r| Some(r.rate())), 0),
            if config == Config::Nothing {
                "1".into()
            } else {
                show(results.ratios(config), 3)
            },
            show(results.spread(config, Run::cpu_per_million), 2),
            pct(&Run::delivered_share),
            pct(&Run::owner_share),
            show(results.spread(config, |r| r.lost.map(|l| l as f64)), 0),
        )?;
    }
    let errors: u64 = results.reps.iter().flatten().map(|r| r.load.errors).sum();
    writeln!(
        md,
        "\n- delivered: for `bnetstat trace` and `tcpstates`, transitions on the run's port \
         over the count the generator caused; for `tcplife`, sessions over 2 per connection \
         (it prints one line per socket, not transitions); for `ss`, connections seen live \
         (any state but TIME-WAIT, which outlives the run and would make every connection look \
         seen) over connections made. `bnetstat serve` prints no events, so it has no delivered \
         or right-pid figure; its lost column is `bnetstat_events_lost_total` (both causes) \
         from one scrape of its metrics after the drain. It traces every socket on the host, \
         not only PORT's, as `tcpstates` and `tcplife` do.\n\
         - right pid: the share of delivered lines naming the right process (server for sockets \
         on PORT, client otherwise).\n\
         - CPU: user-space CPU, the user plus system time (utime+stime in /proc/PID/stat) of \
         the tracer's own process from after it started to the end of the drain, per million \
         events (transitions the load caused). The in-kernel BPF programs' cost is not in it: \
         it lands in the load's own time, so it shows in the rate column instead.\n\
         - connection attempts that failed part-way, over all runs: {errors}.\n"
    )?;
    writeln!(
        md,
        "Commands (PORT is each run's port, METRICS another free port):\n\n```sh"
    )?;
    for config in CONFIGS {
        if let Some((program, args)) = config.command(tools) {
            let program = program.replace(
                &*tools.bnetstat.display().to_string(),
                "target/release/bnetstat",
            );
            let args: Vec<&str> = args
                .iter()
                .map(|a| {
                    if a.contains("METRICS") {
                        "127.0.0.1:METRICS"
                    } else {
                        a
                    }
                })
                .collect();
            writeln!(md, "{}", typed(&program, &args))?;
        }
    }
    writeln!(
        md,
        "target/release/loadgen churn PORT {} {}\n```\n",
        plan.threads, plan.load_secs
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOAD: Load = Load {
        pid: 7,
        server_pid: 8,
        port: 9000,
        connections: 2,
        errors: 0,
        seconds: 1.0,
        transitions: 22,
    };

    #[test]
    fn ss_counts_live_connections_once_by_client_port() {
        let polls = [
            "ESTAB 0 0 127.0.0.1:40000 127.0.0.1:9000 users:((\"loadgen\",pid=7,fd=3))\n\
             SYN-RECV 0 0 127.0.0.1:9000 127.0.0.1:40000\n\
             TIME-WAIT 0 0 127.0.0.1:9000 127.0.0.1:40001\n"
                .to_owned(),
            "FIN-WAIT-1 0 0 127.0.0.1:9000 127.0.0.1:40000 users:((\"loadgen\",pid=8,fd=9))\n\
             ESTAB 0 0 127.0.0.1:9000 127.0.0.1:40002 users:((\"loadgen\",pid=7,fd=3))\n"
                .to_owned(),
        ];
        assert_eq!(ss_seen(&polls, &LOAD), (2, 1));
    }

    #[test]
    fn trace_lines_count_transitions_owners_and_lost() {
        let text = "{\"ts_ns\":1,\"pid\":7,\"comm\":\"loadgen\",\"lport\":40000}\n\
                    {\"ts_ns\":2,\"pid\":8,\"comm\":\"loadgen\",\"lport\":9000}\n\
                    {\"ts_ns\":2,\"pid\":7,\"comm\":\"loadgen\",\"lport\":9000}\n\
                    {\"lost\":3}\n{\"ts_ns\":3,\"pid\":null,\"lport\":40000}\n";
        let t = trace_lines(text, &LOAD);
        assert_eq!((t.delivered, t.right_pid, t.lost), (4, 2, 3));
    }

    #[test]
    fn libbpf_tools_lines_are_counted_by_port_column() {
        let text = "SKADDR PID COMM LADDR LPORT RADDR RPORT OLDSTATE -> NEWSTATE MS\n\
                    ffff 8 loadgen 127.0.0.1 9000 127.0.0.1 40000 LISTEN -> SYN_RECV 0.001\n\
                    ffff 7 loadgen 127.0.0.1 0 127.0.0.1 9000 CLOSE -> SYN_SENT 0.0\n\
                    ffff 7 loadgen 127.0.0.1 9000 127.0.0.1 40000 SYN_RECV -> ESTABLISHED 0.01\n\
                    ffff 7 loadgen 127.0.0.1 1234 127.0.0.1 4321 SYN_SENT -> ESTABLISHED 0.01\n";
        assert_eq!(columns(text, &LOAD, 1, 4, 6), (Some(3), Some(2)));
    }
}
