//! Syscalls the recorder answers itself instead of letting the kernel run them for the task:
//! `prctl` options whose real answer is deja's own setting, and calls through the legacy
//! vsyscall page, which the kernel emulates without a syscall-exit stop.

use anyhow::Result;
use syscalls::Call;
use trace_format::{Event, SyscallEvent, TraceWriter};
use tracee::{Regs, Tracee};

use crate::memory::TraceeMemory;

/// Start of the legacy vsyscall page (`gettimeofday` at +0, `time` at +0x400, `getcpu` at
/// +0x800).
const VSYSCALL_PAGE: u64 = 0xffff_ffff_ff60_0000;

/// Whether a seccomp stop at `rip` is a call through the vsyscall page: the kernel emulates
/// those calls after the seccomp check, so no syscall-exit stop ever comes for them.
pub fn is_vsyscall(rip: u64) -> bool {
    (VSYSCALL_PAGE..VSYSCALL_PAGE + 0x1000).contains(&rip)
}

/// Makes the vsyscall call `nr(args)` of `tracee` in the recorder (pinned to the tracee's CPU)
/// and writes its outputs into the tracee: the result (or `-errno`).
pub fn vsyscall(tracee: &Tracee, nr: u64, args: &[u64; 6]) -> Result<i64> {
    let put = |addr: u64, bytes: &[u8]| addr == 0 || tracee.write_mem(addr, bytes).is_ok();
    let efault = -(libc::EFAULT as i64);
    Ok(match nr as i64 {
        libc::SYS_gettimeofday => {
            let mut tv = [0u8; 16];
            let mut tz = [0u8; 8];
            // SAFETY: both buffers are as large as struct timeval and struct timezone.
            let r =
                unsafe { libc::syscall(libc::SYS_gettimeofday, tv.as_mut_ptr(), tz.as_mut_ptr()) };
            if r != 0 {
                -i64::from(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EINVAL),
                )
            } else if put(args[0], &tv) && put(args[1], &tz) {
                0
            } else {
                efault
            }
        }
        libc::SYS_time => {
            // SAFETY: time(NULL) writes no memory.
            let t = unsafe { libc::time(std::ptr::null_mut()) };
            if put(args[0], &t.to_ne_bytes()) {
                t
            } else {
                efault
            }
        }
        libc::SYS_getcpu => {
            let (mut cpu, mut node) = (0u32, 0u32);
            // SAFETY: cpu and node are u32s, as getcpu writes; the cache argument is unused.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_getcpu,
                    &mut cpu as *mut u32,
                    &mut node as *mut u32,
                    0usize,
                )
            };
            if r != 0 {
                -i64::from(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EINVAL),
                )
            } else if put(args[0], &cpu.to_ne_bytes()) && put(args[1], &node.to_ne_bytes()) {
                0
            } else {
                efault
            }
        }
        _ => -(libc::ENOSYS as i64),
    })
}

/// Finishes a syscall the recorder answered with `result` at its seccomp stop (`entry` are the
/// registers there): the kernel skips it and returns `result`; the event gets the result and
/// the memory the table says the call writes. Returns the registers the task resumes with.
pub fn answer(
    tracee: &Tracee,
    writer: &mut TraceWriter,
    mut ev: SyscallEvent,
    entry: Regs,
    result: i64,
) -> Result<Regs> {
    ev.result = result;
    let call = Call {
        nr: ev.nr,
        args: ev.args,
        result,
    };
    for region in syscalls::out_regions(&call, &TraceeMemory(tracee)) {
        ev.writes.extend(crate::recording::capture(
            writer,
            tracee,
            region.addr,
            region.len,
        )?);
    }
    let mut r = entry;
    r.orig_rax = u64::MAX;
    r.rax = result as u64;
    tracee.set_regs(&r)?;
    writer.push(Event::Syscall(ev))?;
    if is_vsyscall(r.rip) {
        // The kernel returns from the vsyscall page to the caller itself.
        if let Ok(ret) = tracee.read_u64(r.rsp) {
            r.rip = ret;
            r.rsp += 8;
        }
    }
    Ok(r)
}
