//! How `bnetstat -r` prints routes: tables like net-tools' `netstat -r`
//! (IPv4) and `netstat -r -6` (IPv6), or JSON lines. Pure functions of the
//! routes and of names already looked up.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
};

use serde::Serialize;

use crate::{decode::Family, escape::printable, routes::Route};

/// How to print, and the names to print with.
#[derive(Clone, Copy, Debug)]
pub struct Opts<'a> {
    pub json: bool,
    /// Addresses as numbers, `0.0.0.0`/`::` rather than `default`.
    pub numeric: bool,
    /// Interface names by index.
    pub ifnames: &'a HashMap<u32, String>,
    /// Host names of addresses, as found; ignored when `numeric`.
    pub hosts: &'a HashMap<IpAddr, String>,
}

/// The routing table of `family` (every route given must be of it).
pub fn render(family: Family, routes: &[Route], opts: &Opts<'_>) -> String {
    let mut out = String::new();
    if opts.json {
        for r in routes {
            let _ = writeln!(out, "{}", json(r, opts));
        }
        return out;
    }
    match family {
        Family::Inet => {
            out.push_str("Kernel IP routing table\n");
            out.push_str(
                "Destination     Gateway         Genmask         Flags   MSS Window  irtt Iface\n",
            );
        }
        Family::Inet6 => {
            out.push_str("Kernel IPv6 routing table\n");
            out.push_str(
                "Destination                    Next Hop                   Flag Met Ref  Use If\n",
            );
        }
    }
    for r in routes {
        let line = match family {
            Family::Inet => format!(
                "{:<15} {:<15} {:<15} {:<5} {:>5} {:<6} {:>5} {}",
                destination(r, opts),
                gateway(r, opts),
                genmask(r.prefix_len),
                r.flags(),
                mss(r),
                r.window,
                irtt_ms(r),
                iface(r, opts)
            ),
            Family::Inet6 => format!(
                "{:<30} {:<26} {:<4} {:<3} {:<1} {:>6} {}",
                ipv6_destination(r, opts),
                gateway(r, opts),
                r.flags(),
                r.metric,
                r.refs,
                r.used,
                iface(r, opts)
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `default` for a default route; a host route's name when one was found;
/// else the address.
fn destination(r: &Route, opts: &Opts<'_>) -> String {
    if opts.numeric {
        return r.dst.to_string();
    }
    if r.prefix_len == 0 {
        return "default".to_owned();
    }
    match opts.hosts.get(&r.dst) {
        Some(name) if r.is_host() => printable(name).into_owned(),
        _ => r.dst.to_string(),
    }
}

/// `dst/prefix` as netstat -6 prints it, but a bare `default` (no `/0`)
/// without `-n`.
fn ipv6_destination(r: &Route, opts: &Opts<'_>) -> String {
    match destination(r, opts) {
        d if !opts.numeric && r.prefix_len == 0 => d,
        d => format!("{d}/{}", r.prefix_len),
    }
}

/// The next hop's name or address; the unspecified address when there is
/// none (the destination is on the link), as netstat prints it.
fn gateway(r: &Route, opts: &Opts<'_>) -> String {
    match r.gateway {
        Some(gw) => match opts.hosts.get(&gw) {
            Some(name) if !opts.numeric => printable(name).into_owned(),
            _ => gw.to_string(),
        },
        None => match r.family {
            Family::Inet => "0.0.0.0".to_owned(),
            Family::Inet6 => "::".to_owned(),
        },
    }
}

fn genmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// As `/proc/net/route` (and so netstat) shows it: the advertised MSS plus
/// the 40 bytes of IPv4 and TCP headers, 0 when unset.
fn mss(r: &Route) -> u32 {
    if r.advmss == 0 {
        0
    } else {
        r.advmss.saturating_add(40)
    }
}

/// The kernel keeps RTAX_RTT in 1/8 ms.
fn irtt_ms(r: &Route) -> u32 {
    r.rtt >> 3
}

fn iface(r: &Route, opts: &Opts<'_>) -> String {
    match r.ifindex.map(|i| (i, opts.ifnames.get(&i))) {
        Some((_, Some(name))) => printable(name).into_owned(),
        Some((i, None)) => format!("if{i}"),
        None => "*".to_owned(),
    }
}

/// The `-r --json` object. Its keys are a documented interface: add,
/// never rename. Always numeric.
#[derive(Serialize)]
struct RouteJson<'a> {
    family: &'static str,
    dst: String,
    prefix_len: u8,
    gateway: Option<String>,
    flags: String,
    #[serde(rename = "type")]
    kind: String,
    metric: u32,
    advmss: u32,
    window: u32,
    irtt_ms: u32,
    #[serde(rename = "ref")]
    refs: u32,
    #[serde(rename = "use")]
    used: u32,
    iface: Option<&'a str>,
    ifindex: Option<u32>,
}

fn json(r: &Route, opts: &Opts<'_>) -> String {
    let obj = RouteJson {
        family: r.family.name(),
        dst: r.dst.to_string(),
        prefix_len: r.prefix_len,
        gateway: r.gateway.map(|g| g.to_string()),
        flags: r.flags(),
        kind: r.kind_name(),
        metric: r.metric,
        advmss: r.advmss,
        window: r.window,
        irtt_ms: irtt_ms(r),
        refs: r.refs,
        used: r.used,
        iface: r
            .ifindex
            .and_then(|i| opts.ifnames.get(&i))
            .map(String::as_str),
        ifindex: r.ifindex,
    };
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_string(&obj).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::routes::kind;

    fn route(family: Family, dst: IpAddr, prefix_len: u8, gateway: Option<IpAddr>) -> Route {
        Route {
            family,
            dst,
            prefix_len,
            gateway,
            kind: kind::UNICAST,
            protocol: 3,
            metric: 0,
            ifindex: Some(2),
            advmss: 0,
            window: 0,
            rtt: 0,
            refs: 0,
            used: 0,
        }
    }

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::from(a)
    }

    struct Names {
        ifnames: HashMap<u32, String>,
        hosts: HashMap<IpAddr, String>,
    }

    impl Names {
        fn new() -> Names {
            Names {
                ifnames: HashMap::from([(2, "eth0".to_owned())]),
                hosts: HashMap::from([
                    (v4([192, 0, 2, 1]), "_gateway".to_owned()),
                    (v4([192, 0, 2, 9]), "evil\x1b[0m".to_owned()),
                ]),
            }
        }

        fn opts(&self, numeric: bool) -> Opts<'_> {
            Opts {
                json: false,
                numeric,
                ifnames: &self.ifnames,
                hosts: &self.hosts,
            }
        }
    }

    fn table() -> Vec<Route> {
        let mut host = route(Family::Inet, v4([192, 0, 2, 9]), 32, None);
        host.advmss = 1400;
        host.rtt = 80;
        let mut hole = route(Family::Inet, v4([10, 0, 0, 0]), 8, None);
        hole.kind = kind::BLACKHOLE;
        hole.ifindex = None;
        vec![
            route(Family::Inet, v4([0, 0, 0, 0]), 0, Some(v4([192, 0, 2, 1]))),
            route(Family::Inet, v4([192, 0, 2, 0]), 24, None),
            host,
            hole,
        ]
    }

    #[test]
    fn numeric_ipv4_table_is_netstat_rn() {
        let names = Names::new();
        assert_eq!(
            render(Family::Inet, &table(), &names.opts(true)),
            "Kernel IP routing table\n\
             Destination     Gateway         Genmask         Flags   MSS Window  irtt Iface\n\
             0.0.0.0         192.0.2.1       0.0.0.0         UG        0 0          0 eth0\n\
             192.0.2.0       0.0.0.0         255.255.255.0   U         0 0          0 eth0\n\
             192.0.2.9       0.0.0.0         255.255.255.255 UH     1440 0         10 eth0\n\
             10.0.0.0        0.0.0.0         255.0.0.0       U!        0 0          0 *\n"
        );
    }

    #[test]
    fn names_are_used_and_escaped_without_n() {
        let names = Names::new();
        let out = render(Family::Inet, &table(), &names.opts(false));
        let rows: Vec<&str> = out.lines().skip(2).collect();
        assert!(rows[0].starts_with("default         _gateway "), "{out}");
        assert!(
            rows[1].starts_with("192.0.2.0 "),
            "networks stay numeric: {out}"
        );
        assert!(rows[2].starts_with("evil\\x1b[0m "), "{out}");
    }

    #[test]
    fn ipv6_table_is_netstat_rn6() {
        let names = Names::new();
        let mut r = route(
            Family::Inet6,
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            0,
            Some("fd00::1".parse().expect("addr")),
        );
        r.metric = 1024;
        let onlink = route(Family::Inet6, "fd00::".parse().expect("addr"), 64, None);
        assert_eq!(
            render(Family::Inet6, &[r, onlink], &names.opts(true)),
            "Kernel IPv6 routing table\n\
             Destination                    Next Hop                   Flag Met Ref  Use If\n\
             ::/0                           fd00::1                    UG   1024 0      0 eth0\n\
             fd00::/64                      ::                         U    0   0      0 eth0\n"
        );
    }

    #[test]
    fn ipv6_default_is_named_without_n() {
        let names = Names::new();
        let r = route(Family::Inet6, IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, None);
        let out = render(Family::Inet6, &[r], &names.opts(false));
        assert!(
            out.lines().nth(2).expect("row").starts_with("default "),
            "{out}"
        );
    }

    #[test]
    fn json_is_numeric_with_documented_keys() {
        let names = Names::new();
        let opts = Opts {
            json: true,
            ..names.opts(false)
        };
        let out = render(Family::Inet, &table(), &opts);
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(rows[0]["dst"], "0.0.0.0");
        assert_eq!(rows[0]["gateway"], "192.0.2.1");
        assert_eq!(rows[0]["iface"], "eth0");
        assert_eq!(rows[2]["irtt_ms"], 10);
        assert_eq!(rows[3]["type"], "blackhole");
        assert!(rows[3]["iface"].is_null() && rows[3]["gateway"].is_null());
        assert_eq!(rows[3]["flags"], "U!");
    }

    #[test]
    fn genmask_of_every_length() {
        assert_eq!(genmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(genmask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(genmask(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
