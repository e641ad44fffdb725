//! Running a system call of the tracer's choosing inside a stopped tracee (e.g. `mmap` of the
//! locator's scratch page), leaving the task's registers and code as they were.

use anyhow::{bail, Context, Result};

use crate::gone::PtraceContext;
use crate::regs::{set_syscall_args, Regs};
use crate::stop::Stop;
use crate::tracee::{SignalAside, Tracee};

/// The bytes of the `syscall` instruction.
pub(crate) const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

/// `struct ptrace_syscall_info.op` values (`PTRACE_GET_SYSCALL_INFO`).
pub(crate) const INFO_ENTRY: u8 = 1;
pub(crate) const INFO_EXIT: u8 = 2;
pub(crate) const INFO_SECCOMP: u8 = 3;
/// Offset of `exit.rval` in `struct ptrace_syscall_info`.
const INFO_RVAL_OFFSET: usize = 24;
/// Size of `struct ptrace_syscall_info` (the largest member, `seccomp`, ends at 84; padded).
const INFO_SIZE: usize = 88;

/// Stops a task may pass through while it runs an injected syscall, at most: a syscall-entry
/// stop, the seccomp stop, the exit stop (and one spare for kernels that order them otherwise).
const MAX_INJECT_STOPS: usize = 4;

/// Signals set aside before one injected syscall, at most (then it is given up).
const MAX_SIGNALS_ASIDE: usize = 16;

impl Tracee {
    /// Runs syscall `nr(args)` in the stopped tracee and returns its raw result (`-errno` on
    /// failure), leaving registers and code as they were.
    ///
    /// Works from any ptrace stop of a task in user mode (syscall-exit-stop, signal-delivery-
    /// stop, the seccomp stop, a single-step trap, ...). The task executes a `syscall`
    /// instruction: the two bytes before `rip` if they already are one (as after a syscall),
    /// otherwise `0f 05` written over the code at `rip` for the duration of the call. It is
    /// resumed with `PTRACE_SYSCALL` and passes the syscall-entry stop and, under the
    /// trace-everything seccomp filter, the seccomp stop (resumed so the call runs) up to the
    /// syscall-exit stop, where the result is read and everything restored. The task is then in
    /// that syscall-exit-stop: resuming it continues the program at its original `rip`.
    ///
    /// At a syscall-entry or seccomp stop, the task is inside a syscall of its own: the
    /// injected call runs in its place (a call skipped already, `orig_rax` -1, stays skipped,
    /// the task going on at its `rip`), and the task is otherwise left before its `syscall`
    /// instruction (`rip` - 2, the number back in `rax`), so resuming it makes the same call
    /// again (a new entry / seccomp stop), as a restarted syscall does.
    ///
    /// **Pending signals.** Resuming discards the signal of a signal-delivery-stop: a caller at
    /// such a stop with a signal still to deliver must deliver it first (single-step with it).
    /// If a signal becomes pending meanwhile and stops the task before the call is entered,
    /// the registers and code are restored and an error is returned, with the task left in that
    /// signal-delivery-stop (its signal still deliverable by the caller); after
    /// [`Tracee::set_signals_aside`], the signal is taken instead and the call made again.
    pub fn inject_syscall(&self, nr: i64, args: [u64; 6]) -> Result<i64> {
        for _ in 0..MAX_SIGNALS_ASIDE {
            match self.inject_once(nr, args)? {
                Ok(rval) => return Ok(rval),
                Err(sig) if self.set_aside(sig)? => {}
                Err(sig) => bail!(
                    "signal {sig} stopped task {} before the injected syscall {nr} ran; the \
                     task is left in that signal-delivery-stop",
                    self.pid()
                ),
            }
        }
        bail!(
            "signals kept stopping task {} before the injected syscall {nr} could run",
            self.pid()
        )
    }

    /// From now until [`Tracee::signals_set_aside`]: a signal that stops the task before a
    /// syscall injected into it runs is taken from the task (with its `siginfo`) and the call
    /// made again, instead of the injection failing; for the caller to send those signals
    /// again (a recording) or drop them (a replay, where no real signal is the recording's).
    pub fn set_signals_aside(&self) {
        *self.lock_aside() = Some(Vec::new());
    }

    /// Ends [`Tracee::set_signals_aside`]: the signals taken meanwhile, in order.
    pub fn signals_set_aside(&self) -> Vec<SignalAside> {
        self.lock_aside().take().unwrap_or_default()
    }

    fn lock_aside(&self) -> std::sync::MutexGuard<'_, Option<Vec<SignalAside>>> {
        // A panic while the lock was held left a list that is still whole: go on with it.
        self.aside.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After [`Tracee::set_signals_aside`]: takes signal `sig`, which stops the task
    /// before an injected syscall (its `siginfo` kept; resuming the task discards it).
    fn set_aside(&self, sig: i32) -> Result<bool> {
        if self.lock_aside().is_none() {
            return Ok(false);
        }
        let info = self.siginfo()?;
        if let Some(list) = self.lock_aside().as_mut() {
            list.push((sig, info));
        }
        Ok(true)
    }

    /// One try of [`Tracee::inject_syscall`]: `Err(sig)` if signal `sig` stopped the task
    /// before the call was entered (registers and code restored).
    fn inject_once(&self, nr: i64, args: [u64; 6]) -> Result<std::result::Result<i64, i32>> {
        let saved = self.regs()?;
        let (op, _) = self.syscall_info()?;
        let mut regs = saved;
        let mut back = saved;
        let (site, patched) = if matches!(op, INFO_ENTRY | INFO_SECCOMP) {
            // Inside a syscall's entry: run ours in its place, then set the task back before
            // its `syscall` instruction, with the number in rax, to enter it again; unless its
            // call is skipped already (`orig_rax` -1, the task sent elsewhere, as a patched
            // site's is): then it goes on where it was sent. (`site` + 2 is where the injected
            // call's exit finds `rip`: the registers' `rip`.)
            regs.orig_rax = nr as u64;
            if saved.orig_rax != u64::MAX {
                back.rip = saved.rip.wrapping_sub(2);
                back.rax = saved.orig_rax;
            }
            (saved.rip.wrapping_sub(2), None)
        } else {
            let (site, patched) = self.syscall_site(saved.rip)?;
            regs.rip = site;
            // Not "in a syscall": no restart logic may rewrite rax or rip when the task
            // resumes from the stop it is in.
            regs.orig_rax = u64::MAX;
            (site, patched)
        };
        regs.rax = nr as u64;
        set_syscall_args(&mut regs, &args);
        let outcome = self
            .set_regs(&regs)
            .and_then(|()| self.run_injected(nr, site));
        // Restore whatever happened; a dead task cannot be restored (and needs no restoring).
        let restored = match &outcome {
            Err(_) | Ok(Injected::Ended(_)) if self.regs().is_err() => Ok(()),
            _ => self.restore(&back, site, patched.as_ref()),
        };
        match outcome? {
            Injected::Done(rval) => {
                restored?;
                Ok(Ok(rval))
            }
            Injected::Signal(sig) => {
                restored?;
                Ok(Err(sig))
            }
            Injected::Ended(stop) => {
                bail!(
                    "task {} ended ({stop:?}) during the injected syscall {nr}",
                    self.pid()
                )
            }
        }
    }

    /// Where the task can execute a `syscall`: the two bytes before `rip` if they are one and
    /// lie in `rip`'s page; otherwise `rip`, with its original bytes returned for restoring
    /// after `0f 05` has been written there.
    pub(crate) fn syscall_site(&self, rip: u64) -> Result<(u64, Option<[u8; 2]>)> {
        if rip % 4096 >= 2 {
            let mut before = [0u8; 2];
            if self.read_mem_partial(rip - 2, &mut before) == 2 && before == SYSCALL_INSN {
                return Ok((rip - 2, None));
            }
        }
        let mut orig = [0u8; 2];
        self.read_mem(rip, &mut orig)
            .context("reading the code where a syscall is to be injected")?;
        self.write_mem(rip, &SYSCALL_INSN)
            .context("writing a syscall instruction to inject a syscall")?;
        Ok((rip, Some(orig)))
    }

    fn restore(&self, saved: &Regs, site: u64, patched: Option<&[u8; 2]>) -> Result<()> {
        if let Some(orig) = patched {
            self.write_mem(site, orig)
                .context("restoring the code under an injected syscall")?;
        }
        self.set_regs(saved)
            .context("restoring the registers after an injected syscall")
    }

    /// Drives the task from the injected `syscall` instruction to its exit stop.
    fn run_injected(&self, nr: i64, site: u64) -> Result<Injected> {
        let mut entered = false;
        for _ in 0..MAX_INJECT_STOPS {
            self.cont_syscall(0)?;
            let stop = self.wait()?;
            match stop {
                Stop::SeccompEntry | Stop::SyscallStop => {}
                Stop::Signal(sig) if !entered => return Ok(Injected::Signal(sig)),
                s if s.is_end() => return Ok(Injected::Ended(s)),
                other => bail!(
                    "unexpected stop {other:?} of task {} during the injected syscall {nr}",
                    self.pid()
                ),
            }
            let (op, rval) = self.syscall_info()?;
            match op {
                INFO_ENTRY | INFO_SECCOMP => entered = true,
                INFO_EXIT => {
                    let rip = self.regs()?.rip;
                    if rip != site + 2 {
                        bail!(
                            "task {} left a syscall at {rip:#x}, not the injected one at {site:#x}",
                            self.pid()
                        );
                    }
                    return Ok(Injected::Done(rval));
                }
                other => bail!(
                    "task {} is in an unexpected syscall stop (op {other}) during the injected \
                     syscall {nr}",
                    self.pid()
                ),
            }
        }
        bail!(
            "the injected syscall {nr} of task {} did not reach its exit in {MAX_INJECT_STOPS} \
             stops",
            self.pid()
        )
    }

    /// Whether the stopped task is at a syscall's entry: its syscall-entry stop or its seccomp
    /// stop (where a syscall injected now would run in the place of the task's own).
    pub fn at_syscall_entry(&self) -> Result<bool> {
        let (op, _) = self.syscall_info()?;
        Ok(matches!(op, INFO_ENTRY | INFO_SECCOMP))
    }

    /// `PTRACE_GET_SYSCALL_INFO`: the kind of syscall stop and, at an exit, the return value.
    pub(crate) fn syscall_info(&self) -> Result<(u8, i64)> {
        let mut buf = [0u8; INFO_SIZE];
        // SAFETY: the kernel writes at most `addr` (= buf.len()) bytes of a
        // `struct ptrace_syscall_info` to `data`, a buffer of that size owned by this frame.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_GET_SYSCALL_INFO,
                self.pid().as_raw(),
                buf.len(),
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).ptrace_context(self.pid(), || {
                format!("reading the syscall stop of task {}", self.pid())
            });
        }
        let mut rval = [0u8; 8];
        rval.copy_from_slice(&buf[INFO_RVAL_OFFSET..INFO_RVAL_OFFSET + 8]);
        Ok((buf[0], i64::from_le_bytes(rval)))
    }
}

/// How an injected syscall ended.
enum Injected {
    /// It returned this.
    Done(i64),
    /// A signal stopped the task before it entered the call.
    Signal(i32),
    /// The task died.
    Ended(Stop),
}
