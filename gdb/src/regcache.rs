//! Registers cached per stop: the replay's tasks do not move between two resumes, so each
//! thread's registers are read from the kernel once per stop (gdb asks for them with `g`,
//! `p`, and through the registers a stop reply carries), and the cache is dropped whenever
//! the replay may move (any resume, going backwards, seeking, starting over).

use std::collections::HashMap;

use gdbstub::target::TargetError;
use replayer::DebugReplay;
use trace_format::Tid;

use crate::arch::{RegId, Registers};

/// The general registers a stop reply carries ("expedited", as gdbserver does for pc, sp and
/// fp): all of rax..r15, rip and eflags, so that gdb needs no `g` to find the pc, unwind the
/// stack by its frame and stack pointers or print a frame. It still asks (`g`) for any other
/// register it needs.
const EXPEDITED: [RegId; 18] = [
    RegId::Gpr(0),
    RegId::Gpr(1),
    RegId::Gpr(2),
    RegId::Gpr(3),
    RegId::Gpr(4),
    RegId::Gpr(5),
    RegId::Gpr(6),
    RegId::Gpr(7),
    RegId::Gpr(8),
    RegId::Gpr(9),
    RegId::Gpr(10),
    RegId::Gpr(11),
    RegId::Gpr(12),
    RegId::Gpr(13),
    RegId::Gpr(14),
    RegId::Gpr(15),
    RegId::Rip,
    RegId::Eflags,
];

/// Each thread's registers at the current stop, read once: the general ones alone for a stop
/// reply, all of them (with the x87/SSE/AVX/AVX-512 state, larger reads) when gdb asks.
#[derive(Default)]
pub(crate) struct RegCache {
    regs: HashMap<Tid, Registers>,
    gpr: HashMap<Tid, tracee::Regs>,
}

impl RegCache {
    /// The registers of thread `tid` of `replay`, read from the kernel unless read since the
    /// last [`clear`](Self::clear): an error number if it is no live thread of the debugged
    /// process, an error of the replay if ptrace cannot read them.
    pub(crate) fn get(
        &mut self,
        replay: &DebugReplay,
        tid: Tid,
    ) -> Result<Registers, TargetError<anyhow::Error>> {
        if let Some(r) = self.regs.get(&tid) {
            return Ok(*r);
        }
        let gpr = self.gpr(replay, tid)?;
        let t = replay
            .thread(tid)
            .map_err(|_| TargetError::Errno(libc::ESRCH as u8))?;
        let avx512 = if crate::arch::avx512() {
            t.avx512_regs().map_err(TargetError::Fatal)?
        } else {
            None
        };
        let regs = Registers {
            gpr,
            fp: t.fp_regs().map_err(TargetError::Fatal)?,
            avx512: avx512.unwrap_or_default(),
        };
        self.regs.insert(tid, regs);
        Ok(regs)
    }

    /// The general registers of thread `tid` of `replay` (see [`RegCache::get`]).
    pub(crate) fn gpr(
        &mut self,
        replay: &DebugReplay,
        tid: Tid,
    ) -> Result<tracee::Regs, TargetError<anyhow::Error>> {
        if let Some(r) = self.regs.get(&tid) {
            return Ok(r.gpr);
        }
        if let Some(r) = self.gpr.get(&tid) {
            return Ok(*r);
        }
        let t = replay
            .thread(tid)
            .map_err(|_| TargetError::Errno(libc::ESRCH as u8))?;
        let gpr = t.regs().map_err(TargetError::Fatal)?;
        self.gpr.insert(tid, gpr);
        Ok(gpr)
    }

    /// Forgets every register read: the replay may have moved.
    pub(crate) fn clear(&mut self) {
        self.regs.clear();
        self.gpr.clear();
    }
}

/// The registers a stop reply carries, with their values in `gpr` (little-endian, 8 bytes for
/// the general registers and rip, 4 for eflags).
pub(crate) fn expedited(gpr: &tracee::Regs) -> Vec<(RegId, Vec<u8>)> {
    let regs = Registers {
        gpr: *gpr,
        ..Registers::default()
    };
    let mut buf = [0u8; 8];
    EXPEDITED
        .iter()
        .filter_map(|&id| {
            let n = regs.read_reg(id, &mut buf)?;
            Some((id, buf[..n].to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expedites_general_registers_rip_and_eflags() {
        let mut regs = Registers::default();
        regs.gpr.rip = 0x40_1000;
        regs.gpr.rsp = 0x7fff_0000;
        regs.gpr.eflags = 0x246;
        let ex = expedited(&regs.gpr);
        assert_eq!(ex.len(), 18);
        let find = |id: RegId| ex.iter().find(|(r, _)| *r == id).map(|(_, v)| v.clone());
        assert_eq!(find(RegId::Rip), Some(0x40_1000u64.to_le_bytes().to_vec()));
        // gdb's 7 is rsp.
        assert_eq!(
            find(RegId::Gpr(7)),
            Some(0x7fff_0000u64.to_le_bytes().to_vec())
        );
        assert_eq!(find(RegId::Eflags), Some(0x246u32.to_le_bytes().to_vec()));
    }
}
