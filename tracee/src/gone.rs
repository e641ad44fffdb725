//! A traced task that vanished under its tracer: the kernel refused a ptrace request with
//! `ESRCH` on a task the tracer holds in a ptrace stop. A stopped tracee leaves its stop only
//! when the tracer resumes it or when it is killed (`SIGKILL` from another task, the
//! `exit_group` or `execve` of a sibling thread, the death of its pid namespace's init), so this
//! error means the task is dying: its end is reported by `waitpid` soon. Callers that schedule
//! tasks (the recorder, the replayer) recognise it with [`vanished_task`] and wait for that
//! report instead of failing.

use nix::unistd::Pid;

/// The task `tid` is gone from its ptrace stop (killed): the kernel answered `ESRCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task {tid} is gone (killed while the tracer held it stopped): ESRCH")]
pub struct Vanished {
    /// The task's id.
    pub tid: i32,
}

/// The error of a ptrace request on `pid` that failed with `err`, described by `what`: a
/// [`Vanished`] when the kernel answered `ESRCH`, else `err` itself.
pub fn ptrace_error(pid: Pid, err: std::io::Error, what: String) -> anyhow::Error {
    if err.raw_os_error() == Some(libc::ESRCH) {
        anyhow::Error::new(Vanished { tid: pid.as_raw() }).context(what)
    } else {
        anyhow::Error::new(err).context(what)
    }
}

/// [`ptrace_error`] for a request made through `nix`.
pub fn nix_error(pid: Pid, err: nix::errno::Errno, what: String) -> anyhow::Error {
    ptrace_error(pid, std::io::Error::from_raw_os_error(err as i32), what)
}

/// The task a failure is about, if it failed because that task vanished (see [`Vanished`]),
/// however much context was added to it since.
pub fn vanished_task(e: &anyhow::Error) -> Option<i32> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Vanished>())
        .map(|v| v.tid)
}

/// Adds `what` to a failed ptrace request's result, as [`ptrace_error`] does.
pub trait PtraceContext<T> {
    /// The result, with a failure turned into [`ptrace_error`]'s error for `pid`.
    fn ptrace_context(self, pid: Pid, what: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T> PtraceContext<T> for std::io::Result<T> {
    fn ptrace_context(self, pid: Pid, what: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| ptrace_error(pid, e, what()))
    }
}

impl<T> PtraceContext<T> for nix::Result<T> {
    fn ptrace_context(self, pid: Pid, what: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| nix_error(pid, e, what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn esrch_is_a_vanished_task_through_context() {
        let e = ptrace_error(
            Pid::from_raw(42),
            std::io::Error::from_raw_os_error(libc::ESRCH),
            "reading registers of task 42".into(),
        )
        .context("finishing a syscall");
        assert_eq!(vanished_task(&e), Some(42));
        let text = format!("{e:#}");
        assert!(text.contains("task 42 is gone"), "{text}");
    }

    #[test]
    fn other_errors_are_not_vanished_tasks() {
        let e = ptrace_error(
            Pid::from_raw(42),
            std::io::Error::from_raw_os_error(libc::EIO),
            "reading registers of task 42".into(),
        );
        assert_eq!(vanished_task(&e), None);
        let _unused: anyhow::Result<()> = Err(e).context("more");
    }
}
