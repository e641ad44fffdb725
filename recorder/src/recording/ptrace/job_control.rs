//! Where job control (group-stops, `recording/group_stop.rs`) meets emulated ptrace (see the
//! crate README, "Job control meeting ptrace"). A traced task that group-stops, or a
//! group-stopped task that gets a tracer, is held for its tracer at that stop (reported as the
//! kernel does: the stop signal, or `PTRACE_EVENT_STOP` with it if seized) instead of being
//! kept until a `SIGCONT`; resumed, it runs on despite the stop, as in the kernel. Its process
//! stays stopped for `PTRACE_INTERRUPT`'s report until a `SIGCONT`, which also re-traps a
//! seized tracee held there (`PTRACE_LISTEN` with a `SIGCONT` pending: strace's start-up).
//! Not emulated, and stopping the recording with an error naming it (never a tracer waiting
//! forever): the group-stop of a tracee with other threads, `PTRACE_DETACH` from a held
//! group-stop, `PTRACE_LISTEN` with no `SIGCONT` pending, requests on a group-stopped tracee
//! not held for its tracer.

use anyhow::{anyhow, bail, Context, Result};
use trace_format::PtraceHeld;
use tracee::tracee::SIGINFO_SIZE;

use super::PTRACE_EVENT_STOP;
use crate::ptrace_emu::{self as emu, Report};
use crate::recording::group_stop::sigcont_pending;
use crate::recording::Session;
use crate::task::{Entry, State};

/// `PTRACE_LISTEN`.
pub(super) const PTRACE_LISTEN: i64 = 0x4208;

impl Session {
    /// Whether task `tid` is kept in a group-stop.
    pub(super) fn group_stopped(&self, tid: i32) -> bool {
        self.tasks
            .get(&tid)
            .is_some_and(|t| matches!(t.state, State::GroupStopped(_)))
    }

    /// The group-stopped task `tid` just got a tracer: the kernel makes it trap at once, so it
    /// is held at its group-stop for that tracer from now on (see `ptrace_group_stop`).
    pub(super) fn hold_group_stopped(&mut self, tid: i32) -> Result<()> {
        let t = self.task(tid)?;
        let State::GroupStopped(restarting) = std::mem::replace(&mut t.state, State::Running)
        else {
            return Ok(());
        };
        self.ptrace_group_stop(tid, libc::SIGSTOP, restarting)
    }

    /// The report of a group-stopped task to a tracer that attached to it (`SIGSTOP`) or
    /// seized it (`PTRACE_EVENT_STOP` with the stop signal): the kernel makes such a task
    /// trap at once.
    pub(super) fn group_stop_report(seized: bool) -> Report {
        let status = if seized {
            // Its stop signal in place of event stops' SIGTRAP.
            emu::stopped_status(libc::SIGSTOP | (PTRACE_EVENT_STOP << 8))
        } else {
            emu::stopped_status(libc::SIGSTOP)
        };
        Report {
            status,
            siginfo: [0u8; SIGINFO_SIZE],
            reported: false,
        }
    }

    /// The traced task `tid` group-stopped (its tracer passed a stop signal on, or one was
    /// delivered to it; `restarting`: the syscall it was restarting): its tracer sees that
    /// stop, as the kernel reports it (`PTRACE_EVENT_STOP` with the stop signal if seized,
    /// else the stop signal), and the task is held there, right after its previous event
    /// (nothing of it ran since), until its tracer resumes it: then it goes on as a
    /// continued group-stop does (`continue_stopped`). The replay needs nothing more: its
    /// task either group-stops too and is parked there, or is held before it even got the
    /// signal, and goes on the same way when resumed.
    pub(in crate::recording) fn ptrace_group_stop(
        &mut self,
        tid: i32,
        sig: i32,
        restarting: Option<Box<Entry>>,
    ) -> Result<()> {
        tracing::debug!(tid, sig, "group-stop of a tracee: held for its tracer");
        let pid = self.task(tid)?.pid;
        if self.tasks.values().any(|o| o.pid == pid && o.tid() != tid) {
            // Its threads group-stop at other places in replay than in the recording, where
            // the tracer resumed this one (rr's `ptrace_group_stop`).
            bail!(
                "task {tid}, traced inside the recording, was stopped by job control (a \
                 group-stop) in a process with other threads: a multi-threaded tracee's \
                 group-stop is not supported inside a recording"
            );
        }
        let rel = self.ptrace.get_mut(tid).context("a traced task")?;
        rel.stop_sig = Some(sig);
        let status = if rel.seized {
            emu::stopped_status(sig | (PTRACE_EVENT_STOP << 8))
        } else {
            emu::stopped_status(sig)
        };
        // Inside a syscall it restarts, its event not written yet: as at the syscall's entry
        // (the replay's task stands there); else right after its previous event.
        let at = if restarting.is_some() {
            PtraceHeld::SyscallEntry
        } else {
            PtraceHeld::AfterEvent
        };
        let rel = self.ptrace.get_mut(tid).context("a traced task")?;
        rel.group_stop = Some(restarting);
        self.ptrace_stop(tid, at, status, [0u8; SIGINFO_SIZE])
    }

    /// Stops the recording if the tracer process `tracer` makes request `req` on its tracee
    /// `target` while that tracee is kept in a group-stop (the kernel would serve it: the task
    /// is in a ptrace stop; the recorder cannot yet).
    pub(super) fn refuse_group_stopped_tracee(
        &self,
        req: i64,
        target: i32,
        tracer: i32,
    ) -> Result<()> {
        let mine = self.ptrace.get(target).is_some_and(|r| r.tracer == tracer);
        if mine && self.group_stopped(target) {
            bail!(
                "{} on task {target}, stopped by job control (a group-stop): ptrace requests \
                 on a group-stopped tracee are not supported inside a recording",
                emu::request_name(req)
            );
        }
        Ok(())
    }

    /// The error for `PTRACE_LISTEN` (resume a seized tracee from a group-stop without
    /// letting it run) on `target`, when it cannot be emulated.
    pub(super) fn listen_unsupported(target: i32) -> anyhow::Error {
        anyhow!(
            "PTRACE_LISTEN on task {target}: a seized tracee's group-stop is not supported \
             inside a recording"
        )
    }

    /// The error for `PTRACE_DETACH` of `target` held at its group-stop (the kernel puts it
    /// back in the group-stop, which the replay cannot show yet).
    pub(super) fn detach_from_group_stop_unsupported(target: i32) -> anyhow::Error {
        anyhow!(
            "PTRACE_DETACH of task {target} in its group-stop: detaching a group-stopped \
             tracee is not supported inside a recording"
        )
    }

    /// Before a `wait` of tracer process `tracer`: each of its seized tracees held at a
    /// group-stop whose process got a `SIGCONT` meanwhile re-traps as the kernel makes it
    /// (`PTRACE_EVENT_STOP` with `SIGTRAP`: the group-stop is over); it is still held, and
    /// goes on when resumed (its `SIGCONT` is delivered then).
    pub(super) fn notice_sigcont(&mut self, tracer: i32) {
        for tracee in self.ptrace.tracees_of(tracer) {
            let continued = self
                .tasks
                .get(&tracee)
                .is_some_and(|t| sigcont_pending(&t.tracee));
            let Some(rel) = self.ptrace.get_mut(tracee) else {
                continue;
            };
            if !continued || rel.group_stop.is_none() || rel.stop_sig.is_none() || !rel.seized {
                continue;
            }
            tracing::debug!(tracee, "SIGCONT: a seized tracee's group-stop is over");
            rel.stop_sig = None;
            let status = emu::event_status(PTRACE_EVENT_STOP);
            rel.stop = Some(Report {
                status,
                siginfo: emu::trap_siginfo(status),
                reported: false,
            });
        }
    }

    /// `PTRACE_LISTEN` of `target`, held at a group-stop: it stays stopped until its process
    /// is continued, which then shows as a new `PTRACE_EVENT_STOP` trap. A `SIGCONT` already
    /// pending makes that trap at once; waiting for a later one is not emulated.
    pub(super) fn ptrace_listen(&mut self, target: i32) -> Result<()> {
        let continued = self
            .tasks
            .get(&target)
            .is_some_and(|t| sigcont_pending(&t.tracee));
        let rel = self.ptrace.get(target);
        if !continued || !rel.is_some_and(|r| r.group_stop.is_some() && r.seized) {
            return Err(Self::listen_unsupported(target));
        }
        if let Some(rel) = self.ptrace.get_mut(target) {
            if let Some(report) = rel.stop.as_mut() {
                report.reported = true;
            }
        }
        let tracer = self.ptrace.get(target).map_or(0, |r| r.tracer);
        self.notice_sigcont(tracer);
        Ok(())
    }
}
