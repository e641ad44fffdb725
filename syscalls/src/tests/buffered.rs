//! What the fast path may buffer, and under which conditions (`crate::buffered`).

use super::*;

/// Every buffered syscall is emulated in replay (or, with `Probe::Exec`, run in both modes;
/// with `Probe::Place`, a private `mmap` placed where the recording's was;
/// `prlimit64` only as a query) and writes nothing on failure: a buffered record is its result
/// and, on success, the memory its outputs name.
#[test]
fn buffered_calls_are_emulated_and_write_only_on_success() {
    for nr in 0..1024u64 {
        let Some(b) = crate::buffered(nr) else {
            continue;
        };
        let def = crate::lookup(nr).expect("a buffered syscall is in the table");
        match b.probe {
            crate::Probe::Exec => assert_eq!(def.replay, Replay::Execute, "{}", def.name),
            crate::Probe::Place => assert_eq!(def.replay, Replay::Mmap, "{}", def.name),
            crate::Probe::Enosys => {
                assert_eq!(def.replay, Replay::Deny(libc::ENOSYS), "{}", def.name)
            }
            _ if def.replay == Replay::SetLimit => {
                // Only as a query: the new limit NULL.
                assert!(
                    b.conds
                        .iter()
                        .any(|c| c.arg == 2 && c.test == crate::Test::Eq(0)),
                    "{}",
                    def.name
                );
            }
            _ => assert_eq!(def.replay, Replay::Emulate, "{}", def.name),
        }
        // (A call whose accepted requests write nothing may write on failures the table
        // knows of for others: `futex`'s PI operations.)
        assert!(
            !def.outs_on_error || b.cases.iter().all(|&(_, size)| size == 0),
            "{}",
            def.name
        );
        let rets = def
            .outs
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Out::Buf {
                        len: Len::Ret | Len::MinArgRet(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(rets > 0, b.bound.is_some(), "{}: bound argument", def.name);
        if !matches!(
            b.probe,
            crate::Probe::Direct | crate::Probe::Exec | crate::Probe::Place | crate::Probe::Enosys
        ) {
            assert!(def.name.contains("read"), "{}", def.name);
        }
        // Each accepted request writes no more than the table covers for it (so the fast
        // path never records bytes the ptrace path would not).
        let mem = FakeMem::new(0x1000, 0x1000);
        for &(value, size) in b.cases {
            let in_arg = b
                .conds
                .iter()
                .find(|c| c.test == crate::Test::In)
                .expect("cases come with an In condition")
                .arg;
            let mut args = [0u64; 6];
            args[in_arg] = value;
            if let Some(out) = b.case_out {
                args[out] = 0x1000;
            }
            let call = Call {
                nr,
                args,
                result: 0,
            };
            let covered: u64 = out_regions(&call, &mem).iter().map(|r| r.len).sum();
            assert!(
                size <= covered,
                "{} {value:#x}: {size} bytes, the table covers {covered}",
                def.name
            );
            if b.case_out.is_none() {
                assert_eq!(size, 0, "{} {value:#x}", def.name);
                assert_eq!(covered, 0, "{} {value:#x} writes", def.name);
            }
        }
    }
}

/// The argument conditions: `rt_sigaction` never of `SIGSEGV` (compared as the kernel's
/// `int`), `rt_sigprocmask` only where `SIGSEGV`'s bit cannot change, `fcntl` without
/// `F_DUPFD*` or locks.
#[test]
fn buffered_conditions() {
    let sa = crate::buffered(libc::SYS_rt_sigaction as u64).unwrap();
    assert_eq!(sa.conds.len(), 1);
    assert!(sa.conds[0].int);
    assert_eq!(sa.conds[0].test, crate::Test::Ne(libc::SIGSEGV as u64));
    let mask = crate::buffered(libc::SYS_rt_sigprocmask as u64).unwrap();
    assert!(!mask
        .cases
        .iter()
        .any(|&(v, _)| v == libc::SIG_SETMASK as u64));
    assert!(mask.conds.contains(&crate::Cond {
        arg: 1,
        test: crate::Test::WordClear(1 << (libc::SIGSEGV - 1)),
        int: false,
        unless_zero: None
    }));
    let fcntl = crate::buffered(libc::SYS_fcntl as u64).unwrap();
    for cmd in [
        libc::F_DUPFD,
        libc::F_DUPFD_CLOEXEC,
        libc::F_SETLK,
        libc::F_SETLKW,
        libc::F_GETLK,
        libc::F_OFD_SETLKW,
    ] {
        assert!(!fcntl.cases.iter().any(|&(v, _)| v == cmd as u64), "{cmd}");
    }
    for nr in [libc::SYS_write, libc::SYS_madvise, libc::SYS_mremap] {
        assert!(crate::buffered(nr as u64).is_none(), "{nr}");
    }
    // mmap of the mapping types shared and private (the library checks the rest).
    let mmap = crate::buffered(libc::SYS_mmap as u64).unwrap();
    let with_flags = |flags: i32| {
        let mut args = [0, 4096, 3, flags as u64, u64::MAX, 0];
        args[3] |= 0xffff_ffff_0000_0000; // (an int: the high bits do not count)
        mmap.may_take(&args)
    };
    assert!(with_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS));
    assert!(with_flags(
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE
    ));
    assert!(with_flags(libc::MAP_PRIVATE));
    assert!(with_flags(
        libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_DENYWRITE
    ));
    // Shared: the library takes it only of a file the trace keeps, read-only (and no
    // anonymous shared memory, nor `MAP_SHARED_VALIDATE`).
    assert!(with_flags(libc::MAP_SHARED));
    assert!(with_flags(libc::MAP_SHARED | libc::MAP_ANONYMOUS));
    assert!(!with_flags(0x4 | libc::MAP_PRIVATE));
    // arch_prctl only to set fs; futex only to wake.
    let ap = crate::buffered(libc::SYS_arch_prctl as u64).unwrap();
    assert!(ap.may_take(&[0x1002, 0x1000, 0, 0, 0, 0]));
    assert!(!ap.may_take(&[0x1001, 0x1000, 0, 0, 0, 0]));
    let futex = crate::buffered(libc::SYS_futex as u64).unwrap();
    assert!(futex.may_take(&[0x1000, libc::FUTEX_WAKE as u64, 1, 0, 0, 0]));
    assert!(futex.may_take(&[0x1000, 0x81, 1, 0, 0, 0]));
    assert!(!futex.may_take(&[0x1000, libc::FUTEX_WAIT as u64, 1, 0, 0, 0]));
    assert!(!futex.may_take(&[0x1000, 0x80, 1, 0, 0, 0]));
}
