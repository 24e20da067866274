//! The main routing table, from an `RTM_GETROUTE` dump.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, bail};

use crate::{
    decode::Family,
    netlink::{self, attrs, ne_u16, ne_u32},
};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// `struct rtmsg`.
const RTMSG_LEN: usize = 12;
/// `struct rtnexthop`.
const RTNH_LEN: usize = 8;
const RT_TABLE_MAIN: u32 = 254;
/// A cached clone, not a FIB entry: netstat -r shows the FIB.
const RTM_F_CLONED: u32 = 0x200;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_CACHEINFO: u16 = 12;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTAX_WINDOW: u16 = 3;
const RTAX_RTT: u16 = 4;
const RTAX_ADVMSS: u16 = 8;
/// `rtm_protocol` of a route an ICMP redirect installed.
pub const RTPROT_REDIRECT: u8 = 1;

/// `rtm_type` values (`RTN_*`).
pub mod kind {
    pub const UNICAST: u8 = 1;
    pub const BLACKHOLE: u8 = 6;
    pub const UNREACHABLE: u8 = 7;
    pub const PROHIBIT: u8 = 8;
    pub const THROW: u8 = 9;
}

/// One route of the main table, through one next hop: a multipath route
/// is one `Route` per next hop, as `/proc/net/ipv6_route` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub family: Family,
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// `RTN_*`.
    pub kind: u8,
    /// `RTPROT_*`.
    pub protocol: u8,
    pub metric: u32,
    pub ifindex: Option<u32>,
    /// `RTAX_ADVMSS`, bytes; 0 when unset.
    pub advmss: u32,
    /// `RTAX_WINDOW`, bytes; 0 when unset.
    pub window: u32,
    /// `RTAX_RTT`, in the kernel's unit of 1/8 ms; 0 when unset.
    pub rtt: u32,
    /// From `RTA_CACHEINFO`: references and uses the kernel reports.
    pub refs: u32,
    pub used: u32,
}

impl Route {
    /// Whether packets to this route are refused or dropped.
    pub fn rejects(&self) -> bool {
        matches!(
            self.kind,
            kind::BLACKHOLE | kind::UNREACHABLE | kind::PROHIBIT | kind::THROW
        )
    }

    /// Whether the destination is one address, not a network.
    pub fn is_host(&self) -> bool {
        let full = match self.family {
            Family::Inet => 32,
            Family::Inet6 => 128,
        };
        self.prefix_len == full
    }

    /// netstat's flag letters: `U` up, `G` gateway, `H` host, `D` installed
    /// by a redirect, `!` reject. Every FIB entry is up, as in
    /// `/proc/net/route`.
    pub fn flags(&self) -> String {
        let mut f = String::from("U");
        if self.gateway.is_some() {
            f.push('G');
        }
        if self.is_host() {
            f.push('H');
        }
        if self.protocol == RTPROT_REDIRECT {
            f.push('D');
        }
        if self.rejects() {
            f.push('!');
        }
        f
    }

    /// The `RTN_*` type's name, as `ip route` prints it.
    pub fn kind_name(&self) -> String {
        match self.kind {
            kind::UNICAST => "unicast".to_owned(),
            2 => "local".to_owned(),
            3 => "broadcast".to_owned(),
            4 => "anycast".to_owned(),
            5 => "multicast".to_owned(),
            kind::BLACKHOLE => "blackhole".to_owned(),
            kind::UNREACHABLE => "unreachable".to_owned(),
            kind::PROHIBIT => "prohibit".to_owned(),
            kind::THROW => "throw".to_owned(),
            10 => "nat".to_owned(),
            other => other.to_string(),
        }
    }
}

/// The main table's routes of `family`, in the kernel's order.
pub fn dump(nl: &mut netlink::Socket, family: Family) -> Result<Vec<Route>> {
    let mut rtmsg = [0u8; RTMSG_LEN];
    rtmsg[0] = af(family);
    let messages = nl
        .dump(RTM_GETROUTE, &rtmsg)
        .with_context(|| format!("listing {} routes", family.name()))?;
    let mut routes = Vec::new();
    for m in messages.iter().filter(|m| m.kind == RTM_NEWROUTE) {
        routes.extend(parse(&m.payload).context("reading the kernel's routing table")?);
    }
    Ok(routes)
}

fn af(family: Family) -> u8 {
    match family {
        Family::Inet => libc::AF_INET as u8,
        Family::Inet6 => libc::AF_INET6 as u8,
    }
}

/// One `RTM_NEWROUTE` payload: its routes (one per next hop) when it
/// belongs to the main table, none otherwise.
fn parse(payload: &[u8]) -> Result<Vec<Route>> {
    let (Some(header), Some(rest)) = (payload.get(..RTMSG_LEN), payload.get(RTMSG_LEN..)) else {
        bail!("route message of {} bytes", payload.len());
    };
    let family = match i32::from(header[0]) {
        libc::AF_INET => Family::Inet,
        libc::AF_INET6 => Family::Inet6,
        // Other families (MPLS, ...) are not shown.
        _ => return Ok(Vec::new()),
    };
    let flags = ne_u32(&header[8..]).unwrap_or_default();
    let mut table = u32::from(header[4]);
    let mut route = Route {
        family,
        dst: unspecified(family),
        prefix_len: header[1],
        gateway: None,
        kind: header[7],
        protocol: header[5],
        metric: 0,
        ifindex: None,
        advmss: 0,
        window: 0,
        rtt: 0,
        refs: 0,
        used: 0,
    };
    let mut multipath = None;
    for attr in attrs(rest) {
        let (kind, value) = attr?;
        match kind {
            RTA_DST => route.dst = addr(family, value)?,
            RTA_GATEWAY => route.gateway = Some(addr(family, value)?),
            RTA_VIA => route.gateway = Some(via(value)?),
            RTA_OIF => route.ifindex = ne_u32(value),
            RTA_PRIORITY => route.metric = ne_u32(value).unwrap_or_default(),
            RTA_TABLE => table = ne_u32(value).unwrap_or(table),
            RTA_METRICS => metrics(&mut route, value)?,
            RTA_CACHEINFO => {
                route.refs = ne_u32(value).unwrap_or_default();
                route.used = value.get(16..).and_then(ne_u32).unwrap_or_default();
            }
            RTA_MULTIPATH => multipath = Some(value),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN || flags & RTM_F_CLONED != 0 {
        return Ok(Vec::new());
    }
    match multipath {
        Some(hops) => next_hops(&route, hops),
        None => Ok(vec![route]),
    }
}

fn metrics(route: &mut Route, nested: &[u8]) -> Result<()> {
    for attr in attrs(nested) {
        let (kind, value) = attr?;
        let value = ne_u32(value).unwrap_or_default();
        match kind {
            RTAX_WINDOW => route.window = value,
            RTAX_RTT => route.rtt = value,
            RTAX_ADVMSS => route.advmss = value,
            _ => {}
        }
    }
    Ok(())
}

/// `route` once per `struct rtnexthop` in `RTA_MULTIPATH`.
fn next_hops(route: &Route, mut hops: &[u8]) -> Result<Vec<Route>> {
    let mut out = Vec::new();
    while !hops.is_empty() {
        let len = usize::from(ne_u16(hops).context("truncated next hop")?);
        let (Some(hop), Some(ifindex)) = (
            hops.get(..len).filter(|_| len >= RTNH_LEN),
            hops.get(4..).and_then(ne_u32),
        ) else {
            bail!("next hop of {len} bytes in {}", hops.len());
        };
        let mut r = route.clone();
        r.ifindex = Some(ifindex);
        r.gateway = None;
        for attr in attrs(&hop[RTNH_LEN..]) {
            match attr? {
                (RTA_GATEWAY, value) => r.gateway = Some(addr(route.family, value)?),
                (RTA_VIA, value) => r.gateway = Some(via(value)?),
                _ => {}
            }
        }
        out.push(r);
        hops = hops.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(out)
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn addr(family: Family, b: &[u8]) -> Result<IpAddr> {
    match (family, b.len()) {
        (Family::Inet, 4) => Ok(IpAddr::from(<[u8; 4]>::try_from(b)?)),
        (Family::Inet6, 16) => Ok(IpAddr::from(<[u8; 16]>::try_from(b)?)),
        _ => bail!("{}-byte address in a {} route", b.len(), family.name()),
    }
}

/// `struct rtvia`: a next hop of another family (IPv4 routes via IPv6).
fn via(b: &[u8]) -> Result<IpAddr> {
    let family = match ne_u16(b).map(i32::from) {
        Some(libc::AF_INET) => Family::Inet,
        Some(libc::AF_INET6) => Family::Inet6,
        other => bail!("next hop of address family {other:?}"),
    };
    addr(family, &b[2..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::tests::attr;

    fn rtmsg(family: u8, prefix_len: u8, table: u8, kind: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut msg = vec![family, prefix_len, 0, 0, table, 4, 0, kind];
        msg.extend_from_slice(&0u32.to_ne_bytes());
        for a in attrs {
            msg.extend_from_slice(a);
        }
        msg
    }

    const V4: u8 = libc::AF_INET as u8;
    const V6: u8 = libc::AF_INET6 as u8;

    #[test]
    fn a_default_route_via_a_gateway() {
        let msg = rtmsg(
            V4,
            0,
            254,
            kind::UNICAST,
            &[
                attr(RTA_GATEWAY, &[10, 0, 0, 1]),
                attr(RTA_OIF, &3u32.to_ne_bytes()),
                attr(RTA_PRIORITY, &100u32.to_ne_bytes()),
                attr(RTA_TABLE, &254u32.to_ne_bytes()),
            ],
        );
        let routes = parse(&msg).expect("parses");
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!(r.dst, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(r.gateway, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(
            (r.ifindex, r.metric, r.flags().as_str()),
            (Some(3), 100, "UG")
        );
    }

    #[test]
    fn host_and_reject_routes_have_their_flags() {
        let host = rtmsg(V4, 32, 254, kind::UNICAST, &[attr(RTA_DST, &[10, 9, 9, 9])]);
        assert_eq!(parse(&host).expect("parses")[0].flags(), "UH");
        let hole = rtmsg(V6, 64, 254, kind::BLACKHOLE, &[attr(RTA_DST, &[0xfd; 16])]);
        let r = &parse(&hole).expect("parses")[0];
        assert_eq!(
            (r.flags().as_str(), r.kind_name().as_str()),
            ("U!", "blackhole")
        );
    }

    #[test]
    fn only_the_main_table_is_kept() {
        let local = rtmsg(V4, 32, 255, 2, &[attr(RTA_DST, &[127, 0, 0, 1])]);
        assert!(parse(&local).expect("parses").is_empty());
        let big_table = rtmsg(V4, 0, 252, 1, &[attr(RTA_TABLE, &1000u32.to_ne_bytes())]);
        assert!(parse(&big_table).expect("parses").is_empty());
    }

    #[test]
    fn metrics_give_mss_window_and_rtt() {
        let mut nested = attr(RTAX_ADVMSS, &1400u32.to_ne_bytes());
        nested.extend(attr(RTAX_WINDOW, &8192u32.to_ne_bytes()));
        nested.extend(attr(RTAX_RTT, &80u32.to_ne_bytes()));
        let msg = rtmsg(V4, 8, 254, 1, &[attr(RTA_METRICS, &nested)]);
        let r = &parse(&msg).expect("parses")[0];
        assert_eq!((r.advmss, r.window, r.rtt), (1400, 8192, 80));
    }

    #[test]
    fn multipath_routes_are_one_route_per_hop() {
        let mut hops = Vec::new();
        for (ifindex, gw) in [(2u32, [10, 0, 0, 1]), (3, [10, 0, 1, 1])] {
            let gw = attr(RTA_GATEWAY, &gw);
            hops.extend_from_slice(&((RTNH_LEN + gw.len()) as u16).to_ne_bytes());
            hops.extend_from_slice(&[0, 0]);
            hops.extend_from_slice(&ifindex.to_ne_bytes());
            hops.extend(gw);
        }
        let msg = rtmsg(V4, 0, 254, 1, &[attr(RTA_MULTIPATH, &hops)]);
        let routes = parse(&msg).expect("parses");
        let got: Vec<_> = routes.iter().map(|r| (r.ifindex, r.gateway)).collect();
        assert_eq!(
            got,
            vec![
                (Some(2), Some(IpAddr::from([10, 0, 0, 1]))),
                (Some(3), Some(IpAddr::from([10, 0, 1, 1])))
            ]
        );
    }

    #[test]
    fn ipv4_via_ipv6_gateway() {
        let mut via = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        via.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let msg = rtmsg(V4, 0, 254, 1, &[attr(RTA_VIA, &via)]);
        let r = &parse(&msg).expect("parses")[0];
        assert_eq!(r.gateway, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn malformed_routes_are_errors_not_panics() {
        let bad_addr = rtmsg(V4, 24, 254, 1, &[attr(RTA_DST, &[10, 0, 0])]);
        let bad_hop = rtmsg(
            V4,
            0,
            254,
            1,
            &[attr(RTA_MULTIPATH, &[200, 0, 0, 0, 1, 0, 0, 0])],
        );
        let short_hop = rtmsg(V4, 0, 254, 1, &[attr(RTA_MULTIPATH, &[4, 0, 0, 0])]);
        let bad_via = rtmsg(V4, 0, 254, 1, &[attr(RTA_VIA, &[1])]);
        for bad in [&[0u8; 5][..], &bad_addr, &bad_hop, &short_hop, &bad_via] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
