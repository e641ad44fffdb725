//! Diversions: a throw-away copy of the debugged process at the replay's current position,
//! which runs live (not replayed) so that a debugger can call the program's functions and
//! change values without changing the replay (see the crate README, "Diversions").
//!
//! The copy is the debugged process forked with every thread it has (`Tracee::
//! fork_process_with`, as for checkpoints) but only the replay's processes are left as they
//! were: the copy's threads stay stopped, except the one the debugger resumes, which runs real
//! code. Its syscalls stop at deja's seccomp filter and are run, answered or refused by
//! `diversion_syscalls`; its `rdtsc`, `rdtscp` and `cpuid` fault as in replay and are answered
//! with this machine's values. Breakpoints are the replay's (the copy's memory holds their
//! `int3`s) plus those the debugger sets meanwhile.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use trace_format::{ExitStatus, Tid};
use tracee::debugregs::{self, DebugRegs};
use tracee::fork::ThreadCopy;
use tracee::regs::syscall_args;
use tracee::{Regs, Stop, Tracee};

use crate::debug::{Halt, HwPoint, INT3};
use crate::debugger::DebugReplay;
use crate::diversion_syscalls::{action, Action};
use crate::patched::PatchedSites;
use crate::session::Session;
use crate::tasks::{RState, Task};

/// Most single steps to leave deja's code after a step that entered it.
const LEAVE_STEPS: usize = 1_000_000;

/// How long the wait for a running diverted thread sleeps between polls, at most.
const POLL_MAX: Duration = Duration::from_millis(5);

/// A live copy of the debugged process (see the module's documentation). Dropping it kills
/// the copy.
pub struct Diversion {
    /// The debugged process (recorded pid).
    process: Tid,
    /// The copy's threads by recorded id, the thread group's leader first.
    threads: Vec<(Tid, Tracee)>,
    /// Software breakpoints in the copy: where the `int3` is → the byte it replaced.
    breakpoints: BTreeMap<u64, u8>,
    /// Breakpoints strictly inside a patched window: the original address → its `int3` on
    /// the stub's copy of the instruction.
    in_windows: BTreeMap<u64, u64>,
    /// The debugged process's patched syscall sites.
    sites: PatchedSites,
    /// The copy is gone (it ended or was killed).
    gone: bool,
    /// A `SIGSTOP` was sent to stop the running thread for the debugger and has not been
    /// seen yet.
    stopping: bool,
    /// The debugger's hardware breakpoints and watchpoints (the replay's), as debug
    /// registers, and the point each register serves.
    hw_regs: DebugRegs,
    hw: [Option<HwPoint>; debugregs::SLOTS],
    /// The `siginfo_t` of the last signal each thread stopped with in the diversion.
    siginfo: std::collections::HashMap<Tid, Vec<u8>>,
}

/// `si_code` of a debug-register trap.
const TRAP_HWBKPT: i32 = 4;

impl Session {
    /// A diversion at the current position, for the debugger's changes to thread `tid` of the
    /// debugged process: every thread of the process a fork can copy is copied (the others
    /// are left out: the debugger then sees the replay's state of them).
    pub(crate) fn divert(&self, tid: Tid) -> Result<Diversion> {
        let d = self
            .debug
            .as_ref()
            .context("a diversion needs a debugged replay")?;
        let process = d.process;
        let tasks: Vec<(Tid, &Task)> = {
            let mut v: Vec<(Tid, &Task)> = self.tasks.in_process(process).collect();
            v.sort_by_key(|(id, _)| *id);
            v
        };
        let wanted = tasks
            .iter()
            .find(|(id, _)| *id == tid)
            .with_context(|| format!("thread {tid} is not a thread of process {process}"))?;
        // The thread that forks the process (a `clone` injected into it) must be in a stop
        // the fork gives back exactly: the one gdb names if it can, else another (the one
        // named is then copied like the other threads, which only reads it).
        let forkable = |(id, t): &(Tid, &Task)| -> Option<&'static str> {
            unforkable(t).or_else(|| {
                self.tasks
                    .stop_waiting(*id)
                    .then_some("a stop of it waits to be collected")
            })
        };
        let lead = match forkable(wanted) {
            None => *wanted,
            Some(why) => *tasks
                .iter()
                .find(|t| forkable(t).is_none())
                .with_context(|| format!("thread {tid} cannot be copied here: {why}"))?,
        };
        if lead.0 != tid && !readable(wanted.1) {
            bail!("thread {tid} cannot be copied here: it is not stopped where it can be read");
        }
        let others: Vec<(Tid, &Task)> = tasks
            .iter()
            .filter(|(id, t)| *id != lead.0 && readable(t))
            .copied()
            .collect();
        let copies: Vec<ThreadCopy<'_>> = others
            .iter()
            .map(|(_, t)| ThreadCopy {
                of: &t.tracee,
                clear_tid_at: t.clear_tid_at,
            })
            .collect();
        let (lead_tid, lead) = lead;
        // A thread stopped for a signal's delivery loses that stop to the fork's injected
        // clone: it is put back in it afterwards (see `stop_for_signal`).
        let pending = match self.signal_to_deliver(lead_tid) {
            Some(sig) => Some((sig, lead.tracee.siginfo()?)),
            None => None,
        };
        let all: Vec<Tid> = std::iter::once(lead_tid)
            .chain(others.iter().map(|o| o.0))
            .collect();
        let forked = match lead.tracee.fork_process_with(None, &copies) {
            Ok(f) => Ok((f, all)),
            Err(e) if lead_tid == tid => {
                tracing::debug!("diversion without the other threads: {e:#}");
                lead.tracee
                    .fork_process_with(None, &[])
                    .map(|f| (f, vec![tid]))
            }
            Err(e) => Err(e),
        };
        if let Some((sig, info)) = pending {
            stop_for_signal(&lead.tracee, lead.pid, sig, &info)
                .context("putting the replayed thread back at its signal")?;
        }
        let (forked, ids): (Vec<Tracee>, Vec<Tid>) = forked?;
        let fast_path = lead.slot.is_some();
        let threads: Vec<(Tid, Tracee)> = ids.into_iter().zip(forked).collect();
        let div = Diversion {
            process,
            threads,
            breakpoints: d.breakpoints.clone(),
            in_windows: d.in_windows.clone(),
            sites: self.sites.clone(),
            gone: false,
            stopping: false,
            hw_regs: d.regs,
            hw: d.hw,
            siginfo: Default::default(),
        };
        private_copies(div.leader())
            .context("giving the diversion its own copy of shared memory")?;
        // Every call takes the library's traced path, so that it stops here.
        if fast_path {
            tracee::fastpath::turn_off(div.leader())?;
        }
        // A breakpoint the replay lifted to step over it is back in the copy.
        if let Some(addr) = d.lifted {
            div.leader().write_mem(addr, &[INT3])?;
        }
        Ok(div)
    }
}

/// Replaces each writable shared mapping of the copy whose leader is `t` (memory the copy
/// shares with the replayed process and its relatives: an emulated file mapped shared,
/// `MAP_SHARED | MAP_ANONYMOUS` memory) with private anonymous memory holding the same bytes,
/// so that nothing the diversion writes reaches the replay.
fn private_copies(t: &Tracee) -> Result<()> {
    let maps = tracee::maps::read(t.pid())?;
    let shared: Vec<_> = maps
        .iter()
        .filter(|m| m.perms.contains('w') && m.perms.ends_with('s'))
        .collect();
    if shared.is_empty() {
        return Ok(());
    }
    let saved = t.regs()?;
    for m in shared {
        let len = m.end - m.start;
        let bytes = t.read_vec(m.start, len as usize)?;
        let prot = [
            ('r', libc::PROT_READ),
            ('w', libc::PROT_WRITE),
            ('x', libc::PROT_EXEC),
        ]
        .iter()
        .filter(|(c, _)| m.perms.contains(*c))
        .fold(0, |p, (_, bit)| p | bit);
        let flags = libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS;
        let at = t.inject_syscall(
            libc::SYS_mmap,
            [m.start, len, prot as u64, flags as u64, u64::MAX, 0],
        )?;
        if at as u64 != m.start {
            bail!("mapping private memory at {:#x} failed ({at})", m.start);
        }
        t.write_mem(m.start, &bytes)?;
        tracing::debug!(
            start = m.start,
            len,
            "a shared mapping made private in a diversion"
        );
    }
    t.set_regs(&saved)
}

/// Puts stopped task `t` (of replay process `pid`) back in the signal-delivery-stop of signal
/// `sig` with siginfo `info`: the signal is sent again and the task continued to its
/// delivery, where the recorded siginfo is set again.
fn stop_for_signal(t: &Tracee, pid: nix::unistd::Pid, sig: i32, info: &[u8]) -> Result<()> {
    t.tgkill(pid, sig)?;
    t.cont(0)?;
    match t.wait()? {
        Stop::Signal(s) if s == sig => t.set_siginfo(info),
        other => bail!(
            "task {} stopped with {other:?} instead of signal {sig}",
            t.pid()
        ),
    }
}

/// Whether task `t` can be copied as a thread of a diversion's copy (which only reads it):
/// it is in a ptrace-stop of its own process.
fn readable(t: &Task) -> bool {
    matches!(
        t.state,
        RState::Parked(_) | RState::Resumed | RState::AtPoint
    ) && t.borrows_vm_of.is_none()
        && t.clone_entry.is_none()
}

/// Why the fork of a diversion cannot copy task `t` as it is, if it cannot: its next move in
/// the replay depends on a stop a copy would not be in (a signal to deliver, a group-stop, an
/// injected syscall, a clone under way), or it has no memory of its own.
fn unforkable(t: &Task) -> Option<&'static str> {
    if !matches!(
        t.state,
        RState::Parked(Stop::SeccompEntry) | RState::Resumed | RState::AtPoint
    ) {
        return Some("it is at a signal or an event a fork cannot reproduce");
    }
    if t.injected.is_some() || t.signal_sent {
        return Some("a signal is on its way to it");
    }
    if t.group_stopped {
        return Some("it is stopped by job control");
    }
    if t.borrows_vm_of.is_some() {
        return Some("it runs in its parent's memory (a vfork)");
    }
    if t.clone_entry.is_some() {
        return Some("it is making a clone");
    }
    None
}

impl Diversion {
    fn leader(&self) -> &Tracee {
        &self.threads[0].1
    }

    /// The copy of thread `tid`, if the diversion has one.
    pub fn thread(&self, tid: Tid) -> Option<&Tracee> {
        if self.gone {
            return None;
        }
        self.threads
            .iter()
            .find(|(id, _)| *id == tid)
            .map(|(_, t)| t)
    }

    /// Whether the copy has ended.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Reads the copy's memory as the program sees it (breakpoints and patches hidden);
    /// returns how many bytes were readable.
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> usize {
        if self.gone {
            return 0;
        }
        let n = self.leader().read_mem_partial(addr, buf);
        let end = addr.saturating_add(n as u64);
        for (&at, &orig) in self.breakpoints.range(addr..end) {
            buf[(at - addr) as usize] = orig;
        }
        self.sites.show_original(self.process, addr, &mut buf[..n]);
        n
    }

    /// Writes `data` into the copy's memory at `addr` (a breakpoint there stays, the byte
    /// under it becomes the new one). Code of a patched syscall site cannot be written.
    pub fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        if self.gone {
            bail!("the diversion's process has ended");
        }
        let end = addr.saturating_add(data.len() as u64);
        if (addr..end).any(|a| self.sites.window_at(self.process, a).is_some()) {
            bail!("{addr:#x} holds a syscall site deja patched, which a diversion cannot change");
        }
        let mut bytes = data.to_vec();
        for (&at, orig) in self.breakpoints.range_mut(addr..end) {
            let i = (at - addr) as usize;
            *orig = bytes[i];
            bytes[i] = INT3;
        }
        self.leader()
            .write_mem(addr, &bytes)
            .with_context(|| format!("writing {} bytes at {addr:#x}", data.len()))
    }

    /// Inserts a software breakpoint at `addr` (on the stub's copy of the instruction,
    /// strictly inside a patched window); false if it cannot be.
    pub fn add_breakpoint(&mut self, addr: u64) -> bool {
        if self.gone {
            return false;
        }
        let at = match self.sites.window_at(self.process, addr) {
            Some(site) if site.window != addr => {
                let Some(copy) = self.sites.copy_of(self.process, addr) else {
                    return false;
                };
                self.in_windows.insert(addr, copy);
                copy
            }
            _ => addr,
        };
        if self.breakpoints.contains_key(&at) {
            return true;
        }
        let mut orig = [0u8];
        let t = self.leader();
        if t.read_mem_partial(at, &mut orig) != 1 || t.write_mem(at, &[INT3]).is_err() {
            return false;
        }
        self.breakpoints.insert(at, orig[0]);
        true
    }

    /// Removes the software breakpoint at `addr`; false if there was none.
    pub fn remove_breakpoint(&mut self, addr: u64) -> bool {
        let at = self.in_windows.remove(&addr).unwrap_or(addr);
        let Some(orig) = self.breakpoints.remove(&at) else {
            return false;
        };
        if !self.gone {
            // (A copy that cannot be written to is about to be thrown away.)
            self.leader().write_mem(at, &[orig]).ok();
        }
        true
    }

    /// Takes the hardware breakpoints and watchpoints the debugger has now set in `replay`
    /// (it sets them there; they fire in the diversion too).
    pub fn take_hw_points(&mut self, replay: &DebugReplay) {
        let d = replay.debug();
        self.hw_regs = d.regs;
        self.hw = d.hw;
    }

    /// The hardware point whose trap thread `t` just took, if it took one (its status is
    /// cleared).
    fn hw_hit(&self, t: &Tracee) -> Result<Option<HwPoint>> {
        let dr6 = t.debug_reg(6)?;
        if debugregs::hit_slots(dr6).next().is_none() {
            return Ok(None);
        }
        t.set_debug_reg(6, 0)?;
        Ok(debugregs::hit_slots(dr6).find_map(|i| self.hw[i]))
    }

    /// The `siginfo_t` of the last signal thread `tid` stopped with in the diversion, if any.
    pub fn siginfo(&self, tid: Tid) -> Option<&[u8]> {
        self.siginfo.get(&tid).map(Vec::as_slice)
    }

    /// Whether a software breakpoint is set at `addr` (as the debugger names it).
    pub fn has_breakpoint(&self, addr: u64) -> bool {
        self.in_windows.contains_key(&addr) || self.breakpoints.contains_key(&addr)
    }

    /// Runs thread `tid` of the copy live, one instruction if `step`, else until something
    /// stops it, first delivering `sig` (the signal it stopped with, passed on by the
    /// debugger; 0 for none). `interrupt` tells whether the debugger asks for a stop. The
    /// other threads stay stopped.
    pub fn resume(
        &mut self,
        tid: Tid,
        step: bool,
        sig: i32,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<Halt> {
        if self.gone {
            bail!("the diversion's process has ended");
        }
        let i = self
            .threads
            .iter()
            .position(|(id, _)| *id == tid)
            .with_context(|| format!("thread {tid} is not in the diversion"))?;
        let mut sig = sig;
        let t = &self.threads[i].1;
        t.set_debug_reg(6, 0)?;
        t.set_debug_regs(&self.hw_regs)?;
        // At an instruction displaced from a patched window: it runs from the stub's copy.
        let mut r = self.threads[i].1.regs()?;
        if let Some(copy) = self.sites.copy_of(self.process, r.rip) {
            r.rip = copy;
            self.threads[i].1.set_regs(&r)?;
        }
        if self.threads[i].1.at_syscall_entry()? && r.orig_rax != u64::MAX {
            // The thread was copied inside the syscall it was making in the replay: gdb has
            // set it to run something else, and that syscall (with the arguments gdb's call
            // put in its registers) is not made.
            r.orig_rax = u64::MAX;
            self.threads[i].1.set_regs(&r)?;
        }
        if let Some(&orig) = self.breakpoints.get(&r.rip) {
            // Over the breakpoint at the pc first: its byte back for one step.
            let t = &self.threads[i].1;
            t.write_mem(r.rip, &[orig])?;
            let stepped = self.run(i, true, sig, interrupt);
            if !self.gone {
                self.threads[i].1.write_mem(r.rip, &[INT3])?;
            }
            sig = 0;
            match stepped? {
                Halt::Step(_) if !step => {}
                other => return self.shown(i, other),
            }
        }
        let halt = self.run(i, step, sig, interrupt)?;
        self.shown(i, halt)
    }

    /// `halt` as the debugger sees it: a thread at a stub's copy of an instruction is shown
    /// at the instruction's original address; one stepped into deja's code is stepped out.
    fn shown(&mut self, i: usize, halt: Halt) -> Result<Halt> {
        if self.gone {
            return Ok(halt);
        }
        let mut r = self.threads[i].1.regs()?;
        if let Halt::Step(_) = halt {
            let mut steps = 0;
            while self.sites.in_deja_code(self.process, r.rip)
                && self.sites.original_of(self.process, r.rip).is_none()
            {
                steps += 1;
                if steps > LEAVE_STEPS {
                    bail!("the diverted thread did not leave deja's code");
                }
                let t = &self.threads[i].1;
                match tracee::state::step_one(t)? {
                    None => {}
                    Some(Stop::SeccompEntry) => {
                        if let Some(end) = self.syscall(i)? {
                            return Ok(end);
                        }
                    }
                    Some(stop) if tracee::state::is_step_trap(t, stop)? => {}
                    Some(stop) => bail!("the diverted thread stopped with {stop:?} in deja's code"),
                }
                r = self.threads[i].1.regs()?;
            }
        }
        if let Some(orig) = self.sites.original_of(self.process, r.rip) {
            r.rip = orig;
            self.threads[i].1.set_regs(&r)?;
        }
        Ok(halt)
    }

    /// Runs thread `i` until a stop the debugger is to see.
    fn run(
        &mut self,
        i: usize,
        step: bool,
        sig: i32,
        interrupt: &mut dyn FnMut() -> bool,
    ) -> Result<Halt> {
        let tid = self.threads[i].0;
        let mut sig = sig;
        let mut interrupted = false;
        loop {
            let t = &self.threads[i].1;
            let stop = if step {
                if sig != 0 {
                    // (The signal may end the process: its other threads are reaped while
                    // waiting.)
                    t.step(sig)?;
                    self.wait(i, interrupt, &mut interrupted)?
                } else {
                    match tracee::state::step_one(t)? {
                        Some(stop) => stop,
                        // (A `popf` emulated: the step is made.)
                        None => return Ok(Halt::Step(tid)),
                    }
                }
            } else {
                t.cont(sig)?;
                self.wait(i, interrupt, &mut interrupted)?
            };
            sig = 0;
            let t = &self.threads[i].1;
            match stop {
                Stop::SeccompEntry => {
                    if let Some(end) = self.syscall(i)? {
                        return Ok(end);
                    }
                }
                Stop::Signal(libc::SIGTRAP) => {
                    let (_, code) = tracee::tracee::signo_code(&t.siginfo()?);
                    if code == TRAP_HWBKPT || step {
                        if let Some(point) = self.hw_hit(t)? {
                            return Ok(point.halt(tid));
                        }
                    }
                    if step {
                        return Ok(Halt::Step(tid));
                    }
                    let mut r = t.regs()?;
                    let at = r.rip.wrapping_sub(1);
                    if code == libc::SI_KERNEL && self.breakpoints.contains_key(&at) {
                        r.rip = self
                            .in_windows
                            .iter()
                            .find(|(_, &c)| c == at)
                            .map_or(at, |(&o, _)| o);
                        t.set_regs(&r)?;
                        return Ok(Halt::Breakpoint(tid));
                    }
                    return Ok(Halt::Signal {
                        tid,
                        signo: libc::SIGTRAP,
                    });
                }
                Stop::Signal(libc::SIGSEGV) if self.emulate_trapped(i)? => {
                    if step {
                        return Ok(Halt::Step(tid));
                    }
                }
                // A breakpoint in memory that cannot be executed (gdb's dummy frame on the
                // stack, where its calls return): reached all the same.
                Stop::Signal(libc::SIGSEGV) if self.breakpoints.contains_key(&t.regs()?.rip) => {
                    return Ok(Halt::Breakpoint(tid));
                }
                Stop::Signal(libc::SIGSTOP) if self.stopping => {
                    self.stopping = false;
                    if interrupted {
                        return Ok(Halt::Interrupted(tid));
                    }
                    // (Sent for an earlier run, which stopped for another reason first.)
                }
                Stop::Signal(signo) => {
                    self.siginfo.insert(tid, t.siginfo()?.to_vec());
                    return Ok(Halt::Signal { tid, signo });
                }
                Stop::Exited(code) => return Ok(self.ended(ExitStatus::Exited(code))),
                Stop::Killed(signo) => return Ok(self.ended(ExitStatus::Signaled(signo))),
                // (Events and syscall stops: nothing the copy's program asked for.)
                Stop::Event(_) | Stop::SyscallStop | Stop::Exec => {}
            }
        }
    }

    /// Waits for thread `i` to stop, reaping the copy's other threads if they end (a fatal
    /// signal ends them all, and the leader's end is reported last), and stopping the thread
    /// when the debugger asks.
    fn wait(
        &mut self,
        i: usize,
        interrupt: &mut dyn FnMut() -> bool,
        interrupted: &mut bool,
    ) -> Result<Stop> {
        let mut pause = Duration::from_micros(20);
        loop {
            let t = &self.threads[i].1;
            if let Some(stop) = tracee::stop::poll(t.pid())? {
                return Ok(stop);
            }
            for (j, (_, other)) in self.threads.iter().enumerate() {
                if j != i {
                    // (An end is all a stopped thread can report.)
                    let _ = tracee::stop::poll(other.pid());
                }
            }
            if !*interrupted && interrupt() {
                *interrupted = true;
                self.stopping = true;
                t.tgkill(self.leader().pid(), libc::SIGSTOP)?;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// The copy ended with `status`: its remains are reaped.
    fn ended(&mut self, status: ExitStatus) -> Halt {
        self.kill();
        Halt::Exited(status)
    }

    /// Answers an `rdtsc`, `rdtscp` or `cpuid` that faulted in thread `i` (deja makes them
    /// fault) with this machine's values; false if the fault is not one of them.
    fn emulate_trapped(&self, i: usize) -> Result<bool> {
        let t = &self.threads[i].1;
        let mut r = t.regs()?;
        let Some((insn, len)) = t.trapped_insn_at(r.rip) else {
            return Ok(false);
        };
        match insn {
            tracee::insn::Trapped::Rdtsc | tracee::insn::Trapped::Rdtscp => {
                let (tsc, aux) = tracee::tsc::read_tsc();
                r.rax = tsc & 0xffff_ffff;
                r.rdx = tsc >> 32;
                if insn == tracee::insn::Trapped::Rdtscp {
                    r.rcx = aux as u64;
                }
            }
            tracee::insn::Trapped::Cpuid => {
                let [a, b, c, d] = tracee::cpuid::query(r.rax as u32, r.rcx as u32);
                (r.rax, r.rbx, r.rcx, r.rdx) = (a as u64, b as u64, c as u64, d as u64);
            }
        }
        r.rip += len as u64;
        t.set_regs(&r)?;
        Ok(true)
    }

    /// Handles the syscall thread `i` is at the seccomp stop of (see `diversion_syscalls`);
    /// the halt if it ends the diverted process.
    fn syscall(&mut self, i: usize) -> Result<Option<Halt>> {
        let (tid, t) = (self.threads[i].0, &self.threads[i].1);
        let mut r = t.regs()?;
        let args = syscall_args(&r);
        let what = action(r.orig_rax, &args, self.process, tid);
        tracing::debug!(nr = r.orig_rax, ?what, "a syscall in a diversion");
        let result = match what {
            Action::Run => return Ok(None),
            Action::Return(v) => v,
            Action::Echo { stream, iov } => echo(t, stream, iov, &args),
            Action::SelfSignal(sig) => {
                if sig != 0 {
                    t.tgkill(self.leader().pid(), sig)?;
                }
                0
            }
            Action::End(code) => return Ok(Some(self.ended(ExitStatus::Exited(code)))),
        };
        skip_with(t, &mut r, result)?;
        Ok(None)
    }

    /// Kills the copy and reaps its threads.
    pub fn kill(&mut self) {
        if std::mem::replace(&mut self.gone, true) {
            return;
        }
        if let Some((_, leader)) = self.threads.first() {
            let _ = nix::sys::signal::kill(leader.pid(), nix::sys::signal::Signal::SIGKILL);
        }
        // The leader's end is reported after the other threads' are reaped.
        for (_, t) in self.threads.iter().rev() {
            t.kill_and_reap();
        }
    }
}

impl Drop for Diversion {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Skips the syscall task `t` is at the seccomp stop of (registers `r`), giving it `result`.
fn skip_with(t: &Tracee, r: &mut Regs, result: i64) -> Result<()> {
    r.orig_rax = u64::MAX;
    r.rax = result as u64;
    t.set_regs(r)
}

/// Shows what the diverted thread `t` writes to `stream` (1 or 2) on deja's own; the count of
/// bytes, or `-EFAULT`.
fn echo(t: &Tracee, stream: i32, iov: bool, args: &[u64; 6]) -> i64 {
    let mut bytes = Vec::new();
    let pieces: Vec<(u64, u64)> = if iov {
        let count = args[2].min(1024) as usize;
        let mut raw = vec![0u8; count * 16];
        if t.read_mem_partial(args[1], &mut raw) != raw.len() {
            return -(libc::EFAULT as i64);
        }
        raw.chunks(16)
            .map(|c| {
                let w = |o: usize| u64::from_le_bytes(c[o..o + 8].try_into().unwrap_or([0; 8]));
                (w(0), w(8))
            })
            .collect()
    } else {
        vec![(args[1], args[2])]
    };
    for (base, len) in pieces {
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        let n = t.read_mem_partial(base, &mut buf);
        bytes.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            if bytes.is_empty() {
                return -(libc::EFAULT as i64);
            }
            break;
        }
    }
    let written = if stream == 2 {
        let mut e = std::io::stderr().lock();
        e.write_all(&bytes).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&bytes).and_then(|()| o.flush())
    };
    match written {
        Ok(()) => bytes.len() as i64,
        Err(_) => -(libc::EIO as i64),
    }
}
