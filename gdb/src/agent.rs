//! An interpreter of gdb's agent expressions: the bytecode gdb compiles a breakpoint's
//! condition to and sends with the breakpoint (`Z0,addr,kind;X len,bytes`), so that the
//! server evaluates it where the breakpoint is hit and reports only the hits where it holds
//! (gdb's manual, "Agent Expressions" and "Bytecode Descriptions").
//!
//! Values are 64-bit; registers are read by gdb's remote numbers and memory as the program
//! sees it, through a [`Machine`]. The operations a condition uses are all here (constants,
//! registers, memory references, arithmetic, comparisons, jumps, stack shuffles, sign and zero
//! extension); those of tracepoints (trace buffers, state variables, `printf`) and floating
//! point are refused with an error, on which the caller reports the hit (as gdbserver does:
//! an error must not hide a stop).

use std::fmt;

/// The most operations one evaluation runs (a condition with a loop that never ends is an
/// error, not a hang).
const MAX_OPS: usize = 100_000;

/// The deepest the value stack may grow.
const MAX_STACK: usize = 1024;

/// Where an expression reads registers and memory.
pub trait Machine {
    /// Register `n` (gdb's remote number), zero-extended to 64 bits (its low 64 bits if it is
    /// wider).
    fn reg(&mut self, n: u16) -> Result<u64, AxError>;
    /// Fills `buf` with the memory at `addr`.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), AxError>;
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AxError {
    /// An opcode this interpreter does not run (or no opcode at all).
    Unsupported(u8),
    /// The bytecode ends inside an operation, or a jump leaves it.
    Truncated,
    /// An operation found too few values on the stack, or it grew too deep.
    Stack,
    /// Division or remainder by zero.
    DivideByZero,
    /// Memory that cannot be read.
    Memory(u64),
    /// A register there is no such number for (or that cannot be read).
    Register(u16),
    /// More than [`MAX_OPS`] operations ran.
    TooLong,
}

impl fmt::Display for AxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AxError::Unsupported(op) => write!(f, "unsupported agent expression opcode {op:#04x}"),
            AxError::Truncated => write!(f, "the agent expression ends inside an operation"),
            AxError::Stack => write!(f, "the agent expression's stack under- or overflows"),
            AxError::DivideByZero => write!(f, "division by zero"),
            AxError::Memory(a) => write!(f, "cannot read memory at {a:#x}"),
            AxError::Register(n) => write!(f, "no register {n}"),
            AxError::TooLong => write!(
                f,
                "the agent expression runs more than {MAX_OPS} operations"
            ),
        }
    }
}

impl std::error::Error for AxError {}

/// The opcodes (gdb's `ax.def`).
mod op {
    pub const ADD: u8 = 0x02;
    pub const SUB: u8 = 0x03;
    pub const MUL: u8 = 0x04;
    pub const DIV_SIGNED: u8 = 0x05;
    pub const DIV_UNSIGNED: u8 = 0x06;
    pub const REM_SIGNED: u8 = 0x07;
    pub const REM_UNSIGNED: u8 = 0x08;
    pub const LSH: u8 = 0x09;
    pub const RSH_SIGNED: u8 = 0x0a;
    pub const RSH_UNSIGNED: u8 = 0x0b;
    pub const LOG_NOT: u8 = 0x0e;
    pub const BIT_AND: u8 = 0x0f;
    pub const BIT_OR: u8 = 0x10;
    pub const BIT_XOR: u8 = 0x11;
    pub const BIT_NOT: u8 = 0x12;
    pub const EQUAL: u8 = 0x13;
    pub const LESS_SIGNED: u8 = 0x14;
    pub const LESS_UNSIGNED: u8 = 0x15;
    pub const EXT: u8 = 0x16;
    pub const REF8: u8 = 0x17;
    pub const REF16: u8 = 0x18;
    pub const REF32: u8 = 0x19;
    pub const REF64: u8 = 0x1a;
    pub const IF_GOTO: u8 = 0x20;
    pub const GOTO: u8 = 0x21;
    pub const CONST8: u8 = 0x22;
    pub const CONST16: u8 = 0x23;
    pub const CONST32: u8 = 0x24;
    pub const CONST64: u8 = 0x25;
    pub const REG: u8 = 0x26;
    pub const END: u8 = 0x27;
    pub const DUP: u8 = 0x28;
    pub const POP: u8 = 0x29;
    pub const ZERO_EXT: u8 = 0x2a;
    pub const SWAP: u8 = 0x2b;
    pub const PICK: u8 = 0x32;
    pub const ROT: u8 = 0x33;
}

/// Evaluates `code` on `m`: the value on top of the stack at `end`.
pub fn eval(code: &[u8], m: &mut dyn Machine) -> Result<u64, AxError> {
    let mut stack: Vec<u64> = Vec::with_capacity(16);
    let mut pc = 0usize;
    for _ in 0..MAX_OPS {
        let opcode = *code.get(pc).ok_or(AxError::Truncated)?;
        pc += 1;
        match opcode {
            op::END => return stack.pop().ok_or(AxError::Stack),
            op::ADD..=op::RSH_UNSIGNED
            | op::BIT_AND..=op::BIT_XOR
            | op::EQUAL..=op::LESS_UNSIGNED => {
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(binary(opcode, a, b)?);
            }
            op::LOG_NOT => {
                let a = pop(&mut stack)?;
                stack.push(u64::from(a == 0));
            }
            op::BIT_NOT => {
                let a = pop(&mut stack)?;
                stack.push(!a);
            }
            op::EXT | op::ZERO_EXT => {
                let bits = immediate(code, &mut pc, 1)? as u32;
                let a = pop(&mut stack)?;
                stack.push(if opcode == op::EXT {
                    sign_extend(a, bits)
                } else {
                    zero_extend(a, bits)
                });
            }
            op::REF8 | op::REF16 | op::REF32 | op::REF64 => {
                let size = 1usize << (opcode - op::REF8);
                let addr = pop(&mut stack)?;
                let mut buf = [0u8; 8];
                m.read(addr, &mut buf[..size])?;
                stack.push(u64::from_le_bytes(buf));
            }
            op::IF_GOTO => {
                let to = immediate(code, &mut pc, 2)? as usize;
                if pop(&mut stack)? != 0 {
                    pc = to;
                }
            }
            op::GOTO => pc = immediate(code, &mut pc, 2)? as usize,
            op::CONST8 | op::CONST16 | op::CONST32 | op::CONST64 => {
                let size = 1usize << (opcode - op::CONST8);
                push(&mut stack, immediate(code, &mut pc, size)?)?;
            }
            op::REG => {
                let n = immediate(code, &mut pc, 2)? as u16;
                push(&mut stack, m.reg(n)?)?;
            }
            op::DUP => {
                let a = *stack.last().ok_or(AxError::Stack)?;
                push(&mut stack, a)?;
            }
            op::POP => {
                pop(&mut stack)?;
            }
            op::SWAP => {
                let n = stack.len();
                if n < 2 {
                    return Err(AxError::Stack);
                }
                stack.swap(n - 1, n - 2);
            }
            op::PICK => {
                let depth = immediate(code, &mut pc, 1)? as usize;
                let i = stack.len().checked_sub(1 + depth).ok_or(AxError::Stack)?;
                let v = stack[i];
                push(&mut stack, v)?;
            }
            op::ROT => {
                // a b c => c a b
                let c = pop(&mut stack)?;
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.extend_from_slice(&[c, a, b]);
            }
            other => return Err(AxError::Unsupported(other)),
        }
    }
    Err(AxError::TooLong)
}

/// `a op b` for the two-operand operations.
fn binary(opcode: u8, a: u64, b: u64) -> Result<u64, AxError> {
    let (sa, sb) = (a as i64, b as i64);
    Ok(match opcode {
        op::ADD => a.wrapping_add(b),
        op::SUB => a.wrapping_sub(b),
        op::MUL => a.wrapping_mul(b),
        op::DIV_SIGNED => sa.checked_div(sb).ok_or(AxError::DivideByZero)? as u64,
        op::DIV_UNSIGNED => a.checked_div(b).ok_or(AxError::DivideByZero)?,
        op::REM_SIGNED => sa.checked_rem(sb).ok_or(AxError::DivideByZero)? as u64,
        op::REM_UNSIGNED => a.checked_rem(b).ok_or(AxError::DivideByZero)?,
        // Shifts by 64 or more leave nothing (or the sign), as the C gdb compiles from means.
        op::LSH => a.checked_shl(b.min(64) as u32).unwrap_or(0),
        op::RSH_SIGNED => (sa >> b.min(63)) as u64,
        op::RSH_UNSIGNED => a.checked_shr(b.min(64) as u32).unwrap_or(0),
        op::BIT_AND => a & b,
        op::BIT_OR => a | b,
        op::BIT_XOR => a ^ b,
        op::EQUAL => u64::from(a == b),
        op::LESS_SIGNED => u64::from(sa < sb),
        op::LESS_UNSIGNED => u64::from(a < b),
        other => return Err(AxError::Unsupported(other)),
    })
}

/// The big-endian immediate of `size` bytes at `pc`, which moves past it.
fn immediate(code: &[u8], pc: &mut usize, size: usize) -> Result<u64, AxError> {
    let bytes = code.get(*pc..*pc + size).ok_or(AxError::Truncated)?;
    *pc += size;
    Ok(bytes.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

fn pop(stack: &mut Vec<u64>) -> Result<u64, AxError> {
    stack.pop().ok_or(AxError::Stack)
}

fn push(stack: &mut Vec<u64>, v: u64) -> Result<(), AxError> {
    if stack.len() >= MAX_STACK {
        return Err(AxError::Stack);
    }
    stack.push(v);
    Ok(())
}

/// `a`'s low `bits` bits, sign-extended (all of `a` for 0 or 64 and more bits).
fn sign_extend(a: u64, bits: u32) -> u64 {
    if bits == 0 || bits >= 64 {
        return a;
    }
    let shift = 64 - bits;
    (((a << shift) as i64) >> shift) as u64
}

/// `a`'s low `bits` bits (all of `a` for 64 and more bits).
fn zero_extend(a: u64, bits: u32) -> u64 {
    if bits >= 64 {
        a
    } else {
        a & ((1u64 << bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers numbered by their index; memory one block at `base`.
    struct Fake {
        regs: Vec<u64>,
        base: u64,
        mem: Vec<u8>,
    }

    impl Machine for Fake {
        fn reg(&mut self, n: u16) -> Result<u64, AxError> {
            self.regs
                .get(usize::from(n))
                .copied()
                .ok_or(AxError::Register(n))
        }

        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), AxError> {
            let start = addr.checked_sub(self.base).ok_or(AxError::Memory(addr))? as usize;
            let src = self
                .mem
                .get(start..start + buf.len())
                .ok_or(AxError::Memory(addr))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn fake() -> Fake {
        let mut mem = vec![0u8; 64];
        // An int -3 at base+8, a u16 0xbeef at base+16, a u64 at base+24.
        mem[8..12].copy_from_slice(&(-3i32).to_le_bytes());
        mem[16..18].copy_from_slice(&0xbeefu16.to_le_bytes());
        mem[24..32].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        Fake {
            regs: vec![10, 20, 0x7fff_0000, 7],
            base: 0x7fff_0000,
            mem,
        }
    }

    fn run(code: &[u8]) -> Result<u64, AxError> {
        eval(code, &mut fake())
    }

    #[test]
    fn constants_are_big_endian_and_not_sign_extended() {
        assert_eq!(run(&[op::CONST8, 0xff, op::END]), Ok(0xff));
        assert_eq!(run(&[op::CONST16, 0x12, 0x34, op::END]), Ok(0x1234));
        assert_eq!(
            run(&[op::CONST32, 0xde, 0xad, 0xbe, 0xef, op::END]),
            Ok(0xdead_beef)
        );
        assert_eq!(
            run(&[op::CONST64, 1, 2, 3, 4, 5, 6, 7, 8, op::END]),
            Ok(0x0102_0304_0506_0708)
        );
    }

    #[test]
    fn registers_by_number() {
        assert_eq!(run(&[op::REG, 0, 1, op::END]), Ok(20));
        assert_eq!(run(&[op::REG, 0, 9, op::END]), Err(AxError::Register(9)));
    }

    #[test]
    fn memory_references_read_little_endian() {
        // *(int *)(reg2 + 8), sign-extended from 32 bits: -3.
        let code = [
            op::REG,
            0,
            2,
            op::CONST8,
            8,
            op::ADD,
            op::REF32,
            op::EXT,
            32,
            op::END,
        ];
        assert_eq!(run(&code), Ok((-3i64) as u64));
        let code = [op::REG, 0, 2, op::CONST8, 16, op::ADD, op::REF16, op::END];
        assert_eq!(run(&code), Ok(0xbeef));
        let code = [op::REG, 0, 2, op::CONST8, 24, op::ADD, op::REF64, op::END];
        assert_eq!(run(&code), Ok(0x1122_3344_5566_7788));
        let code = [op::REG, 0, 2, op::CONST8, 24, op::ADD, op::REF8, op::END];
        assert_eq!(run(&code), Ok(0x88));
        assert_eq!(
            run(&[op::CONST8, 4, op::REF32, op::END]),
            Err(AxError::Memory(4))
        );
    }

    #[test]
    fn arithmetic_signed_and_unsigned() {
        let two = |a: u8, b: u8, o: u8| run(&[op::CONST8, a, op::CONST8, b, o, op::END]);
        assert_eq!(two(7, 3, op::ADD), Ok(10));
        assert_eq!(two(3, 7, op::SUB), Ok((-4i64) as u64));
        assert_eq!(two(6, 7, op::MUL), Ok(42));
        assert_eq!(two(7, 2, op::DIV_UNSIGNED), Ok(3));
        assert_eq!(two(7, 2, op::REM_UNSIGNED), Ok(1));
        assert_eq!(two(7, 0, op::DIV_SIGNED), Err(AxError::DivideByZero));
        assert_eq!(two(7, 0, op::REM_UNSIGNED), Err(AxError::DivideByZero));
        assert_eq!(two(1, 4, op::LSH), Ok(16));
        assert_eq!(two(0x80, 4, op::RSH_UNSIGNED), Ok(8));
        assert_eq!(two(0b1100, 0b1010, op::BIT_AND), Ok(0b1000));
        assert_eq!(two(0b1100, 0b1010, op::BIT_OR), Ok(0b1110));
        assert_eq!(two(0b1100, 0b1010, op::BIT_XOR), Ok(0b0110));
        // -8 / 2 and -8 >> 1, signed: -4.
        let neg8 = [op::CONST8, 0xf8, op::EXT, 8];
        let with = |b: u8, o: u8| {
            let mut code = neg8.to_vec();
            code.extend_from_slice(&[op::CONST8, b, o, op::END]);
            run(&code)
        };
        assert_eq!(with(2, op::DIV_SIGNED), Ok((-4i64) as u64));
        assert_eq!(with(3, op::REM_SIGNED), Ok((-2i64) as u64));
        assert_eq!(with(1, op::RSH_SIGNED), Ok((-4i64) as u64));
        assert_eq!(run(&[op::CONST8, 0, op::BIT_NOT, op::END]), Ok(u64::MAX));
    }

    #[test]
    fn comparisons_and_logical_not() {
        let two = |a: u8, b: u8, o: u8| run(&[op::CONST8, a, op::CONST8, b, o, op::END]);
        assert_eq!(two(7, 7, op::EQUAL), Ok(1));
        assert_eq!(two(7, 8, op::EQUAL), Ok(0));
        assert_eq!(two(3, 7, op::LESS_UNSIGNED), Ok(1));
        assert_eq!(two(7, 3, op::LESS_UNSIGNED), Ok(0));
        // -1 < 1 signed, not unsigned.
        let cmp = |o: u8| run(&[op::CONST8, 0xff, op::EXT, 8, op::CONST8, 1, o, op::END]);
        assert_eq!(cmp(op::LESS_SIGNED), Ok(1));
        assert_eq!(cmp(op::LESS_UNSIGNED), Ok(0));
        assert_eq!(run(&[op::CONST8, 5, op::LOG_NOT, op::END]), Ok(0));
        assert_eq!(run(&[op::CONST8, 0, op::LOG_NOT, op::END]), Ok(1));
    }

    #[test]
    fn extensions() {
        assert_eq!(
            run(&[op::CONST16, 0x12, 0x80, op::EXT, 8, op::END]),
            Ok((-128i64) as u64)
        );
        assert_eq!(
            run(&[op::CONST16, 0x12, 0x80, op::ZERO_EXT, 8, op::END]),
            Ok(0x80)
        );
        assert_eq!(
            run(&[op::CONST16, 0x12, 0x80, op::ZERO_EXT, 64, op::END]),
            Ok(0x1280)
        );
    }

    #[test]
    fn jumps_take_the_branch_a_condition_says() {
        // reg3 == k ? 1 : 2, as gdb compiles `?:`: if_goto to the "then" part (at 14), the
        // "else" part jumping over it to the end (at 16).
        let code = |k: u8| {
            [
                op::REG,
                0,
                3,
                op::CONST8,
                k,
                op::EQUAL,
                op::IF_GOTO,
                0,
                14,
                op::CONST8,
                2,
                op::GOTO,
                0,
                16,
                op::CONST8,
                1,
                op::END,
            ]
        };
        assert_eq!(run(&code(7)), Ok(1));
        assert_eq!(run(&code(8)), Ok(2));
    }

    #[test]
    fn stack_operations() {
        assert_eq!(run(&[op::CONST8, 3, op::DUP, op::MUL, op::END]), Ok(9));
        assert_eq!(
            run(&[op::CONST8, 3, op::CONST8, 4, op::POP, op::END]),
            Ok(3)
        );
        assert_eq!(
            run(&[op::CONST8, 3, op::CONST8, 4, op::SWAP, op::SUB, op::END]),
            Ok(1)
        );
        // pick 1 copies the item below the top.
        assert_eq!(
            run(&[op::CONST8, 3, op::CONST8, 4, op::PICK, 1, op::END]),
            Ok(3)
        );
        // a b c => c a b: the top is then b.
        assert_eq!(
            run(&[
                op::CONST8,
                1,
                op::CONST8,
                2,
                op::CONST8,
                3,
                op::ROT,
                op::END
            ]),
            Ok(2)
        );
    }

    #[test]
    fn bad_bytecode_is_an_error_not_a_panic() {
        assert_eq!(run(&[]), Err(AxError::Truncated));
        assert_eq!(run(&[op::CONST32, 1, 2]), Err(AxError::Truncated));
        assert_eq!(run(&[op::ADD, op::END]), Err(AxError::Stack));
        assert_eq!(run(&[op::END]), Err(AxError::Stack));
        assert_eq!(run(&[op::GOTO, 0xff, 0xff]), Err(AxError::Truncated));
        // A loop forever, and tracepoint-only and floating-point opcodes.
        assert_eq!(run(&[op::GOTO, 0, 0]), Err(AxError::TooLong));
        assert_eq!(run(&[0x0c, op::END]), Err(AxError::Unsupported(0x0c)));
        assert_eq!(run(&[0x01, op::END]), Err(AxError::Unsupported(0x01)));
        assert_eq!(run(&[0xff]), Err(AxError::Unsupported(0xff)));
        // Pushing forever overflows the stack.
        assert_eq!(run(&[op::CONST8, 1, op::GOTO, 0, 0]), Err(AxError::Stack));
    }
}
