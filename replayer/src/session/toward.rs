//! Exact points: running a task to the point of its next event (a preemption, a signal
//! delivered mid-code), and the events there.

use anyhow::{bail, Context, Result};
use trace_format::{Point, PreemptEvent, SignalEvent, Tid};
use tracee::locate::Verdict;
use tracee::Stop;

use crate::debug::{Halt, WatchKind};
use crate::divergence::Divergence;
use crate::point::{self, Room};
use crate::tasks::{self, RState};

use super::{signal_blocked, stopped_by_signal, Next, Run, Session, MAX_STRAY_SIGNALS, TRAP_FLAG};

impl Session {
    /// Whether task `tid` runs toward the point of its next event.
    pub(super) fn running_toward(&self, tid: Tid) -> bool {
        self.toward.as_ref().is_some_and(|w| w.tid == tid)
    }

    /// What a locator may use in task `tid`: everything, unless the debugger has breakpoints
    /// in its memory or hardware points in its debug registers.
    pub(super) fn room(&self, tid: Tid) -> Room {
        let mut room = match &self.debug {
            Some(d) if self.debugged(tid) => Room::around(&d.breakpoints, &d.regs),
            _ => Room::all(),
        };
        if let Some(t) = self.tasks.peek(tid) {
            room.reserved.clone_from(&t.reserved);
        }
        room
    }

    /// [`Self::launch`] for a task running toward a point: a step (the debugger's, a step over
    /// a breakpoint, or one that delivers the signal the task resumes with) runs unarmed;
    /// otherwise the locator is armed and the task continued. Arming may run a syscall in the
    /// task (the first time, to map the trampoline): a signal that stops the task before that
    /// syscall is returned as the task's stop.
    pub(super) fn launch_toward(&mut self, run: Run, step: bool) -> Result<Option<Stop>> {
        let tid = run.tid;
        if step || run.sig != 0 {
            // Arming runs syscalls, which would lose a signal the task is stopped for: the
            // signal is delivered first, by a single step that stops at the handler's first
            // instruction.
            let t = tasks::task(&mut self.tasks, tid)?;
            let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
                bail!("task {tid} runs toward no point");
            };
            w.stepped = true;
            w.delivering = run.sig != 0;
            t.single_stepped = true;
            t.tracee.step(run.sig)?;
            return Ok(None);
        }
        let room = self.room(tid);
        if self.toward.as_ref().is_some_and(|w| w.stale(&room)) {
            tracing::debug!(tid, "the debugger's points changed: a new locator");
            self.retire_locator(tid)?;
        }
        if self.toward.as_ref().is_some_and(|w| w.arming_injects()) {
            if let Some(stop) = self.leave_syscall_entry(tid)? {
                return Ok(Some(stop));
            }
        }
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
            bail!("task {tid} runs toward no point");
        };
        let before = t.siginfo().ok();
        if let Err(e) = w.arm(t, room) {
            return match stopped_by_signal(t, before) {
                Some(sig) => {
                    tracing::debug!(
                        tid,
                        sig,
                        "a signal came before the locator was armed: {e:#}"
                    );
                    Ok(Some(Stop::Signal(sig)))
                }
                None => Err(e),
            };
        }
        w.armed = true;
        t.cont(0)?;
        Ok(None)
    }

    /// If task `tid` is stopped at a syscall's entry (an emulated syscall, skipped with its
    /// result set), lets that syscall end: a syscall run in the task at its entry would run in
    /// the syscall's place and make the task enter it again (see `Tracee::inject_syscall`).
    /// Returns the stop that came instead of the syscall's exit, if one did.
    pub(super) fn leave_syscall_entry(&mut self, tid: Tid) -> Result<Option<Stop>> {
        let t = self.tracee(tid)?;
        if !t.at_syscall_entry()? {
            return Ok(None);
        }
        t.cont_syscall(0)?;
        match self.wait_task(tid)? {
            Stop::SyscallStop => Ok(None),
            other => Ok(Some(other)),
        }
    }

    /// Runs `getpid` in task `tid` (stopped toward its point) until no signal stops it first,
    /// so that the next syscall the locator runs in it is not cut short by one. Such signals
    /// are not the recording's here: they are dropped; the debugger's interrupt is sent again,
    /// and a `SIGSTOP` of the time limit will be.
    pub(super) fn drain_signals(&mut self, tid: Tid) -> Result<()> {
        let mut interrupt = false;
        for _ in 0..MAX_STRAY_SIGNALS {
            let t = self.tracee(tid)?;
            let before = t.siginfo().ok();
            let result = t.inject_syscall(libc::SYS_getpid, [0; 6]);
            let Err(e) = result else {
                if interrupt {
                    let t = self.task(tid)?;
                    t.tracee.tgkill(t.pid, libc::SIGSTOP)?;
                }
                return Ok(());
            };
            let Some(sig) = stopped_by_signal(t, before) else {
                return Err(e);
            };
            tracing::debug!(
                tid,
                sig,
                "dropping a signal before the locator runs a syscall"
            );
            if sig == libc::SIGSTOP {
                interrupt |= self
                    .debug
                    .as_ref()
                    .is_some_and(|d| d.interrupt_sent == Some(tid));
                if let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) {
                    w.timeout_sent = false;
                }
            }
        }
        bail!("signals keep stopping task {tid} before it can run a syscall")
    }

    /// Removes the locator of task `tid` (stopped toward its point, outside the trampoline),
    /// to build a new one.
    pub(super) fn retire_locator(&mut self, tid: Tid) -> Result<()> {
        self.drain_signals(tid)?;
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        match self.toward.as_mut().filter(|w| w.tid == tid) {
            Some(w) => w.finish(t),
            None => Ok(()),
        }
    }

    /// Single-steps task `tid`, stopped in the locator's trampoline, until it is back in the
    /// program's code, so that a debugger halting there sees the program's registers (the
    /// trampoline uses a stack and a register of its own). Whether it reached its point on
    /// the way (a visit that matched).
    pub(super) fn leave_trampoline(&mut self, tid: Tid) -> Result<bool> {
        const MAX_STEPS: usize = 1000;
        // Stepping the trampoline's `pushfq` pushes the trap flag, which its `popfq` would
        // leave set in the program's flags: it gets the value it had.
        let trap_flag = self.tracee(tid)?.regs()?.eflags & TRAP_FLAG;
        for _ in 0..MAX_STEPS {
            let t = &tasks::task(&mut self.tasks, tid)?.tracee;
            let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
                return Ok(false);
            };
            let mut r = t.regs()?;
            if !w.in_trampoline(r.rip) {
                if r.eflags & TRAP_FLAG != trap_flag {
                    r.eflags = (r.eflags & !TRAP_FLAG) | trap_flag;
                    t.set_regs(&r)?;
                }
                return Ok(false);
            }
            t.step(0)?;
            let stop = self.wait_task(tid)?;
            let t = &tasks::task(&mut self.tasks, tid)?.tracee;
            let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
                return Ok(false);
            };
            match stop {
                Stop::Signal(libc::SIGTRAP) => {
                    let verdict = match w.built() {
                        Some(locator) => locator.on_stop(t, stop),
                        None => return Ok(false),
                    };
                    match verdict {
                        Ok(Verdict::Reached) => {
                            let mut r = t.regs()?;
                            if r.eflags & TRAP_FLAG != trap_flag {
                                r.eflags = (r.eflags & !TRAP_FLAG) | trap_flag;
                                t.set_regs(&r)?;
                            }
                            return Ok(true);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(
                                self.lost_point(tid, format!("no moment matching it ({e:#})"))
                            )
                        }
                    }
                }
                // Dropped by the next step, as the debugger's halt makes it moot.
                Stop::Signal(sig) => {
                    tracing::debug!(tid, sig, "dropping a signal in the trampoline")
                }
                other => return Err(self.missed_point(tid, other)),
            }
        }
        bail!("task {tid} did not leave the point locator's trampoline in {MAX_STEPS} steps")
    }

    /// What to do with `stop` of task `tid`, which runs toward a point: `None` if it reached
    /// the point (it is parked there), else as [`Self::classify`] says (parking it anywhere
    /// else is a divergence, which the caller reports).
    pub(super) fn toward_stop(&mut self, tid: Tid, stop: Stop) -> Result<Option<Next>> {
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
            bail!("task {tid} runs toward no point");
        };
        let armed = std::mem::take(&mut w.armed);
        let stepped = std::mem::take(&mut w.stepped);
        let delivering = std::mem::take(&mut w.delivering);
        if armed && !stop.is_end() {
            if let Some(locator) = w.built() {
                locator.disarm(t)?;
            }
        }
        let timed_out = stop == Stop::Signal(libc::SIGSTOP)
            && std::mem::take(&mut w.timeout_sent)
            && !self
                .debug
                .as_ref()
                .is_some_and(|d| d.interrupt_sent == Some(tid));
        let lost_in_time = "the task still running without having reached it";
        if armed {
            // (Also when it is lost: the locator counts the visits at each stop.)
            let verdict = match w.built() {
                Some(locator) => locator.on_stop(t, stop),
                None => bail!("task {tid} ran toward its point without a locator"),
            };
            if timed_out {
                return Err(self.lost_point(tid, lost_in_time.into()));
            }
            return match verdict {
                Ok(Verdict::Reached) => {
                    self.reached(tid)?;
                    Ok(None)
                }
                Ok(Verdict::Continue) => {
                    w.passes += 1;
                    // A near miss at a breakpoint the debugger set there (the locator stops
                    // the task at every visit then): the task is about to execute the
                    // breakpoint, which would be stepped over when it goes on.
                    let rip = t.regs()?.rip;
                    let debugged = self.debugged(tid);
                    if debugged
                        && self.debug.as_ref().is_some_and(|d| {
                            d.breakpoints.contains_key(&rip) && d.lifted != Some(rip)
                        })
                    {
                        return self
                            .halt_outside_trampoline(tid, Next::Halt(Halt::Breakpoint(tid)));
                    }
                    Ok(Some(Next::Again))
                }
                Ok(Verdict::Other(stop)) => {
                    // The locator moved a stop in its copy of the program's instructions to
                    // their own addresses: still in the trampoline is in its filter.
                    let in_filter = w.in_trampoline(t.regs()?.rip);
                    let next = self.classify(tid, stop)?;
                    if matches!(next, Next::Reached) {
                        return Ok(None);
                    }
                    if in_filter
                        && matches!(next, Next::Halt(Halt::Watch { kind, .. }) if kind != WatchKind::Write)
                    {
                        // The filter reading a watched word, not the program.
                        return Ok(Some(Next::Again));
                    }
                    self.halt_outside_trampoline(tid, next)
                }
                Err(e) => Err(self.lost_point(tid, format!("no moment matching it ({e:#})"))),
            };
        }
        if timed_out {
            return Err(self.lost_point(tid, lost_in_time.into()));
        }
        if !stepped {
            let next = self.classify(tid, stop)?;
            if matches!(next, Next::Reached) {
                return Ok(None);
            }
            return self.halt_outside_trampoline(tid, next);
        }
        // A single step: the locator was not armed, so check the state the step led to.
        let debugger_step = self
            .debug
            .as_ref()
            .and_then(|d| d.step)
            .is_some_and(|s| s.tid == tid && s.launched);
        let next = if delivering && stop == Stop::Signal(libc::SIGTRAP) && !debugger_step {
            Next::Again
        } else {
            self.classify(tid, stop)?
        };
        if matches!(next, Next::Reached) {
            return Ok(None);
        }
        if matches!(next, Next::Park(_)) || stop != Stop::Signal(libc::SIGTRAP) {
            return Ok(Some(next));
        }
        if !self.check_at_point(tid)? {
            return Ok(Some(next));
        }
        self.reached(tid)?;
        if let Next::Halt(why) = next {
            self.halt(why);
        }
        Ok(None)
    }

    /// `next` for task `tid`, which runs toward its point; a halt happens outside the
    /// locator's trampoline (`None` if the task reached its point on the way out, and halted
    /// there).
    pub(super) fn halt_outside_trampoline(&mut self, tid: Tid, next: Next) -> Result<Option<Next>> {
        let Next::Halt(why) = next else {
            return Ok(Some(next));
        };
        if !self.leave_trampoline(tid)? {
            return Ok(Some(next));
        }
        self.reached(tid)?;
        self.halt(why);
        Ok(None)
    }

    /// Whether task `tid`, stopped in its user code, is exactly at its point.
    pub(super) fn check_at_point(&mut self, tid: Tid) -> Result<bool> {
        let room = self.room(tid);
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
            return Ok(false);
        };
        w.locator(t, room)?
            .at_point(t)
            .with_context(|| format!("comparing task {tid} with its recorded point"))
    }

    /// Task `tid` is at its point: the locator goes, the task waits there for the event.
    pub(super) fn reached(&mut self, tid: Tid) -> Result<()> {
        self.drain_signals(tid)?;
        let t = tasks::task(&mut self.tasks, tid)?;
        if let Some(mut w) = self.toward.take() {
            w.finish(&t.tracee)?;
            if w.event == point::PointEvent::Mark {
                return self.mark_reached(tid);
            }
            tracing::debug!(
                tid,
                rip = w.rip(),
                passes = w.passes,
                ran = ?w.ran,
                "reached the point"
            );
        }
        t.state = RState::AtPoint;
        self.running = None;
        Ok(())
    }

    /// The divergence of a task that stopped at `stop` before its point.
    pub(super) fn missed_point(&mut self, tid: Tid, stop: Stop) -> anyhow::Error {
        let found = self.describe_stop(tid, stop);
        let found = match stop {
            Stop::Exited(_) | Stop::Killed(_) => found,
            _ => format!("{found} first"),
        };
        self.lost_point(tid, found)
    }

    /// The divergence of task `tid`, which did not reach its point: `found` happened instead.
    /// The event is the point's (the next one), and the report says how far the search went.
    pub(super) fn lost_point(&mut self, tid: Tid, found: String) -> anyhow::Error {
        let Some(mut w) = self.toward.take() else {
            return anyhow::anyhow!("task {tid} runs toward no point");
        };
        let details = w.details(&found);
        if let Some(t) = self.tasks.by_tid(tid) {
            if let Err(e) = w.finish(&t.tracee) {
                tracing::debug!("after the divergence: {e:#}");
            }
        }
        self.running = None;
        Divergence {
            event: self.index_at(0),
            task: tid,
            expected: w.expected(),
            found,
            details,
        }
        .into()
    }

    /// Checks that `tid` waits at `point`, where its event happened (`expected` says which),
    /// with the recorded registers and FP state (the memory was compared when the point was
    /// found).
    pub(super) fn expect_at_point(
        &mut self,
        tid: Tid,
        expected: String,
        point: &Point,
    ) -> Result<()> {
        let found = match self.task(tid)?.state {
            RState::AtPoint => {
                let t = self.tracee(tid)?;
                let differences = point::registers_differ(t, point)
                    .with_context(|| format!("comparing task {tid} with its recorded point"))?;
                if differences.is_empty() {
                    return Ok(());
                }
                return Err(self.diverged_with(
                    tid,
                    expected,
                    "the task at the point's rip in another state".into(),
                    vec![format!("differences: {}", differences.join(", "))],
                ));
            }
            RState::Parked(stop) => self.describe_stop(tid, stop),
            RState::Dead(status) => format!("the task ended ({status})"),
            other => format!("the task elsewhere ({other:?})"),
        };
        Err(self.diverged(tid, expected, found))
    }

    /// The recorder took the CPU from the task at its point: it waits there until its
    /// `Resume`.
    pub(super) fn preempt(&mut self, e: &PreemptEvent) -> Result<()> {
        let rip = point::rip(&e.point);
        let expected = format!("the preemption point at rip {rip:#x}");
        self.expect_at_point(e.tid, expected.clone(), &e.point)?;
        // The recorder settled the task's last trap at the point (which later signal frames
        // copy); the replay's last trap was the locator's.
        self.settle_trap(e.tid, &expected)
    }

    /// A preempted task runs on from its point.
    pub(super) fn resume_preempted(&mut self, tid: Tid) -> Result<()> {
        if self.task(tid)?.state != RState::AtPoint {
            let found = match self.task(tid)?.state {
                RState::Parked(stop) => self.describe_stop(tid, stop),
                RState::Dead(status) => format!("the task ended ({status})"),
                other => format!("the task elsewhere ({other:?})"),
            };
            return Err(self.diverged(tid, "the preempted task to run on".into(), found));
        }
        self.resume(tid, 0)
    }

    /// An asynchronous signal the recording delivered at a point in the task's user code: the
    /// task waits there; the signal is delivered with the recorded `siginfo` before the task
    /// executes anything more, right after a debug exception as in the recording (see
    /// `tracee::state::settle_trap`).
    pub(super) fn signal_at_point(&mut self, e: &SignalEvent) -> Result<()> {
        let tid = e.tid;
        let expected = format!("signal {} delivered mid-code at rip {:#x}", e.signo, e.rip);
        let Some(point) = &e.point else {
            bail!("the signal of event {} has no point", self.index);
        };
        self.expect_at_point(tid, expected.clone(), point)?;
        if e.delivered && signal_blocked(self.tracee(tid)?, e.signo)? {
            return Err(self.diverged(
                tid,
                expected,
                format!("signal {} blocked in the replay", e.signo),
            ));
        }
        self.settle_trap(tid, &expected)?;
        let t = self.tracee(tid)?;
        let rip = t.regs()?.rip;
        if rip != e.rip {
            return Err(self.diverged(tid, expected, format!("the task at rip {rip:#x}")));
        }
        t.set_siginfo(&e.siginfo)?;
        self.note_siginfo(e);
        self.task(tid)?.state = RState::Parked(Stop::Signal(e.signo));
        self.resume(tid, if e.delivered { e.signo } else { 0 })
    }
}
