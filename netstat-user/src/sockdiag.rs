//! The kernel's socket tables over netlink `sock_diag`, the interface `ss`
//! uses: one dump per family and protocol, no text files under `/proc/net`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, anyhow};
use netstat_common::{AF_INET, AF_INET6};

use crate::netlink;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_msg`.
const INET_DIAG_MSG_LEN: usize = 72;

/// The transport protocol of an inet socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
        }
    }
}

/// One inet socket as `sock_diag` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub proto: Proto,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Kernel state number (UDP uses `ESTABLISHED` for connected, `CLOSE`
    /// for the rest).
    pub state: u8,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// The socket cookie: the id the eBPF side reports too.
    pub cookie: u64,
    pub inode: u32,
    pub uid: u32,
    pub recv_q: u32,
    pub send_q: u32,
    /// Which timer runs (`idiag_timer`: 0 none, 1 retransmit, 2 keepalive,
    /// 3 TIME_WAIT, 4 zero window probe).
    pub timer: u8,
    pub timer_ms: u32,
    pub retrans: u8,
}

/// Every socket of `proto` in `family` in the calling thread's network
/// namespace.
pub fn dump(family: u16, proto: Proto) -> Result<Vec<DiagSocket>> {
    let mut nl = netlink::Socket::open(NETLINK_SOCK_DIAG)?;
    nl.dump(SOCK_DIAG_BY_FAMILY, &request(family, proto))?
        .iter()
        .filter(|m| m.kind == SOCK_DIAG_BY_FAMILY)
        .map(|m| inet_diag_msg(&m.payload, proto).ok_or_else(|| anyhow!("short inet_diag_msg")))
        .collect()
}

/// One UNIX socket as `unix_diag` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixSocket {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: u8,
    /// Kernel state number (`LISTEN`, `ESTABLISHED`, `CLOSE`, ...).
    pub state: u8,
    pub inode: u32,
    /// Bound path; an abstract name starts with `@`. Untrusted.
    pub path: Option<String>,
    /// Inode of the socket at the other end.
    pub peer: Option<u32>,
    pub recv_q: Option<u32>,
    pub send_q: Option<u32>,
    pub uid: Option<u32>,
}

const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_UID: u16 = 7;
/// `UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID`.
const UDIAG_SHOW: u32 = 0x01 | 0x04 | 0x10 | 0x40;

/// Every UNIX socket in the calling thread's network namespace.
pub fn dump_unix() -> Result<Vec<UnixSocket>> {
    let mut nl = netlink::Socket::open(NETLINK_SOCK_DIAG)?;
    let mut req = [0u8; 24];
    req[0] = libc::AF_UNIX as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req[12..16].copy_from_slice(&UDIAG_SHOW.to_ne_bytes());
    nl.dump(SOCK_DIAG_BY_FAMILY, &req)?
        .iter()
        .filter(|m| m.kind == SOCK_DIAG_BY_FAMILY)
        .map(|m| unix_diag_msg(&m.payload))
        .collect()
}

/// `struct unix_diag_msg` (family, type, state, pad, inode, cookie[2]) and
/// the attributes after it.
fn unix_diag_msg(b: &[u8]) -> Result<UnixSocket> {
    let head = b.get(..16).ok_or_else(|| anyhow!("short unix_diag_msg"))?;
    let mut sock = UnixSocket {
        kind: head[1],
        state: head[2],
        inode: u32::from_ne_bytes([head[4], head[5], head[6], head[7]]),
        path: None,
        peer: None,
        recv_q: None,
        send_q: None,
        uid: None,
    };
    for attr in netlink::attrs(&b[16..]) {
        let (kind, value) = attr?;
        match kind {
            UNIX_DIAG_NAME => sock.path = Some(unix_path(value)),
            UNIX_DIAG_PEER => sock.peer = netlink::ne_u32(value),
            UNIX_DIAG_RQLEN => {
                sock.recv_q = netlink::ne_u32(value);
                sock.send_q = value.get(4..).and_then(netlink::ne_u32);
            }
            UNIX_DIAG_UID => sock.uid = netlink::ne_u32(value),
            _ => {}
        }
    }
    Ok(sock)
}

/// A path as netstat prints it: abstract names (leading NUL) with `@`.
fn unix_path(raw: &[u8]) -> String {
    match raw.split_first() {
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        _ => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        }
    }
}

/// `inet_diag_req_v2` asking for every socket in every state.
fn request(family: u16, proto: Proto) -> [u8; 56] {
    let mut req = [0u8; 56];
    req[0] = family as u8;
    req[1] = proto.number();
    // req[2]: no extensions; the inet_diag_sockid after the states matches anything.
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req
}

fn inet_diag_msg(b: &[u8], proto: Proto) -> Option<DiagSocket> {
    if b.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let be16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
    let family = u16::from(b[0]);
    let addr = |o: usize| -> Option<IpAddr> {
        match family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                b[o],
                b[o + 1],
                b[o + 2],
                b[o + 3],
            ))),
            AF_INET6 => {
                let octets: [u8; 16] = b[o..o + 16].try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            _ => None,
        }
    };
    // inet_diag_msg: family, state, timer, retrans, then inet_diag_sockid
    // (sport, dport, src[4], dst[4], if, cookie[2]) at 4, then expires,
    // rqueue, wqueue, uid, inode.
    Some(DiagSocket {
        proto,
        family,
        state: b[1],
        timer: b[2],
        retrans: b[3],
        lport: be16_at(4),
        rport: be16_at(6),
        laddr: addr(8)?,
        raddr: addr(24)?,
        cookie: u64::from(u32_at(44)) | u64::from(u32_at(48)) << 32,
        timer_ms: u32_at(52),
        recv_q: u32_at(56),
        send_q: u32_at(60),
        uid: u32_at(64),
        inode: u32_at(68),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener_msg() -> Vec<u8> {
        let mut b = vec![0u8; INET_DIAG_MSG_LEN];
        b[0] = AF_INET as u8;
        b[1] = 10; // LISTEN
        b[4..6].copy_from_slice(&8080u16.to_be_bytes());
        b[8..12].copy_from_slice(&[127, 0, 0, 1]);
        b[44..48].copy_from_slice(&0xdeadu32.to_ne_bytes());
        b[48..52].copy_from_slice(&1u32.to_ne_bytes());
        b[56..60].copy_from_slice(&3u32.to_ne_bytes());
        b[60..64].copy_from_slice(&128u32.to_ne_bytes());
        b[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        b[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        b
    }

    #[test]
    fn an_inet_diag_msg_parses_to_a_socket() {
        let s = inet_diag_msg(&listener_msg(), Proto::Tcp).expect("parses");
        assert_eq!(
            (s.state, s.lport, s.laddr.to_string()),
            (10, 8080, "127.0.0.1".into())
        );
        assert_eq!((s.raddr.to_string(), s.rport), ("0.0.0.0".into(), 0));
        assert_eq!(s.cookie, 0x1_0000_dead);
        assert_eq!((s.recv_q, s.send_q, s.uid, s.inode), (3, 128, 1000, 4242));
    }

    #[test]
    fn short_or_unknown_family_messages_are_refused() {
        assert_eq!(inet_diag_msg(&listener_msg()[..40], Proto::Tcp), None);
        let mut odd = listener_msg();
        odd[0] = 1;
        assert_eq!(inet_diag_msg(&odd, Proto::Tcp), None);
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize((4 + value.len()).next_multiple_of(4), 0);
        a
    }

    #[test]
    fn a_unix_diag_msg_parses_with_its_attributes() {
        let mut b = vec![libc::AF_UNIX as u8, libc::SOCK_STREAM as u8, 10, 0];
        b.extend_from_slice(&777u32.to_ne_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend(attr(UNIX_DIAG_NAME, b"/run/x.sock"));
        b.extend(attr(UNIX_DIAG_PEER, &12u32.to_ne_bytes()));
        b.extend(attr(UNIX_DIAG_RQLEN, &[1, 0, 0, 0, 128, 0, 0, 0]));
        b.extend(attr(UNIX_DIAG_UID, &1000u32.to_ne_bytes()));
        let s = unix_diag_msg(&b).expect("parses");
        assert_eq!(
            (s.kind, s.state, s.inode),
            (libc::SOCK_STREAM as u8, 10, 777)
        );
        assert_eq!(s.path.as_deref(), Some("/run/x.sock"));
        assert_eq!(
            (s.peer, s.recv_q, s.send_q, s.uid),
            (Some(12), Some(1), Some(128), Some(1000))
        );
        assert!(unix_diag_msg(&b[..10]).is_err());
    }

    #[test]
    fn abstract_names_are_shown_with_an_at_sign() {
        assert_eq!(unix_path(b"\0hidden"), "@hidden");
        assert_eq!(unix_path(b"/tmp/s\0"), "/tmp/s");
    }

    #[test]
    fn the_request_asks_for_every_state() {
        let req = request(AF_INET6, Proto::Udp);
        assert_eq!(&req[..2], &[AF_INET6 as u8, libc::IPPROTO_UDP as u8]);
        assert_eq!(&req[4..8], &u32::MAX.to_ne_bytes());
    }
}
