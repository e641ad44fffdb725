use super::*;
use std::mem::size_of;

/// Fake tracee memory: one contiguous segment starting at `base`.
struct FakeMem {
    base: u64,
    bytes: Vec<u8>,
}

impl FakeMem {
    fn new(base: u64, len: usize) -> Self {
        FakeMem {
            base,
            bytes: vec![0; len],
        }
    }
    fn put(&mut self, addr: u64, data: &[u8]) {
        let off = (addr - self.base) as usize;
        self.bytes[off..off + data.len()].copy_from_slice(data);
    }
    fn put_u64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_le_bytes());
    }
    fn put_u32(&mut self, addr: u64, v: u32) {
        self.put(addr, &v.to_le_bytes());
    }
}

impl Memory for FakeMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(off) = addr.checked_sub(self.base) else {
            return false;
        };
        let Some(end) = (off as usize).checked_add(buf.len()) else {
            return false;
        };
        match self.bytes.get(off as usize..end) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

const NO_MEM: FakeMem = FakeMem {
    base: 0,
    bytes: Vec::new(),
};

fn call(nr: i64, args: [u64; 6], result: i64) -> Call {
    Call {
        nr: nr as u64,
        args,
        result,
    }
}

fn r(addr: u64, len: u64) -> Region {
    Region { addr, len }
}

#[test]
fn table_sorted_unique() {
    for w in TABLE.windows(2) {
        assert!(w[0].nr < w[1].nr, "{} before {}", w[0].name, w[1].name);
    }
    let mut names: Vec<_> = TABLE.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), TABLE.len());
    assert_eq!(TABLE.last().map(|s| s.nr), Some(462));
}

#[test]
fn numbers_match_libc() {
    macro_rules! check {
        ($($n:ident),* $(,)?) => {{
            let mut count = 0usize;
            $(
                let name = &stringify!($n)[4..];
                let s = by_name(name).unwrap_or_else(|| panic!("{name} missing from the table"));
                assert_eq!(s.nr, libc::$n as u64, "{name}");
                count += 1;
            )*
            count
        }};
    }
    let listed = check!(
        SYS_read,
        SYS_write,
        SYS_open,
        SYS_close,
        SYS_stat,
        SYS_fstat,
        SYS_lstat,
        SYS_poll,
        SYS_lseek,
        SYS_mmap,
        SYS_mprotect,
        SYS_munmap,
        SYS_brk,
        SYS_rt_sigaction,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_ioctl,
        SYS_pread64,
        SYS_pwrite64,
        SYS_readv,
        SYS_writev,
        SYS_access,
        SYS_pipe,
        SYS_select,
        SYS_sched_yield,
        SYS_mremap,
        SYS_msync,
        SYS_mincore,
        SYS_madvise,
        SYS_shmget,
        SYS_shmat,
        SYS_shmctl,
        SYS_dup,
        SYS_dup2,
        SYS_pause,
        SYS_nanosleep,
        SYS_getitimer,
        SYS_alarm,
        SYS_setitimer,
        SYS_getpid,
        SYS_sendfile,
        SYS_socket,
        SYS_connect,
        SYS_accept,
        SYS_sendto,
        SYS_recvfrom,
        SYS_sendmsg,
        SYS_recvmsg,
        SYS_shutdown,
        SYS_bind,
        SYS_listen,
        SYS_getsockname,
        SYS_getpeername,
        SYS_socketpair,
        SYS_setsockopt,
        SYS_getsockopt,
        SYS_clone,
        SYS_fork,
        SYS_vfork,
        SYS_execve,
        SYS_exit,
        SYS_wait4,
        SYS_kill,
        SYS_uname,
        SYS_semget,
        SYS_semop,
        SYS_semctl,
        SYS_shmdt,
        SYS_msgget,
        SYS_msgsnd,
        SYS_msgrcv,
        SYS_msgctl,
        SYS_fcntl,
        SYS_flock,
        SYS_fsync,
        SYS_fdatasync,
        SYS_truncate,
        SYS_ftruncate,
        SYS_getdents,
        SYS_getcwd,
        SYS_chdir,
        SYS_fchdir,
        SYS_rename,
        SYS_mkdir,
        SYS_rmdir,
        SYS_creat,
        SYS_link,
        SYS_unlink,
        SYS_symlink,
        SYS_readlink,
        SYS_chmod,
        SYS_fchmod,
        SYS_chown,
        SYS_fchown,
        SYS_lchown,
        SYS_umask,
        SYS_gettimeofday,
        SYS_getrlimit,
        SYS_getrusage,
        SYS_sysinfo,
        SYS_times,
        SYS_ptrace,
        SYS_getuid,
        SYS_syslog,
        SYS_getgid,
        SYS_setuid,
        SYS_setgid,
        SYS_geteuid,
        SYS_getegid,
        SYS_setpgid,
        SYS_getppid,
        SYS_getpgrp,
        SYS_setsid,
        SYS_setreuid,
        SYS_setregid,
        SYS_getgroups,
        SYS_setgroups,
        SYS_setresuid,
        SYS_getresuid,
        SYS_setresgid,
        SYS_getresgid,
        SYS_getpgid,
        SYS_setfsuid,
        SYS_setfsgid,
        SYS_getsid,
        SYS_capget,
        SYS_capset,
        SYS_rt_sigpending,
        SYS_rt_sigtimedwait,
        SYS_rt_sigqueueinfo,
        SYS_rt_sigsuspend,
        SYS_sigaltstack,
        SYS_utime,
        SYS_mknod,
        SYS_uselib,
        SYS_personality,
        SYS_ustat,
        SYS_statfs,
        SYS_fstatfs,
        SYS_sysfs,
        SYS_getpriority,
        SYS_setpriority,
        SYS_sched_setparam,
        SYS_sched_getparam,
        SYS_sched_setscheduler,
        SYS_sched_getscheduler,
        SYS_sched_get_priority_max,
        SYS_sched_get_priority_min,
        SYS_sched_rr_get_interval,
        SYS_mlock,
        SYS_munlock,
        SYS_mlockall,
        SYS_munlockall,
        SYS_vhangup,
        SYS_modify_ldt,
        SYS_pivot_root,
        SYS__sysctl,
        SYS_prctl,
        SYS_arch_prctl,
        SYS_adjtimex,
        SYS_setrlimit,
        SYS_chroot,
        SYS_sync,
        SYS_acct,
        SYS_settimeofday,
        SYS_mount,
        SYS_umount2,
        SYS_swapon,
        SYS_swapoff,
        SYS_reboot,
        SYS_sethostname,
        SYS_setdomainname,
        SYS_iopl,
        SYS_ioperm,
        SYS_init_module,
        SYS_delete_module,
        SYS_quotactl,
        SYS_nfsservctl,
        SYS_getpmsg,
        SYS_putpmsg,
        SYS_afs_syscall,
        SYS_tuxcall,
        SYS_security,
        SYS_gettid,
        SYS_readahead,
        SYS_setxattr,
        SYS_lsetxattr,
        SYS_fsetxattr,
        SYS_getxattr,
        SYS_lgetxattr,
        SYS_fgetxattr,
        SYS_listxattr,
        SYS_llistxattr,
        SYS_flistxattr,
        SYS_removexattr,
        SYS_lremovexattr,
        SYS_fremovexattr,
        SYS_tkill,
        SYS_time,
        SYS_futex,
        SYS_sched_setaffinity,
        SYS_sched_getaffinity,
        SYS_set_thread_area,
        SYS_io_setup,
        SYS_io_destroy,
        SYS_io_getevents,
        SYS_io_submit,
        SYS_io_cancel,
        SYS_get_thread_area,
        SYS_lookup_dcookie,
        SYS_epoll_create,
        SYS_epoll_ctl_old,
        SYS_epoll_wait_old,
        SYS_remap_file_pages,
        SYS_getdents64,
        SYS_set_tid_address,
        SYS_restart_syscall,
        SYS_semtimedop,
        SYS_fadvise64,
        SYS_timer_create,
        SYS_timer_settime,
        SYS_timer_gettime,
        SYS_timer_getoverrun,
        SYS_timer_delete,
        SYS_clock_settime,
        SYS_clock_gettime,
        SYS_clock_getres,
        SYS_clock_nanosleep,
        SYS_exit_group,
        SYS_epoll_wait,
        SYS_epoll_ctl,
        SYS_tgkill,
        SYS_utimes,
        SYS_vserver,
        SYS_mbind,
        SYS_set_mempolicy,
        SYS_get_mempolicy,
        SYS_mq_open,
        SYS_mq_unlink,
        SYS_mq_timedsend,
        SYS_mq_timedreceive,
        SYS_mq_notify,
        SYS_mq_getsetattr,
        SYS_kexec_load,
        SYS_waitid,
        SYS_add_key,
        SYS_request_key,
        SYS_keyctl,
        SYS_ioprio_set,
        SYS_ioprio_get,
        SYS_inotify_init,
        SYS_inotify_add_watch,
        SYS_inotify_rm_watch,
        SYS_migrate_pages,
        SYS_openat,
        SYS_mkdirat,
        SYS_mknodat,
        SYS_fchownat,
        SYS_futimesat,
        SYS_newfstatat,
        SYS_unlinkat,
        SYS_renameat,
        SYS_linkat,
        SYS_symlinkat,
        SYS_readlinkat,
        SYS_fchmodat,
        SYS_faccessat,
        SYS_pselect6,
        SYS_ppoll,
        SYS_unshare,
        SYS_set_robust_list,
        SYS_get_robust_list,
        SYS_splice,
        SYS_tee,
        SYS_sync_file_range,
        SYS_vmsplice,
        SYS_move_pages,
        SYS_utimensat,
        SYS_epoll_pwait,
        SYS_signalfd,
        SYS_timerfd_create,
        SYS_eventfd,
        SYS_fallocate,
        SYS_timerfd_settime,
        SYS_timerfd_gettime,
        SYS_accept4,
        SYS_signalfd4,
        SYS_eventfd2,
        SYS_epoll_create1,
        SYS_dup3,
        SYS_pipe2,
        SYS_inotify_init1,
        SYS_preadv,
        SYS_pwritev,
        SYS_rt_tgsigqueueinfo,
        SYS_perf_event_open,
        SYS_recvmmsg,
        SYS_fanotify_init,
        SYS_fanotify_mark,
        SYS_prlimit64,
        SYS_name_to_handle_at,
        SYS_open_by_handle_at,
        SYS_clock_adjtime,
        SYS_syncfs,
        SYS_sendmmsg,
        SYS_setns,
        SYS_getcpu,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_kcmp,
        SYS_finit_module,
        SYS_sched_setattr,
        SYS_sched_getattr,
        SYS_renameat2,
        SYS_seccomp,
        SYS_getrandom,
        SYS_memfd_create,
        SYS_kexec_file_load,
        SYS_bpf,
        SYS_execveat,
        SYS_userfaultfd,
        SYS_membarrier,
        SYS_mlock2,
        SYS_copy_file_range,
        SYS_preadv2,
        SYS_pwritev2,
        SYS_pkey_mprotect,
        SYS_pkey_alloc,
        SYS_pkey_free,
        SYS_statx,
        SYS_rseq,
        SYS_pidfd_send_signal,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_open_tree,
        SYS_move_mount,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_pidfd_open,
        SYS_clone3,
        SYS_close_range,
        SYS_openat2,
        SYS_pidfd_getfd,
        SYS_faccessat2,
        SYS_process_madvise,
        SYS_epoll_pwait2,
        SYS_mount_setattr,
        SYS_quotactl_fd,
        SYS_landlock_create_ruleset,
        SYS_landlock_add_rule,
        SYS_landlock_restrict_self,
        SYS_memfd_secret,
        SYS_process_mrelease,
        SYS_futex_waitv,
        SYS_set_mempolicy_home_node,
        SYS_fchmodat2,
        SYS_mseal
    );
    // Numbers libc has no constant for.
    let extra = [
        174, 177, 178, 333, 451, 453, 454, 455, 456, 457, 458, 459, 460, 461,
    ];
    for nr in extra {
        assert!(lookup(nr).is_some(), "{nr}");
    }
    assert_eq!(TABLE.len(), listed + extra.len());
}

#[test]
fn names_round_trip() {
    for s in TABLE {
        assert_eq!(name(s.nr), s.name);
        assert_eq!(by_name(s.name).map(|t| t.nr), Some(s.nr));
        assert!(std::ptr::eq(lookup(s.nr).unwrap(), s));
    }
    assert_eq!(name(0), "read");
    assert_eq!(name(999), "syscall_999");
    assert_eq!(name(335), "syscall_335");
    assert!(lookup(0x4000_0000).is_none()); // x32 syscall bit
    assert!(by_name("no_such_call").is_none());
}

#[test]
fn policy() {
    let replay = |n: &str| by_name(n).map(|s| s.replay);
    for n in [
        "munmap",
        "mprotect",
        "brk",
        "mremap",
        "madvise",
        "arch_prctl",
        "rt_sigaction",
        "rt_sigprocmask",
        "sigaltstack",
        "rt_sigreturn",
        "set_robust_list",
        "personality",
        "prctl",
        "mlock",
        "munlock",
        "mlockall",
        "munlockall",
    ] {
        assert_eq!(replay(n), Some(Replay::Execute), "{n}");
    }
    assert_eq!(replay("mmap"), Some(Replay::Mmap));
    assert_eq!(replay("exit"), Some(Replay::Exit));
    assert_eq!(replay("exit_group"), Some(Replay::Exit));
    for n in [
        "rseq",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "userfaultfd",
        "memfd_secret",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "bpf",
    ] {
        assert_eq!(replay(n), Some(Replay::Deny(libc::ENOSYS)), "{n}");
    }
    // The recorder emulates ptrace between recorded tasks; replay returns the recorded
    // results and writes.
    assert_eq!(replay("ptrace"), Some(Replay::Emulate));
    for n in ["clone", "clone3", "fork", "vfork"] {
        assert_eq!(replay(n), Some(Replay::Clone), "{n}");
    }
    assert_eq!(
        replay("set_tid_address"),
        Some(Replay::ExecuteRecordedResult)
    );
    for n in ["mmap", "shmat", "shmdt"] {
        assert_eq!(replay(n), Some(Replay::Mmap), "{n}");
    }
    for n in [
        "read",
        "getpid",
        "futex",
        "ioctl",
        "openat",
        "memfd_create",
        "wait4",
        "nanosleep",
    ] {
        assert_eq!(replay(n), Some(Replay::Emulate), "{n}");
    }
    assert_eq!(replay("execve"), Some(Replay::Exec));
    assert_eq!(replay("execveat"), Some(Replay::Exec));
    assert_eq!(replay("seccomp"), Some(Replay::Execute));
    assert_eq!(by_name("read").unwrap().unsupported_message(), None);
}

#[test]
fn read_and_negative_result() {
    let c = call(libc::SYS_read, [3, 0x1000, 100, 0, 0, 0], 42);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 42)]);
    let c = call(
        libc::SYS_read,
        [3, 0x1000, 100, 0, 0, 0],
        -libc::EAGAIN as i64,
    );
    assert!(out_regions(&c, &NO_MEM).is_empty());
    let c = call(libc::SYS_read, [3, 0x1000, 100, 0, 0, 0], 0);
    assert!(out_regions(&c, &NO_MEM).is_empty());
    let c = call(libc::SYS_write, [1, 0x1000, 100, 0, 0, 0], 100);
    assert!(out_regions(&c, &NO_MEM).is_empty());
    let c = call(999, [1, 0x1000, 100, 0, 0, 0], 100);
    assert!(out_regions(&c, &NO_MEM).is_empty());
}

#[test]
fn null_pointers_skipped() {
    // gettimeofday(tv, NULL)
    let c = call(libc::SYS_gettimeofday, [0x2000, 0, 0, 0, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x2000, 16)]);
    // wait4(pid, NULL, 0, NULL)
    let c = call(libc::SYS_wait4, [5, 0, 0, 0, 0, 0], 5);
    assert!(out_regions(&c, &NO_MEM).is_empty());
    // accept4 with NULL addr and addrlen
    let c = call(libc::SYS_accept4, [3, 0, 0, 0, 0, 0], 4);
    assert!(out_regions(&c, &NO_MEM).is_empty());
}

#[test]
fn readv_scatters_result() {
    let mut m = FakeMem::new(0x10_000, 0x100);
    m.put_u64(0x10_000, 0xA000);
    m.put_u64(0x10_008, 10);
    m.put_u64(0x10_010, 0xB000);
    m.put_u64(0x10_018, 0); // empty iovec
    m.put_u64(0x10_020, 0xC000);
    m.put_u64(0x10_028, 100);
    m.put_u64(0x10_030, 0xD000);
    m.put_u64(0x10_038, 100);
    let c = call(libc::SYS_readv, [3, 0x10_000, 4, 0, 0, 0], 25);
    assert_eq!(out_regions(&c, &m), vec![r(0xA000, 10), r(0xC000, 15)]);
    let c = call(libc::SYS_preadv2, [3, 0x10_000, 4, 0, 0, 0], 500);
    assert_eq!(
        out_regions(&c, &m),
        vec![r(0xA000, 10), r(0xC000, 100), r(0xD000, 100)]
    );
}

#[test]
fn recvmsg_covers_header_name_data_control() {
    let mut m = FakeMem::new(0x10_000, 0x200);
    let msg = 0x10_000;
    m.put_u64(msg, 0x5000); // name
    m.put_u32(msg + 8, 16); // namelen (after the call)
    m.put_u64(msg + 16, 0x10_100); // iov
    m.put_u64(msg + 24, 2); // iovlen
    m.put_u64(msg + 32, 0x6000); // control
    m.put_u64(msg + 40, 24); // controllen (after the call)
    m.put_u64(0x10_100, 0x7000);
    m.put_u64(0x10_108, 8);
    m.put_u64(0x10_110, 0x8000);
    m.put_u64(0x10_118, 64);
    let c = call(libc::SYS_recvmsg, [3, msg, 0, 0, 0, 0], 20);
    assert_eq!(
        out_regions(&c, &m),
        vec![
            r(msg, 56),
            r(0x5000, 16),
            r(0x7000, 8),
            r(0x8000, 12),
            r(0x6000, 24)
        ]
    );
}

#[test]
fn recvmmsg_entries() {
    let mut m = FakeMem::new(0x10_000, 0x400);
    let vec = 0x10_000;
    for i in 0..2u64 {
        let e = vec + 64 * i;
        m.put_u64(e + 16, 0x10_200 + 16 * i); // iov
        m.put_u64(e + 24, 1);
        m.put_u32(e + 56, 5 + i as u32); // msg_len
        m.put_u64(0x10_200 + 16 * i, 0x9000 + 0x100 * i);
        m.put_u64(0x10_208 + 16 * i, 100);
    }
    let c = call(libc::SYS_recvmmsg, [3, vec, 8, 0, 0, 0], 2);
    assert_eq!(
        out_regions(&c, &m),
        vec![
            r(vec, 64),
            r(vec, 56),
            r(0x9000, 5),
            r(vec + 64, 64),
            r(vec + 64, 56),
            r(0x9100, 6)
        ]
    );
}

#[test]
fn select_fd_sets_and_timeout() {
    let c = call(libc::SYS_select, [65, 0x1000, 0, 0x3000, 0x4000, 0], 1);
    assert_eq!(
        out_regions(&c, &NO_MEM),
        vec![r(0x1000, 16), r(0x3000, 16), r(0x4000, 16)]
    );
    let c = call(libc::SYS_pselect6, [3, 0x1000, 0x2000, 0, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 8), r(0x2000, 8)]);
}

#[test]
fn ioctl_requests() {
    let c = call(libc::SYS_ioctl, [1, libc::TIOCGWINSZ, 0x1000, 0, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 8)]);
    let c = call(libc::SYS_ioctl, [1, libc::TCGETS, 0x1000, 0, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 60)]);
    let c = call(
        libc::SYS_ioctl,
        [1, libc::TCGETS, 0x1000, 0, 0, 0],
        -libc::ENOTTY as i64,
    );
    assert!(out_regions(&c, &NO_MEM).is_empty());
    let c = call(libc::SYS_ioctl, [1, libc::FIONBIO, 0x1000, 0, 0, 0], 0);
    assert!(out_regions(&c, &NO_MEM).is_empty());
    // Upper 32 bits of the request are ignored by the kernel.
    let c = call(
        libc::SYS_ioctl,
        [1, libc::FIONREAD | 0xFFFF_0000_0000, 0x1000, 0, 0, 0],
        0,
    );
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 4)]);
    for req in [
        libc::TCGETS,
        libc::TIOCGWINSZ,
        libc::FIONREAD,
        libc::TIOCOUTQ,
        libc::TIOCGPGRP,
        libc::TIOCGSID,
        libc::FIONBIO,
        libc::FIOCLEX,
        libc::TCGETS2,
        libc::TIOCGPTN,
    ] {
        assert!(ioctl_known(req), "{req:#x}");
    }
    // Unknown _IOR('x', 1, [u8; 24]): encoded size covered, but not "known".
    let ior = (2u64 << 30) | (24 << 16) | (u64::from(b'x') << 8) | 1;
    assert!(!ioctl_known(ior));
    let c = call(libc::SYS_ioctl, [1, ior, 0x1000, 0, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 24)]);
    // Unknown _IOW: nothing.
    let iow = (1u64 << 30) | (24 << 16) | (u64::from(b'x') << 8) | 1;
    let c = call(libc::SYS_ioctl, [1, iow, 0x1000, 0, 0, 0], 0);
    assert!(out_regions(&c, &NO_MEM).is_empty());
    // SIOCGIFCONF: the ifconf and the ifc_len bytes of its buffer.
    let mut m = FakeMem::new(0x10_000, 16);
    m.put_u32(0x10_000, 80);
    m.put_u64(0x10_008, 0x5000);
    let c = call(libc::SYS_ioctl, [3, 0x8912, 0x10_000, 0, 0, 0], 0);
    assert_eq!(out_regions(&c, &m), vec![r(0x10_000, 16), r(0x5000, 80)]);
}

#[test]
fn wait4_and_waitid() {
    let c = call(libc::SYS_wait4, [u64::MAX, 0x1000, 0, 0x2000, 0, 0], 77);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 4), r(0x2000, 144)]);
    let c = call(libc::SYS_waitid, [0, 0, 0x1000, 4, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 128)]);
}

#[test]
fn sleeps_write_rem_on_eintr() {
    let eintr = -libc::EINTR as i64;
    let c = call(libc::SYS_nanosleep, [0x1000, 0x2000, 0, 0, 0, 0], eintr);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x2000, 16)]);
    let c = call(
        libc::SYS_clock_nanosleep,
        [1, 0, 0x1000, 0x2000, 0, 0],
        eintr,
    );
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x2000, 16)]);
    let c = call(libc::SYS_nanosleep, [0x1000, 0, 0, 0, 0, 0], eintr);
    assert!(out_regions(&c, &NO_MEM).is_empty());
}

#[test]
fn sockaddr_out_params() {
    let mut m = FakeMem::new(0x10_000, 8);
    m.put_u32(0x10_000, 16);
    let c = call(libc::SYS_accept4, [3, 0x5000, 0x10_000, 0, 0, 0], 4);
    assert_eq!(out_regions(&c, &m), vec![r(0x10_000, 4), r(0x5000, 16)]);
    // Reported lengths beyond sockaddr_storage are capped.
    m.put_u32(0x10_000, 4000);
    assert_eq!(out_regions(&c, &m), vec![r(0x10_000, 4), r(0x5000, 128)]);
    // recvfrom: data plus source address.
    m.put_u32(0x10_000, 16);
    let c = call(libc::SYS_recvfrom, [3, 0x7000, 100, 0, 0x5000, 0x10_000], 9);
    assert_eq!(
        out_regions(&c, &m),
        vec![r(0x7000, 9), r(0x10_000, 4), r(0x5000, 16)]
    );
    // getsockopt: *optlen bytes of optval, plus optlen.
    m.put_u32(0x10_000, 4);
    let c = call(libc::SYS_getsockopt, [3, 1, 7, 0x5000, 0x10_000, 0], 0);
    assert_eq!(out_regions(&c, &m), vec![r(0x5000, 4), r(0x10_000, 4)]);
}

#[test]
fn length_variants() {
    // getgroups(0, list) only counts.
    let c = call(libc::SYS_getgroups, [0, 0x1000, 0, 0, 0, 0], 5);
    assert!(out_regions(&c, &NO_MEM).is_empty());
    let c = call(libc::SYS_getgroups, [32, 0x1000, 0, 0, 0, 0], 5);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 20)]);
    // getxattr with a small buffer.
    let c = call(libc::SYS_getxattr, [0x1, 0x2, 0x3000, 4, 0, 0], 4);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x3000, 4)]);
    // epoll_wait: 12-byte packed events.
    let c = call(libc::SYS_epoll_wait, [5, 0x1000, 64, 0, 0, 0], 3);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 36)]);
    // mincore: one byte per page.
    let c = call(libc::SYS_mincore, [0x7000, 4097, 0x1000, 0, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 2)]);
    // msgrcv: mtype + text.
    let c = call(libc::SYS_msgrcv, [1, 0x1000, 100, 0, 0, 0], 10);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 18)]);
    // Absurd lengths are clamped.
    let c = call(
        libc::SYS_poll,
        [0x1000, u64::MAX / 2, 0, 0, 0, 0],
        -libc::EINVAL as i64,
    );
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, MAX_REGION_LEN)]);
}

#[test]
fn custom_commands() {
    let c = call(
        libc::SYS_fcntl,
        [3, libc::F_GETLK as u64, 0x1000, 0, 0, 0],
        0,
    );
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 32)]);
    let c = call(
        libc::SYS_fcntl,
        [3, libc::F_SETFL as u64, 0x800, 0, 0, 0],
        0,
    );
    assert!(out_regions(&c, &NO_MEM).is_empty());
    let wake_op = (libc::FUTEX_WAKE_OP | libc::FUTEX_PRIVATE_FLAG) as u64;
    let c = call(libc::SYS_futex, [0x1000, wake_op, 1, 1, 0x2000, 0], 1);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x2000, 4)]);
    let wait = libc::FUTEX_WAIT as u64;
    let c = call(
        libc::SYS_futex,
        [0x1000, wait, 1, 0, 0, 0],
        -libc::EAGAIN as i64,
    );
    assert!(out_regions(&c, &NO_MEM).is_empty());
    let c = call(libc::SYS_prlimit64, [0, 3, 0, 0x1000, 0, 0], 0);
    assert_eq!(out_regions(&c, &NO_MEM), vec![r(0x1000, 16)]);
}

#[test]
fn struct_sizes_match_libc() {
    use size::*;
    let pairs: &[(&str, u64, usize)] = &[
        ("stat", STAT, size_of::<libc::stat>()),
        ("statx", STATX, size_of::<libc::statx>()),
        ("statfs", STATFS, size_of::<libc::statfs>()),
        ("utsname", UTSNAME, size_of::<libc::utsname>()),
        ("sysinfo", SYSINFO, size_of::<libc::sysinfo>()),
        ("rusage", RUSAGE, size_of::<libc::rusage>()),
        ("tms", TMS, size_of::<libc::tms>()),
        ("timespec", TIMESPEC, size_of::<libc::timespec>()),
        ("timeval", TIMEVAL, size_of::<libc::timeval>()),
        ("itimerspec", ITIMERSPEC, size_of::<libc::itimerspec>()),
        ("itimerval", ITIMERVAL, size_of::<libc::itimerval>()),
        ("rlimit", RLIMIT, size_of::<libc::rlimit>()),
        ("siginfo_t", SIGINFO, size_of::<libc::siginfo_t>()),
        ("epoll_event", EPOLL_EVENT, size_of::<libc::epoll_event>()),
        ("pollfd", POLLFD, size_of::<libc::pollfd>()),
        ("msghdr", MSGHDR, size_of::<libc::msghdr>()),
        ("mmsghdr", MMSGHDR, size_of::<libc::mmsghdr>()),
        ("iovec", IOVEC, size_of::<libc::iovec>()),
        (
            "sockaddr_storage",
            SOCKADDR_STORAGE,
            size_of::<libc::sockaddr_storage>(),
        ),
        ("stack_t", STACK_T, size_of::<libc::stack_t>()),
        ("timex", TIMEX, size_of::<libc::timex>()),
        ("winsize", WINSIZE, size_of::<libc::winsize>()),
        ("termios", TERMIOS, size_of::<libc::termios>()),
        ("termios2", TERMIOS2, size_of::<libc::termios2>()),
        ("flock", FLOCK, size_of::<libc::flock>()),
        ("sched_param", SCHED_PARAM, size_of::<libc::sched_param>()),
        ("mq_attr", MQ_ATTR, size_of::<libc::mq_attr>()),
        ("msqid_ds", MSQID_DS, size_of::<libc::msqid_ds>()),
        ("semid_ds", SEMID_DS, size_of::<libc::semid_ds>()),
        ("shmid_ds", SHMID_DS, size_of::<libc::shmid_ds>()),
        ("seminfo", SEMINFO, size_of::<libc::seminfo>()),
        ("msginfo", MSGINFO, size_of::<libc::msginfo>()),
        ("ifreq", IFREQ, size_of::<libc::ifreq>()),
        ("fd_set bits per word", 8, size_of::<u64>()),
    ];
    for &(name, ours, theirs) in pairs {
        assert_eq!(ours, theirs as u64, "{name}");
    }
    // mmsghdr = msghdr + u32 msg_len (+ padding).
    assert_eq!(std::mem::offset_of!(libc::mmsghdr, msg_len) as u64, MSGHDR);
}

#[test]
fn hostile_arguments_do_not_panic() {
    struct AllOnes;
    impl Memory for AllOnes {
        fn read(&self, _: u64, buf: &mut [u8]) -> bool {
            buf.fill(0xFF);
            true
        }
    }
    for s in TABLE {
        for result in [i64::MAX, 1 << 40, 0, -4] {
            for arg in [u64::MAX, u64::MAX - 7, 1 << 63, 0x1000] {
                let c = Call {
                    nr: s.nr,
                    args: [arg; 6],
                    result,
                };
                for reg in out_regions(&c, &AllOnes) {
                    assert!(reg.len > 0 && reg.len <= MAX_REGION_LEN, "{}", s.name);
                    assert!(reg.addr.checked_add(reg.len).is_some(), "{}", s.name);
                }
                let _ = out_regions(&c, &NO_MEM);
            }
        }
    }
}

/// `semctl(GETALL)` writes one `unsigned short` per semaphore of the set, a count only the
/// kernel knows: asked of it for a real set of 3.
#[test]
fn semctl_getall_writes_one_short_per_semaphore() {
    // SAFETY: plain System V calls on a private set this test creates and removes.
    let id = unsafe { libc::semget(libc::IPC_PRIVATE, 3, 0o600) };
    assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
    let c = call(
        libc::SYS_semctl,
        [id as u64, 0, libc::GETALL as u64, 0x1000, 0, 0],
        0,
    );
    let regions = out_regions(&c, &NO_MEM);
    // SAFETY: removes the set made above.
    unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
    assert_eq!(regions, vec![r(0x1000, 6)]);
}

/// Replacing an iptables table writes the old counters where `ipt_replace.counters` points,
/// `num_counters` of 16 bytes; other socket options write nothing.
#[test]
fn setsockopt_ipt_replace_writes_the_counters() {
    let mut mem = FakeMem::new(0x1000, 0x100);
    mem.put_u32(0x1000 + 84, 3); // num_counters
    mem.put_u64(0x1000 + 88, 0x5000); // counters
    let replace = |level: i32| {
        call(
            libc::SYS_setsockopt,
            [3, level as u64, 64, 0x1000, 0x100, 0],
            0,
        )
    };
    assert_eq!(
        out_regions(&replace(libc::SOL_IP), &mem),
        vec![r(0x5000, 48)]
    );
    assert_eq!(
        out_regions(&replace(libc::SOL_IPV6), &mem),
        vec![r(0x5000, 48)]
    );
    assert!(out_regions(&replace(libc::SOL_SOCKET), &mem).is_empty());
}

mod buffered;
