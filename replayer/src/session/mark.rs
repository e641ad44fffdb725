//! Positions for going backwards: where the replay is (`Position`), halting when the replay
//! gets to a position (the debugger's *mark*), and the debugger's breakpoints in code not yet
//! mapped when the replay started over. See the crate README, "Going backwards".

use anyhow::Result;
use trace_format::{SyscallEvent, Tid};

use crate::debug::{Halt, Position, INT3};
use crate::point::{self, PointEvent, Toward, RIP};

use super::Session;

impl Session {
    /// The exact position of the replay, halted: the event replayed last, and the running
    /// task's state if it ran since.
    pub(crate) fn position(&mut self) -> Result<Position> {
        let event = self.index;
        if let (Some(_), Some(run)) = (self.held_stop, self.running) {
            return Ok(Position::Ending {
                event,
                tid: run.tid,
            });
        }
        let Some(run) = self.running.filter(|_| self.ran) else {
            return Ok(Position::Boundary(event));
        };
        let scratch = self.scratch_of(run.tid);
        let rpid = self.task(run.tid)?.rpid;
        let t = self.tracee(run.tid)?;
        let mut point = tracee::state::capture(t, scratch, Vec::new(), 0)?;
        // A task halted at a stub's copy of a displaced instruction shows the instruction's
        // own address (see `deja_code`); it runs at the copy.
        if let Some(copy) = self.sites.copy_of(rpid, point.regs[RIP]) {
            point.regs[RIP] = copy;
        }
        Ok(Position::Within {
            event,
            tid: run.tid,
            point: Box::new(point),
        })
    }

    /// The task that runs (or is about to run) after the last event.
    pub(crate) fn running_task(&self) -> Option<Tid> {
        self.running.map(|r| r.tid)
    }

    /// The signal task `tid` is to be resumed with (it is stopped to have it delivered), if
    /// any.
    pub(crate) fn signal_to_deliver(&self, tid: Tid) -> Option<i32> {
        self.running
            .filter(|r| r.tid == tid && r.sig != 0)
            .map(|r| r.sig)
    }

    /// How many events the trace holds.
    pub(crate) fn event_count(&self) -> u64 {
        self.reader.meta().event_count
    }

    /// Whether the program's output is echoed.
    pub(crate) fn set_quiet(&mut self, quiet: bool) {
        self.opts.quiet = quiet;
    }

    /// Whether the replay is exactly at `pos` (halted).
    pub(crate) fn is_at(&mut self, pos: &Position) -> Result<bool> {
        match pos {
            Position::Boundary(e) => Ok(self.index == *e && !self.ran),
            Position::Within { event, tid, point } => {
                if self.index != *event || !self.ran || self.running.map(|r| r.tid) != Some(*tid) {
                    return Ok(false);
                }
                let scratch = self.scratch_of(*tid);
                let rpid = self.task(*tid)?.rpid;
                let rip = self.tracee(*tid)?.regs()?.rip;
                let mut want = point.clone();
                if self.sites.original_of(rpid, want.regs[RIP]) == Some(rip) {
                    want.regs[RIP] = rip;
                }
                let t = self.tracee(*tid)?;
                if !point::registers_differ(t, &want)?.is_empty() {
                    return Ok(false);
                }
                Ok(tracee::state::differences(t, &want, &scratch)?.is_empty())
            }
            Position::Ending { event, tid } => Ok(self.index == *event
                && self.held_stop.is_some()
                && self.running.map(|r| r.tid) == Some(*tid)),
            Position::End => Ok(false),
        }
    }

    /// The halt at the debugged process's end, if task `tid` just reached it (`stop`: the
    /// seccomp stop of its `exit_group`, or of the `exit` of its process's last task) and the
    /// replay has not halted there yet: [`Halt::Reached`] if the debugger's mark is there.
    pub(super) fn ending(&mut self, tid: Tid, stop: tracee::Stop) -> Result<Option<Halt>> {
        if stop != tracee::Stop::SeccompEntry || !self.debugged(tid) {
            return Ok(None);
        }
        let index = self.index;
        let Some(d) = self.debug.as_ref() else {
            return Ok(None);
        };
        if d.end_reported || d.halt_after_event.is_some() {
            return Ok(None);
        }
        let nr = self.tracee(tid)?.regs()?.orig_rax as i64;
        let rpid = self.task(tid)?.rpid;
        let last = self.tasks.in_process(rpid).count() == 1;
        if nr != libc::SYS_exit_group && !(nr == libc::SYS_exit && last) {
            return Ok(None);
        }
        let Some(d) = self.debug.as_mut() else {
            return Ok(None);
        };
        d.end_reported = true;
        if d.mark == Some(Position::Ending { event: index, tid }) {
            d.mark = None;
            return Ok(Some(Halt::Reached(tid)));
        }
        Ok(Some(Halt::Ending(tid)))
    }

    /// The memory of a locator task `tid` runs with (its scratch page), which is not the
    /// program's.
    fn scratch_of(&self, tid: Tid) -> Vec<(u64, u64)> {
        self.toward
            .as_ref()
            .filter(|w| w.tid == tid)
            .and_then(|w| w.scratch())
            .into_iter()
            .collect()
    }

    /// Notes that task `tid` is resumed after the current event, and returns what its run
    /// goes toward: the debugger's mark if it lies on this run (the recorded point `toward`,
    /// if any, comes after it), else `toward`.
    pub(super) fn toward_mark(&mut self, tid: Tid, toward: Option<Toward>) -> Option<Toward> {
        let index = self.index;
        let s = self.stretches.entry(tid).or_default();
        s[1] = s[0];
        s[0] = Some(index);
        let Some(d) = self.debug.as_mut() else {
            return toward;
        };
        let on_this_run = matches!(
            &d.mark,
            Some(Position::Within { event, tid: t, .. }) if *event == index && *t == tid
        );
        if !on_this_run {
            return toward;
        }
        let Some(Position::Within { point, .. }) = d.mark.take() else {
            return toward;
        };
        tracing::debug!(tid, event = index, "running to the debugger's mark");
        self.after_mark = toward;
        Some(Toward::new(tid, point, PointEvent::Mark))
    }

    /// The halt at the debugger's mark if it is this boundary (the event replayed, `tid`
    /// about to run).
    pub(super) fn boundary_mark(&mut self, tid: Tid) -> Option<Halt> {
        let (index, ran) = (self.index, self.ran);
        let who = if self.debugged(tid) {
            tid
        } else {
            self.halt_thread()
        };
        let d = self.debug.as_mut()?;
        if ran || !matches!(d.mark, Some(Position::Boundary(e)) if index >= e) {
            return None;
        }
        d.mark = None;
        d.at_mark = true;
        Some(Halt::Reached(who))
    }

    /// Task `tid` reached the debugger's mark: the replay halts there, the task still on its
    /// run (toward its recorded point, if it has one).
    pub(super) fn mark_reached(&mut self, tid: Tid) -> Result<()> {
        self.toward = self.after_mark.take();
        tracing::debug!(tid, event = self.index, "reached the debugger's mark");
        if let Some(d) = self.debug.as_mut() {
            d.at_mark = true;
        }
        self.halt(Halt::Reached(tid));
        Ok(())
    }

    /// After syscall `e`: if it mapped or changed memory in the debugged process, inserts the
    /// debugger's breakpoints that were waiting for their code.
    pub(super) fn insert_pending_breakpoints(&mut self, e: &SyscallEvent) -> Result<()> {
        let maps = [libc::SYS_mmap, libc::SYS_mprotect, libc::SYS_mremap];
        let waiting = self
            .debug
            .as_ref()
            .is_some_and(|d| !d.pending_breakpoints.is_empty());
        if !waiting
            || !maps.contains(&(e.nr as i64))
            || syscalls::is_error(e.result)
            || !self.debugged(e.tid)
        {
            return Ok(());
        }
        self.try_pending_breakpoints()
    }

    /// Inserts the pending breakpoints whose code is there now.
    pub(crate) fn try_pending_breakpoints(&mut self) -> Result<()> {
        let Some(t) = self.process_tracee() else {
            return Ok(());
        };
        let Some(d) = self.debug.as_ref() else {
            return Ok(());
        };
        let mut inserted = Vec::new();
        for &addr in &d.pending_breakpoints {
            let mut orig = [0u8];
            if t.read_mem_partial(addr, &mut orig) == 1 && t.write_mem(addr, &[INT3]).is_ok() {
                inserted.push((addr, orig[0]));
            }
        }
        let Some(d) = self.debug.as_mut() else {
            return Ok(());
        };
        for (addr, orig) in inserted {
            tracing::debug!(addr, "inserted a pending breakpoint");
            d.pending_breakpoints.remove(&addr);
            d.breakpoints.insert(addr, orig);
        }
        Ok(())
    }
}
