//! `cargo xtask`: set-up, running and testing bnetstat on a fresh machine.
//!
//! Every step checks before it acts, so a second run costs seconds.

mod bench;

use std::{
    env,
    ffi::OsStr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

/// The bpf-linker release the kernel side is built with.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The toolchain aya-build compiles the eBPF crate with.
const NIGHTLY: &str = "nightly";
/// Debian packages the integration tests use (`prometheus` for promtool,
/// `systemd` for `systemd-analyze verify` of the unit file).
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "strace",
    "tmux",
    "nftables",
    "prometheus",
    "systemd",
];
/// The peers `cargo xtask bench` measures bnetstat against.
const BENCH_PACKAGES: &[&str] = &["libbpf-tools", "iproute2", "net-tools", "tmux"];

#[derive(Parser)]
#[command(about = "Set up, run and test bnetstat")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building bnetstat needs (idempotent).
    Setup,
    /// Set up, build bnetstat (release) and run it with ARGS.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting and lints, run every test, then a smoke bench.
    Test,
    /// Measure bnetstat against tcpstates, tcplife, ss and netstat in the
    /// same run and write BENCHMARKS.md (needs root; about 14 minutes).
    Bench {
        /// Tiny sizes, one repetition: check it works and print the
        /// figures; BENCHMARKS.md is not written.
        #[arg(long)]
        smoke: bool,
        /// Run only this part and print its figures; BENCHMARKS.md is not
        /// written.
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
    },
    /// Run `bnetstat serve` under steady churn for N minutes, sampling its
    /// memory every 10 s, and print whether it stayed flat and lost
    /// nothing (needs root).
    Soak {
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        minutes: u64,
        /// Connections a second, paced evenly; keep it below the ceiling
        /// `cargo xtask bench` measures.
        #[arg(long, default_value_t = bench::soak::RATE)]
        rate: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let root = workspace_root();
    env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    match task {
        Task::Setup => setup(&[]),
        Task::Run { args } => {
            setup(&[])?;
            cargo(&["build", "--release", "-p", "netstat-user"])?;
            let bin = root.join("target/release/bnetstat");
            // Loading eBPF programs needs root: ask for it the usual way.
            let err = if is_root() {
                Command::new(bin).args(args).exec()
            } else {
                Command::new("sudo").arg(bin).args(args).exec()
            };
            Err(err).context("running bnetstat")
        }
        Task::Test => {
            setup(TEST_PACKAGES)?;
            cargo(&["fmt", "--all", "--", "--check"]).context("run `cargo fmt --all`")?;
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                "netstat-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // Apart: with the host crates, feature unification pulls std in.
            cargo(&[
                &format!("+{NIGHTLY}"),
                "clippy",
                "-p",
                "netstat-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])?;
            // The tests run the binary users run: an unoptimised reader
            // falls behind a fast connection loop.
            cargo(&["build", "--release", "-p", "netstat-user"])?;
            let bin = root.join("target/release/bnetstat");
            let status = Command::new("cargo")
                .args(["test", "--workspace"])
                .env("BNETSTAT_BIN", &bin)
                .status()
                .context("running cargo test")?;
            if !status.success() {
                bail!("tests failed");
            }
            // CI exercises the bench too: seconds of it, no timing asserted.
            bench(&root, true, None)
        }
        Task::Bench { smoke, only } => bench(&root, smoke, only),
        Task::Soak { minutes, rate } => {
            let tools = bench_tools(&root, false)?;
            let plan = bench::soak::Plan::minutes(minutes, rate);
            println!("{}", bench::soak(&plan, &tools)?);
            Ok(())
        }
    }
}

/// Installs the peers, builds release bnetstat and the load generator,
/// runs the bench (or `only` one part of it), prints the report and,
/// unless smoke or one part, writes it.
fn bench(root: &Path, smoke: bool, only: Option<bench::Part>) -> Result<()> {
    let tools = bench_tools(root, true)?;
    let plan = if smoke {
        bench::Plan::smoke()
    } else {
        bench::Plan::full()
    };
    let report = match only {
        Some(part) => bench::part(part, &plan, &tools)?,
        None => bench::run(&plan, &tools)?,
    };
    println!("{report}");
    if !smoke && only.is_none() {
        let path = root.join("BENCHMARKS.md");
        std::fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// Checks for root, sets up (with the peers when asked), builds release
/// bnetstat and the load generator.
fn bench_tools(root: &Path, peers: bool) -> Result<bench::Tools> {
    if !is_root() {
        bail!("the bench and the soak load eBPF programs: run them as root");
    }
    if peers {
        setup(BENCH_PACKAGES)?;
        // libbpf-tools attach classic tracepoints, which need tracefs.
        tracefs()?;
    } else {
        setup(&[])?;
    }
    // One cargo call for both: no second lock wait or resolve.
    cargo(&[
        "build",
        "--release",
        "-p",
        "netstat-user",
        "-p",
        "bnetstat-tests",
        "--bin",
        "bnetstat",
        "--bin",
        "loadgen",
    ])?;
    Ok(bench::Tools {
        bnetstat: root.join("target/release/bnetstat"),
        loadgen: root.join("target/release/loadgen"),
        scratch: root.join("target/bench"),
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Installs the eBPF toolchain and `packages`, skipping what is there.
fn setup(packages: &[&str]) -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux): bnetstat needs CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    nightly_with_rust_src()?;
    bpf_linker()?;
    debian_packages(packages)
}

/// Nightly, with rust-src for `-Z build-std` and clippy for the eBPF crate.
fn nightly_with_rust_src() -> Result<()> {
    const COMPONENTS: [&str; 2] = ["rust-src", "clippy"];
    let installed = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", NIGHTLY],
    );
    let result = match installed {
        Ok(list) => {
            let missing: Vec<&str> = COMPONENTS
                .into_iter()
                .filter(|c| !list.lines().any(|l| l.starts_with(c)))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            step(
                &format!("adding {} to the nightly toolchain", missing.join(" ")),
                Command::new("rustup")
                    .args(["component", "add", "--toolchain", NIGHTLY])
                    .args(&missing),
            )
        }
        Err(_) => step(
            "installing the nightly toolchain",
            Command::new("rustup")
                .args([
                    "toolchain",
                    "install",
                    NIGHTLY,
                    "--profile",
                    "minimal",
                    "--component",
                ])
                .arg(COMPONENTS.join(",")),
        ),
    };
    result.context(
        "the eBPF crate needs nightly with rust-src (-Z build-std), and rustup could not get it",
    )
}

/// bpf-linker must link against the same LLVM major as the nightly rustc
/// that emits the bitcode; it is built against the LLVM inside nightly.
fn bpf_linker() -> Result<()> {
    if let Ok(v) = output("bpf-linker", &["--version"])
        && v.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let verbose = output("rustc", &[&format!("+{NIGHTLY}"), "-vV"])?;
    let llvm_major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV printed no LLVM version")?
        .to_owned();
    let sysroot = output("rustc", &[&format!("+{NIGHTLY}"), "--print", "sysroot"])?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let versioned = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .find(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let link = lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&versioned, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    step(
        &format!("building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major}"),
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
                "--locked",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ])
            .env("LLVM_PREFIX", sysroot.trim()),
    )
}

fn debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages {}: install them as root",
            missing.join(" ")
        );
    }
    step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    step(
        &format!("installing {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Mounts tracefs where libbpf looks for it, unless it is there already.
fn tracefs() -> Result<()> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    step(
        &format!("mounting tracefs on {TRACEFS}"),
        Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]),
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn cargo(args: &[&str]) -> Result<()> {
    step(
        &format!("cargo {}", args.join(" ")),
        Command::new("cargo").args(args),
    )
}

fn step(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn output(program: impl AsRef<OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    if !out.status.success() {
        bail!("{} {} failed", program.to_string_lossy(), args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
