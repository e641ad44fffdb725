//! Running a task between events: resuming it after its event, waiting for its next stop,
//! and what that stop means (its next event, a stop to pass over, a debugger halt).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use trace_format::{Event, ExitStatus, SignalOrigin, Tid};
use tracee::{Stop, Tracee};

use crate::debug::{self, Halt};
use crate::point::{PointEvent, Toward};
use crate::tasks::{self, RState};

use super::{Next, Run, Session, TRAP_HWBKPT};

impl Session {
    /// The stop task `tid` is parked at, for its next event.
    pub(super) fn parked(&mut self, tid: Tid) -> Result<Stop> {
        match self.task(tid)?.state {
            RState::Parked(stop) => Ok(stop),
            RState::Dead(status) => Err(self.diverged(
                tid,
                "the task to go on".into(),
                format!("the task ended ({status})"),
            )),
            RState::AtPoint => Err(self.diverged(
                tid,
                "the task's next event".into(),
                "the task stopped at a point in its user code (preempted)".into(),
            )),
            other => bail!("task {tid} is not stopped at an event ({other:?})"),
        }
    }

    /// Resumes `tid` after an event, first sending the signal the recording delivered right
    /// at this point, if any, then runs it to its next stop: exactly one task runs user code
    /// at a time, in the recorded order.
    pub(super) fn resume(&mut self, tid: Tid, sig: i32) -> Result<()> {
        if self.take_lane_change(tid)? {
            // (Handed to the other lane's thread, which runs it on.)
            return Ok(());
        }
        if self.ptrace_holds(tid)? {
            return Ok(());
        }
        self.place_buffered(tid)?;
        let mut toward = None;
        let next = match self.peek_past_buffered(tid)? {
            // The task's run ends at an exact point in its user code.
            Some(Event::Preempt(p)) if p.tid == tid => {
                toward = Some(Toward::new(tid, p.point.clone(), PointEvent::Preempt));
                None
            }
            Some(Event::Signal(s)) if s.tid == tid && s.point.is_some() => {
                let signal = PointEvent::Signal(s.signo);
                toward = s.point.clone().map(|p| Toward::new(tid, p, signal));
                None
            }
            Some(Event::Signal(s)) if s.tid == tid && s.origin == SignalOrigin::Async => {
                Some(s.signo)
            }
            Some(Event::Exit(e))
                if e.tid == tid && e.status == ExitStatus::Signaled(libc::SIGKILL) =>
            {
                // SIGKILL never shows as a stop: the recorded task just ended here.
                self.robust_futexes_die(tid)?;
                let t = self.task(tid)?;
                let _ = nix::sys::signal::kill(t.tracee.pid(), nix::sys::signal::SIGKILL);
                t.state = RState::Exiting;
                return Ok(());
            }
            _ => None,
        };
        let t = self.task(tid)?;
        if let Some(signo) = next {
            if !std::mem::take(&mut t.signal_sent) {
                t.tracee.tgkill(t.pid, signo)?;
            }
            t.injected = Some(signo);
        }
        t.state = RState::Resumed;
        let toward = self.toward_mark(tid, toward);
        if let Some(w) = &toward {
            tracing::debug!(tid, rip = w.rip(), event = ?w.event, "running to a point");
        }
        self.toward = toward;
        self.running = Some(Run {
            tid,
            sig,
            sig_reported: false,
        });
        self.run_task()
    }

    /// Runs the task resumed after the last event up to its next stop that belongs to the
    /// recording (parking it there), unless the debugger halts the replay first. Signals the
    /// replay itself causes but the recording delivered at other points (a child's SIGCHLD,
    /// which the replayer delivers from the trace) and signals sent from outside are dropped.
    pub(super) fn run_task(&mut self) -> Result<()> {
        while let Some(run) = self.running {
            if self.halted() {
                return Ok(());
            }
            let mut early = None;
            if self.debug.is_some() {
                if let Some(why) = self.leaving(run.tid, run.sig) {
                    // A halt put off while the task was in deja's code.
                    match self.step_out(run.tid)? {
                        None => {
                            // (A watchpoint hit on the way out replaced it.)
                            let why = self
                                .debug
                                .as_mut()
                                .and_then(|d| d.leaving.take())
                                .map_or(why, |(_, why)| why);
                            if self.running_toward(run.tid) && self.check_at_point(run.tid)? {
                                self.reached(run.tid)?;
                            }
                            self.halt(why);
                            continue;
                        }
                        Some(stop) => early = Some(stop),
                    }
                } else if let Some(why) = self.halt_before_run(run) {
                    // (Put off if the task is in deja's code: see `leave_before_halt`.)
                    self.halt(why);
                    continue;
                }
            }
            let early = match early.or_else(|| self.held_stop.take()) {
                Some(stop) => Some(stop),
                None => self.launch(run)?,
            };
            self.running = Some(Run {
                sig: 0,
                sig_reported: false,
                ..run
            });
            let stop = match early {
                Some(stop) => stop,
                None => self.wait_running(run.tid)?,
            };
            let next = if self.running_toward(run.tid) {
                match self.toward_stop(run.tid, stop)? {
                    Some(next) => next,
                    // Parked at the point.
                    None => continue,
                }
            } else {
                self.classify(run.tid, stop)?
            };
            match next {
                Next::Park(stop) if self.running_toward(run.tid) => {
                    return Err(self.missed_point(run.tid, stop));
                }
                Next::Park(stop) => {
                    if let Some(why) = self.ending(run.tid, stop)? {
                        // Halt at the debugged process's end; its run goes on from this stop.
                        self.held_stop = Some(stop);
                        self.halt(why);
                        continue;
                    }
                    self.task(run.tid)?.state = match stop {
                        Stop::Exited(c) => RState::Dead(ExitStatus::Exited(c)),
                        Stop::Killed(s) => RState::Dead(ExitStatus::Signaled(s)),
                        other => RState::Parked(other),
                    };
                    self.running = None;
                }
                Next::Again | Next::Reached => {}
                Next::Halt(why) => self.halt(why),
            }
        }
        Ok(())
    }

    /// Whether the debugger wants the replay to halt before `run` goes on.
    pub(super) fn halt_before_run(&mut self, run: Run) -> Option<Halt> {
        let debugged = self.debugged(run.tid);
        if debugged {
            self.debug.as_mut()?.current = Some(run.tid);
        }
        let index = self.index;
        if self
            .debug
            .as_ref()?
            .halt_after_event
            .is_some_and(|e| index >= e)
        {
            let who = if debugged {
                run.tid
            } else {
                self.halt_thread()
            };
            let d = self.debug.as_mut()?;
            d.halt_after_event = None;
            d.proc_halts.clear();
            return Some(Halt::Reached(who));
        }
        if let Some(why) = self.boundary_mark(run.tid) {
            return Some(why);
        }
        let d = self.debug.as_mut()?;
        // On the way to the starting point (`-g EVENT`) nothing halts: the debugger has not
        // seen the program yet, and the signals handled before it are part of the way there.
        if !debugged || d.halt_after_event.is_some() {
            return None;
        }
        if let Some(w) = d.pending_watch.take() {
            return Some(w);
        }
        if let Some(h) = d.take_proc_halt(run.tid) {
            return Some(h);
        }
        if run.sig != 0 && !run.sig_reported {
            self.running = Some(Run {
                sig_reported: true,
                ..run
            });
            return Some(Halt::Signal {
                tid: run.tid,
                signo: run.sig,
            });
        }
        match d.step {
            Some(s) if s.tid == run.tid && s.launched && run.sig == 0 => Some(Halt::Step(run.tid)),
            // (Not during a step: resuming after the pause would launch it again.)
            None if d.pause_every.is_some_and(|p| d.last_pause.elapsed() >= p) => {
                d.last_pause = std::time::Instant::now();
                Some(Halt::Pause(run.tid))
            }
            _ => None,
        }
    }

    /// Lets `run`'s task go: continues it, or single-steps it when the debugger steps it or
    /// when it must step over a breakpoint at its pc. Returns a stop the task reached while
    /// being prepared, before it could be let go (see [`Self::launch_toward`]).
    pub(super) fn launch(&mut self, run: Run) -> Result<Option<Stop>> {
        let step = if self.debug.is_some() {
            self.debug_launch(run)?
        } else {
            false
        };
        self.ran = true;
        if self.running_toward(run.tid) {
            return self.launch_toward(run, step);
        }
        let t = self.tracee(run.tid)?;
        if step {
            t.step(run.sig)?;
        } else {
            t.cont(run.sig)?;
        }
        Ok(None)
    }

    /// The debugger's part of [`Self::launch`]: puts back a breakpoint lifted for a step,
    /// writes its debug registers, lifts a breakpoint at the task's pc; whether the task must
    /// single-step (the debugger's step, or a step over that breakpoint).
    pub(super) fn debug_launch(&mut self, run: Run) -> Result<bool> {
        let debugged = self.debugged(run.tid);
        self.put_back_lifted()?;
        if debugged {
            self.sync_debug_regs(run.tid)?;
            self.resume_in_stub(run.tid)?;
        }
        let t = tasks::task(&mut self.tasks, run.tid)?;
        let Some(d) = self.debug.as_mut() else {
            return Ok(false);
        };
        let mut step = false;
        if let Some(s) = d.step.as_mut().filter(|s| s.tid == run.tid) {
            s.launched = true;
            step = true;
        }
        d.stepped_over = None;
        if !d.breakpoints.is_empty() {
            let rip = t.tracee.regs()?.rip;
            let mut byte = [0u8];
            if let Some(&orig) = d.breakpoints.get(&rip) {
                if t.tracee.read_mem_partial(rip, &mut byte) == 1 && byte[0] == debug::INT3 {
                    t.tracee.write_mem(rip, &[orig])?;
                    d.lifted = Some(rip);
                    d.stepped_over = Some(run.tid);
                    step = true;
                }
            }
        }
        if step {
            t.single_stepped = true;
        }
        Ok(step)
    }

    /// Puts back the breakpoint taken out for a step over it.
    pub(super) fn put_back_lifted(&mut self) -> Result<()> {
        let Some(addr) = self.debug.as_mut().and_then(|d| d.lifted.take()) else {
            return Ok(());
        };
        match self.process_tracee() {
            Some(t) => t.write_mem(addr, &[debug::INT3]),
            None => Ok(()),
        }
    }

    /// A live task of the debugged process, to reach its memory.
    pub(crate) fn process_tracee(&self) -> Option<&Tracee> {
        let d = self.debug.as_ref()?;
        let tid = self.tasks.in_process(d.process).map(|(id, _)| id).min()?;
        self.tasks.by_tid(tid).map(|t| &t.tracee)
    }

    /// Writes the debugger's hardware breakpoints and watchpoints into `tid`'s debug
    /// registers, if they changed since it last ran.
    pub(super) fn sync_debug_regs(&mut self, tid: Tid) -> Result<()> {
        let Some(d) = self.debug.as_ref() else {
            return Ok(());
        };
        let generation = d.hw_generation;
        let regs = d.regs;
        let t = self.task(tid)?;
        if t.hw_generation == generation {
            return Ok(());
        }
        t.tracee.set_debug_regs(&regs)?;
        t.hw_generation = generation;
        Ok(())
    }

    /// Waits for the next stop of the running task `tid`. With a debugger, checks for its
    /// interrupt every 100 ms and stops the task with `SIGSTOP` when it comes; a task running
    /// toward a point is stopped the same way once it has run longer than the search may take.
    pub(super) fn wait_running(&mut self, tid: Tid) -> Result<Stop> {
        let (real, pid) = {
            let t = self.task(tid)?;
            (t.tracee.pid(), t.pid)
        };
        let mut toward = self.toward.as_mut().filter(|w| w.tid == tid);
        let mut debug = self.debug.as_mut();
        if debug.is_none() && toward.is_none() {
            return self.tasks.wait_real(real, &mut || Ok(()));
        }
        let stop_task = || {
            // SAFETY: tgkill takes only integers.
            unsafe { libc::syscall(libc::SYS_tgkill, pid.as_raw(), real.as_raw(), libc::SIGSTOP) };
        };
        const POLL: Duration = Duration::from_millis(100);
        // (The clock only for a run toward a point: reading it is a trapped `rdtsc` on the
        // tracer thread, and a debugger's single step waits here once per instruction.)
        let started = toward.is_some().then(Instant::now);
        tracee::alarm::start(POLL, POLL);
        let stop = self.tasks.wait_real(real, &mut || {
            if let Some(d) = debug.as_deref_mut() {
                if d.interrupt_sent.is_none() && d.interrupt_requested() {
                    stop_task();
                    d.interrupt_sent = Some(tid);
                }
            }
            if let Some(w) = toward.as_deref_mut() {
                let ran = started.map_or(Duration::ZERO, |s| s.elapsed());
                if !w.timeout_sent && w.ran + ran > w.limit {
                    tracing::debug!(tid, "the run to a point takes too long: stopping the task");
                    stop_task();
                    w.timeout_sent = true;
                }
            }
            Ok(())
        });
        tracee::alarm::stop();
        if let (Some(w), Some(started)) = (toward, started) {
            w.ran += started.elapsed();
        }
        stop
    }

    /// What to do with the stop the running task `tid` reached.
    pub(super) fn classify(&mut self, tid: Tid, stop: Stop) -> Result<Next> {
        let Stop::Signal(sig) = stop else {
            return Ok(Next::Park(stop));
        };
        if self.debug.is_some() {
            if let Some(next) = self.debug_trap(tid, sig)? {
                if sig == libc::SIGTRAP {
                    self.task(tid)?.debugger_trapped = true;
                }
                return Ok(next);
            }
        }
        let toward = self.running_toward(tid);
        let t = self.task(tid)?;
        if t.injected == Some(sig) {
            t.injected = None;
            return Ok(Next::Park(stop));
        }
        let drop = match t.tracee.siginfo() {
            Err(e) if tracee::gone::vanished_task(&e).is_none() && toward => {
                // A group-stop on the way to a point in its code: the recording's task ran
                // on to that point, its stop cancelled by a `SIGCONT` that came before it
                // took hold (the recorder holds a stop signal while it takes its point). The
                // point may be where it stopped (the stop signal's own point): its
                // instruction breakpoint would not fire again there.
                tracing::debug!(tid, "a group-stop the recording did not keep: going on");
                if self.check_at_point(tid)? {
                    self.reached(tid)?;
                    return Ok(Next::Reached);
                }
                return Ok(Next::Again);
            }
            Err(e) if tracee::gone::vanished_task(&e).is_none() => {
                // A group-stop: the recording's task stopped there too, until its next event.
                t.group_stopped = true;
                return Ok(Next::Park(stop));
            }
            Err(_) => true,
            Ok(info) => {
                let (_, code) = tracee::tracee::signo_code(&info);
                code <= 0 || sig == libc::SIGCHLD
            }
        };
        if drop {
            tracing::debug!(tid, sig, "dropping a signal the recording did not have");
            // A debugger's step it stopped did not run its instruction (the signal came at the
            // task's return to user mode, before it): the step is launched again, not taken
            // as done (which made gdb's step over a breakpoint report the breakpoint twice
            // when a child's `SIGCHLD` came in between).
            if let Some(s) = self
                .debug
                .as_mut()
                .and_then(|d| d.step.as_mut())
                .filter(|s| s.tid == tid)
            {
                s.launched = false;
            }
            return Ok(Next::Again);
        }
        Ok(Next::Park(stop))
    }

    /// Whether signal `sig` stopping `tid` is the debugger's doing (a breakpoint, a watchpoint,
    /// a single step, an interrupt) rather than the program's.
    pub(super) fn debug_trap(&mut self, tid: Tid, sig: i32) -> Result<Option<Next>> {
        let debugged = self.debugged(tid);
        let halt_thread = self.halt_thread();
        let t = tasks::task(&mut self.tasks, tid)?;
        let Some(d) = self.debug.as_mut() else {
            return Ok(None);
        };
        if sig == libc::SIGSTOP && d.interrupt_sent == Some(tid) {
            d.interrupt_sent = None;
            let who = if debugged { tid } else { halt_thread };
            return Ok(Some(Next::Halt(Halt::Interrupted(who))));
        }
        if sig != libc::SIGTRAP {
            return Ok(None);
        }
        let (_, code) = tracee::tracee::signo_code(&t.tracee.siginfo()?);
        if code == libc::SI_KERNEL {
            let mut r = t.tracee.regs()?;
            let at = r.rip.wrapping_sub(1);
            if d.breakpoints.contains_key(&at) && d.lifted != Some(at) {
                r.rip = at;
                t.tracee.set_regs(&r)?;
                return Ok(Some(if debugged {
                    Next::Halt(Halt::Breakpoint(tid))
                } else {
                    Next::Again
                }));
            }
        }
        if code == TRAP_HWBKPT && debugged {
            let dr6 = t.tracee.debug_reg(6)?;
            t.tracee.set_debug_reg(6, 0)?;
            if let Some(point) = d.point_hit(dr6) {
                return Ok(Some(Next::Halt(point.halt(tid))));
            }
        }
        if code > 0 {
            if d.step.is_some_and(|s| s.tid == tid && s.launched) {
                return Ok(Some(Next::Halt(Halt::Step(tid))));
            }
            if d.stepped_over == Some(tid) {
                // The step over a breakpoint landed on another one (a signal delivered by the
                // step entered a handler that has one at its first instruction): it is hit.
                let rip = t.tracee.regs()?.rip;
                if debugged && d.breakpoints.contains_key(&rip) && d.lifted != Some(rip) {
                    return Ok(Some(Next::Halt(Halt::Breakpoint(tid))));
                }
                return Ok(Some(Next::Again));
            }
        }
        Ok(None)
    }

    pub(super) fn wait_task(&mut self, tid: Tid) -> Result<Stop> {
        let real = self.tracee(tid)?.pid();
        self.tasks.wait_real(real, &mut || Ok(()))
    }
}
