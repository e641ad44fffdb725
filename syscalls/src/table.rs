//! The system call table and the request-dependent (`Custom`) output functions.

use crate::ioctl::ioctl;
use crate::size::*;
use crate::Len::*;
use crate::Out::{self, Custom, Iov, Mmsghdr, Msghdr, SockAddr};
use crate::Replay::{self, *};
use crate::{push, Call, Len, Memory, Region, Syscall};

/// `Out::Buf` at argument `ptr` of length `len`.
const fn b(ptr: usize, len: Len) -> Out {
    Out::Buf { ptr, len }
}

/// `Out::Buf` at argument `ptr` of a fixed size.
const fn f(ptr: usize, n: u64) -> Out {
    Out::Buf { ptr, len: Fixed(n) }
}

/// `Out::Iov` scattering `result` bytes into the iovecs at argument `iov` (count at `cnt`).
const fn iov(iov: usize, cnt: usize) -> Out {
    Iov { iov, cnt, len: Ret }
}

/// `Out::SockAddr` with the address at `addr` and the `socklen_t*` at `len_ptr`.
const fn sa(addr: usize, len_ptr: usize) -> Out {
    SockAddr { addr, len_ptr }
}

const NOSYS: Replay = Deny(libc::ENOSYS);

/// One table entry: `sys!(nr, name, replay)`, `sys!(nr, name, replay, [outs])`, or
/// `sys!(nr, name, replay, [outs], on_error)` when the outs are written even on failure.
macro_rules! sys {
    ($nr:literal, $name:ident, $replay:expr) => {
        sys!($nr, $name, $replay, [])
    };
    ($nr:literal, $name:ident, $replay:expr, [$($out:expr),* $(,)?]) => {
        Syscall { nr: $nr, name: stringify!($name), replay: $replay, outs: &[$($out),*], outs_on_error: false }
    };
    ($nr:literal, $name:ident, $replay:expr, [$($out:expr),* $(,)?], on_error) => {
        Syscall { nr: $nr, name: stringify!($name), replay: $replay, outs: &[$($out),*], outs_on_error: true }
    };
}

/// Every x86-64 system call up to 462, sorted by number. The one place to add a system call.
#[rustfmt::skip]
pub static TABLE: &[Syscall] = &[
    sys!(0, read, Emulate, [b(1, Ret)]),
    sys!(1, write, Emulate),
    sys!(2, open, Emulate),
    sys!(3, close, Emulate),
    sys!(4, stat, Emulate, [f(1, STAT)]),
    sys!(5, fstat, Emulate, [f(1, STAT)]),
    sys!(6, lstat, Emulate, [f(1, STAT)]),
    sys!(7, poll, Emulate, [b(0, ArgTimes(1, POLLFD))], on_error), // revents written on EINTR too
    sys!(8, lseek, Emulate),
    sys!(9, mmap, Mmap),
    sys!(10, mprotect, Execute),
    sys!(11, munmap, Execute),
    sys!(12, brk, Execute),
    sys!(13, rt_sigaction, Execute, [f(2, KERNEL_SIGACTION)]),
    sys!(14, rt_sigprocmask, Execute, [f(2, KERNEL_SIGSET)]),
    sys!(15, rt_sigreturn, Execute),
    sys!(16, ioctl, Emulate, [Custom(ioctl)]),
    sys!(17, pread64, Emulate, [b(1, Ret)]),
    sys!(18, pwrite64, Emulate),
    sys!(19, readv, Emulate, [iov(1, 2)]),
    sys!(20, writev, Emulate),
    sys!(21, access, Emulate),
    sys!(22, pipe, Emulate, [f(0, 8)]),
    // fd sets are only written on success, the timeout also on EINTR.
    sys!(23, select, Emulate, [b(1, ArgBits(0)), b(2, ArgBits(0)), b(3, ArgBits(0)), f(4, TIMEVAL)], on_error),
    sys!(24, sched_yield, Emulate),
    sys!(25, mremap, Execute),
    sys!(26, msync, Emulate),
    sys!(27, mincore, Emulate, [b(2, ArgPages(1))]),
    sys!(28, madvise, Execute),
    sys!(29, shmget, Emulate),
    // shmat / shmdt: a shared mapping of the replay's copy of the segment (recorded as a
    // FileEffect::ShmAttach / ShmDetach), made and removed like an mmap of a file.
    sys!(30, shmat, Mmap),
    sys!(31, shmctl, Emulate, [Custom(shmctl)]),
    sys!(32, dup, Emulate),
    sys!(33, dup2, Emulate),
    sys!(34, pause, Emulate),
    sys!(35, nanosleep, Emulate, [f(1, TIMESPEC)], on_error), // rem on EINTR
    sys!(36, getitimer, Emulate, [f(1, ITIMERVAL)]),
    sys!(37, alarm, Emulate),
    sys!(38, setitimer, Emulate, [f(2, ITIMERVAL)]),
    sys!(39, getpid, Emulate),
    sys!(40, sendfile, Emulate, [f(2, 8)]),
    sys!(41, socket, Emulate),
    sys!(42, connect, Emulate),
    sys!(43, accept, Emulate, [sa(1, 2)]),
    sys!(44, sendto, Emulate),
    sys!(45, recvfrom, Emulate, [b(1, Ret), sa(4, 5)]),
    sys!(46, sendmsg, Emulate),
    sys!(47, recvmsg, Emulate, [Msghdr { msg: 1 }]),
    sys!(48, shutdown, Emulate),
    sys!(49, bind, Emulate),
    sys!(50, listen, Emulate),
    sys!(51, getsockname, Emulate, [sa(1, 2)]),
    sys!(52, getpeername, Emulate, [sa(1, 2)]),
    sys!(53, socketpair, Emulate, [f(3, 8)]),
    sys!(54, setsockopt, Emulate, [Custom(setsockopt)]),
    sys!(55, getsockopt, Emulate, [b(3, DerefU32(4)), f(4, 4)]),
    sys!(56, clone, Clone),
    sys!(57, fork, Clone),
    sys!(58, vfork, Clone),
    sys!(59, execve, Exec),
    sys!(60, exit, Exit),
    sys!(61, wait4, Emulate, [f(1, 4), f(3, RUSAGE)]),
    sys!(62, kill, Emulate),
    sys!(63, uname, Emulate, [f(0, UTSNAME)]),
    sys!(64, semget, Emulate),
    sys!(65, semop, Emulate),
    sys!(66, semctl, Emulate, [Custom(semctl)]),
    sys!(67, shmdt, Mmap),
    sys!(68, msgget, Emulate),
    sys!(69, msgsnd, Emulate),
    sys!(70, msgrcv, Emulate, [b(1, RetPlus(8))]), // long mtype + text
    sys!(71, msgctl, Emulate, [Custom(msgctl)]),
    sys!(72, fcntl, Emulate, [Custom(fcntl)]),
    sys!(73, flock, Emulate),
    sys!(74, fsync, Emulate),
    sys!(75, fdatasync, Emulate),
    sys!(76, truncate, Emulate),
    sys!(77, ftruncate, Emulate),
    sys!(78, getdents, Emulate, [b(1, Ret)]),
    sys!(79, getcwd, Emulate, [b(0, Ret)]),
    sys!(80, chdir, Emulate),
    sys!(81, fchdir, Emulate),
    sys!(82, rename, Emulate),
    sys!(83, mkdir, Emulate),
    sys!(84, rmdir, Emulate),
    sys!(85, creat, Emulate),
    sys!(86, link, Emulate),
    sys!(87, unlink, Emulate),
    sys!(88, symlink, Emulate),
    sys!(89, readlink, Emulate, [b(1, Ret)]),
    sys!(90, chmod, Emulate),
    sys!(91, fchmod, Emulate),
    sys!(92, chown, Emulate),
    sys!(93, fchown, Emulate),
    sys!(94, lchown, Emulate),
    sys!(95, umask, Emulate),
    sys!(96, gettimeofday, Emulate, [f(0, TIMEVAL), f(1, TIMEZONE)]),
    sys!(97, getrlimit, Emulate, [f(1, RLIMIT)]),
    sys!(98, getrusage, Emulate, [f(1, RUSAGE)]),
    sys!(99, sysinfo, Emulate, [f(0, SYSINFO)]),
    sys!(100, times, Emulate, [f(0, TMS)]),
    // Served by the recorder's ptrace emulation (recorder/src/recording/ptrace.rs), which
    // records exactly what it wrote.
    sys!(101, ptrace, Emulate),
    sys!(102, getuid, Emulate),
    sys!(103, syslog, Emulate, [Custom(syslog)]),
    sys!(104, getgid, Emulate),
    sys!(105, setuid, Emulate),
    sys!(106, setgid, Emulate),
    sys!(107, geteuid, Emulate),
    sys!(108, getegid, Emulate),
    sys!(109, setpgid, Emulate),
    sys!(110, getppid, Emulate),
    sys!(111, getpgrp, Emulate),
    sys!(112, setsid, Emulate),
    sys!(113, setreuid, Emulate),
    sys!(114, setregid, Emulate),
    sys!(115, getgroups, Emulate, [b(1, MinArgRetTimes(0, 4))]), // size 0 only counts
    sys!(116, setgroups, Emulate),
    sys!(117, setresuid, Emulate),
    sys!(118, getresuid, Emulate, [f(0, 4), f(1, 4), f(2, 4)]),
    sys!(119, setresgid, Emulate),
    sys!(120, getresgid, Emulate, [f(0, 4), f(1, 4), f(2, 4)]),
    sys!(121, getpgid, Emulate),
    sys!(122, setfsuid, Emulate),
    sys!(123, setfsgid, Emulate),
    sys!(124, getsid, Emulate),
    sys!(125, capget, Emulate, [f(0, CAP_HEADER), f(1, CAP_DATA)], on_error), // version written on EINVAL
    sys!(126, capset, Emulate),
    sys!(127, rt_sigpending, Emulate, [f(0, KERNEL_SIGSET)]),
    sys!(128, rt_sigtimedwait, Emulate, [f(1, SIGINFO)]),
    sys!(129, rt_sigqueueinfo, Emulate),
    sys!(130, rt_sigsuspend, Emulate),
    sys!(131, sigaltstack, Execute, [f(1, STACK_T)]),
    sys!(132, utime, Emulate),
    sys!(133, mknod, Emulate),
    sys!(134, uselib, NOSYS), // would map a library; compiled out of modern kernels
    sys!(135, personality, Execute),
    sys!(136, ustat, Emulate, [f(1, USTAT)]),
    sys!(137, statfs, Emulate, [f(1, STATFS)]),
    sys!(138, fstatfs, Emulate, [f(1, STATFS)]),
    sys!(139, sysfs, NOSYS), // obsolete; option 2 writes a name of unknown length
    sys!(140, getpriority, Emulate),
    sys!(141, setpriority, Emulate),
    sys!(142, sched_setparam, Emulate),
    sys!(143, sched_getparam, Emulate, [f(1, SCHED_PARAM)]),
    sys!(144, sched_setscheduler, Emulate),
    sys!(145, sched_getscheduler, Emulate),
    sys!(146, sched_get_priority_max, Emulate),
    sys!(147, sched_get_priority_min, Emulate),
    sys!(148, sched_rr_get_interval, Emulate, [f(1, TIMESPEC)]),
    sys!(149, mlock, Execute),
    sys!(150, munlock, Execute),
    sys!(151, mlockall, Execute),
    sys!(152, munlockall, Execute),
    sys!(153, vhangup, Emulate),
    sys!(154, modify_ldt, Execute), // changes the LDT; reads land in replay too
    sys!(155, pivot_root, Emulate),
    sys!(156, _sysctl, NOSYS), // removed in Linux 5.5
    sys!(157, prctl, Execute, [Custom(prctl)]),
    sys!(158, arch_prctl, Execute),
    sys!(159, adjtimex, Emulate, [f(0, TIMEX)]),
    sys!(160, setrlimit, SetLimit),
    sys!(161, chroot, Emulate),
    sys!(162, sync, Emulate),
    sys!(163, acct, Emulate),
    sys!(164, settimeofday, Emulate),
    sys!(165, mount, Emulate),
    sys!(166, umount2, Emulate),
    sys!(167, swapon, Emulate),
    sys!(168, swapoff, Emulate),
    sys!(169, reboot, Emulate),
    sys!(170, sethostname, Emulate),
    sys!(171, setdomainname, Emulate),
    sys!(172, iopl, Execute),
    sys!(173, ioperm, Execute),
    sys!(174, create_module, Emulate), // always ENOSYS
    sys!(175, init_module, Emulate),
    sys!(176, delete_module, Emulate),
    sys!(177, get_kernel_syms, Emulate), // always ENOSYS
    sys!(178, query_module, Emulate), // always ENOSYS
    sys!(179, quotactl, Emulate, [Custom(quotactl)]),
    sys!(180, nfsservctl, Emulate), // always ENOSYS
    sys!(181, getpmsg, Emulate), // always ENOSYS
    sys!(182, putpmsg, Emulate), // always ENOSYS
    sys!(183, afs_syscall, Emulate), // always ENOSYS
    sys!(184, tuxcall, Emulate), // always ENOSYS
    sys!(185, security, Emulate), // always ENOSYS
    sys!(186, gettid, Emulate),
    sys!(187, readahead, Emulate),
    sys!(188, setxattr, Emulate),
    sys!(189, lsetxattr, Emulate),
    sys!(190, fsetxattr, Emulate),
    sys!(191, getxattr, Emulate, [b(2, MinArgRet(3))]), // size 0 only measures
    sys!(192, lgetxattr, Emulate, [b(2, MinArgRet(3))]),
    sys!(193, fgetxattr, Emulate, [b(2, MinArgRet(3))]),
    sys!(194, listxattr, Emulate, [b(1, MinArgRet(2))]),
    sys!(195, llistxattr, Emulate, [b(1, MinArgRet(2))]),
    sys!(196, flistxattr, Emulate, [b(1, MinArgRet(2))]),
    sys!(197, removexattr, Emulate),
    sys!(198, lremovexattr, Emulate),
    sys!(199, fremovexattr, Emulate),
    sys!(200, tkill, Emulate),
    sys!(201, time, Emulate, [f(0, 8)]),
    sys!(202, futex, Emulate, [Custom(futex)], on_error), // PI ops can set FUTEX_WAITERS then time out
    sys!(203, sched_setaffinity, Emulate),
    sys!(204, sched_getaffinity, Emulate, [b(2, Ret)]),
    sys!(205, set_thread_area, Execute),
    sys!(206, io_setup, NOSYS), // Linux AIO maps a ring into the process
    sys!(207, io_destroy, NOSYS),
    sys!(208, io_getevents, NOSYS),
    sys!(209, io_submit, NOSYS),
    sys!(210, io_cancel, NOSYS),
    sys!(211, get_thread_area, Emulate, [f(0, USER_DESC)]),
    sys!(212, lookup_dcookie, Emulate, [b(1, MinArgRet(2))]),
    sys!(213, epoll_create, Emulate),
    sys!(214, epoll_ctl_old, Emulate), // always ENOSYS
    sys!(215, epoll_wait_old, Emulate), // always ENOSYS
    sys!(216, remap_file_pages, Unsupported("nonlinear file mappings")),
    sys!(217, getdents64, Emulate, [b(1, Ret)]),
    sys!(218, set_tid_address, ExecuteRecordedResult),
    // Continues an interrupted nanosleep/clock_nanosleep/poll/futex; the recorder must apply
    // the outs of the call it restarts.
    sys!(219, restart_syscall, Emulate),
    sys!(220, semtimedop, Emulate),
    sys!(221, fadvise64, Emulate),
    sys!(222, timer_create, Emulate, [f(2, 4)]), // kernel timer_t is an int
    sys!(223, timer_settime, Emulate, [f(3, ITIMERSPEC)]),
    sys!(224, timer_gettime, Emulate, [f(1, ITIMERSPEC)]),
    sys!(225, timer_getoverrun, Emulate),
    sys!(226, timer_delete, Emulate),
    sys!(227, clock_settime, Emulate),
    sys!(228, clock_gettime, Emulate, [f(1, TIMESPEC)]),
    sys!(229, clock_getres, Emulate, [f(1, TIMESPEC)]),
    sys!(230, clock_nanosleep, Emulate, [f(3, TIMESPEC)], on_error), // rem on EINTR
    sys!(231, exit_group, Exit),
    sys!(232, epoll_wait, Emulate, [b(1, RetTimes(EPOLL_EVENT))]),
    sys!(233, epoll_ctl, Emulate),
    sys!(234, tgkill, Emulate),
    sys!(235, utimes, Emulate),
    sys!(236, vserver, Emulate), // always ENOSYS
    sys!(237, mbind, Emulate),
    sys!(238, set_mempolicy, Emulate),
    sys!(239, get_mempolicy, Emulate, [f(0, 4), b(1, ArgBits(2))]),
    sys!(240, mq_open, Emulate),
    sys!(241, mq_unlink, Emulate),
    sys!(242, mq_timedsend, Emulate),
    sys!(243, mq_timedreceive, Emulate, [b(1, Ret), f(3, 4)]),
    sys!(244, mq_notify, Emulate),
    sys!(245, mq_getsetattr, Emulate, [f(2, MQ_ATTR)]),
    sys!(246, kexec_load, Emulate),
    sys!(247, waitid, Emulate, [f(2, SIGINFO), f(4, RUSAGE)]),
    sys!(248, add_key, Emulate),
    sys!(249, request_key, Emulate),
    sys!(250, keyctl, Emulate, [Custom(keyctl)]),
    sys!(251, ioprio_set, Emulate),
    sys!(252, ioprio_get, Emulate),
    sys!(253, inotify_init, Emulate),
    sys!(254, inotify_add_watch, Emulate),
    sys!(255, inotify_rm_watch, Emulate),
    sys!(256, migrate_pages, Emulate),
    sys!(257, openat, Emulate),
    sys!(258, mkdirat, Emulate),
    sys!(259, mknodat, Emulate),
    sys!(260, fchownat, Emulate),
    sys!(261, futimesat, Emulate),
    sys!(262, newfstatat, Emulate, [f(2, STAT)]),
    sys!(263, unlinkat, Emulate),
    sys!(264, renameat, Emulate),
    sys!(265, linkat, Emulate),
    sys!(266, symlinkat, Emulate),
    sys!(267, readlinkat, Emulate, [b(2, Ret)]),
    sys!(268, fchmodat, Emulate),
    sys!(269, faccessat, Emulate),
    sys!(270, pselect6, Emulate, [b(1, ArgBits(0)), b(2, ArgBits(0)), b(3, ArgBits(0)), f(4, TIMESPEC)], on_error),
    sys!(271, ppoll, Emulate, [b(0, ArgTimes(1, POLLFD)), f(2, TIMESPEC)], on_error),
    sys!(272, unshare, Emulate),
    sys!(273, set_robust_list, Execute),
    sys!(274, get_robust_list, Emulate, [f(1, 8), f(2, 8)]),
    sys!(275, splice, Emulate, [f(1, 8), f(3, 8)]),
    sys!(276, tee, Emulate),
    sys!(277, sync_file_range, Emulate),
    sys!(278, vmsplice, Emulate, [iov(1, 2)]), // reads a pipe into the iovecs when fd is a read end
    sys!(279, move_pages, Emulate, [b(4, ArgTimes(1, 4))]),
    sys!(280, utimensat, Emulate),
    sys!(281, epoll_pwait, Emulate, [b(1, RetTimes(EPOLL_EVENT))]),
    sys!(282, signalfd, Emulate),
    sys!(283, timerfd_create, Emulate),
    sys!(284, eventfd, Emulate),
    sys!(285, fallocate, Emulate),
    sys!(286, timerfd_settime, Emulate, [f(3, ITIMERSPEC)]),
    sys!(287, timerfd_gettime, Emulate, [f(1, ITIMERSPEC)]),
    sys!(288, accept4, Emulate, [sa(1, 2)]),
    sys!(289, signalfd4, Emulate),
    sys!(290, eventfd2, Emulate),
    sys!(291, epoll_create1, Emulate),
    sys!(292, dup3, Emulate),
    sys!(293, pipe2, Emulate, [f(0, 8)]),
    sys!(294, inotify_init1, Emulate),
    sys!(295, preadv, Emulate, [iov(1, 2)]),
    sys!(296, pwritev, Emulate),
    sys!(297, rt_tgsigqueueinfo, Emulate),
    sys!(298, perf_event_open, Emulate), // software events; the program's own counters, read as recorded
    sys!(299, recvmmsg, Emulate, [Mmsghdr { vec: 1 }, f(4, TIMESPEC)]),
    sys!(300, fanotify_init, Emulate),
    sys!(301, fanotify_mark, Emulate),
    sys!(302, prlimit64, SetLimit, [f(3, RLIMIT)]),
    sys!(303, name_to_handle_at, Emulate, [Custom(name_to_handle_at)], on_error), // EOVERFLOW reports the size
    sys!(304, open_by_handle_at, Emulate),
    sys!(305, clock_adjtime, Emulate, [f(1, TIMEX)]),
    sys!(306, syncfs, Emulate),
    sys!(307, sendmmsg, Emulate, [b(1, RetTimes(MMSGHDR))]), // msg_len of each sent entry
    sys!(308, setns, Emulate),
    sys!(309, getcpu, Emulate, [f(0, 4), f(1, 4)]),
    sys!(310, process_vm_readv, Emulate, [iov(1, 2)]),
    // Only into the caller's own process (the recorder refuses others): the remote iovecs.
    sys!(311, process_vm_writev, Emulate, [iov(3, 4)]),
    sys!(312, kcmp, Emulate),
    sys!(313, finit_module, Emulate),
    sys!(314, sched_setattr, Emulate, [f(1, 4)], on_error), // E2BIG writes attr->size
    sys!(315, sched_getattr, Emulate, [b(1, Arg(2))]),
    sys!(316, renameat2, Emulate),
    sys!(317, seccomp, Execute),
    sys!(318, getrandom, Emulate, [b(0, Ret)]),
    // Mapping a memfd later is handled by the replayer like any file mapping (a copy).
    sys!(319, memfd_create, Emulate),
    sys!(320, kexec_file_load, Emulate),
    sys!(321, bpf, NOSYS),
    sys!(322, execveat, Exec),
    sys!(323, userfaultfd, NOSYS),
    sys!(324, membarrier, Emulate),
    sys!(325, mlock2, Execute),
    sys!(326, copy_file_range, Emulate, [f(1, 8), f(3, 8)]),
    sys!(327, preadv2, Emulate, [iov(1, 2)]),
    sys!(328, pwritev2, Emulate),
    sys!(329, pkey_mprotect, NOSYS),
    sys!(330, pkey_alloc, NOSYS),
    sys!(331, pkey_free, NOSYS),
    sys!(332, statx, Emulate, [f(4, STATX)]),
    sys!(333, io_pgetevents, NOSYS),
    sys!(334, rseq, NOSYS), // kernel-written cpu ids and aborts are nondeterministic (as in rr)
    sys!(424, pidfd_send_signal, Emulate),
    sys!(425, io_uring_setup, NOSYS),
    sys!(426, io_uring_enter, NOSYS),
    sys!(427, io_uring_register, NOSYS),
    sys!(428, open_tree, Emulate),
    sys!(429, move_mount, Emulate),
    sys!(430, fsopen, Emulate),
    sys!(431, fsconfig, Emulate),
    sys!(432, fsmount, Emulate),
    sys!(433, fspick, Emulate),
    sys!(434, pidfd_open, Emulate),
    sys!(435, clone3, Clone),
    sys!(436, close_range, Emulate),
    sys!(437, openat2, Emulate),
    sys!(438, pidfd_getfd, Emulate),
    sys!(439, faccessat2, Emulate),
    sys!(440, process_madvise, Emulate),
    sys!(441, epoll_pwait2, Emulate, [b(1, RetTimes(EPOLL_EVENT))]),
    sys!(442, mount_setattr, Emulate),
    sys!(443, quotactl_fd, Emulate, [Custom(quotactl_fd)]),
    sys!(444, landlock_create_ruleset, Emulate),
    sys!(445, landlock_add_rule, Emulate),
    sys!(446, landlock_restrict_self, Emulate),
    sys!(447, memfd_secret, NOSYS),
    sys!(448, process_mrelease, Emulate),
    sys!(449, futex_waitv, Emulate),
    sys!(450, set_mempolicy_home_node, Emulate),
    sys!(451, cachestat, Emulate, [f(2, CACHESTAT)]),
    sys!(452, fchmodat2, Emulate),
    sys!(453, map_shadow_stack, NOSYS), // as on kernels without user shadow stacks
    sys!(454, futex_wake, Emulate),
    sys!(455, futex_wait, Emulate),
    sys!(456, futex_requeue, Emulate),
    sys!(457, statmount, Emulate, [b(1, Arg(2))]),
    sys!(458, listmount, Emulate, [b(1, RetTimes(8))]),
    sys!(459, lsm_get_self_attr, Emulate, [Custom(lsm_get_self_attr)], on_error), // E2BIG reports the size
    sys!(460, lsm_set_self_attr, Emulate),
    sys!(461, lsm_list_modules, Emulate, [Custom(lsm_list_modules)], on_error), // E2BIG reports the size
    sys!(462, mseal, Execute),
];

/// prctl: the options that write through their second argument.
fn prctl(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    let len = match c.arg(0) as i32 {
        libc::PR_GET_PDEATHSIG
        | libc::PR_GET_UNALIGN
        | libc::PR_GET_FPEMU
        | libc::PR_GET_FPEXC
        | libc::PR_GET_ENDIAN
        | libc::PR_GET_TSC
        | libc::PR_GET_CHILD_SUBREAPER => 4,
        libc::PR_GET_NAME => 16,
        libc::PR_GET_TID_ADDRESS => 8,
        _ => return,
    };
    push(out, c.arg(1), len);
}

/// fcntl: the lock queries and owner/hint getters write through the third argument.
fn fcntl(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    let len = match c.arg(1) as u32 {
        5 | 36 => FLOCK,  // F_GETLK, F_OFD_GETLK
        16 => F_OWNER_EX, // F_GETOWN_EX
        1035 | 1037 => 8, // F_GET_RW_HINT, F_GET_FILE_RW_HINT
        _ => 0,
    };
    push(out, c.arg(2), len);
}

/// futex: PI operations write the futex word(s); FUTEX_WAKE_OP modifies `uaddr2`.
fn futex(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    let (uaddr, uaddr2) = (c.arg(0), c.arg(4));
    match c.arg(1) & 0x7F {
        5 => push(out, uaddr2, 4),             // FUTEX_WAKE_OP
        6 | 7 | 8 | 13 => push(out, uaddr, 4), // FUTEX_{LOCK,UNLOCK,TRYLOCK}_PI, LOCK_PI2
        11 | 12 => {
            // FUTEX_WAIT_REQUEUE_PI, FUTEX_CMP_REQUEUE_PI
            push(out, uaddr, 4);
            push(out, uaddr2, 4);
        }
        _ => {}
    }
}

/// syslog: the read actions copy `result` bytes into the buffer.
fn syslog(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    if matches!(c.arg(0), 2..=4) {
        // SYSLOG_ACTION_READ, READ_ALL, READ_CLEAR
        push(out, c.arg(1), c.ret().min(c.arg(2)));
    }
}

/// Bytes quotactl writes at `addr` for command `cmd`.
fn quota_len(cmd: u64) -> u64 {
    match (cmd as u32) >> 8 {
        0x80_0004 => 4,              // Q_GETFMT
        0x80_0005 => 24,             // Q_GETINFO: struct if_dqinfo
        0x80_0007 | 0x80_0009 => 72, // Q_GETQUOTA, Q_GETNEXTQUOTA: struct if_(next)dqblk
        0x5803 | 0x5809 => 112,      // Q_XGETQUOTA, Q_XGETNEXTQUOTA: struct fs_disk_quota
        0x5805 | 0x5808 => 160,      // Q_XGETQSTAT(V): struct fs_quota_stat(v)
        _ => 0,
    }
}

/// quotactl(cmd, special, id, addr).
fn quotactl(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    push(out, c.arg(3), quota_len(c.arg(0)));
}

/// quotactl_fd(fd, cmd, id, addr).
fn quotactl_fd(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    push(out, c.arg(3), quota_len(c.arg(1)));
}

/// semctl(id, num, cmd, arg): status and info commands.
fn semctl(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    let len = match c.arg(2) & !0x100 {
        2 | 18 | 20 => SEMID_DS,               // IPC_STAT, SEM_STAT, SEM_STAT_ANY
        3 | 19 => SEMINFO,                     // IPC_INFO, SEM_INFO
        13 => 2 * semaphores_in_set(c.arg(0)), // GETALL: one unsigned short per semaphore
        _ => 0,
    };
    push(out, c.arg(3), len);
}

/// How many semaphores set `semid` holds, asked of the kernel by the recorder (which shares the
/// tracee's IPC namespace unless the tracee left it); if it cannot tell, the most a set may
/// hold (`SEMMSL`): over-approximating an output is safe (see [`crate::out_regions`]).
fn semaphores_in_set(semid: u64) -> u64 {
    const SEMMSL: u64 = 32_000;
    let Ok(id) = i32::try_from(semid) else {
        return SEMMSL;
    };
    // SAFETY: IPC_STAT writes one `semid_ds` into `ds`, a valid, writable value of that type
    // (all-zero is a valid `semid_ds`).
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the variadic argument is the `struct semid_ds *` IPC_STAT expects.
    let r = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
    if r == 0 {
        ds.sem_nsems as u64
    } else {
        SEMMSL
    }
}

/// setsockopt(fd, level, name, val, len): replacing an iptables/ip6tables table
/// (`IPT_SO_SET_REPLACE`, `IP6T_SO_SET_REPLACE`) writes the old table's counters to the array
/// `struct ipt_replace` points at (`num_counters` of `struct xt_counters`, 16 bytes each).
fn setsockopt(c: &Call, mem: &dyn Memory, out: &mut Vec<Region>) {
    const SO_SET_REPLACE: u64 = 64; // IPT_SO_SET_REPLACE == IP6T_SO_SET_REPLACE
    const REPLACE_NUM_COUNTERS: u64 = 84; // offsetof(struct ipt_replace, num_counters)
    const REPLACE_COUNTERS: u64 = 88; // offsetof(struct ipt_replace, counters)
    const XT_COUNTERS: u64 = 16;
    let level = c.arg(1) as i32;
    if !(level == libc::SOL_IP || level == libc::SOL_IPV6) || c.arg(2) != SO_SET_REPLACE {
        return;
    }
    let repl = c.arg(3);
    if let (Some(n), Some(at)) = (
        mem.read_u32(repl + REPLACE_NUM_COUNTERS),
        mem.read_u64(repl + REPLACE_COUNTERS),
    ) {
        push(out, at, u64::from(n) * XT_COUNTERS);
    }
}

/// shmctl(id, cmd, buf): status and info commands.
fn shmctl(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    let len = match c.arg(1) & !0x100 {
        2 | 13 | 15 => SHMID_DS, // IPC_STAT, SHM_STAT, SHM_STAT_ANY
        3 => SHMINFO,            // IPC_INFO
        14 => SHM_INFO,          // SHM_INFO
        _ => 0,
    };
    push(out, c.arg(2), len);
}

/// msgctl(id, cmd, buf): status and info commands.
fn msgctl(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    let len = match c.arg(1) & !0x100 {
        2 | 11 | 13 => MSQID_DS, // IPC_STAT, MSG_STAT, MSG_STAT_ANY
        3 | 12 => MSGINFO,       // IPC_INFO, MSG_INFO
        _ => 0,
    };
    push(out, c.arg(2), len);
}

/// keyctl: the commands that copy a description, payload or capability set out.
/// Not covered: KEYCTL_PKEY_{ENCRYPT,DECRYPT,SIGN} outputs.
fn keyctl(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    match c.arg(0) {
        // KEYCTL_DESCRIBE, KEYCTL_READ, KEYCTL_GET_SECURITY, KEYCTL_DH_COMPUTE
        6 | 11 | 17 | 23 => push(out, c.arg(2), c.ret().min(c.arg(3))),
        24 => push(out, c.arg(4), 56), // KEYCTL_PKEY_QUERY: struct keyctl_pkey_query
        31 => push(out, c.arg(1), c.ret().min(c.arg(2))), // KEYCTL_CAPABILITIES
        _ => {}
    }
}

/// name_to_handle_at(dfd, path, handle, mount_id, flags): the file_handle header (and on
/// success its `handle_bytes` payload) plus the mount id (u64 with AT_HANDLE_MNT_ID_UNIQUE).
fn name_to_handle_at(c: &Call, mem: &dyn Memory, out: &mut Vec<Region>) {
    let handle = c.arg(2);
    let payload = if c.result >= 0 && handle != 0 {
        mem.read_u32(handle).map_or(0, u64::from)
    } else {
        0
    };
    push(out, handle, 8 + payload);
    push(out, c.arg(3), if c.arg(4) & 1 != 0 { 8 } else { 4 });
}

/// lsm_get_self_attr(attr, ctx, size*, flags): `*size` always, `*size` ctx bytes on success.
fn lsm_get_self_attr(c: &Call, mem: &dyn Memory, out: &mut Vec<Region>) {
    let size = c.arg(2);
    push(out, size, 4);
    if c.result >= 0 && size != 0 {
        push(out, c.arg(1), mem.read_u32(size).map_or(0, u64::from));
    }
}

/// lsm_list_modules(ids, size*, flags): `*size` always, `result` u64 ids on success.
fn lsm_list_modules(c: &Call, _: &dyn Memory, out: &mut Vec<Region>) {
    push(out, c.arg(1), 4);
    if c.result >= 0 {
        push(out, c.arg(0), c.ret().saturating_mul(8));
    }
}
