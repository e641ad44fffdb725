//! The AVX-512 registers of a stopped task, as gdb presents them: the opmask registers
//! `k0`–`k7`, the upper 256 bits of `zmm0`–`zmm15` and the whole of `zmm16`–`zmm31`, from the
//! XSAVE image's components 5 (opmask), 6 (ZMM_Hi256) and 7 (Hi16_ZMM).

use std::sync::OnceLock;

use anyhow::Result;

use crate::tracee::Tracee;
use crate::xregs::XSTATE_BV_OFFSET;
use crate::xregs::{u32_at, u64_at, xsave_layout, FP_XSTATE_MAGIC1, SW_BYTES_OFFSET};

/// The XSAVE components of AVX-512: opmask, ZMM_Hi256, Hi16_ZMM (bits 5–7).
const COMPONENTS: [u32; 3] = [5, 6, 7];
/// Their sizes in bytes.
const SIZES: [usize; 3] = [64, 512, 1024];

/// The AVX-512 state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx512Regs {
    /// `k0`–`k7`, little-endian.
    pub k: [[u8; 8]; 8],
    /// Bits 256–511 of `zmm0`–`zmm15`, little-endian.
    pub zmm_hi256: [[u8; 32]; 16],
    /// `zmm16`–`zmm31`, whole, little-endian.
    pub hi16_zmm: [[u8; 64]; 16],
}

impl Default for Avx512Regs {
    fn default() -> Self {
        Avx512Regs {
            k: [[0; 8]; 8],
            zmm_hi256: [[0; 32]; 16],
            hi16_zmm: [[0; 64]; 16],
        }
    }
}

/// The standard-format offsets of the three components in this CPU's XSAVE image, if the
/// CPU has AVX-512 and the kernel enabled it.
fn offsets() -> Option<[usize; 3]> {
    static OFFSETS: OnceLock<Option<[usize; 3]>> = OnceLock::new();
    *OFFSETS.get_or_init(|| {
        if !std::is_x86_feature_detected!("avx512f") {
            return None;
        }
        let mut out = [0; 3];
        for (i, c) in COMPONENTS.iter().enumerate() {
            // CPUID 0xD subleaf c: the component's size (EAX) and offset (EBX).
            let [size, off, _, _] = crate::cpuid::query(0xd, *c);
            if size as usize != SIZES[i] {
                return None;
            }
            out[i] = off as usize;
        }
        Some(out)
    })
}

/// Whether this machine's tasks have AVX-512 registers (the CPU has them and the kernel
/// enabled them).
pub fn available() -> bool {
    offsets().is_some()
}

/// Decodes the AVX-512 components of a standard-format XSAVE image; components in their init
/// state (clear in `XSTATE_BV`) read as zero. `None` if the image does not hold them.
fn from_xsave(xsave: &[u8], offsets: [usize; 3]) -> Option<Avx512Regs> {
    if u32_at(xsave, SW_BYTES_OFFSET) == FP_XSTATE_MAGIC1 {
        let xcr0 = u64_at(xsave, SW_BYTES_OFFSET + 8);
        if COMPONENTS.iter().any(|c| xcr0 & (1 << c) == 0) {
            return None;
        }
    }
    if offsets.iter().zip(SIZES).any(|(&o, s)| xsave.len() < o + s) {
        return None;
    }
    let bv = u64_at(xsave, XSTATE_BV_OFFSET);
    let mut r = Avx512Regs::default();
    if bv & (1 << 5) != 0 {
        for (i, k) in r.k.iter_mut().enumerate() {
            let at = offsets[0] + 8 * i;
            k.copy_from_slice(&xsave[at..at + 8]);
        }
    }
    if bv & (1 << 6) != 0 {
        for (i, z) in r.zmm_hi256.iter_mut().enumerate() {
            let at = offsets[1] + 32 * i;
            z.copy_from_slice(&xsave[at..at + 32]);
        }
    }
    if bv & (1 << 7) != 0 {
        for (i, z) in r.hi16_zmm.iter_mut().enumerate() {
            let at = offsets[2] + 64 * i;
            z.copy_from_slice(&xsave[at..at + 64]);
        }
    }
    Some(r)
}

impl Tracee {
    /// The AVX-512 registers, or `None` where the CPU or the kernel has none.
    pub fn avx512_regs(&self) -> Result<Option<Avx512Regs>> {
        let Some(offsets) = offsets() else {
            return Ok(None);
        };
        let layout = xsave_layout();
        Ok(self
            .get_xstate(&layout)?
            .and_then(|xsave| from_xsave(&xsave, offsets)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_components_read_as_zero_and_set_ones_are_decoded() {
        let offsets = [1088, 1152, 1664];
        let mut xsave = vec![0xeeu8; 2688];
        xsave[SW_BYTES_OFFSET..SW_BYTES_OFFSET + 4].copy_from_slice(&0u32.to_le_bytes());
        xsave[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(from_xsave(&xsave, offsets), Some(Avx512Regs::default()));
        let bv: u64 = (1 << 5) | (1 << 7);
        xsave[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&bv.to_le_bytes());
        xsave[1088..1096].copy_from_slice(&0x1234u64.to_le_bytes());
        xsave[1664 + 64] = 7;
        let r = from_xsave(&xsave, offsets).expect("AVX-512 state");
        assert_eq!(r.k[0], 0x1234u64.to_le_bytes());
        assert_eq!(r.k[1], [0xee; 8]);
        assert_eq!(r.zmm_hi256, [[0; 32]; 16]);
        assert_eq!(r.hi16_zmm[1][0], 7);
        assert!(from_xsave(&xsave[..2000], offsets).is_none());
    }
}
