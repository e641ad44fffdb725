//! The init of a pid namespace under ptrace. The kernel protects such a task from signals its
//! namespace sends it, and from its own faults too while it is traced (it keeps the
//! `SIGNAL_UNKILLABLE` flag that a fatal fault clears for an untraced init): a fault whose
//! default action would kill it is ignored, and the instruction faults again forever. A tracer
//! that wants the program's behaviour (the init dies of the fault, and its namespace with it)
//! detaches it with the signal: it faults once more, untraced, and dies.

use anyhow::Result;

use crate::gone::PtraceContext;
use crate::tracee::Tracee;

/// The signals whose default action ends the process (all but the ignored, stop and continue
/// ones).
fn default_is_fatal(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
            | libc::SIGURG
            | libc::SIGWINCH
    )
}

impl Tracee {
    /// Whether delivering fault signal `sig` to this task would be ignored only because it is
    /// a traced pid namespace init: it is the init (its last `NSpid` is 1), and the signal has
    /// neither a handler nor `SIG_IGN`, and a fatal default action.
    pub fn fault_ignored_as_ns_init(&self, sig: i32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid())) else {
            return false;
        };
        let init = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|v| v.split_whitespace().last())
            .is_some_and(|last| last == "1");
        let bit = 1u64 << (sig - 1);
        let handled = ["SigCgt", "SigIgn"]
            .iter()
            .any(|field| self.signal_set(field).map_or(true, |set| set & bit != 0));
        init && !handled && default_is_fatal(sig)
    }

    /// Detaches the task, delivering `sig` (it is in a signal-delivery-stop); the tracer sees
    /// nothing of it afterwards.
    pub fn detach(&self, sig: i32) -> Result<()> {
        // SAFETY: a detach request on our stopped tracee takes only integers.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_DETACH,
                self.pid().as_raw(),
                0usize,
                sig as usize,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .ptrace_context(self.pid(), || format!("detaching task {}", self.pid()));
        }
        Ok(())
    }
}
