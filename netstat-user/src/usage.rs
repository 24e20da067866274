//! bnetstat's own memory and CPU use, from `/proc/self/stat`, as the
//! Prometheus client libraries report a process's (`process_*` metrics).

use anyhow::{Context as _, Result, anyhow};

/// What bnetstat itself uses.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfUsage {
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// What turns `/proc/self/stat`'s ticks and pages into seconds and bytes;
/// fixed for the life of the process.
#[derive(Clone, Copy, Debug)]
pub struct Units {
    /// `btime` in `/proc/stat`: the boot, seconds since the Unix epoch.
    boot_time_s: u64,
    /// `_SC_CLK_TCK`.
    ticks_per_s: u64,
    /// `_SC_PAGESIZE`.
    page_bytes: u64,
}

impl Units {
    /// Reads the boot time and the system's tick and page sizes.
    pub fn read() -> Result<Units> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let boot_time_s = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no btime in /proc/stat"))?;
        // SAFETY: sysconf only reads system constants.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Ok(Units {
            boot_time_s,
            ticks_per_s: u64::try_from(ticks).unwrap_or(100).max(1),
            page_bytes: u64::try_from(page).unwrap_or(4096),
        })
    }

    /// bnetstat's use now.
    pub fn now(&self) -> Result<SelfUsage> {
        let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
        self.parse(&stat)
            .ok_or_else(|| anyhow!("cannot parse /proc/self/stat: {stat}"))
    }

    /// A `/proc/PID/stat` line in these units.
    fn parse(&self, stat: &str) -> Option<SelfUsage> {
        // The command name (field 2) is in parentheses and may hold
        // spaces and parentheses itself: fields resume after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field N of proc_pid_stat(5) is fields[N - 3] here.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let (utime, stime) = (field(14)?, field(15)?);
        let (start, rss) = (field(22)?, field(24)?);
        let ticks = self.ticks_per_s as f64;
        Some(SelfUsage {
            resident_bytes: rss * self.page_bytes,
            cpu_seconds: (utime + stime) as f64 / ticks,
            start_time_seconds: self.boot_time_s as f64 + start as f64 / ticks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: Units = Units {
        boot_time_s: 1_700_000_000,
        ticks_per_s: 100,
        page_bytes: 4096,
    };

    #[test]
    fn ticks_and_pages_become_seconds_and_bytes_even_with_a_strange_comm() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime priority nice threads
        // itrealvalue starttime vsize rss ...
        let stat = "4242 (b) net) (stat) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 75 0 0 20 0 2 0 12350 123456789 1000 18446744073709551615";
        let usage = UNITS.parse(stat).expect("parses");
        assert_eq!(usage.resident_bytes, 1000 * 4096);
        assert_eq!(usage.cpu_seconds, 2.25);
        assert_eq!(usage.start_time_seconds, 1_700_000_123.5);
    }

    #[test]
    fn a_cut_line_is_not_read() {
        assert_eq!(UNITS.parse("4242 (bnetstat) S 1 4242"), None);
        assert_eq!(UNITS.parse("no parentheses"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let usage = Units::read().and_then(|u| u.now()).expect("reads");
        assert!(usage.resident_bytes > 0);
        assert!(usage.start_time_seconds > 1_000_000_000.0);
    }
}
