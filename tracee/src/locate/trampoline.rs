//! The locator's trampoline: the code patched over a point's instruction that compares the
//! task's registers and watched words in the program itself and traps only on a match, then
//! runs the moved instructions and jumps back (see [`super::Locator`]).

use anyhow::{bail, Context, Result};
use iced_x86::code_asm::{
    byte_ptr, dword_ptr, ecx, qword_ptr, r10, r11, r11b, r11d, r11w, r12, r13, r14, r15, r8, r9,
    rax, rbp, rbx, rcx, rdi, rdx, rsi, rsp, word_ptr, AsmRegister64, CodeAssembler, CodeLabel,
};
use iced_x86::{
    BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction, MemoryOperand,
    Mnemonic, Register,
};
use trace_format::WatchedWord;

use super::*;
use crate::maps::MapEntry;
use crate::state::FLAGS_COMPARED;

/// Decodes the instructions covering `[rip, rip + 5)`, checks they can be moved, finds a
/// scratch address and assembles the trampoline for it; with `pun`, a punned jump if the
/// instruction at `rip` is shorter than 5 bytes and one can reach a free window (see
/// [`punned_target`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn build_trampoline(
    t: &Tracee,
    point: &Point,
    watch: &[WatchedWord],
    quick: &[Check],
    counting: bool,
    maps: &[MapEntry],
    avoid: &[(u64, u64)],
    free_slots: &[usize],
    pun: bool,
) -> Result<Trampoline> {
    let rip = point.regs[RIP];
    let map = maps
        .iter()
        .find(|m| rip >= m.start && rip < m.end)
        .with_context(|| format!("the point {rip:#x} is not mapped"))?;
    if !map.perms.contains('x') {
        bail!("the point {rip:#x} is not in executable memory");
    }
    let mut bytes = vec![0u8; 32.min((map.end - rip) as usize)];
    let n = t.read_mem_partial(rip, &mut bytes);
    bytes.truncate(n);
    let mut decoder = Decoder::with_ip(64, &bytes, rip, DecoderOptions::NONE);
    let mut insns = Vec::new();
    let mut covered = 0usize;
    while covered < JMP_LEN {
        if !decoder.can_decode() {
            bail!("the code at {rip:#x} ends before 5 bytes of whole instructions");
        }
        let insn = decoder.decode();
        if insn.is_invalid() {
            bail!("an undecodable instruction at {:#x}", insn.ip());
        }
        covered += insn.len();
        insns.push(insn);
    }
    if let Some(why) = unmovable(&insns[0]) {
        bail!("{why} at {rip:#x} cannot be moved");
    }
    let end = rip + covered as u64;
    if let Some(&(s, e)) = avoid.iter().find(|&&(s, e)| s < end && e > rip) {
        bail!("the bytes to patch, [{rip:#x}, {end:#x}), overlap a breakpoint at [{s:#x}, {e:#x})");
    }
    let heap = crate::maps::heap_start(t.pid().as_raw());
    // A punned jump: when the point's instruction is shorter than the `jmp`, the bytes after it
    // can stay the program's, as the last bytes of the `jmp`'s displacement, if the trampoline
    // goes where they make it jump. The instructions there are then neither moved nor guarded:
    // a branch to them (a loop entered there) runs them untouched, where a guard would stop the
    // task each time.
    let point_len = insns[0].len();
    // The jump's bytes, prefixes included, must be the program's own: not a breakpoint's.
    let punned = if pun && insns.len() >= 2 {
        punned_target(maps, heap, rip, point_len, &bytes).filter(|p| {
            let end = rip + (JMP_LEN + p.prefixes) as u64;
            !avoid.iter().any(|&(s, e)| s < end && e > rip)
        })
    } else {
        None
    };
    let (insns, patched, base, entry, prefixes) = match punned {
        Some(p) => (&insns[..1], point_len, p.base, p.entry, p.prefixes),
        None => {
            if let Some(why) = insns[1..].iter().find_map(unmovable) {
                bail!("{why} among the instructions at {rip:#x} cannot be moved");
            }
            let base = choose_gap(maps, rip, heap).with_context(|| {
                format!(
                    "no free {SCRATCH_SIZE}-byte gap within 2 GiB of {rip:#x} for the trampoline"
                )
            })?;
            (&insns[..], covered, base, base, 0)
        }
    };
    let end = rip + patched as u64;
    if insns.len() - 1 > free_slots.len() {
        bail!(
            "{} instruction boundaries inside the patched bytes need guards, {} debug register(s) \
             are free",
            insns.len() - 1,
            free_slots.len()
        );
    }
    let guards: Vec<(usize, u64)> = free_slots
        .iter()
        .copied()
        .zip(insns[1..].iter().map(|i| i.ip()))
        .collect();
    let Assembled {
        code,
        resume,
        relocated,
    } = assemble(base, entry, point, watch, quick, counting, insns, end)?;
    let rel = entry.wrapping_sub(rip + (JMP_LEN + prefixes) as u64) as i64;
    let rel = i32::try_from(rel).context("the trampoline is out of jmp's reach")?;
    // REX.W, which a near jmp ignores in 64-bit mode.
    let mut patch = vec![0x48; prefixes];
    patch.push(0xe9);
    patch.extend_from_slice(&rel.to_le_bytes());
    if punned.is_some() {
        if patch.get(patched..) != bytes.get(patched..patch.len()) {
            bail!("the punned jump's displacement does not end with the program's bytes");
        }
        patch.truncate(patched);
    } else {
        patch.resize(covered, 0xcc);
    }
    Ok(Trampoline {
        base,
        punned: punned.is_some(),
        entry,
        mapped: false,
        code,
        resume,
        original: bytes[..patched].to_vec(),
        patch,
        guards,
        relocated,
    })
}

/// Where a punned jump goes: the scratch mapping, the trampoline's first instruction in it,
/// the prefixes before the `jmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Punned {
    base: u64,
    entry: u64,
    prefixes: usize,
}

/// Where a punned jump at `rip` can reach a trampoline, when the instruction at `rip` is
/// `len` bytes long (less than the `jmp`'s 5) and the ones after it are to stay in place
/// (`code`: the program's bytes from `rip`). The bytes from `rip + len` on are the last of
/// the `jmp`'s displacement, so they fix where it goes within a window: `len - 1` free bytes
/// of displacement give 256^(len - 1) addresses. Each prefix before the `jmp` (`REX.W`,
/// ignored by a near `jmp`) takes a free byte and moves the window. (The technique of
/// E9Patch, Duck et al., PLDI 2020.) The trampoline's first instruction need not start a
/// page: the code has two pages.
fn punned_target(
    maps: &[MapEntry],
    heap: Option<u64>,
    rip: u64,
    len: usize,
    code: &[u8],
) -> Option<Punned> {
    if len == 0 || len >= JMP_LEN {
        return None;
    }
    for prefixes in 0..len {
        let free = len - 1 - prefixes;
        let fixed = 4 - free;
        if code.len() < len + fixed {
            return None;
        }
        let mut rel = [0u8; 4];
        rel[free..].copy_from_slice(&code[len..len + fixed]);
        let width = 1u64 << (8 * free);
        let from = rip + (JMP_LEN + prefixes) as u64;
        let lo = from.wrapping_add(i64::from(i32::from_le_bytes(rel)) as u64);
        let hi = lo.wrapping_add(width);
        if lo >= hi {
            continue;
        }
        let found = if width >= 2 * SCRATCH_SIZE {
            // Wide: the free page-aligned room nearest the window's middle, if inside.
            choose_gap(maps, lo + width / 2, heap)
                .filter(|&b| b >= lo && b + SCRATCH_SIZE <= hi)
                .map(|b| (b, b))
        } else {
            // Narrow: a page start in it, or its first address.
            let entry = match (lo + PAGE - 1) & !(PAGE - 1) {
                q if q < hi => q,
                _ => lo,
            };
            let base = entry & !(PAGE - 1);
            (choose_gap(maps, base, heap) == Some(base)).then_some((base, entry))
        };
        if let Some((base, entry)) = found {
            return Some(Punned {
                base,
                entry,
                prefixes,
            });
        }
    }
    None
}

/// Why `insn` cannot run relocated in the trampoline, if it cannot.
pub(crate) fn unmovable(insn: &Instruction) -> Option<&'static str> {
    if insn.is_invalid() {
        return Some("an undecodable instruction");
    }
    match insn.flow_control() {
        FlowControl::Call | FlowControl::IndirectCall => {
            return Some("a call (its return address would be the trampoline's)")
        }
        FlowControl::Interrupt | FlowControl::Exception | FlowControl::XbeginXabortXend => {
            return Some("a trapping or transactional instruction")
        }
        _ => {}
    }
    match insn.mnemonic() {
        Mnemonic::Syscall
        | Mnemonic::Sysenter
        | Mnemonic::Int
        | Mnemonic::Int1
        | Mnemonic::Int3
        | Mnemonic::Into
        | Mnemonic::Ud0
        | Mnemonic::Ud1
        | Mnemonic::Ud2
        | Mnemonic::Hlt
        | Mnemonic::Rdtsc
        | Mnemonic::Rdtscp
        | Mnemonic::Cpuid => Some("an instruction that enters the kernel or is emulated"),
        _ => None,
    }
}

/// The free, page-aligned `SCRATCH_SIZE` range nearest to `rip` within `rel32` reach, outside
/// the room of the heap that starts at `heap` (see [`maps::gap_near_outside_heap`]: a page
/// there would make the replay's `brk` fail where the recording's did not).
pub(super) fn choose_gap(maps: &[MapEntry], rip: u64, heap: Option<u64>) -> Option<u64> {
    maps::gap_near_outside_heap(maps, rip, SCRATCH_SIZE, heap)
}

/// A RIP-relative memory operand at absolute address `addr` (iced's convention: the encoder
/// turns it into a displacement from the next instruction).
fn at(addr: u64) -> MemoryOperand {
    MemoryOperand::with_base_displ(Register::RIP, addr as i64)
}

/// One test of the trampoline's quick filter: a value that must equal the point's.
#[derive(Debug, Clone)]
pub(super) enum Check {
    /// The general register at this index of [`regs::to_words`].
    Reg(usize),
    /// A watched word.
    Word(WatchedWord),
}

/// The general registers the quick filter may test, as indices of [`regs::to_words`] (in the
/// order it prefers: the ones compilers use first for loop variables first).
pub(super) const QUICK_REGS: [usize; 16] = [10, 11, 12, 5, 4, 13, 14, 8, 9, 7, 3, 2, 1, 0, 6, 19];

/// The register of index `i` of [`regs::to_words`], one of [`QUICK_REGS`].
fn gpr(i: usize) -> Result<AsmRegister64> {
    Ok(match i {
        0 => r15,
        1 => r14,
        2 => r13,
        3 => r12,
        4 => rbp,
        5 => rbx,
        6 => r11,
        7 => r10,
        8 => r9,
        9 => r8,
        10 => rax,
        11 => rcx,
        12 => rdx,
        13 => rsi,
        14 => rdi,
        19 => rsp,
        _ => bail!("register word {i} is not a general register"),
    })
}

/// An assembled trampoline.
struct Assembled {
    code: Vec<u8>,
    /// The address after its `int3`.
    resume: u64,
    /// The `(new, original)` addresses of the relocated instructions and of the jump back.
    relocated: Vec<(u64, u64)>,
}

/// Assembles the trampoline at `base`.
///
/// ```text
///   ; the quick filter (flag-free: lea and jrcxz), if there are quick checks or counting:
///   mov [rcx_save], rcx ; mov [r11_save], r11
///   (counting: mov rcx, [visits] ; lea rcx, [rcx + 1] ; mov [visits], rcx)
///   for each quick check: rcx = value - expected (mov rcx, -expected ; lea rcx, [reg + rcx],
///   or mov rcx, addr ; mov rcx, [rcx] ; mov r11, -expected ; lea rcx, [rcx + r11]) ;
///   jrcxz next ; jmp fast_miss ; next:
///   (after the first one, instead of jmp fast_miss: mov rcx, [rcx_save] ;
///   mov r11, [r11_save] ; <a copy of the relocated original instructions> ; jmp back)
///   mov rcx, [rcx_save] ; mov r11, [r11_save]
///   ; the full filter:
///   mov [r11_save], r11 ; mov [rsp_save], rsp ; lea rsp, [stack_top] ; pushfq
///   add qword [visits], 1 (unless counting)
///   cmp each of rax rcx rdx rbx rbp rsi rdi r8 r9 r10 r12-r15 with its value ; jne miss
///   cmp [rsp_save] and [r11_save] with theirs ; jne miss
///   mov r11, [rsp] ; and r11, FLAGS_COMPARED ; cmp r11, flags ; jne miss
///   mov [r10_save], r10 ; for each watched word: mov r10, addr ; cmp size [r10], value ;
///   jne miss_r10 ; ... ; mov r10, [r10_save]
///   popfq ; mov rsp, [rsp_save] ; mov r11, [r11_save] ; int3
/// resume:
///   <the relocated original instructions> ; jmp back
/// miss_r10: mov r10, [r10_save]
/// miss: popfq ; mov rsp, [rsp_save] ; mov r11, [r11_save] ; jmp resume
/// fast_miss: mov rcx, [rcx_save] ; mov r11, [r11_save] ; jmp resume
/// ```
///
/// The quick filter exists because the full one costs about 7 ns a visit, mostly its
/// `pushfq`/`popfq` (the compares change the flags), about 20 times the iteration of a tight
/// loop; `lea` and `jrcxz` change no flags, so a visit the quick filter rejects costs a few
/// cycles. Its checks are some of the full filter's, exactly (a 64-bit difference is zero if
/// and only if the values are equal), so it changes which visits trap in no way.
#[allow(clippy::too_many_arguments)]
fn assemble(
    base: u64,
    entry: u64,
    point: &Point,
    watch: &[WatchedWord],
    quick: &[Check],
    counting: bool,
    insns: &[Instruction],
    back: u64,
) -> Result<Assembled> {
    let data = base + DATA_PAGE;
    let w = &point.regs;
    let mut a = CodeAssembler::new(64)?;
    let mut miss: CodeLabel = a.create_label();
    let mut miss_r10: CodeLabel = a.create_label();
    let mut resume: CodeLabel = a.create_label();
    let mut fast_miss: CodeLabel = a.create_label();
    let raw = |a: &mut CodeAssembler, i: Instruction| a.add_instruction(i);

    let prefilter = counting || !quick.is_empty();
    // `lea rcx, [rcx + disp32]` subtracts `v` when `-v` fits a sign-extended disp32; otherwise
    // `r11` holds `-v`.
    let disp = |v: u64| i32::try_from(v.wrapping_neg() as i64).ok();
    let r11_used = quick.iter().any(|c| match c {
        Check::Reg(11) => disp(w[11]).is_none(),
        Check::Reg(_) => false,
        Check::Word(ww) => disp(ww.value & size_mask(ww.size)).is_none(),
    });
    // The registers the quick filter uses, saved in the scratch page.
    let mut spilled = vec![(DATA_RCX, Register::RCX)];
    if r11_used {
        spilled.push((DATA_R11, Register::R11));
    }
    let spilled = if prefilter { spilled } else { Vec::new() };
    for &(slot, reg) in &spilled {
        raw(
            &mut a,
            Instruction::with2(Code::Mov_rm64_r64, at(data + slot), reg)?,
        )?;
    }
    if counting {
        raw(
            &mut a,
            Instruction::with2(Code::Mov_r64_rm64, Register::RCX, at(data + DATA_VISITS))?,
        )?;
        a.lea(rcx, qword_ptr(rcx + 1))?;
        raw(
            &mut a,
            Instruction::with2(Code::Mov_rm64_r64, at(data + DATA_VISITS), Register::RCX)?,
        )?;
    }
    // rcx -= v, flag-free.
    let sub_rcx = |a: &mut CodeAssembler, v: u64| -> Result<()> {
        match disp(v) {
            Some(d) => a.lea(rcx, qword_ptr(rcx + d))?,
            None => {
                a.mov(r11, v.wrapping_neg())?;
                a.lea(rcx, qword_ptr(rcx + r11))?;
            }
        }
        Ok(())
    };
    // Within rel32 reach of anything in the trampoline's code page.
    let near = |addr: u64| addr.abs_diff(base) < (1 << 31) - 2 * SCRATCH_SIZE;
    let mut moved = Vec::new();
    for (k, check) in quick.iter().enumerate() {
        match check {
            Check::Reg(11) => {
                if k > 0 || counting {
                    raw(
                        &mut a,
                        Instruction::with2(Code::Mov_r64_rm64, Register::RCX, at(data + DATA_RCX))?,
                    )?;
                }
                sub_rcx(&mut a, w[11])?;
            }
            &Check::Reg(i) => {
                if i == 6 && r11_used {
                    raw(
                        &mut a,
                        Instruction::with2(Code::Mov_r64_rm64, Register::R11, at(data + DATA_R11))?,
                    )?;
                }
                match disp(w[i]) {
                    Some(d) => a.lea(rcx, qword_ptr(gpr(i)? + d))?,
                    None => {
                        a.mov(rcx, w[i].wrapping_neg())?;
                        a.lea(rcx, qword_ptr(gpr(i)? + rcx))?;
                    }
                }
            }
            Check::Word(ww) => {
                if near(ww.addr) {
                    let code = match ww.size {
                        1 => Code::Movzx_r32_rm8,
                        2 => Code::Movzx_r32_rm16,
                        4 => Code::Mov_r32_rm32,
                        _ => Code::Mov_r64_rm64,
                    };
                    let reg = if ww.size == 8 {
                        Register::RCX
                    } else {
                        Register::ECX
                    };
                    raw(&mut a, Instruction::with2(code, reg, at(ww.addr))?)?;
                } else {
                    a.mov(rcx, ww.addr)?;
                    match ww.size {
                        1 => a.movzx(ecx, byte_ptr(rcx))?,
                        2 => a.movzx(ecx, word_ptr(rcx))?,
                        4 => a.mov(ecx, dword_ptr(rcx))?,
                        _ => a.mov(rcx, qword_ptr(rcx))?,
                    }
                }
                sub_rcx(&mut a, ww.value & size_mask(ww.size))?;
            }
        }
        let mut next = a.create_label();
        a.jrcxz(next)?;
        if k == 0 {
            // The common case, a visit the first check rejects, falls through to a copy of
            // the moved instructions: no taken branch between the patch's jump and the jump
            // back.
            for &(slot, reg) in &spilled {
                raw(
                    &mut a,
                    Instruction::with2(Code::Mov_r64_rm64, reg, at(data + slot))?,
                )?;
            }
            for insn in insns {
                moved.push((a.instructions().len(), insn.ip()));
                // No address of its own: a branch among these instructions to another of
                // them goes to the first copy's (the same instructions), one to the point
                // to the patch.
                let mut insn = *insn;
                insn.set_ip(0);
                a.add_instruction(insn)?;
            }
            moved.push((a.instructions().len(), back));
            a.jmp(back)?;
        } else {
            a.jmp(fast_miss)?;
        }
        a.set_label(&mut next)?;
    }
    for &(slot, reg) in &spilled {
        raw(
            &mut a,
            Instruction::with2(Code::Mov_r64_rm64, reg, at(data + slot))?,
        )?;
    }

    raw(
        &mut a,
        Instruction::with2(Code::Mov_rm64_r64, at(data + DATA_R11), Register::R11)?,
    )?;
    raw(
        &mut a,
        Instruction::with2(Code::Mov_rm64_r64, at(data + DATA_RSP), Register::RSP)?,
    )?;
    raw(
        &mut a,
        Instruction::with2(Code::Lea_r64_m, Register::RSP, at(base + SCRATCH_SIZE))?,
    )?;
    a.pushfq()?;
    if !counting {
        raw(
            &mut a,
            Instruction::with2(Code::Add_rm64_imm8, at(data + DATA_VISITS), 1i32)?,
        )?;
    }

    let direct: [(AsmRegister64, usize); 14] = [
        (rax, 10),
        (rcx, 11),
        (rdx, 12),
        (rbx, 5),
        (rbp, 4),
        (rsi, 13),
        (rdi, 14),
        (r8, 9),
        (r9, 8),
        (r10, 7),
        (r12, 3),
        (r13, 2),
        (r14, 1),
        (r15, 0),
    ];
    for (reg, i) in direct {
        let v = w[i];
        match i32::try_from(v as i64) {
            Ok(imm) => a.cmp(reg, imm)?,
            Err(_) => {
                a.mov(r11, v)?;
                a.cmp(reg, r11)?;
            }
        }
        a.jne(miss)?;
    }
    for (slot, i) in [(DATA_RSP, 19), (DATA_R11, 6)] {
        a.mov(r11, w[i])?;
        raw(
            &mut a,
            Instruction::with2(Code::Cmp_rm64_r64, at(data + slot), Register::R11)?,
        )?;
        a.jne(miss)?;
    }
    a.mov(r11, qword_ptr(rsp))?;
    a.and(r11, FLAGS_COMPARED as i32)?;
    a.cmp(r11, (w[EFLAGS] & FLAGS_COMPARED) as i32)?;
    a.jne(miss)?;
    if !watch.is_empty() {
        raw(
            &mut a,
            Instruction::with2(Code::Mov_rm64_r64, at(data + DATA_R10), Register::R10)?,
        )?;
        for ww in watch {
            let v = ww.value & size_mask(ww.size);
            a.mov(r10, ww.addr)?;
            match ww.size {
                1 => {
                    a.mov(r11b, v as u8 as i32)?;
                    a.cmp(byte_ptr(r10), r11b)?;
                }
                2 => {
                    a.mov(r11w, v as u16 as i32)?;
                    a.cmp(word_ptr(r10), r11w)?;
                }
                4 => {
                    a.mov(r11d, v as u32)?;
                    a.cmp(dword_ptr(r10), r11d)?;
                }
                _ => {
                    a.mov(r11, v)?;
                    a.cmp(qword_ptr(r10), r11)?;
                }
            }
            a.jne(miss_r10)?;
        }
        raw(
            &mut a,
            Instruction::with2(Code::Mov_r64_rm64, Register::R10, at(data + DATA_R10))?,
        )?;
    }
    restore_and(&mut a, data)?;
    a.int3()?;
    a.set_label(&mut resume)?;
    a.zero_bytes()?;
    // Indices in the assembler's list, with the original addresses.
    for (k, insn) in insns.iter().enumerate() {
        moved.push((a.instructions().len(), insn.ip()));
        let mut insn = *insn;
        if k == 0 {
            // The block encoder sends branches aimed at an instruction of the block to its
            // copy; a branch back to the point must reach the patch (a new visit), so the
            // point's copy does not answer to the point's address. (Branches to the others'
            // addresses may use the copies: same instructions, no guard stop.)
            insn.set_ip(0);
        }
        a.add_instruction(insn)?;
    }
    moved.push((a.instructions().len(), back));
    a.jmp(back)?;
    a.set_label(&mut miss_r10)?;
    raw(
        &mut a,
        Instruction::with2(Code::Mov_r64_rm64, Register::R10, at(data + DATA_R10))?,
    )?;
    a.set_label(&mut miss)?;
    restore_and(&mut a, data)?;
    a.jmp(resume)?;
    if prefilter {
        a.set_label(&mut fast_miss)?;
        for &(slot, reg) in &spilled {
            raw(
                &mut a,
                Instruction::with2(Code::Mov_r64_rm64, reg, at(data + slot))?,
            )?;
        }
        a.jmp(resume)?;
    }

    let result = a
        .assemble_options(entry, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .context("assembling the trampoline (relocating the original instructions)")?;
    let resume_ip = result.label_ip(&resume)?;
    let offsets = &result.inner.new_instruction_offsets;
    // An instruction the encoder rewrote into several (a short branch made long) has no
    // offset: a branch stops nowhere in between.
    let relocated = moved
        .into_iter()
        .filter_map(|(i, original)| {
            let off = *offsets.get(i)?;
            (off != u32::MAX).then(|| (entry + u64::from(off), original))
        })
        .collect();
    let code = result.inner.code_buffer;
    if entry - base + code.len() as u64 > DATA_PAGE {
        bail!(
            "the trampoline takes {} bytes from {entry:#x}, past its code pages",
            code.len()
        );
    }
    Ok(Assembled {
        code,
        resume: resume_ip,
        relocated,
    })
}

/// `popfq ; mov rsp, [rsp_save] ; mov r11, [r11_save]`: the program's flags, stack pointer and
/// r11 back.
fn restore_and(a: &mut CodeAssembler, data: u64) -> Result<()> {
    a.popfq()?;
    a.add_instruction(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::RSP,
        at(data + DATA_RSP),
    )?)?;
    a.add_instruction(Instruction::with2(
        Code::Mov_r64_rm64,
        Register::R11,
        at(data + DATA_R11),
    )?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{MIN_ADDR, USER_TOP};

    fn map(start: u64, end: u64, name: &str) -> MapEntry {
        MapEntry {
            start,
            end,
            perms: "r-xp".into(),
            offset: 0,
            dev: "00:00".into(),
            inode: 0,
            name: name.into(),
        }
    }

    #[test]
    fn gap_is_the_nearest_free_one_in_reach_never_under_the_stack() {
        let maps = [
            map(0x40_0000, 0x40_2000, "/prog"),
            map(0x40_3000, 0x40_5000, "/prog"),
            map(0x7fff_f000_0000, 0x7fff_f000_1000, "[stack]"),
        ];
        // The one-page hole between the program's mappings is too small (a page of margin on
        // each side); the nearest room is just above it.
        assert_eq!(choose_gap(&maps, 0x40_1000, None), Some(0x3f_c000));
        // The room between a library and the stack above it is the stack's to grow into.
        let top = [
            map(0x7fff_f7ff_0000, 0x7fff_f7ff_1000, "/lib"),
            map(0x7fff_fffd_e000, USER_TOP, "[stack]"),
        ];
        assert_eq!(
            choose_gap(&top, 0x7fff_f7ff_0800, None),
            Some(0x7fff_f7fe_c000)
        );
        // Nothing in reach at all.
        let far = [map(MIN_ADDR, USER_TOP, "/huge")];
        assert_eq!(choose_gap(&far, 0x40_0000, None), None);
        // Below the first mapping (as near as above it: the first found wins).
        let high = [map(0x1_0000_0000, 0x1_0000_1000, "/lib")];
        assert_eq!(choose_gap(&high, 0x1_0000_0800, None), Some(0xffff_c000));
        // The room above a heap is not free: a page there would make the heap's `brk` fail.
        let heap = [
            map(0x40_0000, 0x50_0000, "/prog"),
            map(0x50_0000, 0x61_0000, "/prog"),
        ];
        assert_eq!(choose_gap(&heap, 0x60_f000, None), Some(0x61_1000));
        let gap = choose_gap(&heap, 0x60_f000, Some(0x61_0000)).expect("a gap");
        assert!(
            !(0x61_0000..0x61_0000 + crate::maps::HEAP_ROOM).contains(&gap),
            "{gap:#x}"
        );
    }

    #[test]
    fn a_punned_jump_lands_where_the_programs_bytes_send_it() {
        let rip = 0x5555_5555_5000;
        let maps = [map(0x5555_5555_4000, 0x5555_5555_6000, "/prog")];
        // A 4-byte instruction, then 0x39: a window 0x39xx_xxxx past the jmp.
        let code = [0x41, 0x8b, 0x34, 0xb0, 0x39, 0xfe, 0x73, 0xce];
        let p = punned_target(&maps, None, rip, 4, &code).expect("a window");
        assert_eq!((p.prefixes, p.entry), (0, p.base));
        let rel = p.entry.wrapping_sub(rip + 5) as i64 as i32;
        assert_eq!(rel.to_le_bytes()[3], 0x39);
        // With the heap's room over that window, a prefix moves it: the top two bytes are
        // then 0xfe39, 0x1c7_0000 below.
        let p = punned_target(&maps, Some(0x5555_5555_6000), rip, 4, &code).expect("a second");
        assert_eq!(p.prefixes, 1);
        let rel = p.entry.wrapping_sub(rip + 6) as i64 as i32;
        assert_eq!(rel.to_le_bytes()[2..], [0x39, 0xfe]);
        // A 2-byte instruction: three bytes fixed, a 256-byte window, entered where it starts
        // (or at a page start in it), the code running on into the second code page.
        let code = [0x73, 0xce, 0x8d, 0x41, 0x1f, 0x83, 0xe0, 0x1f];
        let p = punned_target(&maps, None, rip, 2, &code).expect("a narrow window");
        assert_eq!(p.prefixes, 0);
        assert_eq!(p.base, p.entry & !(PAGE - 1));
        let rel = p.entry.wrapping_sub(rip + 5) as i64 as i32;
        assert_eq!(rel.to_le_bytes()[1..], [0x8d, 0x41, 0x1f]);
        // Below the lowest address a program may map: none.
        let low = [map(0x1_0000, 0x1_2000, "/prog")];
        assert_eq!(
            punned_target(
                &low,
                None,
                0x1_1000,
                4,
                &[0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80]
            ),
            None
        );
    }

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0x40_1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn calls_syscalls_and_traps_are_not_moved() {
        assert!(unmovable(&decode(&[0xe8, 0, 0, 0, 0])).is_some()); // call rel32
        assert!(unmovable(&decode(&[0xff, 0xd0])).is_some()); // call rax
        assert!(unmovable(&decode(&[0x0f, 0x05])).is_some()); // syscall
        assert!(unmovable(&decode(&[0xcc])).is_some()); // int3
        assert!(unmovable(&decode(&[0x0f, 0x31])).is_some()); // rdtsc
        assert!(unmovable(&decode(&[0x0f, 0x0b])).is_some()); // ud2
        assert!(unmovable(&decode(&[0x0f])).is_some()); // truncated
        assert!(unmovable(&decode(&[0x48, 0xff, 0xc0])).is_none()); // inc rax
        assert!(unmovable(&decode(&[0x75, 0xf0])).is_none()); // jne
        assert!(unmovable(&decode(&[0x48, 0x8b, 0x05, 1, 0, 0, 0])).is_none()); // rip-relative
    }

    #[test]
    fn trampoline_traps_then_runs_the_moved_code_and_jumps_back() {
        let base = 0x50_0000;
        let mut regs = [0u64; REGS_WORDS];
        regs[RIP] = 0x40_1000;
        regs[10] = 0x1234_5678_9abc; // rax, not an imm32
        let point = Point {
            regs,
            fpregs: vec![],
            digest: [0; 16],
            excluded: vec![],
            watch: vec![WatchedWord {
                addr: 0x40_3000,
                size: 4,
                value: 7,
            }],
            ticks: 0,
        };
        // `mov rax, [rip + 0x10]` then `jne` back to the point.
        let insns = [
            Decoder::with_ip(64, &[0x48, 0x8b, 0x05, 0x10, 0, 0, 0], 0x40_1000, 0).decode(),
            Decoder::with_ip(64, &[0x75, 0xf7], 0x40_1007, 0).decode(),
        ];
        let asm = assemble(
            base,
            base,
            &point,
            &point.watch,
            &[],
            false,
            &insns,
            0x40_1009,
        )
        .unwrap();
        let code: Vec<Instruction> = Decoder::with_ip(64, &asm.code, base, DecoderOptions::NONE)
            .into_iter()
            .collect();
        let int3 = code
            .iter()
            .position(|i| i.mnemonic() == Mnemonic::Int3)
            .unwrap();
        assert_eq!(code[int3].next_ip(), asm.resume);
        // The moved load still reads the original address; the branch still targets the point.
        let moved = &code[int3 + 1];
        assert_eq!(moved.ip(), asm.resume);
        assert_eq!(moved.ip_rel_memory_address(), 0x40_1007 + 0x10);
        assert_eq!(code[int3 + 2].near_branch_target(), 0x40_1000);
        assert_eq!(code[int3 + 3].mnemonic(), Mnemonic::Jmp);
        assert_eq!(code[int3 + 3].near_branch_target(), 0x40_1009);
        assert_eq!(
            asm.relocated,
            vec![
                (asm.resume, 0x40_1000),
                (code[int3 + 2].ip(), 0x40_1007),
                (code[int3 + 3].ip(), 0x40_1009)
            ]
        );
        // Nothing before the trap touches memory below the program's stack pointer.
        assert!(code[..int3]
            .iter()
            .all(|i| i.memory_base() != Register::RSP || i.mnemonic() == Mnemonic::Mov));
    }
}
