//! Signal stops of a running task: faults, the `rdtsc` trap the recorder emulates,
//! signals at an event's boundary, and the ones that land mid-code (see `point`).

use anyhow::Result;
use trace_format::{Event, ExitStatus, RdtscEvent, SignalEvent, SignalOrigin};
use tracee::insn::Trapped;
use tracee::tracee::signo_code;
use tracee::{Regs, Stop};

use crate::signals::{is_fault, is_ours, restart_pending, still_at};

use super::Session;

impl Session {
    /// A signal stop of the running task `tid`.
    pub(super) fn on_signal(&mut self, tid: i32, sig: i32) -> Result<()> {
        let me = self.me;
        let t = self.task(tid)?;
        if std::mem::take(&mut t.entering_handler)
            && sig == libc::SIGTRAP
            && tracee::state::is_step_trap(&t.tracee, Stop::Signal(sig))?
        {
            // The handler of the signal just delivered is about to run its first instruction:
            // still the boundary of that signal's event (a signal pending already, delivered
            // next, stops here before any instruction runs).
            t.boundary = Some(t.tracee.regs()?);
            return t.tracee.cont(0);
        }
        let mut info = match t.tracee.siginfo() {
            Ok(info) => info,
            Err(e) if tracee::gone::vanished_task(&e).is_some() => return Err(e),
            // A group-stop (no siginfo).
            Err(_) => return self.on_group_stop(tid, sig, None),
        };
        let regs = t.tracee.regs()?;
        if sig == libc::SIGCHLD {
            if let Some(synthetic) = self.ptrace_sigchld_info(tid, &info)? {
                info = synthetic;
            }
        }
        let t = self.task(tid)?;
        if let Some(i) = t.resent.iter().position(|(s, _)| *s == sig) {
            // A signal the recorder sent again: it gets back the siginfo it first came with.
            let (_, original) = t.resent.remove(i);
            t.tracee.set_siginfo(&original)?;
            info = original;
            if sig == libc::SIGSTOP {
                // A preemption SIGSTOP sent meanwhile merged with it: none is pending now.
                t.stop_sent = false;
            }
        } else if is_ours(&info, me) {
            return self.on_preemption_stop(tid, regs);
        }
        let (signo, code) = signo_code(&info);
        if sig == libc::SIGSEGV && code == libc::SI_KERNEL && self.emulate_trapped(tid, regs)? {
            return Ok(());
        }
        let t = self.task(tid)?;
        // A stop between a syscall's restart code and the kernel's restart (a second signal
        // after one whose default action was to ignore it) is at the same boundary: no user
        // code ran since the event; so is one right after the kernel restarted the call
        // (`still_at`).
        let at_boundary = t.boundary.take().is_some_and(|b| still_at(&b, &regs))
            || (restart_pending(&regs) && !self.untraced_call_interrupted(&regs));
        if self.ptrace.is_traced(tid) && sig != libc::SIGKILL {
            return self.ptrace_signal(tid, sig, info, &regs, at_boundary);
        }
        self.stop_signal_delivered(tid, sig);
        let origin = if is_fault(signo, code) {
            SignalOrigin::Fault
        } else if at_boundary {
            SignalOrigin::Async
        } else {
            return self.signal_mid_code(tid, sig, info);
        };
        // The kernel discards a signal sent to a pid namespace's init that has no handler for
        // it (`tracee::nsinit`): not delivered, and the replay's process, no namespace's init,
        // must not die of it.
        let delivered =
            origin == SignalOrigin::Fault || !self.task(tid)?.tracee.fault_ignored_as_ns_init(sig);
        self.writer.push(Event::Signal(SignalEvent {
            tid,
            signo: sig,
            siginfo: info.to_vec(),
            origin,
            rip: regs.rip,
            delivered,
            point: None,
        }))?;
        let t = self.task(tid)?;
        if origin == SignalOrigin::Fault && t.tracee.fault_ignored_as_ns_init(sig) {
            // A traced pid namespace init would ignore its fatal fault forever: detached, it
            // faults again and dies of it (see `tracee::nsinit`), which is its end here.
            t.tracee.detach(sig)?;
            let status = ExitStatus::Signaled(sig);
            return self.on_death(tid, status, Stop::Killed(sig));
        }
        if origin == SignalOrigin::Async {
            // Still right after the event if the kernel discards this signal (ignored): a
            // signal stopping the task next, before it runs anything, is at the event too.
            t.boundary = Some(regs);
            if delivered && caught(&t.tracee, sig) {
                // Delivered by a single step, which stops at the handler's first instruction
                // before it runs (see above).
                t.entering_handler = true;
                return t.tracee.step(sig);
            }
        }
        t.tracee.cont(if delivered { sig } else { 0 })
    }

    /// Emulates a trapped `rdtsc`/`rdtscp` at `regs.rip`; false if the fault was something else.
    pub(super) fn emulate_trapped(&mut self, tid: i32, mut regs: Regs) -> Result<bool> {
        let cpu = self.cpu;
        let faults = self.tsc.faults(tid);
        let t = self.task(tid)?;
        let Some((kind, len)) = t.tracee.trapped_insn_at(regs.rip) else {
            return Ok(false);
        };
        let rip = regs.rip;
        let (tsc, aux) = match kind {
            Trapped::Rdtsc => (tracee::tsc::read_tsc().0, None),
            Trapped::Rdtscp => {
                let (tsc, aux) = tracee::tsc::read_tsc();
                // TSC_AUX names the CPU (low 12 bits) the read ran on: the tracee's pinned CPU.
                (tsc, Some((aux & !0xfff) | cpu))
            }
            Trapped::Cpuid => return Ok(false),
        };
        if faults {
            // The program asked for rdtsc to fault: its SIGSEGV is delivered as a fault.
            return Ok(false);
        }

        regs.rax = tsc & 0xffff_ffff;
        regs.rdx = tsc >> 32;
        if let Some(a) = aux {
            regs.rcx = u64::from(a);
        }
        regs.rip += len as u64;
        t.tracee.set_regs(&regs)?;
        let pid = t.pid;
        if let Some(t) = self.tasks.get(&tid) {
            self.segv.restore_after_trap(pid, &t.tracee)?;
            self.segv_blocked.reblock_after_trap(tid, &t.tracee)?;
        }
        self.writer
            .push(Event::Rdtsc(RdtscEvent { tid, rip, tsc, aux }))?;
        self.resume(tid, regs)?;
        Ok(true)
    }
}

/// Whether task `t` has a handler for `sig` (its `SigCgt` in `/proc`).
fn caught(t: &tracee::Tracee, sig: i32) -> bool {
    (1..=64).contains(&sig)
        && t.signal_set("SigCgt")
            .is_ok_and(|m| m & (1u64 << (sig - 1)) != 0)
}
