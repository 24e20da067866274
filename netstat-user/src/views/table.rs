//! The connection table as `netstat` prints it (net-tools column layout,
//! so eyes and scripts carry over), and as JSON lines. Pure functions of
//! the model.

use std::net::IpAddr;

use serde::Serialize;

use crate::{
    decode::{Family, TcpState},
    escape::printable,
    model::{Brief, Model, Sock, TimerKind},
    sockdiag::Proto,
};

/// Which sockets, and which columns.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `-a`: listening and non-listening.
    pub all: bool,
    /// `-l`: listening only.
    pub listening: bool,
    pub tcp: bool,
    pub udp: bool,
    /// `-x`: UNIX sockets.
    pub unix: bool,
    pub family: Option<Family>,
    /// `-e`: user and inode.
    pub extra: bool,
    /// `-p`: PID/Program name.
    pub programs: bool,
    /// `-o`: timers.
    pub timers: bool,
    /// `-W`: never cut addresses.
    pub wide: bool,
    /// `-b`: the executable's path.
    pub exe: bool,
    /// `--port`: either end.
    pub ports: Vec<u16>,
    /// `--pid`.
    pub pids: Vec<u32>,
    /// `--state`.
    pub states: Vec<TcpState>,
    /// Only this network namespace (`None`: all, with a column naming each).
    pub netns: Option<u32>,
}

/// Names for numbers; every method may answer `None` (shown numerically).
pub trait Names {
    fn host(&self, _addr: IpAddr) -> Option<String> {
        None
    }
    fn service(&self, _port: u16, _proto: Proto) -> Option<String> {
        None
    }
    fn user(&self, _uid: u32) -> Option<String> {
        None
    }
    fn exe(&self, _pid: u32) -> Option<String> {
        None
    }
    fn netns(&self, _inum: u32) -> Option<String> {
        None
    }
}

/// The sockets `opts` selects, in display order.
pub fn select<'m>(model: &'m Model, opts: &Options) -> Vec<(u64, &'m Sock)> {
    let selection = Selection::new(opts);
    let mut rows: Vec<(u64, &Sock)> = model
        .rows()
        .filter(|(b, _)| selection.picks(b))
        .map(|(b, s)| (b.cookie, s))
        .collect();
    // Cookies are unique, so no two keys are equal: an unstable sort is exact.
    rows.sort_unstable_by(|(ca, a), (cb, b)| {
        (
            proto_name(a),
            a.netns,
            a.laddr,
            a.lport,
            a.raddr,
            a.rport,
            ca,
        )
            .cmp(&(
                proto_name(b),
                b.netns,
                b.laddr,
                b.lport,
                b.raddr,
                b.rport,
                cb,
            ))
    });
    rows
}

/// The sockets [`Options`] select, made ready to test every row of a big
/// table against.
pub struct Selection<'o> {
    tcp: bool,
    udp: bool,
    opts: &'o Options,
    /// Whether `--port`, `--pid` or `--state` narrow it further.
    listed: bool,
}

impl Selection<'_> {
    /// What `opts` select.
    pub fn new(opts: &Options) -> Selection<'_> {
        let (tcp, udp) = if opts.tcp || opts.udp || opts.unix {
            (opts.tcp, opts.udp)
        } else {
            (true, true)
        };
        Selection {
            tcp,
            udp,
            opts,
            listed: !(opts.ports.is_empty() && opts.pids.is_empty() && opts.states.is_empty()),
        }
    }

    /// Whether it selects the socket `b` is the brief of.
    #[inline]
    pub fn picks(&self, b: &Brief) -> bool {
        let opts = self.opts;
        (match b.proto {
            Proto::Tcp => self.tcp,
            Proto::Udp => self.udp,
        }) && opts.family.is_none_or(|f| f == b.family)
            && opts.netns.is_none_or(|n| n == b.netns)
            && shows(opts, is_listening(b.proto, b.state))
            && (!self.listed || self.lists(b))
    }

    /// The rarely given part of [`Self::picks`], out of the common way.
    #[inline(never)]
    fn lists(&self, b: &Brief) -> bool {
        let opts = self.opts;
        (opts.ports.is_empty() || opts.ports.contains(&b.lport) || opts.ports.contains(&b.rport))
            && (opts.pids.is_empty() || b.pid().is_some_and(|p| opts.pids.contains(&p)))
            && (opts.states.is_empty() || opts.states.contains(&b.state))
    }
}

/// netstat's idea of a server: a TCP listener, or an unconnected UDP socket.
pub fn is_listening(proto: Proto, state: TcpState) -> bool {
    match proto {
        Proto::Tcp => state == TcpState::Listen,
        Proto::Udp => state != TcpState::Established,
    }
}

/// `tcp`, `tcp6`, `udp` or `udp6`.
pub fn proto_name(s: &Sock) -> &'static str {
    match (s.proto, s.family) {
        (Proto::Tcp, Family::Inet) => "tcp",
        (Proto::Tcp, Family::Inet6) => "tcp6",
        (Proto::Udp, Family::Inet) => "udp",
        (Proto::Udp, Family::Inet6) => "udp6",
    }
}

/// The state column: netstat leaves unconnected UDP blank and shows request
/// sockets as SYN_RECV.
pub fn state_name(s: &Sock) -> &'static str {
    match (s.proto, s.state) {
        (Proto::Udp, TcpState::Established) => "ESTABLISHED",
        (Proto::Udp, _) => "",
        (_, TcpState::NewSynRecv) => "SYN_RECV",
        (_, state) => state.name(),
    }
}

impl Options {
    /// Whether TCP or UDP sockets are asked for: yes unless only `-x` is.
    pub fn inet(&self) -> bool {
        self.tcp || self.udp || !self.unix
    }
}

/// Which sockets the title says are shown.
pub fn which(opts: &Options) -> &'static str {
    match (opts.all, opts.listening) {
        (true, _) => "servers and established",
        (false, true) => "only servers",
        (false, false) => "w/o servers",
    }
}

/// Whether a listening (or not) socket is shown: `-a` all, `-l` servers only,
/// otherwise the rest.
pub fn shows(opts: &Options, listening: bool) -> bool {
    opts.all || opts.listening == listening
}

/// The whole table, header included; `now_ns` (`CLOCK_BOOTTIME`) dates
/// the timers.
pub fn render(model: &Model, opts: &Options, names: &dyn Names, now_ns: u64) -> String {
    let rows = select(model, opts);
    let mut out = String::new();
    out.push_str(&format!("Active Internet connections ({})\n", which(opts)));
    if opts.netns.is_none() {
        out.push_str(&format!("{:<20} ", "Netns"));
    }
    out.push_str("Proto Recv-Q Send-Q Local Address           Foreign Address         State      ");
    if opts.extra {
        out.push_str(" User       Inode     ");
    }
    if opts.programs {
        out.push_str(" PID/Program name    ");
    }
    if opts.timers {
        out.push_str(" Timer");
    }
    if opts.exe {
        out.push_str(" Executable");
    }
    trim_end(&mut out);
    out.push('\n');
    for (_, s) in rows {
        if opts.netns.is_none() {
            let ns = names
                .netns(s.netns)
                .unwrap_or_else(|| format!("net:[{}]", s.netns));
            out.push_str(&format!("{:<20} ", printable(&ns)));
        }
        let local = endpoint(s.laddr, s.lport, s.proto, names, opts.wide);
        let remote = endpoint(s.raddr, s.rport, s.proto, names, opts.wide);
        out.push_str(&format!(
            "{:<4}  {:>6} {:>6} {:<23} {:<23} {:<11}",
            proto_name(s),
            s.recv_q.unwrap_or(0),
            s.send_q.unwrap_or(0),
            local,
            remote,
            state_name(s)
        ));
        if opts.extra {
            let uid = s.uid.unwrap_or(0);
            let user = names.user(uid).unwrap_or_else(|| uid.to_string());
            out.push_str(&format!(
                " {:<10} {:<10}",
                printable(&user),
                s.inode.unwrap_or(0)
            ));
        }
        if opts.programs {
            let prog = match &s.owner {
                Some(o) => format!("{}/{}", o.pid, printable(&o.comm)),
                None => "-".to_owned(),
            };
            out.push_str(&format!(" {prog:<20}"));
        }
        if opts.timers {
            out.push_str(&format!(" {}", timer(s, now_ns)));
        }
        if opts.exe {
            let exe = s.owner.as_ref().and_then(|o| names.exe(o.pid));
            out.push_str(&format!(
                " {}",
                exe.as_deref().map_or("-".into(), printable)
            ));
        }
        trim_end(&mut out);
        out.push('\n');
    }
    out
}

fn trim_end(s: &mut String) {
    s.truncate(s.trim_end_matches(' ').len());
}

/// `host:port` as netstat writes it: IPv6 unbracketed, port 0 as `*`, cut
/// to 23 columns unless `wide`.
fn endpoint(addr: IpAddr, port: u16, proto: Proto, names: &dyn Names, wide: bool) -> String {
    let port = match port {
        0 => "*".to_owned(),
        p => names.service(p, proto).unwrap_or_else(|| p.to_string()),
    };
    let mut host = if addr.is_unspecified() {
        addr.to_string()
    } else {
        names
            .host(addr)
            .map_or_else(|| addr.to_string(), |h| printable(&h).into_owned())
    };
    if !wide && host.len() + port.len() > 22 {
        let keep = 22usize.saturating_sub(port.len());
        host = host.chars().take(keep).collect();
    }
    format!("{host}:{port}")
}

/// `netstat -o`'s timer column: `kind (seconds/retransmits/probes)`.
fn timer(s: &Sock, now_ns: u64) -> String {
    if let Some(at) = s.expires_ns {
        let left = at.saturating_sub(now_ns) as f64 / 1e9;
        return format!("timewait ({left:.2}/0/0)");
    }
    let Some(t) = s.timer else {
        return "off (0.00/0/0)".to_owned();
    };
    let kind = match t.kind {
        TimerKind::Off => return format!("off (0.00/{}/0)", t.retransmits),
        TimerKind::On => "on",
        TimerKind::Keepalive => "keepalive",
        TimerKind::TimeWait => "timewait",
        TimerKind::Probe => "probe",
    };
    format!(
        "{kind} ({:.2}/{}/0)",
        f64::from(t.left_ms) / 1e3,
        t.retransmits
    )
}

/// One socket as a JSON object. Keys are a documented interface.
#[derive(Serialize)]
struct SockJson<'a> {
    proto: &'static str,
    laddr: String,
    lport: u16,
    raddr: String,
    rport: u16,
    state: &'static str,
    pid: Option<u32>,
    comm: Option<&'a str>,
    exe: Option<String>,
    uid: Option<u32>,
    netns: u32,
    recv_q: Option<u32>,
    send_q: Option<u32>,
}

/// The selected sockets, one JSON object per line.
pub fn json(model: &Model, opts: &Options, names: &dyn Names) -> String {
    let mut out = String::new();
    for (_, s) in select(model, opts) {
        let obj = SockJson {
            proto: proto_name(s),
            laddr: s.laddr.to_string(),
            lport: s.lport,
            raddr: s.raddr.to_string(),
            rport: s.rport,
            state: match (s.proto, s.state) {
                (Proto::Udp, TcpState::Established) => "ESTABLISHED",
                (Proto::Udp, _) => "UNCONN",
                _ => state_name(s),
            },
            pid: s.owner.as_ref().map(|o| o.pid),
            comm: s.owner.as_ref().map(|o| o.comm.as_str()),
            exe: s.owner.as_ref().and_then(|o| names.exe(o.pid)),
            uid: s.uid,
            netns: s.netns,
            recv_q: s.recv_q,
            send_q: s.send_q,
        };
        out.push_str(&serde_json::to_string(&obj).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::{decode::Owner, model::Timer};

    /// All numbers, no names.
    struct Numeric;
    impl Names for Numeric {}

    fn sock(proto: Proto, state: TcpState, lport: u16, raddr: IpAddr, rport: u16) -> Sock {
        Sock {
            proto,
            family: Family::Inet,
            laddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            lport,
            raddr,
            rport,
            state,
            netns: 1,
            owner: Some(Owner {
                pid: 42,
                uid: 0,
                comm: "srv".into(),
                cgroup: 0,
            }),
            uid: Some(0),
            inode: Some(1234),
            recv_q: Some(0),
            send_q: Some(0),
            timer: None,
            since_ns: None,
            expires_ns: None,
        }
    }

    fn scene() -> Model {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut m = Model::default();
        m.seed(1, sock(Proto::Tcp, TcpState::Listen, 80, any, 0));
        m.seed(2, sock(Proto::Tcp, TcpState::Established, 80, lo, 5000));
        m.seed(3, sock(Proto::Udp, TcpState::Close, 53, any, 0));
        m.seed(4, sock(Proto::Udp, TcpState::Established, 6000, lo, 53));
        m
    }

    fn opts() -> Options {
        Options {
            netns: Some(1),
            ..Options::default()
        }
    }

    fn cookies(m: &Model, o: &Options) -> Vec<u64> {
        select(m, o).into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn like_netstat_the_default_hides_servers_and_l_shows_only_them() {
        let m = scene();
        assert_eq!(cookies(&m, &opts()), [2, 4]);
        assert_eq!(
            cookies(
                &m,
                &Options {
                    listening: true,
                    ..opts()
                }
            ),
            [1, 3]
        );
        assert_eq!(
            cookies(
                &m,
                &Options {
                    all: true,
                    ..opts()
                }
            ),
            [1, 2, 3, 4]
        );
        assert_eq!(
            cookies(
                &m,
                &Options {
                    all: true,
                    udp: true,
                    ..opts()
                }
            ),
            [3, 4]
        );
        assert_eq!(
            cookies(
                &m,
                &Options {
                    all: true,
                    ports: vec![5000],
                    ..opts()
                }
            ),
            [2]
        );
        let states = vec![TcpState::Listen];
        assert_eq!(
            cookies(
                &m,
                &Options {
                    all: true,
                    states,
                    ..opts()
                }
            ),
            [1]
        );
        assert_eq!(
            cookies(
                &m,
                &Options {
                    all: true,
                    pids: vec![7],
                    ..opts()
                }
            ),
            [] as [u64; 0]
        );
        assert_eq!(
            cookies(
                &m,
                &Options {
                    all: true,
                    netns: Some(2),
                    ..opts()
                }
            ),
            [] as [u64; 0]
        );
    }

    #[test]
    fn the_table_has_netstats_columns() {
        let o = Options {
            all: true,
            programs: true,
            ..opts()
        };
        let text = render(&scene(), &o, &Numeric, 0);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Active Internet connections (servers and established)"
        );
        assert_eq!(
            lines[1],
            "Proto Recv-Q Send-Q Local Address           Foreign Address         State       PID/Program name"
        );
        assert_eq!(
            lines[2],
            "tcp        0      0 127.0.0.1:80            0.0.0.0:*               LISTEN      42/srv"
        );
        assert!(lines[4].starts_with("udp        0      0 127.0.0.1:53            0.0.0.0:*                           42/srv"), "{}", lines[4]);
    }

    #[test]
    fn ipv6_is_unbracketed_and_long_addresses_are_cut_unless_wide() {
        let mut m = Model::default();
        let mut s = sock(
            Proto::Tcp,
            TcpState::Listen,
            8080,
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            0,
        );
        s.family = Family::Inet6;
        s.laddr = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"
            .parse()
            .expect("addr");
        m.seed(1, s);
        let narrow = render(
            &m,
            &Options {
                all: true,
                ..opts()
            },
            &Numeric,
            0,
        );
        assert!(narrow.contains("2001:db8:aaaa:bbbb:8080 :::*"), "{narrow}");
        let wide = render(
            &m,
            &Options {
                all: true,
                wide: true,
                ..opts()
            },
            &Numeric,
            0,
        );
        assert!(
            wide.contains("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff:8080 :::*"),
            "{wide}"
        );
    }

    #[test]
    fn extra_and_timer_columns() {
        let mut m = Model::default();
        let mut s = sock(
            Proto::Tcp,
            TcpState::Established,
            22,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            1,
        );
        s.timer = Some(Timer {
            kind: TimerKind::Keepalive,
            left_ms: 7196250,
            retransmits: 0,
        });
        m.seed(1, s);
        let mut tw = sock(
            Proto::Tcp,
            TcpState::TimeWait,
            23,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            2,
        );
        tw.expires_ns = Some(30_500_000_000);
        m.seed(2, tw);
        let text = render(
            &m,
            &Options {
                extra: true,
                timers: true,
                ..opts()
            },
            &Numeric,
            500_000_000,
        );
        assert!(
            text.contains("State       User       Inode      Timer"),
            "{text}"
        );
        assert!(
            text.contains("ESTABLISHED 0          1234       keepalive (7196.25/0/0)"),
            "{text}"
        );
        assert!(
            text.contains("TIME_WAIT   0          1234       timewait (30.00/0/0)"),
            "{text}"
        );
    }

    #[test]
    fn names_replace_numbers_and_hostile_names_are_escaped() {
        struct Fake;
        impl Names for Fake {
            fn host(&self, _: IpAddr) -> Option<String> {
                Some("evil\x1b[2J".into())
            }
            fn service(&self, port: u16, _: Proto) -> Option<String> {
                (port == 80).then(|| "http".into())
            }
        }
        let text = render(
            &scene(),
            &Options {
                all: true,
                ..opts()
            },
            &Fake,
            0,
        );
        assert!(text.contains("evil\\x1b[2J:http"), "{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn json_has_the_documented_keys() {
        let text = json(
            &scene(),
            &Options {
                all: true,
                ..opts()
            },
            &Numeric,
        );
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(rows.len(), 4);
        let mut keys: Vec<_> = rows[0]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "comm", "exe", "laddr", "lport", "netns", "pid", "proto", "raddr", "recv_q",
                "rport", "send_q", "state", "uid"
            ]
        );
        assert_eq!(rows[0]["state"], "LISTEN");
        assert_eq!(rows[2]["state"], "UNCONN");
        assert_eq!(rows[3]["state"], "ESTABLISHED");
    }
}
