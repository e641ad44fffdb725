//! A minimal ELF64 (x86-64, little-endian) reader for the library's shared object: its loadable
//! segments, its dynamic relocations and its symbols. Shared by the host crate and `build.rs`
//! (which uses it to check the image), so it only depends on `std`.

use std::collections::HashMap;

/// `PT_LOAD`.
const PT_LOAD: u32 = 1;
/// `PT_DYNAMIC`.
const PT_DYNAMIC: u32 = 2;
/// `SHT_SYMTAB`.
const SHT_SYMTAB: u32 = 2;
/// `SHT_DYNSYM`.
const SHT_DYNSYM: u32 = 11;
/// `R_X86_64_RELATIVE`.
pub const R_X86_64_RELATIVE: u32 = 8;

/// One `PT_LOAD` program header.
#[derive(Clone, Debug)]
pub struct Load {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_flags` (`PF_X` 1, `PF_W` 2, `PF_R` 4).
    pub flags: u32,
}

/// One `Elf64_Rela` from the dynamic section.
#[derive(Clone, Copy, Debug)]
pub struct Rela {
    /// `r_offset` (a virtual address relative to the image's base).
    pub offset: u64,
    /// The relocation type (`ELF64_R_TYPE`).
    pub kind: u32,
    /// The symbol index (`ELF64_R_SYM`).
    pub sym: u32,
    /// `r_addend`.
    pub addend: i64,
}

/// What the loader and the checks need from the image.
#[derive(Clone, Debug, Default)]
pub struct Elf {
    /// The `PT_LOAD` segments.
    pub loads: Vec<Load>,
    /// Every relocation `DT_RELA` and `DT_JMPREL` list.
    pub relas: Vec<Rela>,
    /// `DT_NEEDED` entries (their string offsets).
    pub needed: usize,
    /// Whether the dynamic section has `DT_RELR` or `DT_REL` (unsupported).
    pub other_relocs: bool,
    /// Defined symbols (from `.symtab` and `.dynsym`): name to value.
    pub symbols: HashMap<String, u64>,
    /// Undefined symbols (other than the null symbol), by name.
    pub undefined: Vec<String>,
}

fn u16_at(b: &[u8], off: u64) -> Result<u16, String> {
    let o = usize::try_from(off).map_err(|_| format!("offset {off:#x} too large"))?;
    b.get(o..o.wrapping_add(2))
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or_else(|| format!("ELF truncated at {off:#x}"))
}

fn u32_at(b: &[u8], off: u64) -> Result<u32, String> {
    let o = usize::try_from(off).map_err(|_| format!("offset {off:#x} too large"))?;
    b.get(o..o.wrapping_add(4))
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| format!("ELF truncated at {off:#x}"))
}

fn u64_at(b: &[u8], off: u64) -> Result<u64, String> {
    let o = usize::try_from(off).map_err(|_| format!("offset {off:#x} too large"))?;
    b.get(o..o.wrapping_add(8))
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| format!("ELF truncated at {off:#x}"))
}

fn cstr_at(b: &[u8], off: u64) -> Result<String, String> {
    let o = usize::try_from(off).map_err(|_| format!("offset {off:#x} too large"))?;
    let s = b
        .get(o..)
        .ok_or_else(|| format!("string at {off:#x} out of the file"))?;
    let end = s
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| format!("unterminated string at {off:#x}"))?;
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

impl Elf {
    /// Converts a virtual address of the image to its file offset (through the `PT_LOAD`s).
    fn file_offset(&self, vaddr: u64) -> Result<u64, String> {
        self.loads
            .iter()
            .find(|l| vaddr >= l.vaddr && vaddr - l.vaddr < l.filesz)
            .map(|l| l.offset + (vaddr - l.vaddr))
            .ok_or_else(|| format!("address {vaddr:#x} is not in the file"))
    }

    /// Parses `image`.
    pub fn parse(b: &[u8]) -> Result<Elf, String> {
        if b.get(0..4) != Some(b"\x7fELF".as_slice()) {
            return Err("not an ELF file".into());
        }
        if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
            return Err("not a little-endian ELF64 file".into());
        }
        if u16_at(b, 16)? != 3 {
            return Err("not a shared object (ET_DYN)".into());
        }
        if u16_at(b, 18)? != 62 {
            return Err("not an x86-64 ELF file".into());
        }
        let phoff = u64_at(b, 32)?;
        let shoff = u64_at(b, 40)?;
        let phentsize = u64::from(u16_at(b, 54)?);
        let phnum = u64::from(u16_at(b, 56)?);
        let shentsize = u64::from(u16_at(b, 58)?);
        let shnum = u64::from(u16_at(b, 60)?);
        let mut elf = Elf::default();
        let mut dynamic = None;
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            let kind = u32_at(b, ph)?;
            if kind == PT_LOAD {
                elf.loads.push(Load {
                    flags: u32_at(b, ph + 4)?,
                    offset: u64_at(b, ph + 8)?,
                    vaddr: u64_at(b, ph + 16)?,
                    filesz: u64_at(b, ph + 32)?,
                    memsz: u64_at(b, ph + 40)?,
                });
            } else if kind == PT_DYNAMIC {
                dynamic = Some((u64_at(b, ph + 8)?, u64_at(b, ph + 32)?));
            }
        }
        for l in &elf.loads {
            if l.filesz > l.memsz
                || l.offset
                    .checked_add(l.filesz)
                    .map_or(true, |e| e > b.len() as u64)
            {
                return Err(format!("bad PT_LOAD at {:#x}", l.vaddr));
            }
        }
        if let Some((off, size)) = dynamic {
            let (mut rela, mut relasz, mut jmprel, mut pltrelsz) = (0, 0, 0, 0);
            let mut i = 0;
            while i + 16 <= size {
                let tag = u64_at(b, off + i)?;
                let val = u64_at(b, off + i + 8)?;
                match tag {
                    0 => break,
                    1 => elf.needed += 1,
                    7 => rela = val,
                    8 => relasz = val,
                    23 => jmprel = val,
                    2 => pltrelsz = val,
                    17 | 36 => elf.other_relocs = true, // DT_REL, DT_RELR
                    _ => {}
                }
                i += 16;
            }
            for (addr, len) in [(rela, relasz), (jmprel, pltrelsz)] {
                if len == 0 {
                    continue;
                }
                let start = elf.file_offset(addr)?;
                for j in 0..len / 24 {
                    let r = start + j * 24;
                    let info = u64_at(b, r + 8)?;
                    elf.relas.push(Rela {
                        offset: u64_at(b, r)?,
                        kind: info as u32,
                        sym: (info >> 32) as u32,
                        addend: u64_at(b, r + 16)? as i64,
                    });
                }
            }
        }
        for i in 0..shnum {
            let sh = shoff + i * shentsize;
            let kind = u32_at(b, sh + 4)?;
            if kind != SHT_SYMTAB && kind != SHT_DYNSYM {
                continue;
            }
            let off = u64_at(b, sh + 24)?;
            let size = u64_at(b, sh + 32)?;
            let link = u64::from(u32_at(b, sh + 40)?);
            let entsize = u64_at(b, sh + 56)?;
            if entsize != 24 {
                return Err(format!("symbol table with entries of {entsize} bytes"));
            }
            let stroff = u64_at(b, shoff + link * shentsize + 24)?;
            for j in 1..size / 24 {
                let s = off + j * 24;
                let name = cstr_at(b, stroff + u64::from(u32_at(b, s)?))?;
                let info = *usize::try_from(s + 4)
                    .ok()
                    .and_then(|o| b.get(o))
                    .ok_or_else(|| format!("ELF truncated at {:#x}", s + 4))?;
                let shndx = u16_at(b, s + 6)?;
                let value = u64_at(b, s + 8)?;
                let sym_type = info & 0xf;
                if shndx == 0 {
                    elf.undefined.push(name);
                } else if !name.is_empty() && sym_type != 4 {
                    // STT_FILE (4) names are not addresses.
                    elf.symbols.insert(name, value);
                }
            }
        }
        Ok(elf)
    }

    /// Checks that the image can be loaded without a dynamic linker: no `DT_NEEDED`, no
    /// undefined symbols, only `R_X86_64_RELATIVE` relocations.
    pub fn check_standalone(&self) -> Result<(), String> {
        if self.needed != 0 {
            return Err(format!(
                "the image needs {} shared libraries (DT_NEEDED)",
                self.needed
            ));
        }
        if !self.undefined.is_empty() {
            return Err(format!(
                "the image has undefined symbols: {:?}",
                self.undefined
            ));
        }
        if self.other_relocs {
            return Err("the image has DT_REL or DT_RELR relocations".into());
        }
        if let Some(r) = self.relas.iter().find(|r| r.kind != R_X86_64_RELATIVE) {
            return Err(format!(
                "the image has a relocation of type {} at {:#x} (only R_X86_64_RELATIVE is allowed)",
                r.kind, r.offset
            ));
        }
        if self.loads.is_empty() {
            return Err("the image has no PT_LOAD segment".into());
        }
        Ok(())
    }
}
