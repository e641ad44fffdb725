//! The exact state of a task stopped in its user code: what a [`Point`] records and how a later
//! moment is compared with it.
//!
//! A point is the general registers (less what the program cannot observe), the x87/SSE/AVX
//! state and a digest of every writable page of the process. Two moments with equal state have
//! equal futures, so the replay may stop at any visit whose state equals the recorded one.
//! The digest is in [`crate::digest`]. [`step_for_watch`] adds a few memory words the task wrote just before the point, which the
//! replay's in-process filter compares cheaply before the full check.

use anyhow::{Context, Result};
use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    Register,
};
use trace_format::{Point, WatchedWord};

pub use crate::digest::{memory_digest, merge_ranges};
use crate::regs::{to_words, Regs, REGS_WORDS, WORD_NAMES};
use crate::stop::Stop;
use crate::tracee::Tracee;

/// eflags bits a Point compares: CF PF AF ZF SF OF DF.
pub const FLAGS_COMPARED: u64 = 0x0cd5 | 0x0400;

/// Index of `orig_rax` in [`to_words`] order: kernel bookkeeping, not user state.
const ORIG_RAX: usize = trace_format::POINT_IGNORED_REG;
/// Index of `eflags` in [`to_words`] order.
const EFLAGS: usize = 18;
/// The trap flag, which single-stepping sets while the task runs.
const EFLAGS_TF: u64 = 1 << 8;

/// `words` with what a Point does not compare cleared: orig_rax (index 15) zeroed, eflags masked.
pub fn comparable(words: &[u64; REGS_WORDS]) -> [u64; REGS_WORDS] {
    let mut w = *words;
    w[ORIG_RAX] = 0;
    w[EFLAGS] &= FLAGS_COMPARED;
    w
}

// ---------------------------------------------------------------------------------------------
// Stepping for watched words
// ---------------------------------------------------------------------------------------------

/// What one single-stepping pass saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stepped {
    /// Memory the stepped instructions wrote, oldest first, as `(address, size)` pieces of 1,
    /// 2, 4 or 8 bytes.
    pub written: Vec<(u64, u8)>,
    /// The stop that ended the pass when it was not a single step's (another signal, an event,
    /// the task's end); the task stays in that stop.
    pub interrupted: Option<Stop>,
    /// How many instructions were stepped.
    pub steps: usize,
}

/// Largest write of one memory operand recorded (as up to eight 8-byte pieces).
const MAX_OPERAND_BYTES: usize = 64;

/// Single-steps `t` (stopped in user code) until its rip returns to where it started or `max` steps,
/// never stepping an instruction that enters the kernel or traps (syscall, sysenter, int, int3,
/// rdtsc, rdtscp, cpuid, ud2, hlt, ...: stops before it). Records the memory each step wrote
/// (iced-x86 InstructionInfoFactory + register values). If a stop other than the step's SIGTRAP
/// comes (another signal, death), stops stepping and returns it in `interrupted` (the task stays in
/// that stop).
///
/// The first step discards the signal the task may be stopped for (the caller keeps its
/// siginfo if it is to be delivered later). A `pushf` stepped this way would push the trap flag
/// the stepping sets; the pushed word is corrected, so memory is what a native run would have.
pub fn step_for_watch(t: &Tracee, max: usize) -> Result<Stepped> {
    let mut out = Stepped::default();
    let mut factory = InstructionInfoFactory::new();
    let mut regs = t.regs()?;
    let start = regs.rip;
    for n in 0..max {
        if n > 0 && regs.rip == start {
            break;
        }
        let mut bytes = [0u8; 16];
        let len = t.read_mem_partial(regs.rip, &mut bytes);
        let insn = Decoder::with_ip(64, &bytes[..len], regs.rip, DecoderOptions::NONE).decode();
        if must_not_step(&insn) {
            tracing::trace!(rip = regs.rip, insn = ?insn.mnemonic(), "step_for_watch: stop before");
            break;
        }
        let writes = written_by(&mut factory, &insn, &regs);
        if is_popf(&insn) {
            emulate_popf(t, &insn)?;
            out.steps += 1;
            regs = t.regs()?;
            continue;
        }
        t.step(0)?;
        let stop = t.wait()?;
        if !is_step_trap(t, stop)? {
            out.interrupted = Some(stop);
            break;
        }
        out.written.extend(writes);
        out.steps += 1;
        if matches!(insn.mnemonic(), Mnemonic::Pushf | Mnemonic::Pushfq)
            && regs.eflags & EFLAGS_TF == 0
        {
            clear_pushed_tf(t, &insn)?;
        }
        regs = t.regs()?;
    }
    Ok(out)
}

/// Single-steps one instruction of `t` and returns the stop it reached; a `pushf` stepped
/// this way has the trap flag the stepping sets cleared from the pushed image (as
/// [`step_for_watch`] does), so the program never picks it up.
pub fn step_one(t: &Tracee) -> Result<Option<Stop>> {
    let regs = t.regs()?;
    let mut bytes = [0u8; 16];
    let len = t.read_mem_partial(regs.rip, &mut bytes);
    let insn = Decoder::with_ip(64, &bytes[..len], regs.rip, DecoderOptions::NONE).decode();
    if is_popf(&insn) {
        emulate_popf(t, &insn)?;
        return Ok(None);
    }
    t.step(0)?;
    let stop = t.wait()?;
    if matches!(insn.mnemonic(), Mnemonic::Pushf | Mnemonic::Pushfq)
        && regs.eflags & EFLAGS_TF == 0
        && is_step_trap(t, stop)?
    {
        clear_pushed_tf(t, &insn)?;
    }
    Ok(Some(stop))
}

/// Whether `insn` is a `popf`/`popfq`.
fn is_popf(insn: &Instruction) -> bool {
    matches!(insn.mnemonic(), Mnemonic::Popf | Mnemonic::Popfq)
}

/// Runs the `popf`/`popfq` `insn` at the stopped task's `rip` by hand: single-stepping one
/// makes the kernel lose track of the trap flag the stepping set (it then treats it as the
/// program's, and leaves it set when the task is continued: a stray `SIGTRAP` later).
fn emulate_popf(t: &Tracee, insn: &Instruction) -> Result<()> {
    let mut regs = t.regs()?;
    let size = if insn.mnemonic() == Mnemonic::Popfq {
        8
    } else {
        2
    };
    let mut b = [0u8; 8];
    t.read_mem(regs.rsp, &mut b[..size])
        .context("reading the flags a popf pops")?;
    let value = u64::from_le_bytes(b);
    regs.eflags = if size == 8 {
        value
    } else {
        (regs.eflags & !0xffff) | value
    };
    regs.rsp += size as u64;
    regs.rip = insn.next_ip();
    t.set_regs(&regs).context("emulating a popf")
}

/// Whether `stop` is the SIGTRAP of a completed single step (kernel-sent, not a `kill`).
pub fn is_step_trap(t: &Tracee, stop: Stop) -> Result<bool> {
    if stop != Stop::Signal(libc::SIGTRAP) {
        return Ok(false);
    }
    let (_, code) = crate::tracee::signo_code(&t.siginfo()?);
    Ok(code > 0)
}

/// After stepping a `pushf`: clears the trap flag in the pushed image (at the new rsp).
fn clear_pushed_tf(t: &Tracee, insn: &Instruction) -> Result<()> {
    let rsp = t.regs()?.rsp;
    let size = if insn.mnemonic() == Mnemonic::Pushfq {
        8
    } else {
        2
    };
    let mut b = [0u8; 8];
    t.read_mem(rsp, &mut b[..size])
        .context("reading the flags a stepped pushf pushed")?;
    if u64::from_le_bytes(b) & EFLAGS_TF != 0 {
        let v = u64::from_le_bytes(b) & !EFLAGS_TF;
        t.write_mem(rsp, &v.to_le_bytes()[..size])
            .context("clearing the trap flag a stepped pushf pushed")?;
    }
    Ok(())
}

/// Whether `insn` enters the kernel, traps, or cannot be stepped faithfully.
fn must_not_step(insn: &Instruction) -> bool {
    if insn.is_invalid() || insn.is_privileged() {
        return true;
    }
    if matches!(
        insn.flow_control(),
        FlowControl::Interrupt | FlowControl::Exception | FlowControl::XbeginXabortXend
    ) {
        return true;
    }
    matches!(
        insn.mnemonic(),
        Mnemonic::Syscall
            | Mnemonic::Sysenter
            | Mnemonic::Sysexit
            | Mnemonic::Sysret
            | Mnemonic::Int
            | Mnemonic::Int1
            | Mnemonic::Int3
            | Mnemonic::Into
            | Mnemonic::Iret
            | Mnemonic::Iretd
            | Mnemonic::Iretq
            | Mnemonic::Rdtsc
            | Mnemonic::Rdtscp
            | Mnemonic::Rdpmc
            | Mnemonic::Cpuid
            | Mnemonic::Ud0
            | Mnemonic::Ud1
            | Mnemonic::Ud2
            | Mnemonic::Hlt
            | Mnemonic::In
            | Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Out
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd
            | Mnemonic::Xbegin
            | Mnemonic::Xabort
            | Mnemonic::Xend
            | Mnemonic::Vmcall
            | Mnemonic::Vmmcall
            | Mnemonic::Vmfunc
            | Mnemonic::Encls
            | Mnemonic::Enclu
    )
}

/// The memory `insn` (about to run with `regs`) writes, as pieces of 1, 2, 4 or 8 bytes.
/// Operands whose address cannot be computed (vector-indexed scatters) or size is unknown
/// are left out: the watch is a filter, leaving a word out only makes it less selective.
fn written_by(
    factory: &mut InstructionInfoFactory,
    insn: &Instruction,
    regs: &Regs,
) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    for mem in factory.info(insn).used_memory() {
        if !matches!(
            mem.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            continue;
        }
        let Some(addr) = mem.virtual_address(0, |reg, _, _| register_value(reg, regs)) else {
            continue;
        };
        let size = mem.memory_size().size().min(MAX_OPERAND_BYTES);
        pieces(addr, size, &mut out);
    }
    out
}

/// Splits `[addr, addr + size)` into pieces of 8, then 4, 2 and 1 bytes.
fn pieces(addr: u64, size: usize, out: &mut Vec<(u64, u8)>) {
    let mut off = 0;
    while off < size {
        let rest = size - off;
        let n = [8, 4, 2, 1].into_iter().find(|&n| n <= rest).unwrap_or(1);
        out.push((addr.wrapping_add(off as u64), n as u8));
        off += n;
    }
}

/// The value of a general register (any width) or a segment base, for address computation.
fn register_value(reg: Register, r: &Regs) -> Option<u64> {
    let full = match reg {
        Register::ES | Register::CS | Register::SS | Register::DS => return Some(0),
        Register::FS => return Some(r.fs_base),
        Register::GS => return Some(r.gs_base),
        Register::RIP | Register::EIP => return Some(r.rip),
        _ if reg.is_gpr() => reg.full_register(),
        _ => return None,
    };
    let value = match full {
        Register::RAX => r.rax,
        Register::RCX => r.rcx,
        Register::RDX => r.rdx,
        Register::RBX => r.rbx,
        Register::RSP => r.rsp,
        Register::RBP => r.rbp,
        Register::RSI => r.rsi,
        Register::RDI => r.rdi,
        Register::R8 => r.r8,
        Register::R9 => r.r9,
        Register::R10 => r.r10,
        Register::R11 => r.r11,
        Register::R12 => r.r12,
        Register::R13 => r.r13,
        Register::R14 => r.r14,
        Register::R15 => r.r15,
        _ => return None,
    };
    Some(match reg.size() {
        1 if reg.is_gpr8()
            && matches!(
                reg,
                Register::AH | Register::CH | Register::DH | Register::BH
            ) =>
        {
            (value >> 8) & 0xff
        }
        1 => value & 0xff,
        2 => value & 0xffff,
        4 => value & 0xffff_ffff,
        _ => value,
    })
}

/// The current values of up to `limit` (most recently written first, deduplicated) words.
///
/// A piece whose bytes all lie in pieces already taken is a duplicate; pieces that cannot be
/// read now are left out.
pub fn watch_values(t: &Tracee, written: &[(u64, u8)], limit: usize) -> Vec<WatchedWord> {
    let mut out: Vec<WatchedWord> = Vec::new();
    for &(addr, size) in written.iter().rev() {
        if out.len() >= limit {
            break;
        }
        if size == 0 || size > 8 {
            continue;
        }
        if covered(&out, addr, size) {
            continue;
        }
        let mut b = [0u8; 8];
        if t.read_mem_partial(addr, &mut b[..usize::from(size)]) != usize::from(size) {
            continue;
        }
        out.push(WatchedWord {
            addr,
            size,
            value: u64::from_le_bytes(b),
        });
    }
    out
}

/// Whether every byte of `[addr, addr + size)` lies in one of `words`.
fn covered(words: &[WatchedWord], addr: u64, size: u8) -> bool {
    (0..u64::from(size)).all(|i| {
        let a = addr.wrapping_add(i);
        words
            .iter()
            .any(|w| a >= w.addr && a - w.addr < u64::from(w.size))
    })
}

/// Bytes on each side of the stack pointer whose words [`stack_words`] watches: the red zone
/// below it, as much of the frame above it.
const STACK_WATCH_BYTES: u64 = 128;

/// Up to `limit` words of the stack around `rsp` (`[rsp - 128, rsp + 128)`: a leaf function's
/// red zone, a frame's locals), with their values, outside `excluded` and not wholly in
/// `taken`: where unoptimized code keeps a loop's counters. An outer loop's counter is written
/// only once per pass of the inner loop, too seldom for the steps past a point to see it
/// written, yet it is what tells the point's visit from the thousands of others with the same
/// registers (rr's `vfork_done`: a 100 × 1 000 000 loop at `-O0`). Watched words only filter
/// candidate moments (the memory digest, which covers these words too, decides), so more of
/// them never make a wrong match; words above the stack pointer first (nearest first), then
/// the red zone's.
pub fn stack_words(
    t: &Tracee,
    rsp: u64,
    excluded: &[(u64, u64)],
    taken: &[WatchedWord],
    limit: usize,
) -> Vec<WatchedWord> {
    let rsp = rsp & !7;
    let above = (0..STACK_WATCH_BYTES / 8).map(|i| rsp.wrapping_add(8 * i));
    let below = (1..=STACK_WATCH_BYTES / 8).map(|i| rsp.wrapping_sub(8 * i));
    let overlaps = |a: u64, s: u64, e: u64| a < e && a.wrapping_add(8) > s;
    let mut out = Vec::new();
    for addr in above.chain(below) {
        if out.len() >= limit {
            break;
        }
        // (A word a watched one covers only in part still tells more: `-O0` keeps an inner
        // loop's counter and the outer one's side by side.)
        if covered(taken, addr, 8) || excluded.iter().any(|&(s, e)| overlaps(addr, s, e)) {
            continue;
        }
        let mut b = [0u8; 8];
        if t.read_mem_partial(addr, &mut b) != 8 {
            continue;
        }
        out.push(WatchedWord {
            addr,
            size: 8,
            value: u64::from_le_bytes(b),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Points
// ---------------------------------------------------------------------------------------------

/// The Point `t` is stopped at now.
///
/// `regs` holds the [`comparable`] registers (what a Point compares). Watched words that
/// overlap an `excluded` range are dropped: the kernel may write there at another moment in
/// the replay.
pub fn capture(
    t: &Tracee,
    excluded: Vec<(u64, u64)>,
    watch: Vec<WatchedWord>,
    ticks: u32,
) -> Result<Point> {
    let regs = comparable(&to_words(&t.regs()?));
    let fpregs = t.fp_regs()?.to_bytes();
    let digest = memory_digest(t, &excluded)?;
    let watch = watch
        .into_iter()
        .filter(|w| {
            let end = w.addr.saturating_add(u64::from(w.size));
            !excluded.iter().any(|&(s, e)| w.addr < e && s < end)
        })
        .collect();
    Ok(Point {
        regs,
        fpregs,
        digest,
        excluded,
        watch,
        ticks,
    })
}

/// How the stopped task's state differs from `p` (empty = identical): register names, "FP state",
/// "memory". `extra_excluded` is added to `p.excluded` (the replayer's scratch mapping).
pub fn differences(t: &Tracee, p: &Point, extra_excluded: &[(u64, u64)]) -> Result<Vec<String>> {
    let now = comparable(&to_words(&t.regs()?));
    let want = comparable(&p.regs);
    let mut out: Vec<String> = (0..REGS_WORDS)
        .filter(|&i| now[i] != want[i])
        .map(|i| WORD_NAMES[i].to_string())
        .collect();
    if t.fp_regs()?.to_bytes() != p.fpregs {
        out.push("FP state".into());
    }
    let mut excluded = p.excluded.clone();
    excluded.extend_from_slice(extra_excluded);
    if memory_digest(t, &excluded)? != p.digest {
        out.push("memory".into());
    }
    Ok(out)
}

/// The resume flag: suppresses instruction breakpoints for one instruction.
const EFLAGS_RF: u64 = 1 << 16;

/// Makes a debug exception at the current instruction the stopped task's last trap, without
/// running any instruction: a hardware execution breakpoint on `rip` fires before the instruction
/// executes.
///
/// The kernel copies the number and error code of a thread's last trap into every signal frame
/// it writes later (`sigcontext.trapno`/`err`), also for asynchronous signals. The recorder's
/// single steps and the replayer's breakpoints are different traps, so without this the frames
/// (and the stale copies of them left below the stack pointer, which a point's memory digest
/// covers) would differ between a recording and its replay. Both call this right before
/// delivering an asynchronous signal, so every such frame says "debug exception, error 0".
///
/// Resuming discards a signal the task is stopped to deliver: the caller delivers it afterwards
/// from the returned `SIGTRAP` stop (set its siginfo, resume with it). Returns `None` when done,
/// the task then being in that `SIGTRAP` stop at the same `rip`, or the stop that came instead
/// (another pending signal, the task's death), the task then being in that stop.
pub fn settle_trap(t: &Tracee) -> Result<Option<Stop>> {
    let mut r = t.regs()?;
    if r.eflags & EFLAGS_RF != 0 {
        r.eflags &= !EFLAGS_RF;
        t.set_regs(&r)?;
    }
    run_to_breakpoint(t, r.rip)
}

/// Resumes stopped task `t` with a hardware execution breakpoint at `addr` (a free debug
/// register if there is one, else the last, put back afterwards) until it stops. `None` when
/// it stopped at that breakpoint, or the stop that came instead (a signal, its death), the
/// task then being in that stop.
fn run_to_breakpoint(t: &Tracee, addr: u64) -> Result<Option<Stop>> {
    let dr7 = t.debug_reg(7)?;
    let slot = (0..4).find(|i| (dr7 >> (2 * i)) & 0b11 == 0).unwrap_or(3);
    let saved_addr = t.debug_reg(slot)?;
    // Slot `slot`: locally enabled, R/W = 00 (execute), LEN = 00 (one byte).
    let fields = (0b11 << (2 * slot)) | (0b1111 << (16 + 4 * slot));
    t.set_debug_reg(7, dr7 & !fields)?;
    t.set_debug_reg(slot, addr)?;
    t.set_debug_reg(7, (dr7 & !fields) | (1 << (2 * slot)))?;
    t.cont(0)?;
    let stop = t.wait();
    if matches!(stop, Ok(s) if s.is_end()) {
        return stop.map(Some);
    }
    t.set_debug_reg(7, dr7 & !fields)?;
    t.set_debug_reg(slot, saved_addr)?;
    t.set_debug_reg(7, dr7)?;
    let stop = stop?;
    let dr6 = t.debug_reg(6)?;
    t.set_debug_reg(6, 0)?;
    let ours =
        stop == Stop::Signal(libc::SIGTRAP) && dr6 & (1 << slot) != 0 && t.regs()?.rip == addr;
    Ok(if ours { None } else { Some(stop) })
}

/// Whether `insn` is a string instruction with a repeat prefix (`rep movsb`, `repe cmpsb`,
/// ...): one instruction the CPU interrupts between its iterations, so that a task can stop in
/// the middle of it, its `rip` at the instruction and its counters part-way.
fn is_repeated_string(insn: &iced_x86::Instruction) -> bool {
    (insn.has_rep_prefix() || insn.has_repe_prefix() || insn.has_repne_prefix())
        && insn.is_string_instruction()
}

/// If stopped task `t` is at a repeated string instruction (see [`is_repeated_string`]), runs
/// it to its end: a point is never taken inside one, where replay could not find it again (a
/// breakpoint or trampoline at its address sees it only as it starts, with other registers).
/// Until the next instruction through a hardware breakpoint (it always falls through), as
/// single steps would take one per iteration. Returns `None` when done or not needed (the task
/// then stopped at the next instruction, or where it was), or the stop that came instead (a
/// signal, its death), the task then being in that stop.
pub fn finish_string_insn(t: &Tracee) -> Result<Option<Stop>> {
    let r = t.regs()?;
    let mut bytes = [0u8; 16];
    let len = t.read_mem_partial(r.rip, &mut bytes);
    let insn = Decoder::with_ip(64, &bytes[..len], r.rip, DecoderOptions::NONE).decode();
    if insn.is_invalid() || !is_repeated_string(&insn) {
        return Ok(None);
    }
    run_to_breakpoint(t, insn.next_ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparable_clears_orig_rax_and_masks_flags() {
        let mut w = [7u64; REGS_WORDS];
        w[ORIG_RAX] = 0x3c;
        w[EFLAGS] = 0x346 | EFLAGS_TF | (1 << 16);
        let c = comparable(&w);
        assert_eq!(c[ORIG_RAX], 0);
        // ZF, PF (0x44) and DF (0x400) stay; IF, TF, RF and the reserved bit go.
        assert_eq!(c[EFLAGS], 0x44);
        assert_eq!(c[EFLAGS] & FLAGS_COMPARED, c[EFLAGS]);
        assert_eq!(&c[..ORIG_RAX], &w[..ORIG_RAX]);
        assert_eq!(comparable(&c), c);
        w[EFLAGS] = 0x400 | 0x800 | 0x1 | 0x4 | 0x10 | 0x40 | 0x80;
        assert_eq!(comparable(&w)[EFLAGS], w[EFLAGS]);
    }

    #[test]
    fn pieces_split_by_size() {
        let mut v = Vec::new();
        pieces(0x1000, 8, &mut v);
        pieces(0x2000, 15, &mut v);
        pieces(0x3000, 1, &mut v);
        assert_eq!(
            v,
            vec![
                (0x1000, 8),
                (0x2000, 8),
                (0x2008, 4),
                (0x200c, 2),
                (0x200e, 1),
                (0x3000, 1)
            ]
        );
    }

    fn writes_of(bytes: &[u8], regs: &Regs) -> Vec<(u64, u8)> {
        let insn = Decoder::with_ip(64, bytes, regs.rip, DecoderOptions::NONE).decode();
        written_by(&mut InstructionInfoFactory::new(), &insn, regs)
    }

    fn regs() -> Regs {
        let mut r = crate::regs::from_words(&[0; REGS_WORDS]);
        r.rip = 0x40_0000;
        r.rsp = 0x7fff_0000;
        r.rax = 0x1000;
        r.rbx = 0x2000;
        r.rcx = 3;
        r.fs_base = 0x7000_0000;
        r
    }

    #[test]
    fn writes_of_stores_pushes_and_calls() {
        let r = regs();
        // mov [rax+rcx*8+0x10], rbx
        assert_eq!(
            writes_of(&[0x48, 0x89, 0x5c, 0xc8, 0x10], &r),
            vec![(0x1028, 8)]
        );
        // mov dword [rbx], 1
        assert_eq!(writes_of(&[0xc7, 0x03, 1, 0, 0, 0], &r), vec![(0x2000, 4)]);
        // add [rip+0x100], eax (rip-relative: next ip is rip + 6)
        assert_eq!(
            writes_of(&[0x01, 0x05, 0x00, 0x01, 0, 0], &r),
            vec![(0x40_0106, 4)]
        );
        // mov rax, [rbx]: a read only
        assert!(writes_of(&[0x48, 0x8b, 0x03], &r).is_empty());
        // push rax
        assert_eq!(writes_of(&[0x50], &r), vec![(0x7ffe_fff8, 8)]);
        // call rel32
        assert_eq!(writes_of(&[0xe8, 0, 0, 0, 0], &r), vec![(0x7ffe_fff8, 8)]);
        // mov fs:[0x28], rax
        assert_eq!(
            writes_of(&[0x64, 0x48, 0x89, 0x04, 0x25, 0x28, 0, 0, 0], &r),
            vec![(0x7000_0028, 8)]
        );
        // movups [rax], xmm0: 16 bytes as two words
        assert_eq!(
            writes_of(&[0x0f, 0x11, 0x00], &r),
            vec![(0x1000, 8), (0x1008, 8)]
        );
        // mov byte [eax], 1 (32-bit addressing)
        let mut r32 = r;
        r32.rax = 0xffff_ffff_0000_1234;
        assert_eq!(writes_of(&[0x67, 0xc6, 0x00, 1], &r32), vec![(0x1234, 1)]);
    }

    #[test]
    fn kernel_entries_and_traps_are_not_stepped() {
        let decode = |b: &[u8]| Decoder::with_ip(64, b, 0, DecoderOptions::NONE).decode();
        for bytes in [
            &[0x0f, 0x05][..],         // syscall
            &[0x0f, 0x34],             // sysenter
            &[0xcd, 0x80],             // int 0x80
            &[0xcc],                   // int3
            &[0x0f, 0x31],             // rdtsc
            &[0x0f, 0x01, 0xf9],       // rdtscp
            &[0x0f, 0xa2],             // cpuid
            &[0x0f, 0x0b],             // ud2
            &[0xf4],                   // hlt
            &[0xe4, 0x60],             // in al, 0x60
            &[0xee],                   // out dx, al
            &[0xc7, 0xf8, 0, 0, 0, 0], // xbegin
            &[0x0f],                   // truncated
        ] {
            assert!(must_not_step(&decode(bytes)), "{bytes:x?}");
        }
        for bytes in [
            &[0x90][..],               // nop
            &[0x48, 0x0f, 0xc7, 0xf0], // rdrand rax
            &[0x48, 0x0f, 0xc7, 0xf8], // rdseed rax
            &[0x9c],                   // pushf
            &[0xe8, 0, 0, 0, 0],       // call
            &[0xc3],                   // ret
            &[0xf3, 0xa4],             // rep movsb
        ] {
            assert!(!must_not_step(&decode(bytes)), "{bytes:x?}");
        }
    }

    #[test]
    fn register_values_of_every_width() {
        let mut r = regs();
        r.rdx = 0x1122_3344_5566_7788;
        assert_eq!(
            register_value(Register::RDX, &r),
            Some(0x1122_3344_5566_7788)
        );
        assert_eq!(register_value(Register::EDX, &r), Some(0x5566_7788));
        assert_eq!(register_value(Register::DX, &r), Some(0x7788));
        assert_eq!(register_value(Register::DL, &r), Some(0x88));
        assert_eq!(register_value(Register::DH, &r), Some(0x77));
        assert_eq!(register_value(Register::GS, &r), Some(0));
        assert_eq!(register_value(Register::FS, &r), Some(0x7000_0000));
        assert_eq!(register_value(Register::XMM0, &r), None);
    }
}
