//! Names for the numbers in a table: hosts (reverse DNS, resolved in the
//! background with a cache so a table never waits long), services from
//! `/etc/services`, users from `/etc/passwd`, executables and network
//! namespaces. Every answer is untrusted text: views escape it.

use std::{
    cell::RefCell,
    collections::HashMap,
    ffi::CStr,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    sync::{Arc, Condvar, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::{sockdiag::Proto, views::table::Names};

/// How many lookups run at once.
const RESOLVERS: usize = 4;

/// Host names by address; `None` while a look-up is under way.
type HostCache = Arc<(Mutex<HashMap<IpAddr, Option<String>>>, Condvar)>;

/// Names from the system, resolved lazily.
pub struct SystemNames {
    /// `-n`: no host, service or user names.
    numeric: bool,
    services: HashMap<(u16, Proto), String>,
    users: HashMap<u32, String>,
    netns: HashMap<u32, String>,
    hosts: HostCache,
    lookups: Option<mpsc::Sender<IpAddr>>,
    exes: RefCell<HashMap<u32, Option<String>>>,
}

impl SystemNames {
    pub fn new(numeric: bool) -> SystemNames {
        let hosts = Arc::new((Mutex::new(HashMap::new()), Condvar::new()));
        let lookups = (!numeric).then(|| spawn_resolvers(&hosts));
        SystemNames {
            numeric,
            services: if numeric { HashMap::new() } else { services() },
            users: if numeric { HashMap::new() } else { users() },
            netns: netns_names(),
            hosts,
            lookups,
            exes: RefCell::default(),
        }
    }

    /// Starts resolving `addrs` and waits at most `patience` for them, so
    /// the next table shows what came back and numbers for the rest.
    pub fn prefetch(&self, addrs: impl IntoIterator<Item = IpAddr>, patience: Duration) {
        let Some(tx) = &self.lookups else { return };
        let (cache, ready) = &*self.hosts;
        let mut pending = Vec::new();
        {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            for addr in addrs {
                if addr.is_unspecified() || cache.contains_key(&addr) {
                    continue;
                }
                // `None` marks "asked"; a worker replaces it with the answer.
                cache.insert(addr, None);
                pending.push(addr);
                let _ = tx.send(addr);
            }
        }
        let deadline = Instant::now() + patience;
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        while pending
            .iter()
            .any(|a| cache.get(a).is_some_and(Option::is_none))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            cache = ready
                .wait_timeout(cache, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Names for SystemNames {
    fn host(&self, addr: IpAddr) -> Option<String> {
        if self.numeric {
            return None;
        }
        let cache = self.hosts.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&addr).cloned().flatten()
    }

    fn service(&self, port: u16, proto: Proto) -> Option<String> {
        self.services.get(&(port, proto)).cloned()
    }

    fn user(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }

    fn exe(&self, pid: u32) -> Option<String> {
        self.exes
            .borrow_mut()
            .entry(pid)
            .or_insert_with(|| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .clone()
    }

    fn netns(&self, inum: u32) -> Option<String> {
        self.netns.get(&inum).cloned()
    }
}

fn spawn_resolvers(hosts: &HostCache) -> mpsc::Sender<IpAddr> {
    let (tx, rx) = mpsc::channel::<IpAddr>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..RESOLVERS {
        let (rx, hosts) = (Arc::clone(&rx), Arc::clone(hosts));
        // Detached: a lookup stuck on a dead DNS server must not hold up exit.
        thread::spawn(move || {
            loop {
                let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(addr) = next else { return };
                let name = reverse_lookup(addr).unwrap_or_else(|| addr.to_string());
                let (cache, ready) = &*hosts;
                cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(addr, Some(name));
                ready.notify_all();
            }
        });
    }
    tx
}

/// The name `getnameinfo` gives `addr` (hosts file, then DNS).
fn reverse_lookup(addr: IpAddr) -> Option<String> {
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: zeroed sockaddr storage filled for the family; getnameinfo
    // writes a NUL-terminated name into `host`, bounded by its length.
    let rc = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            IpAddr::V4(a) => {
                let sin = &mut *(&raw mut storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                size_of::<libc::sockaddr_in>()
            }
            IpAddr::V6(a) => {
                let sin6 = &mut *(&raw mut storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_addr.s6_addr = a.octets();
                size_of::<libc::sockaddr_in6>()
            }
        };
        libc::getnameinfo(
            (&raw const storage).cast(),
            len as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: getnameinfo succeeded, so `host` holds a C string.
    Some(
        unsafe { CStr::from_ptr(host.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// `/etc/services`: the first name for each port and protocol.
fn services() -> HashMap<(u16, Proto), String> {
    parse_services(&std::fs::read_to_string("/etc/services").unwrap_or_default())
}

fn parse_services(text: &str) -> HashMap<(u16, Proto), String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((port, proto)) = port_proto.split_once('/') else {
            continue;
        };
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => continue,
        };
        if let Ok(port) = port.parse() {
            map.entry((port, proto)).or_insert_with(|| name.to_owned());
        }
    }
    map
}

/// `/etc/passwd`: user names by uid.
pub fn users() -> HashMap<u32, String> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

/// Names `ip netns` gave namespaces (bind mounts under /run/netns), by inode.
fn netns_names() -> HashMap<u32, String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let ino = std::fs::metadata(e.path()).ok()?.ino();
            Some((ino as u32, e.file_name().to_string_lossy().into_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_take_the_first_name_per_port_and_protocol() {
        let map = parse_services(
            "# comment\nhttp 80/tcp www # WWW\nhttp-alt 80/tcp\ndomain 53/udp\nbad line\nx y/z\n",
        );
        assert_eq!(map.get(&(80, Proto::Tcp)).map(String::as_str), Some("http"));
        assert_eq!(
            map.get(&(53, Proto::Udp)).map(String::as_str),
            Some("domain")
        );
        assert_eq!(map.get(&(53, Proto::Tcp)), None);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn numeric_names_nothing() {
        let names = SystemNames::new(true);
        names.prefetch(
            ["127.0.0.1".parse().expect("addr")],
            Duration::from_millis(10),
        );
        assert_eq!(names.host("127.0.0.1".parse().expect("addr")), None);
        assert_eq!(names.service(22, Proto::Tcp), None);
    }

    #[test]
    fn loopback_is_named_from_the_hosts_file_and_cached() {
        let names = SystemNames::new(false);
        let lo: IpAddr = "127.0.0.1".parse().expect("addr");
        names.prefetch([lo], Duration::from_secs(5));
        assert_eq!(names.host(lo).as_deref(), Some("localhost"));
        let started = Instant::now();
        names.prefetch([lo], Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "answered from the cache"
        );
    }
}
