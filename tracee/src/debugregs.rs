//! The hardware debug registers: reading and writing them in a stopped task, and laying out
//! up to four watchpoints or hardware breakpoints in DR0–DR3 and DR7.

use anyhow::{bail, Result};

use crate::gone::PtraceContext;
use crate::tracee::Tracee;

/// Offset of `u_debugreg[0]` in the kernel's `struct user`, the `PTRACE_PEEKUSER` address
/// space.
const DEBUGREG_OFFSET: usize = std::mem::offset_of!(libc::user, u_debugreg);

/// Number of address slots (DR0–DR3).
pub const SLOTS: usize = 4;

impl Tracee {
    /// Debug register `DR<i>` (0–3 addresses, 6 status, 7 control).
    pub fn debug_reg(&self, i: usize) -> Result<u64> {
        let offset = debug_reg_offset(i)?;
        nix::sys::ptrace::read_user(self.pid(), offset as nix::sys::ptrace::AddressType)
            .map(|v| v as u64)
            .ptrace_context(self.pid(), || {
                format!("reading DR{i} of task {}", self.pid())
            })
    }

    /// Sets debug register `DR<i>` (0–3 addresses, 6 status, 7 control). The kernel checks
    /// the value: an address must be in user space, and DR7 may only enable slots whose
    /// address suits the length and kind.
    pub fn set_debug_reg(&self, i: usize, v: u64) -> Result<()> {
        let offset = debug_reg_offset(i)?;
        nix::sys::ptrace::write_user(
            self.pid(),
            offset as nix::sys::ptrace::AddressType,
            v as libc::c_long,
        )
        .ptrace_context(self.pid(), || {
            format!("writing {v:#x} to DR{i} of task {}", self.pid())
        })
    }

    /// Installs `regs`: disables every slot, sets the addresses of the used ones, then enables
    /// them, so no slot is ever enabled with a stale address.
    pub fn set_debug_regs(&self, regs: &DebugRegs) -> Result<()> {
        self.set_debug_reg(7, 0)?;
        for (i, slot) in regs.slots.iter().enumerate() {
            if let Some(s) = slot {
                self.set_debug_reg(i, s.addr)?;
            }
        }
        self.set_debug_reg(7, regs.dr7())
    }
}

/// The `PTRACE_PEEKUSER` offset of `DR<i>`; DR4 and DR5 (aliases of DR6 and DR7) are refused.
fn debug_reg_offset(i: usize) -> Result<usize> {
    if !matches!(i, 0..=3 | 6 | 7) {
        bail!("there is no debug register DR{i} to access (0-3, 6 and 7 exist)");
    }
    Ok(DEBUGREG_OFFSET + i * std::mem::size_of::<libc::c_ulong>())
}

/// What a debug register slot watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// Instruction fetch at the address (a hardware breakpoint; length 1).
    Execute,
    /// Data writes.
    Write,
    /// Data reads or writes.
    ReadWrite,
}

impl WatchKind {
    /// The two-bit R/W field of DR7.
    fn rw_bits(self) -> u64 {
        match self {
            WatchKind::Execute => 0b00,
            WatchKind::Write => 0b01,
            WatchKind::ReadWrite => 0b11,
        }
    }
}

/// One used slot: an aligned address and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The watched address, a multiple of `len`.
    pub addr: u64,
    /// 1, 2, 4 or 8 bytes (1 for [`WatchKind::Execute`]).
    pub len: u8,
    /// What to watch.
    pub kind: WatchKind,
}

impl Slot {
    /// A slot for `len` bytes at `addr`, if the hardware can watch exactly that: a length of
    /// 1, 2, 4 or 8 (1 for instructions) and an address aligned to it.
    pub fn new(addr: u64, len: u8, kind: WatchKind) -> Option<Slot> {
        let ok_len = match kind {
            WatchKind::Execute => len == 1,
            WatchKind::Write | WatchKind::ReadWrite => matches!(len, 1 | 2 | 4 | 8),
        };
        (ok_len && addr % u64::from(len) == 0).then_some(Slot { addr, len, kind })
    }

    /// The two-bit LEN field of DR7.
    fn len_bits(self) -> u64 {
        match self.len {
            1 => 0b00,
            2 => 0b01,
            8 => 0b10,
            _ => 0b11,
        }
    }
}

/// The four slots of DR0–DR3, as a debugger assigns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DebugRegs {
    /// Slot `i` is `DR<i>`; `None` is unused (disabled in DR7).
    pub slots: [Option<Slot>; SLOTS],
}

impl DebugRegs {
    /// No slot used.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches `len` bytes at `addr` (any length and alignment), taking one free slot per
    /// aligned piece ([`split_aligned`]); returns the slots taken, or `None`, changing
    /// nothing, if there are not enough free slots or the range cannot be watched
    /// (`Execute` takes exactly one byte).
    pub fn insert(&mut self, addr: u64, len: u64, kind: WatchKind) -> Option<Vec<usize>> {
        // Longer ranges need more pieces than there are slots: refused before splitting, so
        // that a debugger's length (gdb's `Z2,addr,ffffffff`) costs nothing.
        if len > MAX_WATCH_LEN {
            return None;
        }
        let pieces = match kind {
            WatchKind::Execute if len == 1 => vec![(addr, 1)],
            WatchKind::Execute => return None,
            WatchKind::Write | WatchKind::ReadWrite => split_aligned(addr, len)?,
        };
        let free: Vec<usize> = (0..SLOTS).filter(|&i| self.slots[i].is_none()).collect();
        if pieces.is_empty() || pieces.len() > free.len() {
            return None;
        }
        for (&i, &(a, l)) in free.iter().zip(&pieces) {
            self.slots[i] = Slot::new(a, l, kind);
        }
        Some(free[..pieces.len()].to_vec())
    }

    /// Stops watching what [`DebugRegs::insert`] set up for the same range and kind; returns
    /// the slots freed, or `None`, changing nothing, if not all of its pieces are present.
    pub fn remove(&mut self, addr: u64, len: u64, kind: WatchKind) -> Option<Vec<usize>> {
        if len > MAX_WATCH_LEN {
            return None;
        }
        let pieces = match kind {
            WatchKind::Execute => vec![(addr, 1)],
            WatchKind::Write | WatchKind::ReadWrite => split_aligned(addr, len)?,
        };
        let mut found = Vec::new();
        for (a, l) in pieces {
            let want = Slot::new(a, l, kind)?;
            let i = (0..SLOTS).find(|&i| self.slots[i] == Some(want) && !found.contains(&i))?;
            found.push(i);
        }
        for &i in &found {
            self.slots[i] = None;
        }
        Some(found)
    }

    /// DR7 enabling the used slots: local-enable bit L<i> (bit 2i), R/W at bits 16+4i and
    /// LEN at bits 18+4i (1 byte 00, 2 bytes 01, 8 bytes 10, 4 bytes 11).
    pub fn dr7(&self) -> u64 {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|s| (i, s)))
            .fold(0, |v, (i, s)| {
                v | (1 << (2 * i))
                    | (s.kind.rw_bits() << (16 + 4 * i))
                    | (s.len_bits() << (18 + 4 * i))
            })
    }
}

/// The slots whose condition DR6 reports as hit (bits B0–B3).
pub fn hit_slots(dr6: u64) -> impl Iterator<Item = usize> {
    (0..SLOTS).filter(move |&i| dr6 & (1 << i) != 0)
}

/// The longest range the debug registers can watch: every slot watching 8 aligned bytes.
pub const MAX_WATCH_LEN: u64 = SLOTS as u64 * 8;

/// Splits `len` bytes at `addr` into the fewest naturally aligned pieces of 1, 2, 4 or 8
/// bytes covering exactly that range, in address order; `None` if the range is empty or
/// wraps around the address space.
pub fn split_aligned(addr: u64, len: u64) -> Option<Vec<(u64, u8)>> {
    let end = addr.checked_add(len)?;
    if len == 0 {
        return None;
    }
    let mut pieces = Vec::new();
    let mut a = addr;
    while a < end {
        let size = [8u64, 4, 2, 1]
            .into_iter()
            .find(|&s| a % s == 0 && a + s <= end)
            .unwrap_or(1);
        pieces.push((a, size as u8));
        a += size;
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugreg_offset_matches_struct_user() {
        // 27 general registers, u_fpvalid (+pad), 512-byte FXSAVE, then the sizes and
        // pointers up to u_comm[32].
        assert_eq!(DEBUGREG_OFFSET, 848);
        assert_eq!(debug_reg_offset(7).unwrap(), 848 + 56);
        assert!(debug_reg_offset(4).is_err());
        assert!(debug_reg_offset(8).is_err());
    }

    #[test]
    fn split_into_aligned_pieces() {
        assert_eq!(split_aligned(0x1000, 8), Some(vec![(0x1000, 8)]));
        assert_eq!(split_aligned(0x1001, 1), Some(vec![(0x1001, 1)]));
        assert_eq!(
            split_aligned(0x1001, 7),
            Some(vec![(0x1001, 1), (0x1002, 2), (0x1004, 4)])
        );
        assert_eq!(
            split_aligned(0x1003, 12),
            Some(vec![
                (0x1003, 1),
                (0x1004, 4),
                (0x1008, 4),
                (0x100c, 2),
                (0x100e, 1)
            ])
        );
        assert_eq!(
            split_aligned(0x1000, 16),
            Some(vec![(0x1000, 8), (0x1008, 8)])
        );
        assert_eq!(split_aligned(0x1000, 0), None);
        // A length no slots can take is refused at once (no piece list of its size).
        let mut regs = DebugRegs::default();
        assert_eq!(regs.insert(0, 0xffff_ffff, WatchKind::Write), None);
        assert_eq!(regs.insert(0, u64::MAX, WatchKind::ReadWrite), None);
        assert_eq!(regs.remove(0, u64::MAX, WatchKind::Write), None);
        assert_eq!(
            regs.insert(0x1000, MAX_WATCH_LEN, WatchKind::Write),
            Some(vec![0, 1, 2, 3])
        );
        assert_eq!(split_aligned(u64::MAX, 2), None);
        // The pieces tile the range exactly.
        for addr in 0x2000..0x2010u64 {
            for len in 1..20u64 {
                let p = split_aligned(addr, len).unwrap();
                let mut next = addr;
                for (a, l) in p {
                    assert_eq!(a, next);
                    assert_eq!(a % u64::from(l), 0);
                    next += u64::from(l);
                }
                assert_eq!(next, addr + len);
            }
        }
    }

    #[test]
    fn slot_validation() {
        assert!(Slot::new(0x1000, 8, WatchKind::Write).is_some());
        assert!(Slot::new(0x1004, 8, WatchKind::Write).is_none());
        assert!(Slot::new(0x1000, 3, WatchKind::ReadWrite).is_none());
        assert!(Slot::new(0x1001, 1, WatchKind::Execute).is_some());
        assert!(Slot::new(0x1000, 4, WatchKind::Execute).is_none());
    }

    #[test]
    fn dr7_encoding() {
        let mut d = DebugRegs::new();
        assert_eq!(d.dr7(), 0);
        assert_eq!(d.insert(0x1000, 1, WatchKind::Execute), Some(vec![0]));
        assert_eq!(d.dr7(), 0b01);
        assert_eq!(d.insert(0x2000, 8, WatchKind::Write), Some(vec![1]));
        // L1, R/W1 = 01 at bit 20, LEN1 = 10 at bit 22.
        assert_eq!(d.dr7(), 0b0101 | (0b01 << 20) | (0b10 << 22));
        assert_eq!(d.insert(0x3000, 4, WatchKind::ReadWrite), Some(vec![2]));
        assert_eq!(d.insert(0x4002, 2, WatchKind::Write), Some(vec![3]));
        assert_eq!(
            d.dr7(),
            0x55 | (0b01 << 20)
                | (0b10 << 22)
                | (0b11 << 24)
                | (0b11 << 26)
                | (0b01 << 28)
                | (0b01 << 30)
        );
        assert_eq!(d.insert(0x5000, 1, WatchKind::Write), None);
        assert_eq!(d.remove(0x2000, 8, WatchKind::Write), Some(vec![1]));
        assert_eq!(d.remove(0x2000, 8, WatchKind::Write), None);
        assert_eq!(d.slots[1], None);
        assert_eq!(d.dr7() & (0b11 << 2), 0);
        assert_eq!(d.dr7() & (0xf << 20), 0);
    }

    #[test]
    fn insert_is_all_or_nothing() {
        let mut d = DebugRegs::new();
        // 7 bytes at an odd address take three slots.
        assert_eq!(d.insert(0x1001, 7, WatchKind::Write), Some(vec![0, 1, 2]));
        let before = d;
        assert_eq!(d.insert(0x2000, 16, WatchKind::Write), None);
        assert_eq!(d, before);
        assert_eq!(d.insert(0x2000, 2, WatchKind::Execute), None);
        assert_eq!(d.remove(0x1001, 7, WatchKind::Write), Some(vec![0, 1, 2]));
        assert_eq!(d, DebugRegs::new());
    }

    #[test]
    fn hits_from_dr6() {
        assert_eq!(hit_slots(0).count(), 0);
        assert_eq!(hit_slots(0xffff_0ff5).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(hit_slots(0b1111).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }
}
