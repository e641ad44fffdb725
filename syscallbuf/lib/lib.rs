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

mod files;
mod mem;

use abi::*;
use files::{mapped_file, replay_fd};
use core::arch::global_asm;
use core::mem::MaybeUninit;
use core::ptr::{addr_of, addr_of_mut, read_unaligned, write_unaligned};

/// The configuration, written by deja at load time (zero, i.e. no magic, until then).
#[no_mangle]
pub static mut deja_config: Config = Config {
    magic: 0,
    mode: 0,
    specs: [Spec::NONE; MAX_NR],
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
/// The result of a call refused with `ENOSYS`.
const ENOSYS: i64 = 38;
/// `mmap` flags.
const MAP_FIXED: u64 = 0x10;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
/// Results at or above this (as unsigned) are `-errno`.
const MAX_ERRNO_RESULT: u64 = -4095i64 as u64;
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
    pub(crate) fn deja_untraced_syscall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64;
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
        MODE_REPLAY => replay(cfg, regs, hdr, slot),
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

/// What a call's arguments gave its spec's conditions (see [`check`]).
struct Checked {
    /// The size of the [`COND_IN`] case matched (0 when none).
    case_size: u64,
    /// The argument a [`COND_WORD_CLEAR`] read a word through, and that word: the kernel gets
    /// the copy's address in its place.
    word: Option<(usize, u64)>,
}

/// `value` as a condition of `width` compares it.
#[inline(always)]
fn narrow(value: u64, width: u8) -> u64 {
    if width == 4 {
        value & 0xffff_ffff
    } else {
        value
    }
}

const SYS_RT_SIGPENDING: u64 = 127;
const SYS_GETPID: u64 = 39;
const SYS_PROCESS_VM_READV: u64 = 310;

/// The 64-bit word at `addr` of the program's memory, read by the kernel
/// (`process_vm_readv` of the calling process): `None` where the program's own syscall would
/// have failed with `EFAULT` (unmapped, unreadable), instead of a fault in the library.
unsafe fn read_word(addr: u64) -> Option<u64> {
    let mut w = 0u64;
    let local = Iovec {
        base: &mut w as *mut u64 as u64,
        len: 8,
    };
    let remote = Iovec { base: addr, len: 8 };
    let pid = deja_untraced_syscall(SYS_GETPID, 0, 0, 0, 0, 0, 0);
    let r = deja_untraced_syscall(
        SYS_PROCESS_VM_READV,
        pid as u64,
        &local as *const Iovec as u64,
        1,
        &remote as *const Iovec as u64,
        1,
        0,
    );
    (r == 8).then_some(w)
}

/// Checks `spec`'s conditions on `args` (`recording`: [`COND_NOT_PENDING`] too); `None` when
/// one fails.
unsafe fn check(spec: &Spec, args: &[u64; 6], recording: bool) -> Option<Checked> {
    let mut c = Checked {
        case_size: 0,
        word: None,
    };
    for cond in &spec.conds {
        if cond.kind == COND_NONE {
            continue;
        }
        let a = arg(args, cond.arg)?;
        if cond.unless_zero != 0 && arg(args, cond.unless_zero - 1)? == 0 {
            continue;
        }
        let v = narrow(a, cond.width);
        let ok = match cond.kind {
            COND_EQ => v == narrow(cond.value, cond.width),
            COND_MASK_EQ => v & (cond.value >> 32) == cond.value & 0xffff_ffff,
            COND_NE => v != narrow(cond.value, cond.width),
            COND_IN => match spec
                .cases
                .iter()
                .find(|k| k.used == CASE_USED && narrow(k.value, cond.width) == v)
            {
                Some(k) => {
                    c.case_size = k.size as u64;
                    true
                }
                None => false,
            },
            COND_WORD_CLEAR if a == 0 => true,
            COND_NOT_PENDING if !recording || a == 0 => true,
            COND_NOT_PENDING => {
                let word = match c.word {
                    Some((i, w)) if i == cond.arg as usize => w,
                    _ => read_word(a)?,
                };
                let mut pending = 0u64;
                let r = deja_untraced_syscall(
                    SYS_RT_SIGPENDING,
                    &mut pending as *mut u64 as u64,
                    8,
                    0,
                    0,
                    0,
                    0,
                );
                r == 0 && pending & word == 0
            }
            COND_WORD_CLEAR if c.word.is_none() => {
                // Read by the kernel: a bad pointer fails the condition, and the traced path
                // gets the kernel's EFAULT.
                let w = read_word(a)?;
                c.word = Some((cond.arg as usize, w));
                w & cond.value == 0
            }
            _ => false,
        };
        if !ok {
            return None;
        }
    }
    Some(c)
}

/// The arguments the kernel gets for a call whose conditions gave `c`: the program's, but for
/// a word the library copied, whose copy `*word` replaces it.
#[inline(always)]
fn kernel_args(args: &[u64; 6], c: &Checked, word: &u64) -> [u64; 6] {
    let mut k = *args;
    if let Some((i, _)) = c.word {
        k[i % 6] = word as *const u64 as u64;
    }
    k
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
    let Some(checked) = check(spec, &args, true) else {
        return TRACED;
    };
    // SAFETY: the slot is mapped; the recorder writes `yield_asked` (one aligned word) while
    // the thread runs.
    let yield_asked = addr_of_mut!(hdr.yield_asked);
    if yield_asked.read_volatile() != 0 {
        yield_asked.write_volatile(0);
        return TRACED;
    }
    // The copy of a word the conditions read, which the kernel reads in its place.
    let word = checked.word.map_or(0, |(_, w)| w);
    let kargs = kernel_args(&args, &checked, &word);
    // The iovecs of an OUT_IOV output (or of the readv probe), copied so that the kernel and
    // the record see the same ones.
    // (Left uninitialized: zeroing 1 KiB at every call cost a tenth of a buffered `read`.)
    let mut iovs: [MaybeUninit<Iovec>; MAX_IOV] = [const { MaybeUninit::uninit() }; MAX_IOV];
    let mut niov = 0usize;
    let mut need = RECORD_HEAD_SIZE;
    for out in &spec.outs {
        let more = match out.kind {
            OUT_NONE => 0,
            OUT_FIXED if out.arg < 6 => write_size(out.size as u64),
            OUT_CASE if out.arg < 6 => write_size(checked.case_size),
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
                for (i, slot) in iovs.iter_mut().take(niov).enumerate() {
                    // SAFETY: the program passed this iovec array to the syscall; a bad pointer
                    // faults here where the kernel would have returned EFAULT (README.md).
                    let iov = slot.write(read_unaligned((ptr as *const Iovec).add(i)));
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
    // An `mmap`: of private anonymous memory, or of a file version the trace keeps (see
    // `PROBE_PLACE`).
    let mut file = 0u32;
    if spec.probe == PROBE_PLACE {
        match mapped_file(&args) {
            Some(f) => file = f,
            None => return TRACED,
        }
    }
    // SAFETY: the first `niov` entries were written above (`niov` is 0 otherwise).
    let iovs: &[Iovec] = core::slice::from_raw_parts(iovs.as_ptr() as *const Iovec, niov);
    let result = match spec.probe {
        PROBE_DIRECT | PROBE_EXEC | PROBE_PLACE => deja_untraced_syscall(
            nr, kargs[0], kargs[1], kargs[2], kargs[3], kargs[4], kargs[5],
        ),
        PROBE_ENOSYS => -ENOSYS,
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
    if !matches!(
        spec.probe,
        PROBE_DIRECT | PROBE_EXEC | PROBE_PLACE | PROBE_ENOSYS
    ) && result < 0
    {
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
                OUT_CASE => {
                    let addr = args[out.arg as usize % 6];
                    if addr != 0 && checked.case_size != 0 {
                        w.write(addr, checked.case_size);
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
                    for iov in iovs {
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
        file,
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

unsafe fn replay(cfg: &Config, regs: &mut Saved, hdr: &mut SlotHeader, slot: *mut u8) -> u64 {
    let pos = hdr.pos;
    let used = hdr.used;
    // After a divergence every call takes the traced path: the task stops at once, and the
    // replayer reports it.
    if hdr.diverged != 0 || used > BUF_SIZE || pos > used || RECORD_HEAD_SIZE > used - pos {
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
    let spec = cfg.specs.get(head.nr as usize).copied().unwrap_or(Spec::NONE);
    // The record's arguments are the call's: only a word read through one can fail now.
    let Some(checked) = check(&spec, &regs.args, false) else {
        hdr.diverged_how = DIVERGED_COND;
        return diverge(hdr);
    };
    if spec.probe == PROBE_PLACE && head.file != 0 && head.result as u64 >= MAX_ERRNO_RESULT {
        // A file's mapping that failed: nothing to make (see `PROBE_PLACE`).
        regs.rax = head.result as u64;
        consume(hdr, pos + size);
        return HANDLED;
    }
    if spec.probe == PROBE_EXEC || spec.probe == PROBE_PLACE {
        // Run for real: the kernel writes the outputs; its result must be the recorded one.
        let word = checked.word.map_or(0, |(_, w)| w);
        let mut k = kernel_args(&regs.args, &checked, &word);
        if spec.probe == PROBE_PLACE && (head.result as u64) < MAX_ERRNO_RESULT {
            // Where the recording's call placed the memory (see `PROBE_PLACE`).
            k[0] = head.result as u64;
            if k[3] & MAP_FIXED == 0 {
                k[3] |= MAP_FIXED_NOREPLACE;
            }
            if head.file != 0 {
                match replay_fd(head.file - 1) {
                    Some(fd) => k[4] = fd,
                    None => {
                        hdr.diverged_how = DIVERGED_FILE;
                        return diverge(hdr);
                    }
                }
            }
        }
        let result = deja_untraced_syscall(head.nr as u64, k[0], k[1], k[2], k[3], k[4], k[5]);
        regs.rax = result as u64;
        if result != head.result {
            hdr.exec_result = result as u64;
            hdr.diverged_how = DIVERGED_RESULT;
            hdr.diverged = pos + 1;
        } else {
            consume(hdr, pos + size);
        }
        return HANDLED;
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
    consume(hdr, pos + size);
    HANDLED
}

/// Replaying: the record before `next` is answered: the slot moves past it and counts it.
#[inline(always)]
fn consume(hdr: &mut SlotHeader, next: u64) {
    hdr.pos = next;
    hdr.calls = hdr.calls.wrapping_add(1);
    hdr.seq = hdr.seq.wrapping_add(1);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: ud2 raises SIGILL; nothing is reachable after it.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
