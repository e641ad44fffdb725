//! CPUID: whether it can be trapped here, and what this machine answers.

use std::arch::x86_64::__cpuid_count;

const ARCH_GET_CPUID: i32 = 0x1011;
const ARCH_SET_CPUID: i32 = 0x1012;

/// Whether the kernel and CPU support CPUID faulting (`ARCH_SET_CPUID`). Probed in a child
/// process so the probe cannot affect the caller.
pub fn faulting_supported() -> bool {
    // SAFETY: the child only makes raw syscalls and exits.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let r = libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, 0);
            libc::_exit(if r == 0 { 0 } else { 1 });
        }
        if pid < 0 {
            return false;
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

/// Whether CPUID faulting is currently enabled for the calling thread.
pub fn faulting_enabled() -> bool {
    // SAFETY: ARCH_GET_CPUID takes no pointer.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_CPUID, 0) == 0 }
}

/// Executes `cpuid` for `leaf`/`subleaf` on the calling thread.
pub fn query(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = __cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The leaves programs commonly consult (vendor, features, cache topology, extended features),
/// with the answers of this machine: a fingerprint to compare the recording and replaying CPUs.
pub fn fingerprint() -> Vec<(u32, u32, [u32; 4])> {
    let mut out = Vec::new();
    let max = query(0, 0)[0].min(0x20);
    for leaf in 0..=max {
        let subleaves: &[u32] = match leaf {
            4 | 0xb | 0x1f => &[0, 1, 2, 3],
            7 => &[0, 1],
            0xd => &[0, 1, 2],
            _ => &[0],
        };
        for &s in subleaves {
            out.push((leaf, s, query(leaf, s)));
        }
    }
    let ext_max = query(0x8000_0000, 0)[0].min(0x8000_0020);
    for leaf in 0x8000_0000..=ext_max {
        out.push((leaf, 0, query(leaf, 0)));
    }
    out
}

/// Clears fields that name the CPU a thread ran on (initial APIC ids), which differ between
/// CPUs of one machine, before comparing fingerprints.
pub fn normalize(leaf: u32, regs: [u32; 4]) -> [u32; 4] {
    let mut r = regs;
    match leaf {
        1 => r[1] &= 0x00ff_ffff,
        0xb | 0x1f => r[3] = 0,
        // AMD: extended APIC id and compute-unit id.
        0x8000_001e => {
            r[0] = 0;
            r[1] &= !0xff;
        }
        _ => {}
    }
    r
}
