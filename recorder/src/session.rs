//! Starting a recording: the trace, the tracee, and the recorder's own timers and signals.

use std::path::PathBuf;

use anyhow::Result;
use trace_format::{CpuidRecord, ExitStatus, TraceMeta, TraceRoot, TraceWriter, FORMAT_VERSION};
use tracee::{spawn, SpawnOptions};

use crate::recording::Session;
use crate::TraceDest;

/// The file pool's directory in a trace root (hidden from `deja ls`, which skips dot names).
const POOL_DIR: &str = ".pool";

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
}

/// A finished recording.
#[derive(Debug, Clone)]
pub struct RecordOutcome {
    /// The trace directory.
    pub trace_dir: PathBuf,
    /// How the program ended.
    pub status: ExitStatus,
}

/// Records `opts.program` to a new trace and returns how it ended.
pub fn record(opts: &RecordOptions) -> Result<RecordOutcome> {
    let opts = opts.clone();
    // The program inherits the user's signal state, not the mask of deja's tracer thread nor
    // the handlers deja installs for itself: read it before either exists.
    let signals = tracee::SignalState::current();
    tracee::tsc::on_tracer_thread(move || record_here(&opts, signals))
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
        ..TraceMeta::default()
    };
    let mut writer = TraceWriter::create_completing(&dir, &meta, |meta| {
        meta.cpuid = tracee::cpuid::fingerprint()
            .into_iter()
            .map(|(leaf, subleaf, regs)| CpuidRecord {
                leaf,
                subleaf,
                regs,
            })
            .collect();
    })?;
    // The root's pool of stored files (the default root's for `-o DIR`): files recorded
    // before and unchanged since are linked from it, neither copied nor hashed again.
    let pool_root = match &root {
        Some(r) => Some(r.path().to_path_buf()),
        None => TraceRoot::from_env().ok().map(|r| r.path().to_path_buf()),
    };
    if let Some(pool) = pool_root.and_then(|r| trace_format::pool::Pool::open(&r.join(POOL_DIR))) {
        writer.use_pool(pool);
    }
    if let Some(root) = &root {
        root.set_latest(&dir)?;
    }
    tracing::debug!("the trace directory is ready");
    install_interrupt_passthrough();
    // Ticks interrupt the recorder only in its waits for the tracee (see `set_ticks_blocked`).
    set_ticks_blocked(true);
    tracee::alarm::start(TICK, TICK);
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
    let mut session = Session::new(root, writer, cpu as u32, opts.wait_all, opts.syscall_buffer);
    let result = session.run();
    tracee::alarm::stop();
    match result {
        Ok(status) => {
            tracing::debug!("the program has ended");
            session.finish(status)?;
            tracing::debug!("the trace is complete");
            Ok(RecordOutcome {
                trace_dir: dir,
                status,
            })
        }
        Err(e) => {
            session.kill_all();
            let _ = session.writer().flush();
            Err(e.context(format!(
                "recording stopped; the events so far are kept in {}",
                dir.display()
            )))
        }
    }
}

/// The CPU the recorder runs on now: the tracee is pinned there.
fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no arguments.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).unwrap_or(0)
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Ctrl-C reaches the whole foreground process group: the program decides what it means, and
/// the recorder keeps recording until the program ends. (A handler, unlike `SIG_IGN`, is reset
/// by `execve`, so the program starts with the default disposition.)
fn install_interrupt_passthrough() {
    // SAFETY: installs an async-signal-safe no-op handler.
    unsafe {
        libc::signal(
            libc::SIGINT,
            ignore_signal as *const () as libc::sighandler_t,
        );
    }
}

/// Blocks (`true`) or unblocks the timer's `SIGALRM` in the calling thread, the tracer thread.
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
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Interval of the timer that interrupts the recorder's waits: it measures time slices (a task
/// that holds the CPU too long while others wait is preempted), and buffered events reach the
/// disk every few ticks while the tracee blocks or computes (a recorder killed then still
/// leaves them in the trace).
pub const TICK: std::time::Duration = std::time::Duration::from_millis(10);
