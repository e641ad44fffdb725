//! Which syscalls the in-process library (the fast path, `../syscallbuf`) may run without a
//! ptrace stop, and how. What they write comes from [`crate::TABLE`] like for every other
//! call; this list only says which calls are safe to buffer:
//!
//! - they never block for long (a buffered call holds the CPU of the serialized schedule
//!   while it runs), or are run as a non-blocking probe that falls back to the traced path;
//! - the recorder keeps no state about them (no descriptors it follows, no mapped files they
//!   change, no output it echoes): recording one is its result and the memory it wrote;
//! - they are emulated in replay (`Replay::Emulate`), or they are run in both modes
//!   ([`Probe::Exec`], `Replay::Execute`): the replay makes the same call and checks it returns
//!   the recorded result;
//! - where only some argument values are safe ([`Cond`]), a call whose arguments are not takes
//!   the traced path.

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
    /// Cannot block, and replay runs it for real (`Replay::Execute`): recorded like
    /// [`Probe::Direct`]; in replay the library makes the same call and its result must be
    /// the recorded one (the kernel writes its outputs again).
    Exec,
    /// `mmap` (`Replay::Mmap`) of private anonymous memory, or of a file mapped private (or
    /// shared, not writable, through a read-only descriptor): recorded like
    /// [`Probe::Direct`], a file's only when its version (`fstat`) is one the trace keeps
    /// (the recorder's table in the library, `syscallbuf::abi::FileTable`), else traced; in
    /// replay the library makes the call at the recorded address (`MAP_FIXED_NOREPLACE`, or
    /// the program's `MAP_FIXED`), as the replayer does for a traced `mmap`, a file's through
    /// a descriptor of the trace's copy of it, and its result must be the recorded one.
    Place,
    /// Refused with `ENOSYS` in both modes (`Replay::Deny(ENOSYS)`): the library returns it
    /// without making the call (`rseq`, which every glibc program tries once per thread).
    Enosys,
}

/// What a [`Cond`] requires of its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// Equals the value.
    Eq(u64),
    /// Differs from the value.
    Ne(u64),
    /// Is one of [`Buffered::cases`]' values.
    In,
    /// Points at a 64-bit word with none of these bits set (or is NULL). The library reads
    /// the word once and gives the kernel its copy.
    WordClear(u64),
    /// Recording only: points at a 64-bit signal set none of whose signals is pending for
    /// the thread (or is NULL), so that the call cannot make a pending signal deliverable
    /// inside the library (see `syscallbuf::abi::COND_NOT_PENDING`).
    NotPending,
    /// The argument's bits in `mask` equal `value` (both 32 bits).
    MaskEq {
        /// The bits compared.
        mask: u32,
        /// What they must be.
        value: u32,
    },
}

/// A condition on one argument of a buffered call; a call failing one takes the traced path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// The argument's index (0..=5).
    pub arg: usize,
    /// The test.
    pub test: Test,
    /// Only the low 32 bits count (the kernel's parameter is an `int` or `unsigned int`).
    pub int: bool,
    /// The condition holds whenever this argument is 0.
    pub unless_zero: Option<usize>,
}

/// How a syscall is buffered (see [`buffered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffered {
    /// How the library runs it.
    pub probe: Probe,
    /// For outputs whose length is the result, the argument bounding that result (the
    /// buffer's size).
    pub bound: Option<usize>,
    /// Conditions on the arguments, all required.
    pub conds: &'static [Cond],
    /// The values a [`Test::In`] accepts, each with the bytes the call then writes at the
    /// address in argument [`Buffered::case_out`] (in place of the table's `Custom` output,
    /// which they must not exceed).
    pub cases: &'static [(u64, u64)],
    /// The argument holding the address the cases' bytes are written at.
    pub case_out: Option<usize>,
}

impl Buffered {
    /// Whether a call with `args` passes the conditions that depend on its arguments alone
    /// (those on memory, [`Test::WordClear`] and [`Test::NotPending`], are left to the
    /// library): the recorder patches a site only at a call the library would take.
    pub fn may_take(&self, args: &[u64; 6]) -> bool {
        self.conds.iter().all(|c| {
            let narrow = |v: u64| if c.int { v & 0xffff_ffff } else { v };
            if c.unless_zero.is_some_and(|z| args.get(z) == Some(&0)) {
                return true;
            }
            let Some(&a) = args.get(c.arg) else {
                return false;
            };
            match c.test {
                Test::Eq(v) => narrow(a) == narrow(v),
                Test::MaskEq { mask, value } => a as u32 & mask == value,
                Test::Ne(v) => narrow(a) != narrow(v),
                Test::In => self.cases.iter().any(|&(v, _)| narrow(v) == narrow(a)),
                Test::WordClear(_) | Test::NotPending => true,
            }
        })
    }
}

const fn cond(arg: usize, test: Test, int: bool) -> Cond {
    Cond {
        arg,
        test,
        int,
        unless_zero: None,
    }
}

/// The `SIGSEGV` bit of a signal set.
const SEGV_BIT: u64 = 1 << (libc::SIGSEGV - 1);

/// `rt_sigaction` of any signal but `SIGSEGV`, whose action the recorder and replayer follow
/// (`tracee::forced_segv`).
const SIGACTION: &[Cond] = &[cond(0, Test::Ne(libc::SIGSEGV as u64), true)];

/// `rt_sigprocmask` that cannot change whether `SIGSEGV` is blocked (which both sides follow,
/// `tracee::segv_mask`): a query (`set` NULL), or `SIG_BLOCK`/`SIG_UNBLOCK` of a set without
/// `SIGSEGV` (read once by the library, which gives the kernel its copy), of the kernel's
/// set size; and, when recording, naming no pending signal (an unblock that makes one
/// deliverable is traced: the signal then arrives at a syscall's exit, not inside the
/// library, which the recorder would have to step the task out of first).
const SIGPROCMASK: &[Cond] = &[
    Cond {
        arg: 0,
        test: Test::In,
        int: true,
        unless_zero: Some(1),
    },
    cond(1, Test::WordClear(SEGV_BIT), false),
    cond(3, Test::Eq(8), false),
    cond(1, Test::NotPending, false),
];
const SIGPROCMASK_HOW: &[(u64, u64)] =
    &[(libc::SIG_BLOCK as u64, 0), (libc::SIG_UNBLOCK as u64, 0)];

/// `mmap` of the mapping types (the low four bits) up to 3 (`MAP_SHARED`, `MAP_PRIVATE`,
/// `MAP_SHARED_VALIDATE`): of these the library takes private anonymous memory, and files
/// the trace keeps mapped private or shared read-only (see [`Probe::Place`]), nothing shared
/// across lanes; the rest it leaves to the traced path.
const MAPPINGS: &[Cond] = &[cond(
    3,
    Test::MaskEq {
        mask: 0xc,
        value: 0,
    },
    true,
)];

/// `arch_prctl(ARCH_SET_FS)`: the thread pointer of the C library's start-up. Not `ARCH_SET_GS`
/// (the library's slot is the `gs` base) nor the CPUID and CET requests.
const SET_FS: &[Cond] = &[cond(0, Test::Eq(ARCH_SET_FS), true)];

/// `arch_prctl`'s `ARCH_SET_FS` (`asm/prctl.h`).
const ARCH_SET_FS: u64 = 0x1002;

/// `futex` operations that only wake (nothing written, never blocking): `FUTEX_WAKE`, private
/// or not.
const FUTEX_WAKES: &[(u64, u64)] = &[
    (libc::FUTEX_WAKE as u64, 0),
    ((libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as u64, 0),
];

/// `prlimit64` as a query only (a new limit is `Replay::SetLimit`'s business).
const PRLIMIT_QUERY: &[Cond] = &[cond(2, Test::Eq(0), false)];

/// A command (`fcntl`) or request (`ioctl`) among the cases.
const CMD_IN_CASES: &[Cond] = &[cond(1, Test::In, true)];

/// `fcntl` commands that write nothing and never block. Not `F_DUPFD*` (the recorder follows
/// descriptors that alias its stdout/stderr through them), not the lock commands (they block).
const FCNTL_CMDS: &[(u64, u64)] = &[
    (libc::F_GETFD as u64, 0),
    (libc::F_SETFD as u64, 0),
    (libc::F_GETFL as u64, 0),
    (libc::F_SETFL as u64, 0),
];

/// Size of the kernel's `struct termios` (`TCGETS` writes this, not glibc's larger one).
const KERNEL_TERMIOS: u64 = 36;

/// `ioctl` requests that only read a terminal's state.
const IOCTL_REQUESTS: &[(u64, u64)] = &[
    (libc::TCGETS, KERNEL_TERMIOS),
    (libc::TIOCGWINSZ, crate::size::WINSIZE),
];

/// How syscall `nr` may be buffered. `None`: always traced.
pub fn buffered(nr: u64) -> Option<Buffered> {
    use Probe::*;
    let plain = |probe, bound| Buffered {
        probe,
        bound,
        conds: &[],
        cases: &[],
        case_out: None,
    };
    let how = match nr as i64 {
        // Run in both modes: the recorder and the replayer keep no state from them (the
        // replayer's emulated files, patched sites and stub pages do not follow `munmap` or
        // `mprotect`; signal delivery reads the kernel's own state), but for `SIGSEGV`'s
        // action and mask, which the conditions leave to the traced path.
        libc::SYS_mprotect | libc::SYS_munmap | libc::SYS_brk => plain(Exec, None),
        // The C library's start-up in every process and thread: run in both modes; the
        // replayer reads the robust list from the kernel when a task dies.
        libc::SYS_set_robust_list => plain(Exec, None),
        libc::SYS_arch_prctl => Buffered {
            conds: SET_FS,
            ..plain(Exec, None)
        },
        libc::SYS_rseq => plain(Enosys, None),
        // A wake returns how many it woke, recorded; in replay the waiters' calls return what
        // they returned (emulated), whoever woke them.
        libc::SYS_futex => Buffered {
            conds: CMD_IN_CASES,
            cases: FUTEX_WAKES,
            case_out: Some(0),
            ..plain(Direct, None)
        },
        // Private memory and files the trace keeps, placed in replay where the recording's
        // call put them.
        libc::SYS_mmap => Buffered {
            conds: MAPPINGS,
            ..plain(Place, None)
        },
        libc::SYS_rt_sigaction => Buffered {
            conds: SIGACTION,
            ..plain(Exec, None)
        },
        libc::SYS_rt_sigprocmask => Buffered {
            conds: SIGPROCMASK,
            cases: SIGPROCMASK_HOW,
            ..plain(Exec, None)
        },
        libc::SYS_prlimit64 => Buffered {
            conds: PRLIMIT_QUERY,
            ..plain(Direct, None)
        },
        libc::SYS_fcntl => Buffered {
            conds: CMD_IN_CASES,
            cases: FCNTL_CMDS,
            ..plain(Direct, None)
        },
        libc::SYS_ioctl => Buffered {
            conds: CMD_IN_CASES,
            cases: IOCTL_REQUESTS,
            case_out: Some(2),
            ..plain(Direct, None)
        },
        libc::SYS_read => plain(Read, Some(2)),
        libc::SYS_pread64 => plain(Pread, Some(2)),
        libc::SYS_readv => plain(Readv, None),
        libc::SYS_getdents64 | libc::SYS_readlink => plain(Direct, Some(2)),
        libc::SYS_readlinkat => plain(Direct, Some(3)),
        libc::SYS_getcwd | libc::SYS_getrandom => plain(Direct, Some(1)),
        libc::SYS_getxattr | libc::SYS_lgetxattr | libc::SYS_fgetxattr => plain(Direct, Some(3)),
        libc::SYS_listxattr | libc::SYS_llistxattr | libc::SYS_flistxattr => {
            plain(Direct, Some(2))
        }
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
        | libc::SYS_getcpu => plain(Direct, None),
        _ => return None,
    };
    Some(how)
}
