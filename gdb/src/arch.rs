//! The x86-64 Linux architecture as gdb sees a deja task: gdb's register numbers, the `g`
//! packet layout, and the target description that tells gdb about them.
//!
//! `gdbstub_arch`'s x86-64 lacks `orig_rax` (which gdb needs to restart interrupted syscalls
//! correctly), `fs_base`/`gs_base` (thread-local storage) and the AVX upper halves, hence this
//! one. The registers follow gdb's own `amd64-avx-linux` description: the features
//! `org.gnu.gdb.i386.core`, `.sse`, `.linux`, `.segments` and `.avx`, in that order, numbered
//! 0–75 as gdb numbers them in the remote protocol.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::sync::OnceLock;

use std::sync::atomic::{AtomicBool, Ordering};

use tracee::xregs::FpRegs;
use tracee::xregs512::Avx512Regs;
use tracee::Regs;

/// The x86-64 Linux architecture with AVX, for `gdbstub`.
#[derive(Debug)]
pub enum X86_64Linux {}

impl gdbstub::arch::Arch for X86_64Linux {
    type Usize = u64;
    type Registers = Registers;
    type BreakpointKind = usize;
    type RegId = RegId;

    fn target_description_xml() -> Option<&'static str> {
        Some(target_description())
    }
}

/// Number of registers gdb knows here (remote numbers 0 to `NUM_REGS - 1`).
pub const NUM_REGS: usize = 76;

/// Size in bytes of a `g` packet's register data (before hex encoding).
pub const G_PACKET_SIZE: usize = 816;

/// Number of registers with the AVX-512 ones (see [`set_avx512`]).
pub const NUM_REGS_AVX512: usize = 148;

/// Size of a `g` packet's register data with the AVX-512 registers.
pub const G_PACKET_SIZE_AVX512: usize = G_PACKET_SIZE + 16 * 16 + 16 * 16 + 8 * 8 + 32 * 32;

/// Whether gdb is shown the AVX-512 registers.
static AVX512: AtomicBool = AtomicBool::new(false);

/// Shows gdb the AVX-512 registers (`org.gnu.gdb.i386.avx512`) or not, for the whole
/// process: set before gdb connects, where the recording CPU and this one have them.
pub fn set_avx512(on: bool) {
    AVX512.store(on, Ordering::Relaxed);
}

/// Whether gdb is shown the AVX-512 registers.
pub fn avx512() -> bool {
    AVX512.load(Ordering::Relaxed)
}

/// The number of registers gdb is shown.
fn num_regs() -> usize {
    if avx512() {
        NUM_REGS_AVX512
    } else {
        NUM_REGS
    }
}

/// The size of a `g` packet's register data.
fn g_packet_size() -> usize {
    if avx512() {
        G_PACKET_SIZE_AVX512
    } else {
        G_PACKET_SIZE
    }
}

/// A register, by what gdb calls it. Index payloads are positions in gdb's order; a
/// `RegId` built by hand with an index out of range is refused by [`Registers::read_reg`] and
/// [`Registers::write_reg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegId {
    /// A general register, 0–15: rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8 … r15 (gdb
    /// numbers 0–15; note gdb's order is not the kernel's).
    Gpr(u8),
    /// rip (16).
    Rip,
    /// eflags, 32 bits (17).
    Eflags,
    /// A segment selector, 32 bits, 0–5: cs, ss, ds, es, fs, gs (18–23).
    Segment(u8),
    /// st0–st7, 80 bits (24–31).
    St(u8),
    /// fctrl, 32 bits (32).
    Fctrl,
    /// fstat, 32 bits (33).
    Fstat,
    /// ftag, the full i387 tag word, 32 bits (34).
    Ftag,
    /// fiseg, 32 bits (35).
    Fiseg,
    /// fioff, 32 bits (36).
    Fioff,
    /// foseg, 32 bits (37).
    Foseg,
    /// fooff, 32 bits (38).
    Fooff,
    /// fop, 32 bits (39).
    Fop,
    /// xmm0–xmm15, 128 bits (40–55).
    Xmm(u8),
    /// mxcsr, 32 bits (56).
    Mxcsr,
    /// orig_rax: the syscall number at a syscall stop, -1 otherwise (57).
    OrigRax,
    /// fs_base (58).
    FsBase,
    /// gs_base (59).
    GsBase,
    /// ymm0h–ymm15h: bits 128–255 of ymm0–ymm15 (60–75).
    Ymmh(u8),
    /// xmm16–xmm31 (index 0–15), 128 bits (76–91; AVX-512).
    Xmm16(u8),
    /// ymm16h–ymm31h (index 0–15): bits 128–255 of ymm16–ymm31 (92–107; AVX-512).
    Ymm16h(u8),
    /// k0–k7, 64 bits (108–115; AVX-512).
    K(u8),
    /// zmm0h–zmm31h: bits 256–511 of zmm0–zmm31 (116–147; AVX-512).
    Zmmh(u8),
}

impl RegId {
    /// The register gdb numbers `n` in the remote protocol.
    pub fn from_gdb_number(n: usize) -> Option<RegId> {
        let i = |base: usize| (n - base) as u8;
        Some(match n {
            0..=15 => RegId::Gpr(i(0)),
            16 => RegId::Rip,
            17 => RegId::Eflags,
            18..=23 => RegId::Segment(i(18)),
            24..=31 => RegId::St(i(24)),
            32 => RegId::Fctrl,
            33 => RegId::Fstat,
            34 => RegId::Ftag,
            35 => RegId::Fiseg,
            36 => RegId::Fioff,
            37 => RegId::Foseg,
            38 => RegId::Fooff,
            39 => RegId::Fop,
            40..=55 => RegId::Xmm(i(40)),
            56 => RegId::Mxcsr,
            57 => RegId::OrigRax,
            58 => RegId::FsBase,
            59 => RegId::GsBase,
            60..=75 => RegId::Ymmh(i(60)),
            76..=91 => RegId::Xmm16(i(76)),
            92..=107 => RegId::Ymm16h(i(92)),
            108..=115 => RegId::K(i(108)),
            116..=147 => RegId::Zmmh(i(116)),
            _ => return None,
        })
    }

    /// gdb's remote number of this register (meaningless for an out-of-range index, see
    /// [`RegId::is_valid`]).
    pub fn gdb_number(self) -> usize {
        match self {
            RegId::Gpr(i) => usize::from(i),
            RegId::Rip => 16,
            RegId::Eflags => 17,
            RegId::Segment(i) => 18 + usize::from(i),
            RegId::St(i) => 24 + usize::from(i),
            RegId::Fctrl => 32,
            RegId::Fstat => 33,
            RegId::Ftag => 34,
            RegId::Fiseg => 35,
            RegId::Fioff => 36,
            RegId::Foseg => 37,
            RegId::Fooff => 38,
            RegId::Fop => 39,
            RegId::Xmm(i) => 40 + usize::from(i),
            RegId::Mxcsr => 56,
            RegId::OrigRax => 57,
            RegId::FsBase => 58,
            RegId::GsBase => 59,
            RegId::Ymmh(i) => 60 + usize::from(i),
            RegId::Xmm16(i) => 76 + usize::from(i),
            RegId::Ymm16h(i) => 92 + usize::from(i),
            RegId::K(i) => 108 + usize::from(i),
            RegId::Zmmh(i) => 116 + usize::from(i),
        }
    }

    /// Whether the index of this register, if it has one, is in range.
    pub fn is_valid(self) -> bool {
        RegId::from_gdb_number(self.gdb_number()) == Some(self)
    }

    /// Size in bytes, as the target description declares it.
    pub fn size(self) -> usize {
        match self {
            RegId::Gpr(_)
            | RegId::Rip
            | RegId::OrigRax
            | RegId::FsBase
            | RegId::GsBase
            | RegId::K(_) => 8,
            RegId::Eflags
            | RegId::Segment(_)
            | RegId::Fctrl
            | RegId::Fstat
            | RegId::Ftag
            | RegId::Fiseg
            | RegId::Fioff
            | RegId::Foseg
            | RegId::Fooff
            | RegId::Fop
            | RegId::Mxcsr => 4,
            RegId::St(_) => 10,
            RegId::Xmm(_) | RegId::Ymmh(_) | RegId::Xmm16(_) | RegId::Ymm16h(_) => 16,
            RegId::Zmmh(_) => 32,
        }
    }

    /// The register's name, type and group in the target description.
    fn describe(self) -> (String, &'static str, Option<&'static str>) {
        const GPR: [&str; 16] = [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ];
        const SEGMENT: [&str; 6] = ["cs", "ss", "ds", "es", "fs", "gs"];
        let x87 = |name: &str| (name.to_string(), "int", Some("float"));
        match self {
            RegId::Gpr(i @ (6 | 7)) => (GPR[usize::from(i)].into(), "data_ptr", None),
            RegId::Gpr(i) => (GPR[usize::from(i)].into(), "int64", None),
            RegId::Rip => ("rip".into(), "code_ptr", None),
            RegId::Eflags => ("eflags".into(), "i386_eflags", None),
            RegId::Segment(i) => (SEGMENT[usize::from(i)].into(), "int32", None),
            RegId::St(i) => (format!("st{i}"), "i387_ext", None),
            RegId::Fctrl => x87("fctrl"),
            RegId::Fstat => x87("fstat"),
            RegId::Ftag => x87("ftag"),
            RegId::Fiseg => x87("fiseg"),
            RegId::Fioff => x87("fioff"),
            RegId::Foseg => x87("foseg"),
            RegId::Fooff => x87("fooff"),
            RegId::Fop => x87("fop"),
            RegId::Xmm(i) => (format!("xmm{i}"), "vec128", None),
            RegId::Mxcsr => ("mxcsr".into(), "i386_mxcsr", Some("vector")),
            RegId::OrigRax => ("orig_rax".into(), "int", None),
            RegId::FsBase => ("fs_base".into(), "int", None),
            RegId::GsBase => ("gs_base".into(), "int", None),
            RegId::Ymmh(i) => (format!("ymm{i}h"), "uint128", None),
            RegId::Xmm16(i) => (format!("xmm{}", 16 + i), "vec128", None),
            RegId::Ymm16h(i) => (format!("ymm{}h", 16 + i), "uint128", None),
            RegId::K(i) => (format!("k{i}"), "uint64", None),
            RegId::Zmmh(i) => (format!("zmm{i}h"), "v2ui128", None),
        }
    }
}

impl gdbstub::arch::RegId for RegId {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        let r = RegId::from_gdb_number(id)?;
        Some((r, NonZeroUsize::new(r.size())))
    }

    fn to_raw_id(&self) -> Option<usize> {
        self.is_valid().then(|| self.gdb_number())
    }
}

/// A register value of the wrong size, or a [`RegId`] out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRegWrite {
    /// The register.
    pub reg: RegId,
    /// The number of bytes given.
    pub len: usize,
}

impl std::fmt::Display for BadRegWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reg.is_valid() {
            write!(
                f,
                "register {:?} takes {} bytes, not {}",
                self.reg,
                self.reg.size(),
                self.len
            )
        } else {
            write!(f, "there is no register {:?}", self.reg)
        }
    }
}

impl std::error::Error for BadRegWrite {}

/// Every register gdb sees: the general registers and the x87/SSE/AVX state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    /// The general registers (with `orig_rax`, `fs_base` and `gs_base`).
    pub gpr: Regs,
    /// The x87, SSE and AVX registers.
    pub fp: FpRegs,
    /// The AVX-512 registers (zero where gdb is not shown them, see [`set_avx512`]).
    pub avx512: Avx512Regs,
}

impl Default for Registers {
    fn default() -> Self {
        Registers {
            gpr: tracee::regs::from_words(&[0; tracee::regs::REGS_WORDS]),
            fp: FpRegs::default(),
            avx512: Avx512Regs::default(),
        }
    }
}

/// A 64-bit register's field.
fn u64_field(g: &mut Regs, id: RegId) -> Option<&mut u64> {
    Some(match id {
        RegId::Gpr(i) => match i {
            0 => &mut g.rax,
            1 => &mut g.rbx,
            2 => &mut g.rcx,
            3 => &mut g.rdx,
            4 => &mut g.rsi,
            5 => &mut g.rdi,
            6 => &mut g.rbp,
            7 => &mut g.rsp,
            8 => &mut g.r8,
            9 => &mut g.r9,
            10 => &mut g.r10,
            11 => &mut g.r11,
            12 => &mut g.r12,
            13 => &mut g.r13,
            14 => &mut g.r14,
            15 => &mut g.r15,
            _ => return None,
        },
        RegId::Rip => &mut g.rip,
        RegId::OrigRax => &mut g.orig_rax,
        RegId::FsBase => &mut g.fs_base,
        RegId::GsBase => &mut g.gs_base,
        // Kept as 64 bits by the kernel, 32 in gdb's view.
        RegId::Eflags => &mut g.eflags,
        RegId::Segment(i) => match i {
            0 => &mut g.cs,
            1 => &mut g.ss,
            2 => &mut g.ds,
            3 => &mut g.es,
            4 => &mut g.fs,
            5 => &mut g.gs,
            _ => return None,
        },
        _ => return None,
    })
}

/// A 32-bit x87 or SSE control register's field.
fn u32_field(fp: &mut FpRegs, id: RegId) -> Option<&mut u32> {
    Some(match id {
        RegId::Fctrl => &mut fp.fctrl,
        RegId::Fstat => &mut fp.fstat,
        RegId::Ftag => &mut fp.ftag,
        RegId::Fiseg => &mut fp.fiseg,
        RegId::Fioff => &mut fp.fioff,
        RegId::Foseg => &mut fp.foseg,
        RegId::Fooff => &mut fp.fooff,
        RegId::Fop => &mut fp.fop,
        RegId::Mxcsr => &mut fp.mxcsr,
        _ => return None,
    })
}

/// [`Registers::read_reg`] from a register set the caller lets us borrow mutably (it is not
/// changed).
fn read_from(r: &mut Registers, id: RegId, out: &mut [u8]) -> Option<usize> {
    let size = id.size();
    let out = out.get_mut(..size)?;
    if let Some(v) = u64_field(&mut r.gpr, id) {
        out.copy_from_slice(&v.to_le_bytes()[..size]);
    } else if let Some(v) = u32_field(&mut r.fp, id) {
        out.copy_from_slice(&v.to_le_bytes());
    } else {
        out.copy_from_slice(bytes_field(r, id)?);
    }
    Some(size)
}

/// A register's bytes (for `St`, `Xmm`, `Ymmh` and the AVX-512 registers).
fn bytes_field(r: &mut Registers, id: RegId) -> Option<&mut [u8]> {
    let fp = &mut r.fp;
    let z = &mut r.avx512;
    let i = |i: u8| usize::from(i);
    match id {
        RegId::St(n) => fp.st.get_mut(i(n)).map(|r| &mut r[..]),
        RegId::Xmm(n) => fp.xmm.get_mut(i(n)).map(|r| &mut r[..]),
        RegId::Ymmh(n) => fp.ymmh.get_mut(i(n)).map(|r| &mut r[..]),
        RegId::Xmm16(n) => z.hi16_zmm.get_mut(i(n)).map(|r| &mut r[..16]),
        RegId::Ymm16h(n) => z.hi16_zmm.get_mut(i(n)).map(|r| &mut r[16..32]),
        RegId::K(n) => z.k.get_mut(i(n)).map(|r| &mut r[..]),
        RegId::Zmmh(n @ 0..=15) => z.zmm_hi256.get_mut(i(n)).map(|r| &mut r[..]),
        RegId::Zmmh(n) => z.hi16_zmm.get_mut(i(n) - 16).map(|r| &mut r[32..]),
        _ => None,
    }
}

impl Registers {
    /// Writes register `id`, little-endian and of the size the target description declares,
    /// to the start of `out`; returns its size, or `None` if `out` is too small or `id` out of
    /// range.
    pub fn read_reg(&self, id: RegId, out: &mut [u8]) -> Option<usize> {
        // The field accessors hand out mutable references: read from a copy.
        read_from(&mut { *self }, id, out)
    }

    /// Sets register `id` from `val`, little-endian, which must have the size the target
    /// description declares. 32-bit views of 64-bit kernel fields (eflags, segment selectors)
    /// are zero-extended.
    pub fn write_reg(&mut self, id: RegId, val: &[u8]) -> Result<(), BadRegWrite> {
        let bad = BadRegWrite {
            reg: id,
            len: val.len(),
        };
        if val.len() != id.size() || !id.is_valid() {
            return Err(bad);
        }
        if let Some(v) = u64_field(&mut self.gpr, id) {
            let mut w = [0; 8];
            w[..val.len()].copy_from_slice(val);
            *v = u64::from_le_bytes(w);
        } else if let Some(v) = u32_field(&mut self.fp, id) {
            *v = u32::from_le_bytes([val[0], val[1], val[2], val[3]]);
        } else {
            bytes_field(self, id).ok_or(bad)?.copy_from_slice(val);
        }
        Ok(())
    }
}

impl gdbstub::arch::Registers for Registers {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.gpr.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        let mut buf = [0u8; 32];
        let mut copy = *self;
        for id in (0..num_regs()).filter_map(RegId::from_gdb_number) {
            // In range by construction, and `buf` holds the largest register.
            let n = read_from(&mut copy, id, &mut buf).unwrap_or(0);
            buf[..n].iter().for_each(|&b| write_byte(Some(b)));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != g_packet_size() {
            return Err(());
        }
        let mut new = *self;
        let mut rest = bytes;
        for id in (0..num_regs()).filter_map(RegId::from_gdb_number) {
            let (val, tail) = rest.split_at(id.size());
            new.write_reg(id, val).map_err(drop)?;
            rest = tail;
        }
        *self = new;
        Ok(())
    }
}

/// The gdb features, in order, each with its register numbers and the types it defines.
const FEATURES: [(&str, std::ops::Range<usize>); 5] = [
    ("org.gnu.gdb.i386.core", 0..40),
    ("org.gnu.gdb.i386.sse", 40..57),
    ("org.gnu.gdb.i386.linux", 57..58),
    ("org.gnu.gdb.i386.segments", 58..60),
    ("org.gnu.gdb.i386.avx", 60..76),
];

/// The bits of eflags gdb names.
const EFLAGS_BITS: [(&str, u8); 17] = [
    ("CF", 0),
    ("", 1),
    ("PF", 2),
    ("AF", 4),
    ("ZF", 6),
    ("SF", 7),
    ("TF", 8),
    ("IF", 9),
    ("DF", 10),
    ("OF", 11),
    ("NT", 14),
    ("RF", 16),
    ("VM", 17),
    ("AC", 18),
    ("VIF", 19),
    ("VIP", 20),
    ("ID", 21),
];

/// The bits of mxcsr gdb names.
const MXCSR_BITS: [(&str, u8); 14] = [
    ("IE", 0),
    ("DE", 1),
    ("ZE", 2),
    ("OE", 3),
    ("UE", 4),
    ("PE", 5),
    ("DAZ", 6),
    ("IM", 7),
    ("DM", 8),
    ("ZM", 9),
    ("OM", 10),
    ("UM", 11),
    ("PM", 12),
    ("FZ", 15),
];

/// The views of an xmm register. gdb 12 and later add bfloat16 and half-precision views;
/// they are left out so that older gdbs, which do not know those types, accept the
/// description.
const VEC128_VIEWS: [(&str, &str, &str, u8); 6] = [
    ("v4_float", "v4f", "ieee_single", 4),
    ("v2_double", "v2d", "ieee_double", 2),
    ("v16_int8", "v16i8", "int8", 16),
    ("v8_int16", "v8i16", "int16", 8),
    ("v4_int32", "v4i32", "int32", 4),
    ("v2_int64", "v2i64", "int64", 2),
];

fn flags(xml: &mut String, id: &str, bits: &[(&str, u8)]) {
    let _ = writeln!(xml, "    <flags id=\"{id}\" size=\"4\">");
    for (name, bit) in bits {
        let _ = writeln!(
            xml,
            "      <field name=\"{name}\" start=\"{bit}\" end=\"{bit}\"/>"
        );
    }
    xml.push_str("    </flags>\n");
}

/// The target description: one document, gdb's amd64 Linux AVX description (AVX-512, when
/// shown).
pub fn target_description() -> &'static str {
    static XML: OnceLock<String> = OnceLock::new();
    static XML_AVX512: OnceLock<String> = OnceLock::new();
    if avx512() {
        return XML_AVX512.get_or_init(|| description(true));
    }
    XML.get_or_init(|| description(false))
}

/// The description's `<union id="vec128">` and the vectors it uses (types are defined per
/// feature).
fn vec128_types(xml: &mut String) {
    for (_, id, ty, count) in VEC128_VIEWS {
        let _ = writeln!(
            xml,
            "    <vector id=\"{id}\" type=\"{ty}\" count=\"{count}\"/>"
        );
    }
    xml.push_str("    <union id=\"vec128\">\n");
    for (name, id, _, _) in VEC128_VIEWS {
        let _ = writeln!(xml, "      <field name=\"{name}\" type=\"{id}\"/>");
    }
    xml.push_str("      <field name=\"uint128\" type=\"uint128\"/>\n");
    xml.push_str("    </union>\n");
}

/// The target description, with the AVX-512 feature or without.
fn description(with_avx512: bool) -> String {
    {
        let mut xml = String::from(
            "<?xml version=\"1.0\"?>\n\
             <!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n\
             <target version=\"1.0\">\n  \
             <architecture>i386:x86-64</architecture>\n  \
             <osabi>GNU/Linux</osabi>\n",
        );
        let avx512 = ("org.gnu.gdb.i386.avx512", NUM_REGS..NUM_REGS_AVX512);
        let features = FEATURES.into_iter().chain(with_avx512.then_some(avx512));
        for (feature, regs) in features {
            let _ = writeln!(xml, "  <feature name=\"{feature}\">");
            match feature {
                "org.gnu.gdb.i386.core" => flags(&mut xml, "i386_eflags", &EFLAGS_BITS),
                "org.gnu.gdb.i386.sse" => {
                    vec128_types(&mut xml);
                    flags(&mut xml, "i386_mxcsr", &MXCSR_BITS);
                }
                "org.gnu.gdb.i386.avx512" => {
                    vec128_types(&mut xml);
                    xml.push_str("    <vector id=\"v2ui128\" type=\"uint128\" count=\"2\"/>\n");
                }
                _ => {}
            }
            for id in regs.filter_map(RegId::from_gdb_number) {
                let (name, ty, group) = id.describe();
                let _ = write!(
                    xml,
                    "    <reg name=\"{name}\" bitsize=\"{}\" type=\"{ty}\" regnum=\"{}\"",
                    id.size() * 8,
                    id.gdb_number()
                );
                if let Some(g) = group {
                    let _ = write!(xml, " group=\"{g}\"");
                }
                xml.push_str("/>\n");
            }
            xml.push_str("  </feature>\n");
        }
        xml.push_str("</target>\n");
        xml
    }
}

#[cfg(test)]
mod tests;
