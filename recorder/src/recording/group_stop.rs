//! Job-control stops. A stop signal (`SIGSTOP`, or `SIGTSTP`/`SIGTTIN`/`SIGTTOU` without a
//! handler) delivered to a task stops its whole process: each of its threads reports a
//! group-stop (a ptrace stop without siginfo) on its way back to user code. The recorder keeps
//! such a task stopped, as the kernel would (its parent's `waitpid(WUNTRACED)` reports it
//! stopped, `SIGCHLD` says `CLD_STOPPED`): a tracer that resumed it would let it run on, which
//! the program can see. The task gives up the CPU and records nothing there.
//!
//! The process is continued by a `SIGCONT`, which the kernel queues for a traced task without
//! waking it: the recorder sees it pending (`SigPnd`/`ShdPnd` in `/proc/TID/status`) after
//! every stop it handles, and at timer ticks (a `SIGCONT` from outside the recording). The task
//! then waits for the CPU and, when it gets it, goes on from where it stopped: to the
//! signal-delivery-stop of the `SIGCONT` (recorded there, at the boundary, as any signal that
//! comes right after an event), or to the restart of the syscall the stop interrupted. A
//! `SIGKILL` ends a stopped task as usual.
//!
//! The replay does not keep tasks stopped (all it shows the program of the stop comes from the
//! trace: `wait4`'s status, the `SIGCHLD`): it parks a task at its group-stop, and lets it go on
//! at its next event (see the replayer's `group_stop`).

use anyhow::Result;

use super::Session;
use tracee::Tracee;

use crate::task::{Entry, State, Task};

/// Ends the recorder's wait for the tasks at a tick: a group-stopped task's process got a
/// `SIGCONT` (from outside the recording), and the task may go on.
#[derive(Debug, thiserror::Error)]
#[error("a group-stopped task was continued")]
pub(super) struct Continued;

/// At a tick of the recorder's wait: [`Continued`] if a group-stopped task among `tasks` got a
/// `SIGCONT`.
pub(super) fn continued_while_waiting<'a>(mut tasks: impl Iterator<Item = &'a Task>) -> Result<()> {
    let continued =
        tasks.any(|t| matches!(t.state, State::GroupStopped(_)) && sigcont_pending(&t.tracee));
    if continued {
        return Err(Continued.into());
    }
    Ok(())
}

/// Whether `e` is [`Continued`].
pub(super) fn is_continued(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Continued>().is_some())
}

/// Number of `SIGCONT` in the kernel's signal sets.
const SIGCONT_BIT: u64 = 1 << (libc::SIGCONT - 1);

impl Session {
    /// `tid` reported a group-stop (of stop signal `sig`), in user code (`restarting: None`,
    /// then it held the CPU) or while restarting a syscall: it stays stopped until its process
    /// is continued (or, traced, until its tracer resumes it).
    pub(super) fn on_group_stop(
        &mut self,
        tid: i32,
        sig: i32,
        restarting: Option<Box<Entry>>,
    ) -> Result<()> {
        if self.ptrace.is_traced(tid) {
            return self.ptrace_group_stop(tid, sig, restarting);
        }
        tracing::debug!(tid, "group-stop: the task stays stopped until SIGCONT");
        let t = self.task(tid)?;
        t.boundary = None;
        t.state = State::GroupStopped(restarting);
        if self.current == Some(tid) {
            self.current = None;
        }
        self.continue_group_stops();
        Ok(())
    }

    /// Whether a task is kept in a group-stop.
    pub(super) fn any_group_stopped(&self) -> bool {
        self.tasks
            .values()
            .any(|t| t.lane == self.lane && matches!(t.state, State::GroupStopped(_)))
    }

    /// Queues for the CPU every group-stopped task whose process got a `SIGCONT`. A `SIGCONT`
    /// continues a whole process, and one of its threads dequeues it, so all the process's
    /// stopped threads go on together, and so does a thread whose group-stop is reported after
    /// that (its process is in `continued` until the next stop signal).
    pub(super) fn continue_group_stops(&mut self) {
        for t in self.tasks.values().filter(|t| t.lane == self.lane) {
            if matches!(t.state, State::GroupStopped(_)) && sigcont_pending(&t.tracee) {
                self.continued.insert(t.pid);
            }
        }
        for (&tid, t) in self.tasks.iter_mut().filter(|(_, t)| t.lane == self.lane) {
            if !matches!(t.state, State::GroupStopped(_)) || !self.continued.contains(&t.pid) {
                continue;
            }
            let State::GroupStopped(restarting) = std::mem::replace(&mut t.state, State::Running)
            else {
                continue;
            };
            tracing::debug!(tid, "SIGCONT: the group-stopped task goes on");
            t.state = State::ReadyToContinue(restarting);
            self.ready.push_back(tid);
            if let Some(rel) = self.ptrace.get_mut(tid) {
                // The stop its tracer was told of (attached to or interrupted while
                // group-stopped) ended unreported: its SIGCONT's stop is what it waits for.
                rel.stop.take_if(|s| !s.reported);
            }
        }
    }

    /// Signal `sig` is about to be delivered to `tid`: a stop signal starts a new group-stop
    /// of its process, which only a new `SIGCONT` ends.
    pub(super) fn stop_signal_delivered(&mut self, tid: i32, sig: i32) {
        if matches!(
            sig,
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
        ) {
            if let Some(t) = self.tasks.get(&tid) {
                self.continued.remove(&t.pid);
            }
        }
    }

    /// A task continued after its group-stop gets the CPU: it goes on from its stop, where it
    /// runs no user code before its next stop (see the module doc).
    pub(super) fn continue_stopped(
        &mut self,
        tid: i32,
        restarting: Option<Box<Entry>>,
    ) -> Result<()> {
        let t = self.task(tid)?;
        let regs = t.tracee.regs()?;
        match restarting {
            None => {
                // Like the resumption right after an event: a signal stop with these registers
                // (the SIGCONT's) comes at this boundary.
                t.boundary = Some(regs);
                t.state = State::Running;
                t.tracee.cont(0)?;
                self.current = Some(tid);
            }
            Some(entry) => {
                let exclusive = entry.exclusive;
                t.state = State::Restarting(entry);
                t.tracee.cont(0)?;
                self.current = exclusive.then_some(tid);
            }
        }
        Ok(())
    }
}

/// Whether a `SIGCONT` is pending for task `t` or its process (an unreadable status: no).
pub(super) fn sigcont_pending(t: &Tracee) -> bool {
    ["SigPnd", "ShdPnd"]
        .iter()
        .any(|field| t.signal_set(field).is_ok_and(|set| set & SIGCONT_BIT != 0))
}
