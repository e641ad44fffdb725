//! `/proc/PID/maps`, parsed.

use anyhow::{Context, Result};
use nix::unistd::Pid;

/// One mapping of a task's address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions, e.g. `r-xp`.
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// Device as `major:minor`.
    pub dev: String,
    /// Inode of the mapped file, 0 for anonymous memory.
    pub inode: u64,
    /// Path or pseudo-name; empty for anonymous memory.
    pub name: String,
}

impl MapEntry {
    /// Whether this maps a regular file (not anonymous memory nor a `[pseudo]` region).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.name.starts_with('/')
    }
}

/// Parses the text of a maps file.
pub fn parse(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MapEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.to_string();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let dev = it.next()?.to_string();
    let inode = it.next()?.parse().ok()?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-')?;
    Some(MapEntry {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        dev,
        inode,
        name,
    })
}

/// Reads and parses `/proc/PID/maps`.
pub fn read(pid: Pid) -> Result<Vec<MapEntry>> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse(&text))
}

/// Page size.
const PAGE: u64 = 4096;
/// How far a `rel32` may reach, with a margin.
pub const REL32_REACH: u64 = (1 << 31) - (1 << 20);
/// Lowest address a new mapping may take (the usual `vm.mmap_min_addr`).
pub const MIN_ADDR: u64 = 0x10000;
/// The end of the 47-bit user address space.
pub const USER_TOP: u64 = 0x7fff_ffff_f000;

/// The free, page-aligned range of `size` bytes nearest to `rip` with all of it within `rel32`
/// reach of `rip`, a page
/// away from its neighbours and never just below the stack (which grows down).
pub fn gap_near(maps: &[MapEntry], rip: u64, size: u64) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    let mut prev_end = MIN_ADDR;
    let mut consider = |lo: u64, hi: u64| {
        let (lo, hi) = (lo + PAGE, hi.saturating_sub(PAGE));
        if hi < lo + size {
            return;
        }
        let addr = if rip < lo {
            lo
        } else if rip + size > hi {
            hi - size
        } else {
            rip & !(PAGE - 1)
        };
        let dist = rip.abs_diff(addr).max(rip.abs_diff(addr + size));
        if dist < REL32_REACH && best.map_or(true, |(d, _)| dist < d) {
            best = Some((dist, addr));
        }
    };
    for m in maps.iter().filter(|m| m.start < USER_TOP) {
        if m.start > prev_end && m.name != "[stack]" {
            consider(prev_end, m.start);
        }
        prev_end = prev_end.max(m.end);
    }
    if prev_end < USER_TOP {
        consider(prev_end, USER_TOP);
    }
    best.map(|(_, a)| a)
}

/// How much room above the start of a process's heap deja keeps free of its own pages (stubs,
/// a locator's trampoline): `brk` grows the heap there, and a page in the way makes it fail
/// (glibc's `malloc` then falls back to `mmap`). A page deja adds only in replay (a trampoline)
/// would make the replay's `brk` fail where the recording's succeeded.
pub const HEAP_ROOM: u64 = 1 << 30;

/// Where task `pid`'s heap starts (`start_brk`, field 47 of `/proc/PID/stat`).
pub fn heap_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses) start at the
    // state, field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(47 - 3)?.parse().ok()
}

/// [`gap_near`], outside the heap's room: from `heap` (its start, if known) to [`HEAP_ROOM`]
/// past the current end of the heap.
pub fn gap_near_outside_heap(
    maps: &[MapEntry],
    rip: u64,
    size: u64,
    heap: Option<u64>,
) -> Option<u64> {
    let Some(start) = heap.filter(|&h| h > 0) else {
        return gap_near(maps, rip, size);
    };
    let end = maps
        .iter()
        .filter(|m| m.name == "[heap]")
        .map(|m| m.end)
        .max()
        .unwrap_or(start)
        .max(start);
    let mut with_room = maps.to_vec();
    with_room.push(MapEntry {
        start,
        end: end.saturating_add(HEAP_ROOM),
        perms: "---p".into(),
        offset: 0,
        dev: "00:00".into(),
        inode: 0,
        name: "[heap room]".into(),
    });
    with_room.sort_by_key(|m| m.start);
    gap_near(&with_room, rip, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_anonymous_lines() {
        let text = "555555554000-555555556000 r--p 00000000 fe:01 1234 /usr/bin/cat\n\
                    7ffff7fc3000-7ffff7fc7000 r--p 00000000 00:00 0                          [vvar]\n\
                    7ffff7ff0000-7ffff7ff1000 rw-p 00000000 00:00 0 \n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x5555_5555_4000);
        assert_eq!(m[0].name, "/usr/bin/cat");
        assert!(m[0].is_file());
        assert_eq!(m[1].name, "[vvar]");
        assert!(!m[1].is_file());
        assert_eq!(m[2].name, "");
    }
}

/// The mapping of process `pid` that contains `addr`, if any: asked of the kernel for that one
/// address (`PROCMAP_QUERY`, Linux 6.11 and later) where it can answer, which costs a few
/// microseconds where reading the whole map of a large program costs a hundred; from the
/// whole map otherwise.
pub fn entry_at(pid: Pid, addr: u64) -> Result<Option<MapEntry>> {
    match query(pid, addr) {
        Some(answer) => Ok(answer),
        None => Ok(read(pid)?
            .into_iter()
            .find(|m| (m.start..m.end).contains(&addr))),
    }
}

/// `struct procmap_query` (`linux/fs.h`).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `PROCMAP_QUERY`: `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: u64 =
    (3 << 30) | ((std::mem::size_of::<ProcmapQuery>() as u64) << 16) | ((b'f' as u64) << 8) | 17;

/// [`entry_at`] through `PROCMAP_QUERY`: `None` when the kernel cannot answer (too old), else
/// the mapping at `addr` or `Some(None)` when there is none.
fn query(pid: Pid, addr: u64) -> Option<Option<MapEntry>> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/proc/{pid}/maps")).ok()?;
    let mut name = vec![0u8; 4096];
    let mut q = ProcmapQuery {
        size: std::mem::size_of::<ProcmapQuery>() as u64,
        query_addr: addr,
        vma_name_size: name.len() as u32,
        vma_name_addr: name.as_mut_ptr() as u64,
        ..ProcmapQuery::default()
    };
    // SAFETY: `q` is a valid procmap_query of the size it states; the kernel writes at most
    // `vma_name_size` bytes at `vma_name_addr`, which `name` holds.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), PROCMAP_QUERY as _, &mut q) };
    if rc != 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => Some(None),
            _ => None,
        };
    }
    let len = (q.vma_name_size as usize).saturating_sub(1).min(name.len());
    let flag = |bit: u64, c: char| if q.vma_flags & bit != 0 { c } else { '-' };
    Some(Some(MapEntry {
        start: q.vma_start,
        end: q.vma_end,
        perms: [
            flag(1, 'r'),
            flag(2, 'w'),
            flag(4, 'x'),
            if q.vma_flags & 8 != 0 { 's' } else { 'p' },
        ]
        .iter()
        .collect(),
        offset: q.vma_offset,
        dev: format!("{:02x}:{:02x}", q.dev_major, q.dev_minor),
        inode: q.inode,
        name: String::from_utf8_lossy(&name[..len]).into_owned(),
    }))
}

#[cfg(test)]
mod query_tests {
    use super::*;

    /// The kernel's answer for one address is the line of the whole map that holds it.
    #[test]
    fn entry_at_matches_the_whole_map() {
        let pid = Pid::this();
        let maps = read(pid).unwrap();
        let here = entry_at as *const () as u64;
        let stack = &maps as *const _ as u64;
        for addr in [here, stack] {
            let expected = maps
                .iter()
                .find(|m| (m.start..m.end).contains(&addr))
                .cloned();
            let got = entry_at(pid, addr).unwrap();
            assert_eq!(got, expected, "at {addr:#x}");
            if let Some(answer) = query(pid, addr) {
                assert_eq!(answer, expected, "PROCMAP_QUERY at {addr:#x}");
            }
        }
        assert_eq!(entry_at(pid, 8).unwrap(), None);
    }
}
