//! bnetstat: netstat rebuilt on eBPF.
//!
//! Data flows one way: `kernel` (load, attach, raw records) and `seed`
//! (the start-up snapshot) -> `decode` (typed events) -> `model` (the live
//! table) -> commands (`trace`, `connections`, `watch`, `life`, `serve`)
//! -> `views` (what is printed or drawn; `serve`'s metrics go out through
//! `http`). `top` feeds events and the kernel's
//! per-socket byte totals to `traffic` (one interval's rows) -> `views`. netstat's other tables (`-i`, `--ethernet`,
//! `-r`) come from rtnetlink: `netlink` -> `links`, `routes` -> `tables` ->
//! `views`; `-s` reads the kernel's MIB files and counts events in `stats`.

mod audit;
mod cgroups;
mod cli;
mod clock;
mod connections;
mod decode;
mod escape;
mod expect;
mod http;
mod kernel;
mod life;
mod links;
mod logfile;
mod model;
mod names;
mod netlink;
mod netns;
mod offsets;
mod procs;
mod records;
mod routes;
mod seed;
mod serve;
mod signals;
mod sockdiag;
mod stats;
mod tables;
mod top;
mod trace;
mod traffic;
mod usage;
mod views;
mod watch;

use std::{fs::File, io, os::fd::AsFd as _, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::Parser as _;

use crate::{
    cli::{Cli, Command, KernelArgs, StatsProto},
    decode::Family,
    kernel::Kernel,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bnetstat: {}", escape::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // audit and serve re-open their log on SIGHUP.
    let reopens = matches!(cli.command, Some(Command::Audit(_) | Command::Serve(_)));
    signals::install(reopens).context("installing signal handlers")?;
    match cli.command {
        None => {
            if cli.table.statistics {
                return stats_command(&cli);
            }
            if let Some(opts) = tables::Options::from_args(&cli.table) {
                return tables::run(&opts, &mut stdout()?);
            }
            let args = cli.table;
            // A table printed once needs no events: the seed is the table.
            let redisplay = args.interval.is_some() || args.continuous;
            // A live table follows UDP sockets too, renames a process's
            // rows when it execs, and reads the queues afresh each time.
            let mut kernel = Kernel::load(&kernel::Options {
                events: redisplay,
                sockets: true,
                queues: redisplay,
                udp: redisplay,
                procs: redisplay,
                ..base(&cli.btf, &args.kernel)
            })?;
            let netns = netns_filter(args.all_netns)?;
            let opts = connections::Options {
                view: views::table::Options {
                    all: args.all,
                    listening: args.listening,
                    tcp: args.tcp,
                    udp: args.udp,
                    unix: args.unix,
                    family: family(args.ipv4, args.ipv6),
                    extra: args.extend,
                    programs: args.program,
                    timers: args.timers,
                    wide: args.wide,
                    exe: args.exe,
                    ports: args.port,
                    pids: args.pid,
                    states: args.state,
                    netns,
                },
                json: args.json,
                numeric: args.numeric,
                interval: args
                    .interval
                    .or(args.continuous.then_some(Duration::from_secs(1))),
            };
            connections::run(&mut kernel, &opts, &mut stdout()?)
        }
        Some(Command::Trace(args)) => {
            // The sockets open now are walked once, for their owners.
            let mut kernel = Kernel::load(&kernel::Options {
                events: true,
                sockets: true,
                ports: &args.port,
                ..base(&cli.btf, &args.kernel)
            })?;
            let opts = trace::Options {
                json: args.json,
                filter: trace::Filter {
                    pids: args.pid,
                    ports: args.port,
                    family: family(args.ipv4, args.ipv6),
                },
                duration: args.duration,
                count: args.count,
            };
            trace::run(&mut kernel, &opts, &mut stdout()?)
        }
        Some(Command::Life(args)) => {
            let mut kernel = Kernel::load(&kernel::Options {
                events: true,
                sockets: true,
                bytes: true,
                ports: &args.port,
                ..base(&cli.btf, &args.kernel)
            })?;
            let opts = life::Options {
                json: args.json,
                filter: trace::Filter {
                    pids: args.pid,
                    ports: args.port,
                    family: family(args.ipv4, args.ipv6),
                },
                duration: args.duration,
                count: args.count,
            };
            life::run(&mut kernel, &opts, &mut stdout()?)
        }
        Some(Command::Top(args)) => {
            let mut kernel = Kernel::load(&kernel::Options {
                events: true,
                sockets: true,
                bytes: true,
                ports: &args.port,
                ..base(&cli.btf, &args.kernel)
            })?;
            let opts = top::Options {
                json: args.json,
                filter: trace::Filter {
                    pids: args.pid,
                    ports: args.port,
                    family: family(args.ipv4, args.ipv6),
                },
                sort: args.sort,
                rows: usize::from(args.rows),
                interval: args.interval,
                count: args.count,
                duration: args.duration,
                no_clear: args.noclear,
            };
            top::run(&mut kernel, &opts, &mut stdout()?)
        }
        Some(Command::Audit(args)) => {
            let expect = args.expect.as_deref().map(load_expect).transpose()?;
            let mut kernel = Kernel::load(&kernel::Options {
                events: true,
                sockets: true,
                udp: true,
                procs: true,
                ..base(&cli.btf, &args.kernel)
            })?;
            let opts = audit::Options {
                json: args.json,
                connects: args.connects,
                output: args.output,
                expect,
                fail_on_unexpected: args.fail_on_unexpected,
                duration: args.duration,
                count: args.count,
            };
            audit::run(&mut kernel, &opts, &mut stdout()?)
        }
        Some(Command::Serve(args)) => {
            // Bound before the kernel side loads: a bad or busy address
            // fails at once.
            let listener = http::bind(&args.metrics)?;
            let audit = match args.output {
                Some(output) => Some(audit::Options {
                    json: true,
                    connects: args.connects,
                    output: Some(output),
                    expect: args.expect.as_deref().map(load_expect).transpose()?,
                    fail_on_unexpected: false,
                    duration: None,
                    count: None,
                }),
                None => None,
            };
            let mut kernel = Kernel::load(&kernel::Options {
                events: true,
                sockets: true,
                udp: true,
                tcp_events: true,
                procs: true,
                ..base(&cli.btf, &args.kernel)
            })?;
            serve::run(&mut kernel, listener, audit.as_ref())
        }
        Some(Command::Watch(args)) => {
            let mut kernel = Kernel::load(&kernel::Options {
                events: true,
                sockets: true,
                udp: true,
                procs: true,
                ..base(&cli.btf, &args.kernel)
            })?;
            let opts = watch::Options {
                select: views::table::Options {
                    all: true,
                    tcp: args.tcp,
                    udp: args.udp,
                    family: family(args.ipv4, args.ipv6),
                    netns: netns_filter(args.all_netns)?,
                    ..views::table::Options::default()
                },
                numeric: args.numeric,
            };
            watch::run(&mut kernel, &opts)
        }
    }
}

/// An `--expect` file, parsed; an error names the file and the line.
fn load_expect(path: &std::path::Path) -> Result<expect::Expected> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    expect::Expected::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `-s`: kernel counters, plus event counters when there is an interval
/// and TCP is shown (only those load the kernel side, and need root).
fn stats_command(cli: &Cli) -> Result<()> {
    let args = &cli.table;
    // netstat's -t and -u pick TCP and UDP, both families, as --proto does.
    let mut protos = args.proto.clone();
    if args.tcp {
        protos.extend([StatsProto::Tcp, StatsProto::Tcp6]);
    }
    if args.udp {
        protos.extend([StatsProto::Udp, StatsProto::Udp6]);
    }
    let opts = stats::Options {
        protos,
        json: args.json,
        interval: args
            .interval
            .or(args.continuous.then_some(Duration::from_secs(1))),
    };
    let mut kernel = if opts.interval.is_some() && opts.shows_tcp() {
        Some(Kernel::load(&kernel::Options {
            events: true,
            tcp_events: true,
            ..base(&cli.btf, &args.kernel)
        })?)
    } else {
        None
    };
    stats::run(kernel.as_mut(), &opts, &mut stdout()?)
}

/// Standard output, buffered in large writes. Not through `io::stdout()`:
/// its line buffering split every block of a busy `trace` into two
/// `write`s, once at the last newline and once for the rest.
fn stdout() -> Result<io::BufWriter<File>> {
    const CAPACITY: usize = 1 << 18;
    let fd = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating standard output")?;
    Ok(io::BufWriter::with_capacity(CAPACITY, File::from(fd)))
}

/// bnetstat's own network namespace, or `None` for every one.
fn netns_filter(all_netns: bool) -> Result<Option<u32>> {
    Ok(if all_netns {
        None
    } else {
        Some(seed::own_netns()?)
    })
}

/// `-4` alone, `-6` alone, or (neither or both) every family.
fn family(ipv4: bool, ipv6: bool) -> Option<Family> {
    match (ipv4, ipv6) {
        (true, false) => Some(Family::Inet),
        (false, true) => Some(Family::Inet6),
        _ => None,
    }
}

/// The kernel side with only what every command needs; each command
/// turns on what it follows.
fn base<'a>(btf: &'a std::path::Path, args: &KernelArgs) -> kernel::Options<'a> {
    kernel::Options {
        btf,
        ring_bytes: args.ring_mib << 20,
        batch: args.batch(),
        events: false,
        udp: false,
        sockets: false,
        queues: false,
        tcp_events: false,
        bytes: false,
        procs: false,
        ports: &[],
    }
}
