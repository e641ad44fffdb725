//! deja's in-process syscall buffer (the fast path): the `no_std` library injected into every
//! recorded process, how to load it, and the records it writes (see README.md).
//!
//! The library itself is `lib/lib.rs`, built by `build.rs` into a shared object that
//! [`IMAGE`] embeds; [`loaded`] lays it out at [`abi::LIB_BASE`] (no dynamic linker is
//! involved: the image imports nothing and carries only relative relocations).

#![warn(missing_docs)]

#[path = "../abi.rs"]
pub mod abi;
pub mod elf;
pub mod specs;

use anyhow::{ensure, Context, Result};
use std::sync::OnceLock;

/// The library's shared object, as built by `build.rs`.
pub static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libdeja_syscallbuf.so"));

const PAGE: u64 = 4096;

/// `PROT_READ` (as in `mmap(2)`).
pub const PROT_READ: i32 = 1;
/// `PROT_WRITE`.
pub const PROT_WRITE: i32 = 2;
/// `PROT_EXEC`.
pub const PROT_EXEC: i32 = 4;

/// One page-aligned piece of the loaded library, ready to be mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Page-aligned address in the program's address space.
    pub addr: u64,
    /// Its contents (file bytes, relocated, then zeros), a whole number of pages.
    pub bytes: Vec<u8>,
    /// `PROT_*` bits.
    pub prot: i32,
}

/// The library laid out at [`abi::LIB_BASE`]: what to map and where its symbols are.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The segments, by increasing address, not overlapping.
    pub segments: Vec<Segment>,
    /// Address of `deja_syscall_hook` (what the stubs' `HOOKPTR` holds).
    pub hook: u64,
    /// Address of `deja_config` (an [`abi::Config`], see [`config_bytes`]).
    pub config: u64,
    /// Address of `deja_files` (an [`abi::FileTable`], see [`file_table_bytes`]).
    pub files: u64,
    /// Address of `deja_replay_files` (an [`abi::ReplayFiles`]).
    pub replay_files: u64,
    /// Address of `deja_traced_syscall` (the hook's traced `syscall` instruction).
    pub traced: u64,
    /// Address of `deja_traced_syscall_end`, right after the traced `syscall`.
    pub traced_end: u64,
    /// Address of `deja_untraced_syscall_end`, right after the untraced `syscall` (the address
    /// the seccomp filter allows).
    pub untraced_end: u64,
    /// End of the last segment (page-aligned); at most `LIB_BASE + LIB_MAX_SIZE`.
    pub end: u64,
}

/// The library laid out at [`abi::LIB_BASE`] (computed once).
pub fn loaded() -> Result<&'static Loaded> {
    static LOADED: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| load(IMAGE, abi::LIB_BASE).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("cannot load the syscallbuf library: {e}"))
}

/// Lays out the shared object `image` at `base`.
pub fn load(image: &[u8], base: u64) -> Result<Loaded> {
    let elf = elf::Elf::parse(image).map_err(anyhow::Error::msg)?;
    elf.check_standalone().map_err(anyhow::Error::msg)?;
    let mut loads = elf.loads.clone();
    loads.sort_by_key(|l| l.vaddr);
    let mut segments: Vec<Segment> = Vec::new();
    for l in &loads {
        let start = base
            .checked_add(l.vaddr)
            .context("segment address overflows")?;
        let page = start & !(PAGE - 1);
        let end = start
            .checked_add(l.memsz)
            .and_then(|e| e.checked_add(PAGE - 1))
            .context("segment end overflows")?
            & !(PAGE - 1);
        if let Some(prev) = segments.last() {
            ensure!(
                page >= prev.addr + prev.bytes.len() as u64,
                "segments at {:#x} and {:#x} share a page",
                prev.addr,
                start
            );
        }
        let mut bytes = vec![0u8; usize::try_from(end - page)?];
        let at = usize::try_from(start - page)?;
        let from = usize::try_from(l.offset)?;
        let n = usize::try_from(l.filesz)?;
        let src = image
            .get(from..from + n)
            .with_context(|| format!("segment at {:#x} lies outside the file", l.vaddr))?;
        bytes[at..at + n].copy_from_slice(src);
        let mut prot = 0;
        if l.flags & 4 != 0 {
            prot |= PROT_READ;
        }
        if l.flags & 2 != 0 {
            prot |= PROT_WRITE;
        }
        if l.flags & 1 != 0 {
            prot |= PROT_EXEC;
        }
        segments.push(Segment {
            addr: page,
            bytes,
            prot,
        });
    }
    for r in &elf.relas {
        let at = base
            .checked_add(r.offset)
            .context("relocation offset overflows")?;
        let seg = segments
            .iter_mut()
            .find(|s| at >= s.addr && at + 8 <= s.addr + s.bytes.len() as u64)
            .with_context(|| format!("relocation at {at:#x} outside the segments"))?;
        let o = usize::try_from(at - seg.addr)?;
        let value = base.wrapping_add(r.addend as u64);
        seg.bytes[o..o + 8].copy_from_slice(&value.to_le_bytes());
    }
    let end = segments
        .last()
        .map(|s| s.addr + s.bytes.len() as u64)
        .context("no segments")?;
    ensure!(
        segments.first().map(|s| s.addr) >= Some(base) && end - base <= abi::LIB_MAX_SIZE,
        "the library spans {:#x} bytes from {base:#x}, more than LIB_MAX_SIZE ({:#x})",
        end - base,
        abi::LIB_MAX_SIZE
    );
    let sym = |name: &str| -> Result<u64> {
        elf.symbols
            .get(name)
            .map(|v| base + v)
            .with_context(|| format!("the library has no symbol {name}"))
    };
    Ok(Loaded {
        hook: sym("deja_syscall_hook")?,
        config: sym("deja_config")?,
        files: sym("deja_files")?,
        replay_files: sym("deja_replay_files")?,
        traced: sym("deja_traced_syscall")?,
        traced_end: sym("deja_traced_syscall_end")?,
        untraced_end: sym("deja_untraced_syscall_end")?,
        segments,
        end,
    })
}

/// The blake3 hash (hex) of [`IMAGE`], to tell library versions apart in traces.
pub fn image_hash() -> String {
    blake3::hash(IMAGE).to_hex().to_string()
}

/// The [`abi::FileTable`] of `keys` (at most [`abi::MAX_FILES`]) as bytes, its used part
/// only (the rest of the library's table is zero), to write at [`Loaded::files`].
pub fn file_table_bytes(keys: &[abi::FileKey]) -> Vec<u8> {
    let keys = &keys[..keys.len().min(abi::MAX_FILES)];
    let mut out = Vec::with_capacity(8 + 40 * keys.len());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        for w in [k.dev, k.ino, k.size, k.mtime as u64, k.mtime_nsec as u64] {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// Where the replayer writes the path of index `i` of a process's [`abi::ReplayFiles`], and
/// the bytes (the path and its NUL); `None` if the path is too long for it.
pub fn replay_file_path(i: usize, path: &[u8]) -> Option<(u64, Vec<u8>)> {
    if i >= abi::MAX_FILES || path.len() >= abi::REPLAY_PATH_SIZE || path.contains(&0) {
        return None;
    }
    let at =
        loaded().ok()?.replay_files + i as u64 * abi::REPLAY_FILE_SIZE + abi::REPLAY_FILE_PATH_OFF;
    let mut bytes = path.to_vec();
    bytes.push(0);
    Some((at, bytes))
}

/// Size of an [`abi::Config`] in bytes.
pub const CONFIG_SIZE: usize = std::mem::size_of::<abi::Config>();

/// The [`abi::Config`] (with [`abi::CONFIG_MAGIC`]) as bytes, to write at [`Loaded::config`].
pub fn config_bytes(mode: u64, specs: &[abi::Spec; abi::MAX_NR]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONFIG_SIZE);
    out.extend_from_slice(&abi::CONFIG_MAGIC.to_le_bytes());
    out.extend_from_slice(&mode.to_le_bytes());
    for s in specs {
        out.push(s.probe);
        out.extend_from_slice(&s.pad);
        for o in &s.outs {
            out.extend_from_slice(&[o.kind, o.arg, o.count_arg, o.pad]);
            out.extend_from_slice(&o.size.to_le_bytes());
        }
        for c in &s.conds {
            out.extend_from_slice(&[c.kind, c.arg, c.width, c.unless_zero]);
            out.extend_from_slice(&c.pad.to_le_bytes());
            out.extend_from_slice(&c.value.to_le_bytes());
        }
        for c in &s.cases {
            out.extend_from_slice(&c.value.to_le_bytes());
            out.extend_from_slice(&c.size.to_le_bytes());
            out.extend_from_slice(&c.used.to_le_bytes());
        }
    }
    debug_assert_eq!(out.len(), CONFIG_SIZE);
    out
}

/// Size of an [`abi::SlotHeader`] in bytes.
pub const SLOT_HEADER_SIZE: usize = std::mem::size_of::<abi::SlotHeader>();

/// The initial [`abi::SlotHeader`] of the slot at `slot_addr` as bytes: its address, the
/// magic, its stack's top, [`abi::SLOT_DISABLED`] if `disabled`, every counter 0.
pub fn slot_header(slot_addr: u64, disabled: bool) -> Vec<u8> {
    let h = [
        slot_addr,
        abi::SLOT_MAGIC,
        0,
        0,
        0,
        0,
        0,
        0,
        slot_addr + abi::STACK_OFF + abi::STACK_SIZE,
        if disabled { abi::SLOT_DISABLED } else { 0 },
        0,
        0,
        0,
        0,
        0,
    ];
    let out: Vec<u8> = h.iter().flat_map(|w| w.to_le_bytes()).collect();
    debug_assert_eq!(out.len(), SLOT_HEADER_SIZE);
    out
}

/// One buffered syscall, as the library logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Syscall number.
    pub nr: u64,
    /// rdi, rsi, rdx, r10, r8, r9.
    pub args: [u64; 6],
    /// The result (`-errno` on failure).
    pub result: i64,
    /// The memory the call wrote: (address, bytes), in order.
    pub writes: Vec<(u64, Vec<u8>)>,
}

fn word(buf: &[u8], off: usize) -> Result<u64> {
    let b = buf
        .get(off..off + 8)
        .with_context(|| format!("record buffer truncated at byte {off}"))?;
    Ok(u64::from_le_bytes(b.try_into()?))
}

/// The head of one record in a buffer, without its writes (see [`heads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Syscall number.
    pub nr: u64,
    /// The six argument registers.
    pub args: [u64; 6],
    /// The result.
    pub result: i64,
    /// Where the record starts in the buffer.
    pub offset: usize,
    /// Its size in bytes, writes included.
    pub size: usize,
    /// [`abi::RecordHead::file`]: 0, or 1 + the file table index of an `mmap` of a file.
    pub file: u32,
}

/// The heads of the records of a buffer, checked as strictly as [`parse_records`] does but
/// without copying what they wrote: what the recorder needs of a drained buffer, which it
/// stores as it is.
pub fn heads(buf: &[u8]) -> Result<Vec<Head>> {
    ensure!(
        buf.len() % 8 == 0,
        "record buffer of {} bytes, not a multiple of 8",
        buf.len()
    );
    let head = abi::RECORD_HEAD_SIZE as usize;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let n = out.len();
        ensure!(
            buf.len() - pos >= head,
            "record {n} at byte {pos}: only {} bytes left, a head takes {head}",
            buf.len() - pos
        );
        let w0 = word(buf, pos)?;
        let size = (w0 & 0xffff_ffff) as usize;
        ensure!(
            size >= head && size % 8 == 0 && size <= buf.len() - pos,
            "record {n} at byte {pos}: bad size {size} ({} bytes left)",
            buf.len() - pos
        );
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = word(buf, pos + 8 + 8 * i)?;
        }
        let rec = &buf[pos..pos + size];
        let w64 = word(buf, pos + 64)?;
        let nwrites = w64 & 0xffff_ffff;
        let mut off = head;
        for k in 0..nwrites {
            ensure!(
                size - off >= abi::WRITE_HEAD_SIZE as usize,
                "record {n} at byte {pos}: write {k} of {nwrites} past the record's end"
            );
            let len = word(rec, off + 8)?;
            let padded = len
                .checked_add(7)
                .map(|l| l & !7)
                .filter(|&l| l <= (size - off - abi::WRITE_HEAD_SIZE as usize) as u64)
                .with_context(|| {
                    format!(
                        "record {n} at byte {pos}: write {k} of {len} bytes past the record's end"
                    )
                })? as usize;
            off += abi::WRITE_HEAD_SIZE as usize + padded;
        }
        ensure!(
            off == size,
            "record {n} at byte {pos}: its writes end at {off}, its size is {size}"
        );
        out.push(Head {
            nr: w0 >> 32,
            args,
            result: word(buf, pos + 56)? as i64,
            offset: pos,
            size,
            file: (w64 >> 32) as u32,
        });
        pos += size;
    }
    Ok(out)
}

/// Parses the records of a slot's buffer (`buf` = its first `used` bytes). Strict: every size
/// must be consistent, 8-aligned and inside `buf` (see [`heads`]).
pub fn parse_records(buf: &[u8]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for h in heads(buf)? {
        let rec = &buf[h.offset..h.offset + h.size];
        let nwrites = word(rec, 64)? & 0xffff_ffff;
        let mut off = abi::RECORD_HEAD_SIZE as usize;
        let mut writes = Vec::new();
        for _ in 0..nwrites {
            // `heads` checked that every write lies inside its record.
            let addr = word(rec, off)?;
            let len = word(rec, off + 8)? as usize;
            let data = off + abi::WRITE_HEAD_SIZE as usize;
            writes.push((addr, rec[data..data + len].to_vec()));
            off = data + len.next_multiple_of(8);
        }
        out.push(Record {
            nr: h.nr,
            args: h.args,
            result: h.result,
            writes,
        });
    }
    Ok(out)
}

/// Encodes records exactly as the library writes them (to place them in a slot's buffer for
/// replay).
pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let start = out.len();
        out.extend_from_slice(&[0u8; 4]); // size, patched below
        out.extend_from_slice(&(r.nr as u32).to_le_bytes());
        for a in r.args {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out.extend_from_slice(&r.result.to_le_bytes());
        out.extend_from_slice(&(r.writes.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for (addr, bytes) in &r.writes {
            out.extend_from_slice(&addr.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        let size = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&size.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_loads_standalone() {
        let l = loaded().unwrap();
        assert_eq!(l.segments[0].addr, abi::LIB_BASE);
        assert!(l.end <= abi::LIB_BASE + abi::LIB_MAX_SIZE);
        for a in [l.hook, l.config, l.traced, l.traced_end, l.untraced_end] {
            assert!(a >= abi::LIB_BASE && a < l.end);
        }
        assert_eq!(l.traced_end, l.traced + 2);
        assert_eq!(image_hash().len(), 64);
        assert_eq!(CONFIG_SIZE, 16 + SPEC_SIZE * abi::MAX_NR);
        assert_eq!(SLOT_HEADER_SIZE, abi::OFF_YIELD_ASKED as usize + 8);
        assert_eq!(
            std::mem::size_of::<abi::RecordHead>() as u64,
            abi::RECORD_HEAD_SIZE
        );
        assert_eq!(std::mem::size_of::<abi::FileKey>(), 40);
        assert_eq!(
            std::mem::size_of::<abi::ReplayFile>() as u64,
            abi::REPLAY_FILE_SIZE
        );
        assert_eq!(
            std::mem::offset_of!(abi::ReplayFile, path) as u64,
            abi::REPLAY_FILE_PATH_OFF
        );
        let keys = [abi::FileKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: 4,
            mtime_nsec: 5,
        }];
        let t = file_table_bytes(&keys);
        assert_eq!(t.len(), 8 + 40);
        assert_eq!(word(&t, 0).unwrap(), 1);
        assert_eq!(word(&t, 8 + 32).unwrap(), 5);
    }

    #[test]
    fn records_round_trip_and_strictness() {
        let recs = vec![
            Record {
                nr: 39,
                args: [1, 2, 3, 4, 5, 6],
                result: 77,
                writes: vec![],
            },
            Record {
                nr: 0,
                args: [3, 0x1000, 64, 0, 0, 0],
                result: 5,
                writes: vec![(0x1000, b"hello".to_vec()), (0x2000, vec![1; 16])],
            },
        ];
        let b = encode_records(&recs);
        assert_eq!(b.len(), 72 + 72 + 16 + 8 + 16 + 16);
        assert_eq!(parse_records(&b).unwrap(), recs);
        assert!(parse_records(&b[..b.len() - 8]).is_err());
        assert!(parse_records(&b[..70]).is_err());
        let mut bad = b.clone();
        bad[72 + 72 + 8] = 200; // the first write's length past the record's end
        assert!(parse_records(&bad).is_err());
        let mut bad = b.clone();
        bad[0] = 12; // a size below the head's
        assert!(parse_records(&bad).is_err());
        assert_eq!(parse_records(&[]).unwrap(), vec![]);
    }

    #[test]
    fn header_and_config_layout() {
        let h = slot_header(abi::slot_addr(3), true);
        assert_eq!(word(&h, 0).unwrap(), abi::slot_addr(3));
        assert_eq!(word(&h, 8).unwrap(), abi::SLOT_MAGIC);
        assert_eq!(word(&h, abi::OFF_STACK_TOP as usize).unwrap() % 16, 0);
        assert_eq!(
            word(&h, abi::OFF_FLAGS as usize).unwrap(),
            abi::SLOT_DISABLED
        );
        let mut specs = [abi::Spec::default(); abi::MAX_NR];
        specs[5].probe = abi::PROBE_DIRECT;
        specs[5].outs[1] = abi::OutSpec {
            kind: abi::OUT_FIXED,
            arg: 1,
            count_arg: 0,
            pad: 0,
            size: 144,
        };
        let c = config_bytes(abi::MODE_RECORD, &specs);
        assert_eq!(c.len(), CONFIG_SIZE);
        assert_eq!(word(&c, 8).unwrap(), abi::MODE_RECORD);
        let s5 = 16 + SPEC_SIZE * 5;
        assert_eq!(c[s5], abi::PROBE_DIRECT);
        assert_eq!(&c[s5 + 16..s5 + 24], &[1, 1, 0, 0, 144, 0, 0, 0]);
        // Conditions and cases follow the outputs, as the library's `Spec` lays them out.
        specs[5].conds[1] = abi::Cond {
            kind: abi::COND_NE,
            arg: 2,
            width: 4,
            unless_zero: 0,
            pad: 0,
            value: 0x1234,
        };
        specs[5].cases[3] = abi::Case {
            value: 0x5401,
            size: 36,
            used: abi::CASE_USED,
        };
        let c = config_bytes(abi::MODE_RECORD, &specs);
        let cond1 = s5 + 24 + 16;
        assert_eq!(&c[cond1..cond1 + 4], &[abi::COND_NE, 2, 4, 0]);
        assert_eq!(word(&c, cond1 + 8).unwrap(), 0x1234);
        let case3 = s5 + 24 + 16 * abi::MAX_CONDS + 16 * 3;
        assert_eq!(word(&c, case3).unwrap(), 0x5401);
        assert_eq!(&c[case3 + 8..case3 + 16], &[36, 0, 0, 0, 1, 0, 0, 0]);
        let unused = s5 + 24 + 16 * abi::MAX_CONDS;
        assert_eq!(&c[unused..unused + 16], &[0; 16]);
        // An unused spec is all zeros, like the library's initial configuration.
        let s6 = 16 + SPEC_SIZE * 6;
        assert!(c[s6..s6 + SPEC_SIZE].iter().all(|&b| b == 0));
    }

    /// Size of one `abi::Spec`.
    const SPEC_SIZE: usize = std::mem::size_of::<abi::Spec>();

    #[test]
    fn spec_layout() {
        assert_eq!(SPEC_SIZE, 24 + 16 * abi::MAX_CONDS + 16 * abi::MAX_CASES);
        assert_eq!(std::mem::size_of::<abi::Cond>(), 16);
        assert_eq!(std::mem::size_of::<abi::Case>(), 16);
    }
}
