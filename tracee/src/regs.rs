//! The general registers, as the kernel's `user_regs_struct`.

use libc::user_regs_struct;

/// The general registers of a stopped task.
pub type Regs = user_regs_struct;

/// Number of 64-bit words in `user_regs_struct`.
pub const REGS_WORDS: usize = 27;

/// The registers as plain words, in the kernel's order (for storing in a trace).
pub fn to_words(r: &Regs) -> [u64; REGS_WORDS] {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// The inverse of [`to_words`].
pub fn from_words(w: &[u64; REGS_WORDS]) -> Regs {
    Regs {
        r15: w[0],
        r14: w[1],
        r13: w[2],
        r12: w[3],
        rbp: w[4],
        rbx: w[5],
        r11: w[6],
        r10: w[7],
        r9: w[8],
        r8: w[9],
        rax: w[10],
        rcx: w[11],
        rdx: w[12],
        rsi: w[13],
        rdi: w[14],
        orig_rax: w[15],
        rip: w[16],
        cs: w[17],
        eflags: w[18],
        rsp: w[19],
        ss: w[20],
        fs_base: w[21],
        gs_base: w[22],
        ds: w[23],
        es: w[24],
        fs: w[25],
        gs: w[26],
    }
}

/// Names of the words of [`to_words`], for divergence reports.
pub const WORD_NAMES: [&str; REGS_WORDS] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs",
    "gs",
];

/// The six syscall argument registers, in argument order.
pub fn syscall_args(r: &Regs) -> [u64; 6] {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]
}

/// Sets the six syscall argument registers.
pub fn set_syscall_args(r: &mut Regs, a: &[u64; 6]) {
    r.rdi = a[0];
    r.rsi = a[1];
    r.rdx = a[2];
    r.r10 = a[3];
    r.r8 = a[4];
    r.r9 = a[5];
}

/// Trap flag and resume flag: set by single-stepping and debuggers, not by the program.
const EFLAGS_DEBUG_BITS: u64 = (1 << 8) | (1 << 16);

/// A digest of the registers the program's own computation determines (everything but the
/// debugger-owned flags), for cheap divergence checks.
pub fn digest(r: &Regs) -> u64 {
    let mut w = to_words(r);
    w[18] &= !EFLAGS_DEBUG_BITS;
    // FNV-1a over the words: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for word in w {
        for b in word.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Words that differ between two register sets, as `name: expected -> found` strings.
pub fn differences(expected: &[u64; REGS_WORDS], found: &[u64; REGS_WORDS]) -> Vec<String> {
    (0..REGS_WORDS)
        .filter(|&i| {
            let mask = if i == 18 { !EFLAGS_DEBUG_BITS } else { !0 };
            expected[i] & mask != found[i] & mask
        })
        .map(|i| format!("{}: {:#x} -> {:#x}", WORD_NAMES[i], expected[i], found[i]))
        .collect()
}

/// At the entry of a `clone` syscall: clears `CLONE_UNTRACED` from its flags, so the new task
/// is traced like every other (an untraced task would escape the recording, and its syscalls
/// would fail under the inherited seccomp filter with no tracer). Recorder and replayer both do
/// it, so the registers stay alike. Returns whether it changed anything.
pub fn strip_clone_untraced(r: &mut Regs) -> bool {
    let untraced = libc::CLONE_UNTRACED as u64;
    if r.orig_rax != libc::SYS_clone as u64 || r.rdi & untraced == 0 {
        return false;
    }
    r.rdi &= !untraced;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let mut w = [0u64; REGS_WORDS];
        for (i, x) in w.iter_mut().enumerate() {
            *x = i as u64 * 0x1111;
        }
        assert_eq!(to_words(&from_words(&w)), w);
    }

    #[test]
    fn digest_ignores_trap_flag() {
        let mut r = from_words(&[7; REGS_WORDS]);
        let d = digest(&r);
        r.eflags |= 1 << 8;
        assert_eq!(digest(&r), d);
        r.rax += 1;
        assert_ne!(digest(&r), d);
    }
}
