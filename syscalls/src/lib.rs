//! deja's single declarative table of x86-64 Linux system calls.
//!
//! Every system call has one [`Syscall`] entry in [`TABLE`] saying how it is
//! replayed ([`Replay`]) and which tracee memory the kernel may write
//! ([`Out`]). The recorder calls [`out_regions`] at the syscall-exit stop to
//! learn which bytes to save; the replayer consults [`Syscall::replay`].
//! Adding a system call means adding one line to [`TABLE`] (see README.md).
//!
//! Everything here is pure: tracee memory is only read through [`Memory`].

#![warn(missing_docs)]

use std::borrow::Cow;

mod buffered;
mod clone;
mod ioctl;
mod table;
mod written;

pub use buffered::{buffered, Buffered, Cond, Probe, Test};
pub use clone::{clone_args, CloneArgs};
pub use ioctl::{ioctl_model, IoctlModel};
pub use table::TABLE;
pub use written::{writes_to_fd, written_bytes};

/// Syscalls that send a signal to another task (`kill`, `tkill`, `tgkill`, `rt_sigqueueinfo`,
/// `rt_tgsigqueueinfo`, `pidfd_send_signal`). The recorder runs them while no other task runs,
/// so the signal reaches its target at a syscall boundary, where replay can deliver it again.
pub fn sends_signal(nr: u64) -> bool {
    matches!(
        nr as i64,
        libc::SYS_kill
            | libc::SYS_tkill
            | libc::SYS_tgkill
            | libc::SYS_rt_sigqueueinfo
            | libc::SYS_rt_tgsigqueueinfo
            | libc::SYS_pidfd_send_signal
    )
}

/// The command bits of a futex operation (without `FUTEX_PRIVATE_FLAG`, `FUTEX_CLOCK_REALTIME`).
const FUTEX_CMD_MASK: u64 = !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) as u64;

/// Emulated syscalls the recorder runs while no other task runs: those that send a signal
/// (see [`sends_signal`]), and the futex operations that never block (wakes, requeues, the PI
/// unlock and trylock). The others may block, so other tasks run meanwhile, and their memory
/// writes are replayed at their event: a write another task could read before that event
/// would replay wrongly (`FUTEX_WAKE_OP` sets `*uaddr2` and wakes a waiter that reads it at
/// once). And a call that cannot block does not give up the CPU natively either: a thread
/// that unlocks a mutex (a `FUTEX_WAKE`) goes on running; handing the CPU to another task there
/// is an interleaving a program pinned to one CPU never sees (rr's `sched_yield`).
pub fn runs_exclusively(nr: u64, args: &[u64; 6]) -> bool {
    sends_signal(nr)
        || nr == 454 // futex_wake (not in libc yet)
        || (nr == libc::SYS_futex as u64
            && matches!(
                (args[1] & FUTEX_CMD_MASK) as i32,
                libc::FUTEX_WAKE
                    | libc::FUTEX_REQUEUE
                    | libc::FUTEX_CMP_REQUEUE
                    | libc::FUTEX_WAKE_OP
                    | libc::FUTEX_UNLOCK_PI
                    | libc::FUTEX_TRYLOCK_PI
                    | libc::FUTEX_WAKE_BITSET
                    | libc::FUTEX_CMP_REQUEUE_PI
            ))
}

/// How a system call is handled in replay (and, for `Deny`/`Unsupported`, in recording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Skipped in replay; the recorded result and memory writes are injected.
    Emulate,
    /// Runs for real in replay with the same arguments; its result must equal the recorded one.
    Execute,
    /// `mmap`, `shmat`, `shmdt`: make or remove a mapping for real in replay, at the recorded
    /// address (file mappings and System V segments come from the replay's copies of them).
    Mmap,
    /// `exit` / `exit_group`: ends the thread or process.
    Exit,
    /// Runs for real in replay (for its effect on kernel state) but returns the recorded value,
    /// a task id that differs in replay (`set_tid_address`).
    ExecuteRecordedResult,
    /// `setrlimit`, `prlimit64`: a new limit of the calling process runs for real in replay (a
    /// stack or address-space limit decides where the program faults, which replay
    /// reproduces by executing); the result and the old limit written are the recorded ones
    /// (the replaying machine's limits may differ). A call that only reads, or that sets the
    /// limit of another process, is emulated.
    SetLimit,
    /// `clone`, `fork`, `vfork`, `clone3`: runs for real in replay and makes a new task; the
    /// recorded task ids replace the replay's in the result and in the memory the kernel wrote
    /// (see [`clone_args`]). A failed call is emulated.
    Clone,
    /// `execve`: a successful one replaces the program image (recorded as an exec event and
    /// replayed by exec'ing the trace's copy of the new executable); a failed one is emulated.
    Exec,
    /// Refused with this errno in recording and replay (the program sees e.g. `ENOSYS`); the recorder warns once.
    Deny(i32),
    /// Recording stops with the error "`<name>` is not supported yet: `<reason>`".
    Unsupported(&'static str),
}

/// How many bytes an [`Out`] covers, computed from the arguments and result at the exit stop.
///
/// Argument indices are `0..=5` (rdi, rsi, rdx, r10, r8, r9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// A constant number of bytes (a struct size).
    Fixed(u64),
    /// The (non-negative) result.
    Ret,
    /// The result times a record size.
    RetTimes(u64),
    /// The result plus a constant (e.g. `msgrcv`: `mtype` + text).
    RetPlus(u64),
    /// The value of an argument.
    Arg(usize),
    /// An argument times a record size.
    ArgTimes(usize, u64),
    /// `min(argument, result)`: the kernel reports a needed size but copies at most the buffer size.
    MinArgRet(usize),
    /// `min(argument, result)` times a record size.
    MinArgRetTimes(usize, u64),
    /// A bitmap of `argument` bits stored in 64-bit words: `ceil(arg / 64) * 8` (fd_set, nodemask).
    ArgBits(usize),
    /// Pages covered by an argument length: `ceil(arg / 4096)` (`mincore`).
    ArgPages(usize),
    /// The `u32` stored (at the exit stop) at the address in an argument, e.g. `*optlen`.
    DerefU32(usize),
}

/// Computes extra regions for calls whose outputs depend on a request code or on memory.
pub type CustomFn = fn(&Call, &dyn Memory, &mut Vec<Region>);

/// One memory range, or family of ranges, the kernel may write during a system call.
///
/// `ptr`-like fields are argument indices holding tracee addresses.
#[derive(Debug, Clone, Copy)]
pub enum Out {
    /// A plain buffer at the address in argument `ptr`.
    Buf {
        /// Argument holding the buffer address.
        ptr: usize,
        /// Size of the buffer written.
        len: Len,
    },
    /// A sockaddr out-parameter with an in/out `socklen_t*`: covers `*len_ptr` (4 bytes) and the
    /// address bytes (at most 128, `sizeof(struct sockaddr_storage)`).
    SockAddr {
        /// Argument holding the sockaddr address.
        addr: usize,
        /// Argument holding the `socklen_t*`.
        len_ptr: usize,
    },
    /// Data scattered into an iovec array, filling the iovecs in order.
    Iov {
        /// Argument holding the `struct iovec*`.
        iov: usize,
        /// Argument holding the iovec count.
        cnt: usize,
        /// Total number of bytes scattered.
        len: Len,
    },
    /// `recvmsg`: the msghdr itself, its name, iov data (result bytes) and control buffer.
    Msghdr {
        /// Argument holding the `struct msghdr*`.
        msg: usize,
    },
    /// `recvmmsg`: `result` mmsghdr entries, each with name, iov data (`msg_len` bytes) and control.
    Mmsghdr {
        /// Argument holding the `struct mmsghdr*` vector.
        vec: usize,
    },
    /// Regions computed by a function (ioctl requests, fcntl commands, futex ops, ...).
    Custom(CustomFn),
}

/// One entry of the system call table.
#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    /// x86-64 system call number.
    pub nr: u64,
    /// Kernel name, e.g. `"read"`.
    pub name: &'static str,
    /// How the call is recorded and replayed.
    pub replay: Replay,
    /// Memory the kernel may write.
    pub outs: &'static [Out],
    /// Whether `outs` are written even when the call fails (e.g. `nanosleep`'s `rem` on `EINTR`).
    pub outs_on_error: bool,
}

impl Syscall {
    /// The recording error for an [`Replay::Unsupported`] call: "`<name>` is not supported yet: `<reason>`".
    pub fn unsupported_message(&self) -> Option<String> {
        match self.replay {
            Replay::Unsupported(reason) => {
                Some(format!("{} is not supported yet: {}", self.name, reason))
            }
            _ => None,
        }
    }
}

/// Whether a raw syscall return value is an error (`-4095..=-1`, a negative errno).
pub fn is_error(result: i64) -> bool {
    (-4095..0).contains(&result)
}

/// A system call as seen at its exit stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// System call number (`orig_rax`).
    pub nr: u64,
    /// Arguments (rdi, rsi, rdx, r10, r8, r9).
    pub args: [u64; 6],
    /// Result (`rax`); negative values are `-errno`.
    pub result: i64,
}

impl Call {
    /// Argument `i`, or 0 when `i` is out of range.
    pub fn arg(&self, i: usize) -> u64 {
        self.args.get(i).copied().unwrap_or(0)
    }

    /// The result as a byte or record count (0 when the call failed).
    pub fn ret(&self) -> u64 {
        self.result.max(0) as u64
    }
}

/// A range of tracee memory the kernel may have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Start address.
    pub addr: u64,
    /// Length in bytes (never 0 in [`out_regions`] output).
    pub len: u64,
}

/// Read access to tracee memory at the exit stop.
pub trait Memory {
    /// Fills `buf` from tracee address `addr`; false if any byte is unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

/// Regions longer than this are clamped (garbage lengths on error paths).
pub const MAX_REGION_LEN: u64 = 1 << 30;

/// Highest user-space address + 1 on x86-64 (with 5-level paging); regions are clipped to it.
const USER_END: u64 = 1 << 56;

/// Most iovecs / mmsghdrs the kernel accepts in one call (`UIO_MAXIOV`).
const MAX_VEC: u64 = 1024;

/// Struct sizes on x86-64 (checked against `libc` in the tests).
pub(crate) mod size {
    pub const STAT: u64 = 144;
    pub const STATX: u64 = 256;
    pub const STATFS: u64 = 120;
    pub const UTSNAME: u64 = 390;
    pub const SYSINFO: u64 = 112;
    pub const RUSAGE: u64 = 144;
    pub const TMS: u64 = 32;
    pub const TIMESPEC: u64 = 16;
    pub const TIMEVAL: u64 = 16;
    pub const TIMEZONE: u64 = 8;
    pub const ITIMERSPEC: u64 = 32;
    pub const ITIMERVAL: u64 = 32;
    pub const RLIMIT: u64 = 16;
    pub const SIGINFO: u64 = 128;
    pub const EPOLL_EVENT: u64 = 12;
    pub const POLLFD: u64 = 8;
    pub const MSGHDR: u64 = 56;
    pub const MMSGHDR: u64 = 64;
    pub const IOVEC: u64 = 16;
    pub const SOCKADDR_STORAGE: u64 = 128;
    /// Kernel `struct sigaction` (handler, flags, restorer, 8-byte mask).
    pub const KERNEL_SIGACTION: u64 = 32;
    /// Kernel `sigset_t`.
    pub const KERNEL_SIGSET: u64 = 8;
    pub const STACK_T: u64 = 24;
    pub const TIMEX: u64 = 208;
    pub const WINSIZE: u64 = 8;
    /// glibc `struct termios` (the kernel's is 36; cover the larger one).
    pub const TERMIOS: u64 = 60;
    pub const TERMIOS2: u64 = 44;
    pub const FLOCK: u64 = 32;
    pub const F_OWNER_EX: u64 = 8;
    /// Two `struct __user_cap_data_struct` (version 2/3).
    pub const CAP_DATA: u64 = 24;
    pub const CAP_HEADER: u64 = 8;
    pub const SCHED_PARAM: u64 = 4;
    pub const MQ_ATTR: u64 = 64;
    pub const MSQID_DS: u64 = 120;
    pub const MSGINFO: u64 = 32;
    pub const SEMID_DS: u64 = 104;
    pub const SHMID_DS: u64 = 112;
    pub const SHMINFO: u64 = 72;
    pub const SHM_INFO: u64 = 48;
    pub const SEMINFO: u64 = 40;
    pub const USTAT: u64 = 32;
    pub const USER_DESC: u64 = 16;
    pub const IFREQ: u64 = 40;
    pub const IFCONF: u64 = 16;
    pub const CACHESTAT: u64 = 40;
}

/// The table entry for `nr`, if it is a known x86-64 system call.
pub fn lookup(nr: u64) -> Option<&'static Syscall> {
    TABLE
        .binary_search_by_key(&nr, |s| s.nr)
        .ok()
        .and_then(|i| TABLE.get(i))
}

/// `prctl` options the recorder emulates: `PR_GET_TSC`, `PR_SET_TSC` (deja keeps `rdtsc`
/// trapping for itself, so the program's own setting lives in the recorder) and
/// `PR_GET_SECCOMP` (which must not count deja's own seccomp filter).
pub const EMULATED_PRCTL: [u64; 3] = [
    libc::PR_GET_TSC as u64,
    libc::PR_SET_TSC as u64,
    libc::PR_GET_SECCOMP as u64,
];

/// `prctl` options the recorder runs but replay emulates (injecting the recorded answer):
/// `PR_GET_NAME` (a replayed `execve` runs the trace's copy of the program, whose file name
/// may differ) and the capability options (the replay does not run with the recording's
/// credentials or user namespace, and capabilities only matter to syscalls, which replay
/// emulates).
const PRCTL_REPLAYED_BY_RESULT: [i32; 8] = [
    libc::PR_GET_NAME,
    libc::PR_CAPBSET_READ,
    libc::PR_CAPBSET_DROP,
    libc::PR_CAP_AMBIENT,
    libc::PR_GET_KEEPCAPS,
    libc::PR_SET_KEEPCAPS,
    libc::PR_GET_SECUREBITS,
    libc::PR_SET_SECUREBITS,
];

/// How the call `nr(args)` is replayed: the table's entry, except for the `prctl` options the
/// recorder emulates ([`EMULATED_PRCTL`]) or replay emulates (`PR_GET_NAME`, capabilities).
pub fn replay_of(nr: u64, args: &[u64; 6]) -> Option<Replay> {
    if nr == libc::SYS_prctl as u64
        && (EMULATED_PRCTL.contains(&args[0])
            || PRCTL_REPLAYED_BY_RESULT.contains(&(args[0] as i32)))
    {
        return Some(Replay::Emulate);
    }
    lookup(nr).map(|s| s.replay)
}

/// The name of system call `nr`, or `"syscall_<nr>"` when unknown.
pub fn name(nr: u64) -> Cow<'static, str> {
    match lookup(nr) {
        Some(s) => Cow::Borrowed(s.name),
        None => Cow::Owned(format!("syscall_{nr}")),
    }
}

/// The table entry named `name` (kernel name, e.g. `"newfstatat"`).
pub fn by_name(name: &str) -> Option<&'static Syscall> {
    TABLE.iter().find(|s| s.name == name)
}

/// The tracee memory ranges the kernel may have written during `call`, to save at its exit stop.
///
/// Empty for unknown calls and for failed calls (result < 0) unless the entry sets
/// `outs_on_error`. Null addresses and zero lengths are skipped; lengths are clamped to
/// [`MAX_REGION_LEN`]. Ranges may over-approximate (bytes the kernel did not write are the
/// program's own and identical in replay). When a failed call still reports regions, some may be
/// unreadable (the call may have failed with `EFAULT`): the recorder should skip those.
pub fn out_regions(call: &Call, mem: &dyn Memory) -> Vec<Region> {
    let mut out = Vec::new();
    let Some(sys) = lookup(call.nr) else {
        return out;
    };
    if call.result < 0 && !sys.outs_on_error {
        return out;
    }
    for o in sys.outs {
        match *o {
            Out::Buf { ptr, len } => push(&mut out, call.arg(ptr), eval_len(call, mem, len)),
            Out::SockAddr { addr, len_ptr } => {
                sockaddr(mem, call.arg(addr), call.arg(len_ptr), &mut out)
            }
            Out::Iov { iov, cnt, len } => scatter(
                mem,
                call.arg(iov),
                call.arg(cnt),
                eval_len(call, mem, len),
                &mut out,
            ),
            Out::Msghdr { msg } => msghdr(mem, call.arg(msg), call.ret(), &mut out),
            Out::Mmsghdr { vec } => {
                let base = call.arg(vec);
                for i in 0..call.ret().min(MAX_VEC) {
                    let m = base.wrapping_add(i * size::MMSGHDR);
                    push(&mut out, m, size::MMSGHDR);
                    let msg_len = mem.read_u32(m.wrapping_add(size::MSGHDR)).unwrap_or(0);
                    msghdr(mem, m, u64::from(msg_len), &mut out);
                }
            }
            Out::Custom(f) => f(call, mem, &mut out),
        }
    }
    out.retain(|r| r.addr != 0 && r.len != 0);
    out
}

/// Whether `request` is an ioctl whose memory effects the table knows (see [`ioctl_model`]
/// for what becomes of the others).
pub fn ioctl_known(request: u64) -> bool {
    ioctl_model(request) == IoctlModel::Known
}

/// Evaluates `len` for `call` (see [`Len`]).
fn eval_len(call: &Call, mem: &dyn Memory, len: Len) -> u64 {
    let ret = call.ret();
    match len {
        Len::Fixed(n) => n,
        Len::Ret => ret,
        Len::RetTimes(n) => ret.saturating_mul(n),
        Len::RetPlus(n) => {
            if call.result < 0 {
                0
            } else {
                ret.saturating_add(n)
            }
        }
        Len::Arg(i) => call.arg(i),
        Len::ArgTimes(i, n) => call.arg(i).saturating_mul(n),
        Len::MinArgRet(i) => call.arg(i).min(ret),
        Len::MinArgRetTimes(i, n) => call.arg(i).min(ret).saturating_mul(n),
        Len::ArgBits(i) => call.arg(i).div_ceil(64).saturating_mul(8),
        Len::ArgPages(i) => call.arg(i).div_ceil(4096),
        Len::DerefU32(i) => {
            let p = call.arg(i);
            if p == 0 {
                0
            } else {
                mem.read_u32(p).map_or(0, u64::from)
            }
        }
    }
}

/// Pushes `[addr, addr+len)` clipped to user space and [`MAX_REGION_LEN`]; skips empty or null.
pub(crate) fn push(out: &mut Vec<Region>, addr: u64, len: u64) {
    if addr == 0 || len == 0 || addr >= USER_END {
        return;
    }
    let len = len.min(MAX_REGION_LEN).min(USER_END - addr);
    out.push(Region { addr, len });
}

/// A sockaddr with its in/out `socklen_t*` (see [`Out::SockAddr`]).
fn sockaddr(mem: &dyn Memory, addr: u64, len_ptr: u64, out: &mut Vec<Region>) {
    if len_ptr == 0 {
        return;
    }
    push(out, len_ptr, 4);
    if let Some(n) = mem.read_u32(len_ptr) {
        push(out, addr, u64::from(n).min(size::SOCKADDR_STORAGE));
    }
}

/// `total` bytes scattered over the iovec array at `iov` with `cnt` entries.
fn scatter(mem: &dyn Memory, iov: u64, cnt: u64, total: u64, out: &mut Vec<Region>) {
    let mut left = total;
    for i in 0..cnt.min(MAX_VEC) {
        if left == 0 {
            break;
        }
        let e = iov.wrapping_add(i * size::IOVEC);
        let (Some(base), Some(len)) = (mem.read_u64(e), mem.read_u64(e.wrapping_add(8))) else {
            break;
        };
        let n = len.min(left);
        push(out, base, n);
        left -= n;
    }
}

/// A `struct msghdr` at `msg` after a receive of `data` bytes: the header, name, data, control.
fn msghdr(mem: &dyn Memory, msg: u64, data: u64, out: &mut Vec<Region>) {
    if msg == 0 {
        return;
    }
    push(out, msg, size::MSGHDR);
    let rd = |off: u64| mem.read_u64(msg.wrapping_add(off));
    if let (Some(name), Some(namelen)) = (rd(0), mem.read_u32(msg.wrapping_add(8))) {
        push(out, name, u64::from(namelen).min(size::SOCKADDR_STORAGE));
    }
    if let (Some(iov), Some(iovlen)) = (rd(16), rd(24)) {
        scatter(mem, iov, iovlen, data, out);
    }
    if let (Some(control), Some(controllen)) = (rd(32), rd(40)) {
        push(out, control, controllen);
    }
}

#[cfg(test)]
mod tests;
