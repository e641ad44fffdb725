//! The recording loop over a tree of tasks, with the recorder as the scheduler: at most one
//! task runs user code at a time, and the order in which tasks get the CPU is the order of the
//! events in the trace (see the crate README).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use trace_format::{
    CloneEvent, Event, ExitEvent, ExitStatus, MemWrite, ResumeEvent, StartEvent, TraceWriter,
};
use tracee::forced_segv::SegvActions;
use tracee::segv_mask::SegvBlocked;
use tracee::{Regs, Stop, Tracee};

use crate::echo::EchoFds;
use crate::exec;
use crate::file_effects::FileEffects;
use crate::mapped_files::MappedFiles;
use crate::memory::TraceeMemory;
use crate::session::TICK;
use crate::task::{Entry, State, Task};
use crate::tsc_mode::TscModes;
use std::sync::atomic::{AtomicU64, Ordering};

mod buffered;
mod chaos;
mod ending;
mod fatal_call;
mod group_stop;
mod lanes;
mod point;
mod ptrace;
mod restart;
mod signal;
mod syscall;
mod thread_exec;
mod vanish;

/// How long a task may hold the CPU in user code without an event while another task waits
/// for it: then the recorder preempts it.
pub(crate) const TIME_SLICE: Duration = Duration::from_millis(50);

/// How long a task asked to give the CPU up at its next syscall (its slice over) may run on
/// before it is stopped in its user code instead (see `preempt_if_others_wait`).
const YIELD_GRACE: Duration = Duration::from_millis(20);

/// How often buffered events are written out while the tracee blocks or computes.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Index of `rip` in a point's register words (`user_regs_struct` order).
pub(crate) const RIP: usize = 16;

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
    /// The task holding the CPU at the last tick, the timer's count of ticks then
    /// (`tracee::alarm::fired`), and for how many ticks that task has held the CPU (its time
    /// slice).
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
    /// The fast path: the in-process library's slots, patched sites and stubs.
    fast: crate::fastpath::FastPath,
    /// The task that last kept the CPU through a syscall that returned without sleeping, and
    /// the timer's count of ticks when it began to (see `returns_without_blocking`).
    kept_since: (Option<i32>, u64),
    /// Chaos scheduling, when asked for (see `chaos`).
    chaos: Option<chaos::Chaos>,
    /// Processes recorded in parallel (see `lanes`): whether it may be done at all.
    parallel: bool,
    /// The lane whose schedule the session's fields hold now.
    lane: u8,
    /// The link to the second lane, while it may take processes.
    lanes: Option<lanes::Link>,
    /// Where the sites patched in this recording are kept for the next (`site_cache`).
    site_cache: Option<std::path::PathBuf>,
    /// Why the second lane stopped, for the first to stop the recording.
    lane_failure: Option<anyhow::Error>,
}

impl Session {
    /// A recording of `root`, stopped before its initial `execve`; with `wait_all`, it lasts
    /// until every task has ended, else until the initial process has (see `ending`).
    pub fn new(
        root: Tracee,
        writer: TraceWriter,
        cpu: u32,
        wait_all: bool,
        syscall_buffer: bool,
        chaos: Option<u64>,
        parallel: bool,
    ) -> Session {
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
            fast: crate::fastpath::FastPath::new(syscall_buffer),
            kept_since: (None, 0),
            chaos: chaos.map(chaos::Chaos::new),
            parallel,
            lane: lanes::FIRST,
            lanes: None,
            site_cache: None,
            lane_failure: None,
        }
    }

    /// The trace being written.
    pub fn writer(&mut self) -> &mut TraceWriter {
        &mut self.writer
    }

    /// Ends the trace with the initial process's status.
    pub fn finish(mut self, status: ExitStatus) -> Result<()> {
        if let Some(path) = &self.site_cache {
            // The sites of the files met this time, with those of the others kept before.
            let mut all = std::mem::take(&mut self.fast.cached);
            for (key, sites) in &self.fast.known {
                if let Some(v) = self.fast.versions.get(key) {
                    all.insert(key.clone(), (*v, sites.clone()));
                }
            }
            crate::site_cache::save(path, &all, &self.fast.mapped_by_exe);
        }
        self.writer.set_syscall_counts(self.fast.counts);
        self.writer
            .set_changing_files(self.effects.changing_files(&self.files));
        self.writer.finish(status)?;
        Ok(())
    }

    /// Patches ahead, from the first process on, the sites earlier recordings patched, kept in
    /// the site cache at `path`, where this recording's are kept at its end (see
    /// `site_cache`).
    pub fn use_site_cache(&mut self, path: std::path::PathBuf) {
        if self.fast.enabled {
            (self.fast.cached, self.fast.mapped_by_exe) = crate::site_cache::load(&path);
            self.site_cache = Some(path);
        }
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
        let second = self.second_cpu();
        let tick = Duration::from_micros(TICK_MICROS.load(Ordering::Relaxed));
        let m: lanes::Shared = std::sync::Mutex::new(self);
        let result = std::thread::scope(|scope| {
            let (to_first, from_second) = std::sync::mpsc::channel();
            if let Some(cpu) = second {
                let (tx, rx) = std::sync::mpsc::channel();
                lanes::lock(&m).link_second_lane(tx, cpu, to_first);
                let m = &m;
                std::thread::Builder::new()
                    .name("deja-tracer-2".into())
                    .spawn_scoped(scope, move || lanes::second_lane(m, rx, cpu, tick))
                    .context("starting the second tracer thread")?;
            }
            // A panic of the first lane's thread ends the recording with an error rather than
            // leaving the second lane waiting for tasks that would never come.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lanes::first_lane(&m, &from_second)
            }))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the first tracer thread panicked")));
            let mut s = lanes::lock(&m);
            s.unlink_second_lane();
            if r.is_err() {
                s.kill_lane(lanes::SECOND);
            }
            r
        });
        let s = m.into_inner().unwrap_or_else(|e| e.into_inner());
        result?;
        if let Some(e) = s.lane_failure.take() {
            return Err(e);
        }
        s.root_status
            .context("the initial process ended without a reported status")
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
        let (old_mm, old_slot) = (t.mm, t.slot.take());
        t.mm = t.pid;
        t.clear_tid_at = None;
        t.just_execed = true;
        let mut ev = exec::capture(&t.tracee, writer, files)?;
        ev.tid = named;
        if old_mm != t.pid {
            self.release_slot(old_mm, old_slot);
        }
        ev.syscallbuf = self.plan_library(tid)?;
        self.writer.push(Event::Exec(Box::new(ev)))?;
        let t = self.task(tid)?;
        let pid = t.pid;
        if let Some(rel) = self.ptrace.get_mut(tid) {
            rel.exec_pending = true;
        }
        self.segv.exec(pid);
        let Session {
            tasks,
            segv_blocked,
            ..
        } = self;
        let t = tasks.get(&tid).context("exec of an unknown task")?;
        segv_blocked.after_call(tid, &t.tracee, None)?;
        Ok(())
    }

    /// Gives the CPU to the next ready task, writing the event it was waiting for.
    fn schedule_next(&mut self) -> Result<()> {
        self.chaos_pick()?;
        while let Some(tid) = self.ready.pop_front() {
            let Some(t) = self.tasks.get_mut(&tid) else {
                continue;
            };
            tracing::trace!(tid, state = %t.state.describe(), "scheduled");
            match std::mem::replace(&mut t.state, State::Running) {
                State::ReadyToStart => return self.start(tid),
                State::ReadyAfter(entry) => return self.finish_syscall(tid, *entry),
                State::ReadyToContinue(restarting) => {
                    return self.continue_stopped(tid, restarting)
                }
                State::Preempted => {
                    let r = t.tracee.regs()?;
                    self.writer.push(Event::Resume(ResumeEvent { tid }))?;
                    return self.resume(tid, r);
                }
                State::Ptraced(held) if held.resume.is_some() => {
                    return self.ptrace_resume(tid, held)
                }
                State::AtEntry => {
                    self.current = Some(tid);
                    return self.on_syscall_entry(tid);
                }
                State::Moved => {
                    // It makes its syscall again: its entry stop comes at once.
                    self.current = Some(tid);
                    t.boundary = None;
                    return t.tracee.cont(0);
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
        let slot = self.set_up_slot(tid)?;
        let r = self.task(tid)?.tracee.regs()?;
        self.writer
            .push(Event::Start(StartEvent { tid, writes, slot }))?;
        self.resume(tid, r)
    }

    /// Resumes `tid` in user code right after an event, with the CPU (`regs`: its registers
    /// now). A task stopped for a signal it held handles that stop now, right after the event.
    fn resume(&mut self, tid: i32, regs: Regs) -> Result<()> {
        self.load_pending_library(tid)?;
        if self.ptrace_stops_after_event(tid)? {
            return Ok(());
        }
        if self.move_after_exec(tid, regs)? {
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
        if tracing::enabled!(tracing::Level::TRACE) {
            let state = self.tasks.get(&tid).map(|t| t.state.describe());
            tracing::trace!(tid, ?stop, ?state, "stop");
        }
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
        if matches!(t.state, State::Running) {
            self.drain(tid)?;
        }
        let Some(t) = self.tasks.get_mut(&tid) else {
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
            | State::ReadyToContinue(_)
            | State::Moved => {
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
        self.release_slot(t.mm, t.slot);
        if self.current == Some(tid) {
            self.current = None;
        }
        self.segv_blocked.forget(tid);
        if t.is_leader() {
            self.echo.remove(&t.pid);
            self.segv.exit(t.pid);
        }
        self.tsc.forget(tid);
        if let Some(c) = &mut self.chaos {
            c.forget(tid);
        }
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
        self.writer.push(Event::Clone(CloneEvent {
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
                let clone_vm = args.flags & libc::CLONE_VM as u64 != 0;
                let slot = self.slot_for_child(tid, child, clone_vm);
                let mut task = Task::new(tracee, child_pid, state);
                task.lane = self.lane;
                task.slot = slot;
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
        // A parent goes on running after its fork or thread creation, as on one CPU natively
        // (the new task waits for the CPU): it keeps the CPU if the call returns at once.
        // A `vfork` parent waits for its child.
        if args.flags & libc::CLONE_VFORK as u64 == 0 && self.ptrace.is_empty() {
            self.current = Some(tid);
            if !self.returns_without_blocking(tid)? {
                self.current = None;
            }
        }
        Ok(())
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
        data: writer.data_vec(buf),
    }))
}

/// The recording error for an exec stop of a task that was not inside an `execve` (an exec
/// by another thread is handled before, see `thread_exec`).
const THREAD_EXEC: &str = "an exec stop came while the task was not inside execve";

/// At a tick, once the task holding the CPU has used up its time slice: if it runs user code
/// while another task waits for the CPU, sends it a `SIGSTOP` (once), to take the CPU from it
/// at its stop.
fn preempt_if_others_wait(
    tasks: &mut HashMap<i32, Task>,
    ready: &VecDeque<i32>,
    current: Option<i32>,
    (fired, chaos): (u64, bool),
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
    // First the task is asked to give the CPU up at its next syscall, buffered ones included
    // (see `Session::yield_at_entry`): a hand-over at a syscall's entry needs no point, which
    // costs hundreds of single steps. Only a task that makes no syscall for `YIELD_GRACE`
    // is stopped in its user code, and one that made no buffered call in the slice's last
    // tick (spinning, computing) at once. (Chaos wants the points: it preempts at once.)
    if let (Some(slot), false) = (t.slot, chaos) {
        match t.yield_asked {
            Some(at) if fired.saturating_sub(at) < u64::from(ticks_in(YIELD_GRACE)) => return,
            Some(_) => {}
            None => {
                let calls_now = tracee::fastpath::buffered_calls(&t.tracee, slot).ok();
                let makes_calls = calls_now.is_some() && t.calls_seen.take() != calls_now;
                if makes_calls && tracee::fastpath::ask_yield(&t.tracee, slot).is_ok() {
                    t.yield_asked = Some(fired);
                    return;
                }
            }
        }
    }
    t.yield_asked = None;
    match t.tracee.tgkill(Pid::from_raw(t.pid), libc::SIGSTOP) {
        Ok(()) => t.stop_sent = true,
        // The task may have ended, its end not reported yet.
        Err(e) => tracing::debug!(tid = t.tid(), "no preemption: {e:#}"),
    }
}

/// A tick before the running task's slice ends: notes how many buffered calls it has made
/// (its slot's count), to tell at the slice's end whether it makes any (see
/// `preempt_if_others_wait`).
fn note_buffered_calls(tasks: &mut HashMap<i32, Task>, current: Option<i32>) {
    if let Some(t) = current.and_then(|c| tasks.get_mut(&c)) {
        if let Some(slot) = t.slot {
            t.calls_seen = tracee::fastpath::buffered_calls(&t.tracee, slot).ok();
        }
    }
}

/// At a tick that interrupted the recorder's wait: accounts for the timer ticks fired since
/// the last call (`tracee::alarm::fired`, which counts them in the signal handler): every
/// [`FLUSH_EVERY`] the buffered events are written out, and the task holding the CPU for a
/// [`TIME_SLICE`] while another waits is preempted.
/// No clock is read on the recorder's hot path (the tracer thread traps `rdtsc`, so a clock
/// read costs a signal): time slices are counted in ticks. The slice is the time a task has
/// held the CPU, whatever events it makes: a task whose syscalls are exclusive, buffered (the
/// fast path) or return without sleeping never gives the CPU up at them, and must still leave
/// it to the others now and then.
fn account_ticks(
    writer: &mut TraceWriter,
    tasks: &mut HashMap<i32, Task>,
    ready: &VecDeque<i32>,
    current: Option<i32>,
    (stall, ticks): (&mut (Option<i32>, u64, u32), &mut u32),
    mut chaos: Option<&mut chaos::Chaos>,
) -> Result<()> {
    let fired = tracee::alarm::fired();
    let new = fired.saturating_sub(stall.1);
    if new == 0 {
        return Ok(());
    }
    stall.1 = fired;
    let before = *ticks;
    *ticks = ticks.wrapping_add(new as u32);
    let flush = before / ticks_in(FLUSH_EVERY) != *ticks / ticks_in(FLUSH_EVERY);
    // A slice counts the ticks that interrupted a wait: one per call (ticks that came while
    // the recorder was busy pass unseen here; `returns_without_blocking` counts them itself).
    if stall.0 == current {
        stall.2 = stall.2.saturating_add(1);
    } else {
        (stall.0, stall.2) = (current, 0);
        if let Some(c) = chaos.as_deref_mut() {
            c.new_slice();
        }
    }
    let chaotic = chaos.is_some();
    let slice = chaos.map_or(ticks_in(TIME_SLICE), |c| c.slice());
    if stall.2 + 1 == slice && !chaotic {
        note_buffered_calls(tasks, current);
    }
    if stall.2 >= slice {
        preempt_if_others_wait(tasks, ready, current, (fired, chaotic));
    }
    if flush {
        writer.flush_soon()?;
    }
    Ok(())
}

/// The interval of the recorder's timer, in microseconds ([`TICK`] unless set otherwise).
static TICK_MICROS: AtomicU64 = AtomicU64::new(TICK.as_micros() as u64);

/// Sets the interval of the recorder's timer (before it starts).
pub(crate) fn set_tick(tick: Duration) {
    TICK_MICROS.store(tick.as_micros().max(1) as u64, Ordering::Relaxed);
}

/// How many timer ticks make `d` (at least one).
pub(crate) fn ticks_in(d: Duration) -> u32 {
    (d.as_micros() as u64 / TICK_MICROS.load(Ordering::Relaxed)).max(1) as u32
}
