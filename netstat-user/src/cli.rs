//! The command line.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{decode::TcpState, offsets::VMLINUX_BTF};

/// netstat rebuilt on eBPF: live TCP state, owners always right.
#[derive(Parser, Debug)]
#[command(
    name = "bnetstat",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = TABLE_EXAMPLES
)]
pub struct Cli {
    /// Kernel BTF to read struct offsets from.
    #[arg(long, global = true, value_name = "PATH", default_value = VMLINUX_BTF)]
    pub btf: PathBuf,

    #[command(flatten)]
    pub table: TableArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

const TABLE_EXAMPLES: &str = "\
Without a command, bnetstat lists connections as netstat does.

Examples:
  bnetstat -tanp          every TCP socket, numeric, with its process
  bnetstat -tulpn         listening TCP and UDP sockets
  bnetstat -tn 2          active TCP connections, redisplayed every 2 s
  bnetstat -ta --json     one JSON object per socket
  bnetstat -i             the interface table, like netstat -i
  bnetstat -i 2           packet rates per interface every 2 s
  bnetstat --ethernet     bytes and packets per interface, like Windows' netstat -e
  bnetstat -rn            the IPv4 routing table, numeric
  bnetstat -r -6 --json   the IPv6 routing table, one JSON object per route
  bnetstat -s             the kernel's counters per protocol, like netstat -s
  bnetstat -s -t 5        TCP counters and bnetstat's TCP event counters, every 5 s
  bnetstat -s --proto udp,udp6 --json   UDP counters as JSON";

/// netstat's own flags (Linux meanings): which table to show and how.
#[derive(Args, Debug, Default)]
pub struct TableArgs {
    /// Show the interface table.
    #[arg(short = 'i', long, conflicts_with_all = ["ethernet", "route"])]
    pub interfaces: bool,
    /// Show bytes, packets, discards and errors per interface (Windows' netstat -e).
    #[arg(long, conflicts_with = "route")]
    pub ethernet: bool,
    /// Show the routing table (main table).
    #[arg(short = 'r', long)]
    pub route: bool,
    /// Per-protocol statistics: the kernel's counters, and with an
    /// INTERVAL bnetstat's own from TCP events too.
    #[arg(short = 's', long, conflicts_with_all = ["interfaces", "ethernet", "route"])]
    pub statistics: bool,
    /// With -s: only these protocols (ip, icmp, tcp, udp, ip6, icmp6, tcp6, udp6).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        requires = "statistics"
    )]
    pub proto: Vec<StatsProto>,
    /// Show listening and non-listening sockets.
    #[arg(short, long)]
    pub all: bool,
    /// Show only listening sockets.
    #[arg(short, long)]
    pub listening: bool,
    /// TCP sockets.
    #[arg(short, long)]
    pub tcp: bool,
    /// UDP sockets.
    #[arg(short, long)]
    pub udp: bool,
    /// UNIX domain sockets.
    #[arg(short = 'x', long)]
    pub unix: bool,
    /// IPv4 (with -6 too: both).
    #[arg(short = '4')]
    pub ipv4: bool,
    /// IPv6 (with -4 too: both).
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Numeric addresses, ports and users: no name look-ups.
    #[arg(short, long)]
    pub numeric: bool,
    /// Show the PID and name of the program owning each socket.
    #[arg(short, long)]
    pub program: bool,
    /// Show the executable's full path (Windows netstat's -b).
    #[arg(short = 'b', long = "exe")]
    pub exe: bool,
    /// Extra columns: user and inode.
    #[arg(short, long)]
    pub extend: bool,
    /// Show timers (on, keepalive, timewait) with the time left.
    #[arg(short = 'o', long)]
    pub timers: bool,
    /// Never truncate addresses.
    #[arg(short = 'W', long)]
    pub wide: bool,
    /// One JSON object per socket.
    #[arg(long)]
    pub json: bool,
    /// Redisplay every second.
    #[arg(short, long)]
    pub continuous: bool,
    /// Only sockets with this port at either end (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only sockets owned by this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only sockets in this state, e.g. ESTABLISHED or time-wait (repeatable).
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Vec<TcpState>,
    /// Sockets of every network namespace, with a column naming it.
    #[arg(long)]
    pub all_netns: bool,
    /// Redisplay every INTERVAL seconds; -i and --ethernet then show rates.
    #[arg(value_name = "INTERVAL", value_parser = parse_seconds)]
    pub interval: Option<Duration>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

/// A protocol `-s` can show.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsProto {
    Ip,
    Icmp,
    Tcp,
    Udp,
    Ip6,
    Icmp6,
    Tcp6,
    Udp6,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every TCP state transition as it happens, with its owner.
    #[command(after_help = TRACE_EXAMPLES)]
    Trace(TraceArgs),
    /// A full-screen live table: new connections highlighted, closed ones
    /// fading out, sortable, filterable.
    #[command(after_help = WATCH_KEYS)]
    Watch(WatchArgs),
    /// One line per TCP connection when it closes: owner, bytes each way,
    /// duration, and which end closed first.
    #[command(after_help = LIFE_EXAMPLES)]
    Life(LifeArgs),
    /// The busiest TCP connections and processes by bytes and by new
    /// connections, every interval, like tcptop.
    #[command(after_help = TOP_EXAMPLES)]
    Top(TopArgs),
    /// One record per port event (listen, stop listening, UDP bind and
    /// close, and connects) with the process's executable, command line,
    /// user, cgroup and namespace, captured in the kernel as it happens.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),
    /// Run for days: the live table of every network namespace and event
    /// counters, served as Prometheus metrics over HTTP.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
}

const AUDIT_EXAMPLES: &str = "\
Examples:
  bnetstat audit                                   listeners and UDP binds as they happen
  bnetstat audit --connects --json                 connects too, one JSON object per line
  bnetstat audit --json --output /var/log/bnetstat/audit.jsonl
                                                   append to a file; SIGHUP re-opens it
  bnetstat audit --expect ports.allow --fail-on-unexpected --duration 60
                                                   flag listeners not on the list, exit 1 if any

Listeners and bound UDP sockets open at start-up come first, marked existing.
An --expect file has one rule a line: PROGRAM PROTO PORTS, e.g.
  /usr/sbin/sshd  tcp   22
  nginx           tcp   80,443
  *               udp   5353
  app             tcp6  8000-8099
PROGRAM is a full path, a program name (comm or the executable's file name)
or *; PROTO tcp, udp, tcp4, udp4, tcp6 or udp6; PORTS a list of ports and
ranges, or *.";

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Record outgoing TCP and UDP connects too.
    #[arg(long)]
    pub connects: bool,
    /// Append records to FILE instead of printing them; SIGHUP re-opens it.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Expected listeners: records that open a port not on the list are
    /// flagged unexpected and counted.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Exit non-zero at the end when a record was unexpected.
    #[arg(long, requires = "expect")]
    pub fail_on_unexpected: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

const SERVE_EXAMPLES: &str = "\
Examples:
  bnetstat serve --metrics 127.0.0.1:9830   metrics at http://127.0.0.1:9830/metrics
  bnetstat serve --metrics [::1]:9830 --ring-mib 32

Labels are protocols, states and causes only (no pids, ports or addresses),
so a flood of connections cannot add series.";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    pub metrics: String,
    /// Also write the audit log (as `audit --json --output FILE`); SIGHUP
    /// re-opens it.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// With --output: record outgoing TCP and UDP connects too.
    #[arg(long, requires = "output")]
    pub connects: bool,
    /// With --output: flag records that open a port not in this list.
    #[arg(long, value_name = "FILE", requires = "output")]
    pub expect: Option<PathBuf>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

const TOP_EXAMPLES: &str = "\
Examples:
  bnetstat top                       every second, on a cleared screen
  bnetstat top 5 --count 3           three 5-second intervals
  bnetstat top --port 443 --rows 5   the 5 busiest rows for port 443
  bnetstat top --sort conns          processes by connections opened and accepted
  bnetstat top --json --duration 10  one JSON object per interval for 10 s

KB are 1024 bytes over the interval: what owners passed to sendmsg and took
from recvmsg. OPENED counts connect()s, ACCEPTED connections a listener took in.";

#[derive(Args, Debug)]
pub struct TopArgs {
    /// One JSON object per interval, per line.
    #[arg(long)]
    pub json: bool,
    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub rows: u16,
    /// How to rank processes.
    #[arg(long, value_enum, default_value_t)]
    pub sort: crate::traffic::Sort,
    /// Never clear the screen between intervals (it is cleared only on a terminal).
    #[arg(short = 'C', long)]
    pub noclear: bool,
    /// Only connections owned by this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only connections with this port at either end (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only IPv4.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Stop after printing this many intervals.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Length of an interval in seconds.
    #[arg(value_name = "INTERVAL", value_parser = parse_seconds, default_value = "1")]
    pub interval: Duration,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

const LIFE_EXAMPLES: &str = "\
Examples:
  bnetstat life                      every connection as it closes
  bnetstat life --port 443 --json    connections to or from port 443, as JSON
  bnetstat life --pid 1234 -6        IPv6 connections of pid 1234

A '*' after MS marks a connection open before bnetstat started: its time
and bytes count from when bnetstat first saw it.";

#[derive(Args, Debug)]
pub struct LifeArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only connections owned by this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only connections with this port at either end (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only IPv4.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Stop after printing this many connections.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

const WATCH_KEYS: &str = "\
Keys:
  q, Ctrl-C            quit
  s, S, Left, Right    sort by the next or previous column
  r                    reverse the sort
  /                    type a filter (address, port, program, state); Enter keeps it, Esc clears it
  g                    group by process
  p, Space             pause the table (events are still counted)
  Up, Down, PgUp, PgDn scroll";

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// TCP sockets.
    #[arg(short, long)]
    pub tcp: bool,
    /// UDP sockets.
    #[arg(short, long)]
    pub udp: bool,
    /// Only IPv4.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Numeric addresses and ports: no name look-ups.
    #[arg(short, long)]
    pub numeric: bool,
    /// Sockets of every network namespace, with a column naming it.
    #[arg(long)]
    pub all_netns: bool,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

const TRACE_EXAMPLES: &str = "\
Examples:
  bnetstat trace                     every transition, one line each
  bnetstat trace --port 443 -4       IPv4 connections to or from port 443
  bnetstat trace --pid 1234 --json   one JSON object per line for pid 1234
  bnetstat trace --count 100         stop after 100 transitions";

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only sockets owned by this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only connections with this port at either end (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only IPv4.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Stop after printing this many transitions.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

/// Options for the kernel side, shared by every command that loads it.
#[derive(Args, Debug)]
pub struct KernelArgs {
    /// Kernel ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = RING_MIB, value_parser = parse_ring_mib)]
    pub ring_mib: u32,
    /// While events flow, read the ring at most once per this many ms
    /// (0: on every wake-up). Fewer reads cost less CPU; each record may
    /// wait this long, and the ring must hold what arrives meanwhile.
    #[arg(long, value_name = "MS", default_value_t = BATCH_MS)]
    pub batch_ms: u64,
}

/// The ring buffer's default size.
const RING_MIB: u32 = 8;
/// The default reader batching window.
const BATCH_MS: u64 = 10;

impl Default for KernelArgs {
    fn default() -> Self {
        KernelArgs {
            ring_mib: RING_MIB,
            batch_ms: BATCH_MS,
        }
    }
}

impl KernelArgs {
    /// The reader batching window.
    pub fn batch(&self) -> Duration {
        Duration::from_millis(self.batch_ms)
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// A TCP state by its netstat or ss name, in any case.
fn parse_state(s: &str) -> Result<TcpState, String> {
    let want = s.to_ascii_uppercase().replace('-', "_");
    let want = match want.as_str() {
        "ESTAB" => "ESTABLISHED",
        "FIN_WAIT_1" => "FIN_WAIT1",
        "FIN_WAIT_2" => "FIN_WAIT2",
        "SYN_RECV" | "SYN_RECEIVED" => "SYN_RECV",
        other => other,
    };
    TcpState::ALL
        .into_iter()
        .find(|st| st.name() == want)
        .ok_or_else(|| format!("'{s}' is not a TCP state (ESTABLISHED, LISTEN, TIME_WAIT, ...)"))
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v.is_power_of_two() && v <= 1024 => Ok(v),
        _ => Err(format!("'{s}' is not a power of two from 1 to 1024")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bnetstat").chain(args.iter().copied()))
    }

    #[test]
    fn trace_takes_its_filters() {
        let cli = parse(&[
            "trace", "--json", "--pid", "7", "--port", "80", "--port", "443", "-6",
        ])
        .expect("parses");
        let Some(Command::Trace(t)) = cli.command else {
            panic!("not trace")
        };
        assert!(t.json && t.ipv6 && !t.ipv4);
        assert_eq!((t.pid, t.port), (vec![7], vec![80, 443]));
        assert_eq!(t.kernel.ring_mib, 8);
    }

    #[test]
    fn watch_takes_netstats_selection_flags() {
        let Some(Command::Watch(w)) = parse(&["watch", "-tn4", "--all-netns", "--ring-mib", "16"])
            .expect("parses")
            .command
        else {
            panic!("not watch")
        };
        assert!(w.tcp && w.numeric && w.ipv4 && w.all_netns && !w.udp && !w.ipv6);
        assert_eq!(w.kernel.ring_mib, 16);
        assert!(parse(&["watch", "-4", "-6"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["trace", "--duration", "-1"][..],
            &["trace", "--duration", "soon"],
            &["trace", "--port", "70000"],
            &["trace", "--ring-mib", "3"],
            &["trace", "-4", "-6"],
            &["-t", "--state", "sleeping"],
            &["-i", "-r"],
            &["--ethernet", "-r"],
            &["-i", "--ethernet"],
            &["-i", "0"],
            &["-r", "soon"],
            &["-i", "trace"],
            &["-t", "0"],
            &["-tan", "trace"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn statistics_take_a_protocol_list_and_an_interval() {
        let t = parse(&["-s", "--proto", "tcp,udp6", "2"])
            .expect("parses")
            .table;
        assert!(t.statistics);
        assert_eq!(t.proto, [StatsProto::Tcp, StatsProto::Udp6]);
        assert_eq!(t.interval, Some(Duration::from_secs(2)));
        for args in [
            &["-s", "--proto", "sctp"][..],
            &["--proto", "tcp"],
            &["-s", "-r"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn life_takes_tracelike_filters() {
        let Some(Command::Life(l)) =
            parse(&["life", "--json", "--port", "80", "--count", "2", "-4"])
                .expect("parses")
                .command
        else {
            panic!("not life")
        };
        assert!(l.json && l.ipv4 && !l.ipv6);
        assert_eq!((l.port, l.count), (vec![80], Some(2)));
    }

    #[test]
    fn top_takes_a_trailing_interval_and_its_limits() {
        let Some(Command::Top(t)) = parse(&[
            "top", "--json", "--rows", "5", "--count", "3", "--port", "80", "--sort", "conns",
            "0.5",
        ])
        .expect("parses")
        .command
        else {
            panic!("not top")
        };
        assert!(t.json && !t.noclear);
        assert_eq!((t.rows, t.count, t.port), (5, Some(3), vec![80]));
        assert_eq!(t.sort, crate::traffic::Sort::Conns);
        assert_eq!(t.interval, Duration::from_millis(500));
        let Some(Command::Top(t)) = parse(&["top", "-C"]).expect("parses").command else {
            panic!("not top")
        };
        assert!(t.noclear);
        assert_eq!((t.interval, t.rows), (Duration::from_secs(1), 20));
        for args in [
            &["top", "0"][..],
            &["top", "--rows", "0"],
            &["top", "--sort", "name"],
            &["top", "-4", "-6"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn serve_needs_a_metrics_address() {
        let Some(Command::Serve(s)) =
            parse(&["serve", "--metrics", "127.0.0.1:9830", "--batch-ms", "5"])
                .expect("parses")
                .command
        else {
            panic!("not serve")
        };
        assert_eq!(s.metrics, "127.0.0.1:9830");
        assert_eq!(s.kernel.batch_ms, 5);
        assert!(parse(&["serve"]).is_err());
    }

    #[test]
    fn fractional_durations_are_fine() {
        let Some(Command::Trace(t)) = parse(&["trace", "--duration", "0.5"])
            .expect("parses")
            .command
        else {
            panic!("not trace")
        };
        assert_eq!(t.duration, Some(Duration::from_millis(500)));
    }

    #[test]
    fn netstat_flags_combine_as_netstat_users_type_them() {
        let cli = parse(&["-tulpn", "--port", "22", "2"]).expect("parses");
        let t = cli.table;
        assert!(cli.command.is_none());
        assert!(t.tcp && t.udp && t.listening && t.program && t.numeric && !t.all);
        assert_eq!(t.port, [22]);
        assert_eq!(t.interval, Some(Duration::from_secs(2)));
    }

    #[test]
    fn table_modes_take_their_flags_and_a_trailing_interval() {
        let cli = parse(&["-rn", "-6", "--json"]).expect("parses");
        assert!(cli.command.is_none());
        let t = cli.table;
        assert!(t.route && t.numeric && t.ipv6 && t.json && !t.ipv4);
        assert_eq!(t.interval, None);
        let t = parse(&["-i", "2"]).expect("parses").table;
        assert!(t.interfaces);
        assert_eq!(t.interval, Some(Duration::from_secs(2)));
        let t = parse(&["--ethernet", "-c"]).expect("parses").table;
        assert!(t.ethernet && t.continuous);
    }

    #[test]
    fn states_parse_by_netstat_and_ss_names() {
        for (name, state) in [
            ("ESTABLISHED", TcpState::Established),
            ("estab", TcpState::Established),
            ("time-wait", TcpState::TimeWait),
            ("fin-wait-1", TcpState::FinWait1),
            ("listen", TcpState::Listen),
        ] {
            assert_eq!(parse_state(name), Ok(state), "{name}");
        }
    }
}
