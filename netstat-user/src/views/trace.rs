//! How `bnetstat trace` prints a transition: a readable line or a JSON
//! object. Pure functions of the event.

use std::{
    io::{self, Write},
    net::IpAddr,
};

use crate::{decode::StateChangeEvent, escape::printable};

/// The header above [`line`]s.
pub fn header() -> String {
    format!(
        "{:<12} {:>7} {:<16} {:<27} {:<27} {:<27} {:>9}",
        "TIME", "PID", "COMM", "LOCAL", "REMOTE", "OLD -> NEW", "MS"
    )
}

/// One transition as a line; `wall_ns` is its wall-clock time (ns since
/// the epoch), shown as local `HH:MM:SS.mmm`.
pub fn line(ev: &StateChangeEvent, wall_ns: i128) -> String {
    let (pid, comm) = match &ev.owner {
        Some(o) => (o.pid.to_string(), printable(&o.comm).into_owned()),
        None => ("-".to_owned(), "-".to_owned()),
    };
    let ms = ev
        .ns_in_old
        .map_or_else(|| "-".to_owned(), |ns| format!("{:.3}", ms(ns)));
    format!(
        "{:<12} {:>7} {:<16} {:<27} {:<27} {:<27} {:>9}",
        clock(wall_ns),
        pid,
        comm,
        endpoint(ev.laddr, ev.lport),
        endpoint(ev.raddr, ev.rport),
        format!("{} -> {}", ev.old, ev.new),
        ms
    )
}

/// `addr:port`, with IPv6 in brackets.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Writes one transition as a JSON object on one line. Its keys are a
/// documented interface: add, never rename. Written piece by piece, numbers
/// through `itoa`, with no allocation and no `format!`: at hundreds of
/// thousands of events a second, formatting was most of `trace --json`'s CPU.
pub fn write_json(out: &mut impl Write, ev: &StateChangeEvent) -> io::Result<()> {
    let mut num = itoa::Buffer::new();
    out.write_all(b"{\"ts_ns\":")?;
    out.write_all(num.format(ev.ts_ns).as_bytes())?;
    match &ev.owner {
        Some(o) => {
            out.write_all(b",\"pid\":")?;
            out.write_all(num.format(o.pid).as_bytes())?;
            out.write_all(b",\"comm\":")?;
            // serde_json escapes what the kernel handed over verbatim.
            serde_json::to_writer(&mut *out, &o.comm)?;
        }
        None => out.write_all(b",\"pid\":null,\"comm\":null")?,
    }
    out.write_all(b",\"family\":\"")?;
    out.write_all(ev.family.name().as_bytes())?;
    out.write_all(b"\",\"laddr\":\"")?;
    write_addr(out, ev.laddr)?;
    out.write_all(b"\",\"lport\":")?;
    out.write_all(num.format(ev.lport).as_bytes())?;
    out.write_all(b",\"raddr\":\"")?;
    write_addr(out, ev.raddr)?;
    out.write_all(b"\",\"rport\":")?;
    out.write_all(num.format(ev.rport).as_bytes())?;
    out.write_all(b",\"old_state\":\"")?;
    out.write_all(ev.old.name().as_bytes())?;
    out.write_all(b"\",\"new_state\":\"")?;
    out.write_all(ev.new.name().as_bytes())?;
    out.write_all(b"\",\"ms_in_old\":")?;
    match ev.ns_in_old {
        Some(ns) => serde_json::to_writer(&mut *out, &ms(ns))?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b",\"sock\":\"")?;
    write_hex(out, ev.sock)?;
    out.write_all(b"\"}\n")
}

/// `n` in lowercase hex, as `{:x}` writes it, without the formatting
/// machinery.
fn write_hex(out: &mut impl Write, n: u64) -> io::Result<()> {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(rest & 0xf) as usize];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.write_all(&digits[at..])
}

/// An address as `Display` shows it; IPv4, by far the most common, without
/// the formatting machinery.
fn write_addr(out: &mut impl Write, addr: IpAddr) -> io::Result<()> {
    match addr {
        IpAddr::V4(a) => {
            let mut num = itoa::Buffer::new();
            let [a, b, c, d] = a.octets();
            out.write_all(num.format(a).as_bytes())?;
            for octet in [b, c, d] {
                out.write_all(b".")?;
                out.write_all(num.format(octet).as_bytes())?;
            }
            Ok(())
        }
        IpAddr::V6(a) => write!(out, "{a}"),
    }
}

/// The JSON line that reports lost events.
pub fn lost_json(lost: u64) -> String {
    format!("{{\"lost\":{lost}}}")
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Local wall-clock `HH:MM:SS.mmm` of `wall_ns`.
pub fn clock(wall_ns: i128) -> String {
    let secs = wall_ns.div_euclid(1_000_000_000) as libc::time_t;
    let millis = wall_ns.rem_euclid(1_000_000_000) / 1_000_000;
    // SAFETY: localtime_r fills the tm we own; all zeros is a valid tm.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return "?".to_owned();
    }
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use netstat_common::tcp_state;

    use super::*;
    use crate::decode::{
        Event, decode,
        tests::{bytes_of, raw_state_change},
    };

    fn json(ev: &StateChangeEvent) -> String {
        let mut out = Vec::new();
        write_json(&mut out, ev).expect("writes to a Vec");
        let text = String::from_utf8(out).expect("UTF-8");
        let line = text.strip_suffix('\n').expect("ends its line");
        assert!(!line.contains('\n'), "one line: {text}");
        line.to_owned()
    }

    fn event(old: u8, new: u8) -> StateChangeEvent {
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw_state_change(old, new))) else {
            panic!("decodes")
        };
        ev
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let v: serde_json::Value =
            serde_json::from_str(&json(&event(tcp_state::SYN_SENT, tcp_state::ESTABLISHED)))
                .expect("valid JSON");
        let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "comm",
                "family",
                "laddr",
                "lport",
                "ms_in_old",
                "new_state",
                "old_state",
                "pid",
                "raddr",
                "rport",
                "sock",
                "ts_ns"
            ]
        );
        assert_eq!(v["old_state"], "SYN_SENT");
        assert_eq!(v["new_state"], "ESTABLISHED");
        assert_eq!(v["family"], "inet");
        assert_eq!(v["pid"], 42);
        assert!(v["ms_in_old"].is_f64(), "a float: {v}");
        assert_eq!(v["ms_in_old"], 3.0);
        assert_eq!(v["sock"], "1234");
    }

    #[test]
    fn sockets_are_written_in_hex_as_format_writes_them() {
        for n in [0, 1, 0xf, 0x10, 0x1234_abcd, u64::MAX] {
            let mut out = Vec::new();
            write_hex(&mut out, n).expect("writes to a Vec");
            assert_eq!(String::from_utf8(out).expect("UTF-8"), format!("{n:x}"));
        }
    }

    #[test]
    fn json_escapes_a_hostile_comm() {
        let mut ev = event(tcp_state::CLOSE, tcp_state::SYN_SENT);
        ev.owner.as_mut().expect("owner").comm = "a\x1b]0;pwned\x07\"".to_owned();
        let text = json(&ev);
        assert!(!text.chars().any(|c| c.is_control()), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["comm"], "a\x1b]0;pwned\x07\"");
    }

    #[test]
    fn unknown_owner_is_null_in_json_and_a_dash_in_lines() {
        let mut ev = event(tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT);
        ev.owner = None;
        ev.ns_in_old = None;
        let v: serde_json::Value = serde_json::from_str(&json(&ev)).expect("valid JSON");
        assert!(v["pid"].is_null() && v["comm"].is_null() && v["ms_in_old"].is_null());
        let text = line(&ev, 0);
        assert!(text.contains("  - "), "{text}");
    }

    #[test]
    fn a_line_shows_owner_endpoints_and_transition() {
        let mut ev = event(tcp_state::FIN_WAIT1, tcp_state::FIN_WAIT2);
        ev.owner.as_mut().expect("owner").comm = "bad\nname".to_owned();
        let text = line(&ev, 1_700_000_000_123_000_000);
        assert!(text.contains("127.0.0.1:40000"), "{text}");
        assert!(text.contains("10.1.2.3:443"), "{text}");
        assert!(text.contains("FIN_WAIT1 -> FIN_WAIT2"), "{text}");
        assert!(text.contains("bad\\x0aname"), "{text}");
        assert!(text.contains(".123 "), "{text}");
        assert!(text.ends_with("3.000"), "{text}");
    }

    #[test]
    fn json_addresses_read_as_display_shows_them() {
        for addr in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.12.7",
            "::1",
            "fe80::1:2",
        ] {
            let mut out = Vec::new();
            write_addr(&mut out, addr.parse().expect("addr")).expect("writes to a Vec");
            assert_eq!(String::from_utf8(out).expect("UTF-8"), addr);
        }
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("::1".parse().expect("addr"), 80), "[::1]:80");
    }
}
