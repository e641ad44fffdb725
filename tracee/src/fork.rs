//! Forking a stopped tracee's process: a copy of its memory and its one task, left in the
//! same kind of ptrace stop with the same registers (the replayer's checkpoints).

use anyhow::{bail, Context, Result};

use crate::inject::{INFO_ENTRY, INFO_EXIT, INFO_SECCOMP, SYSCALL_INSN};
use crate::regs::{set_syscall_args, Regs};
use crate::stop::Stop;
use crate::tracee::Tracee;

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
    /// Forks the stopped task's process (the task must be alone in it: a fork copies only
    /// the calling thread) by a `clone` run in it with no exit signal, and returns the copy's
    /// task: traced (auto-attached), in the same kind of stop as this one (user mode, a seccomp
    /// stop, a syscall-exit-stop), with the same registers; its memory is this process's at
    /// this moment, breakpoints included. This task is left as it was. A task at a
    /// syscall-entry stop (not seccomp) is refused.
    pub fn fork_process(&self) -> Result<Tracee> {
        let saved = self.regs()?;
        let kind = match self.syscall_info()?.0 {
            INFO_SECCOMP => StopKind::Seccomp,
            INFO_EXIT => StopKind::Exit,
            INFO_ENTRY => bail!("task {} is at a syscall-entry stop", self.pid()),
            _ => StopKind::User,
        };
        let (site, patched) = if kind == StopKind::Seccomp {
            // The task's own `syscall`, which it enters again to be back at this stop, unless
            // its bytes changed since it trapped (a patched syscall site): then a `syscall`
            // written there for the while.
            let site = saved.rip.wrapping_sub(2);
            let mut now = [0u8; 2];
            self.read_mem(site, &mut now)?;
            if now == SYSCALL_INSN {
                (site, None)
            } else {
                self.write_mem(site, &SYSCALL_INSN)?;
                (site, Some(now))
            }
        } else {
            self.syscall_site(saved.rip)?
        };
        let mut regs = saved;
        if kind == StopKind::Seccomp {
            // Inside the syscall's entry: `clone` runs in its place.
            regs.orig_rax = libc::SYS_clone as u64;
        } else {
            regs.rip = site;
            regs.orig_rax = u64::MAX;
        }
        regs.rax = libc::SYS_clone as u64;
        // clone(flags 0: a new process, no signal to the parent at its end; the same stack).
        set_syscall_args(&mut regs, &[0; 6]);
        self.set_regs(&regs)?;
        let forked = self.run_clone(site);
        // Back to the stop this task was in, whatever happened.
        let back = self.restore_stop(kind, &saved, site, patched.as_ref());
        let child = forked?;
        back?;
        let copy = Tracee::attach_traced(child)?;
        let ready = match copy.wait() {
            Ok(Stop::Signal(_) | Stop::Event(_)) => copy
                .restore_stop(kind, &saved, site, patched.as_ref())
                .with_context(|| format!("setting up the fork of task {}", self.pid())),
            Ok(other) => Err(anyhow::anyhow!(
                "the fork of task {} stopped first with {other:?}",
                self.pid()
            )),
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            copy.kill_and_reap();
            return Err(e);
        }
        Ok(copy)
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
                Stop::SeccompEntry | Stop::SyscallStop => {
                    let (op, rval) = self.syscall_info()?;
                    if op != INFO_EXIT {
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
                let mut r = *saved;
                r.rip = site;
                r.rax = libc::SYS_getpid as u64;
                r.orig_rax = u64::MAX;
                self.set_regs(&r)?;
                self.cont(0)?;
                match self.wait()? {
                    Stop::SeccompEntry => {}
                    other => bail!(
                        "task {} stopped with {other:?} instead of at its syscall's seccomp stop",
                        self.pid()
                    ),
                }
            }
            StopKind::Exit => {
                let mut r = *saved;
                r.rip = site;
                r.rax = libc::SYS_getpid as u64;
                r.orig_rax = u64::MAX;
                self.set_regs(&r)?;
                let mut exited = false;
                for _ in 0..MAX_STOPS {
                    self.cont_syscall(0)?;
                    match self.wait()? {
                        Stop::SeccompEntry | Stop::SyscallStop => {}
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
