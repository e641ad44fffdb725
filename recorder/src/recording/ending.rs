//! When the recording ends. Like rr, `deja rec` records until the initial process has ended
//! (all its threads): its status is the recording's. Descendants still alive then (a daemon, a
//! child the program forgot, the members of a pid namespace whose init outlived it) are killed
//! with `SIGKILL`, and the recording goes on until each one's death is reported: those deaths
//! are `Exit` events like any other (the replay kills those tasks at the same events), so the
//! trace ends with every recorded task ended. With `RecordOptions::wait_all` (`deja rec -w`,
//! rr's `-w`) the recorder instead records until every task has ended by itself.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Session;

impl Session {
    /// The initial process ended: unless told to wait for all tasks, kills every task still
    /// alive; their ends are recorded as they are reported.
    pub(super) fn initial_process_ended(&mut self) {
        if self.wait_all || self.tasks.is_empty() {
            return;
        }
        tracing::debug!(
            left = self.tasks.len(),
            "the initial process ended: killing the tasks it left behind"
        );
        for &tid in self.tasks.keys() {
            // A task already gone is reported all the same.
            if let Err(e) = kill(Pid::from_raw(tid), Signal::SIGKILL) {
                tracing::debug!(tid, "could not kill a task left behind: {e}");
            }
        }
    }
}
