//! Addresses of thread-local variables (gdb's `qGetTLSAddr`), computed as glibc's
//! libthread_db does on x86-64: the thread's DTV, found through its thread pointer, holds the
//! address of each module's TLS block.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use replayer::DebugReplay;

use crate::tls_packet::TlsRequest;

/// glibc's description, for libthread_db, of `struct link_map`'s private `l_tls_modid` field.
const MODID_DESCRIPTOR: &str = "_thread_db_link_map_l_tls_modid";

/// A DTV entry (`dtv_t`): the block's address (`pointer.val`) first, then `pointer.to_free`.
const DTV_ENTRY_SIZE: u64 = 16;

/// `TLS_DTV_UNALLOCATED`: the thread has not allocated that module's block yet.
const DTV_UNALLOCATED: u64 = u64::MAX;

/// The offset of `tcbhead_t.dtv` from the thread pointer (fixed by the x86-64 ABI).
const TCB_DTV_OFFSET: u64 = 8;

/// The public part of `struct link_map` (`<link.h>`): where its fields are.
mod link_map {
    /// `l_addr`: how far the module is loaded from its link-time addresses.
    pub const ADDR: u64 = 0;
    /// `l_name`: the module's path, empty for the main program.
    pub const NAME: u64 = 8;
    /// `l_next`: the next module.
    pub const NEXT: u64 = 24;
    /// `l_prev`: the previous module.
    pub const PREV: u64 = 32;
}

/// At most this many modules are walked (a guard against a corrupt, cyclic list).
const MAX_MODULES: usize = 4096;

/// Where thread-local variables are, with what was learned about the program's libraries.
#[derive(Debug, Default)]
pub struct TlsResolver {
    /// The offset of `l_tls_modid` in `struct link_map`, by the link map gdb asked about.
    modid_offsets: HashMap<u64, u64>,
}

impl TlsResolver {
    /// Forgets what was learned (the program started over).
    pub fn clear(&mut self) {
        self.modid_offsets.clear();
    }

    /// The address of the variable at `req.offset` in the TLS block of module `req.lm`, as
    /// thread `req.thread` sees it.
    pub fn address(&mut self, replay: &DebugReplay, req: &TlsRequest) -> Result<u64> {
        let tid = trace_format::Tid::try_from(req.thread)
            .with_context(|| format!("thread id {:#x} is out of range", req.thread))?;
        let tp = replay
            .thread(tid)?
            .regs()
            .with_context(|| format!("reading the registers of thread {tid}"))?
            .fs_base;
        let dtv = read_u64(replay, tp + TCB_DTV_OFFSET)
            .with_context(|| format!("reading the DTV pointer of thread {tid}"))?;
        let modid_offset = self.modid_offset(replay, req.lm)?;
        let modid = read_u64(replay, req.lm + modid_offset)
            .with_context(|| format!("reading the TLS module id of link map {:#x}", req.lm))?;
        ensure!(
            modid != 0,
            "the module of link map {:#x} has no thread-local storage",
            req.lm
        );
        // dtv[-1].counter is the DTV's length.
        let len = read_u64(replay, dtv.wrapping_sub(DTV_ENTRY_SIZE))
            .with_context(|| format!("reading the DTV length of thread {tid}"))?;
        let entry = modid
            .checked_mul(DTV_ENTRY_SIZE)
            .and_then(|off| dtv.checked_add(off))
            .filter(|_| modid <= len)
            .with_context(|| {
                format!("thread {tid} has no TLS block for module {modid} yet (DTV of {len})")
            })?;
        let block = read_u64(replay, entry)
            .with_context(|| format!("reading DTV entry {modid} of thread {tid}"))?;
        if block == DTV_UNALLOCATED {
            bail!("thread {tid} has not allocated the TLS block of module {modid} yet");
        }
        Ok(block.wrapping_add(req.offset))
    }

    /// The offset of `l_tls_modid` in `struct link_map`, from glibc's own description of it
    /// in the module that defines it (libc, or the program if linked statically).
    fn modid_offset(&mut self, replay: &DebugReplay, lm: u64) -> Result<u64> {
        if let Some(&offset) = self.modid_offsets.get(&lm) {
            return Ok(offset);
        }
        let offset = find_modid_offset(replay, lm)?;
        self.modid_offsets.insert(lm, offset);
        Ok(offset)
    }
}

/// Looks for glibc's descriptor of `l_tls_modid` in every module on the list of `lm`.
fn find_modid_offset(replay: &DebugReplay, lm: u64) -> Result<u64> {
    let mut head = lm;
    for _ in 0..MAX_MODULES {
        match read_u64(replay, head + link_map::PREV)? {
            0 => break,
            prev => head = prev,
        }
    }
    let mut map = head;
    for _ in 0..MAX_MODULES {
        if map == 0 {
            break;
        }
        let path = match read_c_string(replay, read_u64(replay, map + link_map::NAME)?) {
            Some(name) if name.is_empty() => replay.exe().to_path_buf(),
            Some(name) => PathBuf::from(name),
            None => PathBuf::new(),
        };
        // The vDSO and modules whose files are gone have nothing to look at.
        if let Ok(Some(value)) = dynsym_value(&path, MODID_DESCRIPTOR) {
            let at = read_u64(replay, map + link_map::ADDR)?.wrapping_add(value);
            let mut desc = [0u8; 12];
            ensure!(
                replay.read_mem(at, &mut desc) == desc.len(),
                "cannot read {MODID_DESCRIPTOR} at {at:#x} (in {})",
                path.display()
            );
            return field_offset(&desc)
                .with_context(|| format!("{MODID_DESCRIPTOR} in {}", path.display()));
        }
        map = read_u64(replay, map + link_map::NEXT)?;
    }
    bail!("no loaded module defines {MODID_DESCRIPTOR} (is the program using glibc?)")
}

/// The byte offset a libthread_db field descriptor gives: three `u32`s, the field's size in
/// bits, its element count and its offset. `l_tls_modid` is one `size_t`.
fn field_offset(desc: &[u8; 12]) -> Result<u64> {
    let word = |i: usize| u32::from_le_bytes([desc[i], desc[i + 1], desc[i + 2], desc[i + 3]]);
    let (bits, count, offset) = (word(0), word(4), word(8));
    ensure!(
        bits == 64 && count == 1,
        "the descriptor says {count} field(s) of {bits} bits, not one 64-bit field"
    );
    Ok(u64::from(offset))
}

fn read_u64(replay: &DebugReplay, addr: u64) -> Result<u64> {
    let mut buf = [0u8; 8];
    ensure!(
        replay.read_mem(addr, &mut buf) == buf.len(),
        "cannot read memory at {addr:#x}"
    );
    Ok(u64::from_le_bytes(buf))
}

/// The NUL-terminated string at `addr` (at most 4 KiB), if readable.
fn read_c_string(replay: &DebugReplay, addr: u64) -> Option<String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 256];
    while bytes.len() < 4096 {
        let n = replay.read_mem(addr + bytes.len() as u64, &mut chunk);
        if n == 0 {
            return None;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&chunk[..end]);
            return String::from_utf8(bytes).ok();
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    None
}

/// `SHT_DYNSYM`: the dynamic symbol table's section type.
const SHT_DYNSYM: u32 = 11;

/// The value of the defined symbol `name` in the dynamic symbol table of the ELF64
/// little-endian file at `path`; `None` if the file has no such symbol.
fn dynsym_value(path: &Path, name: &str) -> Result<Option<u64>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let read = |offset: u64, len: u64| -> Result<Vec<u8>> {
        let len = usize::try_from(len).context("a section larger than memory")?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .with_context(|| format!("reading {len} bytes at {offset:#x} of {}", path.display()))?;
        Ok(buf)
    };
    let header = read(0, 64)?;
    ensure!(
        header.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a little-endian ELF64 file",
        path.display()
    );
    let shoff = u64_at(&header, 0x28)?;
    let shentsize = u64::from(u16_at(&header, 0x3a)?);
    let shnum = u64::from(u16_at(&header, 0x3c)?);
    ensure!(
        shentsize >= 64,
        "{}: section headers too small",
        path.display()
    );
    let sections = read(shoff, shentsize * shnum)?;
    let section = |i: u64| -> Result<&[u8]> {
        let start = usize::try_from(i * shentsize).context("section index")?;
        sections
            .get(start..start + 64)
            .with_context(|| format!("{}: no section {i}", path.display()))
    };
    for i in 0..shnum {
        let sh = section(i)?;
        if u32_at(sh, 4)? != SHT_DYNSYM {
            continue;
        }
        let strtab = section(u64::from(u32_at(sh, 0x28)?))?;
        let symbols = read(u64_at(sh, 0x18)?, u64_at(sh, 0x20)?)?;
        let strings = read(u64_at(strtab, 0x18)?, u64_at(strtab, 0x20)?)?;
        return find_symbol(&symbols, &strings, name);
    }
    Ok(None)
}

/// The value of the defined symbol `name` in an ELF64 symbol table and its string table.
fn find_symbol(symbols: &[u8], strings: &[u8], name: &str) -> Result<Option<u64>> {
    for sym in symbols.chunks_exact(24) {
        let start = usize::try_from(u32_at(sym, 0)?).context("symbol name offset")?;
        let Some(rest) = strings.get(start..) else {
            continue;
        };
        let sym_name = rest.split(|&b| b == 0).next().unwrap_or_default();
        // st_shndx 0 (SHN_UNDEF): a reference to another module's symbol.
        if sym_name == name.as_bytes() && u16_at(sym, 6)? != 0 {
            return Ok(Some(u64_at(sym, 8)?));
        }
    }
    Ok(None)
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16> {
    let b = bytes.get(at..at + 2).context("truncated ELF data")?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    let b = bytes.get(at..at + 4).context("truncated ELF data")?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64> {
    let b = bytes.get(at..at + 8).context("truncated ELF data")?;
    let mut word = [0u8; 8];
    word.copy_from_slice(b);
    Ok(u64::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    #[test]
    fn decodes_field_descriptors() {
        // As glibc 2.36 defines it on x86-64: 64 bits, 1 element, at 0x480.
        let desc = [64, 0, 0, 0, 1, 0, 0, 0, 0x80, 4, 0, 0];
        assert_eq!(field_offset(&desc).expect("a size_t field"), 0x480);
        let array = [8, 0, 0, 0, 16, 0, 0, 0, 0x10, 0, 0, 0];
        assert!(field_offset(&array).is_err());
    }

    #[test]
    fn finds_symbols_in_a_symbol_table() {
        let strings = b"\0undef\0errno_desc\0";
        let mut symbols = vec![0u8; 24]; // the null symbol
        let mut sym = |name: u32, shndx: u16, value: u64| {
            let mut s = vec![0u8; 24];
            s[0..4].copy_from_slice(&name.to_le_bytes());
            s[6..8].copy_from_slice(&shndx.to_le_bytes());
            s[8..16].copy_from_slice(&value.to_le_bytes());
            symbols.extend(s);
        };
        sym(1, 0, 0x10);
        sym(7, 12, 0x2000);
        sym(1, 0, 0x30);
        assert_eq!(
            find_symbol(&symbols, strings, "errno_desc").ok(),
            Some(Some(0x2000))
        );
        assert_eq!(find_symbol(&symbols, strings, "undef").ok(), Some(None));
        assert_eq!(find_symbol(&symbols, strings, "nothing").ok(), Some(None));
    }

    #[test]
    fn finds_the_modid_descriptor_in_libc() {
        if !Path::new(LIBC).exists() {
            eprintln!("skipped: no {LIBC}");
            return;
        }
        let value = dynsym_value(Path::new(LIBC), MODID_DESCRIPTOR)
            .expect("libc is readable")
            .expect("libc defines the descriptor");
        assert_ne!(value, 0);
        assert_eq!(
            dynsym_value(Path::new(LIBC), "no_such_symbol_in_libc").ok(),
            Some(None)
        );
    }

    #[test]
    fn descriptor_in_memory_is_at_load_bias_plus_symbol_value() {
        let name = std::ffi::CString::new(MODID_DESCRIPTOR).expect("no NUL in the name");
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
        let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        if ptr.is_null() {
            eprintln!("skipped: this test's libc has no {MODID_DESCRIPTOR}");
            return;
        }
        // SAFETY: all-zero is a valid Dl_info (null pointers), which dladdr fills in.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr only writes `info`; `ptr` is an address in a loaded module.
        assert_ne!(
            unsafe { libc::dladdr(ptr, &mut info) },
            0,
            "dladdr finds libc"
        );
        // SAFETY: dladdr set dli_fname to the module's NUL-terminated path.
        let path = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        let path = Path::new(path.to_str().expect("a UTF-8 path"));
        let value = dynsym_value(path, MODID_DESCRIPTOR)
            .expect("the test's libc is readable")
            .expect("it defines the descriptor");
        assert_eq!(info.dli_fbase as u64 + value, ptr as u64);
        // SAFETY: the descriptor is a `const uint32_t[3]` in libc's read-only data.
        let desc: [u8; 12] = unsafe { std::ptr::read_unaligned(ptr.cast()) };
        let offset = field_offset(&desc).expect("a size_t field");
        assert!(offset > 0 && offset < 0x2000, "offset {offset:#x}");
    }

    #[test]
    fn rejects_non_elf_files() {
        let dir = std::env::temp_dir().join(format!("deja-tls-test-{}", std::process::id()));
        std::fs::write(
            &dir,
            b"not an ELF file at all, but long enough for a header ............",
        )
        .expect("writing a scratch file");
        assert!(dynsym_value(&dir, MODID_DESCRIPTOR).is_err());
        std::fs::remove_file(&dir).ok();
    }
}
