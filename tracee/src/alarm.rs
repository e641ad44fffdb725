//! A real-time timer whose `SIGALRM` interrupts the tracer's `waitpid` (with `EINTR`), so the
//! tracer can do periodic work or give up waiting. Only the tracer thread unblocks `SIGALRM`
//! (see [`crate::tsc::on_tracer_thread`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How many times the timer has fired.
static FIRED: AtomicU64 = AtomicU64::new(0);

extern "C" fn wake_waiter(_: libc::c_int) {
    // An atomic add is async-signal-safe.
    FIRED.fetch_add(1, Ordering::Relaxed);
}

/// How many times the timer has fired since the process started: ticks that came while the
/// tracer was busy (not waiting) count too, which a wait's `EINTR` alone would miss.
pub fn fired() -> u64 {
    FIRED.load(Ordering::Relaxed)
}

/// Arms the timer: it fires after `first`, then every `interval` (never again if zero).
pub fn start(first: Duration, interval: Duration) {
    let tv = |d: Duration| libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // (The handler once: nothing else in deja sets SIGALRM's, and a debugger's single step
    // arms the timer at every instruction.)
    static HANDLER: std::sync::Once = std::sync::Once::new();
    // SAFETY: installs an async-signal-safe no-op handler without SA_RESTART (so the signal
    // interrupts waitpid); a tracee does not keep it after its exec.
    HANDLER.call_once(|| unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wake_waiter as *const () as libc::sighandler_t;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    });
    // SAFETY: arms the process's real-time timer (plain values; not inherited by a tracee).
    unsafe {
        let it = libc::itimerval {
            it_interval: tv(interval),
            it_value: tv(first),
        };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

/// Disarms the timer.
pub fn stop() {
    // SAFETY: setitimer with a zeroed value disarms the timer.
    unsafe {
        let it: libc::itimerval = std::mem::zeroed();
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}
