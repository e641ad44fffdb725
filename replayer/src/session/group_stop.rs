//! Job-control stops in replay. The recorder keeps a task that reported a group-stop stopped
//! until its process gets a `SIGCONT` (or it is killed), and records nothing there; the task's
//! next event is then the `SIGCONT` delivered where it stopped, the restart of the syscall the
//! stop interrupted, or its end. The replay parks a task at its group-stop the same way, and
//! lets it go on at its next event: it needs no real `SIGCONT` (a tracer's resumption ends a
//! group-stop), only the signal of that event, sent first so that the task stops for it before
//! running any of its code. A traced task held at its group-stop for its emulated tracer
//! (its next events are emulated ptrace ones) stays parked until its recorded resumption.

use anyhow::Result;
use trace_format::{Event, SignalOrigin, Tid};

use super::{Run, Session};
use crate::tasks::RState;

impl Session {
    /// Before replaying `ev` of task `tid`: if the task is parked at a group-stop, lets it go
    /// on to the stop of that event (its end needs nothing).
    pub(super) fn leave_group_stop(&mut self, tid: Tid, ev: &Event) -> Result<()> {
        if matches!(ev, Event::Ptrace(_)) {
            // Held there for an emulated tracer: its resumption lets it go on (see `ptrace`).
            return Ok(());
        }
        let t = self.task(tid)?;
        if !std::mem::take(&mut t.group_stopped) || matches!(ev, Event::Exit(_)) {
            return Ok(());
        }
        if let Event::Signal(s) = ev {
            if s.point.is_none() && s.origin == SignalOrigin::Async {
                t.tracee.tgkill(t.pid, s.signo)?;
                t.injected = Some(s.signo);
            }
        }
        tracing::debug!(tid, "leaving a group-stop for the next event");
        t.state = RState::Resumed;
        self.running = Some(Run {
            tid,
            sig: 0,
            sig_reported: false,
        });
        self.run_task()
    }
}
