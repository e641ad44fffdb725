//! Starting a recording: the trace, the tracee, and the recorder's own timers and signals.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use trace_format::{
    CpuidRecord, ExitStatus, Stopped, TraceMeta, TraceRoot, TraceWriter, FORMAT_VERSION,
};
use tracee::{spawn, SpawnOptions};

use crate::recording::Session;
use crate::TraceDest;

/// The file pool's directory in a trace root (hidden from `deja ls`, which skips dot names).
const POOL_DIR: &str = ".pool";
/// The site cache in the pool (see `site_cache`).
const SITE_CACHE: &str = "sites.json";

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The program, as the user named it (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where the trace goes.
    pub dest: TraceDest,
    /// Record until every task has ended (rr's `-w`), instead of killing the tasks still alive
    /// when the initial process ends.
    pub wait_all: bool,
    /// Use the in-process library for the syscalls it can buffer (the fast path); off
    /// (`deja rec -n`), every syscall is a ptrace stop.
    pub syscall_buffer: bool,
    /// Chaos scheduling with this seed (`deja rec --chaos`): random scheduling decisions
    /// that make races show (see `recording::chaos`).
    pub chaos: Option<u64>,
    /// Record processes that share no memory in parallel, each CPU with its own tracer
    /// thread (the default of `deja rec`; `--serial` turns it off).
    pub parallel: bool,
}

/// A finished recording.
#[derive(Debug, Clone)]
pub struct RecordOutcome {
    /// The trace directory.
    pub trace_dir: PathBuf,
    /// How the program ended (killed by `SIGKILL` when the recorder was stopped by a signal).
    pub status: ExitStatus,
    /// The signal that stopped the recorder before the program ended (`SIGTERM`, `SIGHUP`, or
    /// a `SIGINT` sent to deja by a process): the recorded tasks were killed, the trace keeps
    /// [`Self::events`] events and says it was stopped.
    pub stopped_by: Option<i32>,
    /// Why the trace could not be finished although the program ended (a full disk, say):
    /// `status` is the program's, the trace keeps [`Self::events`] events.
    pub trace_error: Option<String>,
    /// Events in the trace.
    pub events: u64,
}

/// The recorder was asked to stop by this signal (see [`stop_requested`]).
#[derive(Debug)]
pub(crate) struct StopRequested(pub i32);

impl std::fmt::Display for StopRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {}", signal_name(self.0))
    }
}

impl std::error::Error for StopRequested {}

/// The signal that asked the recorder to stop, if one came (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signals that stop a recording (and keep its trace).
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT];

/// The error that ends the recording loop when a stop signal came (checked after each wait of
/// the recorder, which these signals interrupt).
pub(crate) fn stop_requested() -> Result<()> {
    match STOP_SIGNAL.load(Ordering::Relaxed) {
        0 => Ok(()),
        sig => Err(anyhow::Error::new(StopRequested(sig))),
    }
}

/// `SIGTERM` and the like, by name.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        s => format!("signal {s}"),
    }
}

/// Records `opts.program` to a new trace and returns how it ended.
pub fn record(opts: &RecordOptions) -> Result<RecordOutcome> {
    let opts = opts.clone();
    // The program inherits the user's signal state, not the mask of deja's tracer thread nor
    // the handlers deja installs for itself: read it before either exists.
    let signals = tracee::SignalState::current();
    // The stop signals reach the tracer thread alone, in its waits (see `set_ticks_blocked`):
    // block them here, the tracer thread inherits the mask.
    let old = block_stop_signals();
    let r = tracee::tsc::on_tracer_thread(move || record_here(&opts, signals));
    // SAFETY: restores this thread's mask as it was.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

/// Blocks [`STOP_SIGNALS`] in the calling thread; returns its previous mask.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset fill local sets, which pthread_sigmask reads and writes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// [`record`], on the tracer thread.
fn record_here(opts: &RecordOptions, signals: tracee::SignalState) -> Result<RecordOutcome> {
    tracing::debug!("recording starts");
    let path = tracee::elf::resolve_program(&opts.program)?;
    tracee::elf::check_executable(&path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".into());
    let (dir, root) = match &opts.dest {
        TraceDest::Dir(d) => (d.clone(), None),
        TraceDest::Root => {
            let root = TraceRoot::from_env()?;
            (root.new_trace_dir(&name)?, Some(root))
        }
    };
    let mut argv = vec![opts.program.clone()];
    argv.extend(opts.args.iter().cloned());
    let env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let cpu = current_cpu();
    let meta = TraceMeta {
        format_version: FORMAT_VERSION,
        deja_version: env!("CARGO_PKG_VERSION").to_string(),
        argv: argv.clone(),
        exe: path.to_string_lossy().into_owned(),
        cwd: std::env::current_dir()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
        env: env.clone(),
        start_time_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        cpu: Some(cpu as u32),
        cpuid_faulting: false,
        chaos_seed: opts.chaos,
        root_stays_in_first_lane: true,
        ..TraceMeta::default()
    };
    // The root's pool of stored files (the default root's for `-o DIR`): files recorded
    // before and unchanged since are linked from it, neither copied nor hashed again, and the
    // trace's reserve is taken from it and parked there again at the end.
    let pool_root = match &root {
        Some(r) => Some(r.path().to_path_buf()),
        None => TraceRoot::from_env().ok().map(|r| r.path().to_path_buf()),
    };
    let pool = pool_root
        .as_ref()
        .and_then(|r| trace_format::pool::Pool::open(&r.join(POOL_DIR)));
    let site_cache = pool
        .as_ref()
        .and(pool_root)
        .map(|r| r.join(POOL_DIR).join(SITE_CACHE));
    // On the writing thread, while the program starts: the instruction tables the tracer
    // needs at the program's first `rdtsc` or patch, and the CPU fingerprint.
    let created = TraceWriter::create_completing(&dir, &meta, pool, |meta| {
        tracee::insn::warm_up();
        meta.cpuid = tracee::cpuid::fingerprint()
            .into_iter()
            .map(|(leaf, subleaf, regs)| CpuidRecord {
                leaf,
                subleaf,
                regs,
            })
            .collect();
    });
    let writer = match created {
        Ok(w) => w,
        Err(e) => {
            if root.is_some() {
                // The fresh directory the root gave, empty again.
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e.into());
        }
    };
    if let Some(root) = &root {
        root.set_latest(&dir)?;
    }
    tracing::debug!("the trace directory is ready");
    install_stop_handlers();
    // Ticks interrupt the recorder only in its waits for the tracee (see `set_ticks_blocked`).
    set_ticks_blocked(true);
    let tick = if opts.chaos.is_some() {
        CHAOS_TICK
    } else {
        TICK
    };
    crate::recording::set_tick(tick);
    tracee::alarm::start(tick, tick);
    let allow_from = if opts.syscall_buffer {
        Some(syscallbuf::loaded()?.untraced_end)
    } else {
        None
    };
    let root = spawn(&SpawnOptions {
        program: path.clone(),
        argv,
        env,
        cpu: Some(cpu),
        trap_tsc: true,
        seccomp: true,
        allow_syscalls_from: allow_from,
        no_core_dump: false,
        signals,
        bind_over: None,
        own_process_group: false,
    })?;
    tracing::debug!("the program is started");
    let mut session = Session::new(
        root,
        writer,
        cpu as u32,
        opts.wait_all,
        opts.syscall_buffer,
        opts.chaos,
        opts.parallel,
    );
    if let Some(path) = site_cache {
        session.use_site_cache(path);
    }
    let kept = session.writer().kept_events();
    let result = session.run();
    tracee::alarm::stop();
    match result {
        Ok(status) => {
            tracing::debug!("the program has ended");
            let trace_error = match session.finish(status) {
                Ok(()) => None,
                // The program's status still goes to the caller; the trace says where it
                // stops and why.
                Err(e) => Some(format!(
                    "{}; the trace {} keeps the first {} events",
                    said_once(&e),
                    dir.display(),
                    kept.get()
                )),
            };
            tracing::debug!("the trace is complete");
            Ok(RecordOutcome {
                trace_dir: dir,
                status,
                stopped_by: None,
                trace_error,
                events: kept.get(),
            })
        }
        Err(e) => {
            session.kill_all();
            if let Some(StopRequested(sig)) = e.downcast_ref::<StopRequested>() {
                let events = session
                    .writer()
                    .stop(Stopped::Signal(*sig), None)
                    .with_context(|| {
                        format!(
                            "recording stopped by {}; the trace {} could not be finished",
                            signal_name(*sig),
                            dir.display()
                        )
                    })?;
                return Ok(RecordOutcome {
                    trace_dir: dir,
                    status: ExitStatus::Signaled(libc::SIGKILL),
                    stopped_by: Some(*sig),
                    trace_error: None,
                    events,
                });
            }
            let stopped = session.writer().stop(Stopped::Error(said_once(&e)), None);
            let events = match stopped {
                Ok(n) => n,
                Err(w) => {
                    tracing::debug!("the trace could not be marked stopped: {w}");
                    kept.get()
                }
            };
            Err(anyhow::anyhow!(
                "recording stopped; the first {events} events are kept in {}: {}",
                dir.display(),
                said_once(&e)
            ))
        }
    }
}

/// An error and its causes on one line, each cause once (an I/O error's message already ends
/// with its source's).
fn said_once(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The CPU the recorder runs on now: the tracee is pinned there.
fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no arguments.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).unwrap_or(0)
}

/// Notes a stop signal for the recording loop. A `SIGINT` from the terminal (Ctrl-C, which
/// the kernel sends with `si_code` `SI_KERNEL` to the whole foreground process group) is left
/// to the program, which gets it too and decides what it means.
extern "C" fn note_stop_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let code = unsafe { info.as_ref() }.map_or(0, |i| i.si_code);
    if sig == libc::SIGINT && code == libc::SI_KERNEL {
        return;
    }
    // An atomic store is async-signal-safe; the first signal wins.
    let _ = STOP_SIGNAL.compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
}

/// `SIGTERM`, `SIGHUP` and a `SIGINT` sent by a process (`kill -INT`, `timeout -s INT`) stop
/// the recording: the recorded tasks are killed and the trace keeps every event recorded so
/// far, marked stopped by the signal. Ctrl-C reaches the whole foreground process group: the
/// program decides what it means, and the recorder keeps recording until the program ends.
/// A signal the user's shell ignores (`nohup`'s `SIGHUP`) stays ignored. (A handler, unlike
/// `SIG_IGN`, is reset by `execve`, so the program starts with the default disposition.)
fn install_stop_handlers() {
    for sig in STOP_SIGNALS {
        // SAFETY: reads the current disposition, then installs an async-signal-safe handler
        // without SA_RESTART (so the signal interrupts the recorder's wait).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old);
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_stop_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Blocks (`true`) or unblocks the timer's `SIGALRM` (and the signals that stop a recording,
/// `SIGTERM`, `SIGHUP`, `SIGINT`) in the calling thread, the tracer thread.
/// It is blocked except while the recorder waits for the tracee: a tick then interrupts that
/// `waitpid`, and never another syscall of the recorder (copying a file, say, which would fail
/// with `EINTR`). A tick that comes while it is blocked is handled when it is unblocked, just
/// before the wait, and does not interrupt it: it is not counted, the next one is (10 ms
/// later). A program that calls [`record`] from a thread of its own must block it in all its
/// other threads too (the timer is per process), e.g. with this at the start of `main`.
pub fn set_ticks_blocked(blocked: bool) {
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: sigemptyset/sigaddset fill a local set, which pthread_sigmask only reads.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Interval of the timer that interrupts the recorder's waits: it measures time slices (a task
/// that holds the CPU too long while others wait is preempted), and buffered events reach the
/// disk every few ticks while the tracee blocks or computes (a recorder killed then still
/// leaves them in the trace).
pub const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// The timer's interval under chaos scheduling, whose time slices may be as short as one.
pub const CHAOS_TICK: std::time::Duration = std::time::Duration::from_millis(1);
