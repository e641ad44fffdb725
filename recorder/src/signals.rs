//! Telling synchronous faults from asynchronous signals.

/// Whether the signal was raised by the instruction the task was executing (a fault the
/// replay reproduces by executing the same instruction), rather than sent to it.
pub fn is_fault(signo: i32, code: i32) -> bool {
    matches!(
        signo,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
    ) && code > 0
}
