//! Undoing what the kernel does to a task's `SIGSEGV` state when deja's own `rdtsc` trap
//! fires while the program blocks or ignores `SIGSEGV`.
//!
//! deja makes `rdtsc` fault (`PR_TSC_SIGSEGV`) to record and replay it. The kernel raises that
//! fault with `force_sig`, which, when the program blocks or ignores `SIGSEGV`, unblocks it
//! and resets its disposition to `SIG_DFL` before the tracer even sees the stop (it expects
//! the signal to kill the task). deja then emulates the instruction and suppresses the signal,
//! but the program has lost its handler: its next real fault kills it (rr's
//! `x86/fault_in_code_page` reads the TSC with `SIGSEGV` blocked, then relies on its handler).
//!
//! So both recorder and replayer remember each process's `SIGSEGV` action as the program set
//! it ([`SegvActions`], from its successful `rt_sigaction` calls), and after emulating a
//! trapped instruction put it back if the kernel reset it ([`SegvActions::restore_after_trap`]).
//! Both sides see the same trap in the same state, so they restore identically. The mask the
//! kernel changed too is `crate::segv_mask`'s business: it follows each task's mask.

use std::collections::HashMap;

use anyhow::{Context, Result};

use crate::tracee::Tracee;

/// Size of the kernel's `struct sigaction` on x86-64 (handler, flags, restorer, 8-byte mask).
pub const KERNEL_SIGACTION: usize = 32;

/// `SIG_DFL` and `SIG_IGN` as handler values.
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;

/// Bytes below the stack pointer the x86-64 ABI lets a function use without moving it.
const RED_ZONE: u64 = 128;

/// The `SIGSEGV` action each process set, for processes whose action is not the default.
#[derive(Debug, Default, Clone)]
pub struct SegvActions {
    by_process: HashMap<i32, [u8; KERNEL_SIGACTION]>,
}

impl SegvActions {
    /// After a successful `rt_sigaction(SIGSEGV, act, ..)` by process `process`: `act` is the
    /// new action (`None` when the call only read it).
    pub fn note_sigaction(&mut self, process: i32, act: Option<[u8; KERNEL_SIGACTION]>) {
        match act {
            Some(a) if handler(&a) == SIG_DFL => {
                self.by_process.remove(&process);
            }
            Some(a) => {
                self.by_process.insert(process, a);
            }
            None => {}
        }
    }

    /// Process `child` was forked from `parent`: it starts with a copy of its actions.
    pub fn fork(&mut self, parent: i32, child: i32) {
        match self.by_process.get(&parent).copied() {
            Some(a) => self.by_process.insert(child, a),
            None => self.by_process.remove(&child),
        };
    }

    /// Process `process` ran a new program: handlers become `SIG_DFL`, `SIG_IGN` stays.
    pub fn exec(&mut self, process: i32) {
        if self
            .by_process
            .get(&process)
            .is_some_and(|a| handler(a) != SIG_IGN)
        {
            self.by_process.remove(&process);
        }
    }

    /// Takes process `process`'s action out, to hand it to another tracer thread with the
    /// process.
    pub fn take(&mut self, process: i32) -> Option<[u8; KERNEL_SIGACTION]> {
        self.by_process.remove(&process)
    }

    /// Puts in process `process`'s action, taken by [`SegvActions::take`].
    pub fn put(&mut self, process: i32, act: Option<[u8; KERNEL_SIGACTION]>) {
        match act {
            Some(a) => self.by_process.insert(process, a),
            None => self.by_process.remove(&process),
        };
    }

    /// Process `process` ended.
    pub fn exit(&mut self, process: i32) {
        self.by_process.remove(&process);
    }

    /// After the trapped instruction of task `t` (of process `process`), stopped at its
    /// `SIGSEGV`, was emulated: if the kernel reset the process's `SIGSEGV` action, sets it
    /// back with an injected `rt_sigaction`. Leaves the task's registers and memory as they
    /// were; returns whether it restored anything.
    pub fn restore_after_trap(&self, process: i32, t: &Tracee) -> Result<bool> {
        let Some(act) = self.by_process.get(&process) else {
            return Ok(false);
        };
        let ignored = handler(act) == SIG_IGN;
        let (caught_now, ignored_now) = segv_disposition(t)?;
        if (ignored && ignored_now) || (!ignored && caught_now) {
            return Ok(false);
        }
        tracing::debug!(
            tid = t.pid().as_raw(),
            "the kernel reset SIGSEGV's action at a trapped instruction: restoring it"
        );
        let r = t.regs()?;
        // Scratch memory below the red zone (free at any instruction boundary), put back after.
        let at = (r.rsp - RED_ZONE - 2 * KERNEL_SIGACTION as u64) & !15;
        let saved = t
            .read_vec(at, KERNEL_SIGACTION)
            .context("reading the stack below the red zone")?;
        t.write_mem(at, act)?;
        let sig = libc::SIGSEGV as u64;
        let rc = t.inject_syscall(libc::SYS_rt_sigaction, [sig, at, 0, 8, 0, 0]);
        t.write_mem(at, &saved)?;
        let rc = rc.context("restoring the SIGSEGV action the kernel reset at a trap")?;
        anyhow::ensure!(
            rc == 0,
            "restoring the SIGSEGV action: rt_sigaction failed with {rc}"
        );
        Ok(true)
    }
}

/// The handler word of a kernel `struct sigaction`.
fn handler(act: &[u8; KERNEL_SIGACTION]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&act[..8]);
    u64::from_le_bytes(w)
}

/// Whether task `t`'s process catches `SIGSEGV`, and whether it ignores it.
fn segv_disposition(t: &Tracee) -> Result<(bool, bool)> {
    let bit = 1u64 << (libc::SIGSEGV - 1);
    Ok((
        t.signal_set("SigCgt")? & bit != 0,
        t.signal_set("SigIgn")? & bit != 0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(handler: u64) -> [u8; KERNEL_SIGACTION] {
        let mut a = [0u8; KERNEL_SIGACTION];
        a[..8].copy_from_slice(&handler.to_le_bytes());
        a
    }

    #[test]
    fn tracks_actions_through_fork_and_exec() {
        let mut s = SegvActions::default();
        s.note_sigaction(10, Some(action(0x1234)));
        s.fork(10, 11);
        assert!(s.by_process.contains_key(&11));
        s.exec(10);
        assert!(
            !s.by_process.contains_key(&10),
            "a handler is reset by exec"
        );
        s.note_sigaction(11, Some(action(SIG_IGN)));
        s.exec(11);
        assert!(s.by_process.contains_key(&11), "SIG_IGN survives exec");
        s.note_sigaction(11, None);
        assert!(s.by_process.contains_key(&11), "a read changes nothing");
        s.note_sigaction(11, Some(action(SIG_DFL)));
        assert!(!s.by_process.contains_key(&11));
    }
}
