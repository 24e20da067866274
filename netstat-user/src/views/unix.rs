//! UNIX domain sockets as `netstat -x` prints them, and as JSON lines.

use serde::Serialize;

use crate::{
    decode::{Owner, TcpState},
    escape::printable,
    sockdiag::UnixSocket,
    views::table::{Names, Options, shows, which},
};

/// A UNIX socket and who holds it.
pub type Row = (UnixSocket, Option<Owner>);

fn kind_name(kind: u8) -> &'static str {
    match i32::from(kind) {
        libc::SOCK_STREAM => "STREAM",
        libc::SOCK_DGRAM => "DGRAM",
        libc::SOCK_SEQPACKET => "SEQPACKET",
        _ => "UNKNOWN",
    }
}

/// netstat's words for UNIX socket states.
fn state_name(state: u8) -> &'static str {
    match TcpState::try_from(state) {
        Ok(TcpState::Listen) => "LISTENING",
        Ok(TcpState::Established) => "CONNECTED",
        Ok(TcpState::SynSent) => "CONNECTING",
        _ => "",
    }
}

/// The rows `opts` selects, by inode.
pub fn select<'r>(rows: &'r [Row], opts: &Options) -> Vec<&'r Row> {
    let mut picked: Vec<&Row> = rows
        .iter()
        .filter(|(s, _)| shows(opts, s.state == TcpState::Listen as u8))
        .filter(|(_, o)| {
            opts.pids.is_empty() || o.as_ref().is_some_and(|o| opts.pids.contains(&o.pid))
        })
        .collect();
    picked.sort_by_key(|(s, _)| s.inode);
    picked
}

/// The `-x` table, header included. The kernel does not report reference
/// counts or the SO_ACCEPTCON-style flags netstat reads from `/proc`, so
/// RefCnt is `-` and Flags shows only `ACC` for listeners.
pub fn render(rows: &[Row], opts: &Options, names: &dyn Names) -> String {
    let mut out = format!("Active UNIX domain sockets ({})\n", which(opts));
    out.push_str("Proto RefCnt Flags       Type       State         I-Node  ");
    if opts.programs {
        out.push_str(" PID/Program name    ");
    }
    if opts.exe {
        out.push_str(" Executable");
    }
    out.push_str(" Path\n");
    for (s, owner) in select(rows, opts) {
        let flags = if s.state == TcpState::Listen as u8 {
            "[ ACC ]"
        } else {
            "[ ]"
        };
        out.push_str(&format!(
            "unix  {:<6} {:<11} {:<10} {:<13} {:<8}",
            "-",
            flags,
            kind_name(s.kind),
            state_name(s.state),
            s.inode
        ));
        if opts.programs {
            let prog = owner.as_ref().map_or_else(
                || "-".to_owned(),
                |o| format!("{}/{}", o.pid, printable(&o.comm)),
            );
            out.push_str(&format!(" {prog:<20}"));
        }
        if opts.exe {
            let exe = owner.as_ref().and_then(|o| names.exe(o.pid));
            out.push_str(&format!(
                " {}",
                exe.as_deref().map_or("-".into(), printable)
            ));
        }
        out.push_str(&format!(" {}", printable(s.path.as_deref().unwrap_or(""))));
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    out
}

/// One UNIX socket as JSON: the inet keys, with the path as `laddr`, the
/// peer's inode as `raddr`, and no ports.
#[derive(Serialize)]
struct UnixJson<'a> {
    proto: &'static str,
    laddr: Option<&'a str>,
    lport: Option<u16>,
    raddr: Option<String>,
    rport: Option<u16>,
    state: &'static str,
    pid: Option<u32>,
    comm: Option<&'a str>,
    exe: Option<String>,
    uid: Option<u32>,
    netns: u32,
    recv_q: Option<u32>,
    send_q: Option<u32>,
    inode: u32,
    kind: &'static str,
}

/// The selected UNIX sockets of namespace `netns`, one JSON object a line.
pub fn json(rows: &[Row], opts: &Options, names: &dyn Names, netns: u32) -> String {
    let mut out = String::new();
    for (s, owner) in select(rows, opts) {
        let obj = UnixJson {
            proto: "unix",
            laddr: s.path.as_deref(),
            lport: None,
            raddr: s.peer.map(|p| p.to_string()),
            rport: None,
            state: state_name(s.state),
            pid: owner.as_ref().map(|o| o.pid),
            comm: owner.as_ref().map(|o| o.comm.as_str()),
            exe: owner.as_ref().and_then(|o| names.exe(o.pid)),
            uid: s.uid,
            netns,
            recv_q: s.recv_q,
            send_q: s.send_q,
            inode: s.inode,
            kind: kind_name(s.kind),
        };
        out.push_str(&serde_json::to_string(&obj).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Numeric;
    impl Names for Numeric {}

    fn rows() -> Vec<Row> {
        let sock = |state: TcpState, inode, path: Option<&str>| UnixSocket {
            kind: libc::SOCK_STREAM as u8,
            state: state as u8,
            inode,
            path: path.map(Into::into),
            peer: None,
            recv_q: Some(0),
            send_q: Some(0),
            uid: Some(0),
        };
        let owner = Some(Owner {
            pid: 1,
            uid: 0,
            comm: "init".into(),
            cgroup: 0,
        });
        vec![
            (
                sock(TcpState::Listen, 20, Some("/run/systemd/private")),
                owner.clone(),
            ),
            (sock(TcpState::Established, 10, Some("@\x1b[31m")), owner),
            (sock(TcpState::Close, 30, None), None),
        ]
    }

    #[test]
    fn listeners_and_the_rest_are_picked_like_netstat() {
        let r = rows();
        let inodes = |o: &Options| {
            select(&r, o)
                .iter()
                .map(|(s, _)| s.inode)
                .collect::<Vec<_>>()
        };
        assert_eq!(inodes(&Options::default()), [10, 30]);
        assert_eq!(
            inodes(&Options {
                listening: true,
                ..Options::default()
            }),
            [20]
        );
        assert_eq!(
            inodes(&Options {
                all: true,
                ..Options::default()
            }),
            [10, 20, 30]
        );
    }

    #[test]
    fn the_table_has_netstats_columns_and_escapes_paths() {
        let text = render(
            &rows(),
            &Options {
                all: true,
                programs: true,
                ..Options::default()
            },
            &Numeric,
        );
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Active UNIX domain sockets (servers and established)"
        );
        assert!(lines[1].starts_with("Proto RefCnt Flags       Type       State         I-Node"));
        assert!(
            lines[2].contains("CONNECTED     10       1/init"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("@\\x1b[31m"), "{}", lines[2]);
        assert!(
            lines[3].contains("[ ACC ]     STREAM     LISTENING     20"),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("/run/systemd/private"));
    }

    #[test]
    fn json_rows_carry_the_path_as_laddr() {
        let text = json(
            &rows(),
            &Options {
                all: true,
                ..Options::default()
            },
            &Numeric,
            9,
        );
        let v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(v[1]["laddr"], "/run/systemd/private");
        assert_eq!(v[1]["state"], "LISTENING");
        assert_eq!(v[0]["proto"], "unix");
        assert_eq!(v[2]["pid"], serde_json::Value::Null);
        assert_eq!(v[2]["netns"], 9);
    }
}
