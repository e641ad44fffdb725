//! Vector, x87 and debug registers of a real stopped child: what it loaded reads back, and
//! what the tracer writes is what the child then finds in its registers.

use std::arch::asm;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::unistd::Pid;
use tracee::debugregs::{hit_slots, DebugRegs, WatchKind};
use tracee::{Stop, Tracee};

/// `xmm0` as the child loads it, then as the tracer rewrites it.
const OLD_LO: [u8; 16] = *b"deja-xmm0-before";
const NEW_LO: [u8; 16] = *b"deja-xmm0-after!";
/// The upper half of `ymm0`, likewise.
const OLD_HI: [u8; 16] = *b"deja-ymm0h-befor";
const NEW_HI: [u8; 16] = *b"deja-ymm0h-after";
/// 1.0 and 2.0 as 80-bit extended values.
const ONE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f];
const TWO: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0x40];

/// A child that is killed and reaped however the test ends.
struct Child(Tracee);

impl Drop for Child {
    fn drop(&mut self) {
        self.0.kill_and_reap();
    }
}

/// Forks a child that becomes traced by this thread and exits with `body`'s result; `body`
/// must stop itself (the child is not stopped otherwise).
fn fork_traced(body: fn() -> i32) -> Child {
    // SAFETY: the child only makes raw syscalls, runs `body` (which neither allocates nor
    // takes locks) and leaves with `_exit`.
    let pid = unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) < 0 {
                libc::_exit(100);
            }
            libc::_exit(body());
        }
        pid
    };
    Child(Tracee::attach_traced(Pid::from_raw(pid)).expect("opening the child"))
}

/// Loads `lo`+`hi` into `ymm0` and 1.0 into `st0`, stops with SIGSTOP (a raw syscall, which
/// preserves vector and x87 registers), and returns 0 if the tracer left `NEW_LO`+`NEW_HI`
/// in `ymm0` and 2.0 in `st0`.
#[target_feature(enable = "avx")]
unsafe fn avx_child() -> i32 {
    let mut src = [0u8; 32];
    src[..16].copy_from_slice(&OLD_LO);
    src[16..].copy_from_slice(&OLD_HI);
    let mut dst = [0u8; 32];
    let mut st0 = [0u8; 10];
    // SAFETY: reads 32 bytes at `src`, writes 32 at `dst` and 10 at `st0`, all locals of
    // that size; the x87 stack is balanced (one push, one pop) and reset by fninit to the
    // default control word; the kill syscall clobbers only rax, rcx and r11.
    unsafe {
        asm!(
            "fninit",
            "fld1",
            "vmovdqu ymm0, [{src}]",
            "syscall",
            "vmovdqu [{dst}], ymm0",
            "fstp tbyte ptr [{st0}]",
            src = in(reg) src.as_ptr(),
            dst = in(reg) dst.as_mut_ptr(),
            st0 = in(reg) st0.as_mut_ptr(),
            inlateout("rax") libc::SYS_kill => _,
            in("rdi") libc::getpid(),
            in("rsi") libc::SIGSTOP,
            out("rcx") _,
            out("r11") _,
            out("ymm0") _,
            out("st(0)") _,
            options(nostack),
        );
    }
    i32::from(dst[..16] != NEW_LO || dst[16..] != NEW_HI || st0 != TWO)
}

/// [`avx_child`] for a CPU without AVX: `xmm0` and `st0` only.
fn sse_child() -> i32 {
    let src = OLD_LO;
    let mut dst = [0u8; 16];
    let mut st0 = [0u8; 10];
    // SAFETY: as in `avx_child`, with 16-byte `src` and `dst`.
    unsafe {
        asm!(
            "fninit",
            "fld1",
            "movdqu xmm0, [{src}]",
            "syscall",
            "movdqu [{dst}], xmm0",
            "fstp tbyte ptr [{st0}]",
            src = in(reg) src.as_ptr(),
            dst = in(reg) dst.as_mut_ptr(),
            st0 = in(reg) st0.as_mut_ptr(),
            inlateout("rax") libc::SYS_kill => _,
            in("rdi") libc::getpid(),
            in("rsi") libc::SIGSTOP,
            out("rcx") _,
            out("r11") _,
            out("xmm0") _,
            out("st(0)") _,
            options(nostack),
        );
    }
    i32::from(dst != NEW_LO || st0 != TWO)
}

#[test]
fn vector_and_x87_registers_read_and_write() {
    let avx = is_x86_feature_detected!("avx");
    if !avx {
        eprintln!("note: no AVX on this CPU, checking xmm0 and st0 only");
    }
    let child = fork_traced(if avx {
        // SAFETY: the CPU has AVX.
        || unsafe { avx_child() }
    } else {
        sse_child
    });
    let t = &child.0;
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGSTOP));

    let mut fp = t.fp_regs().unwrap();
    assert_eq!(fp.xmm[0], OLD_LO);
    if avx {
        assert_eq!(fp.ymmh[0], OLD_HI);
    }
    assert_eq!(fp.st[0], ONE);
    // One value pushed: TOP is 7, physical register 7 is valid (00), the others empty (11).
    assert_eq!((fp.fstat >> 11) & 7, 7);
    assert_eq!(fp.ftag, 0x3fff);
    assert_eq!(fp.fctrl, 0x037f);

    fp.xmm[0] = NEW_LO;
    if avx {
        fp.ymmh[0] = NEW_HI;
    }
    fp.st[0] = TWO;
    t.set_fp_regs(&fp).unwrap();
    assert_eq!(t.fp_regs().unwrap(), fp);
    // Writing back unchanged registers is harmless.
    t.set_fp_regs(&fp).unwrap();

    t.cont(0).unwrap();
    assert_eq!(
        t.wait().unwrap(),
        Stop::Exited(0),
        "the child did not find the registers the tracer wrote"
    );
}

/// What the debug register test's child writes to after it stops.
static WATCHED: AtomicU64 = AtomicU64::new(0);

fn watched_child() -> i32 {
    // SAFETY: raise only sends a signal.
    unsafe { libc::raise(libc::SIGSTOP) };
    WATCHED.store(1, Ordering::SeqCst);
    0
}

#[test]
fn debug_registers_round_trip_and_trigger() {
    let child = fork_traced(watched_child);
    let t = &child.0;
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGSTOP));

    // The child is a copy of this process: the static is at the same address there.
    let addr = std::ptr::addr_of!(WATCHED) as u64;
    t.set_debug_reg(0, addr).unwrap();
    assert_eq!(t.debug_reg(0).unwrap(), addr);
    let mut d = DebugRegs::new();
    assert_eq!(d.insert(addr, 8, WatchKind::Write), Some(vec![0]));
    t.set_debug_reg(7, d.dr7()).unwrap();
    assert_eq!(t.debug_reg(7).unwrap(), d.dr7());
    assert!(t.debug_reg(4).is_err());

    t.set_debug_regs(&d).unwrap();
    t.set_debug_reg(6, 0).unwrap();
    t.cont(0).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGTRAP));
    let dr6 = t.debug_reg(6).unwrap();
    assert_eq!(
        hit_slots(dr6).collect::<Vec<_>>(),
        vec![0],
        "DR6 = {dr6:#x}"
    );

    t.set_debug_regs(&DebugRegs::new()).unwrap();
    assert_eq!(t.debug_reg(7).unwrap(), 0);
    t.cont(0).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Exited(0));
}
