//! The recording loop: one traced process, stop by stop.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Result};
use syscalls::{Call, Replay};
use trace_format::{
    CpuidRecord, Event, ExitStatus, MemWrite, RdtscEvent, SignalEvent, SignalOrigin, SyscallEvent,
    TraceMeta, TraceRoot, TraceWriter, FORMAT_VERSION,
};
use tracee::insn::Trapped;
use tracee::{regs, spawn, Regs, SpawnOptions, Stop, Tracee};

use crate::echo::EchoFds;
use crate::mapped_files::MappedFiles;
use crate::memory::TraceeMemory;
use crate::signals::{is_fault, SI_KERNEL};
use crate::{exec, TraceDest};
use tracee::tracee::signo_code;

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The program, as the user named it (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where the trace goes.
    pub dest: TraceDest,
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
        cpuid: tracee::cpuid::fingerprint()
            .into_iter()
            .map(|(leaf, subleaf, regs)| CpuidRecord {
                leaf,
                subleaf,
                regs,
            })
            .collect(),
        ..TraceMeta::default()
    };
    let writer = TraceWriter::create(&dir, &meta)?;
    if let Some(root) = &root {
        root.set_latest(&dir)?;
    }
    install_interrupt_passthrough();
    start_flush_timer();
    tracee::pin_current_thread(cpu)?;
    let tracee = spawn(&SpawnOptions {
        program: path.clone(),
        argv,
        env,
        cpu: Some(cpu),
        trap_tsc: true,
        seccomp: true,
        no_core_dump: false,
        signals,
        bind_over: None,
    })?;
    let mut session = Session {
        tracee,
        writer,
        files: MappedFiles::default(),
        echo: EchoFds::default(),
        warned: HashSet::new(),
        boundary: None,
        deferred: Vec::new(),
        resent: HashMap::new(),
        cpu: cpu as u32,
    };
    let result = session.run();
    stop_flush_timer();
    match result {
        Ok(status) => {
            session.writer.finish(status)?;
            Ok(RecordOutcome {
                trace_dir: dir,
                status,
            })
        }
        Err(e) => {
            session.tracee.kill_and_reap();
            let _ = session.writer.flush();
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

extern "C" fn wake_waiter(_: libc::c_int) {}

/// Interval of the timer that interrupts the recorder's waits so buffered events reach the disk
/// while the tracee blocks or computes (a recorder killed then still leaves them in the trace).
const FLUSH_TICK_US: libc::suseconds_t = 250_000;

fn start_flush_timer() {
    // SAFETY: installs an async-signal-safe no-op handler without SA_RESTART (so the signal
    // interrupts waitpid), then arms a periodic real-time timer; neither is inherited by the
    // tracee after its exec.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wake_waiter as *const () as libc::sighandler_t;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let tick = libc::timeval {
            tv_sec: 0,
            tv_usec: FLUSH_TICK_US,
        };
        let it = libc::itimerval {
            it_interval: tick,
            it_value: tick,
        };
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

fn stop_flush_timer() {
    // SAFETY: disarms the timer armed by start_flush_timer.
    unsafe {
        let it: libc::itimerval = std::mem::zeroed();
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

struct Session {
    tracee: Tracee,
    writer: TraceWriter,
    files: MappedFiles,
    echo: EchoFds,
    /// Syscalls already warned about.
    warned: HashSet<u64>,
    /// Registers the tracee was resumed with right after the last event, while no instruction
    /// can have run since: a signal stop with these registers landed exactly after that event.
    boundary: Option<Regs>,
    /// Asynchronous signals that landed in the middle of user code, held back until the next
    /// event boundary (see the crate README).
    deferred: Vec<(i32, [u8; tracee::tracee::SIGINFO_SIZE])>,
    /// Held-back signals sent again by the recorder, with their original siginfo.
    resent: HashMap<i32, [u8; tracee::tracee::SIGINFO_SIZE]>,
    cpu: u32,
}

impl Session {
    fn pid(&self) -> nix::unistd::Pid {
        self.tracee.pid()
    }

    /// Waits for the tracee's next stop, writing out buffered events while it takes long.
    fn wait(&mut self) -> Result<Stop> {
        let writer = &mut self.writer;
        tracee::stop::wait_for_or_idle(self.tracee.pid(), &mut || Ok(writer.flush()?))
    }

    fn run(&mut self) -> Result<ExitStatus> {
        self.first_exec()?;
        loop {
            match self.wait()? {
                Stop::SeccompEntry => {
                    if let Some(status) = self.on_syscall()? {
                        return self.on_end(status);
                    }
                }
                Stop::Signal(sig) => self.on_signal(sig)?,
                Stop::Exited(code) => return self.on_end(ExitStatus::Exited(code)),
                Stop::Killed(sig) => return self.on_end(ExitStatus::Signaled(sig)),
                Stop::Exec => bail!("unexpected exec stop"),
                Stop::SyscallStop => bail!("unexpected syscall stop outside a syscall"),
                Stop::Event(_) => self.tracee.cont(0)?,
            }
        }
    }

    /// Runs the initial `execve` and records the new program image.
    fn first_exec(&mut self) -> Result<()> {
        self.tracee.cont_syscall(0)?;
        match self.wait()? {
            Stop::Exec => {}
            Stop::SyscallStop => {
                let err = -(self.tracee.regs()?.rax as i64);
                bail!(
                    "cannot execute the program: {}",
                    std::io::Error::from_raw_os_error(err as i32)
                );
            }
            other => bail!("the program did not start: {other:?}"),
        }
        self.record_exec()
    }

    /// At an exec stop: records the new program image, then runs to the end of the `execve`.
    fn record_exec(&mut self) -> Result<()> {
        self.tracee.reopen_mem()?;
        let ev = exec::capture(&self.tracee, &mut self.writer, &mut self.files)?;
        self.writer.push(&Event::Exec(ev))?;
        self.tracee.cont_syscall(0)?;
        match self.wait()? {
            Stop::SyscallStop => {}
            other => bail!("unexpected stop after exec: {other:?}"),
        }
        self.boundary = Some(self.tracee.regs()?);
        self.tracee.cont(0)
    }

    fn warn_once(&mut self, nr: u64, msg: impl FnOnce() -> String) {
        if self.warned.insert(nr) {
            eprintln!("deja: warning: {}", msg());
        }
    }

    /// Records one syscall; returns the exit status if the process ended inside it.
    fn on_syscall(&mut self) -> Result<Option<ExitStatus>> {
        let entry = self.tracee.regs()?;
        let nr = entry.orig_rax;
        let args = regs::syscall_args(&entry);
        let name = syscalls::name(nr);
        let def = syscalls::lookup(nr);
        let replay = match def {
            Some(def) => def.replay,
            None => {
                self.warn_once(nr, || {
                    format!("{name} is not modelled; the program gets ENOSYS for it")
                });
                Replay::Deny(libc::ENOSYS)
            }
        };
        if nr == libc::SYS_ioctl as u64 && !syscalls::ioctl_known(args[1]) {
            // Keyed apart from syscall numbers (which are below 1024).
            let key = (1 << 32) | (args[1] & 0xffff_ffff);
            self.warn_once(key, || {
                format!(
                    "ioctl request {:#x} is not modelled: only the size its number encodes is \
                     recorded, so the replay may differ if it wrote more",
                    args[1] & 0xffff_ffff
                )
            });
        }
        let mut ev = SyscallEvent {
            tid: self.pid().as_raw(),
            nr,
            args,
            rip: entry.rip,
            regs_digest: regs::digest(&entry),
            result: 0,
            writes: Vec::new(),
            mapped_file: None,
            echo: None,
        };
        match replay {
            Replay::Unsupported(_) => {
                bail!(
                    "{}",
                    def.and_then(|d| d.unsupported_message())
                        .unwrap_or_default()
                )
            }
            Replay::Deny(errno) => {
                // rseq is refused for every glibc program, which copes silently: no warning.
                if def.is_some() && nr != libc::SYS_rseq as u64 {
                    self.warn_once(nr, || {
                        format!(
                            "{name} is refused with {} (as rr does)",
                            std::io::Error::from_raw_os_error(errno)
                        )
                    });
                }
                let mut r = entry;
                r.orig_rax = u64::MAX;
                r.rax = (-(errno as i64)) as u64;
                self.tracee.set_regs(&r)?;
                ev.result = -(errno as i64);
                self.writer.push(&Event::Syscall(ev))?;
                self.after_event(r)?;
                self.tracee.cont(0)?;
                return Ok(None);
            }
            Replay::Exit => {
                self.writer.push(&Event::Syscall(ev))?;
                self.boundary = None;
                self.tracee.cont(0)?;
                return Ok(None);
            }
            Replay::Emulate | Replay::Execute | Replay::Mmap | Replay::Exec => {}
        }
        self.tracee.cont_syscall(0)?;
        match self.wait()? {
            Stop::SyscallStop => {}
            // A successful exec: the new image is the event (a failed one is a plain syscall).
            Stop::Exec if replay == Replay::Exec => {
                self.record_exec()?;
                return Ok(None);
            }
            // Killed while inside the syscall (SIGKILL): the syscall never returned.
            Stop::Exited(c) => return Ok(Some(ExitStatus::Exited(c))),
            Stop::Killed(s) => return Ok(Some(ExitStatus::Signaled(s))),
            other => bail!("unexpected stop inside {name}: {other:?}"),
        }
        let exit = self.tracee.regs()?;
        ev.result = exit.rax as i64;
        let call = Call {
            nr,
            args,
            result: ev.result,
        };
        for region in syscalls::out_regions(&call, &TraceeMemory(&self.tracee)) {
            let mut buf = vec![0u8; region.len as usize];
            let n = self.tracee.read_mem_partial(region.addr, &mut buf);
            buf.truncate(n);
            if !buf.is_empty() {
                ev.writes.push(MemWrite {
                    addr: region.addr,
                    data: self.writer.data(&buf)?,
                });
            }
        }
        if nr == libc::SYS_mmap as u64
            && !syscalls::is_error(ev.result)
            && args[3] & libc::MAP_ANONYMOUS as u64 == 0
        {
            let pid = self.pid();
            ev.mapped_file = Some(self.files.store_fd(&mut self.writer, pid, args[4])?);
        }
        if matches!(
            nr as i64,
            libc::SYS_write | libc::SYS_writev | libc::SYS_pwrite64 | libc::SYS_pwritev
        ) && ev.result > 0
        {
            ev.echo = self.echo.stream(args[0]);
        }
        self.echo.after_syscall(nr, &args, ev.result);
        self.writer.push(&Event::Syscall(ev))?;
        self.after_event(exit)?;
        self.tracee.cont(0)?;
        Ok(None)
    }

    /// Called with the registers the tracee is about to resume with, right after an event:
    /// sends the held-back signals so they are delivered at this boundary.
    fn after_event(&mut self, resume_regs: Regs) -> Result<()> {
        for (sig, info) in std::mem::take(&mut self.deferred) {
            self.tracee.tgkill(self.pid(), sig)?;
            self.resent.insert(sig, info);
        }
        self.boundary = Some(resume_regs);
        Ok(())
    }

    fn on_signal(&mut self, sig: i32) -> Result<()> {
        let Ok(info) = self.tracee.siginfo() else {
            // A group-stop (no siginfo): let the task go on.
            return self.tracee.cont(0);
        };
        let regs = self.tracee.regs()?;
        let (signo, code) = signo_code(&info);
        if sig == libc::SIGSEGV && code == SI_KERNEL && self.emulate_trapped(regs)? {
            return Ok(());
        }
        let at_boundary = self
            .boundary
            .take()
            .is_some_and(|b| regs::to_words(&b) == regs::to_words(&regs));
        let (origin, info) = if is_fault(signo, code) {
            (SignalOrigin::Fault, info)
        } else if let Some(original) = self.resent.remove(&sig) {
            self.tracee.set_siginfo(&original)?;
            (SignalOrigin::Async, original)
        } else if at_boundary {
            (SignalOrigin::Async, info)
        } else {
            tracing::debug!(
                sig,
                rip = regs.rip,
                "holding back a signal that landed mid-code"
            );
            self.deferred.push((sig, info));
            return self.tracee.cont(0);
        };
        self.writer.push(&Event::Signal(SignalEvent {
            tid: self.pid().as_raw(),
            signo: sig,
            siginfo: info.to_vec(),
            origin,
            rip: regs.rip,
            delivered: true,
        }))?;
        self.tracee.cont(sig)
    }

    /// Emulates a trapped `rdtsc`/`rdtscp` at `regs.rip`; false if the fault was something else.
    fn emulate_trapped(&mut self, mut regs: Regs) -> Result<bool> {
        let Some((kind, len)) = self.tracee.trapped_insn_at(regs.rip) else {
            return Ok(false);
        };
        let rip = regs.rip;
        let (tsc, aux) = match kind {
            Trapped::Rdtsc => (tracee::tsc::read_tsc().0, None),
            Trapped::Rdtscp => {
                let (tsc, aux) = tracee::tsc::read_tsc();
                // TSC_AUX names the CPU (low 12 bits) the read ran on: the tracee's pinned CPU.
                (tsc, Some((aux & !0xfff) | self.cpu))
            }
            Trapped::Cpuid => return Ok(false),
        };
        regs.rax = tsc & 0xffff_ffff;
        regs.rdx = tsc >> 32;
        if let Some(a) = aux {
            regs.rcx = u64::from(a);
        }
        regs.rip += len as u64;
        self.tracee.set_regs(&regs)?;
        self.writer.push(&Event::Rdtsc(RdtscEvent {
            tid: self.pid().as_raw(),
            rip,
            tsc,
            aux,
        }))?;
        self.after_event(regs)?;
        self.tracee.cont(0)?;
        Ok(true)
    }

    fn on_end(&mut self, status: ExitStatus) -> Result<ExitStatus> {
        self.writer.push(&Event::Exit(trace_format::ExitEvent {
            tid: self.pid().as_raw(),
            status,
        }))?;
        Ok(status)
    }
}
