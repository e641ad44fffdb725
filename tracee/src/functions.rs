//! Function bounds from a module's unwind tables (`.eh_frame_hdr` and `.eh_frame`), read in
//! the tracee's memory, where the loader mapped them (`PT_GNU_EH_FRAME`).
//!
//! The patcher ([`crate::patch`]) must see the whole function around a syscall site to prove
//! no branch lands inside the bytes it replaces; the unwind tables are the one description of
//! function extents present in every module (stripped or not), including the vDSO.
//!
//! A module without `PT_GNU_EH_FRAME` (a statically linked program: GNU ld makes the
//! `.eh_frame_hdr` search table only for dynamic links) still has its `.eh_frame`: its place
//! comes from the section headers of the module's file (opened through
//! `/proc/PID/map_files/START-END`, or by path checked against the mapping's device and
//! inode), and its entries are scanned linearly in the tracee's memory.

use crate::maps::MapEntry;
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

/// `PT_LOAD`.
const PT_LOAD: u32 = 1;
/// `PT_GNU_EH_FRAME`.
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
/// `ET_EXEC` (addresses are absolute) and `ET_DYN` (relative to the load bias).
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
/// `DW_EH_PE_omit`.
const PE_OMIT: u8 = 0xff;
/// Most program headers read, most FDEs in a table: sanity bounds against a garbled image.
const MAX_PHDRS: u16 = 256;
const MAX_FDES: u64 = 1 << 24;
/// Most section headers read, largest `.eh_frame` section scanned (sanity bounds).
const MAX_SHDRS: u64 = 1 << 16;
const MAX_EH_FRAME: u64 = 64 << 20;
/// `SHF_ALLOC`: the section is in the loaded image.
const SHF_ALLOC: u64 = 2;

/// One function's unwind entry (FDE), as found by [`function_fde`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionFde {
    /// First address of the function.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
    /// Address of its language-specific data area (C++ / `-fexceptions` landing pads), if it
    /// has one: its landing pads are entered by the unwinder, not by a branch instruction.
    pub lsda: Option<u64>,
}

/// The `[start, end)` of the function containing `addr`, from the unwind tables of the module
/// mapped there. `read(addr, buf)` fills `buf` from the tracee's memory (false on failure);
/// `maps` is the tracee's memory map; `pid` is the tracee, whose module files are opened
/// through `/proc/PID/map_files` when the module has no `.eh_frame_hdr` (`None`: by path
/// only). `None` when `addr` is in no module with unwind tables, or no FDE covers it, or the
/// tables cannot be read.
pub fn function_bounds(
    pid: Option<Pid>,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
    maps: &[MapEntry],
    addr: u64,
) -> Option<(u64, u64)> {
    function_fde(pid, read, maps, addr).map(|f| (f.start, f.end))
}

/// Like [`function_bounds`], with the FDE's LSDA pointer.
///
/// Through the module's `.eh_frame_hdr` search table when it has one (`PT_GNU_EH_FRAME`),
/// else by a linear scan of its `.eh_frame` section, found from the section headers of the
/// module's file (a static program's case; a few hundred KiB at most for glibc).
pub fn function_fde(
    pid: Option<Pid>,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
    maps: &[MapEntry],
    addr: u64,
) -> Option<FunctionFde> {
    let mem = Mem::new(read);
    Tables::find(&mem, pid, maps, addr)?.fde(&mem, addr)
}

/// [`function_fde`] of `addr` and [`padding_end`] of the function found, as one lookup: the
/// module's tables are found once and the tracee's memory read once for both (as the two
/// calls would answer).
pub fn function_fde_and_padding(
    pid: Option<Pid>,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
    maps: &[MapEntry],
    addr: u64,
) -> Option<(FunctionFde, u64)> {
    let mem = Mem::new(read);
    let tables = Tables::find(&mem, pid, maps, addr)?;
    let fde = tables.fde(&mem, addr)?;
    // The function's last byte is in the same module when a mapping of its file holds it (the
    // tables `padding_end` would find for it are these), else it is looked up afresh.
    let end = if fde.end > 0 && tables.module_has(maps, fde.end - 1) {
        padding_after(&mem, read, maps, &tables, fde.end)
    } else {
        padding_end(pid, read, maps, fde.end)
    };
    Some((fde, end))
}

/// Most bytes of alignment padding [`padding_end`] looks at after a function.
const MAX_PADDING: u64 = 64;

/// The end of the alignment padding after a function ending at `end`: the `nop` / `int3`
/// instructions that follow it, up to the first other instruction or the first address where
/// a function starts (an FDE begins), at most 64 bytes, and within the function's module
/// (whose unwind tables are found once, as by [`function_fde`], with `pid` alike). `end`
/// itself when there are none, or when the module's tables cannot be read.
///
/// The padding between functions is reached by no branch and by no fall-through (the
/// function's last instruction is a `ret`, a `jmp`, or a call that does not return), so a
/// syscall-site patch may cover it: the caller passes the function's bytes up to here to
/// [`crate::patch::plan`], which lets a site like glibc's `getpid`
/// (`mov eax, 39; syscall; ret`, then a 16-byte boundary) be patched.
pub fn padding_end(
    pid: Option<Pid>,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
    maps: &[MapEntry],
    end: u64,
) -> u64 {
    let mut bytes = [0u8; MAX_PADDING as usize];
    if end == 0 || !read(end, &mut bytes) {
        return end;
    }
    // The tables of the function's module, found once; padding is only looked for in it.
    let mem = Mem::new(read);
    let Some(tables) = Tables::find(&mem, pid, maps, end - 1) else {
        return end;
    };
    padding_scan(&mem, maps, &tables, &bytes, end)
}

/// [`padding_end`] with the module's `tables` found, read through `mem`.
fn padding_after(
    mem: &Mem,
    read: &dyn Fn(u64, &mut [u8]) -> bool,
    maps: &[MapEntry],
    tables: &Tables,
    end: u64,
) -> u64 {
    let mut bytes = [0u8; MAX_PADDING as usize];
    if end == 0 || !read(end, &mut bytes) {
        return end;
    }
    padding_scan(mem, maps, tables, &bytes, end)
}

/// The end of the padding in `bytes`, read at `end`, in the module of `tables`.
fn padding_scan(mem: &Mem, maps: &[MapEntry], tables: &Tables, bytes: &[u8], end: u64) -> u64 {
    let mut decoder = iced_x86::Decoder::with_ip(64, bytes, end, iced_x86::DecoderOptions::NONE);
    let mut at = end;
    while decoder.can_decode() {
        let insn = decoder.decode();
        let pad = matches!(
            insn.mnemonic(),
            iced_x86::Mnemonic::Nop | iced_x86::Mnemonic::Int3
        );
        if insn.is_invalid()
            || !pad
            || !tables.module_has(maps, at)
            || tables.fde(mem, at).is_some()
        {
            break;
        }
        at = insn.next_ip();
    }
    at
}

/// Reads of the tracee's memory, a page at a time: the unwind tables are parsed a byte or a
/// word at a time, and each read of the tracee's memory is a syscall.
struct Mem<'a> {
    read: &'a dyn Fn(u64, &mut [u8]) -> bool,
    /// The pages read so far (few: a lookup touches a handful).
    pages: std::cell::RefCell<Vec<(u64, Box<[u8; PAGE]>)>>,
    /// Whether reads go through `pages` (not for bytes already in the recorder's memory).
    paged: bool,
}

/// The unit [`Mem`] reads and keeps.
const PAGE: usize = 4096;
/// Most pages one [`Mem`] keeps.
const MAX_PAGES: usize = 32;

impl<'a> Mem<'a> {
    fn new(read: &'a dyn Fn(u64, &mut [u8]) -> bool) -> Self {
        Mem {
            read,
            pages: Default::default(),
            paged: true,
        }
    }

    /// Reads that `read` answers from the recorder's own memory: no pages kept.
    fn direct(read: &'a dyn Fn(u64, &mut [u8]) -> bool) -> Self {
        Mem {
            read,
            pages: Default::default(),
            paged: false,
        }
    }

    /// Fills `buf` from `addr`, through the pages kept (directly if a page cannot be read
    /// whole).
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if !self.paged {
            return (self.read)(addr, buf);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr.wrapping_add(done as u64);
            let page = at & !(PAGE as u64 - 1);
            let off = (at - page) as usize;
            let n = (PAGE - off).min(buf.len() - done);
            let mut pages = self.pages.borrow_mut();
            let kept = match pages.iter().position(|(p, _)| *p == page) {
                Some(i) => i,
                None => {
                    let mut bytes = Box::new([0u8; PAGE]);
                    if !(self.read)(page, &mut bytes[..]) {
                        drop(pages);
                        return (self.read)(addr, buf);
                    }
                    if pages.len() >= MAX_PAGES {
                        pages.remove(0);
                    }
                    pages.push((page, bytes));
                    pages.len() - 1
                }
            };
            buf[done..done + n].copy_from_slice(&pages[kept].1[off..off + n]);
            done += n;
        }
        true
    }

    fn bytes<const N: usize>(&self, addr: u64) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.read(addr, &mut b).then_some(b)
    }
    fn u8(&self, addr: u64) -> Option<u8> {
        Some(self.bytes::<1>(addr)?[0])
    }
    fn u16(&self, addr: u64) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(addr)?))
    }
    fn u32(&self, addr: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(addr)?))
    }
    fn u64(&self, addr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(addr)?))
    }
    /// An unsigned LEB128 at `*at`, advancing it.
    fn uleb(&self, at: &mut u64) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// A signed LEB128 at `*at`, advancing it.
    fn sleb(&self, at: &mut u64) -> Option<i64> {
        let mut v = 0i64;
        let mut shift = 0;
        loop {
            let b = self.u8(*at)?;
            *at += 1;
            if shift < 64 {
                v |= i64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
            if shift > 70 {
                return None;
            }
        }
    }

    /// A pointer in DWARF EH encoding `enc` at `*at`, advancing it. `datarel`: the base of
    /// `DW_EH_PE_datarel` (the `.eh_frame_hdr` section), if it applies. `apply`: whether to
    /// apply the relative part (not for an FDE's `pc_range`, a plain length).
    fn pointer(&self, enc: u8, at: &mut u64, datarel: Option<u64>, apply: bool) -> Option<u64> {
        if enc == PE_OMIT {
            return None;
        }
        let field = *at;
        let raw = match enc & 0x0f {
            0x00 => {
                let v = self.u64(*at)?;
                *at += 8;
                v
            }
            0x01 => self.uleb(at)?,
            0x02 => {
                let v = self.u16(*at)?;
                *at += 2;
                u64::from(v)
            }
            0x03 => {
                let v = self.u32(*at)?;
                *at += 4;
                u64::from(v)
            }
            0x04 => {
                let v = self.u64(*at)?;
                *at += 8;
                v
            }
            0x09 => self.sleb(at)? as u64,
            0x0a => {
                let v = self.u16(*at)?;
                *at += 2;
                v as i16 as i64 as u64
            }
            0x0b => {
                let v = self.u32(*at)?;
                *at += 4;
                v as i32 as i64 as u64
            }
            0x0c => {
                let v = self.u64(*at)?;
                *at += 8;
                v
            }
            _ => return None,
        };
        if !apply {
            return Some(raw);
        }
        let base = match enc & 0x70 {
            0x00 => 0,
            0x10 => field,
            0x30 => datarel?,
            _ => return None, // textrel, funcrel, aligned: not used on x86-64 Linux
        };
        let v = base.wrapping_add(raw);
        if enc & 0x80 != 0 {
            // DW_EH_PE_indirect: the address of the pointer.
            return self.u64(v);
        }
        Some(v)
    }
}

/// The unwind tables of one module.
struct Tables {
    /// The mapping the module's ELF header is at (its file's offset-0 mapping, or the vDSO).
    header: MapEntry,
    kind: TableKind,
}

enum TableKind {
    /// The `.eh_frame_hdr` at this address.
    Hdr(u64),
    /// The whole `.eh_frame` section, read from the tracee's memory at this address.
    Section {
        addr: u64,
        bytes: std::sync::Arc<Vec<u8>>,
    },
}

/// A module's identity where it is mapped: device, inode, and the address of its header.
type SectionKey = (String, u64, u64);

/// A kept `.eh_frame` section: its module, address and bytes.
type KeptSection = (SectionKey, u64, std::sync::Arc<Vec<u8>>);

/// `.eh_frame` sections read so far, by module (a few: static programs only).
static SECTIONS: std::sync::Mutex<Vec<KeptSection>> = std::sync::Mutex::new(Vec::new());
/// Most sections kept.
const MAX_SECTIONS: usize = 8;

/// The `.eh_frame` section (address and bytes) of the module `key`, if read before.
fn cached_section(key: &SectionKey) -> Option<(u64, std::sync::Arc<Vec<u8>>)> {
    let kept = SECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    kept.iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, addr, bytes)| (*addr, std::sync::Arc::clone(bytes)))
}

/// Keeps the `.eh_frame` section of module `key`.
fn keep_section(key: SectionKey, addr: u64, bytes: std::sync::Arc<Vec<u8>>) {
    let mut kept = SECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() >= MAX_SECTIONS {
        kept.remove(0);
    }
    kept.push((key, addr, bytes));
}

impl Tables {
    /// The tables of the module mapped at `addr`.
    fn find(mem: &Mem, pid: Option<Pid>, maps: &[MapEntry], addr: u64) -> Option<Tables> {
        let here = maps.iter().find(|m| addr >= m.start && addr < m.end)?;
        // The ELF header: at the file's offset-0 mapping (the lowest), or, for an anonymous
        // or pseudo mapping (the vDSO), at the mapping itself.
        let header = if here.is_file() {
            maps.iter()
                .filter(|m| same_file(m, here))
                .min_by_key(|m| m.start)
                .filter(|m| m.offset == 0)?
        } else {
            here
        };
        let image = Image::read(mem, header.start)?;
        let kind = match image.eh_frame_hdr {
            Some(hdr) => TableKind::Hdr(hdr),
            None if header.is_file() => {
                // Read-only bytes of one file at one address: the same in every process that
                // maps it there (every program a static `make` tool runs, every site of one).
                let key = (header.dev.clone(), header.inode, header.start);
                if let Some((addr, bytes)) = cached_section(&key) {
                    TableKind::Section { addr, bytes }
                } else {
                    let file = open_module(pid, here)?;
                    let (vaddr, size) = eh_frame_section(&file)?;
                    let addr = vaddr.checked_add(image.bias)?;
                    let mut bytes = vec![0u8; usize::try_from(size).ok()?];
                    if !(mem.read)(addr, &mut bytes) {
                        return None;
                    }
                    let bytes = std::sync::Arc::new(bytes);
                    keep_section(key, addr, std::sync::Arc::clone(&bytes));
                    TableKind::Section { addr, bytes }
                }
            }
            None => return None,
        };
        Some(Tables {
            header: header.clone(),
            kind,
        })
    }

    /// The FDE covering `addr` in these tables.
    fn fde(&self, mem: &Mem, addr: u64) -> Option<FunctionFde> {
        match &self.kind {
            TableKind::Hdr(hdr) => find_fde(mem, *hdr, addr),
            TableKind::Section { addr: base, bytes } => scan_fdes(*base, bytes, addr),
        }
    }

    /// Whether `addr` is in a mapping of this module.
    fn module_has(&self, maps: &[MapEntry], addr: u64) -> bool {
        maps.iter().any(|m| {
            addr >= m.start
                && addr < m.end
                && if self.header.is_file() {
                    same_file(m, &self.header)
                } else {
                    m.start == self.header.start
                }
        })
    }
}

/// Whether two mappings map the same file.
fn same_file(a: &MapEntry, b: &MapEntry) -> bool {
    a.name == b.name && a.inode == b.inode && a.dev == b.dev
}

/// What the program headers of a loaded ELF image say.
struct Image {
    /// Load bias: what to add to the file's addresses.
    bias: u64,
    /// The address of its `.eh_frame_hdr` (`PT_GNU_EH_FRAME`), if it has one.
    eh_frame_hdr: Option<u64>,
}

impl Image {
    /// The image whose ELF header is in memory at `base`.
    fn read(mem: &Mem, base: u64) -> Option<Image> {
        if mem.bytes::<5>(base)? != *b"\x7fELF\x02" {
            return None;
        }
        let e_type = mem.u16(base + 0x10)?;
        let phoff = mem.u64(base + 0x20)?;
        let phentsize = u64::from(mem.u16(base + 0x36)?);
        let phnum = mem.u16(base + 0x38)?;
        if phnum > MAX_PHDRS || phentsize < 56 {
            return None;
        }
        let mut lowest_load: Option<u64> = None;
        let mut eh: Option<u64> = None;
        for i in 0..u64::from(phnum) {
            let ph = base.checked_add(phoff)?.checked_add(i * phentsize)?;
            let p_type = mem.u32(ph)?;
            let p_vaddr = mem.u64(ph + 0x10)?;
            match p_type {
                PT_LOAD => {
                    let p_offset = mem.u64(ph + 0x08)?;
                    // The segment mapping file offset 0 is at the header's address.
                    let v = p_vaddr.wrapping_sub(p_offset);
                    lowest_load = Some(lowest_load.map_or(v, |l| l.min(v)));
                }
                PT_GNU_EH_FRAME => eh = Some(p_vaddr),
                _ => {}
            }
        }
        let bias = match e_type {
            ET_EXEC => 0,
            ET_DYN => base.wrapping_sub(lowest_load? & !0xfff),
            _ => return None,
        };
        Some(Image {
            bias,
            eh_frame_hdr: eh.map(|e| e.wrapping_add(bias)),
        })
    }
}

/// The file mapped by `m` (a file mapping of process `pid`): through
/// `/proc/PID/map_files/START-END` (the very file, even if since deleted or replaced; opening
/// it needs `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`), else by its path when that is still
/// the same file (device and inode as in the map).
fn open_module(pid: Option<Pid>, m: &MapEntry) -> Option<File> {
    if let Some(pid) = pid {
        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        if let Ok(f) = File::open(link) {
            return Some(f);
        }
    }
    let f = File::open(&m.name).ok()?;
    let meta = f.metadata().ok()?;
    let dev = meta.dev();
    // The kernel's encoding of dev_t (glibc's `major` / `minor`).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let (maj, min) = m.dev.split_once(':')?;
    let same = u64::from_str_radix(maj, 16).ok()? == major
        && u64::from_str_radix(min, 16).ok()? == minor
        && meta.ino() == m.inode;
    same.then_some(f)
}

/// The address (before the load bias) and size of the `.eh_frame` section of the ELF file
/// `file`, from its section headers; `None` without one, or when it is not loaded.
fn eh_frame_section(file: &File) -> Option<(u64, u64)> {
    let mut eh = [0u8; 64];
    file.read_exact_at(&mut eh, 0).ok()?;
    if eh[..5] != *b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let shoff = u64_at(&eh, 0x28)?;
    let shentsize = u64::from(u16_at(&eh, 0x3a)?);
    let mut shnum = u64::from(u16_at(&eh, 0x3c)?);
    let mut shstrndx = u64::from(u16_at(&eh, 0x3e)?);
    if shoff == 0 || shentsize < 64 {
        return None;
    }
    let header = |i: u64| -> Option<[u8; 64]> {
        let mut h = [0u8; 64];
        file.read_exact_at(&mut h, shoff.checked_add(i.checked_mul(shentsize)?)?)
            .ok()?;
        Some(h)
    };
    // Extended numbering: the real counts are in section header 0.
    if shnum == 0 || shstrndx == 0xffff {
        let h0 = header(0)?;
        if shnum == 0 {
            shnum = u64_at(&h0, 0x20)?;
        }
        if shstrndx == 0xffff {
            shstrndx = u64::from(u32_at(&h0, 0x28)?);
        }
    }
    if shnum > MAX_SHDRS || shstrndx >= shnum {
        return None;
    }
    let strtab = header(shstrndx)?;
    let (str_off, str_size) = (u64_at(&strtab, 0x18)?, u64_at(&strtab, 0x20)?);
    const NAME: &[u8] = b".eh_frame\0";
    for i in 0..shnum {
        let h = header(i)?;
        let name = u64::from(u32_at(&h, 0)?);
        if name + NAME.len() as u64 > str_size {
            continue;
        }
        let mut n = [0u8; NAME.len()];
        file.read_exact_at(&mut n, str_off.checked_add(name)?)
            .ok()?;
        if n != NAME {
            continue;
        }
        let (flags, addr, size) = (u64_at(&h, 0x08)?, u64_at(&h, 0x10)?, u64_at(&h, 0x20)?);
        return (flags & SHF_ALLOC != 0 && size > 0 && size <= MAX_EH_FRAME)
            .then_some((addr, size));
    }
    None
}

/// The FDE covering `addr` in the `.eh_frame` section `bytes`, loaded at `base`: a linear scan
/// of its entries (CIEs and FDEs, in any order; zero terminators are skipped).
fn scan_fdes(base: u64, bytes: &[u8], addr: u64) -> Option<FunctionFde> {
    let end = base.checked_add(bytes.len() as u64)?;
    let read = |a: u64, buf: &mut [u8]| -> bool {
        let Some(off) = a.checked_sub(base) else {
            return false;
        };
        let Some(src) = usize::try_from(off)
            .ok()
            .and_then(|o| bytes.get(o..o.checked_add(buf.len())?))
        else {
            return false;
        };
        buf.copy_from_slice(src);
        true
    };
    let mem = Mem::direct(&read);
    let mut at = base;
    while at < end {
        let (len, body) = match mem.u32(at)? {
            0 => {
                at += 4;
                continue;
            }
            0xffff_ffff => (mem.u64(at + 4)?, at + 12),
            0xffff_fff0.. => return None,
            l => (u64::from(l), at + 4),
        };
        let next = body.checked_add(len)?;
        // An FDE (a CIE has id 0); one that does not parse is skipped.
        if mem.u32(body)? != 0 {
            if let Some(f) = parse_fde(&mem, at) {
                if addr >= f.start && addr < f.end {
                    return Some(f);
                }
            }
        }
        at = next;
    }
    None
}

/// The FDE covering `addr`, through the binary-search table of the `.eh_frame_hdr` at `hdr`.
fn find_fde(mem: &Mem, hdr: u64, addr: u64) -> Option<FunctionFde> {
    let [version, ptr_enc, count_enc, table_enc] = mem.bytes::<4>(hdr)?;
    if version != 1 || table_enc == PE_OMIT {
        return None;
    }
    let mut at = hdr + 4;
    mem.pointer(ptr_enc, &mut at, Some(hdr), true)?; // eh_frame_ptr: unused
    let count = mem.pointer(count_enc, &mut at, Some(hdr), true)?;
    if count == 0 || count > MAX_FDES {
        return None;
    }
    // Entries are (initial location, FDE address), both `table_enc`, of a fixed size.
    let entry = match table_enc & 0x0f {
        0x02 | 0x0a => 2,
        0x03 | 0x0b => 4,
        0x00 | 0x04 | 0x0c => 8,
        _ => return None,
    } * 2;
    let table = at;
    let read_entry = |i: u64| -> Option<(u64, u64)> {
        let mut p = table + i * entry;
        let loc = mem.pointer(table_enc, &mut p, Some(hdr), true)?;
        let fde = mem.pointer(table_enc, &mut p, Some(hdr), true)?;
        Some((loc, fde))
    };
    // The last entry whose initial location is <= addr.
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if read_entry(mid)?.0 <= addr {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let (_, fde) = read_entry(lo.checked_sub(1)?)?;
    let f = parse_fde(mem, fde)?;
    (addr >= f.start && addr < f.end).then_some(f)
}

/// The FDE at `fde`: its range, and its LSDA from the CIE's augmentation.
fn parse_fde(mem: &Mem, fde: u64) -> Option<FunctionFde> {
    let (_, fde_body) = length(mem, fde)?;
    let id_at = fde_body;
    let cie_off = u64::from(mem.u32(id_at)?);
    if cie_off == 0 {
        return None; // a CIE, not an FDE
    }
    let cie = id_at.checked_sub(cie_off)?;
    let aug = parse_cie(mem, cie)?;
    let mut at = id_at + 4;
    let start = mem.pointer(aug.fde_enc, &mut at, None, true)?;
    let range = mem.pointer(aug.fde_enc & 0x0f, &mut at, None, false)?;
    let mut lsda = None;
    if aug.has_z {
        let len = mem.uleb(&mut at)?;
        let data = at;
        if let Some(enc) = aug.lsda_enc {
            let mut p = data;
            lsda = mem.pointer(enc, &mut p, None, true).filter(|&l| l != 0);
        }
        data.checked_add(len)?;
    }
    Some(FunctionFde {
        start,
        end: start.checked_add(range)?,
        lsda,
    })
}

/// A CFI entry's length field at `at`: (length, address of the entry's body after it).
fn length(mem: &Mem, at: u64) -> Option<(u64, u64)> {
    let l = mem.u32(at)?;
    match l {
        0 => None,
        0xffff_ffff => Some((mem.u64(at + 4)?, at + 12)),
        0xffff_fff0.. => None,
        l => Some((u64::from(l), at + 4)),
    }
}

/// What an FDE needs from its CIE.
struct Augmentation {
    has_z: bool,
    /// `R`: the encoding of the FDE's addresses (absolute 8 bytes without it).
    fde_enc: u8,
    /// `L`: the encoding of the FDE's LSDA pointer.
    lsda_enc: Option<u8>,
}

fn parse_cie(mem: &Mem, cie: u64) -> Option<Augmentation> {
    let (_, body) = length(mem, cie)?;
    if mem.u32(body)? != 0 {
        return None;
    }
    let mut at = body + 4;
    let version = mem.u8(at)?;
    at += 1;
    let mut aug = Vec::new();
    loop {
        let c = mem.u8(at)?;
        at += 1;
        if c == 0 {
            break;
        }
        aug.push(c);
        if aug.len() > 16 {
            return None;
        }
    }
    if aug.starts_with(b"eh") {
        at += 8;
    }
    mem.uleb(&mut at)?; // code alignment
    mem.sleb(&mut at)?; // data alignment
    if version == 1 {
        at += 1;
    } else {
        mem.uleb(&mut at)?; // return address register
    }
    let mut out = Augmentation {
        has_z: aug.first() == Some(&b'z'),
        fde_enc: 0,
        lsda_enc: None,
    };
    if !out.has_z {
        return Some(out);
    }
    mem.uleb(&mut at)?; // augmentation data length
    for &c in &aug[1..] {
        match c {
            b'R' => {
                out.fde_enc = mem.u8(at)?;
                at += 1;
            }
            b'L' => {
                out.lsda_enc = Some(mem.u8(at)?);
                at += 1;
            }
            b'P' => {
                let enc = mem.u8(at)?;
                at += 1;
                // The personality pointer: skipped (not applied: it may be indirect).
                mem.pointer(enc & 0x0f, &mut at, None, false)?;
            }
            b'S' | b'B' => {}
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Reads this process's own memory through `/proc/self/mem` (failing cleanly on unmapped
    /// addresses).
    pub(crate) fn read_self(addr: u64, buf: &mut [u8]) -> bool {
        let Ok(f) = std::fs::File::open("/proc/self/mem") else {
            return false;
        };
        f.read_exact_at(buf, addr).is_ok()
    }

    /// This process's memory map.
    pub(crate) fn own_maps() -> Vec<MapEntry> {
        crate::maps::read(nix::unistd::Pid::this()).expect("own maps")
    }

    /// The address of libc's `name` (NUL-terminated), by `dlsym`.
    pub(crate) fn libc_symbol(name: &[u8]) -> u64 {
        // SAFETY: dlsym reads the NUL-terminated name; RTLD_DEFAULT searches loaded objects.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
        assert!(!p.is_null(), "dlsym");
        p as u64
    }

    #[test]
    fn bounds_of_libc_getpid_contain_it() {
        let maps = own_maps();
        let getpid = libc_symbol(b"getpid\0");
        let (s, e) = function_bounds(None, &read_self, &maps, getpid).expect("an FDE for getpid");
        assert!(s <= getpid && getpid < e, "{s:#x}..{e:#x} vs {getpid:#x}");
        assert!(e - s < 4096, "{s:#x}..{e:#x}");
        // Every address of it finds the same function.
        assert_eq!(
            function_bounds(None, &read_self, &maps, e - 1),
            Some((s, e))
        );
        let read = libc_symbol(b"read\0");
        let (rs, re) = function_bounds(None, &read_self, &maps, read).expect("an FDE for read");
        assert!(rs <= read && read < re && re - rs < 4096);
        // glibc's C functions have no landing pads.
        let fde = function_fde(None, &read_self, &maps, read).expect("read's FDE");
        assert_eq!((fde.start, fde.end, fde.lsda), (rs, re, None));
    }

    #[inline(never)]
    fn known_function(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(3) ^ 7
    }

    #[test]
    fn bounds_of_a_function_of_the_test_binary() {
        let maps = own_maps();
        let f = known_function as fn(u64) -> u64 as usize as u64;
        let (s, e) = function_bounds(None, &read_self, &maps, f).expect("an FDE");
        assert_eq!(s, f);
        assert!(e > s && e - s < 256, "{s:#x}..{e:#x}");
        assert_eq!(known_function(1), 4);
    }

    #[test]
    fn a_rust_function_with_landing_pads_has_an_lsda() {
        let maps = own_maps();
        let f = with_cleanup as fn(u64) -> usize as usize as u64;
        let fde = function_fde(None, &read_self, &maps, f).expect("an FDE");
        assert_eq!(fde.start, f);
        assert!(fde.lsda.is_some(), "{fde:?}");
        assert_eq!(with_cleanup(3), 3);
    }

    /// Drops a `Vec` after a call that may unwind: a landing pad.
    #[inline(never)]
    fn with_cleanup(n: u64) -> usize {
        let v = vec![1u8; std::hint::black_box(n) as usize];
        may_panic(&v);
        v.len()
    }

    #[inline(never)]
    fn may_panic(v: &[u8]) {
        if std::hint::black_box(v.len()) > 1000 {
            panic!("too long");
        }
    }

    #[test]
    fn padding_after_libc_getpid_reaches_the_next_function() {
        let maps = own_maps();
        let getpid = libc_symbol(b"getpid\0");
        let (_, e) = function_bounds(None, &read_self, &maps, getpid).expect("getpid's FDE");
        let p = padding_end(None, &read_self, &maps, e);
        assert!(p >= e && p - e < MAX_PADDING, "{e:#x} {p:#x}");
        // It stops at a function or at code that is not padding.
        let mut b = [0u8; 1];
        assert!(read_self(p, &mut b));
        assert!(function_bounds(None, &read_self, &maps, p).is_some() || b[0] != 0x90);
    }

    #[test]
    fn nothing_for_unmapped_or_anonymous_memory() {
        let maps = own_maps();
        assert_eq!(function_bounds(None, &read_self, &maps, 8), None);
        let heap = Box::new([0u8; 64]);
        assert_eq!(
            function_bounds(None, &read_self, &maps, heap.as_ptr() as u64),
            None
        );
    }

    #[test]
    fn vdso_functions_have_bounds() {
        let maps = own_maps();
        let Some(v) = maps.iter().find(|m| m.name == "[vdso]") else {
            return;
        };
        let found = (v.start..v.end)
            .step_by(16)
            .find_map(|a| function_bounds(None, &read_self, &maps, a));
        let (s, e) = found.expect("some vDSO function has an FDE");
        assert!(s >= v.start && e <= v.end && s < e);
    }
}
