//! The exact state of a task stopped in its user code: what a [`Point`] records and how a later
//! moment is compared with it.
//!
//! A point is the general registers (less what the program cannot observe), the x87/SSE/AVX
//! state and a digest of every writable page of the process. Two moments with equal state have
//! equal futures, so the replay may stop at any visit whose state equals the recorded one.
//! [`step_for_watch`] adds a few memory words the task wrote just before the point, which the
//! replay's in-process filter compares cheaply before the full check.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    Register,
};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use trace_format::{Point, WatchedWord};

use crate::regs::{to_words, Regs, REGS_WORDS, WORD_NAMES};
use crate::stop::Stop;
use crate::tracee::Tracee;

/// eflags bits a Point compares: CF PF AF ZF SF OF DF.
pub const FLAGS_COMPARED: u64 = 0x0cd5 | 0x0400;

/// Index of `orig_rax` in [`to_words`] order: kernel bookkeeping, not user state.
const ORIG_RAX: usize = trace_format::POINT_IGNORED_REG;
/// Index of `eflags` in [`to_words`] order.
const EFLAGS: usize = 18;
/// The trap flag, which single-stepping sets while the task runs.
const EFLAGS_TF: u64 = 1 << 8;

/// `words` with what a Point does not compare cleared: orig_rax (index 15) zeroed, eflags masked.
pub fn comparable(words: &[u64; REGS_WORDS]) -> [u64; REGS_WORDS] {
    let mut w = *words;
    w[ORIG_RAX] = 0;
    w[EFLAGS] &= FLAGS_COMPARED;
    w
}

// ---------------------------------------------------------------------------------------------
// Memory digest
// ---------------------------------------------------------------------------------------------

/// Page size of x86-64 Linux.
const PAGE: u64 = 4096;
/// Bytes read (and hashed) at a time: large enough for few syscalls and wide hashing, small
/// enough to stay in the CPU's cache between the copy and the hash.
const CHUNK: usize = 256 * 1024;
/// Pages whose `/proc/PID/pagemap` entries are read at a time (64 MiB of address space).
const PAGEMAP_BATCH: usize = 16 * 1024;
/// pagemap: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// pagemap: the page is swapped out.
const PM_SWAPPED: u64 = 1 << 62;
/// pagemap: the page is a file page or shared anonymous memory.
const PM_FILE_OR_SHARED: u64 = 1 << 61;
/// Marks an unreadable page in the digest's address list (addresses are page-aligned, so the
/// low bit is otherwise clear).
const UNREADABLE: u64 = 1;
/// Domain separation of the final digest (bump when the scheme changes).
const DIGEST_DOMAIN: &[u8] = b"deja memory digest v1";

/// BLAKE3 (first 16 bytes) over every writable mapping of the tracee's process: for each page whose
/// content (with `excluded` byte ranges zeroed) is not all zero, its address and content. Pages known
/// zero from /proc/PID/pagemap (anonymous, not present, not swapped) are skipped without reading.
///
/// Which pages happen to be resident does not matter: a page is hashed for its content alone,
/// and an all-zero page counts as absent whether it was read or skipped. A page that cannot be
/// read (e.g. a device mapping, or a file mapping beyond the end of its file) contributes its
/// address with a fixed marker. The content of the hashed pages and the list of their
/// addresses are hashed separately (so the content stream can be hashed in large, SIMD-friendly
/// pieces), and the final digest combines both.
pub fn memory_digest(t: &Tracee, excluded: &[(u64, u64)]) -> Result<[u8; 16]> {
    digest_using(t, excluded, true).map(|(d, _)| d)
}

/// [`memory_digest`], finding the resident pages of anonymous memory with the `PAGEMAP_SCAN`
/// ioctl when `scan` is set (and the kernel has it), else by reading pagemap entries.
/// Also returns what it did.
fn digest_using(t: &Tracee, excluded: &[(u64, u64)], scan: bool) -> Result<([u8; 16], Stats)> {
    let started = std::time::Instant::now();
    let pid = t.pid();
    let maps = crate::maps::read(pid)?;
    let path = format!("/proc/{pid}/pagemap");
    let pagemap = File::open(&path).with_context(|| format!("opening {path}"))?;
    let mut d = Digester {
        t,
        pid,
        pagemap,
        excluded: merge_ranges(excluded),
        content: blake3::Hasher::new(),
        addrs: blake3::Hasher::new(),
        buf: vec![0; CHUNK],
        flags: Vec::with_capacity(PAGEMAP_BATCH),
        scan,
        stats: Stats::default(),
    };
    for m in maps.iter().filter(|m| m.perms.contains('w')) {
        // Anonymous private memory reads as zero where it was never touched; a private file
        // mapping reads as the file there, and shared memory may be resident elsewhere.
        let anonymous_private = m.inode == 0 && m.perms.ends_with('p');
        d.mapping(m.start, m.end, anonymous_private);
    }
    let mut last = blake3::Hasher::new();
    last.update(DIGEST_DOMAIN);
    last.update(d.content.finalize().as_bytes());
    last.update(d.addrs.finalize().as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&last.finalize().as_bytes()[..16]);
    tracing::debug!(
        task = pid.as_raw(),
        read_kib = d.stats.read_pages * 4,
        hashed_kib = d.stats.hashed_pages * 4,
        skipped_kib = d.stats.skipped_pages * 4,
        unreadable = d.stats.unreadable_pages,
        micros = started.elapsed().as_micros() as u64,
        scanned = d.scan,
        "memory digest"
    );
    d.stats.scanned = d.scan;
    Ok((out, d.stats))
}

/// `ranges` as sorted, non-empty `[start, end)` ranges, overlapping and touching ones merged.
pub fn merge_ranges(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges.iter().copied().filter(|&(s, e)| s < e).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// A page of zeros.
static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

/// Whether `page` (at most a page long) is all zero. A slice comparison is a `memcmp`, fast in
/// unoptimized builds too.
fn is_zero(page: &[u8]) -> bool {
    page == &ZERO_PAGE[..page.len()]
}

/// What a digest did, for the debug log.
#[derive(Debug, Default)]
struct Stats {
    /// Whether `PAGEMAP_SCAN` found the resident pages (to the end).
    scanned: bool,
    read_pages: u64,
    hashed_pages: u64,
    skipped_pages: u64,
    unreadable_pages: u64,
}

/// One digest in progress.
struct Digester<'a> {
    t: &'a Tracee,
    pid: Pid,
    pagemap: File,
    /// Normalized excluded ranges.
    excluded: Vec<(u64, u64)>,
    /// The content of the non-zero pages, in address order.
    content: blake3::Hasher,
    /// The address of each non-zero page (or unreadable page, with [`UNREADABLE`] set).
    addrs: blake3::Hasher,
    buf: Vec<u8>,
    flags: Vec<u64>,
    /// Whether to try `PAGEMAP_SCAN` (cleared when the kernel turns out not to have it).
    scan: bool,
    stats: Stats,
}

/// `PAGEMAP_SCAN`'s argument (`struct pm_scan_arg`, Linux 6.7).
#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// One run of pages `PAGEMAP_SCAN` reports (`struct page_region`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// `PAGEMAP_SCAN` category: present in RAM.
const PAGE_IS_PRESENT: u64 = 1 << 3;
/// `PAGEMAP_SCAN` category: swapped out.
const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Regions asked for per `PAGEMAP_SCAN` call.
const SCAN_REGIONS: usize = 512;

impl Digester<'_> {
    /// Hashes the pages of one mapping.
    fn mapping(&mut self, start: u64, end: u64, anonymous_private: bool) {
        let mut batch = start;
        if anonymous_private && self.scan {
            // Where the scan got to; the rest (if it failed) is done below.
            batch = self.scan_mapping(start, end);
        }
        while batch < end {
            let pages = (((end - batch) / PAGE) as usize).min(PAGEMAP_BATCH);
            let batch_end = batch + pages as u64 * PAGE;
            if anonymous_private {
                self.read_pagemap(batch, pages);
            } else {
                self.flags.clear();
                self.flags.resize(pages, PM_PRESENT);
            }
            // Runs of pages that may hold something.
            let mut i = 0;
            while i < pages {
                if self.flags[i] & (PM_PRESENT | PM_SWAPPED | PM_FILE_OR_SHARED) == 0 {
                    self.stats.skipped_pages += 1;
                    i += 1;
                    continue;
                }
                let first = i;
                while i < pages
                    && self.flags[i] & (PM_PRESENT | PM_SWAPPED | PM_FILE_OR_SHARED) != 0
                {
                    i += 1;
                }
                self.run(batch + first as u64 * PAGE, batch + i as u64 * PAGE);
            }
            batch = batch_end;
        }
    }

    /// Hashes the present or swapped pages of the anonymous mapping `[start, end)`, which
    /// `PAGEMAP_SCAN` finds (skipping unpopulated page tables wholesale, which matters for huge
    /// sparse reservations). Returns the address up to which it hashed: `end`, or where the
    /// ioctl failed (a kernel without it: it is not tried again).
    fn scan_mapping(&mut self, start: u64, end: u64) -> u64 {
        let mut regions = [PageRegion::default(); SCAN_REGIONS];
        let mut at = start;
        while at < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start: at,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: SCAN_REGIONS as u64,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..PmScanArg::default()
            };
            // SAFETY: PAGEMAP_SCAN reads `arg` (a local of the kernel's layout, whose `size`
            // says so), writes at most `vec_len` page_regions to `vec`, which points at
            // `regions` (that many, borrowed mutably here), and writes `arg.walk_end`.
            let n =
                unsafe { libc::ioctl(self.pagemap_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                tracing::debug!(error = %e, "PAGEMAP_SCAN failed, reading pagemap instead");
                self.scan = false;
                return at;
            }
            let found = &regions[..(n as usize).min(SCAN_REGIONS)];
            let mut resident = 0;
            for r in found.iter().copied() {
                resident += (r.end - r.start) / PAGE;
                self.run(r.start.max(at), r.end.min(end));
            }
            let walked = arg.walk_end.clamp(at, end);
            self.stats.skipped_pages += ((walked - at) / PAGE).saturating_sub(resident);
            if walked <= at {
                // No progress (should not happen): the rest the slow way.
                self.scan = false;
                return at;
            }
            at = walked;
        }
        end
    }

    fn pagemap_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.pagemap.as_raw_fd()
    }

    /// Fills `flags` with the pagemap entries of `pages` pages at `addr`; entries that cannot
    /// be read count as present (the pages are then read, which is always correct).
    fn read_pagemap(&mut self, addr: u64, pages: usize) {
        self.flags.clear();
        self.flags.resize(pages, 0);
        let mut raw = vec![0u8; pages * 8];
        let mut done = 0;
        while done < raw.len() {
            match self
                .pagemap
                .read_at(&mut raw[done..], (addr / PAGE) * 8 + done as u64)
            {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        for (i, f) in self.flags.iter_mut().enumerate() {
            *f = match raw.get(8 * i..8 * i + 8) {
                Some(b) if 8 * i + 8 <= done => {
                    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                }
                _ => PM_PRESENT,
            };
        }
    }

    /// Reads and hashes the pages of `[start, end)`, a chunk at a time.
    fn run(&mut self, start: u64, end: u64) {
        let mut addr = start;
        while addr < end {
            let len = ((end - addr) as usize).min(CHUNK);
            let mut buf = std::mem::take(&mut self.buf);
            let readable = self.read(addr, &mut buf[..len]);
            self.zero_excluded(addr, &mut buf[..len]);
            self.hash_chunk(addr, &buf[..len], &readable);
            self.buf = buf;
            addr += len as u64;
        }
    }

    /// Reads `buf.len()` bytes (whole pages) at `addr`; returns which pages could be read
    /// (unreadable ones are left zero in `buf`).
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Vec<bool> {
        let pages = buf.len() / PAGE as usize;
        let mut readable = vec![true; pages];
        let mut off = 0;
        while off < buf.len() {
            off += vm_read(self.pid, addr + off as u64, &mut buf[off..]);
            if off >= buf.len() {
                break;
            }
            // The page at `off` failed: `/proc/PID/mem` may still read it (it reads through
            // protections, as ptrace may), else it gets the marker.
            let page = off / PAGE as usize;
            let page_buf = &mut buf[page * PAGE as usize..(page + 1) * PAGE as usize];
            let n = self
                .t
                .read_mem_partial(addr + (page as u64) * PAGE, page_buf);
            if n != page_buf.len() {
                page_buf.fill(0);
                readable[page] = false;
            }
            off = (page + 1) * PAGE as usize;
        }
        self.stats.read_pages += pages as u64;
        readable
    }

    /// Zeroes the bytes of `buf` (memory at `addr`) that fall in an excluded range.
    fn zero_excluded(&self, addr: u64, buf: &mut [u8]) {
        let end = addr + buf.len() as u64;
        let first = self.excluded.partition_point(|&(_, e)| e <= addr);
        for &(s, e) in &self.excluded[first..] {
            if s >= end {
                break;
            }
            let from = (s.max(addr) - addr) as usize;
            let to = (e.min(end) - addr) as usize;
            buf[from..to].fill(0);
        }
    }

    /// Hashes the pages of `buf` (memory at `addr`): non-zero pages' addresses and content,
    /// unreadable pages' marked addresses. Consecutive non-zero pages go to the content hash in
    /// one piece.
    fn hash_chunk(&mut self, addr: u64, buf: &[u8], readable: &[bool]) {
        let page = PAGE as usize;
        let mut span: Option<usize> = None;
        for (i, bytes) in buf.chunks_exact(page).enumerate() {
            let page_addr = addr + (i * page) as u64;
            let hashed = readable[i] && !is_zero(bytes);
            if hashed {
                self.addrs.update(&page_addr.to_le_bytes());
                self.stats.hashed_pages += 1;
                span.get_or_insert(i);
                continue;
            }
            if let Some(first) = span.take() {
                self.content.update(&buf[first * page..i * page]);
            }
            if !readable[i] {
                self.addrs.update(&(page_addr | UNREADABLE).to_le_bytes());
                self.stats.unreadable_pages += 1;
            }
        }
        if let Some(first) = span {
            self.content.update(&buf[first * page..]);
        }
    }
}

/// `process_vm_readv` of `buf.len()` bytes at `addr`; returns how many bytes were read (it stops
/// at the first page it cannot read).
fn vm_read(pid: Pid, addr: u64, buf: &mut [u8]) -> usize {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let mut local = [IoSliceMut::new(buf)];
    process_vm_readv(pid, &mut local, &remote).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Stepping for watched words
// ---------------------------------------------------------------------------------------------

/// What one single-stepping pass saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stepped {
    /// Memory the stepped instructions wrote, oldest first, as `(address, size)` pieces of 1,
    /// 2, 4 or 8 bytes.
    pub written: Vec<(u64, u8)>,
    /// The stop that ended the pass when it was not a single step's (another signal, an event,
    /// the task's end); the task stays in that stop.
    pub interrupted: Option<Stop>,
    /// How many instructions were stepped.
    pub steps: usize,
}

/// Largest write of one memory operand recorded (as up to eight 8-byte pieces).
const MAX_OPERAND_BYTES: usize = 64;

/// Single-steps `t` (stopped in user code) until its rip returns to where it started or `max` steps,
/// never stepping an instruction that enters the kernel or traps (syscall, sysenter, int, int3,
/// rdtsc, rdtscp, cpuid, ud2, hlt, ...: stops before it). Records the memory each step wrote
/// (iced-x86 InstructionInfoFactory + register values). If a stop other than the step's SIGTRAP
/// comes (another signal, death), stops stepping and returns it in `interrupted` (the task stays in
/// that stop).
///
/// The first step discards the signal the task may be stopped for (the caller keeps its
/// siginfo if it is to be delivered later). A `pushf` stepped this way would push the trap flag
/// the stepping sets; the pushed word is corrected, so memory is what a native run would have.
pub fn step_for_watch(t: &Tracee, max: usize) -> Result<Stepped> {
    let mut out = Stepped::default();
    let mut factory = InstructionInfoFactory::new();
    let mut regs = t.regs()?;
    let start = regs.rip;
    for n in 0..max {
        if n > 0 && regs.rip == start {
            break;
        }
        let mut bytes = [0u8; 16];
        let len = t.read_mem_partial(regs.rip, &mut bytes);
        let insn = Decoder::with_ip(64, &bytes[..len], regs.rip, DecoderOptions::NONE).decode();
        if must_not_step(&insn) {
            tracing::trace!(rip = regs.rip, insn = ?insn.mnemonic(), "step_for_watch: stop before");
            break;
        }
        let writes = written_by(&mut factory, &insn, &regs);
        if is_popf(&insn) {
            emulate_popf(t, &insn)?;
            out.steps += 1;
            regs = t.regs()?;
            continue;
        }
        t.step(0)?;
        let stop = t.wait()?;
        if !is_step_trap(t, stop)? {
            out.interrupted = Some(stop);
            break;
        }
        out.written.extend(writes);
        out.steps += 1;
        if matches!(insn.mnemonic(), Mnemonic::Pushf | Mnemonic::Pushfq)
            && regs.eflags & EFLAGS_TF == 0
        {
            clear_pushed_tf(t, &insn)?;
        }
        regs = t.regs()?;
    }
    Ok(out)
}

/// Single-steps one instruction of `t` and returns the stop it reached; a `pushf` stepped
/// this way has the trap flag the stepping sets cleared from the pushed image (as
/// [`step_for_watch`] does), so the program never picks it up.
pub fn step_one(t: &Tracee) -> Result<Option<Stop>> {
    let regs = t.regs()?;
    let mut bytes = [0u8; 16];
    let len = t.read_mem_partial(regs.rip, &mut bytes);
    let insn = Decoder::with_ip(64, &bytes[..len], regs.rip, DecoderOptions::NONE).decode();
    if is_popf(&insn) {
        emulate_popf(t, &insn)?;
        return Ok(None);
    }
    t.step(0)?;
    let stop = t.wait()?;
    if matches!(insn.mnemonic(), Mnemonic::Pushf | Mnemonic::Pushfq)
        && regs.eflags & EFLAGS_TF == 0
        && is_step_trap(t, stop)?
    {
        clear_pushed_tf(t, &insn)?;
    }
    Ok(Some(stop))
}

/// Whether `insn` is a `popf`/`popfq`.
fn is_popf(insn: &Instruction) -> bool {
    matches!(insn.mnemonic(), Mnemonic::Popf | Mnemonic::Popfq)
}

/// Runs the `popf`/`popfq` `insn` at the stopped task's `rip` by hand: single-stepping one
/// makes the kernel lose track of the trap flag the stepping set (it then treats it as the
/// program's, and leaves it set when the task is continued: a stray `SIGTRAP` later).
fn emulate_popf(t: &Tracee, insn: &Instruction) -> Result<()> {
    let mut regs = t.regs()?;
    let size = if insn.mnemonic() == Mnemonic::Popfq {
        8
    } else {
        2
    };
    let mut b = [0u8; 8];
    t.read_mem(regs.rsp, &mut b[..size])
        .context("reading the flags a popf pops")?;
    let value = u64::from_le_bytes(b);
    regs.eflags = if size == 8 {
        value
    } else {
        (regs.eflags & !0xffff) | value
    };
    regs.rsp += size as u64;
    regs.rip = insn.next_ip();
    t.set_regs(&regs).context("emulating a popf")
}

/// Whether `stop` is the SIGTRAP of a completed single step (kernel-sent, not a `kill`).
pub fn is_step_trap(t: &Tracee, stop: Stop) -> Result<bool> {
    if stop != Stop::Signal(libc::SIGTRAP) {
        return Ok(false);
    }
    let (_, code) = crate::tracee::signo_code(&t.siginfo()?);
    Ok(code > 0)
}

/// After stepping a `pushf`: clears the trap flag in the pushed image (at the new rsp).
fn clear_pushed_tf(t: &Tracee, insn: &Instruction) -> Result<()> {
    let rsp = t.regs()?.rsp;
    let size = if insn.mnemonic() == Mnemonic::Pushfq {
        8
    } else {
        2
    };
    let mut b = [0u8; 8];
    t.read_mem(rsp, &mut b[..size])
        .context("reading the flags a stepped pushf pushed")?;
    if u64::from_le_bytes(b) & EFLAGS_TF != 0 {
        let v = u64::from_le_bytes(b) & !EFLAGS_TF;
        t.write_mem(rsp, &v.to_le_bytes()[..size])
            .context("clearing the trap flag a stepped pushf pushed")?;
    }
    Ok(())
}

/// Whether `insn` enters the kernel, traps, or cannot be stepped faithfully.
fn must_not_step(insn: &Instruction) -> bool {
    if insn.is_invalid() || insn.is_privileged() {
        return true;
    }
    if matches!(
        insn.flow_control(),
        FlowControl::Interrupt | FlowControl::Exception | FlowControl::XbeginXabortXend
    ) {
        return true;
    }
    matches!(
        insn.mnemonic(),
        Mnemonic::Syscall
            | Mnemonic::Sysenter
            | Mnemonic::Sysexit
            | Mnemonic::Sysret
            | Mnemonic::Int
            | Mnemonic::Int1
            | Mnemonic::Int3
            | Mnemonic::Into
            | Mnemonic::Iret
            | Mnemonic::Iretd
            | Mnemonic::Iretq
            | Mnemonic::Rdtsc
            | Mnemonic::Rdtscp
            | Mnemonic::Rdpmc
            | Mnemonic::Cpuid
            | Mnemonic::Ud0
            | Mnemonic::Ud1
            | Mnemonic::Ud2
            | Mnemonic::Hlt
            | Mnemonic::In
            | Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Out
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd
            | Mnemonic::Xbegin
            | Mnemonic::Xabort
            | Mnemonic::Xend
            | Mnemonic::Vmcall
            | Mnemonic::Vmmcall
            | Mnemonic::Vmfunc
            | Mnemonic::Encls
            | Mnemonic::Enclu
    )
}

/// The memory `insn` (about to run with `regs`) writes, as pieces of 1, 2, 4 or 8 bytes.
/// Operands whose address cannot be computed (vector-indexed scatters) or size is unknown
/// are left out: the watch is a filter, leaving a word out only makes it less selective.
fn written_by(
    factory: &mut InstructionInfoFactory,
    insn: &Instruction,
    regs: &Regs,
) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    for mem in factory.info(insn).used_memory() {
        if !matches!(
            mem.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            continue;
        }
        let Some(addr) = mem.virtual_address(0, |reg, _, _| register_value(reg, regs)) else {
            continue;
        };
        let size = mem.memory_size().size().min(MAX_OPERAND_BYTES);
        pieces(addr, size, &mut out);
    }
    out
}

/// Splits `[addr, addr + size)` into pieces of 8, then 4, 2 and 1 bytes.
fn pieces(addr: u64, size: usize, out: &mut Vec<(u64, u8)>) {
    let mut off = 0;
    while off < size {
        let rest = size - off;
        let n = [8, 4, 2, 1].into_iter().find(|&n| n <= rest).unwrap_or(1);
        out.push((addr.wrapping_add(off as u64), n as u8));
        off += n;
    }
}

/// The value of a general register (any width) or a segment base, for address computation.
fn register_value(reg: Register, r: &Regs) -> Option<u64> {
    let full = match reg {
        Register::ES | Register::CS | Register::SS | Register::DS => return Some(0),
        Register::FS => return Some(r.fs_base),
        Register::GS => return Some(r.gs_base),
        Register::RIP | Register::EIP => return Some(r.rip),
        _ if reg.is_gpr() => reg.full_register(),
        _ => return None,
    };
    let value = match full {
        Register::RAX => r.rax,
        Register::RCX => r.rcx,
        Register::RDX => r.rdx,
        Register::RBX => r.rbx,
        Register::RSP => r.rsp,
        Register::RBP => r.rbp,
        Register::RSI => r.rsi,
        Register::RDI => r.rdi,
        Register::R8 => r.r8,
        Register::R9 => r.r9,
        Register::R10 => r.r10,
        Register::R11 => r.r11,
        Register::R12 => r.r12,
        Register::R13 => r.r13,
        Register::R14 => r.r14,
        Register::R15 => r.r15,
        _ => return None,
    };
    Some(match reg.size() {
        1 if reg.is_gpr8()
            && matches!(
                reg,
                Register::AH | Register::CH | Register::DH | Register::BH
            ) =>
        {
            (value >> 8) & 0xff
        }
        1 => value & 0xff,
        2 => value & 0xffff,
        4 => value & 0xffff_ffff,
        _ => value,
    })
}

/// The current values of up to `limit` (most recently written first, deduplicated) words.
///
/// A piece whose bytes all lie in pieces already taken is a duplicate; pieces that cannot be
/// read now are left out.
pub fn watch_values(t: &Tracee, written: &[(u64, u8)], limit: usize) -> Vec<WatchedWord> {
    let mut out: Vec<WatchedWord> = Vec::new();
    for &(addr, size) in written.iter().rev() {
        if out.len() >= limit {
            break;
        }
        if size == 0 || size > 8 {
            continue;
        }
        let covered = (0..u64::from(size)).all(|i| {
            let a = addr.wrapping_add(i);
            out.iter()
                .any(|w| a >= w.addr && a - w.addr < u64::from(w.size))
        });
        if covered {
            continue;
        }
        let mut b = [0u8; 8];
        if t.read_mem_partial(addr, &mut b[..usize::from(size)]) != usize::from(size) {
            continue;
        }
        out.push(WatchedWord {
            addr,
            size,
            value: u64::from_le_bytes(b),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Points
// ---------------------------------------------------------------------------------------------

/// The Point `t` is stopped at now.
///
/// `regs` holds the [`comparable`] registers (what a Point compares). Watched words that
/// overlap an `excluded` range are dropped: the kernel may write there at another moment in
/// the replay.
pub fn capture(
    t: &Tracee,
    excluded: Vec<(u64, u64)>,
    watch: Vec<WatchedWord>,
    ticks: u32,
) -> Result<Point> {
    let regs = comparable(&to_words(&t.regs()?));
    let fpregs = t.fp_regs()?.to_bytes();
    let digest = memory_digest(t, &excluded)?;
    let watch = watch
        .into_iter()
        .filter(|w| {
            let end = w.addr.saturating_add(u64::from(w.size));
            !excluded.iter().any(|&(s, e)| w.addr < e && s < end)
        })
        .collect();
    Ok(Point {
        regs,
        fpregs,
        digest,
        excluded,
        watch,
        ticks,
    })
}

/// How the stopped task's state differs from `p` (empty = identical): register names, "FP state",
/// "memory". `extra_excluded` is added to `p.excluded` (the replayer's scratch mapping).
pub fn differences(t: &Tracee, p: &Point, extra_excluded: &[(u64, u64)]) -> Result<Vec<String>> {
    let now = comparable(&to_words(&t.regs()?));
    let want = comparable(&p.regs);
    let mut out: Vec<String> = (0..REGS_WORDS)
        .filter(|&i| now[i] != want[i])
        .map(|i| WORD_NAMES[i].to_string())
        .collect();
    if t.fp_regs()?.to_bytes() != p.fpregs {
        out.push("FP state".into());
    }
    let mut excluded = p.excluded.clone();
    excluded.extend_from_slice(extra_excluded);
    if memory_digest(t, &excluded)? != p.digest {
        out.push("memory".into());
    }
    Ok(out)
}

/// The resume flag: suppresses instruction breakpoints for one instruction.
const EFLAGS_RF: u64 = 1 << 16;

/// Makes a debug exception at the current instruction the stopped task's last trap, without
/// running any instruction: a hardware execution breakpoint on `rip` fires before the instruction
/// executes.
///
/// The kernel copies the number and error code of a thread's last trap into every signal frame
/// it writes later (`sigcontext.trapno`/`err`), also for asynchronous signals. The recorder's
/// single steps and the replayer's breakpoints are different traps, so without this the frames
/// (and the stale copies of them left below the stack pointer, which a point's memory digest
/// covers) would differ between a recording and its replay. Both call this right before
/// delivering an asynchronous signal, so every such frame says "debug exception, error 0".
///
/// Resuming discards a signal the task is stopped to deliver: the caller delivers it afterwards
/// from the returned `SIGTRAP` stop (set its siginfo, resume with it). Returns `None` when done,
/// the task then being in that `SIGTRAP` stop at the same `rip`, or the stop that came instead
/// (another pending signal, the task's death), the task then being in that stop.
pub fn settle_trap(t: &Tracee) -> Result<Option<Stop>> {
    let dr7 = t.debug_reg(7)?;
    // A free slot if there is one; else slot 3, put back afterwards.
    let slot = (0..4).find(|i| (dr7 >> (2 * i)) & 0b11 == 0).unwrap_or(3);
    let saved_addr = t.debug_reg(slot)?;
    let mut r = t.regs()?;
    if r.eflags & EFLAGS_RF != 0 {
        r.eflags &= !EFLAGS_RF;
        t.set_regs(&r)?;
    }
    // Slot `slot`: locally enabled, R/W = 00 (execute), LEN = 00 (one byte).
    let fields = (0b11 << (2 * slot)) | (0b1111 << (16 + 4 * slot));
    t.set_debug_reg(7, dr7 & !fields)?;
    t.set_debug_reg(slot, r.rip)?;
    t.set_debug_reg(7, (dr7 & !fields) | (1 << (2 * slot)))?;
    t.cont(0)?;
    let stop = t.wait();
    if matches!(stop, Ok(s) if s.is_end()) {
        return stop.map(Some);
    }
    t.set_debug_reg(7, dr7 & !fields)?;
    t.set_debug_reg(slot, saved_addr)?;
    t.set_debug_reg(7, dr7)?;
    let stop = stop?;
    let dr6 = t.debug_reg(6)?;
    t.set_debug_reg(6, 0)?;
    let ours =
        stop == Stop::Signal(libc::SIGTRAP) && dr6 & (1 << slot) != 0 && t.regs()?.rip == r.rip;
    Ok(if ours { None } else { Some(stop) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparable_clears_orig_rax_and_masks_flags() {
        let mut w = [7u64; REGS_WORDS];
        w[ORIG_RAX] = 0x3c;
        w[EFLAGS] = 0x346 | EFLAGS_TF | (1 << 16);
        let c = comparable(&w);
        assert_eq!(c[ORIG_RAX], 0);
        // ZF, PF (0x44) and DF (0x400) stay; IF, TF, RF and the reserved bit go.
        assert_eq!(c[EFLAGS], 0x44);
        assert_eq!(c[EFLAGS] & FLAGS_COMPARED, c[EFLAGS]);
        assert_eq!(&c[..ORIG_RAX], &w[..ORIG_RAX]);
        assert_eq!(comparable(&c), c);
        w[EFLAGS] = 0x400 | 0x800 | 0x1 | 0x4 | 0x10 | 0x40 | 0x80;
        assert_eq!(comparable(&w)[EFLAGS], w[EFLAGS]);
    }

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge_ranges(&[(30, 40), (5, 5), (10, 20), (15, 30), (50, 60)]),
            vec![(10, 40), (50, 60)]
        );
    }

    #[test]
    fn pieces_split_by_size() {
        let mut v = Vec::new();
        pieces(0x1000, 8, &mut v);
        pieces(0x2000, 15, &mut v);
        pieces(0x3000, 1, &mut v);
        assert_eq!(
            v,
            vec![
                (0x1000, 8),
                (0x2000, 8),
                (0x2008, 4),
                (0x200c, 2),
                (0x200e, 1),
                (0x3000, 1)
            ]
        );
    }

    fn writes_of(bytes: &[u8], regs: &Regs) -> Vec<(u64, u8)> {
        let insn = Decoder::with_ip(64, bytes, regs.rip, DecoderOptions::NONE).decode();
        written_by(&mut InstructionInfoFactory::new(), &insn, regs)
    }

    fn regs() -> Regs {
        let mut r = crate::regs::from_words(&[0; REGS_WORDS]);
        r.rip = 0x40_0000;
        r.rsp = 0x7fff_0000;
        r.rax = 0x1000;
        r.rbx = 0x2000;
        r.rcx = 3;
        r.fs_base = 0x7000_0000;
        r
    }

    #[test]
    fn writes_of_stores_pushes_and_calls() {
        let r = regs();
        // mov [rax+rcx*8+0x10], rbx
        assert_eq!(
            writes_of(&[0x48, 0x89, 0x5c, 0xc8, 0x10], &r),
            vec![(0x1028, 8)]
        );
        // mov dword [rbx], 1
        assert_eq!(writes_of(&[0xc7, 0x03, 1, 0, 0, 0], &r), vec![(0x2000, 4)]);
        // add [rip+0x100], eax (rip-relative: next ip is rip + 6)
        assert_eq!(
            writes_of(&[0x01, 0x05, 0x00, 0x01, 0, 0], &r),
            vec![(0x40_0106, 4)]
        );
        // mov rax, [rbx]: a read only
        assert!(writes_of(&[0x48, 0x8b, 0x03], &r).is_empty());
        // push rax
        assert_eq!(writes_of(&[0x50], &r), vec![(0x7ffe_fff8, 8)]);
        // call rel32
        assert_eq!(writes_of(&[0xe8, 0, 0, 0, 0], &r), vec![(0x7ffe_fff8, 8)]);
        // mov fs:[0x28], rax
        assert_eq!(
            writes_of(&[0x64, 0x48, 0x89, 0x04, 0x25, 0x28, 0, 0, 0], &r),
            vec![(0x7000_0028, 8)]
        );
        // movups [rax], xmm0: 16 bytes as two words
        assert_eq!(
            writes_of(&[0x0f, 0x11, 0x00], &r),
            vec![(0x1000, 8), (0x1008, 8)]
        );
        // mov byte [eax], 1 (32-bit addressing)
        let mut r32 = r;
        r32.rax = 0xffff_ffff_0000_1234;
        assert_eq!(writes_of(&[0x67, 0xc6, 0x00, 1], &r32), vec![(0x1234, 1)]);
    }

    #[test]
    fn kernel_entries_and_traps_are_not_stepped() {
        let decode = |b: &[u8]| Decoder::with_ip(64, b, 0, DecoderOptions::NONE).decode();
        for bytes in [
            &[0x0f, 0x05][..],         // syscall
            &[0x0f, 0x34],             // sysenter
            &[0xcd, 0x80],             // int 0x80
            &[0xcc],                   // int3
            &[0x0f, 0x31],             // rdtsc
            &[0x0f, 0x01, 0xf9],       // rdtscp
            &[0x0f, 0xa2],             // cpuid
            &[0x0f, 0x0b],             // ud2
            &[0xf4],                   // hlt
            &[0xe4, 0x60],             // in al, 0x60
            &[0xee],                   // out dx, al
            &[0xc7, 0xf8, 0, 0, 0, 0], // xbegin
            &[0x0f],                   // truncated
        ] {
            assert!(must_not_step(&decode(bytes)), "{bytes:x?}");
        }
        for bytes in [
            &[0x90][..],               // nop
            &[0x48, 0x0f, 0xc7, 0xf0], // rdrand rax
            &[0x48, 0x0f, 0xc7, 0xf8], // rdseed rax
            &[0x9c],                   // pushf
            &[0xe8, 0, 0, 0, 0],       // call
            &[0xc3],                   // ret
            &[0xf3, 0xa4],             // rep movsb
        ] {
            assert!(!must_not_step(&decode(bytes)), "{bytes:x?}");
        }
    }

    /// Pages of the sparse region the digest test's child touches (of 16384).
    const TOUCHED: [usize; 4] = [0, 1, 4097, 16383];

    /// Maps a 64 MiB anonymous region, writes one byte in a few of its pages, writes the
    /// region's address into the shared word `out`, and stops.
    fn sparse_child(out: *mut u64) -> ! {
        // SAFETY: in a forked child: only raw system calls and writes to memory it mapped (or
        // the shared word), then _exit.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) < 0 {
                libc::_exit(100);
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                64 << 20,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(101);
            }
            let base = p.cast::<u8>();
            for page in TOUCHED {
                *base.add(page * 4096 + 17) = page as u8 | 1;
            }
            *out = base as u64;
            libc::raise(libc::SIGSTOP);
            libc::_exit(0);
        }
    }

    #[test]
    fn digest_paths_agree() {
        // SAFETY: an anonymous shared page for the child's answer; unmapped below.
        let shared = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(shared, libc::MAP_FAILED);
        let out = shared.cast::<u64>();
        // SAFETY: the child only runs `sparse_child`, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            sparse_child(out);
        }
        let t = Tracee::attach_traced(nix::unistd::Pid::from_raw(pid)).unwrap();
        let result = std::panic::catch_unwind(|| {
            assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGSTOP));
            // SAFETY: the child wrote the word before stopping; the page stays mapped.
            let base = unsafe { out.read_volatile() };
            let digest = |excluded: &[(u64, u64)], scan: bool| {
                let (d, stats) = digest_using(&t, excluded, scan).unwrap();
                // Both ways skip the untouched pages of the region without reading them.
                assert!(
                    stats.skipped_pages >= 16384 - TOUCHED.len() as u64,
                    "{stats:?}"
                );
                d
            };
            let (scanned, stats) = digest_using(&t, &[], true).unwrap();
            if !stats.scanned {
                eprintln!("note: this kernel has no PAGEMAP_SCAN; only pagemap reads were tested");
            }
            assert_eq!(
                scanned,
                digest(&[], false),
                "PAGEMAP_SCAN and pagemap reads disagree"
            );
            // The touched pages count, and only their content.
            let byte = base + 4097 * 4096 + 17;
            let excluded = [(byte, byte + 1)];
            let without = digest(&excluded, true);
            assert_ne!(without, scanned);
            assert_eq!(without, digest(&excluded, false));
            // A page zeroed (resident) is the same as a page never touched.
            t.write_mem(byte, &[0]).unwrap();
            assert_eq!(digest(&[], false), without);
            assert_eq!(digest(&[], true), without);
        });
        t.kill_and_reap();
        // SAFETY: mapped above, no longer used.
        unsafe { libc::munmap(shared, 4096) };
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn register_values_of_every_width() {
        let mut r = regs();
        r.rdx = 0x1122_3344_5566_7788;
        assert_eq!(
            register_value(Register::RDX, &r),
            Some(0x1122_3344_5566_7788)
        );
        assert_eq!(register_value(Register::EDX, &r), Some(0x5566_7788));
        assert_eq!(register_value(Register::DX, &r), Some(0x7788));
        assert_eq!(register_value(Register::DL, &r), Some(0x88));
        assert_eq!(register_value(Register::DH, &r), Some(0x77));
        assert_eq!(register_value(Register::GS, &r), Some(0));
        assert_eq!(register_value(Register::FS, &r), Some(0x7000_0000));
        assert_eq!(register_value(Register::XMM0, &r), None);
    }
}
