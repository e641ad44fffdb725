//! The program's own seccomp filters (`seccomp(SECCOMP_SET_MODE_FILTER)`,
//! `prctl(PR_SET_SECCOMP)`): installed for real, in the recording and in the replay, on top of
//! deja's own filter (see the crate README, "A program's own seccomp filters").

use anyhow::Result;
use tracee::{Regs, Tracee};

/// At the exit stop of syscall `nr` with arguments `args` (registers `exit`): a
/// `prctl(PR_GET_SECCOMP)` answers 0 while deja's filter is the task's only one, as it does
/// outside deja (the replay does the same, `replayer/src/seccomp.rs`).
pub fn at_exit(tracee: &Tracee, nr: u64, args: &[u64; 6], exit: &mut Regs) -> Result<()> {
    if tracee::seccomp::hides_own_filter(tracee.pid().as_raw(), nr, args[0], exit.rax as i64) {
        exit.rax = 0;
        tracee.set_regs(exit)?;
    }
    Ok(())
}
