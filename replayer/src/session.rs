//! The replay loop: drives the tracee from event to event of the trace.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use syscalls::Replay;
use trace_format::{
    CloneEvent, Event, EventIter, ExitStatus, MemWrite, Point, PreemptEvent, RdtscEvent,
    SignalEvent, SignalOrigin, StartEvent, SyscallEvent, Tid, TraceReader,
};
use tracee::insn::Trapped;
use tracee::locate::Verdict;
use tracee::{regs, spawn, SpawnOptions, Stop, Tracee};

use crate::debug::{self, Debug, Halt, WatchKind};
use crate::divergence::{Divergence, Incomplete};
use crate::point::{self, PointEvent, Room, Toward};
use crate::tasks::{self, LastTrap, RState, Task, Tasks};
use crate::{echo, exec, mmap, seccomp, sigmask};

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Do not echo what the program wrote to stdout/stderr.
    pub quiet: bool,
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
            Some(outcome) => Ok(outcome),
            None => bail!("the replay halted without a debugger"),
        });
        session.tasks.kill_all();
        result
    })
}

impl Session {
    /// Opens the trace in `dir`, starts the program and replays its exec (event 0). With a
    /// debugger, the replay then halts before the program's first instruction.
    pub(crate) fn open(dir: &Path, opts: &ReplayOptions, debug: Option<Debug>) -> Result<Self> {
        let reader = Rc::new(TraceReader::open(dir)?);
        warn_if_cpu_differs(&reader);
        let mut events = reader.events()?;
        let first = match events.next() {
            Some(ev) => ev?,
            None => bail!(Incomplete { events: 0 }),
        };
        let Event::Exec(exec_ev) = first else {
            bail!("the trace does not start with the program's exec");
        };
        let meta = reader.meta();
        let program = reader.file_path(&exec_ev.exe)?;
        let bind_over = exec::interpreter_override(&reader, &exec_ev, &program)?;
        let cpu = meta.cpu.map(|c| c as usize).filter(|&c| cpu_allowed(c));
        let tracee = spawn(&SpawnOptions {
            program,
            argv: meta.argv.clone(),
            env: meta.env.clone(),
            cpu,
            trap_tsc: true,
            seccomp: true,
            no_core_dump: true,
            signals: tracee::SignalState {
                blocked: exec_ev.sig_blocked,
                ignored: exec_ev.sig_ignored,
            },
            bind_over,
            own_process_group: true,
        })?;
        let mut tasks = Tasks::default();
        let pid = tracee.pid();
        tasks.add(exec_ev.tid, exec_ev.tid, tracee, pid, RState::Unstarted);
        let mut session = Session {
            tasks,
            reader,
            events,
            next: None,
            index: 0,
            opts: opts.clone(),
            root: exec_ev.tid,
            root_status: None,
            running: None,
            toward: None,
            debug,
        };
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
    /// The next event, once peeked.
    next: Option<Event>,
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
        if self.next.is_none() {
            self.next = self.events.next().transpose()?;
        }
        Ok(self.next.as_ref())
    }

    fn take(&mut self) -> Result<Option<Event>> {
        self.peek()?;
        Ok(self.next.take())
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
                self.halt(Halt::Interrupted(tid));
                return Ok(None);
            }
            let Some(ev) = self.take()? else {
                if self.events.truncated() || !self.reader.meta().complete {
                    bail!(Incomplete {
                        events: self.index + 1
                    });
                }
                let status = self
                    .root_status
                    .context("the trace ends without the program's exit")?;
                return Ok(Some(ReplayOutcome {
                    status,
                    events: self.index + 1,
                }));
            };
            self.index += 1;
            let tid = ev.tid();
            if self.tasks.get(tid).is_none() {
                return Err(self.diverged(
                    tid,
                    format!("a {} event", ev.kind()),
                    "no such task in the replay".into(),
                ));
            }
            match ev {
                Event::Syscall(e) => self.syscall(&e)?,
                Event::Signal(e) => self.signal(&e)?,
                Event::Rdtsc(e) => self.rdtsc(&e)?,
                Event::Exit(e) => self.exit(e.tid, e.status)?,
                Event::Exec(e) => self.exec(&e)?,
                Event::Clone(e) => self.clone_task(&e)?,
                Event::Start(e) => self.start(&e)?,
                Event::Cpuid(_) => bail!("trapped CPUID events are not supported by this replayer"),
                Event::Preempt(e) => self.preempt(&e)?,
                Event::Resume(e) => self.resume_preempted(e.tid)?,
            }
        }
    }

    fn halted(&self) -> bool {
        self.debug.as_ref().is_some_and(|d| d.halt.is_some())
    }

    fn halt(&mut self, why: Halt) {
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
            d.lifted = None;
            d.hw_generation += 1;
            d.exe = reader.file_path(&ev.exe)?;
            d.comm = debug::comm_of(&ev.exe.path);
            d.auxv = tracee::auxv::raw(&ev.stack);
        }
        Ok(())
    }

    /// The stop task `tid` is parked at, for its next event.
    fn parked(&mut self, tid: Tid) -> Result<Stop> {
        match self.task(tid)?.state {
            RState::Parked(stop) => Ok(stop),
            RState::Dead(status) => Err(self.diverged(
                tid,
                "the task to go on".into(),
                format!("the task ended ({status})"),
            )),
            RState::AtPoint => Err(self.diverged(
                tid,
                "the task's next event".into(),
                "the task stopped at a point in its user code (preempted)".into(),
            )),
            other => bail!("task {tid} is not stopped at an event ({other:?})"),
        }
    }

    /// Resumes `tid` after an event, first sending the signal the recording delivered right
    /// at this point, if any, then runs it to its next stop: exactly one task runs user code
    /// at a time, in the recorded order.
    fn resume(&mut self, tid: Tid, sig: i32) -> Result<()> {
        let mut toward = None;
        let next = match self.peek()? {
            // The task's run ends at an exact point in its user code.
            Some(Event::Preempt(p)) if p.tid == tid => {
                toward = Some(Toward::new(tid, p.point.clone(), PointEvent::Preempt));
                None
            }
            Some(Event::Signal(s)) if s.tid == tid && s.point.is_some() => {
                let signal = PointEvent::Signal(s.signo);
                toward = s.point.clone().map(|p| Toward::new(tid, p, signal));
                None
            }
            Some(Event::Signal(s)) if s.tid == tid && s.origin == SignalOrigin::Async => {
                Some(s.signo)
            }
            Some(Event::Exit(e))
                if e.tid == tid && e.status == ExitStatus::Signaled(libc::SIGKILL) =>
            {
                // SIGKILL never shows as a stop: the recorded task just ended here.
                let t = self.task(tid)?;
                let _ = nix::sys::signal::kill(t.tracee.pid(), nix::sys::signal::SIGKILL);
                t.state = RState::Exiting;
                return Ok(());
            }
            _ => None,
        };
        let t = self.task(tid)?;
        if let Some(signo) = next {
            if !std::mem::take(&mut t.signal_sent) {
                t.tracee.tgkill(t.pid, signo)?;
            }
            t.injected = Some(signo);
        }
        t.state = RState::Resumed;
        if let Some(w) = &toward {
            tracing::debug!(tid, rip = w.rip(), event = ?w.event, "running to a point");
        }
        self.toward = toward;
        self.running = Some(Run {
            tid,
            sig,
            sig_reported: false,
        });
        self.run_task()
    }

    /// Runs the task resumed after the last event up to its next stop that belongs to the
    /// recording (parking it there), unless the debugger halts the replay first. Signals the
    /// replay itself causes but the recording delivered at other points (a child's SIGCHLD,
    /// which the replayer delivers from the trace) and signals sent from outside are dropped.
    fn run_task(&mut self) -> Result<()> {
        while let Some(run) = self.running {
            if self.halted() {
                return Ok(());
            }
            if self.debug.is_some() {
                if let Some(why) = self.halt_before_run(run) {
                    self.halt(why);
                    return Ok(());
                }
            }
            let early = self.launch(run)?;
            self.running = Some(Run {
                sig: 0,
                sig_reported: false,
                ..run
            });
            let stop = match early {
                Some(stop) => stop,
                None => self.wait_running(run.tid)?,
            };
            let next = if self.running_toward(run.tid) {
                match self.toward_stop(run.tid, stop)? {
                    Some(next) => next,
                    // Parked at the point.
                    None => continue,
                }
            } else {
                self.classify(run.tid, stop)?
            };
            match next {
                Next::Park(stop) if self.running_toward(run.tid) => {
                    return Err(self.missed_point(run.tid, stop));
                }
                Next::Park(stop) => {
                    self.task(run.tid)?.state = match stop {
                        Stop::Exited(c) => RState::Dead(ExitStatus::Exited(c)),
                        Stop::Killed(s) => RState::Dead(ExitStatus::Signaled(s)),
                        other => RState::Parked(other),
                    };
                    self.running = None;
                }
                Next::Again => {}
                Next::Halt(why) => self.halt(why),
            }
        }
        Ok(())
    }

    /// Whether the debugger wants the replay to halt before `run` goes on.
    fn halt_before_run(&mut self, run: Run) -> Option<Halt> {
        let debugged = self.debugged(run.tid);
        if debugged {
            self.debug.as_mut()?.current = Some(run.tid);
        }
        let index = self.index;
        if self
            .debug
            .as_ref()?
            .halt_after_event
            .is_some_and(|e| index >= e)
        {
            let who = if debugged {
                run.tid
            } else {
                self.halt_thread()
            };
            self.debug.as_mut()?.halt_after_event = None;
            return Some(Halt::Reached(who));
        }
        let d = self.debug.as_mut()?;
        if !debugged {
            return None;
        }
        if let Some(w) = d.pending_watch.take() {
            return Some(w);
        }
        if run.sig != 0 && !run.sig_reported {
            self.running = Some(Run {
                sig_reported: true,
                ..run
            });
            return Some(Halt::Signal {
                tid: run.tid,
                signo: run.sig,
            });
        }
        match d.step {
            Some(s) if s.tid == run.tid && s.launched && run.sig == 0 => Some(Halt::Step(run.tid)),
            _ => None,
        }
    }

    /// Lets `run`'s task go: continues it, or single-steps it when the debugger steps it or
    /// when it must step over a breakpoint at its pc. Returns a stop the task reached while
    /// being prepared, before it could be let go (see [`Self::launch_toward`]).
    fn launch(&mut self, run: Run) -> Result<Option<Stop>> {
        let step = if self.debug.is_some() {
            self.debug_launch(run)?
        } else {
            false
        };
        if self.running_toward(run.tid) {
            return self.launch_toward(run, step);
        }
        let t = self.tracee(run.tid)?;
        if step {
            t.step(run.sig)?;
        } else {
            t.cont(run.sig)?;
        }
        Ok(None)
    }

    /// The debugger's part of [`Self::launch`]: puts back a breakpoint lifted for a step,
    /// writes its debug registers, lifts a breakpoint at the task's pc; whether the task must
    /// single-step (the debugger's step, or a step over that breakpoint).
    fn debug_launch(&mut self, run: Run) -> Result<bool> {
        let debugged = self.debugged(run.tid);
        self.put_back_lifted()?;
        if debugged {
            self.sync_debug_regs(run.tid)?;
        }
        let t = tasks::task(&mut self.tasks, run.tid)?;
        let Some(d) = self.debug.as_mut() else {
            return Ok(false);
        };
        let mut step = false;
        if let Some(s) = d.step.as_mut().filter(|s| s.tid == run.tid) {
            s.launched = true;
            step = true;
        }
        d.stepped_over = None;
        if !d.breakpoints.is_empty() {
            let rip = t.tracee.regs()?.rip;
            let mut byte = [0u8];
            if let Some(&orig) = d.breakpoints.get(&rip) {
                if t.tracee.read_mem_partial(rip, &mut byte) == 1 && byte[0] == debug::INT3 {
                    t.tracee.write_mem(rip, &[orig])?;
                    d.lifted = Some(rip);
                    d.stepped_over = Some(run.tid);
                    step = true;
                }
            }
        }
        if step {
            t.single_stepped = true;
        }
        Ok(step)
    }

    /// Puts back the breakpoint taken out for a step over it.
    fn put_back_lifted(&mut self) -> Result<()> {
        let Some(addr) = self.debug.as_mut().and_then(|d| d.lifted.take()) else {
            return Ok(());
        };
        match self.process_tracee() {
            Some(t) => t.write_mem(addr, &[debug::INT3]),
            None => Ok(()),
        }
    }

    /// A live task of the debugged process, to reach its memory.
    pub(crate) fn process_tracee(&self) -> Option<&Tracee> {
        let d = self.debug.as_ref()?;
        let tid = self.tasks.in_process(d.process).map(|(id, _)| id).min()?;
        self.tasks.by_tid(tid).map(|t| &t.tracee)
    }

    /// Writes the debugger's hardware breakpoints and watchpoints into `tid`'s debug
    /// registers, if they changed since it last ran.
    fn sync_debug_regs(&mut self, tid: Tid) -> Result<()> {
        let Some(d) = self.debug.as_ref() else {
            return Ok(());
        };
        let generation = d.hw_generation;
        let regs = d.regs;
        let t = self.task(tid)?;
        if t.hw_generation == generation {
            return Ok(());
        }
        t.tracee.set_debug_regs(&regs)?;
        t.hw_generation = generation;
        Ok(())
    }

    /// Waits for the next stop of the running task `tid`. With a debugger, checks for its
    /// interrupt every 100 ms and stops the task with `SIGSTOP` when it comes; a task running
    /// toward a point is stopped the same way once it has run longer than the search may take.
    fn wait_running(&mut self, tid: Tid) -> Result<Stop> {
        let (real, pid) = {
            let t = self.task(tid)?;
            (t.tracee.pid(), t.pid)
        };
        let mut toward = self.toward.as_mut().filter(|w| w.tid == tid);
        let mut debug = self.debug.as_mut();
        if debug.is_none() && toward.is_none() {
            return self.tasks.wait_real(real, &mut || Ok(()));
        }
        let stop_task = || {
            // SAFETY: tgkill takes only integers.
            unsafe { libc::syscall(libc::SYS_tgkill, pid.as_raw(), real.as_raw(), libc::SIGSTOP) };
        };
        const POLL: Duration = Duration::from_millis(100);
        let started = Instant::now();
        tracee::alarm::start(POLL, POLL);
        let stop = self.tasks.wait_real(real, &mut || {
            if let Some(d) = debug.as_deref_mut() {
                if d.interrupt_sent.is_none() && d.interrupt_requested() {
                    stop_task();
                    d.interrupt_sent = Some(tid);
                }
            }
            if let Some(w) = toward.as_deref_mut() {
                if !w.timeout_sent && w.ran + started.elapsed() > w.limit {
                    tracing::debug!(tid, "the run to a point takes too long: stopping the task");
                    stop_task();
                    w.timeout_sent = true;
                }
            }
            Ok(())
        });
        tracee::alarm::stop();
        if let Some(w) = toward {
            w.ran += started.elapsed();
        }
        stop
    }

    /// What to do with the stop the running task `tid` reached.
    fn classify(&mut self, tid: Tid, stop: Stop) -> Result<Next> {
        let Stop::Signal(sig) = stop else {
            return Ok(Next::Park(stop));
        };
        if self.debug.is_some() {
            if let Some(next) = self.debug_trap(tid, sig)? {
                if sig == libc::SIGTRAP {
                    self.task(tid)?.debugger_trapped = true;
                }
                return Ok(next);
            }
        }
        let t = self.task(tid)?;
        if t.injected == Some(sig) {
            t.injected = None;
            return Ok(Next::Park(stop));
        }
        let drop = match t.tracee.siginfo() {
            Err(_) => true,
            Ok(info) => {
                let (_, code) = tracee::tracee::signo_code(&info);
                code <= 0 || sig == libc::SIGCHLD
            }
        };
        if drop {
            tracing::debug!(tid, sig, "dropping a signal the recording did not have");
            return Ok(Next::Again);
        }
        Ok(Next::Park(stop))
    }

    /// Whether signal `sig` stopping `tid` is the debugger's doing (a breakpoint, a watchpoint,
    /// a single step, an interrupt) rather than the program's.
    fn debug_trap(&mut self, tid: Tid, sig: i32) -> Result<Option<Next>> {
        let debugged = self.debugged(tid);
        let halt_thread = self.halt_thread();
        let t = tasks::task(&mut self.tasks, tid)?;
        let Some(d) = self.debug.as_mut() else {
            return Ok(None);
        };
        if sig == libc::SIGSTOP && d.interrupt_sent == Some(tid) {
            d.interrupt_sent = None;
            let who = if debugged { tid } else { halt_thread };
            return Ok(Some(Next::Halt(Halt::Interrupted(who))));
        }
        if sig != libc::SIGTRAP {
            return Ok(None);
        }
        let (_, code) = tracee::tracee::signo_code(&t.tracee.siginfo()?);
        if code == libc::SI_KERNEL {
            let mut r = t.tracee.regs()?;
            let at = r.rip.wrapping_sub(1);
            if d.breakpoints.contains_key(&at) && d.lifted != Some(at) {
                r.rip = at;
                t.tracee.set_regs(&r)?;
                return Ok(Some(if debugged {
                    Next::Halt(Halt::Breakpoint(tid))
                } else {
                    Next::Again
                }));
            }
        }
        if code == TRAP_HWBKPT && debugged {
            let dr6 = t.tracee.debug_reg(6)?;
            t.tracee.set_debug_reg(6, 0)?;
            if let Some(point) = d.point_hit(dr6) {
                return Ok(Some(Next::Halt(point.halt(tid))));
            }
        }
        if code > 0 {
            if d.step.is_some_and(|s| s.tid == tid && s.launched) {
                return Ok(Some(Next::Halt(Halt::Step(tid))));
            }
            if d.stepped_over == Some(tid) {
                return Ok(Some(Next::Again));
            }
        }
        Ok(None)
    }

    fn wait_task(&mut self, tid: Tid) -> Result<Stop> {
        let real = self.tracee(tid)?.pid();
        self.tasks.wait_real(real, &mut || Ok(()))
    }

    /// At the exec stop of `tid`: makes the new image the recorded one and runs to the end of
    /// `execve`.
    fn finish_exec(&mut self, tid: Tid, ev: &trace_format::ExecEvent) -> Result<()> {
        let index = self.index;
        let t = self.task(tid)?;
        t.tracee.reopen_mem()?;
        exec::restore(&t.tracee, ev, index)?;
        t.tracee.cont_syscall(0)?;
        match self.wait_task(tid)? {
            Stop::SyscallStop => {}
            other => bail!("unexpected stop after exec: {other:?}"),
        }
        self.resume(tid, 0)
    }

    /// A successful `execve`: runs it for real, but on the trace's copy of the executable the
    /// recording ran.
    fn exec(&mut self, ev: &trace_format::ExecEvent) -> Result<()> {
        let tid = ev.tid;
        let reader = Rc::clone(&self.reader);
        let stop = self.parked(tid)?;
        let t = self.tracee(tid)?;
        let mut r = t.regs()?;
        if stop != Stop::SeccompEntry || !exec::is_exec(r.orig_rax) {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(tid, format!("execve of {}", ev.exe.path), found));
        }
        exec::run_trace_copy(t, &mut r, &reader.file_path(&ev.exe)?)?;
        t.cont_syscall(0)?;
        let (real, leader, rpid) = {
            let t = self.task(tid)?;
            (t.tracee.pid(), t.pid, t.rpid)
        };
        // A thread other than the main one gets the process id in its exec (its exec stop
        // is reported under that id).
        let stop = loop {
            match self.tasks.wait_either(real, leader)? {
                // A stop the main thread reported before the exec killed it (its clone's
                // exit, say): stale.
                (pid, stop) if pid != real && stop != Stop::Exec => {
                    tracing::debug!(?stop, "a stop of the main thread the exec killed");
                }
                (_, stop) => break stop,
            }
        };
        match stop {
            Stop::Exec => {
                self.note_exec(ev)?;
                if rpid != tid {
                    self.tasks.exec_by_thread(tid, rpid)?;
                }
                self.finish_exec(rpid, ev)
            }
            other => {
                let found = match other {
                    Stop::SyscallStop => {
                        let err = self.tracee(tid)?.regs()?.rax as i64;
                        format!("execve failing with {}", errno_text(err))
                    }
                    other => self.describe_stop(tid, other),
                };
                Err(self.diverged(tid, format!("execve of {}", ev.exe.path), found))
            }
        }
    }

    fn describe_stop(&mut self, tid: Tid, stop: Stop) -> String {
        let regs = self.tracee(tid).and_then(|t| t.regs()).ok();
        let rip = regs.map(|r| r.rip).unwrap_or(0);
        match stop {
            Stop::SeccompEntry => {
                let nr = regs.map(|r| r.orig_rax).unwrap_or(u64::MAX);
                format!("syscall {} at rip {rip:#x}", syscalls::name(nr))
            }
            Stop::Signal(s) => format!("signal {s} at rip {rip:#x}"),
            Stop::Exited(c) => format!("the task exiting with status {c}"),
            Stop::Killed(s) => format!("the task killed by signal {s}"),
            other => format!("{other:?} at rip {rip:#x}"),
        }
    }

    /// The registers of `tid` at a syscall entry. A task the debugger single-stepped into
    /// the `syscall` instruction has the trap flag in r11 (the instruction saves rflags
    /// there): it is taken out, so the program sees, and the check compares, the recorded
    /// value.
    fn entry_regs(&mut self, tid: Tid) -> Result<tracee::Regs> {
        let t = self.task(tid)?;
        let mut r = t.tracee.regs()?;
        if std::mem::take(&mut t.single_stepped) && r.r11 & TRAP_FLAG != 0 {
            r.r11 &= !TRAP_FLAG;
            t.tracee.set_regs(&r)?;
        }
        Ok(r)
    }

    /// Checks that `tid`, stopped at a syscall entry with registers `r`, makes the recorded
    /// call.
    fn check_entry(&self, tid: Tid, r: &tracee::Regs, e: &SyscallEvent) -> Result<()> {
        let name = syscalls::name(e.nr);
        let args = regs::syscall_args(r);
        if r.orig_rax != e.nr || args != e.args || r.rip != e.rip {
            let show = |nr: u64, a: &[u64; 6], rip: u64| {
                let args: Vec<String> = a.iter().map(|x| format!("{x:#x}")).collect();
                format!(
                    "{}({}) at rip {rip:#x}",
                    syscalls::name(nr),
                    args.join(", ")
                )
            };
            return Err(self.diverged(
                tid,
                show(e.nr, &e.args, e.rip),
                show(r.orig_rax, &args, r.rip),
            ));
        }
        if regs::digest(r) != e.regs_digest {
            return Err(self.diverged_with(
                tid,
                format!("{name} with the recorded registers"),
                format!("{name} with different registers (rip {:#x})", r.rip),
                vec!["the general registers at syscall entry differ from the recording".into()],
            ));
        }
        Ok(())
    }

    fn syscall(&mut self, e: &SyscallEvent) -> Result<()> {
        let tid = e.tid;
        if self.task(tid)?.state == RState::InSyscall {
            return self.finish_clone(e);
        }
        let name = syscalls::name(e.nr);
        let stop = self.parked(tid)?;
        if stop != Stop::SeccompEntry {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(tid, format!("syscall {name} at rip {:#x}", e.rip), found));
        }
        let mut r = self.entry_regs(tid)?;
        self.check_entry(tid, &r, e)?;
        let replay = syscalls::lookup(e.nr)
            .map(|d| d.replay)
            .unwrap_or(Replay::Deny(libc::ENOSYS));
        match replay {
            Replay::Execute => {
                self.run_for_real(tid, &name)?;
                seccomp::hide_own_filter(self.tracee(tid)?, e.nr, e.args[0])?;
                self.check_result(tid, e)?;
            }
            Replay::ExecuteRecordedResult => {
                self.run_for_real(tid, &name)?;
                let t = self.tracee(tid)?;
                let mut after = t.regs()?;
                after.rax = e.result as u64;
                t.set_regs(&after)?;
            }
            Replay::Mmap if !syscalls::is_error(e.result) => {
                let saved = r;
                regs::set_syscall_args(&mut r, &mmap::replacement_args(e));
                self.tracee(tid)?.set_regs(&r)?;
                self.run_for_real(tid, &name)?;
                let reader = Rc::clone(&self.reader);
                let t = self.tracee(tid)?;
                let mut after = t.regs()?;
                if after.rax as i64 != e.result {
                    return Err(self.diverged(
                        tid,
                        format!("mmap to return {:#x}", e.result),
                        format!("{:#x} ({})", after.rax, errno_text(after.rax as i64)),
                    ));
                }
                mmap::fill_from_file(t, &reader, e)?;
                regs::set_syscall_args(&mut after, &regs::syscall_args(&saved));
                t.set_regs(&after)?;
            }
            Replay::Exit => {
                let t = self.task(tid)?;
                t.tracee.cont(0)?;
                t.state = RState::Exiting;
                return Ok(());
            }
            Replay::Unsupported(reason) => bail!("{name} is not supported: {reason}"),
            Replay::Exec if !syscalls::is_error(e.result) => {
                bail!("the trace records a successful execve as a plain syscall")
            }
            Replay::Clone if !syscalls::is_error(e.result) => {
                bail!("the trace records a successful {name} without the task it made")
            }
            Replay::Emulate | Replay::Deny(_) | Replay::Mmap | Replay::Exec | Replay::Clone => {
                self.emulate(tid, e, r)?
            }
        }
        self.resume(tid, 0)
    }

    /// Skips the syscall `tid` is stopped at and gives it the recorded result and memory.
    fn emulate(&mut self, tid: Tid, e: &SyscallEvent, mut r: tracee::Regs) -> Result<()> {
        let name = syscalls::name(e.nr);
        if !self.opts.quiet {
            echo::echo(self.tracee(tid)?, e).unwrap_or_else(|err| {
                tracing::warn!("could not echo output: {err:#}");
            });
        }
        let interrupted = is_restart_code(e.result) || e.result == -(libc::EINTR as i64);
        let signal_next = match self.peek()? {
            Some(Event::Signal(s))
                if s.tid == tid && s.origin == SignalOrigin::Async && s.point.is_none() =>
            {
                Some(s.signo)
            }
            _ => None,
        };
        let mask = match signal_next {
            Some(_) if interrupted => sigmask::temporary_mask(self.tracee(tid)?, e)?,
            _ => None,
        };
        let t = self.task(tid)?;
        if let (Some((set, size)), Some(signo)) = (mask, signal_next) {
            let saved = r;
            r.orig_rax = libc::SYS_rt_sigsuspend as u64;
            r.rdi = set;
            r.rsi = size;
            t.tracee.set_regs(&r)?;
            t.tracee.tgkill(t.pid, signo)?;
            t.signal_sent = true;
            t.temporary_mask = true;
            t.tracee.cont_syscall(0)?;
            self.expect_syscall_exit(tid, &name)?;
            r = self.tracee(tid)?.regs()?;
            regs::set_syscall_args(&mut r, &regs::syscall_args(&saved));
            r.orig_rax = e.nr;
        } else if is_restart_code(e.result) {
            // The restart logic that runs when the following signal is delivered needs the
            // syscall to have really happened: run getpid in its place.
            r.orig_rax = libc::SYS_getpid as u64;
            t.tracee.set_regs(&r)?;
            t.tracee.cont_syscall(0)?;
            self.expect_syscall_exit(tid, &name)?;
            r = self.tracee(tid)?.regs()?;
            r.orig_rax = e.nr;
        } else {
            r.orig_rax = u64::MAX;
        }
        self.write_memory(tid, &e.writes, &name)?;
        r.rax = e.result as u64;
        self.tracee(tid)?.set_regs(&r)
    }

    /// A clone, fork or vfork: runs it for real up to the moment the kernel made the new task,
    /// which then exists in the replay as the recorded task `e.child`.
    fn clone_task(&mut self, e: &CloneEvent) -> Result<()> {
        let tid = e.tid;
        let stop = self.parked(tid)?;
        let r = self.entry_regs(tid)?;
        let t = self.tracee(tid)?;
        if stop != Stop::SeccompEntry || r.orig_rax != e.nr {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(
                tid,
                format!("{} making a task", syscalls::name(e.nr)),
                found,
            ));
        }
        t.cont_syscall(0)?;
        let stop = self.wait_task(tid)?;
        if !matches!(
            stop,
            Stop::Event(
                libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK
            )
        ) {
            let found = match stop {
                Stop::SyscallStop => {
                    let err = self.tracee(tid)?.regs()?.rax as i64;
                    format!("{} failing with {}", syscalls::name(e.nr), errno_text(err))
                }
                other => self.describe_stop(tid, other),
            };
            return Err(self.diverged(
                tid,
                format!("{} making a task", syscalls::name(e.nr)),
                found,
            ));
        }
        let t = self.task(tid)?;
        let real = Pid::from_raw(i32::try_from(t.tracee.event_msg()?).context("bad task id")?);
        let parent_pid = t.pid;
        // The new task inherits its parent's last trap.
        let (last_trap, debugger_trapped) = (t.last_trap, t.debugger_trapped);
        t.clone_entry = Some(r);
        self.write_memory(tid, &e.writes, "clone")?;
        let child_pid = if e.child_pid == e.child {
            real
        } else {
            parent_pid
        };
        let child = Tracee::attach_traced(real)?;
        let inherits = e.flags & libc::CLONE_VM as u64 == 0
            && self.debugged(tid)
            && self
                .debug
                .as_ref()
                .is_some_and(|d| !d.breakpoints.is_empty());
        self.tasks
            .add(e.child, e.child_pid, child, child_pid, RState::Unstarted);
        let c = self.task(e.child)?;
        c.inherits_breakpoints = inherits;
        c.last_trap = last_trap;
        c.debugger_trapped = debugger_trapped;
        let t = self.task(tid)?;
        t.tracee.cont_syscall(0)?;
        t.state = RState::InSyscall;
        Ok(())
    }

    /// The result of a clone whose task was made at its [`CloneEvent`]: the recorded id
    /// replaces the replay's.
    fn finish_clone(&mut self, e: &SyscallEvent) -> Result<()> {
        let tid = e.tid;
        let name = syscalls::name(e.nr);
        let entry = self.task(tid)?.clone_entry.take();
        if let Some(entry) = entry {
            self.check_entry(tid, &entry, e)?;
        }
        match self.wait_task(tid)? {
            Stop::SyscallStop => {}
            other => {
                let found = self.describe_stop(tid, other);
                return Err(self.diverged(tid, format!("{name} to return"), found));
            }
        }
        let t = self.tracee(tid)?;
        let mut r = t.regs()?;
        if syscalls::is_error(r.rax as i64) {
            return Err(self.diverged(
                tid,
                format!("{name} to return {}", e.result),
                errno_text(r.rax as i64),
            ));
        }
        r.rax = e.result as u64;
        t.set_regs(&r)?;
        self.write_memory(tid, &e.writes, &name)?;
        self.resume(tid, 0)
    }

    /// A task made by a clone runs for the first time.
    fn start(&mut self, e: &StartEvent) -> Result<()> {
        let tid = e.tid;
        let t = self.task(tid)?;
        if t.state == RState::Unstarted {
            let real = t.tracee.pid();
            let stop = self.tasks.wait_real(real, &mut || Ok(()))?;
            if !matches!(stop, Stop::Signal(_)) {
                let found = self.describe_stop(tid, stop);
                return Err(self.diverged(tid, "the new task to start".into(), found));
            }
        }
        if std::mem::take(&mut self.task(tid)?.inherits_breakpoints) {
            if let (Some(d), Some(t)) = (self.debug.as_ref(), self.tasks.by_tid(tid)) {
                debug::restore_original_bytes(&t.tracee, &d.breakpoints)?;
            }
        }
        self.write_memory(tid, &e.writes, "clone")?;
        self.resume(tid, 0)
    }

    /// Lets the syscall `tid` is stopped at run, up to its exit stop.
    fn run_for_real(&mut self, tid: Tid, name: &str) -> Result<()> {
        self.tracee(tid)?.cont_syscall(0)?;
        self.expect_syscall_exit(tid, name)
    }

    fn expect_syscall_exit(&mut self, tid: Tid, name: &str) -> Result<()> {
        match self.wait_task(tid)? {
            Stop::SyscallStop => Ok(()),
            other => {
                let found = self.describe_stop(tid, other);
                Err(self.diverged(tid, format!("{name} to return"), found))
            }
        }
    }

    fn check_result(&mut self, tid: Tid, e: &SyscallEvent) -> Result<()> {
        let got = self.tracee(tid)?.regs()?.rax as i64;
        if got != e.result {
            return Err(self.diverged(
                tid,
                format!("{} to return {}", syscalls::name(e.nr), e.result),
                format!("{got} ({})", errno_text(got)),
            ));
        }
        Ok(())
    }

    fn write_memory(&mut self, tid: Tid, writes: &[MemWrite], name: &str) -> Result<()> {
        let reader = Rc::clone(&self.reader);
        let t = self.tracee(tid)?;
        let mut written = Vec::with_capacity(writes.len());
        for w in writes {
            let data = reader.read_data(&w.data)?;
            t.write_mem(w.addr, &data)
                .with_context(|| format!("restoring what {name} wrote"))?;
            written.push((w.addr, data.len() as u64));
        }
        if self.debugged(tid) {
            if let Some(d) = self.debug.as_mut() {
                for (addr, len) in written {
                    d.note_write(tid, addr, len);
                }
            }
        }
        Ok(())
    }

    fn signal(&mut self, e: &SignalEvent) -> Result<()> {
        if e.point.is_some() {
            return self.signal_at_point(e);
        }
        let tid = e.tid;
        let stop = self.parked(tid)?;
        if stop != Stop::Signal(e.signo) {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(
                tid,
                format!("signal {} at rip {:#x}", e.signo, e.rip),
                found,
            ));
        }
        let t = self.tracee(tid)?;
        let rip = t.regs()?.rip;
        if rip != e.rip {
            return Err(self.diverged(
                tid,
                format!("signal {} at rip {:#x}", e.signo, e.rip),
                format!("signal {} at rip {rip:#x}", e.signo),
            ));
        }
        let temporary_mask = std::mem::take(&mut self.task(tid)?.temporary_mask);
        match e.origin {
            SignalOrigin::Fault => {
                // The fault trapped in the replay too.
                let t = self.task(tid)?;
                t.last_trap = LastTrap::Fault;
                t.debugger_trapped = false;
            }
            SignalOrigin::Async => {
                if e.delivered && self.task(tid)?.debugger_trapped {
                    let expected = format!("signal {} at rip {:#x}", e.signo, e.rip);
                    self.restore_last_trap(tid, temporary_mask, &expected)?;
                }
                self.tracee(tid)?.set_siginfo(&e.siginfo)?;
            }
        }
        self.resume(tid, if e.delivered { e.signo } else { 0 })
    }

    fn rdtsc(&mut self, e: &RdtscEvent) -> Result<()> {
        let tid = e.tid;
        let stop = self.parked(tid)?;
        let t = &self.tasks.by_tid(tid).context(tasks::unknown(tid))?.tracee;
        let mut r = t.regs()?;
        let mut code = [0u8; 16];
        let n = t.read_mem_partial(r.rip, &mut code);
        if let Some(d) = self.debug.as_ref() {
            d.hide_breakpoints(r.rip, &mut code[..n]);
        }
        let decoded = tracee::insn::decode_trapped(&code[..n], r.rip);
        let expected = if e.aux.is_some() {
            Trapped::Rdtscp
        } else {
            Trapped::Rdtsc
        };
        let Some((kind, len)) = decoded.filter(|_| stop == Stop::Signal(libc::SIGSEGV)) else {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(tid, format!("rdtsc at rip {:#x}", e.rip), found));
        };
        if kind != expected || r.rip != e.rip {
            return Err(self.diverged(
                tid,
                format!("{expected:?} at rip {:#x}", e.rip),
                format!("{kind:?} at rip {:#x}", r.rip),
            ));
        }
        r.rax = e.tsc & 0xffff_ffff;
        r.rdx = e.tsc >> 32;
        if let Some(aux) = e.aux {
            r.rcx = u64::from(aux);
        }
        r.rip += len as u64;
        t.set_regs(&r)?;
        let t = self.task(tid)?;
        t.last_trap = LastTrap::Tsc;
        t.debugger_trapped = false;
        self.resume(tid, 0)
    }

    /// The end of task `tid`: collects it and checks how it ended.
    fn exit(&mut self, tid: Tid, expected: ExitStatus) -> Result<()> {
        let t = self.task(tid)?;
        let found = match t.state {
            RState::Dead(status) => status,
            state => {
                let real = t.tracee.pid();
                if expected == ExitStatus::Signaled(libc::SIGKILL) {
                    // Killed from outside the task (another process, or outside the recording).
                    let _ = nix::sys::signal::kill(real, nix::sys::signal::SIGKILL);
                }
                match self.tasks.wait_end(real, END_GRACE)? {
                    Some(status) => status,
                    None => {
                        let found = match state {
                            RState::Parked(stop) => self.describe_stop(tid, stop),
                            other => format!("the task still running ({other:?})"),
                        };
                        return Err(self.diverged(
                            tid,
                            format!("the task to end ({expected})"),
                            found,
                        ));
                    }
                }
            }
        };
        if found != expected {
            return Err(self.diverged(tid, expected.to_string(), found.to_string()));
        }
        if tid == self.root {
            self.root_status = Some(found);
        }
        self.tasks.remove(tid);
        if self.debug.as_ref().is_some_and(|d| d.process == tid) {
            self.halt(Halt::Exited(found));
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

/// Exact points: running a task to the point of its next event, and the events there.
impl Session {
    /// Whether task `tid` runs toward the point of its next event.
    fn running_toward(&self, tid: Tid) -> bool {
        self.toward.as_ref().is_some_and(|w| w.tid == tid)
    }

    /// What a locator may use in task `tid`: everything, unless the debugger has breakpoints
    /// in its memory or hardware points in its debug registers.
    fn room(&self, tid: Tid) -> Room {
        match &self.debug {
            Some(d) if self.debugged(tid) => Room::around(&d.breakpoints, &d.regs),
            _ => Room::all(),
        }
    }

    /// [`Self::launch`] for a task running toward a point: a step (the debugger's, a step over
    /// a breakpoint, or one that delivers the signal the task resumes with) runs unarmed;
    /// otherwise the locator is armed and the task continued. Arming may run a syscall in the
    /// task (the first time, to map the trampoline): a signal that stops the task before that
    /// syscall is returned as the task's stop.
    fn launch_toward(&mut self, run: Run, step: bool) -> Result<Option<Stop>> {
        let tid = run.tid;
        if step || run.sig != 0 {
            // Arming runs syscalls, which would lose a signal the task is stopped for: the
            // signal is delivered first, by a single step that stops at the handler's first
            // instruction.
            let t = tasks::task(&mut self.tasks, tid)?;
            let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
                bail!("task {tid} runs toward no point");
            };
            w.stepped = true;
            w.delivering = run.sig != 0;
            t.single_stepped = true;
            t.tracee.step(run.sig)?;
            return Ok(None);
        }
        let room = self.room(tid);
        if self.toward.as_ref().is_some_and(|w| w.stale(&room)) {
            tracing::debug!(tid, "the debugger's points changed: a new locator");
            self.retire_locator(tid)?;
        }
        if self.toward.as_ref().is_some_and(|w| w.arming_injects()) {
            if let Some(stop) = self.leave_syscall_entry(tid)? {
                return Ok(Some(stop));
            }
        }
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
            bail!("task {tid} runs toward no point");
        };
        let before = t.siginfo().ok();
        if let Err(e) = w.arm(t, room) {
            return match stopped_by_signal(t, before) {
                Some(sig) => {
                    tracing::debug!(
                        tid,
                        sig,
                        "a signal came before the locator was armed: {e:#}"
                    );
                    Ok(Some(Stop::Signal(sig)))
                }
                None => Err(e),
            };
        }
        w.armed = true;
        t.cont(0)?;
        Ok(None)
    }

    /// If task `tid` is stopped at a syscall's entry (an emulated syscall, skipped with its
    /// result set), lets that syscall end: a syscall run in the task at its entry would run in
    /// the syscall's place and make the task enter it again (see `Tracee::inject_syscall`).
    /// Returns the stop that came instead of the syscall's exit, if one did.
    fn leave_syscall_entry(&mut self, tid: Tid) -> Result<Option<Stop>> {
        let t = self.tracee(tid)?;
        if !t.at_syscall_entry()? {
            return Ok(None);
        }
        t.cont_syscall(0)?;
        match self.wait_task(tid)? {
            Stop::SyscallStop => Ok(None),
            other => Ok(Some(other)),
        }
    }

    /// Runs `getpid` in task `tid` (stopped toward its point) until no signal stops it first,
    /// so that the next syscall the locator runs in it is not cut short by one. Such signals
    /// are not the recording's here: they are dropped; the debugger's interrupt is sent again,
    /// and a `SIGSTOP` of the time limit will be.
    fn drain_signals(&mut self, tid: Tid) -> Result<()> {
        let mut interrupt = false;
        for _ in 0..MAX_STRAY_SIGNALS {
            let t = self.tracee(tid)?;
            let before = t.siginfo().ok();
            let result = t.inject_syscall(libc::SYS_getpid, [0; 6]);
            let Err(e) = result else {
                if interrupt {
                    let t = self.task(tid)?;
                    t.tracee.tgkill(t.pid, libc::SIGSTOP)?;
                }
                return Ok(());
            };
            let Some(sig) = stopped_by_signal(t, before) else {
                return Err(e);
            };
            tracing::debug!(
                tid,
                sig,
                "dropping a signal before the locator runs a syscall"
            );
            if sig == libc::SIGSTOP {
                interrupt |= self
                    .debug
                    .as_ref()
                    .is_some_and(|d| d.interrupt_sent == Some(tid));
                if let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) {
                    w.timeout_sent = false;
                }
            }
        }
        bail!("signals keep stopping task {tid} before it can run a syscall")
    }

    /// Removes the locator of task `tid` (stopped toward its point, outside the trampoline),
    /// to build a new one.
    fn retire_locator(&mut self, tid: Tid) -> Result<()> {
        self.drain_signals(tid)?;
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        match self.toward.as_mut().filter(|w| w.tid == tid) {
            Some(w) => w.finish(t),
            None => Ok(()),
        }
    }

    /// Single-steps task `tid`, stopped in the locator's trampoline, until it is back in the
    /// program's code, so that a debugger halting there sees the program's registers (the
    /// trampoline uses a stack and a register of its own). Whether it reached its point on
    /// the way (a visit that matched).
    fn leave_trampoline(&mut self, tid: Tid) -> Result<bool> {
        const MAX_STEPS: usize = 1000;
        // Stepping the trampoline's `pushfq` pushes the trap flag, which its `popfq` would
        // leave set in the program's flags: it gets the value it had.
        let trap_flag = self.tracee(tid)?.regs()?.eflags & TRAP_FLAG;
        for _ in 0..MAX_STEPS {
            let t = &tasks::task(&mut self.tasks, tid)?.tracee;
            let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
                return Ok(false);
            };
            let mut r = t.regs()?;
            if !w.in_trampoline(r.rip) {
                if r.eflags & TRAP_FLAG != trap_flag {
                    r.eflags = (r.eflags & !TRAP_FLAG) | trap_flag;
                    t.set_regs(&r)?;
                }
                return Ok(false);
            }
            t.step(0)?;
            let stop = self.wait_task(tid)?;
            let t = &tasks::task(&mut self.tasks, tid)?.tracee;
            let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
                return Ok(false);
            };
            match stop {
                Stop::Signal(libc::SIGTRAP) => {
                    let verdict = match w.built() {
                        Some(locator) => locator.on_stop(t, stop),
                        None => return Ok(false),
                    };
                    match verdict {
                        Ok(Verdict::Reached) => {
                            let mut r = t.regs()?;
                            if r.eflags & TRAP_FLAG != trap_flag {
                                r.eflags = (r.eflags & !TRAP_FLAG) | trap_flag;
                                t.set_regs(&r)?;
                            }
                            return Ok(true);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(
                                self.lost_point(tid, format!("no moment matching it ({e:#})"))
                            )
                        }
                    }
                }
                // Dropped by the next step, as the debugger's halt makes it moot.
                Stop::Signal(sig) => {
                    tracing::debug!(tid, sig, "dropping a signal in the trampoline")
                }
                other => return Err(self.missed_point(tid, other)),
            }
        }
        bail!("task {tid} did not leave the point locator's trampoline in {MAX_STEPS} steps")
    }

    /// What to do with `stop` of task `tid`, which runs toward a point: `None` if it reached
    /// the point (it is parked there), else as [`Self::classify`] says (parking it anywhere
    /// else is a divergence, which the caller reports).
    fn toward_stop(&mut self, tid: Tid, stop: Stop) -> Result<Option<Next>> {
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
            bail!("task {tid} runs toward no point");
        };
        let armed = std::mem::take(&mut w.armed);
        let stepped = std::mem::take(&mut w.stepped);
        let delivering = std::mem::take(&mut w.delivering);
        if armed && !stop.is_end() {
            if let Some(locator) = w.built() {
                locator.disarm(t)?;
            }
        }
        let timed_out = stop == Stop::Signal(libc::SIGSTOP)
            && std::mem::take(&mut w.timeout_sent)
            && !self
                .debug
                .as_ref()
                .is_some_and(|d| d.interrupt_sent == Some(tid));
        let lost_in_time = "the task still running without having reached it";
        if armed {
            // (Also when it is lost: the locator counts the visits at each stop.)
            let verdict = match w.built() {
                Some(locator) => locator.on_stop(t, stop),
                None => bail!("task {tid} ran toward its point without a locator"),
            };
            if timed_out {
                return Err(self.lost_point(tid, lost_in_time.into()));
            }
            return match verdict {
                Ok(Verdict::Reached) => {
                    self.reached(tid)?;
                    Ok(None)
                }
                Ok(Verdict::Continue) => {
                    w.passes += 1;
                    Ok(Some(Next::Again))
                }
                Ok(Verdict::Other(stop)) => {
                    // The locator moved a stop in its copy of the program's instructions to
                    // their own addresses: still in the trampoline is in its filter.
                    let in_filter = w.in_trampoline(t.regs()?.rip);
                    let next = self.classify(tid, stop)?;
                    if in_filter
                        && matches!(next, Next::Halt(Halt::Watch { kind, .. }) if kind != WatchKind::Write)
                    {
                        // The filter reading a watched word, not the program.
                        return Ok(Some(Next::Again));
                    }
                    self.halt_outside_trampoline(tid, next)
                }
                Err(e) => Err(self.lost_point(tid, format!("no moment matching it ({e:#})"))),
            };
        }
        if timed_out {
            return Err(self.lost_point(tid, lost_in_time.into()));
        }
        if !stepped {
            let next = self.classify(tid, stop)?;
            return self.halt_outside_trampoline(tid, next);
        }
        // A single step: the locator was not armed, so check the state the step led to.
        let debugger_step = self
            .debug
            .as_ref()
            .and_then(|d| d.step)
            .is_some_and(|s| s.tid == tid && s.launched);
        let next = if delivering && stop == Stop::Signal(libc::SIGTRAP) && !debugger_step {
            Next::Again
        } else {
            self.classify(tid, stop)?
        };
        if matches!(next, Next::Park(_)) || stop != Stop::Signal(libc::SIGTRAP) {
            return Ok(Some(next));
        }
        if !self.check_at_point(tid)? {
            return Ok(Some(next));
        }
        self.reached(tid)?;
        if let Next::Halt(why) = next {
            self.halt(why);
        }
        Ok(None)
    }

    /// `next` for task `tid`, which runs toward its point; a halt happens outside the
    /// locator's trampoline (`None` if the task reached its point on the way out, and halted
    /// there).
    fn halt_outside_trampoline(&mut self, tid: Tid, next: Next) -> Result<Option<Next>> {
        let Next::Halt(why) = next else {
            return Ok(Some(next));
        };
        if !self.leave_trampoline(tid)? {
            return Ok(Some(next));
        }
        self.reached(tid)?;
        self.halt(why);
        Ok(None)
    }

    /// Whether task `tid`, stopped in its user code, is exactly at its point.
    fn check_at_point(&mut self, tid: Tid) -> Result<bool> {
        let room = self.room(tid);
        let t = &tasks::task(&mut self.tasks, tid)?.tracee;
        let Some(w) = self.toward.as_mut().filter(|w| w.tid == tid) else {
            return Ok(false);
        };
        w.locator(t, room)?
            .at_point(t)
            .with_context(|| format!("comparing task {tid} with its recorded point"))
    }

    /// Task `tid` is at its point: the locator goes, the task waits there for the event.
    fn reached(&mut self, tid: Tid) -> Result<()> {
        self.drain_signals(tid)?;
        let t = tasks::task(&mut self.tasks, tid)?;
        if let Some(mut w) = self.toward.take() {
            w.finish(&t.tracee)?;
            tracing::debug!(
                tid,
                rip = w.rip(),
                passes = w.passes,
                ran = ?w.ran,
                "reached the point"
            );
        }
        t.state = RState::AtPoint;
        self.running = None;
        Ok(())
    }

    /// The divergence of a task that stopped at `stop` before its point.
    fn missed_point(&mut self, tid: Tid, stop: Stop) -> anyhow::Error {
        let found = self.describe_stop(tid, stop);
        let found = match stop {
            Stop::Exited(_) | Stop::Killed(_) => found,
            _ => format!("{found} first"),
        };
        self.lost_point(tid, found)
    }

    /// The divergence of task `tid`, which did not reach its point: `found` happened instead.
    /// The event is the point's (the next one), and the report says how far the search went.
    fn lost_point(&mut self, tid: Tid, found: String) -> anyhow::Error {
        let Some(mut w) = self.toward.take() else {
            return anyhow::anyhow!("task {tid} runs toward no point");
        };
        let details = w.details(&found);
        if let Some(t) = self.tasks.by_tid(tid) {
            if let Err(e) = w.finish(&t.tracee) {
                tracing::debug!("after the divergence: {e:#}");
            }
        }
        self.running = None;
        Divergence {
            event: self.index + 1,
            task: tid,
            expected: w.expected(),
            found,
            details,
        }
        .into()
    }

    /// Checks that `tid` waits at `point`, where its event happened (`expected` says which),
    /// with the recorded registers and FP state (the memory was compared when the point was
    /// found).
    fn expect_at_point(&mut self, tid: Tid, expected: String, point: &Point) -> Result<()> {
        let found = match self.task(tid)?.state {
            RState::AtPoint => {
                let t = self.tracee(tid)?;
                let differences = point::registers_differ(t, point)
                    .with_context(|| format!("comparing task {tid} with its recorded point"))?;
                if differences.is_empty() {
                    return Ok(());
                }
                return Err(self.diverged_with(
                    tid,
                    expected,
                    "the task at the point's rip in another state".into(),
                    vec![format!("differences: {}", differences.join(", "))],
                ));
            }
            RState::Parked(stop) => self.describe_stop(tid, stop),
            RState::Dead(status) => format!("the task ended ({status})"),
            other => format!("the task elsewhere ({other:?})"),
        };
        Err(self.diverged(tid, expected, found))
    }

    /// The recorder took the CPU from the task at its point: it waits there until its
    /// `Resume`.
    fn preempt(&mut self, e: &PreemptEvent) -> Result<()> {
        let rip = point::rip(&e.point);
        let expected = format!("the preemption point at rip {rip:#x}");
        self.expect_at_point(e.tid, expected.clone(), &e.point)?;
        // The recorder settled the task's last trap at the point (which later signal frames
        // copy); the replay's last trap was the locator's.
        self.settle_trap(e.tid, &expected)
    }

    /// A preempted task runs on from its point.
    fn resume_preempted(&mut self, tid: Tid) -> Result<()> {
        if self.task(tid)?.state != RState::AtPoint {
            let found = match self.task(tid)?.state {
                RState::Parked(stop) => self.describe_stop(tid, stop),
                RState::Dead(status) => format!("the task ended ({status})"),
                other => format!("the task elsewhere ({other:?})"),
            };
            return Err(self.diverged(tid, "the preempted task to run on".into(), found));
        }
        self.resume(tid, 0)
    }

    /// An asynchronous signal the recording delivered at a point in the task's user code: the
    /// task waits there; the signal is delivered with the recorded `siginfo` before the task
    /// executes anything more, right after a debug exception as in the recording (see
    /// `tracee::state::settle_trap`).
    fn signal_at_point(&mut self, e: &SignalEvent) -> Result<()> {
        let tid = e.tid;
        let expected = format!("signal {} delivered mid-code at rip {:#x}", e.signo, e.rip);
        let Some(point) = &e.point else {
            bail!("the signal of event {} has no point", self.index);
        };
        self.expect_at_point(tid, expected.clone(), point)?;
        if e.delivered && signal_blocked(self.tracee(tid)?, e.signo)? {
            return Err(self.diverged(
                tid,
                expected,
                format!("signal {} blocked in the replay", e.signo),
            ));
        }
        self.settle_trap(tid, &expected)?;
        let t = self.tracee(tid)?;
        let rip = t.regs()?.rip;
        if rip != e.rip {
            return Err(self.diverged(tid, expected, format!("the task at rip {rip:#x}")));
        }
        t.set_siginfo(&e.siginfo)?;
        self.task(tid)?.state = RState::Parked(Stop::Signal(e.signo));
        self.resume(tid, if e.delivered { e.signo } else { 0 })
    }

    /// Makes a debug exception the last trap of task `tid`, stopped at a point, without it
    /// executing anything (`tracee::state::settle_trap`): it is then in that trap's `SIGTRAP`
    /// stop, from which a signal is delivered as the recorder delivered it. Signals pending
    /// meanwhile are not the recording's: dropped (the debugger's interrupt is sent again).
    fn settle_trap(&mut self, tid: Tid, expected: &str) -> Result<()> {
        let mut interrupt = false;
        let mut strays = 0;
        loop {
            let stop = tracee::state::settle_trap(self.tracee(tid)?)
                .with_context(|| format!("preparing task {tid} for its signal"))?;
            match stop {
                None => break,
                Some(Stop::Signal(sig)) if strays < MAX_STRAY_SIGNALS => {
                    tracing::debug!(tid, sig, "dropping a signal the recording did not have");
                    interrupt |= sig == libc::SIGSTOP
                        && self
                            .debug
                            .as_ref()
                            .is_some_and(|d| d.interrupt_sent == Some(tid));
                    strays += 1;
                }
                Some(stop) => {
                    let found = self.describe_stop(tid, stop);
                    return Err(self.diverged(tid, expected.to_string(), found));
                }
            }
        }
        let t = self.task(tid)?;
        t.last_trap = LastTrap::Debug;
        t.debugger_trapped = false;
        if interrupt {
            t.tracee.tgkill(t.pid, libc::SIGSTOP)?;
        }
        Ok(())
    }

    /// Task `tid` is stopped to be delivered an asynchronous signal after the debugger's traps
    /// took the place of its last trap in the recording (breakpoints, single steps): it takes
    /// that trap again (without executing anything), so that the signal's frame is the
    /// recorded one. A syscall restart pending at the signal stays pending. Returns with the
    /// task in that trap's stop, from which the signal is delivered as from its own.
    fn restore_last_trap(&mut self, tid: Tid, temporary_mask: bool, expected: &str) -> Result<()> {
        let t = self.task(tid)?;
        let kind = t.last_trap;
        if kind == LastTrap::Fault || temporary_mask {
            // A fault cannot be taken again here; nor can the task be resumed while the
            // temporary mask of its syscall is in force (the kernel would restore the old mask
            // on the way back to user code).
            tracing::warn!(
                tid,
                "the debugger's traps show in the frame of the signal delivered now (the \
                 recording's last trap cannot be taken again here)"
            );
            return Ok(());
        }
        let saved = t.tracee.regs()?;
        let mut r = saved;
        // Not "in a syscall" while the trap is taken, so no restart happens on the way.
        r.orig_rax = u64::MAX;
        t.tracee.set_regs(&r)?;
        match kind {
            LastTrap::Debug => self.settle_trap(tid, expected)?,
            _ => self.tsc_trap(tid, expected)?,
        }
        let t = self.task(tid)?;
        t.tracee.set_regs(&saved)?;
        t.last_trap = kind;
        t.debugger_trapped = false;
        Ok(())
    }

    /// Makes task `tid` take a general-protection fault with error code 0, as a trapped
    /// `rdtsc` does, without executing anything: an `rdtsc` written at its `rip` for the time of
    /// the fault. Signals pending meanwhile are not the recording's: dropped.
    fn tsc_trap(&mut self, tid: Tid, expected: &str) -> Result<()> {
        const RDTSC: [u8; 2] = [0x0f, 0x31];
        let rip = self.tracee(tid)?.regs()?.rip;
        let mut original = [0u8; 2];
        self.tracee(tid)?
            .read_mem(rip, &mut original)
            .context("reading the code where a trap is to be taken")?;
        for _ in 0..MAX_STRAY_SIGNALS {
            let t = self.tracee(tid)?;
            t.write_mem(rip, &RDTSC)?;
            let resumed = t.cont(0);
            let stop = resumed.and_then(|()| self.wait_task(tid));
            if let Some(t) = self.tasks.by_tid(tid).map(|t| &t.tracee) {
                if t.regs().is_ok() {
                    t.write_mem(rip, &original)
                        .context("restoring the code where a trap was taken")?;
                }
            }
            match stop? {
                Stop::Signal(libc::SIGSEGV) if self.tracee(tid)?.regs()?.rip == rip => {
                    return Ok(())
                }
                Stop::Signal(sig) => {
                    tracing::debug!(tid, sig, "dropping a signal the recording did not have")
                }
                stop => {
                    let found = self.describe_stop(tid, stop);
                    return Err(self.diverged(tid, expected.to_string(), found));
                }
            }
        }
        bail!("signals keep stopping task {tid} before it can take a trap")
    }
}

/// Whether thread `t` blocks signal `signo` (its `SigBlk` in `/proc`).
fn signal_blocked(t: &Tracee, signo: i32) -> Result<bool> {
    let path = format!("/proc/{}/status", t.pid());
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .with_context(|| format!("no signal mask in {path}"))?;
    Ok((1..=64).contains(&signo) && mask & (1 << (signo - 1)) != 0)
}

fn errno_text(v: i64) -> String {
    if syscalls::is_error(v) {
        std::io::Error::from_raw_os_error(-v as i32).to_string()
    } else {
        "success".into()
    }
}
