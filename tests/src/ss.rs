//! Socket rows as `ss` and `bnetstat --json` report them, in one shape so a
//! test can compare the two.

use std::{collections::BTreeSet, process::Command};

use serde_json::Value;

/// One socket: what both tools agree to print.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// `tcp`, `tcp6`, `udp`, `udp6`.
    pub proto: String,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    /// netstat's names; `UNCONN` for an unconnected UDP socket.
    pub state: String,
    /// Every process holding it (ss lists all; bnetstat names one).
    pub pids: BTreeSet<u32>,
}

impl Row {
    /// Whether either end uses one of `ports`, each a protocol (`tcp`,
    /// `udp6`...) and a port: tests run at once on one kernel, and a port
    /// number one holds in one protocol may be another's in the next.
    pub fn uses_any(&self, ports: &[(&str, u16)]) -> bool {
        ports
            .iter()
            .any(|&(proto, port)| proto == self.proto && (port == self.lport || port == self.rport))
    }

    /// The row without its owners, for comparing socket sets.
    pub fn socket(&self) -> (String, String, u16, String, u16, String) {
        (
            self.proto.clone(),
            self.laddr.clone(),
            self.lport,
            self.raddr.clone(),
            self.rport,
            self.state.clone(),
        )
    }
}

/// `ss -tuanpH` in the calling process's network namespace.
pub fn ss() -> Vec<Row> {
    let out = Command::new("ss")
        .args(["-tuanpH"])
        .output()
        .expect("run ss (iproute2)");
    assert!(
        out.status.success(),
        "ss failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_ss_line)
        .collect()
}

/// One line of `ss -tuanpH`:
/// `tcp LISTEN 0 128 127.0.0.1:80 0.0.0.0:* users:(("nginx",pid=1,fd=6))`.
pub fn parse_ss_line(line: &str) -> Option<Row> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [netid, state, _recv_q, _send_q, local, peer, rest @ ..] = fields.as_slice() else {
        return None;
    };
    let (laddr, lport, v6) = endpoint(local)?;
    let (raddr, rport, _) = endpoint(peer)?;
    let proto = format!("{netid}{}", if v6 { "6" } else { "" });
    let state = match *state {
        "ESTAB" => "ESTABLISHED".to_owned(),
        "UNCONN" => "UNCONN".to_owned(),
        other => other.replace("WAIT-", "WAIT").replace('-', "_"),
    };
    let pids = rest
        .join(" ")
        .split("pid=")
        .skip(1)
        .filter_map(|p| p.split(',').next()?.parse().ok())
        .collect();
    Some(Row {
        proto,
        laddr,
        lport,
        raddr,
        rport,
        state,
        pids,
    })
}

/// `127.0.0.1:80`, `[::1]:80`, `0.0.0.0:*` -> (address, port, is IPv6).
fn endpoint(text: &str) -> Option<(String, u16, bool)> {
    let (addr, port) = text.rsplit_once(':')?;
    let port = if port == "*" { 0 } else { port.parse().ok()? };
    let v6 = addr.starts_with('[');
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr = addr.split('%').next()?.to_owned();
    Some((addr, port, v6))
}

/// One `bnetstat --json` socket object.
pub fn from_bnetstat(v: &Value) -> Row {
    let text = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("no {k} in {v}"))
            .to_owned()
    };
    let port = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}")) as u16;
    Row {
        proto: text("proto"),
        laddr: text("laddr"),
        lport: port("lport"),
        raddr: text("raddr"),
        rport: port("rport"),
        state: text("state"),
        pids: v["pid"].as_u64().map(|p| p as u32).into_iter().collect(),
    }
}

/// Asserts two views list the same sockets in the same states, and that
/// the owner bnetstat names is one ss names too.
pub fn assert_same(bnetstat: &[Row], ss: &[Row]) {
    let ours: BTreeSet<_> = bnetstat.iter().map(Row::socket).collect();
    let theirs: BTreeSet<_> = ss.iter().map(Row::socket).collect();
    assert_eq!(
        ours,
        theirs,
        "bnetstat and ss disagree\n only bnetstat: {:#?}\n only ss: {:#?}",
        ours.difference(&theirs).collect::<Vec<_>>(),
        theirs.difference(&ours).collect::<Vec<_>>()
    );
    for row in bnetstat {
        let other = ss
            .iter()
            .find(|r| r.socket() == row.socket())
            .expect("matched above");
        assert!(
            row.pids.is_subset(&other.pids) && row.pids.is_empty() == other.pids.is_empty(),
            "owner of {row:?}: bnetstat {:?}, ss {:?}",
            row.pids,
            other.pids
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_lines_parse_with_every_owner() {
        let row = parse_ss_line(
            r#"tcp   ESTAB  0      0          [::1]:45900    [::1]:60614 users:(("a",pid=3,fd=5),("b",pid=9,fd=4))"#,
        )
        .expect("row");
        assert_eq!(
            (row.proto.as_str(), row.laddr.as_str(), row.lport),
            ("tcp6", "::1", 45900)
        );
        assert_eq!(row.state, "ESTABLISHED");
        assert_eq!(row.pids, BTreeSet::from([3, 9]));
        let row = parse_ss_line("tcp TIME-WAIT 0 0 127.0.0.1:1 127.0.0.1:2").expect("row");
        assert_eq!((row.state.as_str(), row.pids.len()), ("TIME_WAIT", 0));
        let row = parse_ss_line("udp UNCONN 0 0 0.0.0.0:53 0.0.0.0:*").expect("row");
        assert_eq!((row.state.as_str(), row.rport), ("UNCONN", 0));
        let row = parse_ss_line("tcp FIN-WAIT-2 0 0 127.0.0.1:1 127.0.0.1:2").expect("row");
        assert_eq!(row.state, "FIN_WAIT2");
    }
}
