//! The files a buffered `mmap` maps (`PROBE_PLACE`): recording, the version the descriptor
//! names checked against the table deja wrote ([`deja_files`]); replaying, the library's own
//! descriptor of the replay's copy ([`deja_replay_files`]).

use core::ptr::{addr_of, addr_of_mut};

use crate::abi::*;
use crate::deja_untraced_syscall;

const MAP_ANONYMOUS: u64 = 0x20;
/// The mapping type bits of `mmap`'s flags, and two of its values.
const MAP_TYPE: u64 = 0xf;
const MAP_SHARED: u64 = 0x1;
const MAP_PRIVATE: u64 = 0x2;
const PROT_WRITE: u64 = 0x2;
const SYS_FCNTL: u64 = 72;
const F_GETFL: u64 = 3;
const O_ACCMODE: i64 = 0o3;
const O_RDONLY: i64 = 0;
const SYS_FSTAT: u64 = 5;
const SYS_OPENAT: u64 = 257;
const AT_FDCWD: u64 = -100i64 as u64;
const O_RDONLY_CLOEXEC: u64 = 0o2_000_000;
const S_IFMT: u64 = 0o170_000;
const S_IFREG: u64 = 0o100_000;

/// Recording: the file versions a buffered `mmap` may map, written by deja at load time.
#[no_mangle]
pub static mut deja_files: FileTable = FileTable {
    count: 0,
    keys: [FileKey {
        dev: 0,
        ino: 0,
        size: 0,
        mtime: 0,
        mtime_nsec: 0,
    }; MAX_FILES],
};

/// Replaying: the trace's copies of those files (paths written by deja, descriptors opened
/// here).
#[no_mangle]
pub static mut deja_replay_files: ReplayFiles = [ReplayFile {
    fd: 0,
    path: [0; REPLAY_PATH_SIZE],
}; MAX_FILES];

/// What an `mmap(args)` the library may make maps: `Some(0)` for private anonymous memory,
/// `Some(1 + i)` for file `i` of [`deja_files`], mapped private, or shared but neither
/// writable nor through a descriptor that could make it so (`gconv-modules.cache`); `None`
/// for anything else (the traced path).
pub unsafe fn mapped_file(args: &[u64; 6]) -> Option<u32> {
    let kind = args[3] & MAP_TYPE;
    if args[3] & MAP_ANONYMOUS != 0 {
        return (kind == MAP_PRIVATE).then_some(0);
    }
    if kind == MAP_SHARED {
        let mode = deja_untraced_syscall(SYS_FCNTL, args[4], F_GETFL, 0, 0, 0, 0);
        if args[2] & PROT_WRITE != 0 || mode < 0 || mode & O_ACCMODE != O_RDONLY {
            return None;
        }
    } else if kind != MAP_PRIVATE {
        return None;
    }
    Some(known_file(args[4])? + 1)
}

/// The index in [`deja_files`] of the file version descriptor `fd` names (`fstat`), if it is
/// there and a regular file.
unsafe fn known_file(fd: u64) -> Option<u32> {
    // `struct stat`: st_dev at 0, st_ino 8, st_mode 24, st_size 48, st_mtime 88,
    // st_mtime_nsec 96 (144 bytes).
    let mut st = [0u64; 18];
    if deja_untraced_syscall(SYS_FSTAT, fd, st.as_mut_ptr() as u64, 0, 0, 0, 0) != 0 {
        return None;
    }
    if st[3] & S_IFMT != S_IFREG {
        return None;
    }
    // SAFETY: deja writes the table before the program runs; nothing writes it after.
    let table = &*addr_of!(deja_files);
    let n = (table.count as usize).min(MAX_FILES);
    let i = table.keys[..n].iter().position(|k| {
        k.dev == st[0]
            && k.ino == st[1]
            && k.size == st[6]
            && k.mtime == st[11] as i64
            && k.mtime_nsec == st[12] as i64
    })?;
    Some(i as u32)
}

/// Replaying: the descriptor of the trace's copy of file `i` of [`deja_replay_files`], opened
/// at its first use in the process (and kept: a forked child inherits it with the table).
pub unsafe fn replay_fd(i: u32) -> Option<u64> {
    let i = i as usize;
    if i >= MAX_FILES {
        return None;
    }
    // SAFETY: this thread holds the hook (`locked`); the entry is the process's own memory.
    let entry = &mut (*addr_of_mut!(deja_replay_files))[i];
    if entry.fd != 0 {
        return Some(entry.fd - 1);
    }
    // A path, NUL-terminated within the entry (a byte loop: `contains` would link core's
    // `memchr`, built with unwinding).
    let mut terminated = false;
    for &b in entry.path.iter() {
        if b == 0 {
            terminated = true;
            break;
        }
    }
    if entry.path[0] == 0 || !terminated {
        return None;
    }
    let fd = deja_untraced_syscall(
        SYS_OPENAT,
        AT_FDCWD,
        entry.path.as_ptr() as u64,
        O_RDONLY_CLOEXEC,
        0,
        0,
        0,
    );
    if fd < 0 {
        return None;
    }
    entry.fd = fd as u64 + 1;
    Some(fd as u64)
}

