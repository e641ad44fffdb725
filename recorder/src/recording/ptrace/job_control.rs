//! Where job control (group-stops, `recording/group_stop.rs`) meets emulated ptrace. The
//! recorder keeps a group-stopped task stopped until its process gets a `SIGCONT`; a tracer
//! may see and end such a stop in ways the recorder does not emulate (yet): a tracee that
//! group-stops (its tracer injected `SIGSTOP`, or a stop signal was delivered to it), a tracer
//! inspecting or resuming a group-stopped tracee (`PTRACE_CONT` runs it despite the stop),
//! `PTRACE_LISTEN`. Each used to leave the tracer waiting forever; the recording now stops
//! there with an error naming what is not supported. What is emulated: the stop reported to
//! the tracer when it attaches to or seizes a group-stopped task or interrupts it, and a
//! `SIGCONT` continuing it (strace's start-up sequence).

use anyhow::{anyhow, bail, Result};
use tracee::tracee::SIGINFO_SIZE;

use super::PTRACE_EVENT_STOP;
use crate::ptrace_emu::{self as emu, Report};
use crate::recording::Session;
use crate::task::State;

/// `PTRACE_LISTEN`.
pub(super) const PTRACE_LISTEN: i64 = 0x4208;

impl Session {
    /// Whether task `tid` is kept in a group-stop.
    pub(super) fn group_stopped(&self, tid: i32) -> bool {
        self.tasks
            .get(&tid)
            .is_some_and(|t| matches!(t.state, State::GroupStopped(_)))
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

    /// Stops the recording if the traced task `tid` group-stops: its tracer would have to see
    /// that stop and could resume it from there, which is not emulated.
    pub(in crate::recording) fn refuse_traced_group_stop(&self, tid: i32) -> Result<()> {
        if let Some(rel) = self.ptrace.get(tid) {
            bail!(
                "task {tid}, traced by process {} inside the recording, was stopped by job \
                 control (a group-stop): a tracee's group-stop is not supported inside a \
                 recording",
                rel.tracer
            );
        }
        Ok(())
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
    /// letting it run) on `target`.
    pub(super) fn listen_unsupported(target: i32) -> anyhow::Error {
        anyhow!(
            "PTRACE_LISTEN on task {target}: a seized tracee's group-stop is not supported \
             inside a recording"
        )
    }
}
