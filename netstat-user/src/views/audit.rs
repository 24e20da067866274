//! How `bnetstat audit` writes a record: a readable line or a JSON object.
//! Pure functions of the record and what is known of its process.

use std::io::{self, Write};

use serde::Serialize;

use crate::{
    cgroups::container_id, decode::Family, escape::printable, procs::Process, records::Record,
    sockdiag::Proto, views::trace::endpoint,
};

/// A record with everything known of who made it.
pub struct Entry<'a> {
    pub record: &'a Record,
    /// Wall-clock time of the record, ns since the epoch.
    pub wall_ns: i128,
    pub process: Option<&'a Process>,
    pub user: Option<&'a str>,
    pub cgroup: Option<&'a str>,
    /// Broke the expected-listeners list.
    pub unexpected: bool,
}

/// The record's keys, in order: a documented interface (add, never rename).
#[derive(Serialize)]
struct Json<'a> {
    time: String,
    ts_ns: u64,
    event: &'static str,
    proto: &'static str,
    laddr: String,
    lport: u16,
    raddr: Option<String>,
    rport: Option<u16>,
    pid: Option<u32>,
    ppid: Option<u32>,
    uid: Option<u32>,
    user: Option<&'a str>,
    comm: Option<&'a str>,
    exe: Option<&'a str>,
    cmdline: Option<&'a [String]>,
    cgroup: Option<&'a str>,
    container: Option<&'a str>,
    netns: u32,
    open_ms: Option<f64>,
    existing: bool,
    unexpected: bool,
}

/// Writes one record as a JSON object on one line.
pub fn write_json(out: &mut (impl Write + ?Sized), e: &Entry<'_>) -> io::Result<()> {
    let r = e.record;
    let owner = r.owner.as_ref();
    let json = Json {
        time: rfc3339(e.wall_ns),
        ts_ns: r.ts_ns,
        event: r.action.name(),
        proto: proto(r.proto, r.family),
        laddr: r.laddr.to_string(),
        lport: r.lport,
        raddr: r.remote.map(|(a, _)| a.to_string()),
        rport: r.remote.map(|(_, p)| p),
        pid: owner.map(|o| o.pid),
        ppid: e.process.map(|p| p.ppid),
        uid: owner.map(|o| o.uid),
        user: e.user,
        comm: owner.map(|o| o.comm.as_str()),
        exe: e.process.and_then(|p| p.exe.as_deref()),
        cmdline: e.process.map(|p| p.args.as_slice()),
        cgroup: e.cgroup,
        container: e.cgroup.and_then(container_id),
        netns: r.netns,
        open_ms: r.open_ns.map(|ns| ns as f64 / 1e6),
        existing: r.existing,
        unexpected: e.unexpected,
    };
    serde_json::to_writer(&mut *out, &json)?;
    out.write_all(b"\n")
}

/// One record as a line of `key=value`s after the time, event, proto and
/// address; untrusted values escaped, and quoted when they hold spaces.
pub fn line(e: &Entry<'_>) -> String {
    let r = e.record;
    let mut s = format!(
        "{} {:<11} {:<5} {}",
        rfc3339(e.wall_ns),
        r.action.name(),
        proto(r.proto, r.family),
        endpoint(r.laddr, r.lport)
    );
    if let Some((addr, port)) = r.remote {
        s += &format!(" -> {}", endpoint(addr, port));
    }
    match &r.owner {
        Some(o) => {
            s += &format!(" pid={}", o.pid);
            if let Some(p) = e.process {
                s += &format!(" ppid={}", p.ppid);
            }
            s += &format!(" uid={}", o.uid);
            if let Some(user) = e.user {
                s += &format!(" user={}", quoted(user));
            }
            s += &format!(" comm={}", quoted(&o.comm));
        }
        None => s += " pid=-",
    }
    if let Some(p) = e.process {
        if let Some(exe) = &p.exe {
            s += &format!(" exe={}", quoted(exe));
        }
        if !p.args.is_empty() {
            s += &format!(" cmdline={}", quoted(&p.args.join(" ")));
        }
    }
    if let Some(cgroup) = e.cgroup {
        s += &format!(" cgroup={}", quoted(cgroup));
        if let Some(id) = container_id(cgroup) {
            s += &format!(" container={id}");
        }
    }
    s += &format!(" netns={}", r.netns);
    if let Some(ns) = r.open_ns {
        s += &format!(" open={:.3}s", ns as f64 / 1e9);
    }
    if r.existing {
        s += " existing";
    }
    if e.unexpected {
        s += " UNEXPECTED";
    }
    s
}

/// `tcp`, `tcp6`, `udp`, `udp6`, as the table's JSON names them.
fn proto(proto: Proto, family: Family) -> &'static str {
    match (proto, family) {
        (Proto::Tcp, Family::Inet) => "tcp",
        (Proto::Tcp, Family::Inet6) => "tcp6",
        (Proto::Udp, Family::Inet) => "udp",
        (Proto::Udp, Family::Inet6) => "udp6",
    }
}

/// Escaped, and in double quotes when it holds a space or a quote.
fn quoted(s: &str) -> String {
    let p = printable(s);
    if p.contains([' ', '"']) {
        format!("\"{}\"", p.replace('"', "\\\""))
    } else {
        p.into_owned()
    }
}

/// RFC 3339 in UTC with nanoseconds: `2026-12-02T03:04:05.123456789Z`.
pub fn rfc3339(wall_ns: i128) -> String {
    let secs = wall_ns.div_euclid(1_000_000_000);
    let nanos = wall_ns.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days, after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::{decode::Owner, records::Action};

    fn record(action: Action) -> Record {
        Record {
            ts_ns: 5,
            action,
            proto: Proto::Tcp,
            family: Family::Inet6,
            laddr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            lport: 4444,
            remote: None,
            owner: Some(Owner {
                pid: 300,
                uid: 65534,
                comm: "evil\x1b[2J".into(),
                cgroup: 9,
            }),
            netns: 4026531840,
            open_ns: Some(1_500_000),
            existing: false,
        }
    }

    fn process() -> Process {
        Process::existing(
            299,
            Some("/tmp/x y/short-lived".into()),
            vec!["./short-lived".into(), "--port".into(), "4444".into()],
            None,
        )
    }

    #[test]
    fn times_are_rfc3339_in_utc_with_nanoseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_796_180_645_123_456_789),
            "2026-12-02T03:04:05.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn a_json_record_has_every_key_and_the_whole_command_line() {
        let r = record(Action::StopListen);
        let p = process();
        let cgroup = "/system.slice/docker-3f4e9c0b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f.scope";
        let mut out = Vec::new();
        write_json(
            &mut out,
            &Entry {
                record: &r,
                wall_ns: 0,
                process: Some(&p),
                user: Some("nobody"),
                cgroup: Some(cgroup),
                unexpected: true,
            },
        )
        .expect("write");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        // Value's map is sorted; the line itself keeps the struct's order.
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = [
            "time",
            "ts_ns",
            "event",
            "proto",
            "laddr",
            "lport",
            "raddr",
            "rport",
            "pid",
            "ppid",
            "uid",
            "user",
            "comm",
            "exe",
            "cmdline",
            "cgroup",
            "container",
            "netns",
            "open_ms",
            "existing",
            "unexpected",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert!(out.starts_with(b"{\"time\":"), "time comes first");
        assert_eq!(v["event"], "stop_listen");
        assert_eq!(v["proto"], "tcp6");
        assert_eq!(
            (v["pid"].as_u64(), v["ppid"].as_u64()),
            (Some(300), Some(299))
        );
        assert_eq!(v["cmdline"][2], "4444");
        assert_eq!(v["open_ms"], 1.5);
        assert_eq!(v["container"].as_str().map(str::len), Some(64));
        assert_eq!(v["raddr"], serde_json::Value::Null);
        assert!(
            out.ends_with(b"\n") && !out.contains(&0x1b),
            "JSON escapes control bytes"
        );
    }

    #[test]
    fn a_line_is_escaped_quoted_and_flags_what_is_unexpected() {
        let mut r = record(Action::Connect);
        r.family = Family::Inet;
        r.laddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        r.remote = Some((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80));
        r.open_ns = None;
        let p = process();
        let line = line(&Entry {
            record: &r,
            wall_ns: 0,
            process: Some(&p),
            user: None,
            cgroup: Some("/"),
            unexpected: true,
        });
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000000000Z connect     tcp   127.0.0.1:4444 -> 10.0.0.1:80 \
             pid=300 ppid=299 uid=65534 comm=evil\\x1b[2J exe=\"/tmp/x y/short-lived\" \
             cmdline=\"./short-lived --port 4444\" cgroup=/ netns=4026531840 UNEXPECTED"
        );
        r.owner = None;
        r.existing = true;
        let line = super::line(&Entry {
            record: &r,
            wall_ns: 0,
            process: None,
            user: None,
            cgroup: None,
            unexpected: false,
        });
        assert!(line.ends_with("pid=- netns=4026531840 existing"), "{line}");
    }
}
