//! A task that killed itself with `SIGKILL` from a syscall (`kill(getpid(), SIGKILL)`,
//! `kill(0, SIGKILL)`, ...) dies inside that call: its exit stop never comes, so the call has
//! no event of its own. Yet the task ran user code from its previous event up to that call,
//! and what it wrote then (a lazily bound `kill` in the program's GOT, say) is memory other
//! tasks may share. Its event is written (result 0) before the task's `Exit`, so the replay
//! drives the task to that call before killing it, instead of killing it right after its
//! previous event.

use anyhow::Result;
use trace_format::{Event, ExitStatus};

use super::Session;
use crate::task::{State, Task};

impl Session {
    /// At the death of task `t` (already taken out of the tasks) with `status`: writes the
    /// event of the signal-sending syscall it died in, if it killed itself with `SIGKILL`.
    pub(super) fn record_fatal_call(&mut self, t: &Task, status: ExitStatus) -> Result<()> {
        if status != ExitStatus::Signaled(libc::SIGKILL) {
            return Ok(());
        }
        let State::InSyscall(entry) = &t.state else {
            return Ok(());
        };
        if !entry.exclusive || entry.exec_done || !syscalls::sends_signal(entry.ev.nr) {
            return Ok(());
        }
        let mut ev = entry.ev.clone();
        ev.result = 0;
        self.writer.push(Event::Syscall(ev))?;
        Ok(())
    }
}
