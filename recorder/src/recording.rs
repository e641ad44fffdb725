//! The recording loop over a tree of tasks, with the recorder as the scheduler: at most one
//! task runs user code at a time, and the order in which tasks get the CPU is the order of the
//! events in the trace (see the crate README).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use syscalls::{Call, Replay};
use trace_format::{
    CloneEvent, Echoed, Event, ExitEvent, ExitStatus, MemWrite, Point, PreemptEvent, RdtscEvent,
    ResumeEvent, SignalEvent, SignalOrigin, StartEvent, SyscallEvent, TraceWriter,
};
use tracee::forced_segv::{SegvActions, KERNEL_SIGACTION};
use tracee::insn::Trapped;
use tracee::segv_mask::SegvBlocked;
use tracee::tracee::{signo_code, SIGINFO_SIZE};
use tracee::{regs, Regs, Stop, Tracee};

use crate::echo::{self, EchoFds};
use crate::emulated;
use crate::exec;
use crate::file_effects::FileEffects;
use crate::ioctls::ioctl_warning;
use crate::mapped_files::MappedFiles;
use crate::memory::TraceeMemory;
use crate::own_filters;
use crate::points;
use crate::remote_memory;
use crate::session::{set_ticks_blocked, TICK};
use crate::signals::{is_fault, is_ours, restart_pending, still_at};
use crate::task::{Entry, HeldSignal, State, Task};
use crate::tsc_mode::TscModes;

mod ending;
mod fatal_call;
mod group_stop;
mod ptrace;
mod restart;
mod thread_exec;
mod vanish;

/// How long a task may hold the CPU in user code without an event while another task waits
/// for it: then the recorder preempts it.
const TIME_SLICE: Duration = Duration::from_millis(20);

/// How often buffered events are written out while the tracee blocks or computes.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Most instructions single-stepped past a stop to learn which memory the task writes near a
/// point (one iteration of a loop, see `tracee::state::step_for_watch`).
const WATCH_STEPS: usize = 512;

/// Most instructions stepped further to leave a point the replay could not patch.
const PATCHABLE_STEPS: usize = 16;

/// Most instructions of one pass of [`WATCH_STEPS`] (one loop iteration).
const PASS_STEPS: usize = 64;

/// Index of `rip` in a point's register words (`user_regs_struct` order).
pub(crate) const RIP: usize = 16;

/// Most watched words a point records.
const WATCH_WORDS: usize = 32;

/// Set (to anything) in the environment of the recorder, makes it send its preemption
/// `SIGSTOP` to a task at the entry of every syscall that lets others run: the signal then
/// interrupts the syscall, as it rarely does when it races with one (for tests).
pub const STOP_AT_SYSCALLS_ENV: &str = "DEJA_TEST_STOP_AT_SYSCALLS";

/// A recording in progress.
pub struct Session {
    writer: TraceWriter,
    files: MappedFiles,
    /// Files the program maps, and the effects of syscalls on them.
    effects: FileEffects,
    /// Descriptors aliasing stdout/stderr, per process.
    echo: HashMap<i32, EchoFds>,
    /// The `PR_SET_TSC` setting each task chose.
    tsc: TscModes,
    /// Syscalls already warned about.
    warned: HashSet<u64>,
    tasks: HashMap<i32, Task>,
    /// Tasks stopped and waiting for the CPU, in the order they became ready.
    ready: VecDeque<i32>,
    /// The task holding the CPU: running user code, or in a syscall no other task may overlap.
    current: Option<i32>,
    /// Stops of tasks reported before their parent's clone event made them known.
    early: HashMap<i32, Stop>,
    /// Ends of tasks, written at the next point where no task holds the CPU (so a task's
    /// events are never interleaved with others' while it runs).
    exits: Vec<ExitEvent>,
    /// The initial process.
    root: i32,
    root_status: Option<ExitStatus>,
    cpu: u32,
    /// The task holding the CPU and the event count at the last tick, and for how many ticks
    /// neither changed (the time slice of the task holding the CPU).
    stall: (Option<i32>, u64, u32),
    /// Timer ticks so far (buffered events are written out every [`FLUSH_EVERY`]).
    ticks: u32,
    /// The recorder's process id: the sender of its preemption `SIGSTOP`s.
    me: i32,
    /// [`STOP_AT_SYSCALLS_ENV`] is set.
    stop_at_syscalls: bool,
    /// Emulated ptrace relations between recorded tasks.
    ptrace: crate::ptrace_emu::Relations,
    /// Record until every task has ended, not only the initial process (see `ending`).
    wait_all: bool,
    /// Processes continued by a `SIGCONT` since the last stop signal delivered to them (see
    /// `group_stop`).
    continued: HashSet<i32>,
    /// Each process's `SIGSEGV` action, put back where a trapped `rdtsc` made the kernel reset
    /// it (see `tracee::forced_segv`).
    segv: SegvActions,
    /// Which tasks block `SIGSEGV`, for the same trap (see `tracee::segv_mask`).
    segv_blocked: SegvBlocked,
}

impl Session {
    /// A recording of `root`, stopped before its initial `execve`; with `wait_all`, it lasts
    /// until every task has ended, else until the initial process has (see `ending`).
    pub fn new(root: Tracee, writer: TraceWriter, cpu: u32, wait_all: bool) -> Session {
        let tid = root.pid().as_raw();
        let mut tasks = HashMap::new();
        tasks.insert(tid, Task::new(root, tid, State::Running));
        Session {
            writer,
            files: MappedFiles::default(),
            effects: FileEffects::default(),
            echo: HashMap::from([(tid, EchoFds::default())]),
            tsc: TscModes::default(),
            warned: HashSet::new(),
            tasks,
            ready: VecDeque::new(),
            current: Some(tid),
            early: HashMap::new(),
            exits: Vec::new(),
            root: tid,
            root_status: None,
            cpu,
            stall: (None, 0, 0),
            ticks: 0,
            me: std::process::id() as i32,
            stop_at_syscalls: std::env::var_os(STOP_AT_SYSCALLS_ENV).is_some(),
            ptrace: Default::default(),
            wait_all,
            continued: HashSet::new(),
            segv: SegvActions::default(),
            segv_blocked: SegvBlocked::default(),
        }
    }

    /// The trace being written.
    pub fn writer(&mut self) -> &mut TraceWriter {
        &mut self.writer
    }

    /// Ends the trace with the initial process's status.
    pub fn finish(self, status: ExitStatus) -> Result<()> {
        self.writer.finish(status)?;
        Ok(())
    }

    /// Kills every task still alive (after an error).
    pub fn kill_all(&mut self) {
        Tracee::kill_and_reap_all(self.tasks.values().map(|t| &t.tracee));
        self.tasks.clear();
    }

    fn task(&mut self, tid: i32) -> Result<&mut Task> {
        self.tasks
            .get_mut(&tid)
            .with_context(|| format!("task {tid} is not traced"))
    }

    /// Records until every task has ended; returns how the initial process ended.
    pub fn run(&mut self) -> Result<ExitStatus> {
        self.first_exec()?;
        loop {
            if self.current.is_none() {
                for e in std::mem::take(&mut self.exits) {
                    self.writer.push(&Event::Exit(e))?;
                }
                if self.tasks.is_empty() {
                    break;
                }
                let scheduled = self.schedule_next();
                if self.unless_vanished(scheduled)? {
                    // The next ready task, if any, gets the CPU instead.
                    continue;
                }
                let gave_up = std::mem::take(&mut self.ptrace.gave_up_cpu);
                if gave_up && self.current.is_none() && self.others_wait() {
                    // The task given the CPU gave it up at once for emulated ptrace: the next
                    // one gets it.
                    continue;
                }
            }
            if let Some((pid, stop)) = self.wait_any()? {
                let handled = self.dispatch(pid.as_raw(), stop);
                self.unless_vanished(handled)?;
            }
            if self.any_group_stopped() {
                self.continue_group_stops();
            }
        }
        self.root_status
            .context("the initial process ended without a reported status")
    }

    /// Waits for any task; at each timer tick while it waits, writes out buffered events now
    /// and then, and preempts the task holding the CPU once its time slice is over while
    /// another task waits for the CPU. `None` when a tick found a group-stopped task whose
    /// process got a `SIGCONT` (see `group_stop`).
    fn wait_any(&mut self) -> Result<Option<(Pid, Stop)>> {
        let Session {
            writer,
            tasks,
            current,
            ready,
            stall,
            ticks,
            ..
        } = self;
        set_ticks_blocked(false);
        let stop = tracee::stop::wait_any(&mut || {
            set_ticks_blocked(true);
            *ticks = ticks.wrapping_add(1);
            let flushed = if *ticks % ticks_in(FLUSH_EVERY) == 0 {
                writer.flush().map_err(anyhow::Error::from)
            } else {
                Ok(())
            };
            // No clock is read on the recorder's hot path (the tracer thread traps `rdtsc`, so
            // a clock read costs a signal): a time slice is counted in timer ticks instead.
            let now = (*current, writer.event_count());
            if (stall.0, stall.1) == now {
                stall.2 += 1;
            } else {
                *stall = (now.0, now.1, 0);
            }
            if stall.2 >= ticks_in(TIME_SLICE) {
                preempt_if_others_wait(tasks, ready, *current);
            }
            set_ticks_blocked(false);
            flushed?;
            group_stop::continued_while_waiting(tasks)
        });
        set_ticks_blocked(true);
        match stop {
            Ok(stop) => Ok(Some(stop)),
            Err(e) if group_stop::is_continued(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs the initial `execve` and records the new program image.
    fn first_exec(&mut self) -> Result<()> {
        let root = self.root;
        let t = &self.task(root)?.tracee;
        t.cont_syscall(0)?;
        match t.wait()? {
            Stop::Exec => {}
            Stop::SyscallStop => {
                let err = -(t.regs()?.rax as i64);
                bail!(
                    "cannot execute the program: {}",
                    std::io::Error::from_raw_os_error(err as i32)
                );
            }
            other => bail!("the program did not start: {other:?}"),
        }
        self.record_exec(root, root)?;
        let t = self.task(root)?;
        t.tracee.cont_syscall(0)?;
        match t.tracee.wait()? {
            Stop::SyscallStop => {}
            other => bail!("unexpected stop after exec: {other:?}"),
        }
        let r = t.tracee.regs()?;
        self.resume(root, r)
    }

    /// At an exec stop of `tid`: records the new program image, as an exec of task `named`
    /// (the thread that called `execve`, which may have had another id before, see
    /// `thread_exec`).
    fn record_exec(&mut self, tid: i32, named: i32) -> Result<()> {
        let Session {
            tasks,
            writer,
            files,
            ..
        } = self;
        let t = tasks.get_mut(&tid).context("exec of an unknown task")?;
        t.tracee.reopen_mem()?;
        // A vfork child leaves its parent's address space for a new one; no id is cleared at
        // the new program's exit until it asks.
        t.mm = t.pid;
        t.clear_tid_at = None;
        let mut ev = exec::capture(&t.tracee, writer, files)?;
        ev.tid = named;
        writer.push(&Event::Exec(Box::new(ev)))?;
        if let Some(rel) = self.ptrace.get_mut(tid) {
            rel.exec_pending = true;
        }
        self.segv.exec(t.pid);
        self.segv_blocked.after_call(tid, &t.tracee, None)?;
        Ok(())
    }

    /// Gives the CPU to the next ready task, writing the event it was waiting for.
    fn schedule_next(&mut self) -> Result<()> {
        while let Some(tid) = self.ready.pop_front() {
            let Some(t) = self.tasks.get_mut(&tid) else {
                continue;
            };
            match std::mem::replace(&mut t.state, State::Running) {
                State::ReadyToStart => return self.start(tid),
                State::ReadyAfter(entry) => return self.finish_syscall(tid, *entry),
                State::ReadyToContinue(restarting) => {
                    return self.continue_stopped(tid, restarting)
                }
                State::Preempted => {
                    let r = t.tracee.regs()?;
                    self.writer.push(&Event::Resume(ResumeEvent { tid }))?;
                    return self.resume(tid, r);
                }
                State::Ptraced(held) if held.resume.is_some() => {
                    return self.ptrace_resume(tid, held)
                }
                State::AtEntry => {
                    self.ptrace.gave_up_cpu = true;
                    self.current = Some(tid);
                    return self.on_syscall_entry(tid);
                }
                other => t.state = other,
            }
        }
        Ok(())
    }

    /// A new task runs for the first time.
    fn start(&mut self, tid: i32) -> Result<()> {
        let Session { tasks, writer, .. } = self;
        let t = tasks.get_mut(&tid).context("starting an unknown task")?;
        let writes = match t.child_tid_at {
            Some(at) => capture(writer, &t.tracee, at, 4)?.into_iter().collect(),
            None => Vec::new(),
        };
        let r = t.tracee.regs()?;
        writer.push(&Event::Start(StartEvent { tid, writes }))?;
        self.resume(tid, r)
    }

    /// Resumes `tid` in user code right after an event, with the CPU (`regs`: its registers
    /// now). A task stopped for a signal it held handles that stop now, right after the event.
    fn resume(&mut self, tid: i32, regs: Regs) -> Result<()> {
        if self.ptrace_stops_after_event(tid)? {
            return Ok(());
        }
        self.run_on(tid, regs, false)
    }

    /// The body of [`Session::resume`]: continues `tid` (or single-steps it, for an emulated
    /// `PTRACE_SINGLESTEP`) with the CPU.
    fn run_on(&mut self, tid: i32, regs: Regs, step: bool) -> Result<()> {
        self.current = Some(tid);
        let t = self.task(tid)?;
        t.boundary = Some(regs);
        t.state = State::Running;
        if let Some(sig) = t.held_signal.take() {
            return self.on_signal(tid, sig);
        }
        if step {
            t.tracee.step(0)
        } else {
            t.tracee.cont(0)
        }
    }

    fn dispatch(&mut self, tid: i32, stop: Stop) -> Result<()> {
        match stop {
            Stop::Exited(c) => return self.on_death(tid, ExitStatus::Exited(c), stop),
            Stop::Killed(s) => return self.on_death(tid, ExitStatus::Signaled(s), stop),
            _ => {}
        }
        if stop == Stop::Exec {
            if let Some(former) = self.exec_by_other_thread(tid)? {
                return self.on_thread_exec(tid, former);
            }
        }
        let Some(t) = self.tasks.get_mut(&tid) else {
            // A new task's first stop can come before its parent's clone event.
            self.early.insert(tid, stop);
            return Ok(());
        };
        match &t.state {
            State::Unborn => {
                t.state = State::ReadyToStart;
                self.ready.push_back(tid);
                Ok(())
            }
            State::Running => match stop {
                Stop::SeccompEntry => self.on_syscall_entry(tid),
                Stop::Signal(sig) => self.on_signal(tid, sig),
                Stop::Event(_) => t.tracee.cont(0),
                Stop::Exec => bail!(THREAD_EXEC),
                other => bail!("unexpected stop of task {tid} in user code: {other:?}"),
            },
            State::InSyscall(_) => self.on_syscall_stop(tid, stop),
            State::Restarting(_) => self.on_restart_stop(tid, stop),
            // Nothing but its end is expected from an exiting task: let it go on.
            State::Exiting => t.tracee.cont(0),
            State::Ptraced(_) | State::AtEntry | State::WaitsForTracee => {
                bail!("task {tid} reported {stop:?} while held stopped")
            }
            State::ReadyToStart
            | State::ReadyAfter(_)
            | State::Preempted
            | State::GroupStopped(_)
            | State::ReadyToContinue(_) => {
                if stop == Stop::Exec {
                    bail!(THREAD_EXEC);
                }
                bail!("task {tid} reported {stop:?} while it was stopped")
            }
        }
    }

    fn on_death(&mut self, tid: i32, status: ExitStatus, stop: Stop) -> Result<()> {
        if tid == self.root {
            self.root_status = Some(status);
        }
        let Some(t) = self.tasks.remove(&tid) else {
            self.early.insert(tid, stop);
            return Ok(());
        };
        self.record_fatal_call(&t, status)?;
        if self.current == Some(tid) {
            self.current = None;
        }
        self.segv_blocked.forget(tid);
        if t.is_leader() {
            self.echo.remove(&t.pid);
            self.segv.exit(t.pid);
        }
        self.tsc.forget(tid);
        self.exits.push(ExitEvent { tid, status });
        if tid == self.root {
            self.initial_process_ended();
        }
        self.ptrace_on_death(tid, t.pid, status)
    }

    fn warn_once(&mut self, key: u64, msg: impl FnOnce() -> String) {
        if self.warned.insert(key) {
            eprintln!("deja: warning: {}", msg());
        }
    }

    /// The entry of a syscall by the running task `tid`.
    fn on_syscall_entry(&mut self, tid: i32) -> Result<()> {
        let t = self.task(tid)?;
        let (entry, pid) = (t.tracee.regs()?, t.pid);
        if self.ptrace_entry(tid, &entry)? {
            return Ok(());
        }
        let (nr, args) = (entry.orig_rax, regs::syscall_args(&entry));
        if let Some(refusal) = remote_memory::refusal(pid, nr, &args) {
            bail!("{refusal}");
        }
        let name = syscalls::name(nr);
        let def = syscalls::lookup(nr);
        let mut replay = match def {
            Some(def) => def.replay,
            None => {
                self.warn_once(nr, || {
                    format!("{name} is not modelled; the program gets ENOSYS for it")
                });
                Replay::Deny(libc::ENOSYS)
            }
        };
        if nr == libc::SYS_ioctl as u64 {
            if let Some((refused, warning)) = ioctl_warning(args[1]) {
                // Keyed apart from syscall numbers (which are below 1024).
                self.warn_once((1 << 32) | (args[1] & 0xffff_ffff), || warning);
                if refused {
                    replay = Replay::Deny(libc::ENOTTY);
                }
            }
        }
        let mut ev = SyscallEvent {
            tid,
            nr,
            args,
            rip: entry.rip,
            regs_digest: regs::digest(&entry),
            result: 0,
            writes: Vec::new(),
            mapped_file: None,
            file_effect: None,
            echo: None,
        };
        if let Some(why) = own_filters::unsupported(nr, &args) {
            bail!("{why}");
        }
        if syscalls::writes_to_fd(nr) {
            let pid = self.task(tid)?.pid;
            ev.echo = echo::stream_of(tid, args[0], self.echo.get(&pid)).map(|stream| Echoed {
                stream,
                bytes: Vec::new(),
            });
        }
        if (nr == libc::SYS_prctl as u64 && syscalls::EMULATED_PRCTL.contains(&args[0]))
            || emulated::is_vsyscall(entry.rip)
        {
            return self.emulate_in_recorder(tid, entry, ev);
        }
        match replay {
            Replay::Unsupported(_) => {
                bail!(
                    "{}",
                    def.and_then(|d| d.unsupported_message())
                        .unwrap_or_default()
                )
            }
            Replay::Deny(errno) => {
                // rseq is refused for every glibc program, which copes silently: no warning;
                // a refused ioctl was warned about by its request.
                if def.is_some() && nr != libc::SYS_rseq as u64 && nr != libc::SYS_ioctl as u64 {
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
                self.task(tid)?.tracee.set_regs(&r)?;
                ev.result = -(errno as i64);
                self.writer.push(&Event::Syscall(ev))?;
                self.resume(tid, r)
            }
            Replay::Exit => {
                self.writer.push(&Event::Syscall(ev))?;
                let thread_exit = nr == libc::SYS_exit as u64;
                let t = self.task(tid)?;
                let pid = t.pid;
                t.boundary = None;
                t.state = State::Exiting;
                t.tracee.cont(0)?;
                // The task keeps the CPU until its death is reported, so that everything its
                // exit does (clearing its tid, waking joiners) happens before another task
                // runs. A leader's death is reported only once its threads are gone, so a
                // leader leaving its threads behind gives the CPU up at once.
                let others = self.tasks.values().any(|o| o.pid == pid && o.tid() != tid);
                if thread_exit && pid == tid && others {
                    self.current = None;
                }
                Ok(())
            }
            Replay::Emulate
            | Replay::Execute
            | Replay::ExecuteRecordedResult
            | Replay::SetLimit
            | Replay::Mmap
            | Replay::Exec
            | Replay::Clone => {
                // Calls that change the address space, the signal state, the program or the
                // task tree, and calls that send signals, run while no other task runs; the
                // others (which may block) let other tasks run meanwhile, but for the few that
                // write memory other tasks read at once (`syscalls::runs_exclusively`). Writes
                // to the recording's stdout/stderr also run alone, so the order in which their
                // bytes reach the stream is the order of their events, which the replay echoes.
                let exclusive = replay != Replay::Emulate
                    || syscalls::runs_exclusively(nr, &args)
                    || ev.echo.is_some();
                let stop_now = !exclusive && self.stop_at_syscalls;
                let t = self.task(tid)?;
                let mut traced = entry;
                if regs::strip_clone_untraced(&mut traced) {
                    t.tracee.set_regs(&traced)?;
                }
                if stop_now && !t.stop_sent {
                    t.tracee.tgkill(Pid::from_raw(t.pid), libc::SIGSTOP)?;
                    t.stop_sent = true;
                }
                t.state = State::InSyscall(Box::new(Entry {
                    ev,
                    replay,
                    exclusive,
                    exec_done: false,
                }));
                t.tracee.cont_syscall(0)?;
                if !exclusive {
                    self.current = None;
                }
                Ok(())
            }
        }
    }

    /// `prctl(PR_GET_TSC | PR_SET_TSC | PR_GET_SECCOMP)` (answered from the program's own
    /// setting, see `tsc_mode.rs`) or a call through the vsyscall page, at its entry: the
    /// recorder answers it and the kernel skips it.
    fn emulate_in_recorder(&mut self, tid: i32, entry: Regs, ev: SyscallEvent) -> Result<()> {
        let Session {
            tasks, writer, tsc, ..
        } = self;
        let t = tasks
            .get_mut(&tid)
            .context("a syscall of an unknown task")?;
        let result = if emulated::is_vsyscall(entry.rip) {
            emulated::vsyscall(&t.tracee, ev.nr, &ev.args)?
        } else {
            tsc.prctl(tid, &t.tracee, ev.args[0], ev.args[1])?
        };
        let r = emulated::answer(&t.tracee, writer, ev, entry, result)?;
        self.resume(tid, r)
    }

    /// A stop of `tid` while it is inside a syscall.
    fn on_syscall_stop(&mut self, tid: i32, stop: Stop) -> Result<()> {
        let t = self.task(tid)?;
        let State::InSyscall(mut entry) = std::mem::replace(&mut t.state, State::Running) else {
            bail!("task {tid} is not in a syscall");
        };
        if stop == Stop::SyscallStop && !entry.exec_done {
            let Some(back) = self.unless_interrupted(tid, entry)? else {
                return Ok(());
            };
            entry = back;
        }
        let t = self.task(tid)?;
        match stop {
            Stop::SyscallStop if entry.exec_done => {
                let r = t.tracee.regs()?;
                self.resume(tid, r)
            }
            Stop::SyscallStop if entry.exclusive => self.finish_syscall(tid, *entry),
            Stop::SyscallStop => {
                t.state = State::ReadyAfter(entry);
                self.ready.push_back(tid);
                Ok(())
            }
            Stop::Exec if entry.replay == Replay::Exec => {
                entry.exec_done = true;
                t.state = State::InSyscall(entry);
                self.record_exec(tid, tid)?;
                self.task(tid)?.tracee.cont_syscall(0)
            }
            Stop::Event(e)
                if entry.replay == Replay::Clone
                    && matches!(
                        e,
                        libc::PTRACE_EVENT_CLONE
                            | libc::PTRACE_EVENT_FORK
                            | libc::PTRACE_EVENT_VFORK
                    ) =>
            {
                self.on_new_task(tid, entry)
            }
            Stop::Exec => bail!(THREAD_EXEC),
            other => {
                let name = syscalls::name(entry.ev.nr);
                bail!("unexpected stop of task {tid} inside {name}: {other:?}")
            }
        }
    }

    /// At the clone/fork/vfork event of `tid`: records the new task and lets the parent finish
    /// its syscall without holding the CPU (a `vfork` parent waits for its child).
    fn on_new_task(&mut self, tid: i32, mut entry: Box<Entry>) -> Result<()> {
        let Session { tasks, writer, .. } = self;
        let t = tasks.get_mut(&tid).context("a clone of an unknown task")?;
        let child = i32::try_from(t.tracee.event_msg()?).context("bad new task id")?;
        let args = syscalls::clone_args(entry.ev.nr, &entry.ev.args, &TraceeMemory(&t.tracee))
            .unwrap_or_default();
        let parent_pid = t.pid;
        let parent_mm = t.mm;
        let clear_tid_at = if args.flags & libc::CLONE_CHILD_CLEARTID as u64 == 0 {
            None
        } else if entry.ev.nr == libc::SYS_clone3 as u64 {
            // struct clone_args { flags, pidfd, child_tid, .. }
            syscalls::Memory::read_u64(&TraceeMemory(&t.tracee), entry.ev.args[0] + 16)
        } else {
            Some(entry.ev.args[3]) // clone(flags, stack, parent_tid, child_tid, tls)
        };
        let child_pid = if args.is_thread() { parent_pid } else { child };
        let mut writes = Vec::new();
        for (addr, len) in args.parent_regions() {
            writes.extend(capture(writer, &t.tracee, addr, len)?);
        }
        self.writer.push(&Event::Clone(CloneEvent {
            tid,
            nr: entry.ev.nr,
            child,
            child_pid,
            parent_pid,
            flags: args.flags,
            writes,
        }))?;
        self.tsc.inherit(tid, child);
        self.segv_blocked.clone_task(tid, child);
        if !args.is_thread() {
            let table = self.echo.get(&parent_pid).cloned().unwrap_or_default();
            self.echo.insert(child, table);
            self.segv.fork(parent_pid, child);
        }
        match self.early.remove(&child) {
            Some(Stop::Exited(c)) => self.exits.push(ExitEvent {
                tid: child,
                status: ExitStatus::Exited(c),
            }),
            Some(Stop::Killed(s)) => self.exits.push(ExitEvent {
                tid: child,
                status: ExitStatus::Signaled(s),
            }),
            early => {
                let tracee = Tracee::attach_traced(Pid::from_raw(child))?;
                let state = if early.is_some() {
                    self.ready.push_back(child);
                    State::ReadyToStart
                } else {
                    State::Unborn
                };
                let mut task = Task::new(tracee, child_pid, state);
                task.child_tid_at = args.child_tid;
                task.clear_tid_at = clear_tid_at.filter(|&a| a != 0);
                if args.flags & libc::CLONE_VM as u64 != 0 {
                    task.mm = parent_mm;
                }
                self.tasks.insert(child, task);
            }
        }
        entry.exclusive = false;
        self.current = None;
        let Some(entry) = self.ptrace_on_clone(tid, child, args.flags, entry)? else {
            // Held at its clone event for its emulated tracer.
            return Ok(());
        };
        let t = self.task(tid)?;
        t.state = State::InSyscall(entry);
        t.tracee.cont_syscall(0)?;
        Ok(())
    }

    /// At the exit stop of `tid`'s syscall, with the CPU: writes the syscall's event and
    /// resumes the task.
    fn finish_syscall(&mut self, tid: i32, entry: Entry) -> Result<()> {
        let Entry { mut ev, .. } = entry;
        let Session {
            tasks,
            writer,
            files,
            effects,
            echo,
            warned,
            segv,
            segv_blocked,
            ..
        } = self;
        let t = tasks
            .get_mut(&tid)
            .context("finishing a syscall of an unknown task")?;
        let mut exit = t.tracee.regs()?;
        own_filters::at_exit(&t.tracee, ev.nr, &ev.args, &mut exit)?;
        segv_blocked.after_call(tid, &t.tracee, Some(ev.nr))?;
        ev.result = exit.rax as i64;
        let (nr, args) = (ev.nr, ev.args);
        if nr == libc::SYS_set_tid_address as u64 {
            t.clear_tid_at = (args[0] != 0).then_some(args[0]);
        }
        if nr == libc::SYS_rt_sigaction as u64 && ev.result == 0 && args[0] == libc::SIGSEGV as u64
        {
            let mut act = [0u8; KERNEL_SIGACTION];
            let read = args[1] != 0 && t.tracee.read_mem(args[1], &mut act).is_ok();
            segv.note_sigaction(t.pid, read.then_some(act));
        }
        let call = Call {
            nr,
            args,
            result: ev.result,
        };
        for region in syscalls::out_regions(&call, &TraceeMemory(&t.tracee)) {
            ev.writes
                .extend(capture(writer, &t.tracee, region.addr, region.len)?);
        }
        if let Some(path) = effects.after_syscall(files, writer, &t.tracee, &call, &mut ev)? {
            if warned.insert(hash_path(&path)) {
                eprintln!(
                    "deja: warning: {path} is mapped shared: changes other processes outside the \
                     recording make to it are not recorded, so the replay may differ"
                );
            }
        }
        if let Some(echoed) = &mut ev.echo {
            match syscalls::written_bytes(&call, &TraceeMemory(&t.tracee)) {
                Some(bytes) if !bytes.is_empty() => echoed.bytes = bytes,
                _ => ev.echo = None,
            }
        }
        echo.entry(t.pid)
            .or_default()
            .after_syscall(nr, &args, ev.result);
        writer.push(&Event::Syscall(ev))?;
        self.resume(tid, exit)
    }

    /// A signal stop of the running task `tid`.
    fn on_signal(&mut self, tid: i32, sig: i32) -> Result<()> {
        let me = self.me;
        let t = self.task(tid)?;
        let mut info = match t.tracee.siginfo() {
            Ok(info) => info,
            Err(e) if tracee::gone::vanished_task(&e).is_some() => return Err(e),
            // A group-stop (no siginfo).
            Err(_) => return self.on_group_stop(tid, None),
        };
        let regs = t.tracee.regs()?;
        if sig == libc::SIGCHLD {
            if let Some(synthetic) = self.ptrace_sigchld_info(tid, &info)? {
                info = synthetic;
            }
        }
        let t = self.task(tid)?;
        if let Some(i) = t.resent.iter().position(|(s, _)| *s == sig) {
            // A signal the recorder sent again: it gets back the siginfo it first came with.
            let (_, original) = t.resent.remove(i);
            t.tracee.set_siginfo(&original)?;
            info = original;
            if sig == libc::SIGSTOP {
                // A preemption SIGSTOP sent meanwhile merged with it: none is pending now.
                t.stop_sent = false;
            }
        } else if is_ours(&info, me) {
            return self.on_preemption_stop(tid, regs);
        }
        let (signo, code) = signo_code(&info);
        if sig == libc::SIGSEGV && code == libc::SI_KERNEL && self.emulate_trapped(tid, regs)? {
            return Ok(());
        }
        let t = self.task(tid)?;
        // A stop between a syscall's restart code and the kernel's restart (a second signal
        // after one whose default action was to ignore it) is at the same boundary: no user
        // code ran since the event; so is one right after the kernel restarted the call
        // (`still_at`).
        let at_boundary =
            t.boundary.take().is_some_and(|b| still_at(&b, &regs)) || restart_pending(&regs);
        if self.ptrace.is_traced(tid) && sig != libc::SIGKILL {
            return self.ptrace_signal(tid, sig, info, &regs, at_boundary);
        }
        self.stop_signal_delivered(tid, sig);
        let origin = if is_fault(signo, code) {
            SignalOrigin::Fault
        } else if at_boundary {
            SignalOrigin::Async
        } else {
            return self.signal_mid_code(tid, sig, info);
        };
        // The kernel discards a signal sent to a pid namespace's init that has no handler for
        // it (`tracee::nsinit`): not delivered, and the replay's process, no namespace's init,
        // must not die of it.
        let delivered =
            origin == SignalOrigin::Fault || !self.task(tid)?.tracee.fault_ignored_as_ns_init(sig);
        self.writer.push(&Event::Signal(SignalEvent {
            tid,
            signo: sig,
            siginfo: info.to_vec(),
            origin,
            rip: regs.rip,
            delivered,
            point: None,
        }))?;
        let t = self.task(tid)?;
        if origin == SignalOrigin::Fault && t.tracee.fault_ignored_as_ns_init(sig) {
            // A traced pid namespace init would ignore its fatal fault forever: detached, it
            // faults again and dies of it (see `tracee::nsinit`), which is its end here.
            t.tracee.detach(sig)?;
            let status = ExitStatus::Signaled(sig);
            return self.on_death(tid, status, Stop::Killed(sig));
        }
        if origin == SignalOrigin::Async {
            // Still right after the event if the kernel discards this signal (ignored): a
            // signal stopping the task next, before it runs anything, is at the event too.
            t.boundary = Some(regs);
        }
        t.tracee.cont(if delivered { sig } else { 0 })
    }

    /// At the stop for the recorder's own preemption `SIGSTOP` of the running task `tid`
    /// (registers `regs`): takes the CPU from it if another task still waits for it.
    fn on_preemption_stop(&mut self, tid: i32, regs: Regs) -> Result<()> {
        let others_wait = self.others_wait();
        let t = self.task(tid)?;
        t.stop_sent = false;
        // Right after a syscall the kernel is about to restart, the task is not in its user
        // code yet (the restart rewinds it to the `syscall` instruction): no point there.
        if restart_pending(&regs) || !others_wait {
            // Suppressed, the SIGSTOP changes nothing in the task.
            return t.tracee.cont(0);
        }
        self.preempt(tid)
    }

    /// Takes the CPU from the running task `tid`, stopped in its user code: records the point
    /// it stops at (see [`Session::reach_point`]) and queues it for the CPU.
    fn preempt(&mut self, tid: i32) -> Result<()> {
        let mut aside = Vec::new();
        let Some(point) = self.reach_point(tid, &mut aside)? else {
            return Ok(());
        };
        self.writer.push(&Event::Preempt(PreemptEvent {
            tid,
            point: Box::new(point),
        }))?;
        let t = self.task(tid)?;
        t.state = State::Preempted;
        t.boundary = None;
        self.ready.push_back(tid);
        self.current = None;
        // Pending while it waits, they come as soon as it runs again.
        self.send_again(tid, aside)
    }

    /// An asynchronous signal `sig` (with `info`) that stopped the running task `tid` in the
    /// middle of its user code: recorded at an exact point (see [`Session::reach_point`]), and
    /// delivered there. The task keeps the CPU.
    fn signal_mid_code(&mut self, tid: i32, sig: i32, info: [u8; SIGINFO_SIZE]) -> Result<()> {
        let delivered = !self.task(tid)?.tracee.fault_ignored_as_ns_init(sig);
        let mut aside = Vec::new();
        // Stepping discards the signal; it is injected again at the point.
        let Some(point) = self.reach_point(tid, &mut aside)? else {
            // The task ended: the signal ends with it.
            return Ok(());
        };
        self.writer.push(&Event::Signal(SignalEvent {
            tid,
            signo: sig,
            siginfo: info.to_vec(),
            origin: SignalOrigin::Async,
            rip: point.regs[RIP],
            delivered,
            point: Some(Box::new(point)),
        }))?;
        let t = self.task(tid)?;
        t.tracee.set_siginfo(&info)?;
        t.tracee.cont(if delivered { sig } else { 0 })?;
        self.send_again(tid, aside)
    }

    /// Brings the running task `tid`, stopped in its user code, to a point and records it:
    /// single-steps it (at most [`WATCH_STEPS`] instructions, see
    /// `tracee::state::step_for_watch`) to learn which memory it writes, then makes a debug
    /// exception its last trap (`tracee::state::settle_trap`: the kernel copies the last trap
    /// into later signal frames, which points' digests cover, so at every point it is the same
    /// in recording and replay). The task is left stopped at the point, where a signal can be
    /// injected. A signal that stops it meanwhile is discarded there and put in `aside`, to be
    /// sent again once the task is past the point. `None` if the task ended (its end handled).
    fn reach_point(&mut self, tid: i32, aside: &mut Vec<HeldSignal>) -> Result<Option<Point>> {
        let t = &self.task(tid)?.tracee;
        let in_steps = || format!("single-stepping task {tid} to a point");
        // Several passes of one loop iteration each (an interpreter's dispatch comes back to
        // the same instruction at every bytecode, and the loop of the program it runs spans
        // many of them): the words written over the whole window show that loop's progress.
        let mut stepped = tracee::state::Stepped::default();
        while stepped.steps < WATCH_STEPS && stepped.interrupted.is_none() {
            let max = (WATCH_STEPS - stepped.steps).min(PASS_STEPS);
            if step_more(t, max, &mut stepped).with_context(in_steps)? == 0 {
                break;
            }
        }
        // A point on a `call` (or near one) could only be found at a ptrace stop per visit in
        // replay, since the call cannot be moved into the trampoline: step on a little.
        for _ in 0..PATCHABLE_STEPS {
            if stepped.interrupted.is_some()
                || tracee::locate::patchable(t, t.regs()?.rip)
                || step_more(t, 1, &mut stepped).with_context(in_steps)? == 0
            {
                break;
            }
        }
        let mut interrupted = stepped.interrupted.take();
        loop {
            match interrupted {
                None => {}
                Some(end) if end.is_end() => {
                    self.dispatch(tid, end)?;
                    return Ok(None);
                }
                Some(Stop::Signal(sig)) => self.put_aside(tid, sig, aside)?,
                Some(other) => {
                    bail!("unexpected stop of task {tid} on its way to a point: {other:?}")
                }
            }
            let t = self.task(tid)?;
            interrupted = tracee::state::settle_trap(&t.tracee)
                .with_context(|| format!("settling the last trap of task {tid} at a point"))?;
            if interrupted.is_none() {
                break;
            }
        }
        self.capture_point(tid, &stepped.written).map(Some)
    }

    /// `tid` stopped for signal `sig` on its way to a point, where the recorder discards it: an
    /// asynchronous signal goes to `aside` with its siginfo (to be sent again), a fault is just
    /// discarded (the instruction faults again when it runs again), the recorder's preemption
    /// `SIGSTOP` is no longer pending, and a group-stop passes.
    fn put_aside(&mut self, tid: i32, sig: i32, aside: &mut Vec<HeldSignal>) -> Result<()> {
        let me = self.me;
        let t = self.task(tid)?;
        let Ok(info) = t.tracee.siginfo() else {
            return Ok(());
        };
        let (signo, code) = signo_code(&info);
        if let Some(i) = t.resent.iter().position(|(s, _)| *s == sig) {
            aside.push(t.resent.remove(i));
        } else if is_ours(&info, me) {
            t.stop_sent = false;
        } else if !is_fault(signo, code) {
            aside.push((sig, info));
        }
        Ok(())
    }

    /// Sends the signals `reach_point` put aside to `tid` again; their stops get back their
    /// original siginfo (see `on_signal`).
    fn send_again(&mut self, tid: i32, aside: Vec<HeldSignal>) -> Result<()> {
        let t = self.task(tid)?;
        for (sig, info) in aside {
            t.tracee.tgkill(Pid::from_raw(t.pid), sig)?;
            t.resent.push((sig, info));
        }
        Ok(())
    }

    /// Whether a task waits in the ready FIFO for the CPU.
    fn others_wait(&self) -> bool {
        self.ready
            .iter()
            .any(|r| self.tasks.get(r).is_some_and(|t| t.state.waits_for_cpu()))
    }

    /// The point the running task `tid` is stopped at, with `written` (what it wrote while
    /// single-stepped) for the watched words.
    fn capture_point(&mut self, tid: i32, written: &[(u64, u8)]) -> Result<Point> {
        let excluded = self.excluded(tid)?;
        let ticks = if self.stall.0 == Some(tid) {
            self.stall.2
        } else {
            0
        };
        let t = self.task(tid)?;
        let watch = tracee::state::watch_values(&t.tracee, written, WATCH_WORDS);
        tracee::state::capture(&t.tracee, excluded, watch, ticks)
            .with_context(|| format!("recording the point task {tid} stopped at"))
    }

    /// The memory a point of `tid` leaves out of its digest: what the kernel may write into
    /// its address space for other tasks' syscalls whose events come later in the trace (the
    /// bound of a call still in progress, the exact writes of one that returned), the
    /// `CLONE_CHILD_SETTID` word of a thread that has not started, and the
    /// `CLONE_CHILD_CLEARTID` word of a task that is exiting.
    fn excluded(&self, tid: i32) -> Result<Vec<(u64, u64)>> {
        let t = self
            .tasks
            .get(&tid)
            .with_context(|| format!("task {tid} is not traced"))?;
        let mem = TraceeMemory(&t.tracee);
        let mut ranges = Vec::new();
        for o in self.tasks.values() {
            if o.mm != t.mm || o.tid() == tid {
                continue;
            }
            match &o.state {
                State::InSyscall(e)
                | State::Restarting(e)
                | State::GroupStopped(Some(e))
                | State::ReadyToContinue(Some(e))
                    if !e.exec_done =>
                {
                    ranges.extend(
                        points::pending_regions(e.ev.nr, e.ev.args, &mem)
                            .iter()
                            .map(points::range),
                    )
                }
                State::ReadyAfter(e) => {
                    // The result is in the exit registers (a task killed meanwhile has none:
                    // then the call's bound).
                    let regions = match o.tracee.regs() {
                        Ok(r) => {
                            let call = Call {
                                nr: e.ev.nr,
                                args: e.ev.args,
                                result: r.rax as i64,
                            };
                            syscalls::out_regions(&call, &mem)
                        }
                        Err(_) => points::pending_regions(e.ev.nr, e.ev.args, &mem),
                    };
                    ranges.extend(regions.iter().map(points::range));
                }
                State::Unborn | State::ReadyToStart => {
                    if let Some(at) = o.child_tid_at {
                        ranges.push((at, at + 4));
                    }
                }
                // A leader that left its threads behind exits without the CPU: the kernel
                // clears its `CLONE_CHILD_CLEARTID` word at some moment of theirs.
                State::Exiting => {
                    if let Some(at) = o.clear_tid_at {
                        ranges.push((at, at + 4));
                    }
                }
                _ => {}
            }
        }
        Ok(tracee::state::merge_ranges(&ranges))
    }

    /// Emulates a trapped `rdtsc`/`rdtscp` at `regs.rip`; false if the fault was something else.
    fn emulate_trapped(&mut self, tid: i32, mut regs: Regs) -> Result<bool> {
        let cpu = self.cpu;
        let faults = self.tsc.faults(tid);
        let t = self.task(tid)?;
        let Some((kind, len)) = t.tracee.trapped_insn_at(regs.rip) else {
            return Ok(false);
        };
        let rip = regs.rip;
        let (tsc, aux) = match kind {
            Trapped::Rdtsc => (tracee::tsc::read_tsc().0, None),
            Trapped::Rdtscp => {
                let (tsc, aux) = tracee::tsc::read_tsc();
                // TSC_AUX names the CPU (low 12 bits) the read ran on: the tracee's pinned CPU.
                (tsc, Some((aux & !0xfff) | cpu))
            }
            Trapped::Cpuid => return Ok(false),
        };
        if faults {
            // The program asked for rdtsc to fault: its SIGSEGV is delivered as a fault.
            return Ok(false);
        }

        regs.rax = tsc & 0xffff_ffff;
        regs.rdx = tsc >> 32;
        if let Some(a) = aux {
            regs.rcx = u64::from(a);
        }
        regs.rip += len as u64;
        t.tracee.set_regs(&regs)?;
        let pid = t.pid;
        if let Some(t) = self.tasks.get(&tid) {
            self.segv.restore_after_trap(pid, &t.tracee)?;
            self.segv_blocked.reblock_after_trap(tid, &t.tracee)?;
        }
        self.writer
            .push(&Event::Rdtsc(RdtscEvent { tid, rip, tsc, aux }))?;
        self.resume(tid, regs)?;
        Ok(true)
    }
}

/// What the kernel left in `len` bytes of `tracee`'s memory at `addr`, as recorded bytes: as
/// much as is readable, or nothing if none is.
pub(crate) fn capture(
    writer: &mut TraceWriter,
    tracee: &Tracee,
    addr: u64,
    len: u64,
) -> Result<Option<MemWrite>> {
    let mut buf = vec![0u8; len as usize];
    let n = tracee.read_mem_partial(addr, &mut buf);
    buf.truncate(n);
    if buf.is_empty() {
        return Ok(None);
    }
    Ok(Some(MemWrite {
        addr,
        data: writer.data(&buf)?,
    }))
}

/// One more pass of `tracee::state::step_for_watch` (at most `max` instructions), added to
/// `stepped`; returns how many instructions it stepped.
fn step_more(t: &Tracee, max: usize, stepped: &mut tracee::state::Stepped) -> Result<usize> {
    let pass = tracee::state::step_for_watch(t, max)?;
    stepped.written.extend(pass.written);
    stepped.interrupted = pass.interrupted;
    stepped.steps += pass.steps;
    Ok(pass.steps)
}

/// The recording error for an exec stop of a task that was not inside an `execve` (an exec
/// by another thread is handled before, see `thread_exec`).
const THREAD_EXEC: &str = "an exec stop came while the task was not inside execve";

/// A warning key for a path (apart from syscall numbers and ioctl requests).
fn hash_path(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish() | (1 << 63)
}

/// At a tick, once the task holding the CPU has used up its time slice: if it runs user code
/// while another task waits for the CPU, sends it a `SIGSTOP` (once), to take the CPU from it
/// at its stop.
fn preempt_if_others_wait(
    tasks: &mut HashMap<i32, Task>,
    ready: &VecDeque<i32>,
    current: Option<i32>,
) {
    let waiting = ready
        .iter()
        .any(|r| tasks.get(r).is_some_and(|t| t.state.waits_for_cpu()));
    let Some(t) = current.and_then(|c| tasks.get_mut(&c)) else {
        return;
    };
    if !waiting || t.stop_sent || !matches!(t.state, State::Running) {
        return;
    }
    match t.tracee.tgkill(Pid::from_raw(t.pid), libc::SIGSTOP) {
        Ok(()) => t.stop_sent = true,
        // The task may have ended, its end not reported yet.
        Err(e) => tracing::debug!(tid = t.tid(), "no preemption: {e:#}"),
    }
}

/// How many timer ticks make `d` (at least one).
fn ticks_in(d: Duration) -> u32 {
    (d.as_micros() / TICK.as_micros()).max(1) as u32
}
