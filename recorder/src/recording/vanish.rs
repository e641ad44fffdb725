//! Tasks that vanish while the recorder handles them. A task the recorder holds in a ptrace
//! stop leaves it only when resumed or killed (`SIGKILL` from another task, the `exit_group`
//! of a sibling thread, the death of its pid namespace's init), so a ptrace request on it that
//! fails with `ESRCH` (`tracee::gone::Vanished`) means it is dying. Whatever the recorder was
//! doing with it is dropped (the event it was about to write, if not written yet: the replay
//! leaves that task stopped where its last recorded event left it), and the task waits, as
//! `Exiting`, for `waitpid` to report its end, which becomes its `Exit` event as usual.

use anyhow::Result;

use super::Session;
use crate::task::State;

impl Session {
    /// `result` of handling a stop or scheduling a task, unless it failed because a known task
    /// vanished: then that task is set aside to wait for its death, and the answer is `true`.
    pub(super) fn unless_vanished(&mut self, result: Result<()>) -> Result<bool> {
        let Err(e) = result else {
            return Ok(false);
        };
        match tracee::gone::vanished_task(&e) {
            Some(tid) if self.tasks.contains_key(&tid) => {
                tracing::debug!(tid, "task vanished (killed): waiting for its end: {e:#}");
                self.set_aside_vanished(tid);
                Ok(true)
            }
            _ => Err(e),
        }
    }

    /// Task `tid` was killed: it no longer holds the CPU nor waits for it, and nothing but its
    /// end is expected from it.
    fn set_aside_vanished(&mut self, tid: i32) {
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.state = State::Exiting;
            t.boundary = None;
            t.held_signal = None;
            t.stop_sent = false;
        }
        self.ready.retain(|&r| r != tid);
        if self.current == Some(tid) {
            self.current = None;
        }
    }
}
