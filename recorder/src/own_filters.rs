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

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: the filter's `SECCOMP_RET_USER_NOTIF` calls go to a
/// supervisor through the returned descriptor.
const FLAG_NEW_LISTENER: u64 = 1 << 3;

/// Why the recording cannot go on at the entry of syscall `nr(args)`, for a program's own
/// filter deja cannot replay: one with a user-notification listener. Its notified calls would
/// wait in the replay's kernel for a supervisor whose answers are emulated, never sent.
pub fn unsupported(nr: u64, args: &[u64; 6]) -> Option<String> {
    let listener = nr == libc::SYS_seccomp as u64
        && args[0] == u64::from(libc::SECCOMP_SET_MODE_FILTER)
        && args[1] & FLAG_NEW_LISTENER != 0;
    listener.then(|| {
        "seccomp filters with a user-notification listener (SECCOMP_FILTER_FLAG_NEW_LISTENER) \
         are not supported"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_filters_with_a_listener() {
        let set = u64::from(libc::SECCOMP_SET_MODE_FILTER);
        let seccomp = libc::SYS_seccomp as u64;
        assert!(unsupported(seccomp, &[set, FLAG_NEW_LISTENER, 0x1000, 0, 0, 0]).is_some());
        assert!(unsupported(seccomp, &[set, 0, 0x1000, 0, 0, 0]).is_none());
        assert!(unsupported(libc::SYS_prctl as u64, &[22, 2, 0x1000, 0, 0, 0]).is_none());
    }
}
