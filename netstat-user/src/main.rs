//! bnetstat: netstat rebuilt on eBPF.
//!
//! Data flows one way: `kernel` (load, attach, raw records) -> `decode`
//! (typed events) -> commands (`trace`) -> `views` (what is printed).
//! netstat's tables (`-i`, `--ethernet`, `-r`) come from rtnetlink instead:
//! `netlink` -> `links`, `routes` -> `tables` -> `views`.

mod cli;
mod decode;
mod escape;
mod kernel;
mod links;
mod netlink;
mod offsets;
mod resolve;
mod routes;
mod signals;
mod tables;
mod trace;
mod views;

use std::{io, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;

use crate::{
    cli::{Cli, Command, KernelArgs},
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
    signals::install().context("installing signal handlers")?;
    match cli.command {
        None => {
            let Some(opts) = tables::Options::from_args(&cli.table) else {
                bail!(
                    "give a mode: -i (interfaces), --ethernet, -r (routes), or a command such as `trace` (see --help)"
                );
            };
            tables::run(&opts, &mut io::BufWriter::new(io::stdout().lock()))
        }
        Some(Command::Trace(args)) => {
            let mut kernel = load_kernel(&cli.btf, &args.kernel)?;
            let family = match (args.ipv4, args.ipv6) {
                (true, _) => Some(Family::Inet),
                (_, true) => Some(Family::Inet6),
                _ => None,
            };
            let opts = trace::Options {
                json: args.json,
                filter: trace::Filter {
                    pids: args.pid,
                    ports: args.port,
                    family,
                },
                duration: args.duration,
                count: args.count,
            };
            trace::run(
                &mut kernel,
                &opts,
                &mut io::BufWriter::new(io::stdout().lock()),
            )
        }
    }
}

fn load_kernel(btf: &std::path::Path, args: &KernelArgs) -> Result<Kernel> {
    Kernel::load(&kernel::Options {
        btf,
        ring_bytes: args.ring_mib << 20,
    })
}
