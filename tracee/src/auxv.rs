//! The initial stack the kernel builds for a new program: argc, argv, envp, and the auxiliary
//! vector.

/// `AT_NULL`: end of the auxiliary vector.
pub const AT_NULL: u64 = 0;
/// `AT_IGNORE`: an entry the program must skip.
pub const AT_IGNORE: u64 = 1;
/// `AT_SYSINFO_EHDR`: address of the vDSO.
pub const AT_SYSINFO_EHDR: u64 = 33;
/// `AT_RANDOM`: address of 16 random bytes.
pub const AT_RANDOM: u64 = 25;

fn word(stack: &[u8], off: usize) -> Option<u64> {
    let b = stack.get(off..off + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Offsets (into `stack`, which starts at the initial stack pointer) of each auxv entry's type
/// word, with the entry's type and value.
pub fn entries(stack: &[u8]) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    let Some(argc) = word(stack, 0) else {
        return out;
    };
    // Skip argc, argv[argc], NULL.
    let mut off = 8 + (argc as usize).saturating_mul(8) + 8;
    // Skip envp up to its NULL.
    while let Some(w) = word(stack, off) {
        off += 8;
        if w == 0 {
            break;
        }
    }
    while let (Some(t), Some(v)) = (word(stack, off), word(stack, off + 8)) {
        out.push((off, t, v));
        if t == AT_NULL {
            break;
        }
        off += 16;
    }
    out
}

/// Rewrites the `AT_SYSINFO_EHDR` entry as `AT_IGNORE`, so the C library finds no vDSO and makes
/// real (recordable) syscalls for the clock and CPU queries. Returns whether an entry was found.
pub fn hide_vdso(stack: &mut [u8]) -> bool {
    let mut found = false;
    for (off, t, _) in entries(stack) {
        if t == AT_SYSINFO_EHDR {
            stack[off..off + 8].copy_from_slice(&AT_IGNORE.to_le_bytes());
            found = true;
        }
    }
    found
}

/// The auxiliary vector as the program sees it in memory (pairs of words up to and including
/// `AT_NULL`), as a debugger reads it from `/proc/PID/auxv`.
pub fn raw(stack: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, t, v) in entries(stack) {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn finds_and_hides_vdso() {
        let mut s = build(&[
            1,
            0x1000,
            0,
            0x2000,
            0,
            AT_SYSINFO_EHDR,
            0x7fff,
            AT_RANDOM,
            0x3000,
            AT_NULL,
            0,
        ]);
        let e = entries(&s);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].1, AT_SYSINFO_EHDR);
        assert!(hide_vdso(&mut s));
        assert_eq!(entries(&s)[0].1, AT_IGNORE);
        assert_eq!(entries(&s)[1], (56, AT_RANDOM, 0x3000));
    }

    #[test]
    fn short_stack_does_not_panic() {
        assert!(entries(&[1, 2, 3]).is_empty());
        let s = build(&[100]);
        assert!(entries(&s).is_empty());
    }
}
