//! Diversions under gdb: gdb's writes of registers and memory, and the inferior calls it
//! makes with them (`print f(1)`, `call f()`, `print s.c_str()`), go to a live copy of the
//! debugged process at the replay's position ([`Diversion`]), never to the replay.
//!
//! The first write starts a diversion; reads then come from the copy. A resume runs in the
//! copy while gdb is making a call: gdb sets a thread's registers to enter a function with
//! the return address on the stack being a breakpoint of its own (its "dummy frame", at the
//! program's entry point), so a resume with such a return address at the stack pointer and
//! registers changed starts a call, which lasts until the thread stops at that breakpoint with
//! the stack popped. Any other resume ends the diversion, the copy is killed and the replay
//! goes on from where it was, as recorded: after a call gdb has put the registers back, and a
//! `set var` lasts until the program is resumed. A signal in a called function is a stop in
//! the copy (gdb says the call was interrupted); continuing from it goes on in the copy.

use std::collections::{BTreeMap, HashMap};

use gdbstub::common::Signal;
use gdbstub::target::TargetError;
use replayer::{Diversion, Halt};
use trace_format::{ExitStatus, Tid};
use tracee::{Regs, Tracee};

use super::{gdb_signal, ReplayTarget};
use crate::arch::Registers;

/// A diversion under way.
pub(super) struct Diverted {
    div: Diversion,
    /// The thread gdb runs its calls on (the one whose registers it wrote last).
    tid: Tid,
    /// The registers of each thread gdb changed, as they were before (the replay's).
    starts: HashMap<Tid, Regs>,
    /// Each call in progress: the stack pointer and pc it returns to gdb's breakpoint with,
    /// the innermost last.
    calls: Vec<(u64, u64)>,
    /// The signal gdb passes with its coming resume (Linux numbering; 0 for none).
    sig: i32,
    /// The software breakpoints gdb inserted (true) or removed (false) meanwhile, for the
    /// replay to take at the end (gdb's call breakpoint may be on the stack, which the replay
    /// must not get while its stack is in use).
    breakpoints: BTreeMap<u64, bool>,
}

/// Why gdb's write failed, on deja's terminal (gdb only shows an error number).
fn refuse(what: &str, e: anyhow::Error) -> TargetError<anyhow::Error> {
    eprintln!("deja: cannot {what} in a diversion here: {e:#}");
    TargetError::Errno(libc::EPERM as u8)
}

impl ReplayTarget {
    /// The diversion's copy of thread `tid`, if a diversion is under way and copied it.
    pub(super) fn diverted_thread(&self, tid: Tid) -> Option<&Tracee> {
        self.diversion.as_ref()?.div.thread(tid)
    }

    /// The diversion gdb's writes to thread `tid` go to, started here if there is none.
    fn diversion_for(&mut self, tid: Tid) -> Result<&mut Diverted, TargetError<anyhow::Error>> {
        if self.diversion.is_none() {
            let replay = self.timeline.replay();
            let div = replay
                .divert(tid)
                .map_err(|e| refuse("change the program", e))?;
            tracing::debug!(tid, "diversion started");
            self.diversion = Some(Diverted {
                div,
                tid,
                starts: HashMap::new(),
                calls: Vec::new(),
                sig: 0,
                breakpoints: BTreeMap::new(),
            });
        }
        let d = self
            .diversion
            .as_mut()
            .ok_or(TargetError::Errno(libc::EPERM as u8))?;
        if let Some(t) = d.div.thread(tid) {
            if let std::collections::hash_map::Entry::Vacant(e) = d.starts.entry(tid) {
                e.insert(t.regs().map_err(TargetError::Fatal)?);
            }
        }
        Ok(d)
    }

    /// Writes thread `tid`'s registers in the diversion (started if need be).
    pub(super) fn write_diverted_regs(
        &mut self,
        tid: Tid,
        regs: &Registers,
    ) -> Result<(), TargetError<anyhow::Error>> {
        let d = self.diversion_for(tid)?;
        let t = d.div.thread(tid).ok_or_else(|| {
            refuse(
                "write registers",
                anyhow::anyhow!("thread {tid} could not be copied"),
            )
        })?;
        t.set_regs(&regs.gpr).map_err(TargetError::Fatal)?;
        t.set_fp_regs(&regs.fp).map_err(TargetError::Fatal)?;
        d.tid = tid;
        Ok(())
    }

    /// Writes memory in the diversion (started if need be, with thread `tid` its leader).
    pub(super) fn write_diverted_mem(
        &mut self,
        tid: Tid,
        addr: u64,
        data: &[u8],
    ) -> Result<(), TargetError<anyhow::Error>> {
        let d = self.diversion_for(tid)?;
        d.div
            .write_mem(addr, data)
            .map_err(|e| refuse("write memory", e))
    }

    /// Reads memory from the diversion, if one is under way.
    pub(super) fn read_diverted_mem(&self, addr: u64, buf: &mut [u8]) -> Option<usize> {
        Some(self.diversion.as_ref()?.div.read_mem(addr, buf))
    }

    /// Notes the signal gdb passes to the diverted thread with its resume.
    pub(super) fn divert_signal(&mut self, signal: Option<Signal>) {
        if let (Some(d), Some(s)) = (self.diversion.as_mut(), signal) {
            d.sig = linux_signal(s);
        }
    }

    /// Forgets the signal of an earlier resume.
    pub(super) fn clear_divert_signal(&mut self) {
        if let Some(d) = self.diversion.as_mut() {
            d.sig = 0;
        }
    }

    /// Inserts or removes a software breakpoint in the diversion, if one is under way (its
    /// breakpoints are the replay's, and gdb sets its call's own): whether it could.
    pub(super) fn divert_breakpoint(&mut self, addr: u64, insert: bool) -> Option<bool> {
        let d = self.diversion.as_mut()?;
        d.breakpoints.insert(addr, insert);
        Some(if insert {
            d.div.add_breakpoint(addr)
        } else {
            d.div.remove_breakpoint(addr)
        })
    }

    /// The thread to name in a stop that is no thread's doing (gdb's Ctrl-C): the one running
    /// gdb's calls in a diversion, else the replay's.
    pub(crate) fn stop_thread(&self) -> Tid {
        match &self.diversion {
            Some(d) => d.tid,
            None => self.replay_ref().current_thread(),
        }
    }

    /// The siginfo of the last signal thread `tid` stopped with: in the diversion if one is
    /// under way and the thread stopped with a signal there, else the replay's.
    pub(crate) fn siginfo(&self, tid: Tid) -> Option<&[u8]> {
        self.diversion
            .as_ref()
            .and_then(|d| d.div.siginfo(tid))
            .or_else(|| self.replay_ref().siginfo(tid))
    }

    /// Ends the diversion, if any: the copy is killed, the replay is where it was, with the
    /// breakpoints gdb set and removed meanwhile.
    pub(crate) fn end_diversion(&mut self) {
        self.leave_diversion(true);
    }

    /// Ends the diversion; the breakpoints gdb inserted meanwhile go to the replay if
    /// `inserted` (not when the diversion's process ended: gdb counts them gone with it).
    fn leave_diversion(&mut self, inserted: bool) {
        let Some(d) = self.diversion.take() else {
            return;
        };
        tracing::debug!("diversion ended");
        for (addr, insert) in d.breakpoints {
            let done = match insert {
                true if inserted => self.timeline.add_breakpoint(addr),
                true => Ok(true),
                false => self.timeline.remove_breakpoint(addr),
            };
            if let Err(e) = done {
                eprintln!("deja: the breakpoint at {addr:#x} could not follow the replay: {e:#}");
            }
        }
    }

    /// Runs gdb's resume in the diversion if it continues a call there (`None` otherwise:
    /// the diversion, if any, is over and the replay resumes).
    pub(super) fn run_diverted(&mut self) -> Option<anyhow::Result<Halt>> {
        let d = self.diversion.as_mut()?;
        match d.in_call() {
            Ok(true) => {}
            Ok(false) => {
                self.end_diversion();
                return None;
            }
            Err(e) => {
                eprintln!("deja: leaving the diversion: {e:#}");
                self.end_diversion();
                return None;
            }
        }
        let step = self.step.take();
        if std::mem::take(&mut self.reverse) {
            eprintln!(
                "deja: a function gdb called is running in a diversion, which cannot go \
                 backwards (finish the call or `return` from it first)"
            );
            return Some(Ok(Halt::Step(step.unwrap_or(d.tid))));
        }
        let tid = step.filter(|&t| d.div.thread(t).is_some()).unwrap_or(d.tid);
        let sig = std::mem::take(&mut d.sig);
        let timeline = &self.timeline;
        d.div.take_hw_points(timeline.replay());
        let ran = d.div.resume(tid, step.is_some(), sig, &mut || {
            timeline.interrupt_requested()
        });
        let halt = match ran {
            Ok(halt) => halt,
            Err(e) => {
                // As when the copy ends: gdb hears the process is gone; the replay stays.
                eprintln!("deja: the diversion failed: {e:#}");
                Halt::Exited(ExitStatus::Signaled(libc::SIGKILL))
            }
        };
        if let Halt::Exited(_) = halt {
            eprintln!(
                "deja: the diversion's process ended (not the replay's): the replay is where \
                 it was, and `continue` goes on with it"
            );
            self.leave_diversion(false);
        } else if let Some(t) = halt_thread(&halt) {
            d.returned(t);
        }
        Some(Ok(halt))
    }
}

impl Diverted {
    /// Whether gdb's coming resume is part of a call (starting one, or going on with one),
    /// which runs in the diversion.
    fn in_call(&mut self) -> anyhow::Result<bool> {
        if self.div.is_gone() {
            return Ok(false);
        }
        let mut restored = true;
        for (&tid, start) in &self.starts {
            if let Some(t) = self.div.thread(tid) {
                restored &= same_place(&t.regs()?, start);
            }
        }
        if restored {
            // gdb put the registers back: its calls are over (or abandoned).
            self.calls.clear();
            return Ok(false);
        }
        let Some(t) = self.div.thread(self.tid) else {
            return Ok(false);
        };
        let r = t.regs()?;
        let mut word = [0u8; 8];
        if self.div.read_mem(r.rsp, &mut word) == 8 {
            let ret = u64::from_le_bytes(word);
            let back = (r.rsp.wrapping_add(8), ret);
            if self.div.has_breakpoint(ret) && self.calls.last() != Some(&back) {
                tracing::debug!(rip = r.rip, ret, "an inferior call starts in the diversion");
                self.calls.push(back);
            }
        }
        Ok(!self.calls.is_empty())
    }

    /// After a stop of thread `tid`: the innermost call is over if it is back at gdb's
    /// breakpoint with its stack popped.
    fn returned(&mut self, tid: Tid) {
        let Some(r) = self.div.thread(tid).and_then(|t| t.regs().ok()) else {
            return;
        };
        if tid == self.tid && self.calls.last() == Some(&(r.rsp, r.rip)) {
            tracing::debug!(rip = r.rip, "an inferior call returned");
            self.calls.pop();
        }
    }
}

/// Whether `a` and `b` are the same registers, but for `orig_rax` (gdb writes -1 there when
/// it moves the pc, and the thread may have been at a syscall's stop).
fn same_place(a: &Regs, b: &Regs) -> bool {
    let mut a = *a;
    a.orig_rax = b.orig_rax;
    tracee::regs::to_words(&a) == tracee::regs::to_words(b)
}

/// The thread a diversion's stop `halt` names.
fn halt_thread(halt: &Halt) -> Option<Tid> {
    match *halt {
        Halt::Breakpoint(t) | Halt::Step(t) | Halt::Interrupted(t) => Some(t),
        Halt::Signal { tid, .. } => Some(tid),
        _ => None,
    }
}

/// The Linux number of gdb's signal `s` (0 if it has none).
fn linux_signal(s: Signal) -> i32 {
    (1..=64).find(|&n| gdb_signal(n) == s).unwrap_or(0)
}
