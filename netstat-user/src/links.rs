//! Network interfaces and their counters, from an `RTM_GETLINK` dump.

use anyhow::{Context as _, Result};

use crate::netlink::{self, attrs, ne_u32, ne_u64};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_STATS: u16 = 7;
const IFLA_STATS64: u16 = 23;
/// Fields of `rtnl_link_stats{,64}` every kernel has (up to
/// `tx_compressed`); `rx_nohandler` came later (Linux 4.6).
const STATS_FIELDS: usize = 23;

/// One interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// As the kernel gave it: untrusted, print it escaped.
    pub name: String,
    pub mtu: u32,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `None` when the kernel sent no counters for it.
    pub stats: Option<Stats>,
}

/// The counters bnetstat shows, named as in `struct rtnl_link_stats64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub multicast: u64,
    pub rx_fifo_errors: u64,
    pub rx_missed_errors: u64,
    pub tx_fifo_errors: u64,
    /// Packets no protocol took; `None` on kernels without the counter.
    pub rx_nohandler: Option<u64>,
}

impl Stats {
    /// Packets dropped on receive, as `/proc/net/dev` (and so net-tools)
    /// counts them: drops by the stack plus those the device missed.
    pub fn rx_discards(&self) -> u64 {
        self.rx_dropped.saturating_add(self.rx_missed_errors)
    }

    /// Per-second rates from `prev` to `self` over `secs`, rounded. A
    /// counter that went backwards (device reset) counts from zero.
    pub fn per_second(&self, prev: &Stats, secs: f64) -> Stats {
        let rate = |now: u64, then: u64| {
            let delta = if now >= then { now - then } else { now };
            (delta as f64 / secs).round() as u64
        };
        Stats {
            rx_packets: rate(self.rx_packets, prev.rx_packets),
            tx_packets: rate(self.tx_packets, prev.tx_packets),
            rx_bytes: rate(self.rx_bytes, prev.rx_bytes),
            tx_bytes: rate(self.tx_bytes, prev.tx_bytes),
            rx_errors: rate(self.rx_errors, prev.rx_errors),
            tx_errors: rate(self.tx_errors, prev.tx_errors),
            rx_dropped: rate(self.rx_dropped, prev.rx_dropped),
            tx_dropped: rate(self.tx_dropped, prev.tx_dropped),
            multicast: rate(self.multicast, prev.multicast),
            rx_fifo_errors: rate(self.rx_fifo_errors, prev.rx_fifo_errors),
            rx_missed_errors: rate(self.rx_missed_errors, prev.rx_missed_errors),
            tx_fifo_errors: rate(self.tx_fifo_errors, prev.tx_fifo_errors),
            rx_nohandler: self
                .rx_nohandler
                .zip(prev.rx_nohandler)
                .map(|(now, then)| rate(now, then)),
        }
    }

    /// Parses `rtnl_link_stats64` (`wide`) or `rtnl_link_stats` (32-bit).
    fn parse(b: &[u8], wide: bool) -> Option<Stats> {
        let width = if wide { 8 } else { 4 };
        let field = |i: usize| -> Option<u64> {
            let at = b.get(i * width..)?;
            if wide {
                ne_u64(at)
            } else {
                ne_u32(at).map(u64::from)
            }
        };
        if b.len() < STATS_FIELDS * width {
            return None;
        }
        Some(Stats {
            rx_packets: field(0)?,
            tx_packets: field(1)?,
            rx_bytes: field(2)?,
            tx_bytes: field(3)?,
            rx_errors: field(4)?,
            tx_errors: field(5)?,
            rx_dropped: field(6)?,
            tx_dropped: field(7)?,
            multicast: field(8)?,
            rx_fifo_errors: field(14)?,
            rx_missed_errors: field(15)?,
            tx_fifo_errors: field(18)?,
            rx_nohandler: field(23),
        })
    }
}

/// Every interface in the caller's network namespace, by index.
pub fn dump(nl: &mut netlink::Socket) -> Result<Vec<Link>> {
    // AF_UNSPEC and index 0: all interfaces.
    let messages = nl
        .dump(RTM_GETLINK, &[0; IFINFOMSG_LEN])
        .context("listing interfaces")?;
    let mut links = messages
        .iter()
        .filter(|m| m.kind == RTM_NEWLINK)
        .map(|m| parse(&m.payload))
        .collect::<Result<Vec<_>>>()
        .context("reading the kernel's interface list")?;
    links.sort_by_key(|l| l.index);
    Ok(links)
}

/// One `RTM_NEWLINK` payload.
fn parse(payload: &[u8]) -> Result<Link> {
    let (Some(index), Some(flags), Some(rest)) = (
        payload.get(4..).and_then(ne_u32),
        payload.get(8..).and_then(ne_u32),
        payload.get(IFINFOMSG_LEN..),
    ) else {
        anyhow::bail!("interface message of {} bytes", payload.len());
    };
    let mut link = Link {
        index,
        name: String::new(),
        mtu: 0,
        flags,
        stats: None,
    };
    let mut stats32 = None;
    for attr in attrs(rest) {
        let (kind, value) = attr?;
        match kind {
            IFLA_IFNAME => {
                let name = value.split(|&b| b == 0).next().unwrap_or_default();
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_MTU => link.mtu = ne_u32(value).unwrap_or_default(),
            IFLA_STATS64 => link.stats = Stats::parse(value, true),
            IFLA_STATS => stats32 = Stats::parse(value, false),
            _ => {}
        }
    }
    link.stats = link.stats.or(stats32);
    Ok(link)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::netlink::tests::attr;

    /// A `Link` with these counters in `rtnl_link_stats64` field order.
    pub fn stats64(fields: &[u64]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
    }

    fn newlink(index: u32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut msg = vec![0u8; 4];
        msg.extend_from_slice(&index.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        for a in attrs {
            msg.extend_from_slice(a);
        }
        msg
    }

    #[test]
    fn a_link_with_64_bit_counters() {
        let fields: Vec<u64> = (1..=25).collect();
        let msg = newlink(
            7,
            0x1043,
            &[
                attr(IFLA_IFNAME, b"veth0\0"),
                attr(IFLA_MTU, &1500u32.to_ne_bytes()),
                attr(IFLA_STATS, &[0; 23 * 4]),
                attr(IFLA_STATS64, &stats64(&fields)),
            ],
        );
        let link = parse(&msg).expect("parses");
        assert_eq!(
            (link.index, link.name.as_str(), link.mtu),
            (7, "veth0", 1500)
        );
        assert_eq!(link.flags, 0x1043);
        let s = link.stats.expect("stats");
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bytes), (1, 2, 3));
        assert_eq!((s.rx_dropped, s.multicast), (7, 9));
        assert_eq!(
            (s.rx_fifo_errors, s.rx_missed_errors, s.tx_fifo_errors),
            (15, 16, 19)
        );
        assert_eq!(s.rx_nohandler, Some(24));
        assert_eq!(s.rx_discards(), 7 + 16);
    }

    #[test]
    fn old_kernels_fall_back_to_32_bit_counters_without_nohandler() {
        let fields: Vec<u8> = (1..=23u32).flat_map(|f| f.to_ne_bytes()).collect();
        let link = parse(&newlink(1, 0, &[attr(IFLA_STATS, &fields)])).expect("parses");
        let s = link.stats.expect("stats");
        assert_eq!((s.rx_packets, s.tx_fifo_errors), (1, 19));
        assert_eq!(s.rx_nohandler, None);
    }

    #[test]
    fn short_or_missing_counters_are_none() {
        let link = parse(&newlink(1, 0, &[attr(IFLA_STATS64, &[0; 8 * 22])])).expect("parses");
        assert_eq!(link.stats, None);
        assert_eq!(parse(&newlink(1, 0, &[])).expect("parses").stats, None);
    }

    #[test]
    fn truncated_messages_are_errors() {
        assert!(parse(&[0; 12]).is_err());
        let mut msg = newlink(1, 0, &[attr(IFLA_IFNAME, b"x\0")]);
        msg.truncate(msg.len() - 3);
        assert!(parse(&msg).is_err());
    }

    #[test]
    fn names_are_kept_even_when_not_utf8() {
        let link = parse(&newlink(1, 0, &[attr(IFLA_IFNAME, b"a\xffb\0")])).expect("parses");
        assert_eq!(link.name, "a\u{fffd}b");
    }

    #[test]
    fn rates_are_per_second_and_survive_resets() {
        let prev = Stats {
            rx_packets: 100,
            tx_bytes: 1000,
            rx_nohandler: Some(4),
            ..Stats::default()
        };
        let now = Stats {
            rx_packets: 300,
            tx_bytes: 10,
            rx_nohandler: Some(8),
            ..Stats::default()
        };
        let r = now.per_second(&prev, 2.0);
        assert_eq!(
            (r.rx_packets, r.tx_bytes, r.rx_nohandler),
            (100, 5, Some(2))
        );
    }
}
