//! `bnetstat watch` for real, in a terminal: tmux runs it in a detached
//! pane and `capture-pane` reads back what a user would see. A server
//! started before it and a client started while it runs must show with
//! their programs, the client's rows highlighted, the server's closing
//! row faded out; filters typed, the window resized, and `q` must leave
//! the shell's screen as it was. The kernel is shared with other tests, so
//! the test filters the table down to its own port first.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use bnetstat_tests::{Holder, TempDir, bnetstat_bin, free_port};

const NETSCENE: &str = env!("CARGO_BIN_EXE_netscene");
const T: Duration = Duration::from_secs(30);

/// A tmux server of this test's own, with one detached session; killed
/// when dropped, whatever the test did.
struct Tmux {
    session: String,
    /// Holds the server's socket, so nothing is left behind.
    dir: TempDir,
}

impl Tmux {
    /// Runs `command` in a `width` x `height` pane. `command` should not
    /// end by itself, so its last screen can be read.
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "bnst-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Tmux {
            session: id,
            dir: TempDir::new(),
        };
        let (w, h) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
        tmux
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("tmux")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .args(["-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .env("TERM", "xterm-256color")
            .output()
            .unwrap_or_else(|e| panic!("tmux: {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen's text, one string a line.
    fn screen(&self) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-t", &self.session])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The screen with its colours and attributes, as terminal escapes.
    fn styled_screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-e", "-t", &self.session])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend(keys);
        self.run(&args);
    }

    fn format(&self, what: &str) -> String {
        self.run(&["display-message", "-p", "-t", &self.session, what])
            .trim()
            .to_owned()
    }

    /// Waits until `test` holds for the screen; panics with the screen.
    fn wait_for(&self, what: &str, test: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + T;
        loop {
            let screen = self.screen();
            if test(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {T:?}; the screen:\n{}",
                screen.join("\n")
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .arg("kill-server")
            .status();
    }
}

/// A `netscene hold` process: its sockets live until it is dropped.
/// The pane's command: bnetstat, then a line saying how it ended.
fn watch_command(args: &str) -> String {
    format!(
        "sh -c '{} watch {args}; echo EXITED $?; sleep 600'",
        bnetstat_bin().display()
    )
}

/// The table's rows: the lines between the column header and the status
/// line.
fn body(screen: &[String]) -> Vec<&str> {
    let status = screen
        .iter()
        .position(|l| l.contains("sockets tracked"))
        .unwrap_or(screen.len());
    screen[..status]
        .iter()
        .skip(1)
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty())
        .collect()
}

fn rows_with<'a>(screen: &'a [String], needle: &str) -> Vec<&'a str> {
    body(screen)
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

/// Attributes in effect at the start of each line of `capture-pane -e`
/// output, which sets them only where they change.
fn line_styles(styled: &str) -> Vec<(String, Sgr)> {
    let mut sgr = Sgr::default();
    let mut out = Vec::new();
    for line in styled.lines() {
        let mut at_start = None;
        let mut text = String::new();
        let mut rest = line;
        while !rest.is_empty() {
            if let Some(seq) = rest.strip_prefix("\x1b[") {
                let end = seq.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
                if seq.as_bytes().get(end) == Some(&b'm') {
                    sgr.apply(&seq[..end]);
                }
                rest = &seq[end + 1..];
                continue;
            }
            let c = rest.chars().next().unwrap_or(' ');
            if at_start.is_none() && c != ' ' {
                at_start = Some(sgr);
            }
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out.push((text, at_start.unwrap_or(sgr)));
    }
    out
}

/// The few SGR attributes the test looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sgr {
    dim: bool,
    /// Background colour index, if not the default.
    bg: Option<u8>,
}

impl Sgr {
    fn apply(&mut self, params: &str) {
        let ps: Vec<u16> = params.split(';').map(|p| p.parse().unwrap_or(0)).collect();
        let mut i = 0;
        while i < ps.len() {
            match ps[i] {
                0 => *self = Sgr::default(),
                2 => self.dim = true,
                22 => self.dim = false,
                n @ 40..=47 => self.bg = Some((n - 40) as u8),
                49 => self.bg = None,
                48 if ps.get(i + 1) == Some(&5) => {
                    self.bg = ps.get(i + 2).map(|&n| n as u8);
                    i += 2;
                }
                38 if ps.get(i + 1) == Some(&5) => i += 2,
                _ => {}
            }
            i += 1;
        }
    }
}

/// ANSI green, the background of a new row.
const GREEN: u8 = 2;

#[test]
fn the_live_screen_follows_connections_and_quits_cleanly() {
    let dir = TempDir::new();
    let port = free_port("127.0.0.1");
    let p = port.to_string();
    let server = Holder::start(
        Command::new(dir.exe(NETSCENE, "wat-server")),
        &[format!("tcp-listen=127.0.0.1:{port}")],
    );
    let tmux = Tmux::start("watch", 160, 40, &watch_command("-n"));
    let screen = tmux.wait_for("the table", |s| {
        s.iter().any(|l| l.contains("sockets tracked"))
    });
    assert!(
        screen[0].starts_with("Proto") && screen[0].contains("Program"),
        "{screen:#?}"
    );
    assert_eq!(screen.len(), 40);

    // Other tests' sockets fill the screen: a filter leaves only ours.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &p]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the listener seeded before start", |s| {
        s.iter().any(|l| l.contains(&format!("filter \"{port}\"")))
            && rows_with(s, &format!("127.0.0.1:{port}"))
                .iter()
                .any(|l| l.contains("LISTEN") && l.contains("wat-server"))
    });
    let rows = body(&screen);
    assert!(rows.iter().all(|l| l.contains(&p)), "{screen:#?}");

    // A client started now appears from events alone, both ends named.
    let client = Holder::start(
        Command::new(dir.exe(NETSCENE, "wat-client")),
        &[format!("tcp-connect=127.0.0.1:{port}")],
    );
    let client_row = format!("127.0.0.1:{port}  ");
    tmux.wait_for("both ends of the connection", |s| {
        let rows = rows_with(s, &p);
        rows.iter().any(|l| {
            l.contains("ESTABLISHED")
                && l.contains("wat-client")
                && l.contains(&client.pid().to_string())
        }) && rows.iter().any(|l| {
            l.contains("ESTABLISHED")
                && l.contains("wat-server")
                && l.contains(&server.pid().to_string())
        })
    });
    let styles = line_styles(&tmux.styled_screen());
    let (line, style) = styles
        .iter()
        .find(|(l, _)| l.contains("wat-client") && l.contains(&client_row))
        .expect("the client's row");
    assert_eq!(style.bg, Some(GREEN), "a new row is highlighted: {line}");

    // The client leaves: the server's end closes and fades out, dimmed,
    // with its last state, then goes.
    drop(client);
    let closing = |s: &[String]| {
        rows_with(s, &p)
            .iter()
            .any(|l| l.contains("LAST_ACK") && l.contains("wat-server"))
    };
    tmux.wait_for("the closed row, still shown", closing);
    let styles = line_styles(&tmux.styled_screen());
    let (line, style) = styles
        .iter()
        .find(|(l, _)| l.contains("LAST_ACK") && l.contains("wat-server"))
        .expect("the closed row");
    assert!(style.dim, "a closed row is dimmed: {line}");
    tmux.wait_for("the closed row gone", |s| !closing(s));

    // `/` edits the filter: a second word narrows it to one program.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", " wat-server"]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the narrower filter", |s| {
        s.iter()
            .any(|l| l.contains(&format!("filter \"{port} wat-server\"")))
    });
    let rows = body(&screen);
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|l| l.contains(&p) && l.contains("wat-server")),
        "{screen:#?}"
    );

    // A smaller window is redrawn at its size.
    tmux.run(&[
        "resize-window",
        "-t",
        &tmux.session,
        "-x",
        "100",
        "-y",
        "25",
    ]);
    let screen = tmux.wait_for("a redraw at 100x25", |s| {
        s.len() == 25
            && s[24].starts_with("q quit")
            && s[23].contains("sockets tracked")
            && s[0].trim_end().ends_with("Age")
    });
    assert!(
        screen.iter().all(|l| l.chars().count() <= 100),
        "{screen:#?}"
    );
    assert!(rows_with(&screen, &p).iter().any(|l| l.contains("LISTEN")));

    // q leaves the alternate screen with the cursor shown, exit status 0.
    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| s.iter().any(|l| l == "EXITED 0"));
    assert_eq!(tmux.format("#{alternate_on} #{cursor_flag}"), "0 1");
    let screen = tmux.screen();
    assert!(
        !screen.iter().any(|l| l.contains("sockets tracked")),
        "the table is gone: {screen:#?}"
    );
}

#[test]
fn sigterm_restores_the_terminal_too() {
    let tmux = Tmux::start("term", 120, 30, &watch_command("-n"));
    tmux.wait_for("the table", |s| {
        s.iter().any(|l| l.contains("sockets tracked"))
    });
    assert_eq!(tmux.format("#{alternate_on}"), "1");
    let sh = tmux.format("#{pane_pid}");
    let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
        .expect("the shell's children");
    let pid: libc::pid_t = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("bnetstat's pid");
    // SAFETY: signalling the bnetstat this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tmux.wait_for("the shell again", |s| s.iter().any(|l| l == "EXITED 0"));
    assert_eq!(tmux.format("#{alternate_on} #{cursor_flag}"), "0 1");
}

#[test]
fn a_terminal_that_goes_away_ends_watch() {
    let tmux = Tmux::start("hup", 120, 30, &watch_command("-n"));
    tmux.wait_for("the table", |s| {
        s.iter().any(|l| l.contains("sockets tracked"))
    });
    let sh = tmux.format("#{pane_pid}");
    let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
        .expect("the shell's children");
    let pid = children
        .split_whitespace()
        .next()
        .expect("bnetstat's pid")
        .to_owned();
    // The pane's terminal hangs up: bnetstat must not go on reading it.
    drop(tmux);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "bnetstat watch ({pid}) outlived its terminal"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
