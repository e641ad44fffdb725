//! Which syscalls the in-process library (the fast path, `../syscallbuf`) may run without a
//! ptrace stop, and how. What they write comes from [`crate::TABLE`] like for every other
//! call; this list only says which calls are safe to buffer:
//!
//! - they never block for long (a buffered call holds the CPU of the serialized schedule
//!   while it runs), or are run as a non-blocking probe that falls back to the traced path;
//! - the recorder keeps no state about them (no descriptors it follows, no mapped files they
//!   change, no output it echoes): recording one is its result and the memory it wrote;
//! - they are emulated in replay (`Replay::Emulate`).

/// How a buffered syscall runs in the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Cannot block: runs as it is (`fstat`, `clock_gettime`, `getpid`, ...).
    Direct,
    /// `read(fd, buf, n)`, run as `preadv2(fd, [{buf, n}], 1, -1, RWF_NOWAIT)`; any error
    /// (`EAGAIN`: it would block) takes the traced path.
    Read,
    /// `pread64(fd, buf, n, off)`, run as `preadv2` at `off` with `RWF_NOWAIT`.
    Pread,
    /// `readv(fd, iov, cnt)`, run as `preadv2(fd, iov, cnt, -1, RWF_NOWAIT)`.
    Readv,
}

/// How syscall `nr` may be buffered: its probe, and for outputs whose length is the result,
/// the argument bounding that result (the buffer's size). `None`: always traced.
pub fn buffered(nr: u64) -> Option<(Probe, Option<usize>)> {
    use Probe::*;
    let how = match nr as i64 {
        libc::SYS_read => (Read, Some(2)),
        libc::SYS_pread64 => (Pread, Some(2)),
        libc::SYS_readv => (Readv, None),
        libc::SYS_getdents64 | libc::SYS_readlink => (Direct, Some(2)),
        libc::SYS_readlinkat => (Direct, Some(3)),
        libc::SYS_getcwd | libc::SYS_getrandom => (Direct, Some(1)),
        libc::SYS_getxattr | libc::SYS_lgetxattr | libc::SYS_fgetxattr => (Direct, Some(3)),
        libc::SYS_listxattr | libc::SYS_llistxattr | libc::SYS_flistxattr => (Direct, Some(2)),
        // Descriptors: the recorder follows which ones alias its stdout/stderr (`dup`,
        // `close`), and does so for buffered ones when it drains them, in order. An `open` of
        // a FIFO may block: the library's call is then interrupted and made on the traced
        // path (see the recorder's README).
        libc::SYS_open
        | libc::SYS_openat
        | libc::SYS_close
        | libc::SYS_dup
        | libc::SYS_dup2
        | libc::SYS_dup3
        | libc::SYS_pipe
        | libc::SYS_pipe2
        | libc::SYS_umask
        | libc::SYS_chdir
        | libc::SYS_fchdir
        | libc::SYS_getpgrp
        | libc::SYS_getpgid
        | libc::SYS_getsid
        | libc::SYS_fsync
        | libc::SYS_fdatasync
        | libc::SYS_fadvise64
        // File system changes the recorder keeps nothing of (the replay does not touch the
        // file system); `truncate`s and writes stay traced (mapped files' copies follow them).
        | libc::SYS_mkdir
        | libc::SYS_mkdirat
        | libc::SYS_unlink
        | libc::SYS_unlinkat
        | libc::SYS_rename
        | libc::SYS_renameat
        | libc::SYS_renameat2
        | libc::SYS_link
        | libc::SYS_symlink
        | libc::SYS_chmod
        | libc::SYS_fchmod
        | libc::SYS_fchmodat
        | libc::SYS_chown
        | libc::SYS_fchown
        | libc::SYS_lchown
        | libc::SYS_fchownat
        | libc::SYS_utimensat
        | libc::SYS_readahead
        | libc::SYS_statfs
        | libc::SYS_fstatfs
        | libc::SYS_getrlimit
        | libc::SYS_getpriority
        | libc::SYS_getitimer
        | libc::SYS_fstat
        | libc::SYS_stat
        | libc::SYS_lstat
        | libc::SYS_newfstatat
        | libc::SYS_statx
        | libc::SYS_lseek
        | libc::SYS_access
        | libc::SYS_faccessat
        | libc::SYS_faccessat2
        | libc::SYS_getpid
        | libc::SYS_getppid
        | libc::SYS_gettid
        | libc::SYS_getuid
        | libc::SYS_geteuid
        | libc::SYS_getgid
        | libc::SYS_getegid
        | libc::SYS_uname
        | libc::SYS_getrusage
        | libc::SYS_times
        | libc::SYS_sysinfo
        | libc::SYS_clock_gettime
        | libc::SYS_clock_getres
        | libc::SYS_gettimeofday
        | libc::SYS_time
        | libc::SYS_getcpu => (Direct, None),
        _ => return None,
    };
    Some(how)
}
