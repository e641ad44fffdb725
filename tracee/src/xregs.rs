//! The x87, SSE and AVX registers of a stopped task, as gdb presents them.
//!
//! The kernel hands them out as an XSAVE image (`NT_X86_XSTATE`, standard format) or, without
//! XSAVE, as a 512-byte FXSAVE image (`PTRACE_GETFPREGS`). [`FpRegs`] holds gdb's view of them:
//! the 16-bit control, status and tag words widened to 32 bits, the *full* i387 tag word
//! rebuilt from FXSAVE's abridged one (as gdb's `i387_supply_fxsave` does), and the upper
//! halves of the YMM registers.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::gone::PtraceContext;
use crate::tracee::Tracee;

/// The x87, SSE and AVX state of a task, in gdb's terms (its `amd64` register set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FpRegs {
    /// `st0`–`st7`, 80-bit extended precision, in stack order (`st0` is the top of the stack).
    pub st: [[u8; 10]; 8],
    /// The x87 control word (`fctrl`, 16 bits used).
    pub fctrl: u32,
    /// The x87 status word (`fstat`, 16 bits used).
    pub fstat: u32,
    /// The full i387 tag word (`ftag`): two bits per physical register, 0 valid, 1 zero,
    /// 2 special, 3 empty.
    pub ftag: u32,
    /// The upper 32 bits of the last x87 instruction's 64-bit address (`fiseg`).
    pub fiseg: u32,
    /// The lower 32 bits of the last x87 instruction's address (`fioff`).
    pub fioff: u32,
    /// The upper 32 bits of the last x87 operand's 64-bit address (`foseg`).
    pub foseg: u32,
    /// The lower 32 bits of the last x87 operand's address (`fooff`).
    pub fooff: u32,
    /// The last x87 opcode (`fop`, 11 bits used).
    pub fop: u32,
    /// `xmm0`–`xmm15`, little-endian.
    pub xmm: [[u8; 16]; 16],
    /// The SSE control and status register.
    pub mxcsr: u32,
    /// `ymm0h`–`ymm15h`: bits 128–255 of `ymm0`–`ymm15`, little-endian (zero without AVX).
    pub ymmh: [[u8; 16]; 16],
}

/// `NT_PRFPREG`'s successor with the extended state: the XSAVE image.
const NT_X86_XSTATE: libc::c_int = 0x202;

/// Size of the FXSAVE image, which is also the legacy area at the start of an XSAVE image.
const FXSAVE_SIZE: usize = 512;
/// Offset of the XSAVE header's `XSTATE_BV` in an XSAVE image.
pub(crate) const XSTATE_BV_OFFSET: usize = 512;
/// Size of the legacy area plus the XSAVE header: the smallest XSAVE image.
const XSAVE_MIN_SIZE: usize = 576;
/// Where the kernel puts its `struct _fpx_sw_bytes` in the legacy area's reserved bytes.
pub(crate) const SW_BYTES_OFFSET: usize = 464;
/// `FP_XSTATE_MAGIC1`: marks valid `_fpx_sw_bytes`.
pub(crate) const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;

/// `XSTATE_BV` bit of the x87 component.
const XFEATURE_X87: u64 = 1 << 0;
/// `XSTATE_BV` bit of the SSE component (the XMM registers).
const XFEATURE_SSE: u64 = 1 << 1;
/// `XSTATE_BV` bit of the AVX component (the upper halves of the YMM registers).
const XFEATURE_AVX: u64 = 1 << 2;

/// The x87 control word after `fninit` (and in the XSAVE init state).
const FCTRL_INIT: u32 = 0x037f;
/// MXCSR at reset (and in the XSAVE init state).
const MXCSR_INIT: u32 = 0x1f80;

// Offsets in the FXSAVE image (64-bit format).
const FCW: usize = 0;
const FSW: usize = 2;
const FTW: usize = 4;
const FOP: usize = 6;
const FIP: usize = 8;
const FIP_HI: usize = 12;
const FDP: usize = 16;
const FDP_HI: usize = 20;
const MXCSR: usize = 24;
const ST0: usize = 32;
const XMM0: usize = 160;

/// Where this CPU's XSAVE image keeps what we need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct XsaveLayout {
    /// Bytes to offer `PTRACE_GETREGSET` (at least the kernel's XSAVE image size).
    size: usize,
    /// Offset of the AVX component in the standard format, if the CPU has one.
    avx_offset: Option<usize>,
}

/// The layout as CPUID leaf 0xD reports it (the same for every task on this machine).
pub(crate) fn xsave_layout() -> XsaveLayout {
    static LAYOUT: OnceLock<XsaveLayout> = OnceLock::new();
    *LAYOUT.get_or_init(|| {
        let max_leaf = crate::cpuid::query(0, 0)[0];
        if max_leaf < 0xd {
            return XsaveLayout {
                size: 4096,
                avx_offset: None,
            };
        }
        // Subleaf 0, ECX: the size of an XSAVE image holding every feature the CPU supports.
        let all = crate::cpuid::query(0xd, 0)[2] as usize;
        // Subleaf 2: the AVX component's size (EAX) and standard-format offset (EBX).
        let [avx_size, avx_off, _, _] = crate::cpuid::query(0xd, 2);
        XsaveLayout {
            size: all.max(4096).next_multiple_of(64),
            avx_offset: (avx_size == 256).then_some(avx_off as usize),
        }
    })
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

/// The i387 tag (0 valid, 1 zero, 2 special) of a non-empty 80-bit register, as gdb's
/// `i387_tag` classifies it.
fn tag_of(raw: &[u8; 10]) -> u16 {
    let integer = raw[7] & 0x80 != 0;
    let exponent = u16::from_le_bytes([raw[8], raw[9]]) & 0x7fff;
    let fraction = u64::from_le_bytes([
        raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
    ]) & !(1 << 63);
    match exponent {
        0x7fff => 2,
        0 if fraction == 0 && !integer => 1,
        0 => 2,
        _ if integer => 0,
        _ => 2,
    }
}

/// The full tag word from FXSAVE's abridged one (bit `i` set: physical register `i` is not
/// empty), the status word's top-of-stack and the registers in stack order.
fn full_tag_word(abridged: u8, fstat: u16, st: &[[u8; 10]; 8]) -> u16 {
    let top = usize::from((fstat >> 11) & 7);
    (0..8).fold(0, |word, phys| {
        let tag = if abridged & (1 << phys) != 0 {
            tag_of(&st[(phys + 8 - top) % 8])
        } else {
            3
        };
        word | (tag << (2 * phys))
    })
}

/// The abridged tag byte of a full tag word: a register is valid unless tagged empty.
fn abridged_tag(full: u16) -> u8 {
    (0..8)
        .filter(|&phys| (full >> (2 * phys)) & 3 != 3)
        .fold(0, |b, phys| b | (1 << phys))
}

impl FpRegs {
    /// Decodes an FXSAVE image (or the legacy area of an XSAVE image); `ymmh` stays zero.
    fn from_fxsave(fx: &[u8]) -> FpRegs {
        let mut r = FpRegs::default();
        for (i, st) in r.st.iter_mut().enumerate() {
            st.copy_from_slice(&fx[ST0 + 16 * i..ST0 + 16 * i + 10]);
        }
        r.fctrl = u32::from(u16_at(fx, FCW));
        r.fstat = u32::from(u16_at(fx, FSW));
        r.ftag = u32::from(full_tag_word(fx[FTW], u16_at(fx, FSW), &r.st));
        r.fiseg = u32_at(fx, FIP_HI);
        r.fioff = u32_at(fx, FIP);
        r.foseg = u32_at(fx, FDP_HI);
        r.fooff = u32_at(fx, FDP);
        r.fop = u32::from(u16_at(fx, FOP) & 0x7ff);
        for (i, x) in r.xmm.iter_mut().enumerate() {
            x.copy_from_slice(&fx[XMM0 + 16 * i..XMM0 + 16 * i + 16]);
        }
        r.mxcsr = u32_at(fx, MXCSR);
        r
    }

    /// Puts the x87 registers into an FXSAVE image (not MXCSR, which belongs to SSE here).
    fn put_x87(&self, fx: &mut [u8]) {
        for (i, st) in self.st.iter().enumerate() {
            fx[ST0 + 16 * i..ST0 + 16 * i + 10].copy_from_slice(st);
        }
        fx[FCW..FCW + 2].copy_from_slice(&(self.fctrl as u16).to_le_bytes());
        fx[FSW..FSW + 2].copy_from_slice(&(self.fstat as u16).to_le_bytes());
        fx[FTW] = abridged_tag(self.ftag as u16);
        fx[FOP..FOP + 2].copy_from_slice(&((self.fop & 0x7ff) as u16).to_le_bytes());
        fx[FIP..FIP + 4].copy_from_slice(&self.fioff.to_le_bytes());
        fx[FIP_HI..FIP_HI + 4].copy_from_slice(&self.fiseg.to_le_bytes());
        fx[FDP..FDP + 4].copy_from_slice(&self.fooff.to_le_bytes());
        fx[FDP_HI..FDP_HI + 4].copy_from_slice(&self.foseg.to_le_bytes());
    }

    /// Puts the SSE registers (XMM and MXCSR) into an FXSAVE image.
    fn put_sse(&self, fx: &mut [u8]) {
        for (i, x) in self.xmm.iter().enumerate() {
            fx[XMM0 + 16 * i..XMM0 + 16 * i + 16].copy_from_slice(x);
        }
        fx[MXCSR..MXCSR + 4].copy_from_slice(&self.mxcsr.to_le_bytes());
    }

    /// Whether the x87 registers of `self` and `other` would be stored identically (the tag
    /// word is stored abridged, the opcode in 11 bits, the control and status words in 16).
    fn same_x87(&self, other: &FpRegs) -> bool {
        let (mut a, mut b) = ([0u8; FXSAVE_SIZE], [0u8; FXSAVE_SIZE]);
        self.put_x87(&mut a);
        other.put_x87(&mut b);
        a == b
    }

    /// Sets the x87 registers to their state after `fninit` (the XSAVE init state).
    fn set_x87_init(&mut self) {
        self.st = [[0; 10]; 8];
        self.fctrl = FCTRL_INIT;
        self.fstat = 0;
        self.ftag = 0xffff;
        self.fiseg = 0;
        self.fioff = 0;
        self.foseg = 0;
        self.fooff = 0;
        self.fop = 0;
    }

    /// The registers as canonical bytes, for storing in a trace and comparing: every field in
    /// declaration order, little-endian (`st0`–`st7` as 10 bytes each, then `fctrl`, `fstat`,
    /// `ftag`, `fiseg`, `fioff`, `foseg`, `fooff`, `fop` as 4 bytes each, `xmm0`–`xmm15`,
    /// `mxcsr`, `ymm0h`–`ymm15h`): [`FpRegs::BYTES`] bytes. Equal registers give equal bytes,
    /// whichever image (XSAVE or FXSAVE) they were read from.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        for st in &self.st {
            out.extend_from_slice(st);
        }
        for w in [
            self.fctrl, self.fstat, self.ftag, self.fiseg, self.fioff, self.foseg, self.fooff,
            self.fop,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for x in &self.xmm {
            out.extend_from_slice(x);
        }
        out.extend_from_slice(&self.mxcsr.to_le_bytes());
        for h in &self.ymmh {
            out.extend_from_slice(h);
        }
        out
    }

    /// Length of [`FpRegs::to_bytes`].
    pub const BYTES: usize = 8 * 10 + 8 * 4 + 16 * 16 + 4 + 16 * 16;
}

/// Offset of the AVX component in `xsave` if it is there: the CPU has one, the kernel enables
/// it (XCR0 as the kernel reports it in the legacy area's software bytes) and it fits.
fn avx_offset(xsave: &[u8], layout: &XsaveLayout) -> Option<usize> {
    let off = layout.avx_offset?;
    if u32_at(xsave, SW_BYTES_OFFSET) == FP_XSTATE_MAGIC1 {
        let xcr0 = u64_at(xsave, SW_BYTES_OFFSET + 8);
        if xcr0 & XFEATURE_AVX == 0 {
            return None;
        }
    }
    (xsave.len() >= off + 256).then_some(off)
}

/// Decodes a standard-format XSAVE image; components in their init state (clear in
/// `XSTATE_BV`) read as their init values, whatever the buffer holds there.
fn from_xsave(xsave: &[u8], avx: Option<usize>) -> FpRegs {
    let bv = u64_at(xsave, XSTATE_BV_OFFSET);
    let mut r = FpRegs::from_fxsave(&xsave[..FXSAVE_SIZE]);
    if bv & XFEATURE_X87 == 0 {
        r.set_x87_init();
    }
    if bv & XFEATURE_SSE == 0 {
        r.xmm = [[0; 16]; 16];
    }
    if bv & (XFEATURE_SSE | XFEATURE_AVX) == 0 {
        r.mxcsr = MXCSR_INIT;
    }
    if let Some(off) = avx.filter(|_| bv & XFEATURE_AVX != 0) {
        for (i, h) in r.ymmh.iter_mut().enumerate() {
            h.copy_from_slice(&xsave[off + 16 * i..off + 16 * i + 16]);
        }
    }
    r
}

/// Writes `new` into the XSAVE image `xsave`, touching only the components whose registers
/// change, and marks those in `XSTATE_BV` (a component leaving its init state must be stored
/// whole). Returns whether anything changed.
fn put_xsave(xsave: &mut [u8], avx: Option<usize>, new: &FpRegs) -> Result<bool> {
    let cur = from_xsave(xsave, avx);
    let mut bv = u64_at(xsave, XSTATE_BV_OFFSET);
    let mut changed = false;
    if !new.same_x87(&cur) {
        new.put_x87(xsave);
        bv |= XFEATURE_X87;
        changed = true;
    }
    if new.xmm != cur.xmm || new.mxcsr != cur.mxcsr {
        new.put_sse(xsave);
        bv |= XFEATURE_SSE;
        changed = true;
    }
    if new.ymmh != cur.ymmh {
        let Some(off) = avx else {
            bail!("cannot set the upper halves of the YMM registers: no AVX state here");
        };
        for (i, h) in new.ymmh.iter().enumerate() {
            xsave[off + 16 * i..off + 16 * i + 16].copy_from_slice(h);
        }
        bv |= XFEATURE_AVX;
        changed = true;
    }
    xsave[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&bv.to_le_bytes());
    Ok(changed)
}

impl Tracee {
    /// The x87, SSE and AVX registers. Uses the XSAVE image where the kernel offers one, the
    /// FXSAVE image otherwise (the YMM upper halves are then zero).
    pub fn fp_regs(&self) -> Result<FpRegs> {
        let layout = xsave_layout();
        match self.get_xstate(&layout)? {
            Some(xsave) => Ok(from_xsave(&xsave, avx_offset(&xsave, &layout))),
            None => Ok(FpRegs::from_fxsave(&self.get_fxsave()?)),
        }
    }

    /// Sets the x87, SSE and AVX registers (read-modify-write of the kernel's image, so state
    /// [`FpRegs`] does not cover is kept). Setting nonzero YMM upper halves fails on a task
    /// without AVX state.
    pub fn set_fp_regs(&self, r: &FpRegs) -> Result<()> {
        let layout = xsave_layout();
        match self.get_xstate(&layout)? {
            Some(mut xsave) => {
                let avx = avx_offset(&xsave, &layout);
                let changed = put_xsave(&mut xsave, avx, r)
                    .with_context(|| format!("writing vector registers of task {}", self.pid()))?;
                if changed {
                    self.regset(libc::PTRACE_SETREGSET, NT_X86_XSTATE, &mut xsave)
                        .ptrace_context(self.pid(), || {
                            format!("writing the XSAVE state of task {}", self.pid())
                        })?;
                }
                Ok(())
            }
            None => {
                if r.ymmh != [[0; 16]; 16] {
                    bail!(
                        "cannot set the upper halves of the YMM registers of task {}: the \
                         kernel offers no XSAVE state",
                        self.pid()
                    );
                }
                let mut fx = self.get_fxsave()?;
                r.put_x87(&mut fx);
                r.put_sse(&mut fx);
                // SAFETY: PTRACE_SETFPREGS reads one user_fpregs_struct (512 bytes) from
                // `data`, which points at a buffer of that size owned by this frame.
                let rc = unsafe {
                    libc::ptrace(
                        libc::PTRACE_SETFPREGS,
                        self.pid().as_raw(),
                        0usize,
                        fx.as_ptr(),
                    )
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error()).ptrace_context(self.pid(), || {
                        format!("writing the FXSAVE state of task {}", self.pid())
                    });
                }
                Ok(())
            }
        }
    }

    /// The XSAVE image, or `None` if the kernel has none for this task (no XSAVE on this CPU,
    /// or a kernel without `NT_X86_XSTATE`).
    pub(crate) fn get_xstate(&self, layout: &XsaveLayout) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; layout.size];
        match self.regset(libc::PTRACE_GETREGSET, NT_X86_XSTATE, &mut buf) {
            Ok(len) => {
                if len < XSAVE_MIN_SIZE {
                    bail!(
                        "the XSAVE state of task {} is only {len} bytes long",
                        self.pid()
                    );
                }
                // The kernel insists on getting back exactly what it gave.
                buf.truncate(len);
                Ok(Some(buf))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::EINVAL)) => Ok(None),
            Err(e) => Err(e).ptrace_context(self.pid(), || {
                format!("reading the XSAVE state of task {}", self.pid())
            }),
        }
    }

    /// The FXSAVE image (`PTRACE_GETFPREGS`).
    fn get_fxsave(&self) -> Result<[u8; FXSAVE_SIZE]> {
        let mut fx = [0u8; FXSAVE_SIZE];
        // SAFETY: PTRACE_GETFPREGS writes one user_fpregs_struct (512 bytes) to `data`, which
        // points at a buffer of that size owned by this frame.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_GETFPREGS,
                self.pid().as_raw(),
                0usize,
                fx.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).ptrace_context(self.pid(), || {
                format!("reading the FXSAVE state of task {}", self.pid())
            });
        }
        Ok(fx)
    }

    /// `PTRACE_GETREGSET`/`PTRACE_SETREGSET` of register set `nt` through `buf`; returns the
    /// number of bytes the kernel transferred.
    fn regset(
        &self,
        request: libc::c_uint,
        nt: libc::c_int,
        buf: &mut [u8],
    ) -> std::io::Result<usize> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: the kernel reads or writes at most `iov_len` bytes at `iov_base`, which
        // describe `buf`, borrowed mutably for this call; it updates `iov` (a local) in place.
        let rc = unsafe {
            libc::ptrace(
                request,
                self.pid().as_raw(),
                nt as usize,
                &mut iov as *mut libc::iovec,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(iov.iov_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1.0 as an 80-bit extended value.
    const ONE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f];
    /// +0.0.
    const ZERO: [u8; 10] = [0; 10];
    /// +infinity.
    const INF: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x7f];
    /// A denormal: exponent 0, fraction nonzero.
    const DENORMAL: [u8; 10] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// An "unnormal": nonzero exponent, integer bit clear.
    const UNNORMAL: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x3f];

    #[test]
    fn tags_classify_like_gdb() {
        assert_eq!(tag_of(&ONE), 0);
        assert_eq!(tag_of(&ZERO), 1);
        assert_eq!(tag_of(&INF), 2);
        assert_eq!(tag_of(&DENORMAL), 2);
        assert_eq!(tag_of(&UNNORMAL), 2);
    }

    #[test]
    fn empty_stack_has_all_empty_tags() {
        assert_eq!(full_tag_word(0, 0, &[[0; 10]; 8]), 0xffff);
        assert_eq!(abridged_tag(0xffff), 0);
    }

    #[test]
    fn full_tag_word_follows_top_of_stack() {
        // Two values pushed on an empty stack: TOP went 0 -> 7 -> 6, so st0 is physical
        // register 6 and st1 physical register 7.
        let fstat = 6 << 11;
        let mut st = [[0; 10]; 8];
        st[0] = ZERO;
        st[1] = ONE;
        let abridged = (1 << 6) | (1 << 7);
        let full = full_tag_word(abridged, fstat, &st);
        // Physical 6 (st0) is zero (01), physical 7 (st1) valid (00), the rest empty (11).
        assert_eq!(full, 0x1fff);
        assert_eq!(abridged_tag(full), abridged);
        // A tag of "special" or "zero" is still "not empty" when abridged.
        assert_eq!(abridged_tag(0xbfff), 0x80);
    }

    fn sample() -> FpRegs {
        let mut r = FpRegs {
            fctrl: 0x037f,
            fstat: 7 << 11,
            fiseg: 0x5555,
            fioff: 0x1234_5678,
            foseg: 0x7fff,
            fooff: 0x9abc_def0,
            fop: 0x7dd,
            mxcsr: 0x1fa0,
            ..FpRegs::default()
        };
        r.st[0] = ONE;
        // Only physical 7 (st0) holds a value, and it is valid.
        r.ftag = 0x3fff;
        for i in 0..16 {
            r.xmm[i] = [i as u8 + 1; 16];
            r.ymmh[i] = [0x80 | i as u8; 16];
        }
        r
    }

    #[test]
    fn xsave_round_trip_sets_component_bits() {
        let avx = Some(576);
        let mut buf = vec![0u8; 1024];
        // Everything in its init state: the buffer's (stale) contents do not show.
        buf[ST0] = 0xaa;
        buf[XMM0] = 0xbb;
        buf[576] = 0xcc;
        let init = from_xsave(&buf, avx);
        assert_eq!(init.fctrl, FCTRL_INIT);
        assert_eq!(init.ftag, 0xffff);
        assert_eq!(init.st, [[0; 10]; 8]);
        assert_eq!(init.xmm, [[0; 16]; 16]);
        assert_eq!(init.mxcsr, MXCSR_INIT);
        assert_eq!(init.ymmh, [[0; 16]; 16]);
        // Writing back what was read changes nothing.
        assert!(!put_xsave(&mut buf, avx, &init).unwrap());
        assert_eq!(u64_at(&buf, XSTATE_BV_OFFSET), 0);

        let r = sample();
        assert!(put_xsave(&mut buf, avx, &r).unwrap());
        assert_eq!(u64_at(&buf, XSTATE_BV_OFFSET), 0b111);
        assert_eq!(from_xsave(&buf, avx), r);
        assert_eq!(buf[FTW], 0x80);
    }

    #[test]
    fn xsave_write_touches_only_changed_components() {
        let avx = Some(576);
        let mut buf = vec![0u8; 1024];
        let mut r = from_xsave(&buf, avx);
        r.ymmh[3] = [7; 16];
        assert!(put_xsave(&mut buf, avx, &r).unwrap());
        assert_eq!(u64_at(&buf, XSTATE_BV_OFFSET), XFEATURE_AVX);
        assert_eq!(from_xsave(&buf, avx).ymmh[3], [7; 16]);
        // MXCSR is SSE state (it is also saved when only AVX is in use).
        r.mxcsr = 0x1f80 | 0x40;
        assert!(put_xsave(&mut buf, avx, &r).unwrap());
        assert_eq!(u64_at(&buf, XSTATE_BV_OFFSET), XFEATURE_AVX | XFEATURE_SSE);
        assert_eq!(from_xsave(&buf, avx), r);
    }

    #[test]
    fn no_avx_state_refuses_ymm_writes() {
        let mut buf = vec![0u8; 1024];
        let mut r = from_xsave(&buf, None);
        assert!(put_xsave(&mut buf, None, &r).is_ok());
        r.ymmh[0][0] = 1;
        assert!(put_xsave(&mut buf, None, &r).is_err());
    }

    #[test]
    fn canonical_bytes_cover_every_field() {
        let r = sample();
        let b = r.to_bytes();
        assert_eq!(b.len(), FpRegs::BYTES);
        assert_eq!(&b[..10], &ONE);
        // fctrl right after the eight 10-byte registers, fop last of the eight words.
        assert_eq!(&b[80..84], &0x037fu32.to_le_bytes());
        assert_eq!(&b[108..112], &0x7ddu32.to_le_bytes());
        assert_eq!(&b[112..128], &[1; 16]);
        assert_eq!(&b[368..372], &0x1fa0u32.to_le_bytes());
        assert_eq!(&b[372..388], &[0x80; 16]);
        // Each field shows: changing any one changes the bytes.
        let changed = |f: &dyn Fn(&mut FpRegs)| {
            let mut o = r;
            f(&mut o);
            o.to_bytes() != b
        };
        assert!(changed(&|o| o.st[7][9] ^= 1));
        assert!(changed(&|o| o.fstat ^= 1));
        assert!(changed(&|o| o.ftag ^= 1));
        assert!(changed(&|o| o.fiseg ^= 1));
        assert!(changed(&|o| o.fioff ^= 1));
        assert!(changed(&|o| o.foseg ^= 1));
        assert!(changed(&|o| o.fooff ^= 1));
        assert!(changed(&|o| o.fop ^= 1));
        assert!(changed(&|o| o.xmm[15][15] ^= 1));
        assert!(changed(&|o| o.mxcsr ^= 1));
        assert!(changed(&|o| o.ymmh[15][15] ^= 1));
    }

    #[test]
    fn fxsave_round_trip() {
        let mut r = sample();
        r.ymmh = [[0; 16]; 16];
        let mut fx = [0u8; FXSAVE_SIZE];
        r.put_x87(&mut fx);
        r.put_sse(&mut fx);
        assert_eq!(FpRegs::from_fxsave(&fx), r);
    }

    #[test]
    fn avx_offset_follows_the_kernels_xcr0() {
        let layout = XsaveLayout {
            size: 1024,
            avx_offset: Some(576),
        };
        let mut buf = vec![0u8; 1024];
        assert_eq!(avx_offset(&buf, &layout), Some(576));
        buf[SW_BYTES_OFFSET..SW_BYTES_OFFSET + 4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
        buf[SW_BYTES_OFFSET + 8] = 0b11;
        assert_eq!(avx_offset(&buf, &layout), None);
        buf[SW_BYTES_OFFSET + 8] = 0b111;
        assert_eq!(avx_offset(&buf, &layout), Some(576));
        assert_eq!(avx_offset(&buf[..800], &layout), None);
    }
}
