//! `execve` from a thread other than its process's main thread. The kernel kills every other
//! thread of the process, and the exec'ing thread takes the main thread's id (the process id)
//! before its exec stop, which ptrace reports under that id (`PTRACE_GETEVENTMSG` gives the
//! thread's former id). The main thread's death is never reported, nor the former id's end.
//!
//! The recorder follows the kernel: the exec'ing task, known by its former id until then,
//! is known by the process id from its exec stop on; the main thread's task is forgotten
//! without an `Exit` event. The `Exec` event names the task by its former id (the task that
//! called `execve`), and every later event by the process id, so the replay knows the task
//! changed its id (the exec event's task is not its process's main thread).

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use syscalls::Replay;
use tracee::Tracee;

use super::Session;
use crate::task::State;

impl Session {
    /// At an exec stop reported under id `tid`: the former id of the thread that called
    /// `execve`, if it was another thread than the main one.
    pub(super) fn exec_by_other_thread(&mut self, tid: i32) -> Result<Option<i32>> {
        let tracee = match self.tasks.get(&tid) {
            Some(t) => t.tracee.event_msg(),
            None => Tracee::attach_traced(Pid::from_raw(tid))?.event_msg(),
        };
        let former = i32::try_from(
            tracee
                .with_context(|| format!("reading which thread of process {tid} called execve"))?,
        )
        .context("bad thread id at an exec stop")?;
        Ok((former != tid).then_some(former))
    }

    /// The exec stop of process `pid`, whose thread `former` called `execve`: that thread is
    /// task `pid` from now on (the main thread's task is gone), and its exec is recorded.
    pub(super) fn on_thread_exec(&mut self, pid: i32, former: i32) -> Result<()> {
        let leader = match self.tasks.remove(&pid) {
            Some(old) => old.tracee,
            None => Tracee::attach_traced(Pid::from_raw(pid))?,
        };
        let mut task = self
            .tasks
            .remove(&former)
            .with_context(|| format!("thread {former} of process {pid} called execve unseen"))?;
        tracing::debug!(pid, former, "execve by a thread other than the main one");
        self.segv_blocked.forget(former);
        task.tracee = leader;
        self.ready.retain(|&r| r != pid && r != former);
        if self.current == Some(former) {
            self.current = Some(pid);
        }
        let State::InSyscall(mut entry) = std::mem::replace(&mut task.state, State::Running) else {
            bail!("thread {former} of process {pid} made an exec outside a syscall");
        };
        if entry.replay != Replay::Exec {
            bail!(
                "thread {former} of process {pid} made an exec inside {}",
                syscalls::name(entry.ev.nr)
            );
        }
        entry.exec_done = true;
        task.state = State::InSyscall(entry);
        self.tasks.insert(pid, task);
        self.record_exec(pid, former)?;
        self.task(pid)?.tracee.cont_syscall(0)
    }
}
