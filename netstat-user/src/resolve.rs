//! Host names of addresses, by reverse lookup, for `-r` without `-n`.

use std::{
    collections::HashMap,
    ffi::CStr,
    net::IpAddr,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// glibc's `NI_MAXHOST`.
const NI_MAXHOST: usize = 1025;

/// Names looked up so far, including the addresses that have none, so a
/// redisplay does not wait for the same slow lookup again.
#[derive(Default)]
pub struct Resolver {
    known: HashMap<IpAddr, Option<String>>,
}

impl Resolver {
    /// Looks up the addresses not seen before, all at once, waiting at most
    /// `timeout`: a lookup still running then is given up (its thread ends
    /// on its own) and the address stays numeric.
    pub fn lookup(&mut self, addrs: impl IntoIterator<Item = IpAddr>, timeout: Duration) {
        let (tx, rx) = mpsc::channel();
        let mut pending = 0usize;
        for addr in addrs {
            if self.known.contains_key(&addr) {
                continue;
            }
            self.known.insert(addr, None);
            pending += 1;
            let tx = tx.clone();
            thread::spawn(move || {
                let _ = tx.send((addr, reverse(addr)));
            });
        }
        let deadline = Instant::now() + timeout;
        while pending > 0 {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((addr, name)) => {
                    pending -= 1;
                    self.known.insert(addr, name);
                }
                Err(_) => break,
            }
        }
    }

    /// The names found, by address.
    pub fn names(&self) -> HashMap<IpAddr, String> {
        self.known
            .iter()
            .filter_map(|(a, n)| Some((*a, n.clone()?)))
            .collect()
    }
}

/// `getnameinfo(NI_NAMEREQD)`: `/etc/hosts`, DNS, whatever nsswitch says.
fn reverse(addr: IpAddr) -> Option<String> {
    let mut host = [0 as libc::c_char; NI_MAXHOST];
    // SAFETY: zeroed sockaddr_in/in6 are valid; each is passed with its own
    // size, and host with its length; getnameinfo NUL-terminates on success.
    let rc = unsafe {
        match addr {
            IpAddr::V4(a) => {
                let mut sin: libc::sockaddr_in = std::mem::zeroed();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                libc::getnameinfo(
                    (&raw const sin).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    host.as_mut_ptr(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
            IpAddr::V6(a) => {
                let mut sin6: libc::sockaddr_in6 = std::mem::zeroed();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_addr.s6_addr = a.octets();
                libc::getnameinfo(
                    (&raw const sin6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    host.as_mut_ptr(),
                    host.len() as libc::socklen_t,
                    std::ptr::null_mut(),
                    0,
                    libc::NI_NAMEREQD,
                )
            }
        }
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: NUL-terminated within host on success.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_has_a_name_and_is_looked_up_once() {
        let mut r = Resolver::default();
        let lo = IpAddr::from([127, 0, 0, 1]);
        r.lookup([lo, lo], Duration::from_secs(5));
        assert!(r.names().contains_key(&lo), "127.0.0.1 in /etc/hosts");
        assert_eq!(r.known.len(), 1);
    }
}
