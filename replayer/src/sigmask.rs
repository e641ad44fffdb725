//! Syscalls that run with a temporary signal mask (`rt_sigsuspend`, `ppoll`, `pselect6`,
//! `epoll_pwait`, `epoll_pwait2`).
//!
//! When such a call was interrupted by a signal in the recording, the handler ran under the
//! temporary mask and the original mask was restored afterwards. Emulating the call would lose
//! that (the signal could even be blocked outside the call), so the replayer runs
//! `rt_sigsuspend` with the same temporary mask in its place, which the kernel treats exactly
//! the same way when delivering the signal.

use anyhow::Result;
use trace_format::SyscallEvent;
use tracee::Tracee;

/// The `(sigset pointer, sigset size)` the call installs for its duration, if any.
pub fn temporary_mask(tracee: &Tracee, ev: &SyscallEvent) -> Result<Option<(u64, u64)>> {
    let a = ev.args;
    let found = match ev.nr as i64 {
        libc::SYS_rt_sigsuspend => Some((a[0], a[1])),
        libc::SYS_ppoll => Some((a[3], a[4])),
        libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => Some((a[4], a[5])),
        // pselect6's sixth argument points to { const sigset_t *ss; size_t ss_len; }.
        libc::SYS_pselect6 if a[5] != 0 => {
            Some((tracee.read_u64(a[5])?, tracee.read_u64(a[5] + 8)?))
        }
        _ => None,
    };
    Ok(found.filter(|&(ptr, _)| ptr != 0))
}
