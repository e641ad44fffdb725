//! Telling synchronous faults from asynchronous signals, and the recorder's own signals.

use tracee::tracee::{signo_code, SIGINFO_SIZE};
use tracee::Regs;

/// The restart code of a syscall the kernel continues with `restart_syscall`.
pub const ERESTART_RESTARTBLOCK: i64 = -516;

/// Whether the signal was raised by the instruction the task was executing (a fault the
/// replay reproduces by executing the same instruction), rather than sent to it.
/// A `SIGSYS` of a program's own seccomp filter (`SECCOMP_RET_TRAP`) is one too: the filter
/// runs for real in the replay, where the same `syscall` instruction raises it again.
pub fn is_fault(signo: i32, code: i32) -> bool {
    matches!(
        signo,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
    ) && code > 0
        || signo == libc::SIGSYS && code == tracee::seccomp::SYS_SECCOMP
}

/// Whether a syscall result is one of the kernel's restart codes (`ERESTARTSYS`,
/// `ERESTARTNOINTR`, `ERESTARTNOHAND`, `ERESTART_RESTARTBLOCK`): a signal interrupted the call,
/// and the kernel restarts it or turns the code into `EINTR` when it handles the signal.
pub fn is_restart(rax: u64) -> bool {
    matches!(rax as i64, -512 | -513 | -514 | ERESTART_RESTARTBLOCK)
}

/// Whether a task stopped for a signal with these registers is between a syscall that returned
/// a restart code and the kernel's restart (or `EINTR`) of it: not in its user code yet.
pub fn restart_pending(r: &Regs) -> bool {
    r.orig_rax as i64 >= 0 && is_restart(r.rax)
}

/// Whether `info` is the recorder's own preemption `SIGSTOP`: sent by `tgkill` from process
/// `me` (the recorder).
pub fn is_ours(info: &[u8; SIGINFO_SIZE], me: i32) -> bool {
    let (signo, code) = signo_code(info);
    let pid = i32::from_le_bytes([info[16], info[17], info[18], info[19]]);
    signo == libc::SIGSTOP && code == libc::SI_TKILL && pid == me
}

/// Whether a task stopped for a signal with registers `now` has run nothing since it was at
/// `boundary` (the registers it was resumed with after its last event): they are the same, or
/// `boundary` is the exit of a syscall that returned a restart code and the kernel restarted
/// it without running a handler (an ignored signal came): `rip` back on the `syscall`
/// instruction and the call's number back in `rax` (`restart_syscall`'s for
/// `-ERESTART_RESTARTBLOCK`). Such a signal is delivered right at the event (as the kernel
/// does when it unblocks a signal at the end of `ppoll`'s temporary mask, rr's `intr_ppoll`).
pub fn still_at(boundary: &Regs, now: &Regs) -> bool {
    if tracee::regs::to_words(boundary) == tracee::regs::to_words(now) {
        return true;
    }
    if !restart_pending(boundary) {
        return false;
    }
    let mut restarted = *boundary;
    restarted.rip = boundary.rip.wrapping_sub(2);
    restarted.rax = if boundary.rax as i64 == ERESTART_RESTARTBLOCK {
        libc::SYS_restart_syscall as u64
    } else {
        boundary.orig_rax
    };
    tracee::regs::to_words(&restarted) == tracee::regs::to_words(now)
}
