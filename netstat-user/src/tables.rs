//! `bnetstat -i`, `--ethernet` and `-r`: tables read from the kernel over
//! rtnetlink, printed once or redisplayed on an interval.

use std::{
    collections::HashMap,
    io::{self, Write},
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    cli::TableArgs,
    decode::Family,
    links::{self, Link},
    names::SystemNames,
    netlink,
    routes::{self, Route},
    signals,
    views::table::Names as _,
    views::{interfaces, routes as route_view},
};

/// Which table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Interfaces,
    Ethernet,
    Routes,
}

/// What to show and how.
#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub json: bool,
    pub numeric: bool,
    /// Route families, in display order.
    pub families: Vec<Family>,
    /// Redisplay this often; once when `None`.
    pub interval: Option<Duration>,
}

/// `-c` alone redisplays every second, as netstat does.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for all reverse lookups of one display.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a wait between displays checks for Ctrl-C.
const TICK: Duration = Duration::from_millis(50);

impl Options {
    /// The table the arguments ask for; `None` when they name none.
    pub fn from_args(args: &TableArgs) -> Option<Options> {
        let mode = match (args.interfaces, args.ethernet, args.route) {
            (true, _, _) => Mode::Interfaces,
            (_, true, _) => Mode::Ethernet,
            (_, _, true) => Mode::Routes,
            _ => return None,
        };
        // netstat -r shows IPv4 unless asked otherwise; -4 -6 shows both.
        let families = match (args.ipv4, args.ipv6) {
            (false, true) => vec![Family::Inet6],
            (true, true) => vec![Family::Inet, Family::Inet6],
            _ => vec![Family::Inet],
        };
        let interval = args
            .interval
            .or(args.continuous.then_some(DEFAULT_INTERVAL));
        Some(Options {
            mode,
            json: args.json,
            numeric: args.numeric,
            families,
            interval,
        })
    }
}

/// Prints the table to `out`, then again every interval until Ctrl-C.
pub fn run(opts: &Options, out: &mut impl Write) -> Result<()> {
    let mut nl = netlink::Socket::open(libc::NETLINK_ROUTE)?;
    let mut state = State {
        last: None,
        names: SystemNames::new(opts.numeric),
    };
    let mut first = true;
    loop {
        let text = state.display(&mut nl, opts)?;
        let written = (|| {
            // A blank line keeps one display's table apart from the next.
            if !first && !opts.json {
                writeln!(out)?;
            }
            out.write_all(text.as_bytes())?;
            out.flush()
        })();
        match written {
            // A reader that went away (`| head`) is a normal end.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        first = false;
        let Some(interval) = opts.interval else {
            return Ok(());
        };
        let next = Instant::now() + interval;
        while Instant::now() < next {
            if signals::stop_requested() {
                return Ok(());
            }
            thread::sleep(TICK.min(next.saturating_duration_since(Instant::now())));
        }
        if signals::stop_requested() {
            return Ok(());
        }
    }
}

/// What one display needs from the previous ones.
struct State {
    /// The last sample of interface counters, for rates.
    last: Option<(Instant, Vec<Link>)>,
    /// Host names found so far.
    names: SystemNames,
}

impl State {
    fn display(&mut self, nl: &mut netlink::Socket, opts: &Options) -> Result<String> {
        match opts.mode {
            Mode::Interfaces | Mode::Ethernet => {
                let links = links::dump(nl)?;
                let now = Instant::now();
                let (shown, rate_over) = match &self.last {
                    Some((then, prev)) => {
                        let secs = now.duration_since(*then).as_secs_f64();
                        (rates(&links, prev, secs), Some(secs))
                    }
                    None => (links.clone(), None),
                };
                self.last = Some((now, links));
                let view = interfaces::Opts {
                    json: opts.json,
                    rate_over,
                };
                Ok(match opts.mode {
                    Mode::Ethernet => interfaces::render_ethernet(&shown, &view),
                    _ => interfaces::render(&shown, &view),
                })
            }
            Mode::Routes => self.routes(nl, opts),
        }
    }

    fn routes(&mut self, nl: &mut netlink::Socket, opts: &Options) -> Result<String> {
        let ifnames: HashMap<u32, String> = links::dump(nl)?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let mut tables: Vec<(Family, Vec<Route>)> = Vec::new();
        for &family in &opts.families {
            tables.push((family, routes::dump(nl, family)?));
        }
        let addrs: Vec<IpAddr> = tables
            .iter()
            .flat_map(|(_, rs)| rs)
            .flat_map(|r| r.gateway.into_iter().chain(r.is_host().then_some(r.dst)))
            .collect();
        // JSON is always numeric: names are for people.
        if !opts.json {
            self.names.prefetch(addrs.iter().copied(), RESOLVE_TIMEOUT);
        }
        let hosts: HashMap<IpAddr, String> = addrs
            .iter()
            .filter_map(|&a| Some((a, self.names.host(a)?)))
            .collect();
        let view = route_view::Opts {
            json: opts.json,
            numeric: opts.numeric,
            ifnames: &ifnames,
            hosts: &hosts,
        };
        let mut out = String::new();
        for (i, (family, routes)) in tables.iter().enumerate() {
            if i > 0 && !opts.json {
                out.push('\n');
            }
            out.push_str(&route_view::render(*family, routes, &view));
        }
        Ok(out)
    }
}

/// Each link's counters as rates since `prev`. A link that was not there
/// before has no rate yet and waits for the next display.
fn rates(links: &[Link], prev: &[Link], secs: f64) -> Vec<Link> {
    links
        .iter()
        .filter_map(|link| {
            let old = prev
                .iter()
                .find(|p| p.index == link.index && p.name == link.name)?;
            let stats = match (&link.stats, &old.stats) {
                (Some(now), Some(then)) => Some(now.per_second(then, secs)),
                _ => None,
            };
            Some(Link {
                stats,
                ..link.clone()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::Stats;

    fn link(index: u32, name: &str, rx_packets: u64) -> Link {
        Link {
            index,
            name: name.to_owned(),
            mtu: 1500,
            flags: 0,
            stats: Some(Stats {
                rx_packets,
                ..Stats::default()
            }),
        }
    }

    #[test]
    fn rates_pair_links_by_index_and_name() {
        let prev = [link(1, "lo", 10), link(2, "eth0", 100)];
        let now = [link(1, "lo", 30), link(2, "eth1", 500), link(3, "new", 7)];
        let r = rates(&now, &prev, 2.0);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].stats.map(|s| s.rx_packets), Some(10));
    }

    fn args(f: impl FnOnce(&mut TableArgs)) -> TableArgs {
        let mut a = TableArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn no_table_asked_is_none() {
        assert!(Options::from_args(&TableArgs::default()).is_none());
    }

    #[test]
    fn routes_default_to_ipv4_and_both_with_4_and_6() {
        let fam = |f: fn(&mut TableArgs)| {
            Options::from_args(&args(|a| {
                a.route = true;
                f(a)
            }))
            .expect("a mode")
            .families
        };
        assert_eq!(fam(|_| {}), vec![Family::Inet]);
        assert_eq!(fam(|a| a.ipv6 = true), vec![Family::Inet6]);
        assert_eq!(
            fam(|a| {
                a.ipv4 = true;
                a.ipv6 = true
            }),
            vec![Family::Inet, Family::Inet6]
        );
    }

    #[test]
    fn continuous_alone_is_every_second() {
        let o = Options::from_args(&args(|a| {
            a.interfaces = true;
            a.continuous = true;
        }))
        .expect("a mode");
        assert_eq!(o.interval, Some(DEFAULT_INTERVAL));
        let o = Options::from_args(&args(|a| {
            a.ethernet = true;
            a.interval = Some(Duration::from_secs(3));
        }))
        .expect("a mode");
        assert_eq!(
            (o.mode, o.interval),
            (Mode::Ethernet, Some(Duration::from_secs(3)))
        );
    }
}
