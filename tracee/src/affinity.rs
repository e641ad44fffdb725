//! CPU affinity of tasks: which CPUs a thread may run on, and pinning a task to one.

use anyhow::{Context, Result};

/// The CPUs thread `tid` may run on (0: the calling thread), in increasing order; empty if
/// the kernel does not say.
pub fn allowed(tid: i32) -> Vec<u32> {
    // SAFETY: zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let got =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if got != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set within its bounds.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .map(|c| c as u32)
        .collect()
}

/// Pins task `tid` (0: the calling thread) to `cpu`.
pub fn pin(tid: i32, cpu: u32) -> Result<()> {
    // SAFETY: zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET bounds-checks `cpu` against the set's size.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: the set is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning task {tid} to CPU {cpu}"));
    }
    Ok(())
}
