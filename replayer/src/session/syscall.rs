//! Replaying a syscall event: checking the task's entry against the recording, emulating
//! the call with its recorded result and memory writes, or running it for real.

use std::rc::Rc;

use anyhow::{bail, Context, Result};
use syscalls::Replay;
use trace_format::{Event, MemWrite, SignalOrigin, SyscallEvent, Tid};
use tracee::forced_segv::KERNEL_SIGACTION;
use tracee::{regs, Stop};

use crate::tasks::{self, RState};
use crate::{echo, mmap, seccomp, sigmask};

use super::{errno_text, is_restart_code, Session, TRAP_FLAG};

impl Session {
    pub(super) fn describe_stop(&mut self, tid: Tid, stop: Stop) -> String {
        let regs = self.tracee(tid).and_then(|t| t.regs()).ok();
        let rip = regs.map(|r| r.rip).unwrap_or(0);
        match stop {
            Stop::SeccompEntry => {
                let nr = regs.map(|r| r.orig_rax).unwrap_or(u64::MAX);
                format!("syscall {} at rip {rip:#x}", syscalls::name(nr))
            }
            Stop::Signal(s) => format!("signal {s} at rip {rip:#x}"),
            Stop::Exited(c) => format!("the task exiting with status {c}"),
            Stop::Killed(s) => format!("the task killed by signal {s}"),
            other => format!("{other:?} at rip {rip:#x}"),
        }
    }

    /// The registers of `tid` at a syscall entry. A task the debugger single-stepped into
    /// the `syscall` instruction has the trap flag in r11 (the instruction saves rflags
    /// there): it is taken out, so the program sees, and the check compares, the recorded
    /// value.
    pub(super) fn entry_regs(&mut self, tid: Tid) -> Result<tracee::Regs> {
        let t = self.task(tid)?;
        let mut r = t.tracee.regs()?;
        if std::mem::take(&mut t.single_stepped) && r.r11 & TRAP_FLAG != 0 {
            r.r11 &= !TRAP_FLAG;
            t.tracee.set_regs(&r)?;
        }
        Ok(r)
    }

    /// Checks that `tid`, stopped at a syscall entry with registers `r`, makes the recorded
    /// call.
    pub(super) fn check_entry(&self, tid: Tid, r: &tracee::Regs, e: &SyscallEvent) -> Result<()> {
        let name = syscalls::name(e.nr);
        let args = regs::syscall_args(r);
        if r.orig_rax != e.nr || args != e.args || r.rip != e.rip {
            let show = |nr: u64, a: &[u64; 6], rip: u64| {
                let args: Vec<String> = a.iter().map(|x| format!("{x:#x}")).collect();
                format!(
                    "{}({}) at rip {rip:#x}",
                    syscalls::name(nr),
                    args.join(", ")
                )
            };
            return Err(self.diverged(
                tid,
                show(e.nr, &e.args, e.rip),
                show(r.orig_rax, &args, r.rip),
            ));
        }
        if regs::digest(r) != e.regs_digest {
            return Err(self.diverged_with(
                tid,
                format!("{name} with the recorded registers"),
                format!("{name} with different registers (rip {:#x})", r.rip),
                vec!["the general registers at syscall entry differ from the recording".into()],
            ));
        }
        Ok(())
    }

    pub(super) fn syscall(&mut self, e: &SyscallEvent) -> Result<()> {
        let tid = e.tid;
        if self.task(tid)?.state == RState::InSyscall {
            return self.finish_clone(e);
        }
        let name = syscalls::name(e.nr);
        let stop = self.parked(tid)?;
        if stop != Stop::SeccompEntry {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(tid, format!("syscall {name} at rip {:#x}", e.rip), found));
        }
        let mut r = self.entry_regs(tid)?;
        self.check_entry(tid, &r, e)?;
        if e.nr == libc::SYS_ptrace as u64 && e.result == 0 {
            self.ptrace_turns_fast_path_off(tid, &e.args)?;
        }
        if tracee::fastpath::seccomp_turns_off(e.nr, &e.args) && self.task(tid)?.slot.is_some() {
            tracee::fastpath::turn_off(self.tracee(tid)?)?;
        }
        let replay = syscalls::replay_of(e.nr, &e.args).unwrap_or(Replay::Deny(libc::ENOSYS));
        match replay {
            Replay::Execute => {
                self.run_for_real(tid, &name)?;
                seccomp::hide_own_filter(self.tracee(tid)?, e.nr, e.args[0])?;
                let t = &tasks::task(&mut self.tasks, tid)?.tracee;
                self.segv_blocked.after_call(tid, t, Some(e.nr))?;
                self.check_result(tid, e)?;
                self.note_sigaction(tid, e)?;
            }
            Replay::ExecuteRecordedResult => {
                self.run_for_real(tid, &name)?;
                if e.nr == libc::SYS_set_tid_address as u64 {
                    self.task(tid)?.clear_tid_at = Some(e.args[0]).filter(|&a| a != 0);
                }
                let t = self.tracee(tid)?;
                let mut after = t.regs()?;
                after.rax = e.result as u64;
                t.set_regs(&after)?;
            }
            Replay::Mmap if !syscalls::is_error(e.result) && mmap::EmuFiles::maps_file(e) => {
                let reader = Rc::clone(&self.reader);
                // Opening the file in the process, then mapping it: a signal pending (a
                // child's SIGCHLD) stops the task before the second.
                let got = self.with_signals_aside(tid, |s| {
                    let t = &crate::tasks::task(&mut s.tasks, tid)?.tracee;
                    s.emu.map(t, &reader, e)
                })?;
                if got != e.result {
                    return Err(self.diverged(
                        tid,
                        format!("mmap to return {:#x}", e.result),
                        format!("{got:#x} ({})", errno_text(got)),
                    ));
                }
                r.rax = got as u64;
                self.tracee(tid)?.set_regs(&r)?;
            }
            Replay::SetLimit => self.set_limit(tid, e, r)?,
            Replay::Mmap if !syscalls::is_error(e.result) => {
                let saved = r;
                regs::set_syscall_args(&mut r, &mmap::replacement_args(e));
                self.tracee(tid)?.set_regs(&r)?;
                self.run_for_real(tid, &name)?;
                let t = self.tracee(tid)?;
                let mut after = t.regs()?;
                if after.rax as i64 != e.result {
                    return Err(self.diverged(
                        tid,
                        format!("mmap to return {:#x}", e.result),
                        format!("{:#x} ({})", after.rax, errno_text(after.rax as i64)),
                    ));
                }
                regs::set_syscall_args(&mut after, &regs::syscall_args(&saved));
                t.set_regs(&after)?;
            }
            Replay::Exit => {
                self.robust_futexes_die(tid)?;
                let t = self.task(tid)?;
                t.tracee.cont(0)?;
                t.state = RState::Exiting;
                return Ok(());
            }
            Replay::Unsupported(reason) => bail!("{name} is not supported: {reason}"),
            Replay::Exec if !syscalls::is_error(e.result) => {
                bail!("the trace records a successful execve as a plain syscall")
            }
            Replay::Clone if !syscalls::is_error(e.result) => {
                bail!("the trace records a successful {name} without the task it made")
            }
            Replay::Emulate | Replay::Deny(_) | Replay::Mmap | Replay::Exec | Replay::Clone => {
                if let Some(trace_format::FileEffect::ProcMem { tid: target, addr }) = e.file_effect
                {
                    let data = mmap::written_bytes(self.tracee(tid)?, e)?;
                    self.tracee(target)?
                        .write_mem(addr, &data)
                        .with_context(|| format!("replaying a write to /proc/{target}/mem"))?;
                } else if e.file_effect.is_some() {
                    self.with_signals_aside(tid, |s| {
                        let t = &crate::tasks::task(&mut s.tasks, tid)?.tracee;
                        s.emu.apply(t, e)
                    })?;
                }
                self.emulate(tid, e, r)?
            }
        }
        self.resume(tid, 0)
    }

    /// After a successful `rt_sigaction`: remembers the `SIGSEGV` action the program set (see
    /// `tracee::forced_segv`), as the recorder does.
    fn note_sigaction(&mut self, tid: Tid, e: &SyscallEvent) -> Result<()> {
        let sigsegv = libc::SIGSEGV as u64;
        if e.nr != libc::SYS_rt_sigaction as u64 || e.result != 0 || e.args[0] != sigsegv {
            return Ok(());
        }
        let t = self.task(tid)?;
        let rpid = t.rpid;
        let mut act = [0u8; KERNEL_SIGACTION];
        let read = e.args[1] != 0 && t.tracee.read_mem(e.args[1], &mut act).is_ok();
        self.segv.note_sigaction(rpid, read.then_some(act));
        Ok(())
    }

    /// `setrlimit`/`prlimit64` (see [`Replay::SetLimit`]): a new limit of the task's own process
    /// is set for real (as `prlimit64(0, resource, new, NULL)`, so the replay's old limit is
    /// not written), then the task gets the recorded result and old limit; anything else is
    /// emulated.
    fn set_limit(&mut self, tid: Tid, e: &SyscallEvent, mut r: tracee::Regs) -> Result<()> {
        let rpid = self.task(tid)?.rpid;
        let own = e.nr == libc::SYS_setrlimit as u64
            || (e.args[2] != 0 && (e.args[0] == 0 || e.args[0] == rpid as u64));
        if !own || syscalls::is_error(e.result) {
            return self.emulate(tid, e, r);
        }
        let saved = r;
        if e.nr == libc::SYS_prlimit64 as u64 {
            r.rdi = 0;
            r.r10 = 0;
        }
        self.tracee(tid)?.set_regs(&r)?;
        let name = syscalls::name(e.nr);
        self.run_for_real(tid, &name)?;
        let t = self.tracee(tid)?;
        let mut after = t.regs()?;
        if after.rax != 0 {
            return Err(self.diverged(
                tid,
                format!("{name} to set the limit"),
                format!("{:#x} ({})", after.rax, errno_text(after.rax as i64)),
            ));
        }
        regs::set_syscall_args(&mut after, &regs::syscall_args(&saved));
        after.rax = e.result as u64;
        t.set_regs(&after)?;
        self.write_memory(tid, &e.writes, &name)
    }

    /// Skips the syscall `tid` is stopped at and gives it the recorded result and memory.
    pub(super) fn emulate(
        &mut self,
        tid: Tid,
        e: &SyscallEvent,
        mut r: tracee::Regs,
    ) -> Result<()> {
        let name = syscalls::name(e.nr);
        if let Some(m) = echo::check(self.tracee(tid)?, e) {
            return Err(self.diverged(tid, m.expected, m.found));
        }
        if let Some(out) = e.echo.as_ref().filter(|_| !self.opts.quiet) {
            self.echo_out(out.stream, &out.bytes);
        }
        let interrupted = is_restart_code(e.result) || e.result == -(libc::EINTR as i64);
        let signal_next = match self.peek_lane(tid)? {
            Some(Event::Signal(s))
                if s.tid == tid && s.origin == SignalOrigin::Async && s.point.is_none() =>
            {
                Some(s.signo)
            }
            _ => None,
        };
        let mask = match signal_next {
            Some(_) if interrupted => sigmask::temporary_mask(self.tracee(tid)?, e)?,
            _ => None,
        };
        let t = self.task(tid)?;
        if let (Some((set, size)), Some(signo)) = (mask, signal_next) {
            let saved = r;
            r.orig_rax = libc::SYS_rt_sigsuspend as u64;
            r.rdi = set;
            r.rsi = size;
            t.tracee.set_regs(&r)?;
            t.tracee.tgkill(t.pid, signo)?;
            t.signal_sent = true;
            t.temporary_mask = true;
            t.tracee.cont_syscall(0)?;
            self.expect_syscall_exit(tid, &name)?;
            r = self.tracee(tid)?.regs()?;
            regs::set_syscall_args(&mut r, &regs::syscall_args(&saved));
            r.orig_rax = e.nr;
        } else if is_restart_code(e.result) {
            // The restart logic that runs when the following signal is delivered needs the
            // syscall to have really happened: run getpid in its place.
            r.orig_rax = libc::SYS_getpid as u64;
            t.tracee.set_regs(&r)?;
            t.tracee.cont_syscall(0)?;
            self.expect_syscall_exit(tid, &name)?;
            r = self.tracee(tid)?.regs()?;
            r.orig_rax = e.nr;
        } else {
            r.orig_rax = u64::MAX;
        }
        self.write_memory(tid, &e.writes, &name)?;
        r.rax = e.result as u64;
        self.tracee(tid)?.set_regs(&r)
    }

    /// Lets the syscall `tid` is stopped at run, up to its exit stop.
    pub(super) fn run_for_real(&mut self, tid: Tid, name: &str) -> Result<()> {
        self.tracee(tid)?.cont_syscall(0)?;
        self.expect_syscall_exit(tid, name)
    }

    pub(super) fn expect_syscall_exit(&mut self, tid: Tid, name: &str) -> Result<()> {
        match self.wait_task(tid)? {
            Stop::SyscallStop => Ok(()),
            other => {
                let found = self.describe_stop(tid, other);
                Err(self.diverged(tid, format!("{name} to return"), found))
            }
        }
    }

    pub(super) fn check_result(&mut self, tid: Tid, e: &SyscallEvent) -> Result<()> {
        let got = self.tracee(tid)?.regs()?.rax as i64;
        if got != e.result {
            return Err(self.diverged(
                tid,
                format!("{} to return {}", syscalls::name(e.nr), e.result),
                format!("{got} ({})", errno_text(got)),
            ));
        }
        Ok(())
    }

    pub(super) fn write_memory(&mut self, tid: Tid, writes: &[MemWrite], name: &str) -> Result<()> {
        let reader = Rc::clone(&self.reader);
        let t = self.tracee(tid)?;
        let mut written = Vec::with_capacity(writes.len());
        for w in writes {
            let data = reader.read_data(&w.data)?;
            t.write_mem(w.addr, &data)
                .with_context(|| format!("restoring what {name} wrote"))?;
            written.push((w.addr, data.len() as u64));
        }
        if self.debugged(tid) {
            if let Some(d) = self.debug.as_mut() {
                for (addr, len) in written {
                    d.note_write(tid, addr, len);
                }
            }
        }
        Ok(())
    }
}
