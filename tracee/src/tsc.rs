//! Running the tracer with `rdtsc` trapping enabled on its own thread.
//!
//! The kernel keeps the time-stamp counter's user access (CR4.TSD) per thread, and rewrites CR4
//! at every context switch between a thread that traps `rdtsc` and one that does not. The
//! recorder and replayer trap `rdtsc` in their tracee, and every ptrace stop is two such
//! switches; on a virtual machine each CR4 write exits to the hypervisor, which measured here
//! tripled the cost of a stop (35 µs instead of 12.6 µs per syscall with two stops). So the
//! tracer thread traps `rdtsc` too, making the switches free, and emulates for itself the rare
//! `rdtsc` it executes (the vDSO's clock functions use it) in a `SIGSEGV` handler.

use anyhow::{Context, Result};

/// Length of the `rdtsc`/`rdtscp` instruction at `ip`, if it is one.
///
/// # Safety
/// `ip` must point at readable memory of at least 3 bytes (the faulting instruction).
unsafe fn tsc_insn_len(ip: *const u8) -> Option<usize> {
    let b = std::slice::from_raw_parts(ip, 3);
    match b {
        [0x0f, 0x31, _] => Some(2),
        [0x0f, 0x01, 0xf9] => Some(3),
        _ => None,
    }
}

/// Reads the time-stamp counter and `TSC_AUX` on a thread that traps `rdtsc`, by lifting the
/// trap for the duration of the read.
pub fn read_tsc() -> (u64, u32) {
    // SAFETY: prctl with integer arguments; rdtscp is available on every x86-64 CPU Linux
    // runs on here (checked by the recorder's probe of the program's own use of it).
    unsafe {
        libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_ENABLE, 0, 0, 0);
        let mut aux = 0u32;
        let tsc = core::arch::x86_64::__rdtscp(&mut aux);
        libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0);
        (tsc, aux)
    }
}

extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: called by the kernel with valid siginfo and ucontext pointers; the instruction
    // pointer of a SIGSEGV with SI_KERNEL points at the faulting, readable instruction. Only
    // async-signal-safe calls are made.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let g = &mut uc.uc_mcontext.gregs;
        let ip = g[libc::REG_RIP as usize] as *const u8;
        let len = if (*info).si_code == libc::SI_KERNEL {
            tsc_insn_len(ip)
        } else {
            None
        };
        let Some(len) = len else {
            // A real fault of deja's own: die of it as usual.
            libc::signal(sig, libc::SIG_DFL);
            return;
        };
        let (tsc, aux) = read_tsc();
        g[libc::REG_RAX as usize] = (tsc & 0xffff_ffff) as i64;
        g[libc::REG_RDX as usize] = (tsc >> 32) as i64;
        if len == 3 {
            g[libc::REG_RCX as usize] = i64::from(aux);
        }
        g[libc::REG_RIP as usize] += len as i64;
    }
}

/// Makes the calling thread trap `rdtsc`/`rdtscp`, emulating its own uses. Call it on the
/// thread that will trace (threads it forks inherit the trap, as the tracee should).
pub fn trap_on_this_thread() -> Result<()> {
    // SAFETY: installs a SA_SIGINFO handler that only touches its own ucontext; the prctl
    // takes integers.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_segv as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        if libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("installing the rdtsc handler");
        }
        if libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error()).context("PR_SET_TSC");
        }
    }
    Ok(())
}

/// Runs `f` on a new thread that traps `rdtsc` (see the module docs) and receives the
/// process's `SIGALRM` (the recorder's flush timer), and returns its result. All ptrace
/// requests for a tracee must come from the thread that started it, so `f` does all the
/// tracing.
pub fn on_tracer_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // SAFETY: zeroed sigset_t is valid for sigemptyset; pthread_sigmask only reads/writes
    // these local sets.
    let (alarm, mut old) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        (set, old)
    };
    let handle = std::thread::Builder::new()
        .name("deja-tracer".into())
        .spawn(move || {
            // SAFETY: unblocks SIGALRM on this thread only.
            unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &alarm, std::ptr::null_mut()) };
            trap_on_this_thread()?;
            f()
        })
        .context("starting the tracer thread")?;
    let result = handle
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the tracer thread panicked")));
    // SAFETY: restores this thread's previous mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, &mut old) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_with_trap_still_reads_clocks_and_tsc() {
        std::thread::spawn(|| {
            trap_on_this_thread().unwrap();
            let t0 = std::time::Instant::now();
            let (a, _) = read_tsc();
            // SAFETY: rdtsc traps here and is emulated by the handler.
            let b = unsafe { core::arch::x86_64::_rdtsc() };
            assert!(b >= a);
            assert!(t0.elapsed().as_secs() < 60);
        })
        .join()
        .unwrap();
    }
}
