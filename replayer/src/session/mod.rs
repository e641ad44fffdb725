//! The replay loop: drives the tracee from event to event of the trace.

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use trace_format::{Event, EventIter, ExitStatus, Tid, TraceReader};
use tracee::forced_segv::SegvActions;
use tracee::segv_mask::SegvBlocked;
use tracee::{spawn, SpawnOptions, Stop, Tracee};

use crate::debug::{self, Debug, Halt};
use crate::divergence::{Divergence, Incomplete};
use crate::exec;
use crate::parallel::LaneFilter;
use crate::point::Toward;
use crate::tasks::{self, RState, Task, Tasks};

use lanes::LaneRole;

mod buffered;
mod checkpoint;
mod deja_code;
mod group_stop;
mod lanes;
mod lifecycle;
mod mark;
mod ptrace;
mod robust;
mod run;
mod signal;
mod syscall;
mod toward;

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Do not echo what the program wrote to stdout/stderr.
    pub quiet: bool,
    /// Replay one task at a time, even the lanes the recorder ran at once (see
    /// `crate::parallel`; a replay under a debugger always does).
    pub serial: bool,
    /// A progress display, told of each event and of the program's output.
    pub progress: Option<std::sync::Arc<dyn Progress>>,
}

/// A display of how far a replay is (`deja replay -a` draws a bar on a terminal).
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// The replay reached event `index` (0 is the program's exec). Lanes replayed at once
    /// report their own events: `index` may be below one reported before.
    fn event(&self, index: u64);
    /// Runs `write`, which echoes the program's output, with the display out of its way.
    fn around_output(&self, write: &mut dyn FnMut());
}

/// A replay that reached the end of the recording faithfully.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// How the program ended (as recorded, and as replayed).
    pub status: ExitStatus,
    /// Number of events replayed.
    pub events: u64,
}

/// What becomes of a running task after a stop.
enum Next {
    /// It reached its next event: park it there.
    Park(Stop),
    /// The stop is not the recording's (a dropped signal, a breakpoint stepped over): go on.
    Again,
    /// The debugger halts the replay here.
    Halt(Halt),
    /// The task is at the point it ran toward, parked there (see `Session::reached`).
    Reached,
}

/// The trap flag (TF) of rflags: single-stepping.
const TRAP_FLAG: u64 = 0x100;

/// `si_code` of a hardware breakpoint or watchpoint trap.
const TRAP_HWBKPT: i32 = 4;

/// `-ERESTARTSYS` .. `-ERESTART_RESTARTBLOCK`: results that make the kernel restart or fail the
/// syscall when the signal that follows is delivered.
fn is_restart_code(result: i64) -> bool {
    (-516..=-512).contains(&result)
}

/// Replays the trace in `dir` to its end.
pub fn replay(dir: &Path, opts: &ReplayOptions) -> Result<ReplayOutcome> {
    let (dir, opts) = (dir.to_path_buf(), opts.clone());
    tracee::tsc::on_tracer_thread(move || {
        let mut session = Session::open(&dir, &opts, None)?;
        let result = session.run_events().and_then(|end| match end {
            // The files the replay never used are verified too: a replay to the end
            // vouches for the whole trace.
            Some(outcome) => Ok(session.reader.verify_stored_files().map(|()| outcome)?),
            None => bail!("the replay halted without a debugger"),
        });
        session.tasks.kill_all();
        result.map_err(|e| session.fail_lanes(e))
    })
}

impl Session {
    /// A session of no task yet, at the start of the trace `reader` (whose events `events`
    /// has read the first of), for the program whose first task is `root`.
    fn new(
        reader: Rc<TraceReader>,
        events: EventIter,
        root: Tid,
        opts: &ReplayOptions,
        debug: Option<Debug>,
    ) -> Self {
        let changing = reader.meta().changing_files.clone();
        Session {
            tasks: Tasks::default(),
            reader,
            events,
            ahead: Default::default(),
            ahead_at: Default::default(),
            read: 0,
            filter: None,
            par: None,
            index: 0,
            opts: opts.clone(),
            root,
            root_status: None,
            running: None,
            toward: None,
            debug,
            emu: crate::mmap::EmuFiles::with_changing(changing.as_deref()),
            segv: SegvActions::default(),
            ptrace_held: Default::default(),
            segv_blocked: SegvBlocked::default(),
            sites: Default::default(),
            ran: false,
            stretches: Default::default(),
            after_mark: None,
            held_stop: None,
            lanes: Default::default(),
        }
    }

    /// Opens the trace in `dir`, starts the program and replays its exec (event 0). With a
    /// debugger, the replay then halts before the program's first instruction.
    pub(crate) fn open(dir: &Path, opts: &ReplayOptions, debug: Option<Debug>) -> Result<Self> {
        let reader = Rc::new(TraceReader::open(dir)?);
        warn_if_cpu_differs(&reader);
        let mut events = reader.events()?;
        let first = match events.next() {
            Some(ev) => ev?,
            None => bail!(Incomplete::of(0, reader.meta())),
        };
        let Event::Exec(exec_ev) = first else {
            bail!("the trace does not start with the program's exec");
        };
        let meta = reader.meta();
        let program = reader.file_path(&exec_ev.exe)?;
        let bind_over = exec::interpreter_override(&reader, &exec_ev, &program)?;
        let cpu = meta.cpu.map(|c| c as usize).filter(|&c| cpu_allowed(c));
        // The library runs the calls replay executes (`abi::PROBE_EXEC`) with its own
        // untraced instruction, which the filter lets through as in the recording.
        let allow_from = match &exec_ev.syscallbuf {
            Some(_) => Some(syscallbuf::loaded()?.untraced_end),
            None => None,
        };
        let tracee = spawn(&SpawnOptions {
            program,
            argv: meta.argv.clone(),
            env: meta.env.clone(),
            cpu,
            trap_tsc: true,
            seccomp: true,
            allow_syscalls_from: allow_from,
            no_core_dump: true,
            signals: tracee::SignalState {
                blocked: exec_ev.sig_blocked,
                ignored: exec_ev.sig_ignored,
            },
            bind_over,
            own_process_group: true,
        })?;
        let mut session = Session::new(reader, events, exec_ev.tid, opts, debug);
        let pid = tracee.pid();
        let root = exec_ev.tid;
        session
            .tasks
            .add(root, root, tracee, pid, RState::Unstarted);
        session.read = 1;
        if session.debug.is_none() && !opts.serial && !lanes::root_moves(&session.reader, root)? {
            // (The exec, read above, moves no task.)
            session.filter = Some(LaneFilter::new(0));
            session.par = Some(LaneRole::first(dir, opts, cpu));
        }
        if let Err(e) = session.first_exec(&exec_ev) {
            session.tasks.kill_all();
            return Err(e);
        }
        Ok(session)
    }
}

fn cpu_allowed(cpu: usize) -> bool {
    // SAFETY: zero is a valid (empty) cpu_set_t, filled in by sched_getaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && cpu < libc::CPU_SETSIZE as usize
            && libc::CPU_ISSET(cpu, &set)
    }
}

/// CPUID cannot be trapped on machines without CPUID faulting; replay then relies on the
/// replaying CPU answering as the recording one did. Say so when it does not.
fn warn_if_cpu_differs(reader: &TraceReader) {
    let recorded = &reader.meta().cpuid;
    if recorded.is_empty() {
        return;
    }
    let here = tracee::cpuid::fingerprint();
    let differs = recorded.iter().any(|r| {
        let now = here
            .iter()
            .find(|(l, s, _)| *l == r.leaf && *s == r.subleaf)
            .map(|(l, _, v)| tracee::cpuid::normalize(*l, *v));
        now != Some(tracee::cpuid::normalize(r.leaf, r.regs))
    });
    if differs {
        eprintln!(
            "deja: warning: this CPU answers CPUID differently from the one that recorded the \
             trace; a program that consults CPUID may diverge"
        );
    }
}

/// A replay in progress: the tasks, where the trace is, and the debugger's requests.
pub(crate) struct Session {
    pub(crate) tasks: Tasks,
    reader: Rc<TraceReader>,
    events: EventIter,
    /// The events after the current one read so far (peeked).
    ahead: std::collections::VecDeque<Event>,
    /// Their indices in the trace.
    ahead_at: std::collections::VecDeque<u64>,
    /// How many events of the trace were read (kept or not).
    read: u64,
    /// The lane whose events this session replays, when it replays one (see `lanes`).
    filter: Option<LaneFilter>,
    /// Its part in a replay of lanes at once.
    par: Option<LaneRole>,
    /// Index of the event being replayed.
    index: u64,
    opts: ReplayOptions,
    /// The initial process (recorded id).
    root: Tid,
    root_status: Option<ExitStatus>,
    /// The task that must run user code, up to its next stop, before the next event: the
    /// one resumed after the last event, if it has not reached that stop yet.
    running: Option<Run>,
    /// The running task must stop at the exact point of its next event (a preemption, a signal
    /// delivered mid-code), found again with a locator.
    toward: Option<Toward>,
    /// The debugger, when one drives the replay.
    pub(crate) debug: Option<Debug>,
    /// The replay's copies of the files the program maps.
    pub(crate) emu: crate::mmap::EmuFiles,
    /// Each process's `SIGSEGV` action, put back where a trapped `rdtsc` made the kernel reset
    /// it, as the recorder did (see `tracee::forced_segv`).
    segv: SegvActions,
    /// Tasks held in an emulated ptrace stop, and where (see `ptrace`).
    ptrace_held: std::collections::HashMap<Tid, trace_format::PtraceHeld>,
    /// Which tasks block `SIGSEGV`, for the same trap, as the recorder noted them (see
    /// `tracee::segv_mask`).
    segv_blocked: SegvBlocked,
    /// The syscall sites patched in each process (see `crate::patched`).
    pub(crate) sites: crate::patched::PatchedSites,
    /// The running task was let go (ran user code) since the last event.
    pub(crate) ran: bool,
    /// For each task, the events after which its current run and its run before began (see
    /// `mark`).
    pub(crate) stretches: std::collections::HashMap<Tid, [Option<u64>; 2]>,
    /// The point the running task runs toward once it has reached the debugger's mark.
    after_mark: Option<Toward>,
    /// The stop the running task reached, kept while the replay halts there (the debugged
    /// process's end, see `Halt::Ending`): its run goes on from it.
    held_stop: Option<Stop>,
    /// The lanes of tasks the recorder ran in another lane than the first (see `lanes`).
    lanes: std::collections::HashMap<Tid, u8>,
}

/// A task resumed after its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    tid: Tid,
    /// The signal to deliver as it resumes.
    sig: i32,
    /// The debugger was already told about `sig`.
    sig_reported: bool,
}

/// How long an `Exit` event waits for its task to end before calling it a divergence.
const END_GRACE: Duration = Duration::from_secs(10);

impl Session {
    fn peek(&mut self) -> Result<Option<&Event>> {
        self.peek_at(0)
    }

    /// Takes the next event: it becomes the current one ([`Session::index`]).
    fn take(&mut self) -> Result<Option<Event>> {
        self.peek()?;
        let Some(ev) = self.ahead.pop_front() else {
            return Ok(None);
        };
        self.index = self.ahead_at.pop_front().unwrap_or(self.index + 1);
        if let Some(par) = &self.par {
            par.at_event(self.index);
        }
        Ok(Some(ev))
    }

    /// The index in the trace of the event `i` places after the current one (read ahead).
    fn index_at(&self, i: usize) -> u64 {
        self.ahead_at
            .get(i)
            .copied()
            .unwrap_or(self.index + 1 + i as u64)
    }

    fn diverged(&self, tid: Tid, expected: String, found: String) -> anyhow::Error {
        self.diverged_with(tid, expected, found, vec![])
    }

    fn diverged_with(
        &self,
        tid: Tid,
        expected: String,
        found: String,
        details: Vec<String>,
    ) -> anyhow::Error {
        Divergence {
            event: self.index,
            task: tid,
            expected,
            found,
            details,
        }
        .into()
    }

    fn task(&mut self, tid: Tid) -> Result<&mut Task> {
        tasks::task(&mut self.tasks, tid)
    }

    fn tracee(&mut self, tid: Tid) -> Result<&Tracee> {
        Ok(&self.task(tid)?.tracee)
    }

    /// Runs the program to its exec stop and replays the exec (event 0).
    fn first_exec(&mut self, exec_ev: &trace_format::ExecEvent) -> Result<()> {
        let root = self.root;
        let t = self.tracee(root)?;
        t.cont_syscall(0)?;
        match t.wait()? {
            Stop::Exec => {}
            other => bail!("the recorded program did not start in replay: {other:?}"),
        }
        self.note_exec(exec_ev)?;
        self.finish_exec(root, exec_ev)
    }

    /// The index of the event replayed last (0 is the program's exec).
    pub(crate) fn when(&self) -> u64 {
        self.index
    }

    /// Replays events until the end of the trace (`Some`), or until the debugger's halt
    /// (`None`, with the reason in `debug.halt`).
    pub(crate) fn run_events(&mut self) -> Result<Option<ReplayOutcome>> {
        loop {
            self.run_task()?;
            if self.halted() {
                return Ok(None);
            }
            if self.debug.as_mut().is_some_and(|d| d.interrupt_requested()) {
                let tid = self.halt_thread();
                if !self.interrupt_later(tid) {
                    self.halt(Halt::Interrupted(tid));
                    return Ok(None);
                }
            }
            let Some(ev) = self.take()? else {
                // (The other lane's events are all replayed first, even in a trace that ends
                // early.)
                let lanes_end = self.end_lanes()?;
                if self.events.truncated() || !self.reader.meta().complete {
                    bail!(Incomplete::of(self.read, self.reader.meta()));
                }
                let status = match lanes_end {
                    // (A second lane's outcome: its thread reports the root's status, if it
                    // saw it end, from `root_status`.)
                    None => ExitStatus::Exited(0),
                    Some(other_lane) => self
                        .root_status
                        .or(other_lane)
                        .context("the trace ends without the program's exit")?,
                };
                return Ok(Some(ReplayOutcome {
                    status,
                    events: self.read,
                }));
            };
            self.ran = false;
            if let Some(p) = &self.opts.progress {
                p.event(self.index);
            }
            if let Some(par) = &self.par {
                par.check_other_lane()?;
            }
            if let Event::Lane(e) = &ev {
                self.lane_event(e, None)?;
                continue;
            }
            let tid = ev.tid();
            tracing::trace!(event = self.index, tid, kind = ev.kind(), "replaying");
            if self.tasks.get(tid).is_none() {
                return Err(self.diverged(
                    tid,
                    format!("a {} event", ev.kind()),
                    "no such task in the replay".into(),
                ));
            }
            self.leave_group_stop(tid, &ev)?;
            match ev {
                Event::Syscall(e) => {
                    self.syscall(&e)?;
                    self.insert_pending_breakpoints(&e)?;
                }
                Event::Signal(e) => self.signal(&e)?,
                Event::Rdtsc(e) => self.rdtsc(&e)?,
                Event::Exit(e) => self.exit(e.tid, e.status)?,
                Event::Exec(e) => self.exec(&e)?,
                Event::Clone(e) => self.clone_task(&e)?,
                Event::Start(e) => self.start(&e)?,
                Event::Cpuid(_) => bail!("trapped CPUID events are not supported by this replayer"),
                Event::Preempt(e) => self.preempt(&e)?,
                Event::Resume(e) => self.resume_preempted(e.tid)?,
                Event::Ptrace(e) => self.ptrace(&e)?,
                Event::Buffered(e) => self.check_buffered(&e)?,
                Event::Patch(e) => self.patch(&e)?,
                Event::Patches(e) => self.patches(&e)?,
                // Used when the buffered calls after it are placed (`place_buffered`).
                Event::BufferedMaps(_) => {}
                Event::Lane(_) => {}
            }
        }
    }

    fn halted(&self) -> bool {
        self.debug.as_ref().is_some_and(|d| d.halt.is_some())
    }

    fn halt(&mut self, why: Halt) {
        if matches!(
            self.debug.as_ref().and_then(|d| d.halt),
            Some(Halt::Reached(_))
        ) {
            // The debugger's mark, reached where another halt came too: the mark is the one.
            return;
        }
        let at_mark = self
            .debug
            .as_mut()
            .is_some_and(|d| std::mem::take(&mut d.at_mark));
        if !(at_mark && matches!(why, Halt::Reached(_))) && self.leave_before_halt(why) {
            return;
        }
        if let Some(d) = self.debug.as_mut() {
            tracing::debug!(?why, event = self.index, "halting for the debugger");
            d.halt = Some(why);
            d.step = None;
            d.interrupt_sent = None;
        }
    }

    /// The task of the debugged process to name in a halt that is not any task's doing.
    pub(crate) fn halt_thread(&self) -> Tid {
        let Some(d) = self.debug.as_ref() else {
            return self.root;
        };
        let alive = |t: Tid| self.tasks.in_process(d.process).any(|(id, _)| id == t);
        match d.current {
            Some(t) if alive(t) => t,
            _ => self
                .tasks
                .in_process(d.process)
                .map(|(id, _)| id)
                .min()
                .unwrap_or(d.process),
        }
    }

    /// Whether task `tid` belongs to the debugged process.
    fn debugged(&self, tid: Tid) -> bool {
        match (&self.debug, self.tasks.by_tid(tid)) {
            (Some(d), Some(t)) => t.rpid == d.process,
            _ => false,
        }
    }

    /// Keeps what the debugger needs of the debugged process's exec.
    fn note_exec(&mut self, ev: &trace_format::ExecEvent) -> Result<()> {
        let debugged = self.debugged(ev.tid);
        let reader = Rc::clone(&self.reader);
        if let Some(d) = self.debug.as_mut().filter(|_| debugged) {
            d.breakpoints.clear();
            d.pending_breakpoints.clear();
            d.lifted = None;
            d.hw_generation += 1;
            d.exe = reader.file_path(&ev.exe)?;
            d.comm = debug::comm_of(&ev.exe.path);
            d.auxv = tracee::auxv::raw(&ev.stack);
            if self.index > 0 {
                // (Reported under the process's id: a thread's exec makes it the main one.)
                let process = d.process;
                d.note_proc_event(Halt::Exec(process));
            }
        }
        Ok(())
    }
}

/// How many signals the replay may drop (ones the recording did not have at this point) while
/// it delivers a recorded signal at a point, or runs a syscall in a task at a point, before
/// giving up.
const MAX_STRAY_SIGNALS: usize = 16;

/// The signal `t` is stopped for, if a signal-delivery-stop other than a `SIGTRAP` and other
/// than the stop it was in when its `siginfo` was `before`: after a syscall injected into it
/// failed, whether a signal stopped it before the syscall ran.
fn stopped_by_signal(
    t: &Tracee,
    before: Option<[u8; tracee::tracee::SIGINFO_SIZE]>,
) -> Option<i32> {
    let now = t.siginfo().ok()?;
    let (sig, _) = tracee::tracee::signo_code(&now);
    (Some(now) != before && sig > 0 && sig != libc::SIGTRAP).then_some(sig)
}

/// Whether thread `t` blocks signal `signo` (its `SigBlk` in `/proc`).
fn signal_blocked(t: &Tracee, signo: i32) -> Result<bool> {
    let mask = t.signal_set("SigBlk")?;
    Ok((1..=64).contains(&signo) && mask & (1 << (signo - 1)) != 0)
}

fn errno_text(v: i64) -> String {
    if syscalls::is_error(v) {
        std::io::Error::from_raw_os_error(-v as i32).to_string()
    } else {
        "success".into()
    }
}
