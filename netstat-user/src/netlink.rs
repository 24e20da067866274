//! A small netlink client (rtnetlink, sock_diag): one dump request, its
//! replies, and the attributes inside them. Everything the kernel sends is length-checked;
//! a malformed message is an error, never a panic or an out-of-bounds read.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, bail};

/// `struct nlmsghdr`.
const HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// The kernel changed the table during the dump: what we got may be
/// inconsistent, so the dump is repeated.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// Netlink attribute types carry two flag bits (nested, byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Dumps interrupted this many times in a row are an error.
const DUMP_ATTEMPTS: usize = 5;

/// Rounds `len` up to netlink's 4-byte alignment.
fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// One message of a dump: its type and what follows the header.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// A netlink socket to the kernel.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens a socket of netlink `protocol` (`NETLINK_ROUTE`,
    /// `NETLINK_SOCK_DIAG`) in the calling thread's network namespace.
    pub fn open(protocol: libc::c_int) -> Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("opening a netlink socket");
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zero is a valid sockaddr_nl (pid 0: the kernel picks one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("binding a netlink socket");
        }
        Ok(Socket { fd, seq: 0 })
    }

    /// Sends a dump request of type `kind` with `body` (the family header
    /// and any attributes) and returns every reply message up to
    /// `NLMSG_DONE`. An interrupted dump is retried from the start.
    pub fn dump(&mut self, kind: u16, body: &[u8]) -> Result<Vec<Message>> {
        for _ in 0..DUMP_ATTEMPTS {
            if let Some(messages) = self.dump_once(kind, body)? {
                return Ok(messages);
            }
        }
        bail!("the kernel's table kept changing during {DUMP_ATTEMPTS} netlink dumps in a row")
    }

    /// `None` when the kernel flagged the dump as interrupted.
    fn dump_once(&mut self, kind: u16, body: &[u8]) -> Result<Option<Vec<Message>>> {
        self.seq = self.seq.wrapping_add(1);
        let request = request(kind, NLM_F_REQUEST | NLM_F_DUMP, self.seq, body)?;
        // SAFETY: a buffer we own, of the length given; zeroed sockaddr_nl
        // (pid 0) addresses the kernel.
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending a netlink request");
        }
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let len = self.recv(&mut buf)?;
            for msg in Messages::new(&buf[..len]) {
                let msg = msg?;
                if msg.seq != self.seq {
                    continue;
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.kind {
                    NLMSG_DONE => return Ok((!interrupted).then_some(out)),
                    NLMSG_ERROR => return Err(error_reply(msg.payload)),
                    NLMSG_OVERRUN => bail!("netlink reply overrun"),
                    kind => out.push(Message {
                        kind,
                        payload: msg.payload.to_vec(),
                    }),
                }
            }
        }
    }

    /// Receives one datagram whole, growing `buf` when it is too small:
    /// a truncated datagram would lose messages.
    fn recv(&self, buf: &mut Vec<u8>) -> Result<usize> {
        loop {
            // SAFETY: buf is ours and at least buf.len() bytes long.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err).context("receiving a netlink reply");
            }
            let n = n as usize;
            if n > buf.len() {
                buf.resize(n, 0);
                continue;
            }
            // SAFETY: as above; the datagram fits now.
            let got =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got < 0 {
                return Err(io::Error::last_os_error()).context("receiving a netlink reply");
            }
            return Ok(got as usize);
        }
    }
}

/// A request message: header, then `body`, padded.
fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(HDR_LEN + body.len()).context("netlink request too long")?;
    let mut msg = Vec::with_capacity(align(len as usize));
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    msg.resize(align(msg.len()), 0);
    Ok(msg)
}

/// The error an `NLMSG_ERROR` reply carries (a negative errno first).
fn error_reply(payload: &[u8]) -> anyhow::Error {
    match ne_i32(payload) {
        Some(code) if code < 0 => anyhow::Error::new(io::Error::from_raw_os_error(-code))
            .context("the kernel refused a netlink dump"),
        _ => anyhow::anyhow!("malformed netlink error reply"),
    }
}

/// One message in a datagram, borrowed.
#[derive(Debug)]
struct Raw<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages packed in one datagram.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Messages { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Raw<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Some(len) = ne_u32(rest).map(|l| l as usize) else {
            return Some(Err(anyhow::anyhow!(
                "truncated netlink header ({} bytes)",
                rest.len()
            )));
        };
        if len < HDR_LEN || len > rest.len() {
            return Some(Err(anyhow::anyhow!(
                "netlink message length {len} outside 16..={}",
                rest.len()
            )));
        }
        let msg = Raw {
            kind: ne_u16(&rest[4..]).unwrap_or_default(),
            flags: ne_u16(&rest[6..]).unwrap_or_default(),
            seq: ne_u32(&rest[8..]).unwrap_or_default(),
            payload: &rest[HDR_LEN..len],
        };
        self.rest = rest.get(align(len)..).unwrap_or_default();
        Some(Ok(msg))
    }
}

/// The attributes (`struct rtattr` / `struct nlattr`) packed in `buf`, as
/// (type without flag bits, value).
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { rest: buf }
}

/// Iterator returned by [`attrs`].
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let (Some(len), Some(kind)) = (ne_u16(rest), rest.get(2..).and_then(ne_u16)) else {
            return Some(Err(anyhow::anyhow!(
                "truncated netlink attribute ({} bytes)",
                rest.len()
            )));
        };
        let len = usize::from(len);
        if len < 4 || len > rest.len() {
            return Some(Err(anyhow::anyhow!(
                "netlink attribute length {len} outside 4..={}",
                rest.len()
            )));
        }
        self.rest = rest.get(align(len)..).unwrap_or_default();
        Some(Ok((kind & NLA_TYPE_MASK, &rest[4..len])))
    }
}

/// The first two bytes of `b`, native-endian.
pub fn ne_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?))
}

/// The first four bytes of `b`, native-endian.
pub fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// The first four bytes of `b`, native-endian, signed.
pub fn ne_i32(b: &[u8]) -> Option<i32> {
    ne_u32(b).map(|v| v as i32)
}

/// The first eight bytes of `b`, native-endian.
pub fn ne_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// One attribute, padded, as the kernel packs it.
    pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align(out.len()), 0);
        out
    }

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        request(kind, flags, seq, payload).expect("small")
    }

    #[test]
    fn requests_are_padded_and_carry_their_length() {
        let req = request(18, NLM_F_REQUEST | NLM_F_DUMP, 7, &[1, 2, 3]).expect("small");
        assert_eq!(req.len(), 20);
        assert_eq!(ne_u32(&req), Some(19));
        assert_eq!(ne_u16(&req[4..]), Some(18));
        assert_eq!(ne_u16(&req[6..]), Some(0x301));
        assert_eq!(ne_u32(&req[8..]), Some(7));
    }

    #[test]
    fn a_datagram_splits_into_its_messages() {
        let mut buf = message(16, 2, 5, &[9; 5]);
        buf.extend(message(NLMSG_DONE, 2, 5, &[0; 4]));
        let msgs: Vec<Raw<'_>> = Messages::new(&buf).map(|m| m.expect("valid")).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].kind, msgs[0].seq, msgs[0].payload),
            (16, 5, &[9; 5][..])
        );
        assert_eq!(msgs[1].kind, NLMSG_DONE);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let good = message(16, 0, 1, &[0; 8]);
        let mut too_long = good.clone();
        too_long[..4].copy_from_slice(&1000u32.to_ne_bytes());
        let mut too_short = good.clone();
        too_short[..4].copy_from_slice(&3u32.to_ne_bytes());
        for bad in [&good[..10], &too_long[..], &too_short[..], &[1, 2][..]] {
            let first = Messages::new(bad).next().expect("one item");
            assert!(first.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn attributes_are_read_and_flag_bits_dropped() {
        let mut buf = attr(3, b"eth0\0");
        buf.extend(attr(0x8000 | 9, &42u32.to_ne_bytes()));
        let got: Vec<(u16, &[u8])> = attrs(&buf).map(|a| a.expect("valid")).collect();
        assert_eq!(
            got,
            vec![(3, &b"eth0\0"[..]), (9, &42u32.to_ne_bytes()[..])]
        );
    }

    #[test]
    fn malformed_attributes_are_errors_not_panics() {
        let mut overlong = attr(3, b"abc");
        overlong[..2].copy_from_slice(&200u16.to_ne_bytes());
        let mut zero = attr(3, b"abc");
        zero[..2].copy_from_slice(&0u16.to_ne_bytes());
        for bad in [&overlong[..], &zero[..], &[8, 0][..]] {
            assert!(attrs(bad).any(|a| a.is_err()), "{bad:?} accepted");
        }
    }

    #[test]
    fn error_replies_become_os_errors() {
        let err = error_reply(&(-libc::EPERM).to_ne_bytes());
        let io = err.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.raw_os_error(), Some(libc::EPERM));
        assert!(error_reply(&[1]).to_string().contains("malformed"));
    }

    #[test]
    fn short_integers_are_none() {
        assert_eq!(ne_u64(&[0; 7]), None);
        assert_eq!(ne_u32(&[0; 3]), None);
        assert_eq!(ne_u16(&[0]), None);
    }
}
