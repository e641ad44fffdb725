//! The library's per-syscall configuration ([`abi::Spec`]), derived from the one syscall
//! table (`syscalls`): which calls are buffered (`syscalls::buffered`) and what they write
//! (`syscalls::TABLE`'s outputs), so the fast path and the ptrace path record the same bytes.

use anyhow::{bail, ensure, Result};
use syscalls::{Len, Out, Probe, Test};

use crate::abi::{self, Case, Cond, OutSpec, Spec};

/// The spec of every syscall number below [`abi::MAX_NR`].
pub fn specs() -> Result<Box<[Spec; abi::MAX_NR]>> {
    let mut all = Box::new([Spec::default(); abi::MAX_NR]);
    for (nr, spec) in all.iter_mut().enumerate() {
        if let Some(s) = spec_of(nr as u64)? {
            *spec = s;
        }
    }
    Ok(all)
}

/// The spec of syscall `nr`, `None` if it is not buffered.
pub fn spec_of(nr: u64) -> Result<Option<Spec>> {
    let Some(b) = syscalls::buffered(nr) else {
        return Ok(None);
    };
    let bound = b.bound;
    let Some(def) = syscalls::lookup(nr) else {
        bail!("buffered syscall {nr} is not in the syscall table");
    };
    let mut spec = Spec {
        probe: match b.probe {
            Probe::Direct => abi::PROBE_DIRECT,
            Probe::Read => abi::PROBE_READ,
            Probe::Pread => abi::PROBE_PREAD,
            Probe::Readv => abi::PROBE_READV,
            Probe::Exec => abi::PROBE_EXEC,
            Probe::Place => abi::PROBE_PLACE,
            Probe::Enosys => abi::PROBE_ENOSYS,
        },
        ..Spec::default()
    };
    ensure!(
        b.conds.len() <= abi::MAX_CONDS && b.cases.len() <= abi::MAX_CASES,
        "{}: too many conditions or cases",
        def.name
    );
    let ins = b.conds.iter().filter(|c| c.test == Test::In).count();
    ensure!(
        ins == usize::from(!b.cases.is_empty()) && ins <= 1,
        "{}: cases need exactly one `In` condition",
        def.name
    );
    for (c, slot) in b.conds.iter().zip(spec.conds.iter_mut()) {
        let (kind, value) = match c.test {
            Test::Eq(v) => (abi::COND_EQ, v),
            Test::Ne(v) => (abi::COND_NE, v),
            Test::In => (abi::COND_IN, 0),
            Test::WordClear(bits) => (abi::COND_WORD_CLEAR, bits),
            Test::NotPending => (abi::COND_NOT_PENDING, 0),
            Test::MaskEq { mask, value } => {
                (abi::COND_MASK_EQ, u64::from(mask) << 32 | u64::from(value))
            }
        };
        ensure!(
            c.arg < 6 && c.unless_zero.map_or(true, |a| a < 6),
            "{}: a condition names no argument",
            def.name
        );
        *slot = Cond {
            kind,
            arg: c.arg as u8,
            width: if c.int { 4 } else { 8 },
            unless_zero: c.unless_zero.map_or(0, |a| a as u8 + 1),
            pad: 0,
            value,
        };
    }
    for (&(value, size), slot) in b.cases.iter().zip(spec.cases.iter_mut()) {
        *slot = Case {
            value,
            size: u32::try_from(size)?,
            used: abi::CASE_USED,
        };
    }
    // (A call whose cases say what it writes writes nothing else, on success or failure.)
    if def.outs.len() > spec.outs.len() || (def.outs_on_error && b.case_out.is_none()) {
        bail!("{}: its outputs cannot be buffered", def.name);
    }
    if let Some(arg) = b.case_out {
        // The cases' sizes replace the table's request-dependent output.
        ensure!(
            matches!(def.outs, [Out::Custom(_)]) && arg < 6,
            "{}: case sizes stand only for one `Custom` output",
            def.name
        );
        spec.outs[0] = OutSpec {
            kind: abi::OUT_CASE,
            arg: arg as u8,
            ..OutSpec::default()
        };
        return Ok(Some(spec));
    }
    for (out, slot) in def.outs.iter().zip(spec.outs.iter_mut()) {
        *slot = match *out {
            Out::Buf {
                ptr,
                len: Len::Fixed(n),
            } => OutSpec {
                kind: abi::OUT_FIXED,
                arg: ptr as u8,
                size: n as u32,
                ..OutSpec::default()
            },
            // `min(arg, result)` bytes: the library caps `result` bytes at the bound.
            Out::Buf {
                ptr,
                len: Len::MinArgRet(a),
            } if bound == Some(a) => OutSpec {
                kind: abi::OUT_RET,
                arg: ptr as u8,
                count_arg: a as u8,
                ..OutSpec::default()
            },
            Out::Buf { ptr, len: Len::Ret } => {
                let Some(bound) = bound else {
                    bail!("{}: no argument bounds its result", def.name);
                };
                OutSpec {
                    kind: abi::OUT_RET,
                    arg: ptr as u8,
                    count_arg: bound as u8,
                    ..OutSpec::default()
                }
            }
            Out::Iov {
                iov,
                cnt,
                len: Len::Ret,
            } => OutSpec {
                kind: abi::OUT_IOV,
                arg: iov as u8,
                count_arg: cnt as u8,
                ..OutSpec::default()
            },
            // A `Custom` output (fcntl's) whose cases all write nothing.
            Out::Custom(_) if !b.cases.is_empty() && b.cases.iter().all(|&(_, n)| n == 0) => {
                OutSpec::default()
            }
            ref other => bail!("{}: output {other:?} cannot be buffered", def.name),
        };
    }
    Ok(Some(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffered_syscall_has_a_spec() {
        let all = specs().expect("every buffered syscall converts");
        let read = all[libc::SYS_read as usize];
        assert_eq!(read.probe, abi::PROBE_READ);
        assert_eq!(
            (read.outs[0].kind, read.outs[0].arg, read.outs[0].count_arg),
            (abi::OUT_RET, 1, 2)
        );
        let cg = all[libc::SYS_clock_gettime as usize];
        assert_eq!(
            (cg.probe, cg.outs[0].kind, cg.outs[0].size),
            (abi::PROBE_DIRECT, abi::OUT_FIXED, 16)
        );
        assert_eq!(all[libc::SYS_openat as usize].probe, abi::PROBE_DIRECT);
        let mmap = all[libc::SYS_mmap as usize];
        assert_eq!(mmap.probe, abi::PROBE_PLACE);
        // Mapping types shared and private (the low four bits): the library checks the rest.
        assert_eq!(
            (mmap.conds[0].kind, mmap.conds[0].arg, mmap.conds[0].value),
            (abi::COND_MASK_EQ, 3, 0xc << 32)
        );
        assert_eq!(all[libc::SYS_rseq as usize].probe, abi::PROBE_ENOSYS);
        assert_eq!(
            all[libc::SYS_set_robust_list as usize].probe,
            abi::PROBE_EXEC
        );
        let futex = all[libc::SYS_futex as usize];
        assert_eq!(
            (futex.probe, futex.conds[0].kind),
            (abi::PROBE_DIRECT, abi::COND_IN)
        );
        assert_eq!(all[libc::SYS_write as usize].probe, abi::PROBE_NONE);
        assert_eq!(all[libc::SYS_madvise as usize].probe, abi::PROBE_NONE);
        assert_eq!(all[libc::SYS_mremap as usize].probe, abi::PROBE_NONE);
        for nr in [libc::SYS_mprotect, libc::SYS_munmap, libc::SYS_brk] {
            assert_eq!(all[nr as usize].probe, abi::PROBE_EXEC);
        }
        let sa = all[libc::SYS_rt_sigaction as usize];
        assert_eq!(sa.probe, abi::PROBE_EXEC);
        assert_eq!(
            (sa.conds[0].kind, sa.conds[0].arg, sa.conds[0].width),
            (abi::COND_NE, 0, 4)
        );
        assert_eq!(sa.conds[0].value, libc::SIGSEGV as u64);
        assert_eq!((sa.outs[0].kind, sa.outs[0].size), (abi::OUT_FIXED, 32));
        let mask = all[libc::SYS_rt_sigprocmask as usize];
        assert_eq!(
            (mask.conds[0].kind, mask.conds[0].unless_zero),
            (abi::COND_IN, 2)
        );
        assert_eq!(mask.conds[1].kind, abi::COND_WORD_CLEAR);
        assert_eq!(
            (mask.conds[3].kind, mask.conds[3].arg),
            (abi::COND_NOT_PENDING, 1)
        );
        assert_eq!(mask.conds[1].value, 1 << (libc::SIGSEGV - 1));
        let ioctl = all[libc::SYS_ioctl as usize];
        assert_eq!(ioctl.probe, abi::PROBE_DIRECT);
        assert_eq!((ioctl.outs[0].kind, ioctl.outs[0].arg), (abi::OUT_CASE, 2));
        assert!(ioctl
            .cases
            .iter()
            .any(|c| c.used == abi::CASE_USED && c.value == libc::TCGETS && c.size == 36));
        let fcntl = all[libc::SYS_fcntl as usize];
        assert_eq!(fcntl.outs[0].kind, abi::OUT_NONE);
        assert!(!fcntl
            .cases
            .iter()
            .any(|c| c.used == abi::CASE_USED && c.value == libc::F_DUPFD as u64));
        let prlimit = all[libc::SYS_prlimit64 as usize];
        assert_eq!(
            (
                prlimit.conds[0].kind,
                prlimit.conds[0].arg,
                prlimit.conds[0].value
            ),
            (abi::COND_EQ, 2, 0)
        );
    }
}
