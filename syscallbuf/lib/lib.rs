//! deja's in-process library (see ../README.md): a `no_std`, allocation-free, libc-free shared
//! object loaded at `abi::LIB_BASE` in every recorded and replayed process. Its entry point
//! `deja_syscall_hook` is called by the per-site stubs deja writes over `syscall` instructions.
//!
//! Built by `../build.rs` with `$RUSTC` directly; it must not import any symbol and must carry
//! only `R_X86_64_RELATIVE` relocations (build.rs checks both).

#![no_std]
#![allow(clippy::missing_safety_doc)]

#[path = "../abi.rs"]
#[allow(dead_code)]
mod abi;

mod mem;

use abi::*;
use core::arch::global_asm;
use core::ptr::{addr_of, addr_of_mut, read_unaligned, write_unaligned};

/// The configuration, written by deja at load time (zero, i.e. no magic, until then).
#[no_mangle]
pub static mut deja_config: Config = Config {
    magic: 0,
    mode: 0,
    specs: [Spec {
        probe: 0,
        pad: [0; 7],
        outs: [OutSpec {
            kind: 0,
            arg: 0,
            count_arg: 0,
            pad: 0,
            size: 0,
        }; 2],
    }; MAX_NR],
};

/// The registers the hook's assembly saves on the slot's stack, in memory order.
#[repr(C)]
struct Saved {
    /// Syscall number on entry; the result when the call is handled.
    rax: u64,
    /// rdi, rsi, rdx, r10, r8, r9.
    args: [u64; 6],
    rcx: u64,
    r11: u64,
    pad: u64,
}

const SYS_PREADV2: u64 = 327;
const RWF_NOWAIT: u64 = 8;
/// Most iovecs a buffered `readv` may have (they are copied onto the slot's stack).
const MAX_IOV: usize = 64;

/// The hook's return values.
const HANDLED: u64 = 0;
const TRACED: u64 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

global_asm!(
    // The entry: see README.md for the contract.
    ".text",
    ".globl deja_syscall_hook",
    ".type deja_syscall_hook,@function",
    "deja_syscall_hook:",
    "pushfq",
    "push rax",
    "movabs rax, {config_magic}",
    "cmp rax, qword ptr [rip + deja_config]",
    "jne 8f",
    "mov rax, qword ptr [rip + deja_config + 8]",
    "cmp rax, {mode_record}",
    "je 2f",
    "cmp rax, {mode_replay}",
    "jne 8f",
    "2:",
    "movabs rax, {slot_magic}",
    "cmp rax, qword ptr gs:[8]",
    "jne 8f",
    "test qword ptr gs:[{off_flags}], {disabled}",
    "jnz 8f",
    "cmp qword ptr gs:[{off_locked}], 0",
    "jne 8f",
    "pop rax",
    // rsp -> the program's flags, then the return address into the stub.
    "mov qword ptr gs:[{off_locked}], 1",
    "mov qword ptr gs:[{off_saved_rsp}], rsp",
    "mov rsp, qword ptr gs:[{off_stack_top}]",
    "sub rsp, 8",
    "push r11",
    "push rcx",
    "push r9",
    "push r8",
    "push r10",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rax",
    // rsp = stack_top - 80: 16-byte aligned, and points at a `Saved`.
    // The library's code uses no x87, MMX or AVX state and never changes MXCSR (checked by
    // the host crate's tests): saving the sixteen XMM registers preserves all it touches,
    // at a fraction of fxsave64's cost.
    "movdqa xmmword ptr gs:[{fxsave_off} + 0], xmm0",
    "movdqa xmmword ptr gs:[{fxsave_off} + 16], xmm1",
    "movdqa xmmword ptr gs:[{fxsave_off} + 32], xmm2",
    "movdqa xmmword ptr gs:[{fxsave_off} + 48], xmm3",
    "movdqa xmmword ptr gs:[{fxsave_off} + 64], xmm4",
    "movdqa xmmword ptr gs:[{fxsave_off} + 80], xmm5",
    "movdqa xmmword ptr gs:[{fxsave_off} + 96], xmm6",
    "movdqa xmmword ptr gs:[{fxsave_off} + 112], xmm7",
    "movdqa xmmword ptr gs:[{fxsave_off} + 128], xmm8",
    "movdqa xmmword ptr gs:[{fxsave_off} + 144], xmm9",
    "movdqa xmmword ptr gs:[{fxsave_off} + 160], xmm10",
    "movdqa xmmword ptr gs:[{fxsave_off} + 176], xmm11",
    "movdqa xmmword ptr gs:[{fxsave_off} + 192], xmm12",
    "movdqa xmmword ptr gs:[{fxsave_off} + 208], xmm13",
    "movdqa xmmword ptr gs:[{fxsave_off} + 224], xmm14",
    "movdqa xmmword ptr gs:[{fxsave_off} + 240], xmm15",
    "mov rdi, rsp",
    "mov rsi, qword ptr gs:[{off_self}]",
    "cld",
    "call {handle}",
    "movdqa xmm0, xmmword ptr gs:[{fxsave_off} + 0]",
    "movdqa xmm1, xmmword ptr gs:[{fxsave_off} + 16]",
    "movdqa xmm2, xmmword ptr gs:[{fxsave_off} + 32]",
    "movdqa xmm3, xmmword ptr gs:[{fxsave_off} + 48]",
    "movdqa xmm4, xmmword ptr gs:[{fxsave_off} + 64]",
    "movdqa xmm5, xmmword ptr gs:[{fxsave_off} + 80]",
    "movdqa xmm6, xmmword ptr gs:[{fxsave_off} + 96]",
    "movdqa xmm7, xmmword ptr gs:[{fxsave_off} + 112]",
    "movdqa xmm8, xmmword ptr gs:[{fxsave_off} + 128]",
    "movdqa xmm9, xmmword ptr gs:[{fxsave_off} + 144]",
    "movdqa xmm10, xmmword ptr gs:[{fxsave_off} + 160]",
    "movdqa xmm11, xmmword ptr gs:[{fxsave_off} + 176]",
    "movdqa xmm12, xmmword ptr gs:[{fxsave_off} + 192]",
    "movdqa xmm13, xmmword ptr gs:[{fxsave_off} + 208]",
    "movdqa xmm14, xmmword ptr gs:[{fxsave_off} + 224]",
    "movdqa xmm15, xmmword ptr gs:[{fxsave_off} + 240]",
    // Neither pop nor mov changes the flags `test` sets.
    "test rax, rax",
    "pop rax",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop r10",
    "pop r8",
    "pop r9",
    "pop rcx",
    "pop r11",
    "mov rsp, qword ptr gs:[{off_saved_rsp}]",
    "mov qword ptr gs:[{off_locked}], 0",
    "jnz 9f",
    // Handled: rax = result.
    "mov r11, qword ptr [rsp]",
    "mov rcx, qword ptr [rsp + 8]",
    "popfq",
    "ret",
    // The traced path, with every register as at entry.
    "8:",
    "pop rax",
    "9:",
    "popfq",
    ".globl deja_traced_syscall",
    "deja_traced_syscall:",
    "syscall",
    ".globl deja_traced_syscall_end",
    "deja_traced_syscall_end:",
    // The kernel set r11 to the flags at the `syscall`: the program's flags at entry.
    "mov rcx, qword ptr [rsp]",
    "ret",
    ".size deja_syscall_hook, . - deja_syscall_hook",
    "",
    // extern "C" fn(nr, a0, a1, a2, a3, a4, a5) -> i64: the untraced syscall.
    ".globl deja_untraced_syscall",
    ".hidden deja_untraced_syscall",
    ".type deja_untraced_syscall,@function",
    "deja_untraced_syscall:",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, qword ptr [rsp + 8]",
    "syscall",
    ".globl deja_untraced_syscall_end",
    "deja_untraced_syscall_end:",
    "ret",
    ".size deja_untraced_syscall, . - deja_untraced_syscall",
    config_magic = const CONFIG_MAGIC,
    mode_record = const MODE_RECORD,
    mode_replay = const MODE_REPLAY,
    slot_magic = const SLOT_MAGIC,
    off_flags = const OFF_FLAGS,
    disabled = const SLOT_DISABLED,
    off_locked = const OFF_LOCKED,
    off_saved_rsp = const OFF_SAVED_RSP,
    off_stack_top = const OFF_STACK_TOP,
    off_self = const OFF_SELF,
    fxsave_off = const FXSAVE_OFF,
    handle = sym deja_handle,
);

extern "C" {
    fn deja_untraced_syscall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64;
}

/// Called by the hook's assembly on the slot's stack with the saved registers and the slot's
/// address; returns `HANDLED` (the result is in `regs.rax`) or `TRACED`.
unsafe extern "C" fn deja_handle(regs: *mut Saved, slot: *mut u8) -> u64 {
    // SAFETY: the assembly passes a pointer to the `Saved` it pushed on the slot's stack, and
    // the address of the slot (gs:[0], checked with the magic), which is mapped read-write.
    let regs = &mut *regs;
    let hdr = &mut *(slot as *mut SlotHeader);
    // SAFETY: deja writes the configuration before the program runs; nothing else writes it.
    let cfg = &*addr_of!(deja_config);
    match cfg.mode {
        MODE_RECORD => record(cfg, regs, hdr, slot),
        MODE_REPLAY => replay(regs, hdr, slot),
        _ => TRACED,
    }
}

#[inline(always)]
fn round8(n: u64) -> u64 {
    n.saturating_add(7) & !7
}

/// The worst-case size of one write of at most `len` bytes.
#[inline(always)]
fn write_size(len: u64) -> u64 {
    WRITE_HEAD_SIZE.saturating_add(round8(len))
}

fn arg(args: &[u64; 6], i: u8) -> Option<u64> {
    args.get(i as usize).copied()
}

unsafe fn record(cfg: &Config, regs: &mut Saved, hdr: &mut SlotHeader, slot: *mut u8) -> u64 {
    let nr = regs.rax;
    let args = regs.args;
    let Some(spec) = cfg.specs.get(nr as usize) else {
        return TRACED;
    };
    if spec.probe == PROBE_NONE {
        return TRACED;
    }
    // The iovecs of an OUT_IOV output (or of the readv probe), copied so that the kernel and
    // the record see the same ones.
    let mut iovs = [Iovec { base: 0, len: 0 }; MAX_IOV];
    let mut niov = 0usize;
    let mut need = RECORD_HEAD_SIZE;
    for out in &spec.outs {
        let more = match out.kind {
            OUT_NONE => 0,
            OUT_FIXED if out.arg < 6 => write_size(out.size as u64),
            OUT_RET if out.arg < 6 => match arg(&args, out.count_arg) {
                Some(len) => write_size(len),
                None => return TRACED,
            },
            OUT_IOV => {
                let (Some(ptr), Some(cnt)) = (arg(&args, out.arg), arg(&args, out.count_arg))
                else {
                    return TRACED;
                };
                if cnt as usize > MAX_IOV || niov != 0 {
                    return TRACED;
                }
                niov = cnt as usize;
                let mut sum = 0u64;
                for (i, iov) in iovs.iter_mut().take(niov).enumerate() {
                    // SAFETY: the program passed this iovec array to the syscall; a bad pointer
                    // faults here where the kernel would have returned EFAULT (README.md).
                    *iov = read_unaligned((ptr as *const Iovec).add(i));
                    if iov.len != 0 {
                        sum = sum.saturating_add(write_size(iov.len));
                    }
                }
                sum
            }
            _ => return TRACED,
        };
        need = need.saturating_add(more);
    }
    let used = hdr.used;
    if used > BUF_SIZE || need > BUF_SIZE - used {
        return TRACED;
    }
    let result = match spec.probe {
        PROBE_DIRECT => {
            deja_untraced_syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5])
        }
        PROBE_READ | PROBE_PREAD => {
            let pos = if spec.probe == PROBE_PREAD {
                if (args[3] as i64) < 0 {
                    return TRACED;
                }
                args[3]
            } else {
                u64::MAX
            };
            let iov = Iovec {
                base: args[1],
                len: args[2],
            };
            deja_untraced_syscall(
                SYS_PREADV2,
                args[0],
                &iov as *const Iovec as u64,
                1,
                pos,
                0,
                RWF_NOWAIT,
            )
        }
        PROBE_READV => {
            // The kernel reads the copied iovecs (identical to the program's, unless another
            // thread changes them meanwhile, which the record must not follow).
            if niov as u64 != args[2] {
                // The spec's OUT_IOV must describe this call's iovecs.
                return TRACED;
            }
            deja_untraced_syscall(
                SYS_PREADV2,
                args[0],
                iovs.as_ptr() as u64,
                args[2],
                u64::MAX,
                0,
                RWF_NOWAIT,
            )
        }
        _ => return TRACED,
    };
    // SAFETY: the slot is mapped; the recorder writes `interrupted` only while the thread is
    // stopped.
    let interrupted = addr_of_mut!(hdr.interrupted);
    if interrupted.read_volatile() != 0 {
        interrupted.write_volatile(0);
        return TRACED;
    }
    if spec.probe != PROBE_DIRECT && result < 0 {
        return TRACED;
    }

    let buf = slot.add(BUF_OFF as usize);
    let start = used as usize;
    // The writes go at `off` (relative to the record's start); `need` bounds them all.
    let mut w = Writer {
        base: buf.add(start),
        off: RECORD_HEAD_SIZE,
        cap: need,
        nwrites: 0,
    };
    if result >= 0 {
        for out in &spec.outs {
            match out.kind {
                OUT_FIXED => {
                    let addr = args[out.arg as usize % 6];
                    if addr != 0 {
                        w.write(addr, out.size as u64);
                    }
                }
                OUT_RET => {
                    let max = args[out.count_arg as usize % 6];
                    let n = (result as u64).min(max);
                    if n > 0 {
                        w.write(args[out.arg as usize % 6], n);
                    }
                }
                OUT_IOV => {
                    let mut left = result as u64;
                    for iov in iovs.iter().take(niov) {
                        if left == 0 {
                            break;
                        }
                        let n = iov.len.min(left);
                        if n > 0 {
                            w.write(iov.base, n);
                            left -= n;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let head = RecordHead {
        size: w.off as u32,
        nr: nr as u32,
        args,
        result,
        nwrites: w.nwrites,
        pad: 0,
    };
    // SAFETY: `used` + `need` <= BUF_SIZE, and `need` >= RECORD_HEAD_SIZE; `used` is a multiple
    // of 8 as every record's size is (unaligned writes all the same).
    write_unaligned(buf.add(start) as *mut RecordHead, head);
    hdr.used = used + w.off;
    hdr.calls = hdr.calls.wrapping_add(1);
    hdr.seq = hdr.seq.wrapping_add(1);
    regs.rax = result as u64;
    HANDLED
}

/// Appends writes (`addr`, `len`, bytes padded to 8) after a record's head, never past `cap`.
struct Writer {
    base: *mut u8,
    off: u64,
    cap: u64,
    nwrites: u32,
}

impl Writer {
    unsafe fn write(&mut self, addr: u64, len: u64) {
        let size = write_size(len);
        if size > self.cap.saturating_sub(self.off) {
            // Cannot happen: `cap` is the worst case computed before the call.
            return;
        }
        // SAFETY: within the record's reserved space in the slot's buffer; the source is memory
        // the kernel just wrote successfully.
        let p = self.base.add(self.off as usize);
        write_unaligned(p as *mut u64, addr);
        write_unaligned(p.add(8) as *mut u64, len);
        let data = p.add(WRITE_HEAD_SIZE as usize);
        mem::copy(data, addr as *const u8, len as usize);
        let pad = round8(len) - len;
        mem::fill(data.add(len as usize), 0, pad as usize);
        self.off += size;
        self.nwrites += 1;
    }
}

unsafe fn replay(regs: &mut Saved, hdr: &mut SlotHeader, slot: *mut u8) -> u64 {
    let pos = hdr.pos;
    let used = hdr.used;
    if used > BUF_SIZE || pos > used || RECORD_HEAD_SIZE > used - pos {
        return TRACED;
    }
    let buf = slot.add(BUF_OFF as usize);
    let rec = buf.add(pos as usize);
    // SAFETY: pos + RECORD_HEAD_SIZE <= used <= BUF_SIZE: inside the slot's buffer.
    let head: RecordHead = read_unaligned(rec as *const RecordHead);
    let size = head.size as u64;
    let diverge = |hdr: &mut SlotHeader| {
        hdr.diverged = pos + 1;
        TRACED
    };
    if size < RECORD_HEAD_SIZE || size & 7 != 0 || size > used - pos {
        return diverge(hdr);
    }
    if head.nr as u64 != regs.rax || head.args != regs.args {
        return diverge(hdr);
    }
    // Validate every write before applying any.
    let mut off = RECORD_HEAD_SIZE;
    for _ in 0..head.nwrites {
        if WRITE_HEAD_SIZE > size - off {
            return diverge(hdr);
        }
        let len = read_unaligned(rec.add(off as usize + 8) as *const u64);
        let wsize = write_size(len);
        if wsize > size - off {
            return diverge(hdr);
        }
        off += wsize;
    }
    if off != size {
        return diverge(hdr);
    }
    let mut off = RECORD_HEAD_SIZE as usize;
    for _ in 0..head.nwrites {
        let addr = read_unaligned(rec.add(off) as *const u64);
        let len = read_unaligned(rec.add(off + 8) as *const u64);
        // SAFETY: checked above to lie within the record; the destination is the program's
        // memory the recorded call wrote (same address space layout in replay).
        mem::copy(
            addr as *mut u8,
            rec.add(off + WRITE_HEAD_SIZE as usize),
            len as usize,
        );
        off += write_size(len) as usize;
    }
    regs.rax = head.result as u64;
    hdr.pos = pos + size;
    hdr.calls = hdr.calls.wrapping_add(1);
    hdr.seq = hdr.seq.wrapping_add(1);
    HANDLED
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: ud2 raises SIGILL; nothing is reachable after it.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
