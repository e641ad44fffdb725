//! System V IPC outputs the syscall table cannot size from a call's arguments alone.

use syscalls::{Call, Region};

/// `semctl` command `GETALL`, which writes one `unsigned short` per semaphore of the set.
const GETALL: u64 = 13;

/// Memory written by `call` beyond what the table knows: `semctl(id, _, GETALL, array)` writes
/// as many values as the set has semaphores, which the recorder asks the kernel for.
pub fn extra_regions(call: &Call) -> Vec<Region> {
    if call.nr != libc::SYS_semctl as u64 || call.result < 0 || call.arg(2) & 0xff != GETALL {
        return Vec::new();
    }
    // SAFETY: an all-zero semid_ds is a valid value of this plain C struct.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one semid_ds through the pointer, which outlives the call.
    let r = unsafe { libc::semctl(call.arg(0) as i32, 0, libc::IPC_STAT, &mut ds) };
    if r < 0 || call.arg(3) == 0 {
        tracing::warn!(semid = call.arg(0), "could not size a semctl GETALL");
        return Vec::new();
    }
    vec![Region {
        addr: call.arg(3),
        len: ds.sem_nsems * 2,
    }]
}
