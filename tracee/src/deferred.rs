//! Resume requests held back while the tracer thread holds a lock its peers wait for.
//!
//! A tracee pinned to its tracer's CPU runs the moment a resume request (`PTRACE_CONT`,
//! `PTRACE_SYSCALL`, `PTRACE_SINGLESTEP`) makes it runnable: the kernel lets a woken task
//! preempt the one that woke it, so the tracer sits in the middle of its request until the
//! tracee stops again or its time slice ends. A tracer thread that holds a lock shared with
//! other tracer threads (the recorder's lanes, see `recorder`) would keep it all that time.
//! Between [`defer`] and [`run`], the calling thread's resume requests are held back and made
//! in order by [`run`], after the lock is let go. Anything that waits for a task or looks at
//! whether it runs ([`crate::stop`]'s waits and polls, parking a task) makes the requests held
//! so far first, so code that resumes a task and then waits for it works unchanged.

use std::cell::RefCell;

use anyhow::Result;
use nix::unistd::Pid;

use crate::gone::PtraceContext;

/// A held-back request: the task, the ptrace request, the signal to deliver.
type Request = (Pid, libc::c_uint, i32);

thread_local! {
    /// The calling thread's held-back requests, while it defers them.
    static HELD: RefCell<Option<Vec<Request>>> = const { RefCell::new(None) };
}

/// From now on the calling thread's resume requests are held back until [`run`].
pub fn defer() {
    HELD.with(|h| {
        h.borrow_mut().get_or_insert_with(Vec::new);
    });
}

/// Stops holding resume requests back and makes those held, in order (see [`make_held`]).
pub fn run() -> Result<()> {
    let held = HELD.with(|h| h.borrow_mut().take());
    make(held.unwrap_or_default())
}

/// Makes the requests held so far, in order, and goes on holding later ones back. A request
/// for a task that is gone (killed meanwhile: `ESRCH`) is dropped: its end is reported by
/// the next wait.
pub fn make_held() -> Result<()> {
    let held = HELD.with(|h| h.borrow_mut().as_mut().map(std::mem::take));
    make(held.unwrap_or_default())
}

/// Holds `(pid, request, sig)` back if the calling thread defers its requests; false if it
/// does not (the caller makes the request).
pub(crate) fn hold(pid: Pid, request: libc::c_uint, sig: i32) -> bool {
    HELD.with(|h| match h.borrow_mut().as_mut() {
        Some(held) => {
            held.push((pid, request, sig));
            true
        }
        None => false,
    })
}

fn make(requests: Vec<Request>) -> Result<()> {
    for (pid, request, sig) in requests {
        // SAFETY: a resume request on our tracee takes only integers.
        let r = unsafe { libc::ptrace(request, pid.as_raw(), 0usize, sig as usize) };
        if r < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                tracing::debug!(%pid, "a held-back resume found its task gone");
                continue;
            }
            return Err(err).ptrace_context(pid, || format!("resuming task {pid}"));
        }
    }
    Ok(())
}
