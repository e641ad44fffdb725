//! Replaying emulated ptrace (see the recorder's README, "ptrace inside a recording"): a task
//! held in an emulated stop stays stopped until its recorded resumption, the changes its tracer
//! made to it are made again, and it is resumed the way its tracer resumed it. The tracer's own
//! `ptrace` and `wait` calls are ordinary emulated syscalls (recorded results and writes).

use anyhow::{bail, Context, Result};
use trace_format::{Event, ExitStatus, PtraceAction, PtraceEvent, PtraceHeld, Tid};
use tracee::{regs, Stop};

use super::Session;
use crate::tasks::RState;

/// `NT_PRSTATUS`: the general registers' register set.
const NT_PRSTATUS: u64 = 1;
/// End of `orig_rax` in `struct user_regs_struct` (word 15).
const ORIG_RAX_END: usize = 16 * 8;

/// `ptrace(req, pid, addr, data)` as a raw syscall.
fn raw_ptrace(req: i64, pid: i32, addr: u64, data: u64) -> Result<()> {
    // SAFETY: callers pass in `data` a plain word or the address of a live buffer at least as
    // large as the request reads.
    let r = unsafe { libc::syscall(libc::SYS_ptrace, req, pid, addr, data) };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("ptrace request {req:#x} on task {pid}"));
    }
    Ok(())
}

impl Session {
    /// Whether `tid`, right after its event, stays stopped there: its next event is an
    /// emulated ptrace stop at that very place (after an undelivered signal, or after the
    /// event itself). A stop at a syscall's entry is reached by running to it as usual.
    pub(super) fn ptrace_holds(&mut self, tid: Tid) -> Result<bool> {
        Ok(matches!(
            self.peek_lane(tid)?,
            Some(Event::Ptrace(PtraceEvent {
                tid: t,
                action: PtraceAction::Stop(PtraceHeld::Signal(_) | PtraceHeld::AfterEvent),
            })) if *t == tid
        ))
    }

    /// An emulated ptrace event of task `e.tid`.
    pub(super) fn ptrace(&mut self, e: &PtraceEvent) -> Result<()> {
        let tid = e.tid;
        match &e.action {
            PtraceAction::Stop(at) => {
                if matches!(*at, PtraceHeld::SyscallEntry | PtraceHeld::SysemuEntry) {
                    let stop = self.parked(tid)?;
                    if stop != Stop::SeccompEntry {
                        let found = self.describe_stop(tid, stop);
                        return Err(self.diverged(
                            tid,
                            "an emulated ptrace stop at a syscall entry".into(),
                            found,
                        ));
                    }
                }
                self.ptrace_held.insert(tid, *at);
                Ok(())
            }
            PtraceAction::Change {
                request,
                addr,
                word,
                bytes,
            } => self.ptrace_change(tid, *request, *addr, *word, bytes),
            PtraceAction::Resume { sig, step } => {
                let Some(at) = self.ptrace_held.remove(&tid) else {
                    return Err(self.diverged(
                        tid,
                        "a task held in an emulated ptrace stop".into(),
                        "the task not held".into(),
                    ));
                };
                if std::mem::take(&mut self.task(tid)?.group_stopped) {
                    // Resumed from the group-stop it is parked at: it runs on from there.
                    return self.resume(tid, 0);
                }
                let sig = match at {
                    // Its syscall's event comes next, from where it stands (the replay already
                    // let a clone's syscall go on: nothing of the task's runs before it ends).
                    PtraceHeld::SyscallEntry | PtraceHeld::CloneEvent => return Ok(()),
                    PtraceHeld::Signal(_) => *sig,
                    PtraceHeld::AfterEvent => 0,
                    PtraceHeld::SysemuEntry => {
                        // Its tracer skipped the syscall: it runs on past it.
                        let t = self.tracee(tid)?;
                        let mut r = t.regs()?;
                        r.orig_rax = u64::MAX;
                        t.set_regs(&r)?;
                        0
                    }
                };
                if *step {
                    self.ptrace_step(tid, sig)
                } else {
                    self.resume(tid, sig)
                }
            }
        }
    }

    /// Single-steps the held task `tid` (delivering `sig`), as its tracer did, and parks it
    /// at the stop that step leads to.
    fn ptrace_step(&mut self, tid: Tid, sig: i32) -> Result<()> {
        self.tracee(tid)?.step(sig)?;
        let stop = self.wait_task(tid)?;
        self.task(tid)?.state = match stop {
            Stop::Exited(c) => RState::Dead(ExitStatus::Exited(c)),
            Stop::Killed(s) => RState::Dead(ExitStatus::Signaled(s)),
            other => RState::Parked(other),
        };
        Ok(())
    }

    /// Makes the change its tracer made to the held task `tid` again.
    fn ptrace_change(
        &mut self,
        tid: Tid,
        request: i64,
        addr: u64,
        word: u64,
        bytes: &[u8],
    ) -> Result<()> {
        let after_event = self.ptrace_held.get(&tid) == Some(&PtraceHeld::AfterEvent);
        let t = self.tracee(tid)?;
        let pid = t.pid().as_raw();
        let what = || format!("replaying an emulated ptrace change of task {tid}");
        match request {
            // PTRACE_POKETEXT, PTRACE_POKEDATA
            4 | 5 => t.write_mem(addr, &word.to_le_bytes()).with_context(what),
            // PTRACE_POKEUSER (as for PTRACE_SETREGS, not orig_rax past a syscall)
            6 if after_event && addr == ORIG_RAX_END as u64 - 8 => Ok(()),
            6 => raw_ptrace(request, pid, addr, word).with_context(what),
            // PTRACE_SETREGS
            13 => {
                let mut words = [0u64; 27];
                for (w, c) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                    *w = u64::from_le_bytes(c.try_into().context("a register word")?);
                }
                let mut r = regs::from_words(&words);
                if after_event {
                    // Past its syscall: the replay's own bookkeeping there stays.
                    r.orig_rax = t.regs()?.orig_rax;
                }
                t.set_regs(&r).with_context(what)
            }
            // PTRACE_ARCH_PRCTL(ARCH_SET_FS/GS): `addr` is the base, `word` the code
            30 => raw_ptrace(request, pid, addr, word).with_context(what),
            // PTRACE_SETFPREGS
            15 => {
                let mut buf = bytes.to_vec();
                raw_ptrace(request, pid, 0, buf.as_mut_ptr() as u64).with_context(what)
            }
            // PTRACE_SETREGSET
            0x4205 => {
                let mut buf = bytes.to_vec();
                if after_event && addr == NT_PRSTATUS && buf.len() >= ORIG_RAX_END {
                    // As for PTRACE_SETREGS.
                    let orig = t.regs()?.orig_rax;
                    buf[ORIG_RAX_END - 8..ORIG_RAX_END].copy_from_slice(&orig.to_le_bytes());
                }
                let mut iov = [buf.as_mut_ptr() as u64, buf.len() as u64];
                raw_ptrace(request, pid, addr, iov.as_mut_ptr() as u64).with_context(what)
            }
            other => bail!("the trace holds an emulated ptrace change this replayer does not know ({other:#x})"),
        }
    }
}
