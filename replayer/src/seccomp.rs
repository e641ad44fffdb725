//! The program's own seccomp filters, which run for real in the replay as in the recording.

use anyhow::Result;
use tracee::Tracee;

/// At the exit stop of syscall `nr` (first argument `arg0`) run for real in `tracee`: a
/// `prctl(PR_GET_SECCOMP)` returns 0 when deja's filter is the task's only one, as in the
/// recording (see `tracee::seccomp::hides_own_filter`).
pub fn hide_own_filter(tracee: &Tracee, nr: u64, arg0: u64) -> Result<()> {
    let mut r = tracee.regs()?;
    if tracee::seccomp::hides_own_filter(tracee.pid().as_raw(), nr, arg0, r.rax as i64) {
        r.rax = 0;
        tracee.set_regs(&r)?;
    }
    Ok(())
}
