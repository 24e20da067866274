//! `--expect FILE`: the listeners a host is expected to have, one rule a
//! line, and the check of a record against them. Pure.
//!
//! ```text
//! # program           proto   ports
//! /usr/sbin/sshd      tcp     22
//! nginx               tcp     80,443
//! dnsmasq             udp     53
//! /opt/app/bin/app    tcp6    8000-8099
//! *                   udp     5353
//! ```
//!
//! A program starting with `/` is an executable's full path; anything else
//! is a program name, matched against the process's `comm` and the file
//! name of its executable; `*` is any program. A proto is `tcp`, `udp`
//! (both families), `tcp4`, `udp4`, `tcp6` or `udp6`. Ports are a port, a
//! range `A-B`, a comma-separated list of those, or `*`.

use std::{fmt, ops::RangeInclusive};

use crate::{decode::Family, sockdiag::Proto};

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    program: Program,
    proto: Proto,
    family: Option<Family>,
    ports: Vec<RangeInclusive<u16>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Program {
    Any,
    Path(String),
    Name(String),
}

/// What a port-opening record says, as the rules need it.
pub struct Opened<'a> {
    pub proto: Proto,
    pub family: Family,
    pub port: u16,
    pub comm: Option<&'a str>,
    pub exe: Option<&'a str>,
}

/// The expected listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    rules: Vec<Rule>,
}

/// A line that is not a rule.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl Expected {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Expected, ParseError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            rules.push(rule(line).map_err(|reason| ParseError {
                line: i + 1,
                reason,
            })?);
        }
        Ok(Expected { rules })
    }

    /// Whether some rule allows what was opened.
    pub fn allows(&self, o: &Opened<'_>) -> bool {
        self.rules.iter().any(|r| {
            r.proto == o.proto
                && r.family.is_none_or(|f| f == o.family)
                && r.ports.iter().any(|p| p.contains(&o.port))
                && match &r.program {
                    Program::Any => true,
                    Program::Path(path) => o.exe == Some(path.as_str()),
                    Program::Name(name) => {
                        o.comm == Some(name.as_str())
                            || o.exe.and_then(|e| e.rsplit('/').next()) == Some(name.as_str())
                    }
                }
        })
    }
}

fn rule(line: &str) -> Result<Rule, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [program, proto, ports] = fields[..] else {
        return Err(format!(
            "want three fields (program proto ports), found {}",
            fields.len()
        ));
    };
    let program = match program {
        "*" => Program::Any,
        p if p.starts_with('/') => Program::Path(p.to_owned()),
        p => Program::Name(p.to_owned()),
    };
    let (proto, family) = match proto {
        "tcp" => (Proto::Tcp, None),
        "tcp4" => (Proto::Tcp, Some(Family::Inet)),
        "tcp6" => (Proto::Tcp, Some(Family::Inet6)),
        "udp" => (Proto::Udp, None),
        "udp4" => (Proto::Udp, Some(Family::Inet)),
        "udp6" => (Proto::Udp, Some(Family::Inet6)),
        other => {
            return Err(format!(
                "unknown proto {other:?} (tcp, udp, tcp4, udp4, tcp6, udp6)"
            ));
        }
    };
    let ports = if ports == "*" {
        vec![0..=u16::MAX]
    } else {
        ports.split(',').map(port_range).collect::<Result<_, _>>()?
    };
    Ok(Rule {
        program,
        proto,
        family,
        ports,
    })
}

fn port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port (0 to 65535)"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("range {text:?} runs backwards"));
            }
            Ok(a..=b)
        }
        None => port(text).map(|p| p..=p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "\
# program proto ports
/usr/sbin/sshd  tcp   22
nginx           tcp   80,443   # web
app             tcp6  8000-8099
*               udp   5353
";

    fn opened<'a>(
        proto: Proto,
        family: Family,
        port: u16,
        comm: &'a str,
        exe: &'a str,
    ) -> Opened<'a> {
        Opened {
            proto,
            family,
            port,
            comm: Some(comm),
            exe: Some(exe),
        }
    }

    #[test]
    fn a_listener_matches_by_path_name_proto_family_and_port() {
        let e = Expected::parse(RULES).expect("parses");
        let (tcp, udp, v4, v6) = (Proto::Tcp, Proto::Udp, Family::Inet, Family::Inet6);
        assert!(e.allows(&opened(tcp, v4, 22, "sshd", "/usr/sbin/sshd")));
        assert!(
            !e.allows(&opened(tcp, v4, 22, "sshd", "/tmp/sshd")),
            "same name, other path"
        );
        assert!(e.allows(&opened(tcp, v6, 443, "nginx", "/usr/sbin/nginx")));
        assert!(
            e.allows(&opened(tcp, v4, 80, "worker", "/usr/sbin/nginx")),
            "by exe name"
        );
        assert!(!e.allows(&opened(tcp, v4, 8080, "nginx", "/usr/sbin/nginx")));
        assert!(e.allows(&opened(tcp, v6, 8099, "app", "/opt/app")));
        assert!(
            !e.allows(&opened(tcp, v4, 8000, "app", "/opt/app")),
            "tcp6 only"
        );
        assert!(e.allows(&opened(udp, v4, 5353, "anything", "/x")));
        assert!(!e.allows(&opened(udp, v4, 4444, "nc", "/usr/bin/nc")));
        assert!(
            !e.allows(&opened(tcp, v4, 5353, "nc", "/usr/bin/nc")),
            "udp rule"
        );
    }

    #[test]
    fn an_unknown_program_matches_only_a_wildcard() {
        let e = Expected::parse("* tcp *\nsshd udp 1").expect("parses");
        let unknown = Opened {
            proto: Proto::Udp,
            family: Family::Inet,
            port: 1,
            comm: None,
            exe: None,
        };
        assert!(!e.allows(&unknown));
        assert!(e.allows(&Opened {
            proto: Proto::Tcp,
            ..unknown
        }));
    }

    #[test]
    fn bad_lines_say_which_and_why() {
        let err = |text| Expected::parse(text).expect_err("bad").to_string();
        assert_eq!(
            err("\n\nsshd tcp"),
            "line 3: want three fields (program proto ports), found 2"
        );
        assert!(err("sshd sctp 22").starts_with("line 1: unknown proto \"sctp\""));
        assert_eq!(
            err("sshd tcp 70000"),
            "line 1: \"70000\" is not a port (0 to 65535)"
        );
        assert_eq!(
            err("sshd tcp 90-80"),
            "line 1: range \"90-80\" runs backwards"
        );
        assert_eq!(Expected::parse("# nothing\n\n"), Ok(Expected::default()));
    }
}
