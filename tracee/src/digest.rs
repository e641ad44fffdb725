//! The memory digest of a point: a hash of every writable page of a stopped task's process,
//! but for ranges left out, reading only the pages that can hold data (see [`memory_digest`]).

use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::tracee::Tracee;

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
        pages: pages_file(pid),
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

/// A new file for the page list of a digest of `pid`, if [`PAGES_ENV`] asks for one.
fn pages_file(pid: Pid) -> Option<std::io::BufWriter<File>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::var_os(PAGES_ENV)?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::path::Path::new(&dir).join(format!("{pid}-{n}.pages"));
    File::create(path).ok().map(std::io::BufWriter::new)
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
    /// Where to list every page's address and hash ([`PAGES_ENV`]), for finding which memory
    /// differs between two digests.
    pages: Option<std::io::BufWriter<File>>,
}

/// Set to a directory, makes every digest list its pages (address and hash, after the
/// excluded bytes are zeroed) in a file of its own there, `<pid>-<n>.pages`: diffing the
/// lists of a recording's point and of a replay's near miss shows which memory differs.
pub const PAGES_ENV: &str = "DEJA_DIGEST_PAGES";

/// Set (to anything) with [`PAGES_ENV`], the lists hold every page's bytes too, in hex.
pub const BYTES_ENV: &str = "DEJA_DIGEST_BYTES";

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
            if let Some(out) = &mut self.pages {
                use std::io::Write;
                let h = blake3::hash(bytes);
                let _ = writeln!(out, "{page_addr:#x} {}", &h.to_hex()[..16]);
                if std::env::var_os(BYTES_ENV).is_some() {
                    for (k, line) in bytes.chunks(32).enumerate() {
                        let hex: String = line.iter().map(|b| format!("{b:02x}")).collect();
                        let _ = writeln!(out, "  {:#x} {hex}", page_addr + 32 * k as u64);
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stop::Stop;

    /// Pages of the sparse region the digest test's child touches (of 16384).
    const TOUCHED: [usize; 4] = [0, 1, 4097, 16383];

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge_ranges(&[(30, 40), (5, 5), (10, 20), (15, 30), (50, 60)]),
            vec![(10, 40), (50, 60)]
        );
    }

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
}
