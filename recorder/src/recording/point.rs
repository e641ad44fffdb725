//! Points: taking the CPU from a task at an exact place in its user code (a preemption),
//! and delivering an asynchronous signal there; what a point holds and leaves out.

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use syscalls::Call;
use trace_format::{Event, Point, PreemptEvent, SignalEvent, SignalOrigin};
use tracee::tracee::{signo_code, SIGINFO_SIZE};
use tracee::{Regs, Stop, Tracee};

use crate::memory::TraceeMemory;
use crate::points;
use crate::signals::{is_fault, is_ours, restart_pending};
use crate::task::{HeldSignal, State};

use super::{Session, RIP};

/// Instructions single-stepped past a preemption's stop before its point, to learn what memory
/// the task writes near it (see `tracee::state::step_for_watch`); chaos adds some (see
/// `chaos`).
pub(crate) const WATCH_STEPS: usize = 512;

/// Most instructions stepped further to leave a point the replay could not patch.
const PATCHABLE_STEPS: usize = 16;

/// Most instructions of one pass of the steps past a stop (one loop iteration; see
/// [`WATCH_STEPS`], `tracee::state::step_for_watch`).
const PASS_STEPS: usize = 64;

/// Most watched words a point records of those the task wrote.
const WATCH_WORDS: usize = 32;

/// Most watched words a point records of the stack around its `rsp` (see
/// `tracee::state::stack_words`).
const STACK_WORDS: usize = 32;

impl Session {
    /// At the stop for the recorder's own preemption `SIGSTOP` of the running task `tid`
    /// (registers `regs`): takes the CPU from it if another task still waits for it.
    pub(super) fn on_preemption_stop(&mut self, tid: i32, regs: Regs) -> Result<()> {
        let others_wait = self.others_wait();
        let t = self.task(tid)?;
        t.stop_sent = false;
        // Right after a syscall the kernel is about to restart, the task is not in its user
        // code yet (the restart rewinds it to the `syscall` instruction): no point there.
        // (Unless it is the library's own syscall, interrupted because it blocked: then the
        // task leaves the library by the traced path, see `buffered`.)
        let own = self.in_own_code(tid, regs.rip);
        let t = self.task(tid)?;
        if (restart_pending(&regs) && !own) || !others_wait {
            // Suppressed, the SIGSTOP changes nothing in the task.
            return t.tracee.cont(0);
        }
        self.preempt(tid)
    }

    /// Takes the CPU from the running task `tid`, stopped in its user code: records the point
    /// it stops at (see [`Session::reach_point`]) and queues it for the CPU.
    pub(super) fn preempt(&mut self, tid: i32) -> Result<()> {
        let mut aside = Vec::new();
        let Some(point) = self.reach_point(tid, &mut aside, None)? else {
            return Ok(());
        };
        self.writer.push(Event::Preempt(PreemptEvent {
            tid,
            point: Box::new(point),
        }))?;
        let t = self.task(tid)?;
        t.state = State::Preempted;
        t.boundary = None;
        self.ready.push_back(tid);
        self.current = None;
        // Pending while it waits, they come as soon as it runs again.
        self.send_again(tid, aside)
    }

    /// An asynchronous signal `sig` (with `info`) that stopped the running task `tid` in the
    /// middle of its user code: recorded at an exact point (see [`Session::reach_point`]), and
    /// delivered there. The task keeps the CPU.
    pub(super) fn signal_mid_code(
        &mut self,
        tid: i32,
        sig: i32,
        info: [u8; SIGINFO_SIZE],
    ) -> Result<()> {
        let delivered = !self.task(tid)?.tracee.fault_ignored_as_ns_init(sig);
        let mut aside = Vec::new();
        // Stepping discards the signal; it is injected again at the point.
        let Some(point) = self.reach_point(tid, &mut aside, Some((sig, info)))? else {
            // The task ended: the signal ends with it.
            return Ok(());
        };
        self.writer.push(Event::Signal(SignalEvent {
            tid,
            signo: sig,
            siginfo: info.to_vec(),
            origin: SignalOrigin::Async,
            rip: point.regs[RIP],
            delivered,
            point: Some(Box::new(point)),
        }))?;
        let t = self.task(tid)?;
        t.tracee.set_siginfo(&info)?;
        t.tracee.cont(if delivered { sig } else { 0 })?;
        self.send_again(tid, aside)
    }

    /// Brings the running task `tid`, stopped in its user code, to a point and records it:
    /// single-steps it ([`WATCH_STEPS`] instructions, more as chaos draws, see
    /// `tracee::state::step_for_watch`) to learn which memory it writes, then makes a debug
    /// exception its last trap (`tracee::state::settle_trap`: the kernel copies the last trap
    /// into later signal frames, which points' digests cover, so at every point it is the same
    /// in recording and replay). The task is left stopped at the point, where a signal can be
    /// injected. A signal that stops it meanwhile is discarded there and put in `aside`, to be
    /// sent again once the task is past the point. `None` if the task ended (its end handled),
    /// or if, on its way out of deja's own code (the library, a stub: no point is taken there),
    /// another stop came (handled; `pending`, the signal to deliver at the point, is then sent
    /// again).
    pub(super) fn reach_point(
        &mut self,
        tid: i32,
        aside: &mut Vec<HeldSignal>,
        pending: Option<HeldSignal>,
    ) -> Result<Option<Point>> {
        let rip = self.task(tid)?.tracee.regs()?.rip;
        let left_own_code = self.in_own_code(tid, rip);
        if left_own_code && !self.leave_own_code(tid, pending)? {
            return Ok(None);
        }
        let watch_steps = if left_own_code {
            0
        } else {
            self.steps_to_point()
        };
        let t = &self.task(tid)?.tracee;
        let in_steps = || format!("single-stepping task {tid} to a point");
        // Several passes of one loop iteration each (an interpreter's dispatch comes back to
        // the same instruction at every bytecode, and the loop of the program it runs spans
        // many of them): the words written over the whole window show that loop's progress.
        // A task just out of deja's code stands right after a buffered syscall: the count of
        // its buffered calls (a watched word of every point, see `capture_point`) names that
        // moment alone, and a signal the call itself raised (`SIGIO`, `SIGPIPE`) is delivered
        // right after it, as the kernel delivers it at the call's exit.
        let mut stepped = tracee::state::Stepped::default();
        while stepped.steps < watch_steps && stepped.interrupted.is_none() {
            let max = (watch_steps - stepped.steps).min(PASS_STEPS);
            if step_more(t, max, &mut stepped).with_context(in_steps)? == 0 {
                break;
            }
        }
        // A point on a `call` (or near one) could only be found at a ptrace stop per visit in
        // replay, since the call cannot be moved into the trampoline: step on a little.
        for _ in 0..PATCHABLE_STEPS {
            if left_own_code
                || stepped.interrupted.is_some()
                || tracee::locate::patchable(t, t.regs()?.rip)
                || step_more(t, 1, &mut stepped).with_context(in_steps)? == 0
            {
                break;
            }
        }
        let mut interrupted = stepped.interrupted.take();
        loop {
            match interrupted {
                None => {}
                Some(end) if end.is_end() => {
                    self.dispatch(tid, end)?;
                    return Ok(None);
                }
                Some(Stop::Signal(sig)) => self.put_aside(tid, sig, aside)?,
                Some(other) => {
                    bail!("unexpected stop of task {tid} on its way to a point: {other:?}")
                }
            }
            // The steps may have entered deja's own code, and a signal may have stopped them
            // there: no point is taken there either. The signals put aside are sent again
            // first (on its way out, `leave_own_code` puts them aside again and sends them
            // again once out, or, if another stop comes first, before handling it).
            let rip = self.task(tid)?.tracee.regs()?.rip;
            if self.in_own_code(tid, rip) {
                self.send_again(tid, std::mem::take(aside))?;
                if !self.leave_own_code(tid, pending)? {
                    return Ok(None);
                }
            }
            let t = self.task(tid)?;
            // Not inside a `rep`-prefixed string instruction (see `finish_string_insn`).
            interrupted = tracee::state::finish_string_insn(&t.tracee).with_context(|| {
                format!("running task {tid} to the end of a string instruction")
            })?;
            if interrupted.is_some() {
                continue;
            }
            interrupted = tracee::state::settle_trap(&t.tracee)
                .with_context(|| format!("settling the last trap of task {tid} at a point"))?;
            if interrupted.is_none() {
                break;
            }
        }
        self.capture_point(tid, &stepped.written).map(Some)
    }

    /// `tid` stopped for signal `sig` on its way to a point, where the recorder discards it: an
    /// asynchronous signal goes to `aside` with its siginfo (to be sent again), a fault is just
    /// discarded (the instruction faults again when it runs again), the recorder's preemption
    /// `SIGSTOP` is no longer pending, and a group-stop passes.
    pub(super) fn put_aside(
        &mut self,
        tid: i32,
        sig: i32,
        aside: &mut Vec<HeldSignal>,
    ) -> Result<()> {
        let Ok(info) = self.task(tid)?.tracee.siginfo() else {
            return Ok(());
        };
        self.keep_aside(tid, sig, info, aside)
    }

    /// Puts signal `sig` (`info`, taken from task `tid`) in `aside` to be sent again, unless it
    /// is deja's own stop request or a fault (which the task raises again when it runs on); a
    /// signal sent again before gets back its original siginfo.
    fn keep_aside(
        &mut self,
        tid: i32,
        sig: i32,
        info: [u8; tracee::tracee::SIGINFO_SIZE],
        aside: &mut Vec<HeldSignal>,
    ) -> Result<()> {
        let me = self.me;
        let t = self.task(tid)?;
        let (signo, code) = signo_code(&info);
        if let Some(i) = t.resent.iter().position(|(s, _)| *s == sig) {
            aside.push(t.resent.remove(i));
        } else if is_ours(&info, me) {
            t.stop_sent = false;
        } else if !is_fault(signo, code) {
            aside.push((sig, info));
        }
        Ok(())
    }

    /// Runs `f`, which injects syscalls into task `tid`, with the signals that stop the task
    /// before them set aside (`Tracee::set_signals_aside`), then sends those again (as
    /// `put_aside` and `send_again` do).
    pub(super) fn with_signals_aside<T>(
        &mut self,
        tid: i32,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.task(tid)?.tracee.set_signals_aside();
        let result = f(self);
        let taken = match self.tasks.get(&tid) {
            Some(t) => t.tracee.signals_set_aside(),
            None => Vec::new(),
        };
        let mut aside = Vec::new();
        for (sig, info) in taken {
            self.keep_aside(tid, sig, info, &mut aside)?;
        }
        self.send_again(tid, aside)?;
        result
    }

    /// Sends the signals `reach_point` put aside to `tid` again; their stops get back their
    /// original siginfo (see `on_signal`).
    pub(super) fn send_again(&mut self, tid: i32, aside: Vec<HeldSignal>) -> Result<()> {
        let t = self.task(tid)?;
        for (sig, info) in aside {
            t.tracee.tgkill(Pid::from_raw(t.pid), sig)?;
            t.resent.push((sig, info));
        }
        Ok(())
    }

    /// Whether a task waits in the ready FIFO for the CPU.
    pub(super) fn others_wait(&self) -> bool {
        self.ready
            .iter()
            .any(|r| self.tasks.get(r).is_some_and(|t| t.state.waits_for_cpu()))
    }

    /// The point the running task `tid` is stopped at, with `written` (what it wrote while
    /// single-stepped) for the watched words.
    pub(super) fn capture_point(&mut self, tid: i32, written: &[(u64, u8)]) -> Result<Point> {
        // Stepping to the point may have made buffered syscalls: their event comes before it.
        self.drain(tid)?;
        let mut excluded = self.excluded(tid)?;
        let seq = self.seq_watch(tid)?;
        // deja's own memory differs between recording and replay (the buffer holds records in
        // one, placed answers in the other): left out, but for the count of buffered calls.
        let own = (syscallbuf::abi::LIB_BASE, syscallbuf::abi::REGION_END);
        let written: Vec<(u64, u8)> = written
            .iter()
            .copied()
            .filter(|&(a, _)| !(own.0..own.1).contains(&a))
            .collect();
        if let Some(seq) = &seq {
            // All of it but the task's count itself, which the point compares (a watched
            // word inside an excluded range would be dropped).
            let around = vec![(own.0, seq.addr), (seq.addr + 8, own.1)];
            excluded = tracee::state::merge_ranges(&[excluded, around].concat());
        }
        let ticks = if self.stall.0 == Some(tid) {
            self.stall.2
        } else {
            0
        };
        let t = self.task(tid)?;
        let mut watch = tracee::state::watch_values(&t.tracee, &written, WATCH_WORDS);
        let rsp = t.tracee.regs()?.rsp;
        let mut leave_out = excluded.clone();
        leave_out.push(own);
        let stack = tracee::state::stack_words(&t.tracee, rsp, &leave_out, &watch, STACK_WORDS);
        watch.extend(stack);
        watch.extend(seq);
        tracee::state::capture(&t.tracee, excluded, watch, ticks)
            .with_context(|| format!("recording the point task {tid} stopped at"))
    }

    /// The memory a point of `tid` leaves out of its digest: what the kernel may write into
    /// its address space for other tasks' syscalls whose events come later in the trace (the
    /// bound of a call still in progress, the exact writes of one that returned), the
    /// `CLONE_CHILD_SETTID` word of a thread that has not started, and the
    /// `CLONE_CHILD_CLEARTID` word of a task that is exiting.
    pub(super) fn excluded(&self, tid: i32) -> Result<Vec<(u64, u64)>> {
        let t = self
            .tasks
            .get(&tid)
            .with_context(|| format!("task {tid} is not traced"))?;
        let mem = TraceeMemory(&t.tracee);
        let mut ranges = Vec::new();
        for o in self.tasks.values() {
            if o.mm != t.mm || o.tid() == tid {
                continue;
            }
            match &o.state {
                State::InSyscall(e)
                | State::Restarting(e)
                | State::GroupStopped(Some(e))
                | State::ReadyToContinue(Some(e))
                    if !e.exec_done =>
                {
                    ranges.extend(
                        points::pending_regions(e.ev.nr, e.ev.args, &mem)
                            .iter()
                            .map(points::range),
                    )
                }
                State::ReadyAfter(e) => {
                    // The result is in the exit registers (a task killed meanwhile has none:
                    // then the call's bound).
                    let regions = match o.tracee.regs() {
                        Ok(r) => {
                            let call = Call {
                                nr: e.ev.nr,
                                args: e.ev.args,
                                result: r.rax as i64,
                            };
                            syscalls::out_regions(&call, &mem)
                        }
                        Err(_) => points::pending_regions(e.ev.nr, e.ev.args, &mem),
                    };
                    ranges.extend(regions.iter().map(points::range));
                }
                State::Unborn | State::ReadyToStart => {
                    if let Some(at) = o.child_tid_at {
                        ranges.push((at, at + 4));
                    }
                }
                // A leader that left its threads behind exits without the CPU: the kernel
                // clears its `CLONE_CHILD_CLEARTID` word at some moment of theirs.
                State::Exiting => {
                    if let Some(at) = o.clear_tid_at {
                        ranges.push((at, at + 4));
                    }
                }
                _ => {}
            }
        }
        Ok(tracee::state::merge_ranges(&ranges))
    }
}

/// One more pass of `tracee::state::step_for_watch` (at most `max` instructions), added to
/// `stepped`; returns how many instructions it stepped.
fn step_more(t: &Tracee, max: usize, stepped: &mut tracee::state::Stepped) -> Result<usize> {
    let pass = tracee::state::step_for_watch(t, max)?;
    stepped.written.extend(pass.written);
    stepped.interrupted = pass.interrupted;
    stepped.steps += pass.steps;
    Ok(pass.steps)
}
