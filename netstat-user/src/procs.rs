//! Who each process is, by pid: its program, command line and parent, from
//! the kernel's exec, fork and exit events, seeded once at start-up with
//! the processes already running. Pure: no I/O, no clock of its own.
//!
//! An exited process is kept a little longer: the kernel reports the exit
//! before it closes the process's files, so a listener's close arrives
//! after its owner's exit and must still find it.

use std::collections::{HashMap, VecDeque};

use crate::decode::{Event, ProcChange};

/// How long (kernel time) an exited process stays known.
const GRACE_NS: u64 = 10_000_000_000;

/// What the kernel said of a process at its last exec (or its parent's,
/// for a fork that did not exec). Strings are untrusted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub ppid: u32,
    /// Full path of the executable, when known.
    pub exe: Option<String>,
    pub args: Vec<String>,
    /// The cgroup path, for a process learned at start-up (later ones
    /// carry their cgroup id in each event instead).
    pub cgroup: Option<String>,
    /// When it got this image (`CLOCK_BOOTTIME` ns); 0 for one learned at
    /// start-up. Tells a pid's new process from the one that exited.
    since_ns: u64,
}

impl Process {
    /// A process already running when bnetstat started.
    pub fn existing(
        ppid: u32,
        exe: Option<String>,
        args: Vec<String>,
        cgroup: Option<String>,
    ) -> Process {
        Process {
            ppid,
            exe,
            args,
            cgroup,
            since_ns: 0,
        }
    }
}

/// Every known process.
#[derive(Debug, Default)]
pub struct Processes {
    live: HashMap<u32, Process>,
    /// Exited processes by when they are forgotten: (at, pid, since_ns).
    exited: VecDeque<(u64, u32, u64)>,
}

impl Processes {
    /// Adds a process found at start-up; one the events already told of
    /// is newer and stays.
    pub fn seed(&mut self, pid: u32, process: Process) {
        self.live.entry(pid).or_insert(process);
    }

    /// The process `pid`, if known.
    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.live.get(&pid)
    }

    /// Applies exec, fork and exit events; ignores the rest.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Exec(ev) => {
                self.forget_until(ev.ts_ns);
                self.live.insert(
                    ev.owner.pid,
                    Process {
                        ppid: ev.ppid,
                        exe: ev.exe.clone(),
                        args: ev.args.clone(),
                        cgroup: None,
                        since_ns: ev.ts_ns,
                    },
                );
            }
            Event::Proc { ts_ns, change } => {
                self.forget_until(*ts_ns);
                match *change {
                    // The child runs its parent's program until it execs.
                    ProcChange::Fork { pid, ppid } => {
                        let parent = self.live.get(&ppid).cloned().unwrap_or_default();
                        self.live.insert(
                            pid,
                            Process {
                                ppid,
                                since_ns: *ts_ns,
                                ..parent
                            },
                        );
                    }
                    ProcChange::Exit { pid } => {
                        if let Some(p) = self.live.get(&pid) {
                            self.exited.push_back((ts_ns + GRACE_NS, pid, p.since_ns));
                        }
                    }
                }
            }
            Event::StateChange(_) | Event::Udp(_) | Event::Tcp(_) => {}
        }
    }

    /// Forgets the exited processes whose grace ended by `now_ns`, unless
    /// their pid has a new process since.
    fn forget_until(&mut self, now_ns: u64) {
        while let Some(&(at, pid, since)) = self.exited.front() {
            if at > now_ns {
                break;
            }
            self.exited.pop_front();
            if self.live.get(&pid).is_some_and(|p| p.since_ns == since) {
                self.live.remove(&pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{ExecInfo, Owner};

    fn exec(ts_ns: u64, pid: u32, ppid: u32, exe: &str) -> Event {
        Event::Exec(ExecInfo {
            ts_ns,
            owner: Owner {
                pid,
                uid: 0,
                comm: "x".into(),
                cgroup: 0,
            },
            ppid,
            exe: Some(exe.into()),
            args: vec![exe.into(), "-v".into()],
        })
    }

    fn proc(ts_ns: u64, change: ProcChange) -> Event {
        Event::Proc { ts_ns, change }
    }

    #[test]
    fn an_exec_names_the_process_and_a_fork_inherits_it() {
        let mut procs = Processes::default();
        procs.apply(&exec(1, 10, 1, "/usr/sbin/nginx"));
        procs.apply(&proc(2, ProcChange::Fork { pid: 11, ppid: 10 }));
        let child = procs.get(11).expect("child");
        assert_eq!(
            (child.ppid, child.exe.as_deref()),
            (10, Some("/usr/sbin/nginx"))
        );
        assert_eq!(child.args, ["/usr/sbin/nginx", "-v"]);
        procs.apply(&exec(3, 11, 10, "/bin/sh"));
        assert_eq!(
            procs.get(11).and_then(|p| p.exe.as_deref()),
            Some("/bin/sh")
        );
    }

    #[test]
    fn an_exited_process_is_known_through_its_grace_then_forgotten() {
        let mut procs = Processes::default();
        procs.apply(&exec(1, 10, 1, "/a"));
        procs.apply(&proc(5, ProcChange::Exit { pid: 10 }));
        // Its listener closes after its exit: still named.
        procs.apply(&proc(5 + GRACE_NS - 1, ProcChange::Exit { pid: 99 }));
        assert!(procs.get(10).is_some());
        procs.apply(&proc(5 + GRACE_NS, ProcChange::Exit { pid: 99 }));
        assert_eq!(procs.get(10), None);
        assert!(procs.live.is_empty());
    }

    #[test]
    fn a_reused_pid_is_not_forgotten_with_the_process_that_had_it() {
        let mut procs = Processes::default();
        procs.apply(&exec(1, 10, 1, "/old"));
        procs.apply(&proc(2, ProcChange::Exit { pid: 10 }));
        procs.apply(&proc(3, ProcChange::Fork { pid: 10, ppid: 1 }));
        procs.apply(&exec(4, 10, 1, "/new"));
        procs.apply(&proc(2 + GRACE_NS, ProcChange::Exit { pid: 99 }));
        assert_eq!(procs.get(10).and_then(|p| p.exe.as_deref()), Some("/new"));
    }

    #[test]
    fn the_seed_never_overwrites_what_events_said() {
        let mut procs = Processes::default();
        procs.apply(&exec(1, 10, 1, "/from-event"));
        procs.seed(
            10,
            Process::existing(1, Some("/from-proc".into()), vec![], None),
        );
        procs.seed(
            12,
            Process::existing(1, Some("/bin/sleep".into()), vec![], Some("/a".into())),
        );
        assert_eq!(
            procs.get(10).and_then(|p| p.exe.as_deref()),
            Some("/from-event")
        );
        assert_eq!(procs.get(12).and_then(|p| p.cgroup.as_deref()), Some("/a"));
    }

    #[test]
    fn a_fork_of_an_unknown_parent_still_has_its_parent() {
        let mut procs = Processes::default();
        procs.apply(&proc(1, ProcChange::Fork { pid: 7, ppid: 6 }));
        assert_eq!(
            procs.get(7).map(|p| (p.ppid, p.exe.clone())),
            Some((6, None))
        );
    }
}
