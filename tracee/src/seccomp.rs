//! The seccomp-bpf filter that sends every x86-64 syscall of the tracee to the tracer.

use libc::sock_filter;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Syscall numbers with this bit belong to the x32 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_IP_LOW: u32 = 8;
const OFF_IP_HIGH: u32 = 12;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The filter program: x86-64 syscalls trap to the tracer (`SECCOMP_RET_TRACE`); i386 and x32
/// syscalls, which deja does not model, fail with `ENOSYS` so they cannot bypass recording.
/// With `allow_from`, x86-64 syscalls whose instruction pointer (the address right after the
/// `syscall` instruction) is `allow_from` run without a stop: the in-process library's own
/// `syscall` instruction, at a fixed address (see `syscallbuf::abi`).
pub fn trace_all_filter(allow_from: Option<u64>) -> Vec<sock_filter> {
    let deny = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let mut f = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 0, 0), // jf patched below: to `deny`
        stmt(BPF_LD_W_ABS, OFF_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 0), // jt patched below: to `deny`
    ];
    if let Some(ip) = allow_from {
        f.extend([
            stmt(BPF_LD_W_ABS, OFF_IP_LOW),
            jump(BPF_JEQ_K, ip as u32, 0, 2),
            stmt(BPF_LD_W_ABS, OFF_IP_HIGH),
            jump(BPF_JEQ_K, (ip >> 32) as u32, 2, 0),
        ]);
    }
    f.push(stmt(BPF_RET_K, SECCOMP_RET_TRACE));
    let deny_at = f.len() as u8;
    f.push(stmt(BPF_RET_K, deny));
    if allow_from.is_some() {
        f.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    }
    f[1].jf = deny_at - 2;
    f[3].jt = deny_at - 4;
    f
}

/// Installs `filter` on the calling thread. Async-signal-safe: meant for a forked child.
///
/// # Safety
/// `filter` must be a valid BPF program; the caller must accept that every later syscall of this
/// thread is subject to it.
pub unsafe fn install(filter: &[sock_filter]) -> libc::c_long {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut sock_filter,
    };
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return -1;
    }
    libc::syscall(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER,
        0,
        &prog as *const libc::sock_fprog,
    )
}

/// `si_code` of a `SIGSYS` raised by a seccomp filter's `SECCOMP_RET_TRAP` (`SYS_SECCOMP`).
pub const SYS_SECCOMP: i32 = 1;

/// How many seccomp filters deja itself installs in every tracee (the one of
/// [`trace_all_filter`]).
const OWN_FILTERS: u64 = 1;

/// Whether the program's own seccomp filters are what `PR_GET_SECCOMP` should report: at the
/// exit stop of `prctl(PR_GET_SECCOMP)` (syscall `nr`, first argument `option`) in task `pid`
/// that returned filter mode (2), true if deja's filter is the task's only one. The caller then
/// makes the call return 0, as it does outside deja; the recording and the replay, which both
/// have deja's filter plus the program's own (installed for real in both), agree on it.
pub fn hides_own_filter(pid: i32, nr: u64, option: u64, result: i64) -> bool {
    if nr != libc::SYS_prctl as u64
        || option != libc::PR_GET_SECCOMP as u64
        || result != i64::from(libc::SECCOMP_MODE_FILTER)
    {
        return false;
    }
    filter_count(pid).is_some_and(|n| n <= OWN_FILTERS)
}

/// How many seccomp filters task `pid` has (`Seccomp_filters` in `/proc/PID/status`).
fn filter_count(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
}

/// Whether task `pid` has seccomp filters of its own besides deja's (`Seccomp_filters` in
/// `/proc/PID/status`), e.g. inherited across `execve` from a sandbox.
pub fn has_own_filters(pid: i32) -> bool {
    filter_count(pid).is_some_and(|n| n > OWN_FILTERS)
}
