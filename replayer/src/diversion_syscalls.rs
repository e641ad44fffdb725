//! What a syscall made inside a diversion does (see the crate README, "Diversions"): the
//! diverted process is a copy of a replayed one, whose file descriptors, children and
//! neighbours are the replay's, not the program's. So only calls whose effect stays inside the
//! copy run for real; the program's ids come from the recording; writes to stdout and stderr
//! are shown on deja's; everything else fails cleanly with `ENOSYS`.

use syscalls::Replay;
use trace_format::Tid;

/// What a diversion does with a syscall at its seccomp stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The kernel runs it in the copy.
    Run,
    /// Skipped; the program gets this result.
    Return(i64),
    /// A write (`write`, or `writev` with `iov` set) to the program's stdout (1) or stderr
    /// (2): its bytes go to deja's own stream, the program gets their count.
    Echo {
        /// 1 or 2.
        stream: i32,
        /// Whether the buffer argument is an iovec array.
        iov: bool,
    },
    /// A signal the thread sends itself (`tkill`, `tgkill`, `kill` naming its recorded ids):
    /// sent for real to the copy.
    SelfSignal(i32),
    /// `exit` or `exit_group`: the diverted process ends with this code (the copy is then
    /// killed: its other threads never run).
    End(i32),
}

/// Calls that only read the clock, the machine or the process's own kernel state, or wait:
/// harmless in the copy, and they run for real (the values are today's, not the recording's).
const HARMLESS: &[i64] = &[
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_time,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_getrlimit,
    libc::SYS_getrusage,
    libc::SYS_sysinfo,
    libc::SYS_times,
    libc::SYS_getcpu,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigpending,
    libc::SYS_futex,
];

/// What a diversion does with syscall `nr` (arguments `args`) of recorded thread `tid` of
/// recorded process `process`.
pub(crate) fn action(nr: u64, args: &[u64; 6], process: Tid, tid: Tid) -> Action {
    const NOSYS: Action = Action::Return(-(libc::ENOSYS as i64));
    let n = nr as i64;
    // (The 32-bit `int` arguments the kernel reads.)
    let int = |i: usize| args[i] as u32 as i32;
    match n {
        libc::SYS_getpid => return Action::Return(process as i64),
        libc::SYS_gettid => return Action::Return(tid as i64),
        libc::SYS_exit | libc::SYS_exit_group => return Action::End(int(0) & 0xff),
        libc::SYS_write if matches!(int(0), 1 | 2) => {
            return Action::Echo {
                stream: int(0),
                iov: false,
            }
        }
        libc::SYS_writev if matches!(int(0), 1 | 2) => {
            return Action::Echo {
                stream: int(0),
                iov: true,
            }
        }
        libc::SYS_tkill if int(0) == tid => return Action::SelfSignal(int(1)),
        libc::SYS_tgkill if int(0) == process && int(1) == tid => {
            return Action::SelfSignal(int(2))
        }
        libc::SYS_kill if int(0) == process || int(0) == 0 => return Action::SelfSignal(int(1)),
        // (glibc's getrlimit: a query of the process's own limits.)
        libc::SYS_prlimit64 if args[0] == 0 && args[2] == 0 => return Action::Run,
        libc::SYS_mmap => {
            // Anonymous memory (malloc's big blocks) stays in the copy; a file mapping would
            // name one of the replay's descriptors.
            let anonymous = args[3] & libc::MAP_ANONYMOUS as u64 != 0;
            let shared = args[3] & libc::MAP_SHARED as u64 != 0;
            return if anonymous && !shared {
                Action::Run
            } else {
                NOSYS
            };
        }
        _ => {}
    }
    if HARMLESS.contains(&n) {
        return Action::Run;
    }
    let executed = syscalls::TABLE
        .binary_search_by_key(&nr, |s| s.nr)
        .ok()
        .map(|i| syscalls::TABLE[i].replay);
    match executed {
        // What the replay itself runs for real changes only the calling process (its memory,
        // signal handling, limits of its own): the copy's, here. (A `prctl` or `seccomp`
        // changes the copy alone too.)
        Some(Replay::Execute) => Action::Run,
        _ => NOSYS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_confined_to_the_copy_run() {
        let none = [0u64; 6];
        assert_eq!(action(libc::SYS_brk as u64, &none, 10, 11), Action::Run);
        assert_eq!(
            action(libc::SYS_mprotect as u64, &none, 10, 11),
            Action::Run
        );
        assert_eq!(
            action(libc::SYS_clock_gettime as u64, &none, 10, 11),
            Action::Run
        );
        assert_eq!(
            action(libc::SYS_getpid as u64, &none, 10, 11),
            Action::Return(10)
        );
        assert_eq!(
            action(libc::SYS_gettid as u64, &none, 10, 11),
            Action::Return(11)
        );
        let nosys = Action::Return(-(libc::ENOSYS as i64));
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_read,
            libc::SYS_close,
            libc::SYS_clone,
            libc::SYS_fork,
            libc::SYS_socket,
            libc::SYS_unlink,
            libc::SYS_getppid,
        ] {
            assert_eq!(action(nr as u64, &none, 10, 11), nosys, "syscall {nr}");
        }
        // prlimit64 reads the process's own limits, never sets them.
        let query = [0, libc::RLIMIT_STACK as u64, 0, 0x1000, 0, 0];
        assert_eq!(
            action(libc::SYS_prlimit64 as u64, &query, 10, 11),
            Action::Run
        );
        let set = [0, libc::RLIMIT_STACK as u64, 0x1000, 0, 0, 0];
        assert_eq!(action(libc::SYS_prlimit64 as u64, &set, 10, 11), nosys);
        // A write to a file descriptor other than stdout and stderr.
        let fd5 = [5, 0, 0, 0, 0, 0];
        assert_eq!(action(libc::SYS_write as u64, &fd5, 10, 11), nosys);
    }

    #[test]
    fn stdout_and_stderr_are_echoed_and_exits_end_the_diversion() {
        let out = [1, 0x1000, 3, 0, 0, 0];
        assert_eq!(
            action(libc::SYS_write as u64, &out, 10, 11),
            Action::Echo {
                stream: 1,
                iov: false
            }
        );
        let err = [2, 0x1000, 3, 0, 0, 0];
        assert_eq!(
            action(libc::SYS_writev as u64, &err, 10, 11),
            Action::Echo {
                stream: 2,
                iov: true
            }
        );
        let code = [0x107, 0, 0, 0, 0, 0];
        assert_eq!(
            action(libc::SYS_exit_group as u64, &code, 10, 11),
            Action::End(7)
        );
    }

    #[test]
    fn signals_reach_only_the_thread_itself() {
        let own = [10, 11, libc::SIGABRT as u64, 0, 0, 0];
        assert_eq!(
            action(libc::SYS_tgkill as u64, &own, 10, 11),
            Action::SelfSignal(libc::SIGABRT)
        );
        let other = [10, 12, libc::SIGABRT as u64, 0, 0, 0];
        assert_eq!(
            action(libc::SYS_tgkill as u64, &other, 10, 11),
            Action::Return(-(libc::ENOSYS as i64))
        );
        let anon = [
            0,
            4096,
            3,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ];
        assert_eq!(action(libc::SYS_mmap as u64, &anon, 10, 11), Action::Run);
        let file = [0, 4096, 1, libc::MAP_PRIVATE as u64, 3, 0];
        assert_eq!(
            action(libc::SYS_mmap as u64, &file, 10, 11),
            Action::Return(-(libc::ENOSYS as i64))
        );
    }
}
