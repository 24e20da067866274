//! The kernel's socket tables over netlink `sock_diag`, the interface `ss`
//! uses: one dump per family and protocol, no text files under `/proc/net`.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use netstat_common::{AF_INET, AF_INET6};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
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
pub fn dump(family: u16, proto: Proto) -> io::Result<Vec<DiagSocket>> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    send(&fd, &request(family, proto))?;
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: recv into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if parse(&buf[..n as usize], proto, &mut sockets)? {
            return Ok(sockets);
        }
    }
}

fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel's netlink address, all zeros but the family.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: msg and addr outlive the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for every socket in every state.
fn request(family: u16, proto: Proto) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 56;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    msg.push(family as u8);
    msg.push(proto.number());
    msg.push(0); // no extensions
    msg.push(0);
    msg.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    msg.resize(len, 0); // inet_diag_sockid: match anything
    msg
}

/// Parses one datagram of the dump into `out`; `Ok(true)` at its end.
fn parse(mut buf: &[u8], proto: Proto, out: &mut Vec<DiagSocket>) -> io::Result<bool> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().map_err(|_| bad("header"))?) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(bad("message length"));
        }
        let body = &buf[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| bad("error message"))?;
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY => {
                out.push(inet_diag_msg(body, proto).ok_or_else(|| bad("short inet_diag_msg"))?)
            }
            _ => {}
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    Ok(false)
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

    fn message(body: &[u8], kind: u16) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m.resize(len.next_multiple_of(4), 0);
        m
    }

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
    fn a_dump_datagram_parses_to_sockets_and_ends_at_done() {
        let mut dgram = message(&listener_msg(), SOCK_DIAG_BY_FAMILY);
        dgram.extend(message(&[0; 4], NLMSG_DONE));
        let mut out = Vec::new();
        assert!(parse(&dgram, Proto::Tcp, &mut out).expect("parses"));
        let s = &out[0];
        assert_eq!(
            (s.state, s.lport, s.laddr.to_string()),
            (10, 8080, "127.0.0.1".into())
        );
        assert_eq!((s.raddr.to_string(), s.rport), ("0.0.0.0".into(), 0));
        assert_eq!(s.cookie, 0x1_0000_dead);
        assert_eq!((s.recv_q, s.send_q, s.uid, s.inode), (3, 128, 1000, 4242));
    }

    #[test]
    fn a_datagram_without_done_asks_for_more() {
        let mut out = Vec::new();
        let dgram = message(&listener_msg(), SOCK_DIAG_BY_FAMILY);
        assert!(!parse(&dgram, Proto::Tcp, &mut out).expect("parses"));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn kernel_errors_and_malformed_messages_are_errors() {
        let mut out = Vec::new();
        let err = parse(
            &message(&(-libc::EPERM).to_ne_bytes(), NLMSG_ERROR),
            Proto::Tcp,
            &mut out,
        );
        assert_eq!(err.expect_err("error").raw_os_error(), Some(libc::EPERM));
        let mut truncated = message(&listener_msg(), SOCK_DIAG_BY_FAMILY);
        truncated[0] = 200;
        assert!(parse(&truncated, Proto::Tcp, &mut out).is_err());
        let short = message(&listener_msg()[..40], SOCK_DIAG_BY_FAMILY);
        assert!(parse(&short, Proto::Tcp, &mut out).is_err());
    }

    #[test]
    fn the_request_asks_for_every_state() {
        let req = request(AF_INET6, Proto::Udp);
        assert_eq!(req.len(), 72);
        assert_eq!(&req[16..18], &[AF_INET6 as u8, libc::IPPROTO_UDP as u8]);
        assert_eq!(&req[20..24], &u32::MAX.to_ne_bytes());
    }
}
