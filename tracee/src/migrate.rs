//! Moving a stopped tracee from one tracer thread to another, with no moment in which it runs
//! its own code untraced.
//!
//! A task is traced by one thread, and only that thread may make ptrace requests on it or wait
//! for its stops. A recorder with a tracer thread per CPU (each serving the tasks pinned to its
//! CPU, so that every stop is a hand-off on one CPU) must move a task to another thread when it
//! moves the task to another CPU. The kernel has no request for that: the old tracer detaches
//! and the new one attaches. In between the task runs untraced, and with deja's seccomp filter
//! every syscall it makes then fails with `ENOSYS` (`SECCOMP_RET_TRACE` with no tracer), and
//! any signal it takes runs its handler unseen.
//!
//! [`park`] makes that moment harmless: it blocks every signal (`PTRACE_SETSIGMASK`), points
//! the task at a `syscall` instruction that the filter lets through untraced (the in-process
//! library's own) with `pause` in `rax`, and detaches. The task enters `pause`, which returns
//! only when a signal is to be handled; none can be (all are blocked; `SIGKILL` ends it, which
//! the new tracer then sees), and when the kernel wakes it for anything else (a freeze, a job
//! control stop) it restarts `pause` at the same instruction. [`adopt`] attaches to the task
//! from the new thread, whose `SIGSTOP` interrupts `pause` (the new tracer sees it at its
//! delivery and drops it), and puts back its registers and signal mask; a task parked at a syscall's entry is set to make that
//! syscall again, so the new tracer sees its entry stop.
//!
//! Signals sent to the task while it is parked stay pending (blocked) and are reported to the
//! new tracer once the mask is restored and the task resumed.

use anyhow::{bail, ensure, Context, Result};
use nix::unistd::Pid;

use crate::regs::Regs;
use crate::segv_mask::{set_signal_mask, signal_mask};
use crate::stop::{wait_for, Stop};
use crate::tracee::Tracee;

/// Where a task was stopped when it was parked, which decides how it goes on once adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkedAt {
    /// At a syscall's entry (a seccomp stop): the syscall has not run; adopted, the task makes
    /// it again (its new tracer gets the entry stop).
    SyscallEntry,
    /// Anywhere else (a ptrace event, a syscall's exit, a new task's first stop): adopted,
    /// the task goes on from its registers as they were. Not a signal-delivery stop whose
    /// signal is still to be delivered: the new tracer's stop is not one, and a signal passed
    /// when resuming from it is not delivered.
    Elsewhere,
}

/// A task parked by [`park`]: detached, waiting in `pause` with every signal blocked.
#[derive(Debug)]
pub struct Parked {
    pid: Pid,
    regs: Regs,
    mask: u64,
    at: ParkedAt,
}

impl Parked {
    /// The parked task.
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// Parks the stopped task `t`, traced by the calling thread, and detaches it (see the module
/// documentation). `allowed_syscall` is the address of a `syscall` instruction in the task
/// that deja's seccomp filter lets through without a stop (the library's own).
pub fn park(t: &Tracee, at: ParkedAt, allowed_syscall: u64) -> Result<Parked> {
    crate::deferred::make_held()?;
    let pid = t.pid();
    let regs = t.regs()?;
    let mask = signal_mask(t)?;
    set_signal_mask(t, !0)?;
    let mut wait = regs;
    wait.rip = allowed_syscall;
    wait.rax = libc::SYS_pause as u64;
    // No syscall is pending once the task leaves this stop (at an entry stop, the trapped
    // call is skipped: the task makes it again once adopted).
    wait.orig_rax = u64::MAX;
    t.set_regs(&wait)?;
    // SAFETY: a plain ptrace request on a task this thread traces and that is stopped.
    if unsafe { libc::ptrace(libc::PTRACE_DETACH, pid.as_raw(), 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("detaching task {pid} to move it to another tracer"));
    }
    Ok(Parked {
        pid,
        regs,
        mask,
        at,
    })
}

/// Takes the parked task `p` over from the calling thread (`PTRACE_ATTACH`, then ptrace
/// `options`, `PTRACE_O_*`), and puts its registers and signal mask back through `t` (a handle
/// of the task: any thread's, its requests are the calling thread's). Leaves it stopped (in
/// the signal-delivery-stop of the attach's `SIGSTOP`, which resuming it with no signal
/// discards), ready to be resumed.
///
/// `PTRACE_ATTACH` rather than `PTRACE_SEIZE`: a seized task reports group-stops, `SIGCONT`s
/// and its children's first stops in other ways than the attached tasks deja spawns, and the
/// attach's `SIGSTOP` is harmless here: the tracer sees it first, at its delivery, and drops
/// it, so the task never stops for it and its parent never sees a stop.
pub fn adopt(t: &Tracee, p: Parked, options: libc::c_int) -> Result<()> {
    let pid = p.pid;
    // SAFETY: plain ptrace requests on a task no thread traces (it was detached by `park`).
    if unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid.as_raw(), 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("attaching the parked task {pid}"));
    }
    match wait_for(pid)? {
        Stop::Signal(libc::SIGSTOP) => {}
        other => bail!("the parked task {pid} stopped unexpectedly when attached: {other:?}"),
    }
    // SAFETY: as above, on a task this thread now traces, stopped.
    if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid.as_raw(), 0, options as usize) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the ptrace options of task {pid}"));
    }
    ensure!(
        t.pid() == pid,
        "adopting task {pid} through the handle of task {}",
        t.pid()
    );
    let mut regs = p.regs;
    if p.at == ParkedAt::SyscallEntry {
        // Back onto the `syscall` instruction, with the call's number: it runs again.
        regs.rip = regs.rip.wrapping_sub(2);
        regs.rax = regs.orig_rax;
        regs.orig_rax = u64::MAX;
    }
    t.set_regs(&regs)?;
    set_signal_mask(t, p.mask)
}
