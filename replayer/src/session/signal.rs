//! Signals and trapped instructions: delivering a recorded signal at its boundary, a trapped
//! `rdtsc`, and making the last trap of a task the recorded one.

use anyhow::{bail, Context, Result};
use trace_format::{RdtscEvent, SignalEvent, SignalOrigin, Tid};
use tracee::insn::Trapped;
use tracee::Stop;

use crate::tasks::{self, LastTrap};

use super::{Session, MAX_STRAY_SIGNALS};

impl Session {
    pub(super) fn signal(&mut self, e: &SignalEvent) -> Result<()> {
        if e.point.is_some() {
            return self.signal_at_point(e);
        }
        let tid = e.tid;
        let stop = self.parked(tid)?;
        if stop != Stop::Signal(e.signo) {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(
                tid,
                format!("signal {} at rip {:#x}", e.signo, e.rip),
                found,
            ));
        }
        let t = self.tracee(tid)?;
        let rip = t.regs()?.rip;
        if rip != e.rip {
            return Err(self.diverged(
                tid,
                format!("signal {} at rip {:#x}", e.signo, e.rip),
                format!("signal {} at rip {rip:#x}", e.signo),
            ));
        }
        let temporary_mask = std::mem::take(&mut self.task(tid)?.temporary_mask);
        self.note_siginfo(e);
        match e.origin {
            SignalOrigin::Fault => {
                // The fault trapped in the replay too.
                let t = self.task(tid)?;
                t.last_trap = LastTrap::Fault;
                t.debugger_trapped = false;
            }
            SignalOrigin::Async => {
                if e.delivered && self.task(tid)?.debugger_trapped {
                    let expected = format!("signal {} at rip {:#x}", e.signo, e.rip);
                    self.restore_last_trap(tid, temporary_mask, &expected)?;
                }
                self.tracee(tid)?.set_siginfo(&e.siginfo)?;
            }
        }
        self.resume(tid, if e.delivered { e.signo } else { 0 })
    }

    /// Keeps the recorded `siginfo` of signal `e` as its task's last, for the debugger.
    pub(super) fn note_siginfo(&mut self, e: &SignalEvent) {
        if let Some(d) = self.debug.as_mut().filter(|_| e.delivered) {
            d.siginfo.insert(e.tid, e.siginfo.clone());
        }
    }

    pub(super) fn rdtsc(&mut self, e: &RdtscEvent) -> Result<()> {
        let tid = e.tid;
        let stop = self.parked(tid)?;
        let t = &self.tasks.by_tid(tid).context(tasks::unknown(tid))?.tracee;
        let mut r = t.regs()?;
        let mut code = [0u8; 16];
        let n = t.read_mem_partial(r.rip, &mut code);
        if let Some(d) = self.debug.as_ref() {
            d.hide_breakpoints(r.rip, &mut code[..n]);
        }
        let decoded = tracee::insn::decode_trapped(&code[..n], r.rip);
        let expected = if e.aux.is_some() {
            Trapped::Rdtscp
        } else {
            Trapped::Rdtsc
        };
        let Some((kind, len)) = decoded.filter(|_| stop == Stop::Signal(libc::SIGSEGV)) else {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(tid, format!("rdtsc at rip {:#x}", e.rip), found));
        };
        if kind != expected || r.rip != e.rip {
            return Err(self.diverged(
                tid,
                format!("{expected:?} at rip {:#x}", e.rip),
                format!("{kind:?} at rip {:#x}", r.rip),
            ));
        }
        r.rax = e.tsc & 0xffff_ffff;
        r.rdx = e.tsc >> 32;
        if let Some(aux) = e.aux {
            r.rcx = u64::from(aux);
        }
        r.rip += len as u64;
        t.set_regs(&r)?;
        let rpid = self.task(tid)?.rpid;
        let t = &self.tasks.by_tid(tid).context(tasks::unknown(tid))?.tracee;
        self.segv.restore_after_trap(rpid, t)?;
        self.segv_blocked.reblock_after_trap(tid, t)?;
        let t = self.task(tid)?;
        t.last_trap = LastTrap::Tsc;
        t.debugger_trapped = false;
        self.resume(tid, 0)
    }

    /// Makes a debug exception the last trap of task `tid`, stopped at a point, without it
    /// executing anything (`tracee::state::settle_trap`): it is then in that trap's `SIGTRAP`
    /// stop, from which a signal is delivered as the recorder delivered it. Signals pending
    /// meanwhile are not the recording's: dropped (the debugger's interrupt is sent again).
    pub(super) fn settle_trap(&mut self, tid: Tid, expected: &str) -> Result<()> {
        let mut interrupt = false;
        let mut strays = 0;
        loop {
            let stop = tracee::state::settle_trap(self.tracee(tid)?)
                .with_context(|| format!("preparing task {tid} for its signal"))?;
            match stop {
                None => break,
                Some(Stop::Signal(sig)) if strays < MAX_STRAY_SIGNALS => {
                    tracing::debug!(tid, sig, "dropping a signal the recording did not have");
                    interrupt |= sig == libc::SIGSTOP
                        && self
                            .debug
                            .as_ref()
                            .is_some_and(|d| d.interrupt_sent == Some(tid));
                    strays += 1;
                }
                Some(stop) => {
                    let found = self.describe_stop(tid, stop);
                    return Err(self.diverged(tid, expected.to_string(), found));
                }
            }
        }
        let t = self.task(tid)?;
        t.last_trap = LastTrap::Debug;
        t.debugger_trapped = false;
        if interrupt {
            t.tracee.tgkill(t.pid, libc::SIGSTOP)?;
        }
        Ok(())
    }

    /// Task `tid` is stopped to be delivered an asynchronous signal after the debugger's traps
    /// took the place of its last trap in the recording (breakpoints, single steps): it takes
    /// that trap again (without executing anything), so that the signal's frame is the
    /// recorded one. A syscall restart pending at the signal stays pending. Returns with the
    /// task in that trap's stop, from which the signal is delivered as from its own.
    pub(super) fn restore_last_trap(
        &mut self,
        tid: Tid,
        temporary_mask: bool,
        expected: &str,
    ) -> Result<()> {
        let t = self.task(tid)?;
        let kind = t.last_trap;
        if kind == LastTrap::Fault || temporary_mask {
            // A fault cannot be taken again here; nor can the task be resumed while the
            // temporary mask of its syscall is in force (the kernel would restore the old mask
            // on the way back to user code).
            tracing::warn!(
                tid,
                "the debugger's traps show in the frame of the signal delivered now (the \
                 recording's last trap cannot be taken again here)"
            );
            return Ok(());
        }
        let saved = t.tracee.regs()?;
        let mut r = saved;
        // Not "in a syscall" while the trap is taken, so no restart happens on the way.
        r.orig_rax = u64::MAX;
        t.tracee.set_regs(&r)?;
        match kind {
            LastTrap::Debug => self.settle_trap(tid, expected)?,
            _ => self.tsc_trap(tid, expected)?,
        }
        let t = self.task(tid)?;
        t.tracee.set_regs(&saved)?;
        t.last_trap = kind;
        t.debugger_trapped = false;
        Ok(())
    }

    /// Makes task `tid` take a general-protection fault with error code 0, as a trapped
    /// `rdtsc` does, without executing anything: an `rdtsc` written at its `rip` for the time of
    /// the fault. Signals pending meanwhile are not the recording's: dropped.
    pub(super) fn tsc_trap(&mut self, tid: Tid, expected: &str) -> Result<()> {
        const RDTSC: [u8; 2] = [0x0f, 0x31];
        let rip = self.tracee(tid)?.regs()?.rip;
        let mut original = [0u8; 2];
        self.tracee(tid)?
            .read_mem(rip, &mut original)
            .context("reading the code where a trap is to be taken")?;
        for _ in 0..MAX_STRAY_SIGNALS {
            let t = self.tracee(tid)?;
            t.write_mem(rip, &RDTSC)?;
            let resumed = t.cont(0);
            let stop = resumed.and_then(|()| self.wait_task(tid));
            if let Some(t) = self.tasks.by_tid(tid).map(|t| &t.tracee) {
                if t.regs().is_ok() {
                    t.write_mem(rip, &original)
                        .context("restoring the code where a trap was taken")?;
                }
            }
            match stop? {
                Stop::Signal(libc::SIGSEGV) if self.tracee(tid)?.regs()?.rip == rip => {
                    return Ok(())
                }
                Stop::Signal(sig) => {
                    tracing::debug!(tid, sig, "dropping a signal the recording did not have")
                }
                stop => {
                    let found = self.describe_stop(tid, stop);
                    return Err(self.diverged(tid, expected.to_string(), found));
                }
            }
        }
        bail!("signals keep stopping task {tid} before it can take a trap")
    }

    /// Runs `f`, which injects syscalls into task `tid`, with the signals that stop the task
    /// before them set aside (`Tracee::set_signals_aside`), then drops those: no real signal
    /// of a replay is the recording's (a recorded one is delivered by the replay, at its
    /// place), but a `SIGSTOP` (the debugger's interrupt, the time limit's) and a signal the
    /// replay sent the task itself are sent again.
    pub(super) fn with_signals_aside<T>(
        &mut self,
        tid: Tid,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.tracee(tid)?.set_signals_aside();
        let result = f(self);
        let aside = match self.tasks.by_tid(tid) {
            Some(t) => t.tracee.signals_set_aside(),
            None => Vec::new(),
        };
        for (sig, _) in aside {
            let t = self.task(tid)?;
            if sig == libc::SIGSTOP || t.injected == Some(sig) {
                t.tracee.tgkill(t.pid, sig)?;
            } else {
                tracing::debug!(
                    tid,
                    sig,
                    "dropping a signal that came before an injected syscall"
                );
            }
        }
        result
    }
}
