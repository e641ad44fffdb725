//! Tasks the recording ran detached (see the recorder's README, "Processes recorded in
//! parallel"): their user code overlapped other tasks', and their next event may come after
//! other tasks' events. Such a task is not run right after its event, as a task holding the
//! CPU is: what it computes depends on nothing the others do, so it may run at any moment
//! before its next event. Without a debugger it is let go at once, in parallel with the
//! replay of the events in between, when its next event is near and is a stop it reaches by
//! itself (a syscall, a patch, a trapped `rdtsc`, ...); otherwise (a signal or preemption at a
//! point, which the replay must run toward, or no event of its within reach) it runs when its
//! next event comes, like a task that held the CPU.

use anyhow::Result;
use trace_format::{DetachEvent, Event, Tid};

use super::buffered::LOOKAHEAD;
use super::{Run, Session};
use crate::tasks::RState;

impl Session {
    /// Right after `tid`'s event, before it runs on: takes the `Detach` event of `tid` that
    /// the recorder wrote there, if any; if `tid` runs detached, lets it go or defers it and
    /// returns true.
    pub(super) fn resume_detached(&mut self, tid: Tid, sig: i32) -> Result<bool> {
        if let Some(Event::Detach(d)) = self.peek()? {
            if d.tid == tid {
                let d = d.clone();
                self.take()?;
                self.index += 1;
                self.follow_detach(&d)?;
            }
        }
        if !self.task(tid)?.detached {
            return Ok(false);
        }
        if self.debug.is_none() && self.next_stop_is_plain(tid)? {
            self.place_buffered(tid)?;
            let t = self.task(tid)?;
            t.tracee.cont(sig)?;
            t.state = RState::Launched;
            tracing::trace!(tid, "let go detached");
        } else {
            self.task(tid)?.state = RState::Deferred(sig);
        }
        Ok(true)
    }

    /// Where `tid`'s next event is among the events ahead, right after its event: 1 past a
    /// `Detach` event of its (which belongs to the event before), else 0.
    pub(super) fn past_own_detach(&mut self, tid: Tid) -> Result<usize> {
        Ok(usize::from(
            matches!(self.peek()?, Some(Event::Detach(d)) if d.tid == tid),
        ))
    }

    /// Whether `tid`'s next event (past its `Buffered` ones) is within [`LOOKAHEAD`] and is
    /// one the task reaches by running freely: not a signal or a preemption (which may land
    /// at a point in its user code), not its end, not emulated ptrace.
    fn next_stop_is_plain(&mut self, tid: Tid) -> Result<bool> {
        for i in 0..LOOKAHEAD {
            match self.peek_at(i)? {
                None => return Ok(false),
                Some(Event::Buffered(b)) if b.tid == tid => {}
                Some(ev) if ev.tid() == tid => {
                    return Ok(!matches!(
                        ev,
                        Event::Signal(_)
                            | Event::Preempt(_)
                            | Event::Resume(_)
                            | Event::Exit(_)
                            | Event::Ptrace(_)
                            | Event::Detach(_)
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(false)
    }

    /// Before the next event: if its task is detached and has not reached its stop for it yet,
    /// runs it there (collects the stop of a task let go, or runs a deferred one); true if it
    /// did.
    pub(super) fn settle_next(&mut self) -> Result<bool> {
        let Some(tid) = self.peek()?.map(Event::tid) else {
            return Ok(false);
        };
        match self.tasks.get(tid).map(|t| t.state) {
            Some(RState::Launched) => {
                self.running = Some(Run {
                    tid,
                    sig: 0,
                    sig_reported: false,
                });
                self.run_task()?;
                Ok(true)
            }
            Some(RState::Deferred(sig)) => {
                self.resume_attached(tid, sig)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A `Detach` event not taken right after its task's event (the task went on another
    /// way, an emulated single step say): its later runs follow it.
    pub(super) fn detach_later(&mut self, e: &DetachEvent) -> Result<()> {
        tracing::debug!(
            tid = e.tid,
            detached = e.detached,
            "a detach event between runs"
        );
        self.follow_detach(e)
    }

    /// Runs `e.tid` from now on as the recording did: detached or not, on the same CPU.
    fn follow_detach(&mut self, e: &DetachEvent) -> Result<()> {
        let pin = e.cpu.filter(|c| self.cpus.contains(c));
        let t = self.task(e.tid)?;
        t.detached = e.detached;
        if let Some(cpu) = pin {
            tracee::affinity::pin(t.tracee.pid().as_raw(), cpu)?;
        }
        Ok(())
    }
}
