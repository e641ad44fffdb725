//! Forking a stopped tracee's process: a copy of its memory and its tasks, each left in the
//! same kind of ptrace stop with the same registers (the replayer's checkpoints).

use anyhow::{bail, Context, Result};

use crate::inject::{INFO_ENTRY, INFO_EXIT, INFO_SECCOMP, SYSCALL_INSN};
use crate::regs::{set_syscall_args, Regs};
use crate::stop::Stop;
use crate::tracee::Tracee;

/// A task to copy as a thread of a forked copy of its process (see
/// [`Tracee::fork_process_with`]).
#[derive(Debug, Clone, Copy)]
pub struct ThreadCopy<'a> {
    /// The stopped task copied.
    pub of: &'a Tracee,
    /// Its clear-child-tid address (which the kernel does not tell).
    pub clear_tid_at: Option<u64>,
}

/// Stops the forking task passes through at most, from the injected `clone` to its exit.
const MAX_STOPS: usize = 8;

/// What kind of stop a task is in, as far as putting a copy of it in the same one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// In user mode: a signal-delivery-stop, a trap, an event stop (resuming continues at
    /// `rip`; a syscall-exit-stop behaves the same).
    User,
    /// At a syscall's seccomp stop: resuming runs (or skips) the syscall `orig_rax` names.
    Seccomp,
    /// At a syscall-exit-stop.
    Exit,
}

impl Tracee {
    /// Forks the stopped task's process by a `clone` run in it with no exit signal, and gives
    /// the copy a thread for each of `others` (the process's other tasks, all stopped: a
    /// fork copies only the calling thread) by `clone`s run in the copy. Each task of the copy
    /// is traced (auto-attached) and in the same kind of stop as the task it copies (user mode,
    /// a seccomp stop, a syscall-exit-stop), with the same registers, FP state, signal mask,
    /// name and robust list, and `clear_tid_at` (this task's) or [`ThreadCopy::clear_tid_at`]
    /// as its clear-child-tid address. The copy's memory is this process's at this moment,
    /// breakpoints included. The tasks copied are left as they were. Returns the copies, this
    /// task's first. A task at a syscall-entry stop (not seccomp) is refused.
    pub fn fork_process_with(
        &self,
        clear_tid_at: Option<u64>,
        others: &[ThreadCopy<'_>],
    ) -> Result<Vec<Tracee>> {
        let saved = self.regs()?;
        let kind = self.stop_kind()?;
        let (site, patched) = self.site_for(kind, saved.rip)?;
        let mut regs = saved;
        if kind == StopKind::Seccomp {
            // Inside the syscall's entry: `clone` runs in its place.
            regs.orig_rax = libc::SYS_clone as u64;
        } else {
            regs.rip = site;
            regs.orig_rax = u64::MAX;
        }
        regs.rax = libc::SYS_clone as u64;
        // clone(a new process, no signal to the parent at its end, the same stack), a sibling
        // of this one (`CLONE_PARENT`): the copy of a process the tracer started is the
        // tracer's child too, which reaps it when it ends (a child of the copied process would
        // stay a zombie of it, and copies are many).
        set_syscall_args(&mut regs, &[libc::CLONE_PARENT as u64, 0, 0, 0, 0, 0]);
        self.set_regs(&regs)?;
        let forked = self.run_clone(site);
        // Back to the stop this task was in, whatever happened.
        let back = self.restore_stop(kind, &saved, site, patched.as_ref());
        let child = forked?;
        back?;
        let copy = Tracee::attach_traced(child)?;
        let mut threads: Vec<Tracee> = Vec::new();
        let made = copy.wait_first_stop().and_then(|()| {
            for _ in others {
                threads.push(copy.clone_thread(site)?);
            }
            for (o, t) in others.iter().zip(&threads) {
                t.take_thread_state(o.of, o.clear_tid_at, true)?;
                let kind = o.of.stop_kind()?;
                let saved = o.of.regs()?;
                let (site, patched) = t.site_for(kind, saved.rip)?;
                t.restore_stop(kind, &saved, site, patched.as_ref())?;
            }
            copy.take_thread_state(self, clear_tid_at, false)?;
            copy.restore_stop(kind, &saved, site, patched.as_ref())
        });
        if let Err(e) = made {
            for t in threads.iter().chain(std::iter::once(&copy)) {
                t.kill_and_reap();
            }
            return Err(e.context(format!("setting up the fork of task {}", self.pid())));
        }
        threads.insert(0, copy);
        Ok(threads)
    }

    /// The kind of stop the task is in.
    fn stop_kind(&self) -> Result<StopKind> {
        Ok(match self.syscall_info()?.0 {
            INFO_SECCOMP => StopKind::Seccomp,
            INFO_EXIT => StopKind::Exit,
            INFO_ENTRY => bail!("task {} is at a syscall-entry stop", self.pid()),
            _ => StopKind::User,
        })
    }

    /// Where the task, in a stop of `kind` at `rip`, can execute a `syscall`, and the bytes
    /// a `syscall` written there for the while replaced. At a seccomp stop: its own `syscall`,
    /// which it enters again to be back at this stop, unless its bytes changed since it
    /// trapped (a patched syscall site).
    fn site_for(&self, kind: StopKind, rip: u64) -> Result<(u64, Option<[u8; 2]>)> {
        if kind != StopKind::Seccomp {
            return self.syscall_site(rip);
        }
        let site = rip.wrapping_sub(2);
        let mut now = [0u8; 2];
        self.read_mem(site, &mut now)?;
        if now == SYSCALL_INSN {
            Ok((site, None))
        } else {
            self.write_mem(site, &SYSCALL_INSN)?;
            Ok((site, Some(now)))
        }
    }

    /// Waits for the first stop of a new task (auto-attached): a `SIGSTOP` or an event stop.
    fn wait_first_stop(&self) -> Result<()> {
        match self.wait()? {
            Stop::Signal(_) | Stop::Event(_) => Ok(()),
            other => bail!("the new task {} stopped first with {other:?}", self.pid()),
        }
    }

    /// Makes a new thread in the task's process by a `clone` run at `site` (a `syscall`
    /// instruction) in this stopped task, and returns it at its first stop. Its registers are
    /// this task's until they are set.
    fn clone_thread(&self, site: u64) -> Result<Tracee> {
        let mut regs = self.regs()?;
        regs.rip = site;
        regs.orig_rax = u64::MAX;
        regs.rax = libc::SYS_clone as u64;
        let flags = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM;
        set_syscall_args(&mut regs, &[flags as u64, 0, 0, 0, 0, 0]);
        self.set_regs(&regs)?;
        let tid = self.run_clone(site)?;
        let thread = Tracee::attach_traced(tid)?;
        thread.wait_first_stop()?;
        Ok(thread)
    }

    /// Names this stopped task `name` (at most 15 bytes) with a `prctl(PR_SET_NAME)` run in it
    /// (the kernel lets only a task's own process rename it). The name goes below the stack
    /// pointer and its red zone for the call, and the bytes there are put back.
    fn set_name(&self, name: &[u8]) -> Result<()> {
        let mut buf = [0u8; 16];
        let n = name.len().min(15);
        buf[..n].copy_from_slice(&name[..n]);
        let at = (self.regs()?.rsp - 1024) & !15;
        let mut was = [0u8; 16];
        self.read_mem(at, &mut was)?;
        self.write_mem(at, &buf)?;
        let set = self.inject_syscall(libc::SYS_prctl, [libc::PR_SET_NAME as u64, at, 0, 0, 0, 0]);
        self.write_mem(at, &was)?;
        match set? {
            0 => Ok(()),
            err => bail!("naming task {} failed ({err})", self.pid()),
        }
    }

    /// Gives this new task (at its first stop) the per-task state of `of` that neither a
    /// fork nor a clone passes on: its robust list and `clear_tid_at`, and with `thread`
    /// (a clone, not the fork) its FP state, signal mask and name too.
    fn take_thread_state(
        &self,
        of: &Tracee,
        clear_tid_at: Option<u64>,
        thread: bool,
    ) -> Result<()> {
        if thread {
            self.set_fp_regs(&of.fp_regs()?)?;
            crate::segv_mask::set_signal_mask(self, crate::segv_mask::signal_mask(of)?)?;
            let comm = std::fs::read(format!("/proc/{}/comm", of.pid()))
                .with_context(|| format!("reading the name of task {}", of.pid()))?;
            self.set_name(comm.trim_ascii_end())?;
        }
        let (mut head, mut len) = (0u64, 0usize);
        // SAFETY: get_robust_list writes one pointer and one size to the two locations given,
        // both owned by this frame.
        let r = unsafe {
            libc::syscall(
                libc::SYS_get_robust_list,
                of.pid().as_raw(),
                &mut head as *mut u64,
                &mut len as *mut usize,
            )
        };
        if r == 0 && head != 0 {
            let got =
                self.inject_syscall(libc::SYS_set_robust_list, [head, len as u64, 0, 0, 0, 0])?;
            if got != 0 {
                bail!("set_robust_list in task {} returned {got}", self.pid());
            }
        }
        if let Some(addr) = clear_tid_at {
            self.inject_syscall(libc::SYS_set_tid_address, [addr, 0, 0, 0, 0, 0])?;
        }
        Ok(())
    }

    /// Drives the task through the injected `clone` at `site` to its exit; the child's id.
    fn run_clone(&self, site: u64) -> Result<nix::unistd::Pid> {
        let mut child = None;
        for _ in 0..MAX_STOPS {
            self.cont_syscall(0)?;
            match self.wait()? {
                Stop::Event(e)
                    if e == libc::PTRACE_EVENT_CLONE
                        || e == libc::PTRACE_EVENT_FORK
                        || e == libc::PTRACE_EVENT_VFORK =>
                {
                    child = Some(nix::unistd::Pid::from_raw(self.event_msg()? as i32));
                }
                // A signal the replay itself caused (a child's `SIGCHLD`: a copy is never
                // made while a recorded one waits to be delivered), dropped by the next
                // resumption, as the replay drops it anyway.
                Stop::Signal(_) => continue,
                Stop::SeccompEntry | Stop::SyscallStop => {
                    let (op, rval) = self.syscall_info()?;
                    if op != INFO_EXIT {
                        continue;
                    }
                    if (-516..=-512).contains(&rval) {
                        // Interrupted by such a signal: the kernel makes the call again.
                        continue;
                    }
                    if self.regs()?.rip != site + 2 {
                        bail!(
                            "task {} left a syscall other than its injected clone",
                            self.pid()
                        );
                    }
                    if rval < 0 {
                        bail!("the injected clone of task {} failed ({rval})", self.pid());
                    }
                    return child.context("the injected clone reported no child");
                }
                other => bail!(
                    "unexpected stop {other:?} of task {} during its injected clone",
                    self.pid()
                ),
            }
        }
        bail!("the injected clone of task {} did not return", self.pid())
    }

    /// Sets the task's registers to `saved` but about to run `getpid` at `site` (a `syscall`),
    /// out of any syscall of its own.
    fn point_at_getpid(&self, saved: &Regs, site: u64) -> Result<()> {
        let mut r = *saved;
        r.rip = site;
        r.rax = libc::SYS_getpid as u64;
        r.orig_rax = u64::MAX;
        self.set_regs(&r)
    }

    /// Puts the task (after an injected syscall at `site`, at its exit stop, or a new fork at
    /// its first stop) back in a stop of `kind` with registers `saved`, and the code at `site`
    /// back to `patched` if a `syscall` was written there.
    fn restore_stop(
        &self,
        kind: StopKind,
        saved: &Regs,
        site: u64,
        patched: Option<&[u8; 2]>,
    ) -> Result<()> {
        match kind {
            StopKind::User => {}
            StopKind::Seccomp => {
                // Enter a syscall again to be at its seccomp stop (the filter traps it).
                self.point_at_getpid(saved, site)?;
                let mut entered = false;
                for _ in 0..MAX_STOPS {
                    self.cont(0)?;
                    match self.wait()? {
                        Stop::SeccompEntry => {
                            entered = true;
                            break;
                        }
                        // (A signal the replay caused, dropped: see `run_clone`.)
                        Stop::Signal(_) => {}
                        other => bail!(
                            "task {} stopped with {other:?} instead of at its syscall's \
                             seccomp stop",
                            self.pid()
                        ),
                    }
                }
                if !entered {
                    bail!("task {} did not reach a seccomp stop", self.pid());
                }
            }
            StopKind::Exit => {
                self.point_at_getpid(saved, site)?;
                let mut exited = false;
                for _ in 0..MAX_STOPS {
                    self.cont_syscall(0)?;
                    match self.wait()? {
                        Stop::SeccompEntry | Stop::SyscallStop => {}
                        // (A signal the replay caused, dropped: see `run_clone`.)
                        Stop::Signal(_) => continue,
                        other => bail!(
                            "task {} stopped with {other:?} on its way to a syscall exit",
                            self.pid()
                        ),
                    }
                    if self.syscall_info()?.0 == INFO_EXIT {
                        exited = true;
                        break;
                    }
                }
                if !exited {
                    bail!("task {} did not reach a syscall exit", self.pid());
                }
            }
        }
        // (The `syscall` written at `site` served the stops above.)
        if let Some(orig) = patched {
            self.write_mem(site, orig)
                .context("restoring the code under an injected syscall")?;
        }
        self.set_regs(saved)
            .context("restoring the registers after an injected syscall")
    }
}
