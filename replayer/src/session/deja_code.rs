//! What a debugger sees of deja's own code in the replayed program: nothing. A halt that
//! comes while the task is in a syscall stub or in the in-process library is put off until
//! the task is back in the program's code (stepped there, as the recorder steps a task out
//! before a point); a task at a stub's copy of an instruction displaced from a patched window
//! is shown at that instruction's original address, and goes on from the copy.

use anyhow::{bail, Result};
use trace_format::Tid;
use tracee::Stop;

use crate::debug::Halt;

use super::Session;

/// Most single steps to leave deja's code (the library copies a buffered call's recorded
/// bytes with `rep movsb`, one step per byte).
const LEAVE_STEPS: usize = 1_000_000;

impl Session {
    /// Before halt `why` of the running task: a task at a stub's copy of a displaced
    /// instruction is moved to the original address; a task elsewhere in deja's code (the
    /// stub's call to the library, the library) must first leave it: the halt is put off
    /// (`Debug::leaving`) and true returned.
    pub(super) fn leave_before_halt(&mut self, why: Halt) -> bool {
        match self.try_leave_before_halt(why) {
            Ok(later) => later,
            Err(e) => {
                tracing::debug!("halting where the task is: {e:#}");
                false
            }
        }
    }

    fn try_leave_before_halt(&mut self, why: Halt) -> Result<bool> {
        let Some(tid) = why.task() else {
            return Ok(false);
        };
        if self.running.map(|r| r.tid) != Some(tid) || !self.debugged(tid) {
            return Ok(false);
        }
        let t = self.task(tid)?;
        let rpid = t.rpid;
        let mut r = t.tracee.regs()?;
        if let Some(orig) = self.sites.original_of(rpid, r.rip) {
            r.rip = orig;
            self.tracee(tid)?.set_regs(&r)?;
            return Ok(false);
        }
        if !self.sites.in_deja_code(rpid, r.rip) {
            return Ok(false);
        }
        tracing::debug!(tid, rip = r.rip, ?why, "halting once out of deja's code");
        if let Some(d) = self.debug.as_mut() {
            d.leaving = Some((tid, why));
            d.interrupt_sent = None;
        }
        Ok(true)
    }

    /// An interrupt between events, when task `tid` (the one to name in it) waits for its
    /// next event in deja's code (the library's traced syscall): the halt is put off until
    /// the task has run out of it after that event (true).
    pub(super) fn interrupt_later(&mut self, tid: Tid) -> bool {
        let Ok(t) = self.task(tid) else {
            return false;
        };
        let rpid = t.rpid;
        let Ok(r) = t.tracee.regs() else {
            return false;
        };
        if !self.sites.in_deja_code(rpid, r.rip) {
            return false;
        }
        tracing::debug!(tid, rip = r.rip, "interrupting once out of deja's code");
        match self.debug.as_mut() {
            Some(d) => {
                d.leaving = Some((tid, Halt::Interrupted(tid)));
                true
            }
            None => false,
        }
    }

    /// The halt put off until task `tid` leaves deja's code, if any (and the task resumes
    /// with no signal to deliver: one that does is reported where it is).
    pub(super) fn leaving(&mut self, tid: Tid, sig: i32) -> Option<Halt> {
        let d = self.debug.as_mut()?;
        match d.leaving {
            Some((t, why)) if t == tid && sig == 0 => Some(why),
            Some((t, _)) if t == tid => {
                d.leaving = None;
                None
            }
            _ => None,
        }
    }

    /// Single-steps task `tid` until it is out of deja's code (at a stub's copy of a displaced
    /// instruction, or in the program's code): `None` then, or the stop that came first (the
    /// library's traced syscall, a signal, the task's end), for the replay to handle as any
    /// stop of the task. A `popf` is emulated (`tracee::state::step_one`): stepping one would
    /// leave the trap flag to the program.
    pub(super) fn step_out(&mut self, tid: Tid) -> Result<Option<Stop>> {
        for _ in 0..LEAVE_STEPS {
            let t = self.task(tid)?;
            let rpid = t.rpid;
            let rip = t.tracee.regs()?.rip;
            if self.sites.original_of(rpid, rip).is_some() || !self.sites.in_deja_code(rpid, rip) {
                // Debug-register hits while stepping are not the program's halts.
                self.tracee(tid)?.set_debug_reg(6, 0)?;
                return Ok(None);
            }
            let t = self.task(tid)?;
            t.single_stepped = true;
            t.debugger_trapped = true;
            let Some(stop) = tracee::state::step_one(&t.tracee)? else {
                continue;
            };
            if tracee::state::is_step_trap(&t.tracee, stop)? {
                self.watch_while_leaving(tid)?;
                continue;
            }
            return Ok(Some(stop));
        }
        bail!("task {tid} did not leave deja's in-process library in {LEAVE_STEPS} steps")
    }

    /// After a step of task `tid` out of deja's code: a watchpoint the library's write of a
    /// call's recorded bytes hit is the halt to report (as for the writes of a syscall on the
    /// traced path), in place of the one put off.
    fn watch_while_leaving(&mut self, tid: Tid) -> Result<()> {
        if self
            .debug
            .as_ref()
            .map_or(true, |d| d.hw.iter().all(Option::is_none))
        {
            return Ok(());
        }
        let t = self.tracee(tid)?;
        let dr6 = t.debug_reg(6)?;
        let Some(d) = self.debug.as_mut() else {
            return Ok(());
        };
        if let Some(point) = d.point_hit(dr6).filter(|p| p.watch.is_some()) {
            if let Some((_, why)) = d.leaving.as_mut() {
                if !matches!(why, Halt::Watch { .. }) {
                    *why = point.halt(tid);
                }
            }
        }
        self.tracee(tid)?.set_debug_reg(6, 0)
    }

    /// Before task `tid` of the debugged process runs: if the debugger was shown it at an
    /// instruction displaced from a patched window, it goes on from the stub's copy.
    pub(super) fn resume_in_stub(&mut self, tid: Tid) -> Result<()> {
        let t = self.task(tid)?;
        let rpid = t.rpid;
        if !self.sites.any(rpid) {
            return Ok(());
        }
        let t = self.task(tid)?;
        let mut r = t.tracee.regs()?;
        if let Some(copy) = self.sites.copy_of(rpid, r.rip) {
            r.rip = copy;
            self.tracee(tid)?.set_regs(&r)?;
        }
        Ok(())
    }
}
