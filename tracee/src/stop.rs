//! What a waited-for tracee is doing: the kinds of ptrace stop and of ending.

use anyhow::{Context, Result};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Why a tracee stopped (or that it ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The seccomp filter trapped a syscall at its entry (`PTRACE_EVENT_SECCOMP`).
    SeccompEntry,
    /// A syscall-stop (after `PTRACE_SYSCALL`): the caller knows whether it is an exit.
    SyscallStop,
    /// The task completed an `execve` (`PTRACE_EVENT_EXEC`).
    Exec,
    /// Another ptrace event (clone, fork, exit, ...), by its `PTRACE_EVENT_*` number.
    Event(i32),
    /// A signal is about to be delivered (signal-delivery-stop) or a group-stop.
    Signal(i32),
    /// The task exited with this status.
    Exited(i32),
    /// The task was killed by this signal.
    Killed(i32),
}

impl Stop {
    /// Whether the task is gone.
    pub fn is_end(self) -> bool {
        matches!(self, Stop::Exited(_) | Stop::Killed(_))
    }
}

/// Waits for `pid` to stop or end, retrying on `EINTR`.
pub fn wait_for(pid: Pid) -> Result<Stop> {
    wait(Some(pid), &mut || Ok(()))
        .map(|(_, stop)| stop)
        .with_context(|| format!("waiting for task {pid}"))
}

/// Waits for any traced task to stop or end, calling `on_idle` each time a signal interrupts
/// the wait (the recorder's periodic timer); returns the task and what it did.
pub fn wait_any(on_idle: &mut dyn FnMut() -> Result<()>) -> Result<(Pid, Stop)> {
    wait(None, on_idle).context("waiting for the traced tasks")
}

/// `waitpid(pid or any, __WALL)` until a stop or an end is reported.
fn wait(pid: Option<Pid>, on_idle: &mut dyn FnMut() -> Result<()>) -> Result<(Pid, Stop)> {
    loop {
        let status = match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Err(nix::errno::Errno::EINTR) => {
                on_idle()?;
                continue;
            }
            other => other?,
        };
        if let (Some(who), Some(stop)) = (status.pid(), decode(status)) {
            return Ok((who, stop));
        }
    }
}

fn decode(status: WaitStatus) -> Option<Stop> {
    Some(match status {
        WaitStatus::Exited(_, code) => Stop::Exited(code),
        WaitStatus::Signaled(_, sig, _) => Stop::Killed(sig as i32),
        WaitStatus::PtraceSyscall(_) => Stop::SyscallStop,
        WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_SECCOMP => Stop::SeccompEntry,
        WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_EXEC => Stop::Exec,
        WaitStatus::PtraceEvent(_, _, ev) => Stop::Event(ev),
        WaitStatus::Stopped(_, sig) => Stop::Signal(sig as i32),
        WaitStatus::Continued(_) | WaitStatus::StillAlive => return None,
    })
}
