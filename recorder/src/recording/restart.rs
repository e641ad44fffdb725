//! Syscalls the kernel interrupted and restarts. A syscall whose exit stop shows a restart code
//! (`-ERESTARTSYS`, `-ERESTARTNOINTR`, `-ERESTARTNOHAND`, `-ERESTART_RESTARTBLOCK`) was woken
//! by a signal, and what happens next depends on that signal: if one is delivered to the task
//! (a signal-delivery-stop follows), its handler decides whether the call restarts or fails
//! with `EINTR`; if none is (the recorder's own preemption `SIGSTOP`, suppressed; a
//! process-directed signal another thread dequeued first; a group-stop), the kernel restarts
//! the call, which comes back as a new seccomp entry of the same syscall (or of
//! `restart_syscall`). So the recorder never writes the event at that exit stop: the task
//! waits (`State::Restarting`) to show which. A restart makes the attempt and its restart one
//! event, as the replay makes the call once; a delivered signal makes the attempt an event
//! with its restart code, followed by the signal (the replay then restarts the call exactly as
//! the kernel did, when it delivers the signal).

use anyhow::{bail, Result};
use tracee::Stop;

use super::Session;
use crate::signals::{is_ours, is_restart, ERESTART_RESTARTBLOCK};
use crate::task::{Entry, State};

impl Session {
    /// At the exit stop of `tid`'s syscall `entry`: if it shows a restart code, the task goes on
    /// to learn whether the kernel restarts the call (`None`); otherwise `entry` comes back.
    pub(super) fn unless_interrupted(
        &mut self,
        tid: i32,
        mut entry: Box<Entry>,
    ) -> Result<Option<Box<Entry>>> {
        let t = self.task(tid)?;
        let rax = t.tracee.regs()?.rax;
        if !is_restart(rax) {
            return Ok(Some(entry));
        }
        entry.ev.result = rax as i64;
        tracing::debug!(
            tid,
            call = %syscalls::name(entry.ev.nr),
            code = entry.ev.result,
            "a signal interrupted a syscall: does the kernel restart it?"
        );
        t.state = State::Restarting(entry);
        t.tracee.cont(0)?;
        Ok(None)
    }

    /// A stop of `tid` after its syscall's exit showed a restart code (see the module doc).
    pub(super) fn on_restart_stop(&mut self, tid: i32, stop: Stop) -> Result<()> {
        let me = self.me;
        let holds_cpu = self.current == Some(tid);
        let t = self.task(tid)?;
        let State::Restarting(mut entry) = std::mem::replace(&mut t.state, State::Running) else {
            bail!("task {tid} is not restarting a syscall");
        };
        match stop {
            Stop::Signal(sig) => {
                let info = t.tracee.siginfo().ok();
                let resent = t.resent.iter().any(|(s, _)| *s == sig);
                let ours = !resent && info.is_some_and(|i| is_ours(&i, me));
                if info.is_none() {
                    // A group-stop: the task stays stopped until its process is continued.
                    return self.on_group_stop(tid, sig, Some(entry));
                }
                if ours {
                    // The recorder's SIGSTOP (suppressed): no signal is delivered, the kernel
                    // restarts the call next.
                    t.stop_sent = false;
                    t.state = State::Restarting(entry);
                    return t.tracee.cont(0);
                }
                // A signal of the program is delivered: its handler (or its default action)
                // decides whether the call restarts. The attempt is recorded with its restart
                // code, and this signal right after it, when the task has the CPU.
                t.held_signal = Some(sig);
                if holds_cpu {
                    self.finish_syscall(tid, *entry)
                } else {
                    t.state = State::ReadyAfter(entry);
                    self.ready.push_back(tid);
                    Ok(())
                }
            }
            Stop::SeccompEntry => {
                let nr = t.tracee.regs()?.orig_rax;
                let restart = if entry.ev.result == ERESTART_RESTARTBLOCK {
                    libc::SYS_restart_syscall as u64
                } else {
                    entry.ev.nr
                };
                if nr != restart {
                    bail!(
                        "task {tid} made {} instead of restarting {}",
                        syscalls::name(nr),
                        syscalls::name(entry.ev.nr)
                    );
                }
                if self.ptrace_wait_served(tid, &entry.ev)? {
                    // A tracer's wait that an emulated stop now answers: handled as a new
                    // entry when the tracer gets the CPU.
                    self.task(tid)?.state = State::AtEntry;
                    self.ready.push_back(tid);
                    return Ok(());
                }
                let t = self.task(tid)?;
                // The same call again (or `restart_syscall` continuing it): one event, as if
                // the call had run once, with the CPU held as before.
                entry.ev.result = 0;
                t.state = State::InSyscall(entry);
                t.tracee.cont_syscall(0)
            }
            other => bail!(
                "unexpected stop of task {tid} restarting {}: {other:?}",
                syscalls::name(entry.ev.nr)
            ),
        }
    }
}
