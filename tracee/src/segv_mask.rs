//! Whether each task blocked `SIGSEGV` before deja's own `rdtsc` trap unblocked it.
//!
//! The kernel raises deja's `rdtsc` fault (`PR_TSC_SIGSEGV`) with `force_sig`, which unblocks
//! `SIGSEGV` in the task when it was blocked (see `crate::forced_segv` for the action it also
//! resets). A program that blocks `SIGSEGV` and then runs `rdtsc` — the dynamic loader of
//! every program does, so a mask that blocks `SIGSEGV` across an `execve` is enough (rr's
//! `sigprocmask_exec`) — would find it unblocked afterwards. Nothing at the trap tells whether
//! it was blocked, so both recorder and replayer note it whenever a task's mask may have
//! changed by a call (`rt_sigprocmask`, `rt_sigreturn`, an exec; a clone copies its parent's),
//! reading it with `PTRACE_GETSIGMASK`, and after emulating a trapped instruction block it
//! again with `PTRACE_SETSIGMASK` if it was blocked. Both sides read the same masks at the same
//! events, so they restore identically. Not seen: a mask changed by a handler's entry (its
//! `sa_mask`) that blocks `SIGSEGV` when it was not blocked before; then the trap leaves it
//! unblocked, in recording and replay alike.

use std::collections::HashSet;

use anyhow::{Context, Result};

use crate::tracee::Tracee;

/// `PTRACE_GETSIGMASK` / `PTRACE_SETSIGMASK` (`linux/ptrace.h`).
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;

/// The `SIGSEGV` bit of a signal mask.
const SEGV_BIT: u64 = 1 << (libc::SIGSEGV - 1);

/// The tasks known to block `SIGSEGV`, by the caller's task ids (recorded ids in replay).
#[derive(Debug, Default, Clone)]
pub struct SegvBlocked {
    blocked: HashSet<i32>,
}

impl SegvBlocked {
    /// After syscall `nr` of task `key` (traced as `t`) returned, or at its exec stop (`nr`
    /// `None`): notes whether it blocks `SIGSEGV` if the call may have changed its mask.
    pub fn after_call(&mut self, key: i32, t: &Tracee, nr: Option<u64>) -> Result<()> {
        let changes_mask = match nr {
            None => true,
            Some(nr) => {
                nr == libc::SYS_rt_sigprocmask as u64 || nr == libc::SYS_rt_sigreturn as u64
            }
        };
        if !changes_mask {
            return Ok(());
        }
        if signal_mask(t)? & SEGV_BIT != 0 {
            self.blocked.insert(key);
        } else {
            self.blocked.remove(&key);
        }
        Ok(())
    }

    /// Task `child` was made by `parent`'s clone: it starts with its parent's mask.
    pub fn clone_task(&mut self, parent: i32, child: i32) {
        if self.blocked.contains(&parent) {
            self.blocked.insert(child);
        } else {
            self.blocked.remove(&child);
        }
    }

    /// Task `key` ended.
    pub fn forget(&mut self, key: i32) {
        self.blocked.remove(&key);
    }

    /// Takes task `key` out (whether it blocks `SIGSEGV`), to hand it to another tracer
    /// thread.
    pub fn take(&mut self, key: i32) -> bool {
        self.blocked.remove(&key)
    }

    /// Puts in task `key`, taken by [`SegvBlocked::take`].
    pub fn put(&mut self, key: i32, blocked: bool) {
        if blocked {
            self.blocked.insert(key);
        } else {
            self.blocked.remove(&key);
        }
    }

    /// After a trapped instruction of task `key` (traced as `t`) was emulated: blocks `SIGSEGV`
    /// again if the task blocked it before the trap. Whether it did.
    pub fn reblock_after_trap(&self, key: i32, t: &Tracee) -> Result<bool> {
        if !self.blocked.contains(&key) {
            return Ok(false);
        }
        let mask = signal_mask(t)?;
        if mask & SEGV_BIT != 0 {
            return Ok(false);
        }
        tracing::debug!(
            tid = t.pid().as_raw(),
            "the kernel unblocked SIGSEGV at a trapped instruction: blocking it again"
        );
        let new = mask | SEGV_BIT;
        // SAFETY: PTRACE_SETSIGMASK reads one 8-byte mask (its size is `addr`) from `data`,
        // which points at a u64 owned by this frame.
        let r = unsafe {
            libc::ptrace(
                PTRACE_SETSIGMASK,
                t.pid().as_raw(),
                8usize,
                &new as *const u64,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("blocking SIGSEGV again in task {}", t.pid().as_raw()));
        }
        Ok(true)
    }
}

/// Sets the signal mask of the stopped task `t`.
pub fn set_signal_mask(t: &Tracee, mask: u64) -> Result<()> {
    // SAFETY: PTRACE_SETSIGMASK reads one 8-byte mask (its size is `addr`) from `data`, which
    // points at a u64 owned by this frame.
    let r = unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK,
            t.pid().as_raw(),
            8usize,
            &mask as *const u64,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the signal mask of task {}", t.pid().as_raw()));
    }
    Ok(())
}

/// The signal mask of the stopped task `t`.
pub fn signal_mask(t: &Tracee) -> Result<u64> {
    let mut mask = 0u64;
    // SAFETY: PTRACE_GETSIGMASK writes one 8-byte mask (its size is `addr`) to `data`, which
    // points at a u64 owned by this frame.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            t.pid().as_raw(),
            8usize,
            &mut mask as *mut u64,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the signal mask of task {}", t.pid().as_raw()));
    }
    Ok(mask)
}
