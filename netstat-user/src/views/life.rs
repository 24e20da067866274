//! How `bnetstat life` prints a connection that ended: a line or a JSON
//! object. Pure functions of its change to `CLOSE`.

use serde::Serialize;

use crate::{
    decode::{End, StateChangeEvent, TcpState},
    escape::printable,
    views::trace::{clock, endpoint},
};

/// `ECONNRESET`: the peer reset the connection.
const ECONNRESET: u32 = 104;

/// The header above [`line`]s.
pub fn header() -> String {
    format!(
        "{:<12} {:>7} {:<16} {:<27} {:<27} {:>12} {:>12} {:>11} {:<6}",
        "TIME", "PID", "COMM", "LOCAL", "REMOTE", "TX_BYTES", "RX_BYTES", "MS", "CLOSED"
    )
}

/// Which end closed first: the one whose FIN came first; without FINs, a
/// reset from the peer (`ECONNRESET`) or an abortive close of our own (an
/// open connection going straight to `CLOSE` with no error).
pub fn closed_first(ev: &StateChangeEvent) -> Option<End> {
    ev.end
        .as_ref()
        .and_then(|e| e.first_fin)
        .or(match ev.error {
            ECONNRESET => Some(End::Remote),
            0 if matches!(ev.old, TcpState::Established | TcpState::SynRecv) => Some(End::Local),
            _ => None,
        })
}

/// How long the connection lived, in ns, from its birth or from when
/// bnetstat first saw it.
fn duration_ns(ev: &StateChangeEvent) -> Option<u64> {
    let first = ev.end.as_ref()?.first_ts_ns?;
    Some(ev.ts_ns.saturating_sub(first))
}

/// Whether it was open before bnetstat saw it born, so its time and bytes
/// count only from then.
fn partial(ev: &StateChangeEvent) -> bool {
    !ev.end.as_ref().is_some_and(|e| e.born)
}

/// One ended connection as a line; `boot_to_wall` turns its
/// `CLOCK_BOOTTIME` stamp into wall-clock time. A `*` after the time marks
/// a connection bnetstat did not see born.
pub fn line(ev: &StateChangeEvent, boot_to_wall: i128) -> String {
    let (pid, comm) = match &ev.owner {
        Some(o) => (o.pid.to_string(), printable(&o.comm).into_owned()),
        None => ("-".to_owned(), "-".to_owned()),
    };
    let (sent, received) = ev
        .end
        .as_ref()
        .map_or((0, 0), |e| (e.bytes_sent, e.bytes_received));
    let ms = duration_ns(ev).map_or_else(
        || "-".to_owned(),
        |ns| {
            format!(
                "{:.3}{}",
                ns as f64 / 1e6,
                if partial(ev) { "*" } else { "" }
            )
        },
    );
    format!(
        "{:<12} {:>7} {:<16} {:<27} {:<27} {:>12} {:>12} {:>11} {:<6}",
        clock(boot_to_wall + i128::from(ev.ts_ns)),
        pid,
        comm,
        endpoint(ev.laddr, ev.lport),
        endpoint(ev.raddr, ev.rport),
        sent,
        received,
        ms,
        closed_first(ev).map_or("-", End::name),
    )
}

/// The `--json` object of an ended connection. Its keys are a documented
/// interface: add, never rename.
#[derive(Serialize)]
struct LifeJson<'a> {
    ts_ns: u64,
    pid: Option<u32>,
    comm: Option<&'a str>,
    family: &'static str,
    laddr: String,
    lport: u16,
    raddr: String,
    rport: u16,
    tx_bytes: u64,
    rx_bytes: u64,
    ms: Option<f64>,
    partial: bool,
    closed_first: Option<&'static str>,
    last_state: &'static str,
    sock: String,
}

/// One ended connection as a JSON object on one line.
pub fn json(ev: &StateChangeEvent) -> String {
    let obj = LifeJson {
        ts_ns: ev.ts_ns,
        pid: ev.owner.as_ref().map(|o| o.pid),
        comm: ev.owner.as_ref().map(|o| o.comm.as_str()),
        family: ev.family.name(),
        laddr: ev.laddr.to_string(),
        lport: ev.lport,
        raddr: ev.raddr.to_string(),
        rport: ev.rport,
        tx_bytes: ev.end.as_ref().map_or(0, |e| e.bytes_sent),
        rx_bytes: ev.end.as_ref().map_or(0, |e| e.bytes_received),
        ms: duration_ns(ev).map(|ns| ns as f64 / 1e6),
        partial: partial(ev),
        closed_first: closed_first(ev).map(End::name),
        last_state: ev.old.name(),
        sock: format!("{:x}", ev.sock),
    };
    serde_json::to_string(&obj).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use netstat_common::{closer, tcp_state};

    use super::*;
    use crate::decode::{
        Event, decode,
        tests::{bytes_of, raw_state_change},
    };

    fn close(old: u8, fin: u8, error: u32, born: u8) -> StateChangeEvent {
        let mut raw = raw_state_change(old, tcp_state::CLOSE);
        (raw.closer, raw.error, raw.born) = (fin, error, born);
        (raw.bytes_sent, raw.bytes_received) = (1000, 2000);
        let Ok(Event::StateChange(ev)) = decode(&bytes_of(&raw)) else {
            panic!("decodes")
        };
        ev
    }

    #[test]
    fn who_closed_first_comes_from_the_first_fin_then_from_resets() {
        let cases = [
            (tcp_state::FIN_WAIT2, closer::LOCAL, 0, Some(End::Local)),
            (tcp_state::LAST_ACK, closer::REMOTE, 0, Some(End::Remote)),
            (
                tcp_state::ESTABLISHED,
                closer::UNKNOWN,
                ECONNRESET,
                Some(End::Remote),
            ),
            (tcp_state::ESTABLISHED, closer::UNKNOWN, 0, Some(End::Local)),
            (tcp_state::SYN_SENT, closer::UNKNOWN, 111, None),
        ];
        for (old, fin, error, want) in cases {
            assert_eq!(
                closed_first(&close(old, fin, error, 1)),
                want,
                "{old} {fin} {error}"
            );
        }
    }

    #[test]
    fn json_has_bytes_duration_and_owner() {
        let v: serde_json::Value =
            serde_json::from_str(&json(&close(tcp_state::FIN_WAIT2, closer::LOCAL, 0, 1)))
                .expect("JSON");
        assert_eq!(v["tx_bytes"], 1000);
        assert_eq!(v["rx_bytes"], 2000);
        assert_eq!(v["ms"], 4.0);
        assert_eq!(v["partial"], false);
        assert_eq!(v["closed_first"], "local");
        assert_eq!(v["last_state"], "FIN_WAIT2");
        assert_eq!(
            (v["pid"].as_u64(), v["comm"].as_str()),
            (Some(42), Some("curl"))
        );
    }

    #[test]
    fn a_connection_not_seen_born_is_marked() {
        let ev = close(tcp_state::ESTABLISHED, closer::UNKNOWN, ECONNRESET, 0);
        assert!(line(&ev, 0).contains("4.000*"), "{}", line(&ev, 0));
        let v: serde_json::Value = serde_json::from_str(&json(&ev)).expect("JSON");
        assert_eq!(v["partial"], true);
    }

    #[test]
    fn hostile_comm_is_escaped_in_lines() {
        let mut ev = close(tcp_state::FIN_WAIT2, closer::LOCAL, 0, 1);
        if let Some(o) = ev.owner.as_mut() {
            o.comm = "a\x1b[2Jb".into();
        }
        assert!(line(&ev, 0).contains("a\\x1b[2Jb"), "{}", line(&ev, 0));
    }
}
