//! Deciding whether a `syscall` site may be patched to jump to a stub, and building the patch
//! and the stub (pure code: the caller reads the function's bytes, writes the results).
//!
//! The patch replaces the `syscall` and the whole instructions after it (at least 5 bytes) by
//! `jmp rel32 stub`; the stub calls the in-process hook, then runs the displaced instructions
//! relocated and jumps back. See `tracee/README.md` ("Patching syscall sites") for why the
//! rules below make this safe.

use std::fmt;

use iced_x86::code_asm::{ptr, rsp, CodeAssembler};
use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, MemoryOperand,
    Mnemonic, OpAccess, OpKind, Register,
};

use crate::maps::{self, MapEntry};

/// Length of `jmp rel32`.
const JMP_LEN: usize = 5;
/// The size of a stub page.
pub const STUB_PAGE: u64 = 4096;

/// A patch for one syscall site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePlan {
    /// Address of the patched window (the `syscall` instruction).
    pub window_start: u64,
    /// The window's original bytes (to check before writing, and to restore).
    pub original: Vec<u8>,
    /// `jmp rel32 stub_addr` padded with `int3` to the window's length.
    pub patch: Vec<u8>,
    /// The stub's code, to be written at `stub_addr`.
    pub stub: Vec<u8>,
    /// Where the stub goes.
    pub stub_addr: u64,
}

impl SitePlan {
    /// One past the window's last byte, where the stub jumps back.
    pub fn window_end(&self) -> u64 {
        self.window_start + self.original.len() as u64
    }
}

/// Why a site is not patched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The function's bytes do not decode (at this address).
    Undecodable(u64),
    /// The site is not the start of an instruction of the linearly decoded function.
    NotAtBoundary(u64),
    /// The instruction at the site is not `syscall`.
    NotSyscall(u64),
    /// The instructions before the `syscall` do not set `eax` to the expected number (the
    /// one right before it, or an earlier one followed only by instructions that leave `rax`
    /// alone).
    NoFixedNumber,
    /// A branch (at this address) lands past the instruction setting the number, up to and
    /// including the `syscall`.
    BranchToSyscall(u64),
    /// A branch (at the first address) lands strictly inside the window (the second).
    BranchIntoWindow(u64, u64),
    /// An indirect jump whose targets cannot be checked (a jump table) at this address.
    JumpTable(u64),
    /// A displaced instruction that cannot run elsewhere.
    Unmovable(u64, &'static str),
    /// The window would run past the function's end.
    PastFunction,
    /// The stub, the hook pointer or the window's end are out of `rel32` reach.
    OutOfReach,
    /// The stub could not be assembled.
    Encoding(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Undecodable(a) => write!(f, "undecodable instruction at {a:#x}"),
            Refusal::NotAtBoundary(a) => write!(f, "{a:#x} is not at an instruction boundary"),
            Refusal::NotSyscall(a) => write!(f, "no syscall instruction at {a:#x}"),
            Refusal::NoFixedNumber => write!(f, "no fixed syscall number"),
            Refusal::BranchToSyscall(from) => {
                write!(
                    f,
                    "a branch at {from:#x} lands on the syscall (its number is not fixed)"
                )
            }
            Refusal::BranchIntoWindow(from, to) => {
                write!(f, "a branch at {from:#x} lands inside the patch at {to:#x}")
            }
            Refusal::JumpTable(a) => write!(f, "an indirect jump (jump table?) at {a:#x}"),
            Refusal::Unmovable(a, why) => {
                write!(f, "instruction at {a:#x} cannot be moved: {why}")
            }
            Refusal::PastFunction => write!(f, "window runs past the function"),
            Refusal::OutOfReach => write!(f, "out of reach"),
            Refusal::Encoding(e) => write!(f, "stub not encodable: {e}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// A free page-aligned address for a stub page ([`STUB_PAGE`] bytes) with all of it within
/// ±2 GiB of `addr`, a page away from other mappings and not under the stack.
pub fn stub_page_near(maps: &[MapEntry], addr: u64) -> Option<u64> {
    maps::gap_near(maps, addr, STUB_PAGE)
}

/// [`stub_page_near`] for task `pid`, outside the room its heap grows into (see
/// [`maps::HEAP_ROOM`]).
pub fn stub_page_near_in(pid: i32, maps: &[MapEntry], addr: u64) -> Option<u64> {
    maps::gap_near_outside_heap(maps, addr, STUB_PAGE, maps::heap_start(pid))
}

/// Whether `insn` sets `eax`/`rax` to the constant `nr` (zero-extending or sign-extending).
fn sets_rax_to(insn: &Instruction, nr: u64) -> bool {
    let op0_is = |r: Register| insn.op0_kind() == OpKind::Register && insn.op0_register() == r;
    match insn.code() {
        // `immediate(1)` zero-extends an imm32 (a 32-bit destination zero-extends too) and
        // sign-extends an imm32to64.
        Code::Mov_r32_imm32 | Code::Mov_rm32_imm32 => {
            op0_is(Register::EAX) && insn.immediate(1) == nr
        }
        Code::Mov_r64_imm64 | Code::Mov_rm64_imm32 => {
            op0_is(Register::RAX) && insn.immediate(1) == nr
        }
        Code::Xor_r32_rm32 | Code::Xor_rm32_r32 | Code::Sub_r32_rm32 | Code::Sub_rm32_r32 => {
            nr == 0
                && op0_is(Register::EAX)
                && insn.op1_kind() == OpKind::Register
                && insn.op1_register() == Register::EAX
        }
        Code::Xor_r64_rm64 | Code::Xor_rm64_r64 | Code::Sub_r64_rm64 | Code::Sub_rm64_r64 => {
            nr == 0
                && op0_is(Register::RAX)
                && insn.op1_kind() == OpKind::Register
                && insn.op1_register() == Register::RAX
        }
        _ => false,
    }
}

/// Most instructions looked through between the one setting the number and the `syscall`.
const MAX_SETTER_DISTANCE: usize = 8;

/// The index in `before` (the instructions before a `syscall`, in order) of the one setting
/// `eax`/`rax` to `nr` ([`sets_rax_to`]), if the instructions after it up to the end of
/// `before` all go on to the next one and write no part of `rax` (a few, e.g. `mov r10, rcx`
/// or `mov esi, 0x81` between `mov eax, NR` and `syscall`).
fn number_setter(before: &[Instruction], nr: u64) -> Option<usize> {
    let mut info = InstructionInfoFactory::new();
    for j in (0..before.len()).rev().take(MAX_SETTER_DISTANCE) {
        let insn = &before[j];
        if sets_rax_to(insn, nr) {
            return Some(j);
        }
        if insn.flow_control() != FlowControl::Next {
            return None;
        }
        let writes_rax = info.info(insn).used_registers().iter().any(|u| {
            u.register().full_register() == Register::RAX
                && !matches!(u.access(), OpAccess::Read | OpAccess::CondRead)
        });
        if writes_rax {
            return None;
        }
    }
    None
}

/// The targets of `insn`'s near-branch operands (jcc, jmp, call, loop, jrcxz, xbegin).
fn near_targets(insn: &Instruction) -> impl Iterator<Item = u64> + '_ {
    let branch = |k: OpKind| {
        matches!(
            k,
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        )
    };
    (0..insn.op_count())
        .filter(move |&i| branch(insn.op_kind(i)))
        .map(move |_| insn.near_branch_target())
}

/// Whether `insn` is an indirect jump whose target is computed (through a register, or a
/// memory operand with an index or a base other than `rip`): a jump table, whose targets
/// cannot be checked. `jmp [rip+x]` (a tail call through the GOT) is not.
fn computed_jump(insn: &Instruction) -> bool {
    if insn.flow_control() != FlowControl::IndirectBranch {
        return false;
    }
    match insn.op0_kind() {
        OpKind::Memory => {
            insn.memory_index() != Register::None
                || !matches!(insn.memory_base(), Register::RIP | Register::None)
        }
        _ => true,
    }
}

/// Whether control can go on to the next instruction after `insn`.
fn falls_through(insn: &Instruction) -> bool {
    !matches!(
        insn.flow_control(),
        FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::IndirectBranch
    )
}

/// Plans the patch of the `syscall` at `syscall_addr`, expected to make syscall
/// `expected_nr`, in the function whose bytes are `code` at `func_start` (its whole extent,
/// e.g. from [`crate::functions::function_bounds`]). The stub is built for `stub_addr` (see
/// [`stub_page_near`]); `hook_ptr` is the address of the 8 bytes holding the hook's address.
///
/// The stub:
///
/// ```text
///   lea rsp, [rsp-128]          ; past the red zone
///   call qword ptr [hook_ptr]   ; rip-relative
///   lea rsp, [rsp+128]
///   <the instructions displaced from after the syscall, relocated>
///   jmp window_end              ; unless the last one does not fall through
/// ```
pub fn plan(
    func_start: u64,
    code: &[u8],
    syscall_addr: u64,
    expected_nr: u64,
    stub_addr: u64,
    hook_ptr: u64,
) -> Result<SitePlan, Refusal> {
    let func_end = func_start + code.len() as u64;
    let insns: Vec<Instruction> = Decoder::with_ip(64, code, func_start, DecoderOptions::NONE)
        .into_iter()
        .collect();
    if let Some(bad) = insns.iter().find(|i| i.is_invalid()) {
        return Err(Refusal::Undecodable(bad.ip()));
    }
    let k = insns
        .iter()
        .position(|i| i.ip() == syscall_addr)
        .ok_or(Refusal::NotAtBoundary(syscall_addr))?;
    if insns[k].mnemonic() != Mnemonic::Syscall {
        return Err(Refusal::NotSyscall(syscall_addr));
    }
    let setter = number_setter(&insns[..k], expected_nr).ok_or(Refusal::NoFixedNumber)?;
    // From the instruction after the setter up to the syscall, nothing may be entered but by
    // falling through from the setter.
    let fixed_from = insns[setter].next_ip();
    // The window: the syscall and whole instructions after it, >= 5 bytes.
    let mut end_k = k + 1;
    let mut window_end = insns[k].next_ip();
    while window_end - syscall_addr < JMP_LEN as u64 {
        let next = insns.get(end_k).ok_or(Refusal::PastFunction)?;
        window_end = next.next_ip();
        end_k += 1;
    }
    if window_end > func_end {
        return Err(Refusal::PastFunction);
    }
    // No branch into the window (nor onto the syscall), no unchecked jump.
    for insn in &insns {
        if computed_jump(insn) {
            return Err(Refusal::JumpTable(insn.ip()));
        }
        for t in near_targets(insn) {
            if t >= fixed_from && t <= syscall_addr {
                return Err(Refusal::BranchToSyscall(insn.ip()));
            }
            if t > syscall_addr && t < window_end {
                return Err(Refusal::BranchIntoWindow(insn.ip(), t));
            }
        }
    }
    // The displaced instructions the stub runs: up to the first that does not fall through
    // (what follows it in the window is reached by no branch: dead, and overwritten).
    let mut moved = Vec::new();
    let mut back = true;
    for insn in &insns[k + 1..end_k] {
        if let Some(why) = crate::locate::unmovable(insn) {
            return Err(Refusal::Unmovable(insn.ip(), why));
        }
        moved.push(*insn);
        if !falls_through(insn) {
            back = false;
            break;
        }
    }
    let reach = |a: u64, b: u64| a.abs_diff(b) < maps::REL32_REACH;
    // What the relocated instructions address relative to rip must stay in reach too.
    let moved_reach = moved.iter().all(|i| {
        (!i.is_ip_rel_memory_operand() || reach(stub_addr, i.ip_rel_memory_address()))
            && near_targets(i).all(|t| reach(stub_addr, t))
    });
    if !reach(syscall_addr, stub_addr)
        || !reach(stub_addr, hook_ptr)
        || !reach(stub_addr, window_end)
        || !moved_reach
    {
        return Err(Refusal::OutOfReach);
    }
    let stub = assemble_stub(stub_addr, hook_ptr, &moved, back.then_some(window_end))
        .map_err(|e| Refusal::Encoding(e.to_string()))?;
    if stub.len() as u64 > STUB_PAGE {
        return Err(Refusal::Encoding(format!("{} bytes", stub.len())));
    }
    let rel = i32::try_from(stub_addr as i64 - (syscall_addr as i64 + JMP_LEN as i64))
        .map_err(|_| Refusal::OutOfReach)?;
    let len = (window_end - syscall_addr) as usize;
    let mut patch = vec![0xe9];
    patch.extend_from_slice(&rel.to_le_bytes());
    patch.resize(len, 0xcc);
    let off = (syscall_addr - func_start) as usize;
    Ok(SitePlan {
        window_start: syscall_addr,
        original: code[off..off + len].to_vec(),
        patch,
        stub,
        stub_addr,
    })
}

/// Assembles the stub at `base` (see [`plan`]).
fn assemble_stub(
    base: u64,
    hook_ptr: u64,
    moved: &[Instruction],
    back: Option<u64>,
) -> Result<Vec<u8>, iced_x86::IcedError> {
    let mut a = CodeAssembler::new(64)?;
    a.lea(rsp, ptr(rsp - 128))?;
    a.add_instruction(Instruction::with1(
        Code::Call_rm64,
        MemoryOperand::with_base_displ(Register::RIP, hook_ptr as i64),
    )?)?;
    a.lea(rsp, ptr(rsp + 128))?;
    for insn in moved {
        a.add_instruction(*insn)?;
    }
    if let Some(back) = back {
        a.jmp(back)?;
    }
    a.assemble(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::{al, eax, edi, esi, r10, rax, rcx, rdx, CodeAssembler};

    fn rip_at(addr: u64) -> MemoryOperand {
        MemoryOperand::with_base_displ(Register::RIP, addr as i64)
    }

    const FUNC: u64 = 0x7f00_0000_1000;
    const STUB: u64 = 0x7f00_1000_0000;
    const HOOK_PTR: u64 = STUB + 0xff8;

    fn decode_all(code: &[u8], ip: u64) -> Vec<Instruction> {
        Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    /// A glibc-`read`-like function at `FUNC`: (bytes, address of its first syscall, of its
    /// second, of the error path E).
    fn glibc_read() -> (Vec<u8>, u64, u64, u64) {
        let mut a = CodeAssembler::new(64).unwrap();
        let mut l = a.create_label();
        let mut e = a.create_label();
        let mut e2 = a.create_label();
        let mut s1 = a.create_label();
        let mut s2 = a.create_label();
        a.add_instruction(
            Instruction::with2(Code::Cmp_rm8_imm8, rip_at(0x7f00_0020_0000), 0).unwrap(),
        )
        .unwrap();
        a.je(l).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut s1).unwrap();
        a.syscall().unwrap();
        a.cmp(rax, -4096).unwrap();
        a.ja(e).unwrap();
        a.ret().unwrap();
        a.set_label(&mut l).unwrap();
        a.push(rdx).unwrap();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut s2).unwrap();
        a.syscall().unwrap();
        a.cmp(rax, -4096).unwrap();
        a.ja(e2).unwrap();
        a.pop(rdx).unwrap();
        a.ret().unwrap();
        a.set_label(&mut e).unwrap();
        a.neg(eax).unwrap();
        a.mov(rax, -1i64).unwrap();
        a.ret().unwrap();
        a.set_label(&mut e2).unwrap();
        a.pop(rdx).unwrap();
        a.jmp(e).unwrap();
        let r = a
            .assemble_options(
                FUNC,
                iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
            )
            .unwrap();
        let (s1, s2, e) = (
            r.label_ip(&s1).unwrap(),
            r.label_ip(&s2).unwrap(),
            r.label_ip(&e).unwrap(),
        );
        (r.inner.code_buffer, s1, s2, e)
    }

    #[test]
    fn plans_glibc_reads_site_over_syscall_and_cmp() {
        let (code, s1, _, _) = glibc_read();
        let p = plan(FUNC, &code, s1, 0, STUB, HOOK_PTR).unwrap();
        // syscall (2) + cmp rax, -4096 (6).
        assert_eq!(p.window_start, s1);
        assert_eq!(p.original.len(), 8);
        assert_eq!(p.window_end(), s1 + 8);
        let off = (s1 - FUNC) as usize;
        assert_eq!(p.original, code[off..off + 8]);
        let rel = (STUB as i64 - (s1 as i64 + 5)) as i32;
        let mut want = vec![0xe9];
        want.extend_from_slice(&rel.to_le_bytes());
        want.extend_from_slice(&[0xcc; 3]);
        assert_eq!(p.patch, want);
        let stub = decode_all(&p.stub, STUB);
        let m: Vec<Mnemonic> = stub.iter().map(|i| i.mnemonic()).collect();
        assert_eq!(
            m,
            [
                Mnemonic::Lea,
                Mnemonic::Call,
                Mnemonic::Lea,
                Mnemonic::Cmp,
                Mnemonic::Jmp
            ]
        );
        assert_eq!(stub[0].memory_base(), Register::RSP);
        assert_eq!(stub[0].memory_displacement64() as i64, -128);
        assert_eq!(stub[1].ip_rel_memory_address(), HOOK_PTR);
        assert_eq!(stub[2].memory_displacement64(), 128);
        assert_eq!(stub[3].immediate32to64(), -4096);
        assert_eq!(stub[4].near_branch_target(), s1 + 8);
        // The `ja E` after the window stays in place (a displaced one: the next test).
    }

    #[test]
    fn a_displaced_branch_keeps_its_target() {
        // xor eax, eax; syscall; ja E (short); ret; E: ret. Window: syscall, ja, ret: 5 bytes.
        let mut a = CodeAssembler::new(64).unwrap();
        let mut e = a.create_label();
        let mut s = a.create_label();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut s).unwrap();
        a.syscall().unwrap();
        a.ja(e).unwrap();
        a.ret().unwrap();
        a.nop().unwrap();
        a.set_label(&mut e).unwrap();
        a.mov(eax, 1).unwrap();
        a.ret().unwrap();
        let r = a
            .assemble_options(
                FUNC,
                iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
            )
            .unwrap();
        let (s, e) = (r.label_ip(&s).unwrap(), r.label_ip(&e).unwrap());
        let code = r.inner.code_buffer;
        let p = plan(FUNC, &code, s, 0, STUB, HOOK_PTR).unwrap();
        assert_eq!(p.original.len(), 5);
        let stub = decode_all(&p.stub, STUB);
        assert_eq!(stub[3].mnemonic(), Mnemonic::Ja);
        assert_eq!(stub[3].near_branch_target(), e);
        assert_eq!(stub[4].mnemonic(), Mnemonic::Ret);
        // No jump back after the ret.
        assert_eq!(stub.len(), 5);
    }

    #[test]
    fn the_second_site_of_read_is_planned_too() {
        let (code, _, s2, _) = glibc_read();
        let p = plan(FUNC, &code, s2, 0, STUB, HOOK_PTR).unwrap();
        assert_eq!(p.original.len(), 8);
    }

    #[test]
    fn refuses_a_branch_into_the_window() {
        // xor eax,eax; syscall; L: cmp rax, -4096; ...; jne L
        let mut a = CodeAssembler::new(64).unwrap();
        let mut l = a.create_label();
        let mut s = a.create_label();
        a.xor(eax, eax).unwrap();
        a.set_label(&mut s).unwrap();
        a.syscall().unwrap();
        a.set_label(&mut l).unwrap();
        a.cmp(rax, -4096).unwrap();
        a.jne(l).unwrap();
        a.ret().unwrap();
        let r = a
            .assemble_options(
                FUNC,
                iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
            )
            .unwrap();
        let s = r.label_ip(&s).unwrap();
        let err = plan(FUNC, &r.inner.code_buffer, s, 0, STUB, HOOK_PTR).unwrap_err();
        assert!(
            matches!(err, Refusal::BranchIntoWindow(_, t) if t == s + 2),
            "{err}"
        );
        assert!(err.to_string().contains("lands inside the patch"));
    }

    #[test]
    fn refuses_a_number_not_fixed() {
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(eax, edi).unwrap();
        a.syscall().unwrap();
        a.cmp(rax, -4096).unwrap();
        a.ret().unwrap();
        let code = a.assemble(FUNC).unwrap();
        assert_eq!(
            plan(FUNC, &code, FUNC + 2, 0, STUB, HOOK_PTR),
            Err(Refusal::NoFixedNumber)
        );
        // The right constant, the wrong expectation.
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(eax, 39).unwrap();
        a.syscall().unwrap();
        a.cmp(rax, -4096).unwrap();
        a.ret().unwrap();
        let code = a.assemble(FUNC).unwrap();
        assert!(plan(FUNC, &code, FUNC + 5, 39, STUB, HOOK_PTR).is_ok());
        assert_eq!(
            plan(FUNC, &code, FUNC + 5, 40, STUB, HOOK_PTR),
            Err(Refusal::NoFixedNumber)
        );
        assert_eq!(
            plan(FUNC, &code, FUNC + 4, 39, STUB, HOOK_PTR),
            Err(Refusal::NotAtBoundary(FUNC + 4))
        );
        assert_eq!(
            plan(FUNC, &code, FUNC, 39, STUB, HOOK_PTR),
            Err(Refusal::NotSyscall(FUNC))
        );
    }

    #[test]
    fn the_number_may_be_set_a_few_instructions_before() {
        // mov eax, 202; mov esi, 0x81; mov r10, rcx; syscall; cmp rax, -4096; ret
        let build = |clobber: bool, branch: bool| {
            let mut a = CodeAssembler::new(64).unwrap();
            let mut l = a.create_label();
            if branch {
                a.jmp(l).unwrap();
            }
            a.mov(eax, 202).unwrap();
            a.set_label(&mut l).unwrap();
            a.mov(esi, 0x81).unwrap();
            if clobber {
                a.add(al, 1).unwrap();
            }
            a.mov(r10, rcx).unwrap();
            a.syscall().unwrap();
            a.cmp(rax, -4096).unwrap();
            a.ret().unwrap();
            a.assemble(FUNC).unwrap()
        };
        let code = build(false, false);
        let s = FUNC + code.len() as u64 - 9;
        assert!(plan(FUNC, &code, s, 202, STUB, HOOK_PTR).is_ok());
        let code = build(true, false);
        let s = FUNC + code.len() as u64 - 9;
        assert_eq!(
            plan(FUNC, &code, s, 202, STUB, HOOK_PTR),
            Err(Refusal::NoFixedNumber)
        );
        let code = build(false, true);
        let s = FUNC + code.len() as u64 - 9;
        assert_eq!(
            plan(FUNC, &code, s, 202, STUB, HOOK_PTR),
            Err(Refusal::BranchToSyscall(FUNC))
        );
    }

    #[test]
    fn refuses_a_call_in_the_window() {
        let mut a = CodeAssembler::new(64).unwrap();
        a.xor(eax, eax).unwrap();
        a.syscall().unwrap();
        a.call(FUNC + 0x1000).unwrap();
        a.ret().unwrap();
        let code = a.assemble(FUNC).unwrap();
        let err = plan(FUNC, &code, FUNC + 2, 0, STUB, HOOK_PTR).unwrap_err();
        assert!(
            matches!(err, Refusal::Unmovable(a, _) if a == FUNC + 4),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_jump_table_but_not_a_got_tail_call() {
        let build = |table: bool| {
            let mut a = CodeAssembler::new(64).unwrap();
            a.xor(eax, eax).unwrap();
            a.syscall().unwrap();
            a.cmp(rax, -4096).unwrap();
            if table {
                a.jmp(rdx).unwrap();
            } else {
                a.add_instruction(
                    Instruction::with1(Code::Jmp_rm64, rip_at(FUNC + 0x2000)).unwrap(),
                )
                .unwrap();
            }
            a.assemble(FUNC).unwrap()
        };
        let err = plan(FUNC, &build(true), FUNC + 2, 0, STUB, HOOK_PTR).unwrap_err();
        assert!(matches!(err, Refusal::JumpTable(_)), "{err}");
        assert!(plan(FUNC, &build(false), FUNC + 2, 0, STUB, HOOK_PTR).is_ok());
    }

    #[test]
    fn refuses_a_window_past_the_function_or_out_of_reach() {
        let mut a = CodeAssembler::new(64).unwrap();
        a.xor(eax, eax).unwrap();
        a.syscall().unwrap();
        a.ret().unwrap();
        let code = a.assemble(FUNC).unwrap();
        assert_eq!(
            plan(FUNC, &code, FUNC + 2, 0, STUB, HOOK_PTR),
            Err(Refusal::PastFunction)
        );
        let (code, s1, _, _) = glibc_read();
        assert_eq!(
            plan(FUNC, &code, s1, 0, FUNC + (4 << 30), HOOK_PTR),
            Err(Refusal::OutOfReach)
        );
        assert_eq!(
            plan(FUNC, &code, s1, 0, STUB, 0x1000),
            Err(Refusal::OutOfReach)
        );
    }

    #[test]
    fn plans_a_patched_vdso_function() {
        let size = 0x40;
        let code = crate::vdso::patched_function("__vdso_clock_gettime", size);
        assert_eq!(code.len(), size);
        let nr = libc::SYS_clock_gettime as u64;
        let p = plan(
            FUNC,
            &code,
            FUNC + crate::vdso::SYSCALL_OFFSET,
            nr,
            STUB,
            HOOK_PTR,
        )
        .unwrap();
        // syscall; ret; int3; int3.
        assert_eq!(p.original, [0x0f, 0x05, 0xc3, 0xcc, 0xcc]);
        let m: Vec<Mnemonic> = decode_all(&p.stub, STUB)
            .iter()
            .map(|i| i.mnemonic())
            .collect();
        assert_eq!(
            m,
            [Mnemonic::Lea, Mnemonic::Call, Mnemonic::Lea, Mnemonic::Ret]
        );
    }

    #[test]
    fn plans_the_real_libc_read() {
        use crate::functions::tests::{libc_symbol, own_maps, read_self};
        let maps = own_maps();
        let read = libc_symbol(b"read\0");
        let (start, end) = crate::functions::function_bounds(None, &read_self, &maps, read)
            .expect("read's bounds");
        let mut code = vec![0u8; (end - start) as usize];
        assert!(read_self(start, &mut code));
        let insns = decode_all(&code, start);
        let sites: Vec<u64> = insns
            .windows(2)
            .filter(|w| w[1].mnemonic() == Mnemonic::Syscall && sets_rax_to(&w[0], 0))
            .map(|w| w[1].ip())
            .collect();
        assert!(!sites.is_empty(), "no `xor eax, eax; syscall` in read");
        let stub = stub_page_near(&maps, start).expect("a stub page");
        let p = plan(start, &code, sites[0], 0, stub, stub + 0x800)
            .unwrap_or_else(|e| panic!("read's site {:#x}: {e}", sites[0]));
        assert!(p.original.len() >= 5);
        assert!(p.window_end() <= end);
        let stub_insns = decode_all(&p.stub, stub);
        assert_eq!(stub_insns[1].ip_rel_memory_address(), stub + 0x800);
        let last = stub_insns.last().expect("a stub");
        if last.mnemonic() == Mnemonic::Jmp {
            assert_eq!(last.near_branch_target(), p.window_end());
        } else {
            assert_eq!(last.mnemonic(), Mnemonic::Ret);
        }
        for &s in &sites[1..] {
            // Later sites: accepted or refused with a reason, never a panic.
            let _ = plan(start, &code, s, 0, stub, stub + 0x800).map_err(|e| e.to_string());
        }
    }

    #[test]
    fn stub_page_is_in_reach_and_free() {
        let maps = crate::functions::tests::own_maps();
        let addr = crate::functions::tests::libc_symbol(b"getpid\0");
        let p = stub_page_near(&maps, addr).expect("a page");
        assert_eq!(p % STUB_PAGE, 0);
        assert!(p.abs_diff(addr) < maps::REL32_REACH);
        assert!(maps.iter().all(|m| p + STUB_PAGE <= m.start || p >= m.end));
    }
}

#[cfg(test)]
mod survey {
    use super::*;
    use crate::functions::tests::{libc_symbol, own_maps, read_self};
    use std::collections::BTreeMap;

    /// The constant the instructions before a syscall put in eax/rax, if [`plan`] sees one.
    fn constant(before: &[Instruction]) -> Option<u64> {
        (0..512u64).find(|&nr| number_setter(before, nr).is_some())
    }

    /// Every `syscall` of libc's text, planned: most sites with a fixed number are accepted.
    #[test]
    fn most_libc_sites_are_accepted() {
        let maps = own_maps();
        let read = libc_symbol(b"read\0");
        let text = maps
            .iter()
            .find(|m| read >= m.start && read < m.end)
            .expect("libc's text");
        let mut image = vec![0u8; (text.end - text.start) as usize];
        assert!(read_self(text.start, &mut image));
        let stub = stub_page_near(&maps, text.start).expect("a stub page");
        let mut seen = std::collections::HashSet::new();
        let (mut fixed, mut accepted, mut not_fixed) = (0, 0, 0);
        let mut why: BTreeMap<String, usize> = BTreeMap::new();
        for off in 0..image.len() - 1 {
            if image[off..off + 2] != [0x0f, 0x05] {
                continue;
            }
            let addr = text.start + off as u64;
            let Some((s, e)) = crate::functions::function_bounds(None, &read_self, &maps, addr)
            else {
                continue;
            };
            let e = crate::functions::padding_end(None, &read_self, &maps, e);
            if s < text.start || e > text.end || !seen.insert(addr) {
                continue;
            }
            let code = &image[(s - text.start) as usize..(e - text.start) as usize];
            let insns: Vec<Instruction> = Decoder::with_ip(64, code, s, DecoderOptions::NONE)
                .into_iter()
                .collect();
            let Some(k) = insns.iter().position(|i| i.ip() == addr) else {
                continue; // the bytes 0f 05 inside another instruction
            };
            if insns[k].mnemonic() != Mnemonic::Syscall {
                continue;
            }
            let Some(nr) = constant(&insns[..k]) else {
                not_fixed += 1;
                continue;
            };
            fixed += 1;
            match plan(s, code, addr, nr, stub, stub + 0xff8) {
                Ok(_) => accepted += 1,
                Err(r) => {
                    let at = addr - text.start + text.offset;
                    eprintln!("libc+{at:#x} (syscall {nr}): {r}");
                    let key = r.to_string();
                    let key = key.split(" at ").next().unwrap_or("").to_string();
                    *why.entry(key).or_default() += 1;
                }
            }
        }
        eprintln!(
            "libc syscall sites: {fixed} with a fixed number ({accepted} accepted), \
             {not_fixed} without; refusals: {why:#?}"
        );
        assert!(
            fixed > 50 && accepted * 10 >= fixed * 7,
            "{accepted}/{fixed}"
        );
    }
}
