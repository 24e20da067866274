//! Stop requests from SIGINT and SIGTERM, and re-open requests from SIGHUP,
//! as flags the run loops poll.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
};

static STOP: AtomicBool = AtomicBool::new(false);
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::Relaxed);
}

/// Routes SIGINT and SIGTERM to [`stop_requested`], and with `hangup`
/// SIGHUP to [`take_hangup`]. Without `SA_RESTART`, so a blocked `poll`
/// returns at once. Only commands that re-open a file on SIGHUP catch it:
/// for the rest it keeps its default and ends them, as a terminal that
/// goes away must (`watch` would otherwise read a hung-up terminal for
/// ever).
pub fn install(hangup: bool) -> io::Result<()> {
    let handlers: [(libc::c_int, extern "C" fn(libc::c_int)); 3] = [
        (libc::SIGINT, on_stop),
        (libc::SIGTERM, on_stop),
        (libc::SIGHUP, on_hangup),
    ];
    for (sig, handler) in handlers {
        if sig == libc::SIGHUP && !hangup {
            continue;
        }
        // SAFETY: a zeroed sigaction with a handler that only stores an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM has arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Whether SIGHUP has arrived since the last call.
pub fn take_hangup() -> bool {
    HANGUP.swap(false, Ordering::Relaxed)
}
