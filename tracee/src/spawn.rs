//! Starting a program as a tracee: forked, traced from its first instruction, with address-space
//! randomization off, pinned to one CPU, `rdtsc` trapping, and (optionally) every syscall trapped
//! by seccomp.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;

use crate::seccomp;
use crate::stop::Stop;
use crate::tracee::Tracee;

/// The ptrace options of every tracee (`PTRACE_O_*`): syscalls trapped by seccomp, exec,
/// clone, fork and vfork reported, killed if the tracer ends, syscall-stops marked.
pub const PTRACE_OPTIONS: libc::c_int = libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_EXITKILL
    | libc::PTRACE_O_TRACESYSGOOD;

/// How to start a tracee.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The file to execute.
    pub program: PathBuf,
    /// The argument vector, `argv[0]` included.
    pub argv: Vec<String>,
    /// The environment, as `NAME=value` strings.
    pub env: Vec<String>,
    /// CPU to pin the tracee to, so CPU numbers it can observe do not vary. The calling
    /// thread (the tracer) is pinned there too, and the tracee inherits its affinity.
    pub cpu: Option<usize>,
    /// Make `rdtsc`/`rdtscp` fault (`PR_SET_TSC`), so the tracer can record or replay them.
    pub trap_tsc: bool,
    /// Install the trap-everything seccomp filter.
    pub seccomp: bool,
    /// Let syscalls made from this instruction pointer (the in-process library's own
    /// `syscall` instruction) pass the filter without a stop.
    pub allow_syscalls_from: Option<u64>,
    /// Forbid core dumps (replay reproduces a crash, it need not dump it again).
    pub no_core_dump: bool,
    /// The signal mask and the set of ignored signals the program starts with (both survive
    /// `execve`, and programs consult them), as bit masks of `1 << (signo - 1)`.
    pub signals: SignalState,
    /// `(file, path)`: run the tracee in a private mount namespace where `file` is bind-mounted
    /// over `path`, e.g. the trace's copy of the ELF interpreter over the system's one.
    pub bind_over: Option<(PathBuf, PathBuf)>,
    /// Put the tracee in a process group of its own, so the terminal's signals (Ctrl-C)
    /// reach the tracer (and a debugger) only.
    pub own_process_group: bool,
}

/// Signal state a program inherits across `execve`: blocked and ignored signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalState {
    /// Blocked signals.
    pub blocked: u64,
    /// Signals whose disposition is `SIG_IGN`.
    pub ignored: u64,
}

impl SignalState {
    /// The calling thread's state (call it before installing any handler of deja's own), with
    /// `SIGPIPE` at its default (see below).
    pub fn current() -> Self {
        // SAFETY: zeroed sigset_t/sigaction are valid out-buffers for these queries.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
            let mut st = SignalState::default();
            for sig in 1..=64 {
                if libc::sigismember(&set, sig) == 1 {
                    st.blocked |= 1 << (sig - 1);
                }
                if kernel_disposition(sig) == Some(libc::SIG_IGN) {
                    st.ignored |= 1 << (sig - 1);
                }
            }
            // Rust's runtime sets SIGPIPE to SIG_IGN before main, so the disposition deja
            // inherited is lost; like `std::process::Command`, the program gets the default
            // (rr's signal_deferred: a write to a closed pipe must kill it).
            st.ignored &= !(1 << (libc::SIGPIPE - 1));
            st
        }
    }

    /// Reads a task's state from `/proc/PID/status` (`SigBlk`, `SigIgn`).
    pub fn of_task(pid: Pid) -> Result<Self> {
        Ok(SignalState {
            blocked: crate::tracee::signal_set(pid, "SigBlk")?,
            ignored: crate::tracee::signal_set(pid, "SigIgn")?,
        })
    }

    /// Applies the state to the calling thread. Async-signal-safe, for a forked child.
    ///
    /// # Safety
    /// Changes process-wide signal dispositions: only for a child about to exec.
    unsafe fn apply(&self) {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let disposition = if self.ignored & (1 << (sig - 1)) != 0 {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            // The raw call: glibc's refuses its two internal signals (32, 33), which would
            // then keep the parent's state, which the replay's parent may not share.
            set_kernel_disposition(sig, disposition);
            if self.blocked & (1 << (sig - 1)) != 0 {
                libc::sigaddset(&mut set, sig);
            }
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The kernel's `struct sigaction` (`rt_sigaction` with an 8-byte mask).
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// The handler of signal `sig` (`SIG_DFL`, `SIG_IGN` or an address), asked of the kernel
/// itself: glibc's `sigaction` refuses its internal signals 32 and 33.
fn kernel_disposition(sig: i32) -> Option<libc::sighandler_t> {
    let mut old = KernelSigaction::default();
    // SAFETY: rt_sigaction with no new action writes one kernel sigaction into `old`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<KernelSigaction>(),
            &mut old as *mut KernelSigaction,
            8,
        )
    };
    (r == 0).then_some(old.handler)
}

/// Sets signal `sig`'s handler to `SIG_DFL` or `SIG_IGN` with the raw syscall.
/// Async-signal-safe.
///
/// # Safety
/// Changes a process-wide signal disposition.
unsafe fn set_kernel_disposition(sig: i32, handler: libc::sighandler_t) {
    let act = KernelSigaction {
        handler,
        ..KernelSigaction::default()
    };
    libc::syscall(
        libc::SYS_rt_sigaction,
        sig,
        &act as *const KernelSigaction,
        std::ptr::null_mut::<KernelSigaction>(),
        8,
    );
}

fn cstrings(v: &[String], what: &str) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).with_context(|| format!("{what} contains a NUL byte")))
        .collect()
}

/// Forks and prepares the tracee, returning it stopped at its `execve` seccomp trap (when
/// `seccomp` is set) or at its exec stop. The exec itself has not run yet in the first case.
pub fn spawn(opts: &SpawnOptions) -> Result<Tracee> {
    let program = CString::new(opts.program.as_os_str().as_bytes())
        .context("program path contains a NUL byte")?;
    let argv = cstrings(&opts.argv, "an argument")?;
    let env = cstrings(&opts.env, "the environment")?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let filter = seccomp::trace_all_filter(opts.allow_syscalls_from);
    let bind = opts
        .bind_over
        .as_ref()
        .map(|(from, to)| -> Result<_> {
            let c = |p: &PathBuf| {
                CString::new(p.as_os_str().as_bytes()).context("bind path contains a NUL byte")
            };
            // SAFETY: getuid/getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            Ok((
                c(from)?,
                c(to)?,
                CString::new(format!("{uid} {uid} 1")).context("uid map")?,
                CString::new(format!("{gid} {gid} 1")).context("gid map")?,
            ))
        })
        .transpose()?;
    // The child inherits the calling thread's affinity.
    if let Some(cpu) = opts.cpu {
        pin_current_thread(cpu)?;
    }

    // SAFETY: the child only calls async-signal-safe functions on memory prepared above, then
    // execs or exits; the parent continues normally.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: in the forked child; see above. Every failure exits with a distinct code the
        // parent reports.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                libc::_exit(120);
            }
            libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
            if opts.own_process_group {
                libc::setpgid(0, 0);
            }
            if opts.no_core_dump {
                let zero = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &zero);
            }
            libc::raise(libc::SIGSTOP);
            opts.signals.apply();
            if let Some((from, to, uid_map, gid_map)) = &bind {
                if !bind_mount_privately(from, to, uid_map, gid_map) {
                    libc::_exit(125);
                }
            }
            if opts.trap_tsc && libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0) < 0 {
                libc::_exit(122);
            }
            if opts.seccomp && seccomp::install(&filter) < 0 {
                libc::_exit(123);
            }
            libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
            libc::_exit(124);
        }
    }
    let pid = Pid::from_raw(pid);
    let child_failure = |code: i32| -> anyhow::Error {
        let what = match code {
            120 => "PTRACE_TRACEME failed",
            122 => "PR_SET_TSC failed",
            123 => "installing the seccomp filter failed",
            124 => "execve failed",
            125 => "setting up the mount namespace for the recorded ELF interpreter failed",
            _ => "the child exited early",
        };
        anyhow::anyhow!("starting {}: {what}", opts.program.display())
    };
    match crate::stop::wait_for(pid)? {
        Stop::Signal(sig) if sig == libc::SIGSTOP => {}
        Stop::Exited(code) => return Err(child_failure(code)),
        other => bail!("unexpected first stop of the tracee: {other:?}"),
    }
    // Children and threads are traced from their first instruction (they start with a
    // SIGSTOP), and the parent reports their creation as a ptrace event.
    let options = PTRACE_OPTIONS;
    // SAFETY: plain ptrace request on our stopped child.
    if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid.as_raw(), 0, options as usize) } < 0 {
        let e = std::io::Error::last_os_error();
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        return Err(e).context("PTRACE_SETOPTIONS");
    }
    let tracee = Tracee::attach_traced(pid)?;
    tracee.cont(0)?;
    match tracee.wait()? {
        Stop::SeccompEntry | Stop::Exec => Ok(tracee),
        Stop::Exited(code) => Err(child_failure(code)),
        other => {
            tracee.kill_and_reap();
            bail!("unexpected stop of the tracee before exec: {other:?}")
        }
    }
}

/// In a forked child: enters a private mount namespace (a user namespace too when not root)
/// and bind-mounts `from` over `to`. Async-signal-safe.
///
/// # Safety
/// For a forked child about to exec only; all pointers are valid C strings.
unsafe fn bind_mount_privately(
    from: &CString,
    to: &CString,
    uid_map: &CString,
    gid_map: &CString,
) -> bool {
    if libc::unshare(libc::CLONE_NEWNS) != 0 {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let write_file = |path: &std::ffi::CStr, bytes: &[u8]| -> bool {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return false;
            }
            let ok = libc::write(fd, bytes.as_ptr().cast(), bytes.len()) == bytes.len() as isize;
            libc::close(fd);
            ok
        };
        if !write_file(c"/proc/self/setgroups", b"deny")
            || !write_file(c"/proc/self/uid_map", uid_map.as_bytes())
            || !write_file(c"/proc/self/gid_map", gid_map.as_bytes())
        {
            return false;
        }
    }
    let none = c"none".as_ptr();
    if libc::mount(
        none,
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        return false;
    }
    libc::mount(
        from.as_ptr(),
        to.as_ptr(),
        std::ptr::null(),
        libc::MS_BIND,
        std::ptr::null(),
    ) == 0
}

/// Pins the calling thread to `cpu`. The tracer runs on its tracee's CPU: each ptrace stop is a
/// hand-off between the two, and waking a task on another CPU costs an inter-processor
/// interrupt, which is slow on virtual machines (measured here: 116 µs per recorded syscall
/// across CPUs, 42 µs on one).
fn pin_current_thread(cpu: usize) -> Result<()> {
    // SAFETY: zero is a valid (empty) cpu_set_t; CPU_SET bounds-checks `cpu`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the set is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning to CPU {cpu}"));
    }
    Ok(())
}
