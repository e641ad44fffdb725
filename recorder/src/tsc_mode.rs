//! The program's own `PR_SET_TSC` setting (and its own `PR_GET_SECCOMP` answer). deja keeps every task's real setting at
//! `PR_TSC_SIGSEGV` so it can record `rdtsc`; `prctl(PR_GET_TSC / PR_SET_TSC)` are emulated
//! against the setting the program chose, and an `rdtsc` of a task that chose
//! `PR_TSC_SIGSEGV` gets its `SIGSEGV` as it would natively.

use std::collections::HashMap;

use anyhow::{Context, Result};
use tracee::Tracee;

/// The `PR_SET_TSC` setting each task chose (per thread, as in the kernel; inherited by
/// `clone` and kept across `execve`). Tasks not listed have `PR_TSC_ENABLE`.
#[derive(Default)]
pub struct TscModes {
    modes: HashMap<i32, i32>,
}

impl TscModes {
    /// Whether task `tid` asked for `rdtsc` to fault.
    pub fn faults(&self, tid: i32) -> bool {
        self.modes.get(&tid) == Some(&libc::PR_TSC_SIGSEGV)
    }

    /// A task made by `clone` starts with its parent's setting.
    pub fn inherit(&mut self, parent: i32, child: i32) {
        if let Some(&mode) = self.modes.get(&parent) {
            self.modes.insert(child, mode);
        }
    }

    /// A task that is gone.
    pub fn forget(&mut self, tid: i32) {
        self.modes.remove(&tid);
    }

    /// Performs `prctl(PR_GET_TSC | PR_SET_TSC | PR_GET_SECCOMP, arg)` for `tid` (stopped at its entry) as the
    /// kernel would for the program's own setting, and returns its result (0 or `-errno`).
    pub fn prctl(&mut self, tid: i32, tracee: &Tracee, option: u64, arg: u64) -> Result<i64> {
        if option == libc::PR_GET_SECCOMP as u64 {
            return program_seccomp_mode(tid);
        }
        let mode = self.modes.get(&tid).copied().unwrap_or(libc::PR_TSC_ENABLE);
        if option == libc::PR_GET_TSC as u64 {
            return Ok(match tracee.write_mem(arg, &mode.to_ne_bytes()) {
                Ok(()) => 0,
                Err(_) => -(libc::EFAULT as i64),
            });
        }
        match i32::try_from(arg) {
            Ok(m @ (libc::PR_TSC_ENABLE | libc::PR_TSC_SIGSEGV)) => {
                self.modes.insert(tid, m);
                Ok(0)
            }
            _ => Ok(-(libc::EINVAL as i64)),
        }
    }
}

/// `PR_GET_SECCOMP` as the program would see it without deja: `SECCOMP_MODE_FILTER` (2) if
/// it installed a filter of its own (more than deja's one in `/proc/TID/status`), else 0.
fn program_seccomp_mode(tid: i32) -> Result<i64> {
    let path = format!("/proc/{tid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let filters = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .with_context(|| format!("no Seccomp_filters line in {path}"))?;
    Ok(if filters > 1 { 2 } else { 0 })
}
