//! What a waited-for tracee is doing: the kinds of ptrace stop and of ending.

use anyhow::{Context, Result};
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

/// The stop or end of `pid` if one is reported already (`waitpid` with `WNOHANG`), else `None`.
pub fn poll(pid: Pid) -> Result<Option<Stop>> {
    crate::deferred::make_held()?;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid stores one int at `status`, a local that outlives the call.
        let who = unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::__WALL | libc::WNOHANG) };
        if who < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(anyhow::Error::from(err).context(format!("polling task {pid}")));
        }
        if who == 0 {
            return Ok(None);
        }
        if let Some(stop) = decode(status) {
            return Ok(Some(stop));
        }
    }
}

/// Whether task `pid` is running or ready to run in the kernel (state `R` in
/// `/proc/PID/stat`), as opposed to sleeping, stopped or gone.
pub fn runnable(pid: Pid) -> bool {
    if crate::deferred::make_held().is_err() {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')' (a comm may hold one).
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        == Some('R')
}

/// The stop task `pid` reaches while it keeps running: polls it up to `polls` times, yielding
/// the CPU in between (the tracer shares it with its tracees); `None` as soon as it is not
/// runnable (it sleeps; unless it stopped right then) or when the polls run out. The task,
/// just resumed, usually reaches its stop in the first yield: the CPU is yielded before the
/// first look, and its scheduler state (a read of `/proc/TID/stat`, the costly part) is read
/// only when a poll found no stop.
pub fn poll_while_runnable(pid: Pid, polls: usize) -> Result<Option<Stop>> {
    crate::deferred::make_held()?;
    for _ in 0..polls {
        std::thread::yield_now();
        if let Some(stop) = poll(pid)? {
            return Ok(Some(stop));
        }
        if !runnable(pid) {
            // (It may have stopped since the poll.)
            return poll(pid);
        }
    }
    Ok(None)
}

/// Waits for any traced task to stop or end, calling `on_idle` each time a signal interrupts
/// the wait (the recorder's periodic timer); returns the task and what it did.
pub fn wait_any(on_idle: &mut dyn FnMut() -> Result<()>) -> Result<(Pid, Stop)> {
    wait(None, on_idle).context("waiting for the traced tasks")
}

/// `waitpid(pid or any, __WALL)` until a stop or an end is reported. The raw status is decoded
/// here rather than by `nix`, whose decoding refuses realtime signals (`SIGRTMIN`..`SIGRTMAX`)
/// with `EINVAL`.
fn wait(pid: Option<Pid>, on_idle: &mut dyn FnMut() -> Result<()>) -> Result<(Pid, Stop)> {
    crate::deferred::make_held()?;
    let target = pid.map_or(-1, Pid::as_raw);
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid stores one int at `status`, a local that outlives the call.
        let who = unsafe { libc::waitpid(target, &mut status, libc::__WALL | libc::__WNOTHREAD) };
        if who < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                on_idle()?;
                continue;
            }
            return Err(err.into());
        }
        if let Some(stop) = decode(status) {
            return Ok((Pid::from_raw(who), stop));
        }
    }
}

/// `PTRACE_EVENT_STOP` (`linux/ptrace.h`).
const PTRACE_EVENT_STOP: i32 = 128;

/// A raw `waitpid` status as a [`Stop`] (`None`: a continuation, which ptrace never reports
/// with these flags).
fn decode(status: libc::c_int) -> Option<Stop> {
    if libc::WIFEXITED(status) {
        return Some(Stop::Exited(libc::WEXITSTATUS(status)));
    }
    if libc::WIFSIGNALED(status) {
        return Some(Stop::Killed(libc::WTERMSIG(status)));
    }
    if !libc::WIFSTOPPED(status) {
        return None;
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    Some(match event {
        0 if sig == libc::SIGTRAP | 0x80 => Stop::SyscallStop,
        0 => Stop::Signal(sig),
        libc::PTRACE_EVENT_SECCOMP => Stop::SeccompEntry,
        // A task traced with `PTRACE_SEIZE` (moved between tracer threads, see `migrate`)
        // reports its group-stops this way: a stop signal's stop like an attached task's,
        // which a failing `PTRACE_GETSIGINFO` tells from a signal-delivery-stop.
        PTRACE_EVENT_STOP if sig != libc::SIGTRAP => Stop::Signal(sig),
        libc::PTRACE_EVENT_EXEC => Stop::Exec,
        ev => Stop::Event(ev),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_realtime_signal_stops_and_events() {
        // Stopped by SIGRTMIN+2 (as `waitpid` encodes it: signal << 8 | 0x7f).
        let rt = libc::SIGRTMIN() + 2;
        assert_eq!(decode((rt << 8) | 0x7f), Some(Stop::Signal(rt)));
        let syscall = ((libc::SIGTRAP | 0x80) << 8) | 0x7f;
        assert_eq!(decode(syscall), Some(Stop::SyscallStop));
        let seccomp = (libc::PTRACE_EVENT_SECCOMP << 16) | (libc::SIGTRAP << 8) | 0x7f;
        assert_eq!(decode(seccomp), Some(Stop::SeccompEntry));
        assert_eq!(decode(3 << 8), Some(Stop::Exited(3)));
        assert_eq!(decode(libc::SIGKILL), Some(Stop::Killed(libc::SIGKILL)));
    }
}
