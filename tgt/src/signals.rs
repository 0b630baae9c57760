//! Termination signals: blocked in every thread and taken synchronously by the main thread, so a
//! signal never interrupts a reactor and shutdown runs as ordinary code.

use std::time::Duration;

/// The signals that stop the target.
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Block SIGINT/SIGTERM in the calling thread; threads spawned afterwards inherit the mask.
/// Call before starting the reactors.
pub fn block_stop_signals() {
    let set = stop_set();
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_sigmask failed");
}

/// Wait up to `timeout` for a stop signal; returns its number if one arrived.
pub fn wait_stop_signal(timeout: Duration) -> Option<libc::c_int> {
    let set = stop_set();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Wake a thread blocked in [`wait_stop_signal`] (e.g. when a reactor begins the shutdown):
/// raises SIGTERM on the process, blocked in every thread, so the waiter takes it; the waiter
/// must check whether shutdown already began before treating it as a request.
pub fn wake_waiter() {
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

/// Name of a stop signal for logs.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
