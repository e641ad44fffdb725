//! Lets the syscall table read tracee memory while working out what a syscall wrote.

use tracee::Tracee;

/// A [`syscalls::Memory`] view of a stopped tracee.
pub struct TraceeMemory<'a>(pub &'a Tracee);

impl syscalls::Memory for TraceeMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.0.read_mem_partial(addr, buf) == buf.len()
    }
}
