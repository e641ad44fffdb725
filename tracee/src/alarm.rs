//! A real-time timer whose `SIGALRM` interrupts the tracer's `waitpid` (with `EINTR`), so the
//! tracer can do periodic work or give up waiting. Only tracer threads unblock `SIGALRM` (see
//! [`crate::tsc::on_tracer_thread`]).
//!
//! The timer is the calling thread's own (`timer_create` with `SIGEV_THREAD_ID`), and so is
//! its count of ticks: a recorder with a tracer thread per CPU gives each thread its own
//! ticks, each interrupting only that thread's waits.

use std::cell::Cell;
use std::time::Duration;

/// A thread's timer, deleted when the thread ends (POSIX timers belong to the process).
struct Timer(Cell<Option<usize>>);

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(t) = self.0.get() {
            // SAFETY: deletes a timer this thread created and nothing else uses.
            unsafe { libc::timer_delete(t as libc::timer_t) };
        }
    }
}

thread_local! {
    /// How many times the calling thread's timer has fired.
    static FIRED: Cell<u64> = const { Cell::new(0) };
    /// The calling thread's timer, once created.
    static TIMER: Timer = const { Timer(Cell::new(None)) };
}

extern "C" fn wake_waiter(_: libc::c_int) {
    // A const-initialized thread-local of a plain integer lives in the thread's static TLS
    // block: reading and writing it is async-signal-safe.
    FIRED.with(|f| f.set(f.get().wrapping_add(1)));
}

/// How many times the calling thread's timer has fired since the thread started: ticks that
/// came while the tracer was busy (not waiting) count too, which a wait's `EINTR` alone would
/// miss.
pub fn fired() -> u64 {
    FIRED.with(Cell::get)
}

/// The calling thread's id (`gettid`).
fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Arms the calling thread's timer: it fires after `first`, then every `interval` (never again
/// if zero).
pub fn start(first: Duration, interval: Duration) {
    let ts = |d: Duration| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    let timer = match TIMER.with(|t| t.0.get()) {
        Some(t) => t as libc::timer_t,
        None => {
            // SAFETY: installs an async-signal-safe handler without SA_RESTART (so the signal
            // interrupts waitpid); a zeroed sigevent is valid and filled in below;
            // timer_create writes the new timer's id into `timer`, a local.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = wake_waiter as *const () as libc::sighandler_t;
                libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
                let mut sev: libc::sigevent = std::mem::zeroed();
                sev.sigev_notify = libc::SIGEV_THREAD_ID;
                sev.sigev_signo = libc::SIGALRM;
                sev.sigev_notify_thread_id = gettid();
                let mut timer: libc::timer_t = std::ptr::null_mut();
                if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
                    tracing::warn!(
                        "no timer for the tracer: {}",
                        std::io::Error::last_os_error()
                    );
                    return;
                }
                TIMER.with(|t| t.0.set(Some(timer as usize)));
                timer
            }
        }
    };
    let spec = libc::itimerspec {
        it_interval: ts(interval),
        it_value: ts(first),
    };
    // SAFETY: arms a timer this thread created, reading `spec`, a local.
    unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) };
}

/// Disarms the calling thread's timer.
pub fn stop() {
    if let Some(t) = TIMER.with(|t| t.0.get()) {
        // SAFETY: a zeroed itimerspec disarms the timer, which this thread created.
        unsafe {
            let spec: libc::itimerspec = std::mem::zeroed();
            libc::timer_settime(t as libc::timer_t, 0, &spec, std::ptr::null_mut());
        }
    }
}
