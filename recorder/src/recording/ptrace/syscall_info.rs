//! `PTRACE_GET_SYSCALL_INFO` (strace asks for it at every syscall stop): what the kernel's
//! `struct ptrace_syscall_info` says of the stop the tracee is held in, built from the emulated
//! stop (its `siginfo_t`, as the kernel decides by `last_siginfo`) and the tracee's registers.
//! The bytes are the tracer's syscall's memory writes, so the replay writes them back as
//! recorded.

use anyhow::Result;
use trace_format::PtraceHeld;
use tracee::tracee::{signo_code, SIGINFO_SIZE};
use tracee::{regs, Regs};

use super::Served;
use crate::recording::Session;

/// `PTRACE_SYSCALL_INFO_NONE`: a stop that is no syscall stop.
const INFO_NONE: u8 = 0;
/// `PTRACE_SYSCALL_INFO_ENTRY`.
const INFO_ENTRY: u8 = 1;
/// `PTRACE_SYSCALL_INFO_EXIT`.
const INFO_EXIT: u8 = 2;
/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Size of the header (`op`, `arch`, `instruction_pointer`, `stack_pointer`): the whole
/// answer for `PTRACE_SYSCALL_INFO_NONE`.
const HEADER_SIZE: usize = 24;
/// Size up to the end of `entry.args`.
const ENTRY_SIZE: usize = HEADER_SIZE + 7 * 8;
/// Size up to the end of `exit.is_error`.
const EXIT_SIZE: usize = HEADER_SIZE + 8 + 1;
/// Largest `errno` a syscall returns (`IS_ERR_VALUE`).
const MAX_ERRNO: i64 = 4095;

/// Which part of `struct ptrace_syscall_info` a stop fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SyscallStop {
    /// Not a syscall stop (a signal or event stop, or a syscall stop without
    /// `PTRACE_O_TRACESYSGOOD`, which the kernel does not tell apart either).
    None,
    /// The entry of a syscall.
    Entry,
    /// The exit of a syscall.
    Exit,
}

impl SyscallStop {
    /// The kind of a stop held at `at` whose `PTRACE_GETSIGINFO` is `info`: as the kernel,
    /// a syscall stop only if its `si_code` is `SIGTRAP | 0x80`.
    pub(super) fn of(at: PtraceHeld, info: &[u8; SIGINFO_SIZE]) -> SyscallStop {
        let (signo, code) = signo_code(info);
        if signo != libc::SIGTRAP || code != libc::SIGTRAP | 0x80 {
            return SyscallStop::None;
        }
        match at {
            PtraceHeld::SyscallEntry | PtraceHeld::SysemuEntry => SyscallStop::Entry,
            PtraceHeld::AfterEvent => SyscallStop::Exit,
            PtraceHeld::Signal(_) | PtraceHeld::CloneEvent => SyscallStop::None,
        }
    }
}

/// The whole `struct ptrace_syscall_info` of a stop of kind `stop` with registers `r` (the
/// kernel copies as much of it as the tracer's size allows, and returns its full size).
pub(super) fn syscall_info(stop: SyscallStop, r: &Regs) -> Vec<u8> {
    let op = match stop {
        SyscallStop::None => INFO_NONE,
        SyscallStop::Entry => INFO_ENTRY,
        SyscallStop::Exit => INFO_EXIT,
    };
    let mut info = Vec::with_capacity(ENTRY_SIZE);
    info.extend_from_slice(&[op, 0, 0, 0]);
    info.extend_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
    info.extend_from_slice(&r.rip.to_le_bytes());
    info.extend_from_slice(&r.rsp.to_le_bytes());
    match stop {
        SyscallStop::None => {}
        SyscallStop::Entry => {
            info.extend_from_slice(&r.orig_rax.to_le_bytes());
            for a in regs::syscall_args(r) {
                info.extend_from_slice(&a.to_le_bytes());
            }
        }
        SyscallStop::Exit => {
            let rval = r.rax as i64;
            info.extend_from_slice(&rval.to_le_bytes());
            info.push(u8::from((-MAX_ERRNO..0).contains(&rval)));
            // The kernel's struct is zeroed; its size says where it ends.
            info.resize(EXIT_SIZE, 0);
        }
    }
    info
}

impl Session {
    /// `PTRACE_GET_SYSCALL_INFO` of `target` (held at `at`) for tracer `tid`: up to `size`
    /// bytes at `buf`; returns the full size of the information, as the kernel does.
    pub(super) fn ptrace_syscall_info(
        &mut self,
        tid: i32,
        target: i32,
        at: PtraceHeld,
        size: u64,
        buf: u64,
    ) -> Result<Served> {
        let info = self
            .ptrace
            .get(target)
            .and_then(|r| r.stop.as_ref())
            .map_or([0u8; SIGINFO_SIZE], |s| s.siginfo);
        let stop = SyscallStop::of(at, &info);
        let r = self.task(target)?.tracee.regs()?;
        let mut bytes = syscall_info(stop, &r);
        let full = bytes.len() as i64;
        bytes.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        if bytes.is_empty() {
            return Ok(Served::ok(full));
        }
        self.answer(tid, full, buf, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptrace_emu::trap_siginfo;

    fn regs() -> Regs {
        let mut r = regs::from_words(&[0; 27]);
        r.rip = 0x1000;
        r.rsp = 0x2000;
        r.orig_rax = libc::SYS_getpid as u64;
        r.rdi = 7;
        r.r9 = 9;
        r.rax = (-libc::ENOENT as i64) as u64;
        r
    }

    #[test]
    fn a_syscall_stop_needs_tracesysgood_as_in_the_kernel() {
        let good = trap_siginfo((libc::SIGTRAP | 0x80) << 8 | 0x7f);
        let plain = trap_siginfo(libc::SIGTRAP << 8 | 0x7f);
        assert_eq!(
            SyscallStop::of(PtraceHeld::SyscallEntry, &good),
            SyscallStop::Entry
        );
        assert_eq!(
            SyscallStop::of(PtraceHeld::AfterEvent, &good),
            SyscallStop::Exit
        );
        assert_eq!(
            SyscallStop::of(PtraceHeld::SyscallEntry, &plain),
            SyscallStop::None
        );
        assert_eq!(
            SyscallStop::of(PtraceHeld::Signal(libc::SIGTRAP), &good),
            SyscallStop::None
        );
    }

    #[test]
    fn the_layout_is_the_kernels() {
        let r = regs();
        let none = syscall_info(SyscallStop::None, &r);
        assert_eq!(none.len(), 24);
        assert_eq!(&none[4..8], &AUDIT_ARCH_X86_64.to_le_bytes());
        assert_eq!(&none[8..16], &0x1000u64.to_le_bytes());
        assert_eq!(&none[16..24], &0x2000u64.to_le_bytes());
        let entry = syscall_info(SyscallStop::Entry, &r);
        assert_eq!((entry.len(), entry[0]), (80, INFO_ENTRY));
        assert_eq!(&entry[24..32], &(libc::SYS_getpid as u64).to_le_bytes());
        assert_eq!(&entry[32..40], &7u64.to_le_bytes());
        assert_eq!(&entry[72..80], &9u64.to_le_bytes());
        let exit = syscall_info(SyscallStop::Exit, &r);
        assert_eq!((exit.len(), exit[0]), (33, INFO_EXIT));
        assert_eq!(&exit[24..32], &(-libc::ENOENT as i64).to_le_bytes());
        assert_eq!(exit[32], 1);
    }
}
