//! The kernel's clocks, as events and the model use them.

/// `CLOCK_BOOTTIME` now, in ns: the clock of every event's `ts_ns`.
pub fn boottime_ns() -> u64 {
    now(libc::CLOCK_BOOTTIME) as u64
}

/// Nanoseconds to add to a `CLOCK_BOOTTIME` stamp to get wall-clock time.
pub fn boot_to_wall_ns() -> i128 {
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}
