//! The recording loop over a tree of tasks, with the recorder as the scheduler: at most one
//! task runs user code at a time, and the order in which tasks get the CPU is the order of the
//! events in the trace (see the crate README).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use syscalls::{Call, Replay};
use trace_format::{
    CloneEvent, Event, ExitEvent, ExitStatus, MemWrite, RdtscEvent, SignalEvent, SignalOrigin,
    StartEvent, SyscallEvent, TraceWriter,
};
use tracee::insn::Trapped;
use tracee::tracee::signo_code;
use tracee::{regs, Regs, Stop, Tracee};

use crate::echo::EchoFds;
use crate::exec;
use crate::mapped_files::MappedFiles;
use crate::memory::TraceeMemory;
use crate::session::TICK;
use crate::signals::is_fault;
use crate::task::{Entry, State, Task};

/// How long a task may run user code without a syscall, while another task waits for the CPU,
/// before the recorder warns that it is starving it.
const SPIN_WARNING: Duration = Duration::from_secs(2);

/// A recording in progress.
pub struct Session {
    writer: TraceWriter,
    files: MappedFiles,
    /// Descriptors aliasing stdout/stderr, per process.
    echo: HashMap<i32, EchoFds>,
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
    /// For the spin warning: the task holding the CPU and the event count at the last tick,
    /// and for how many ticks neither changed.
    stall: (Option<i32>, u64, u32),
}

impl Session {
    /// A recording of `root`, stopped before its initial `execve`.
    pub fn new(root: Tracee, writer: TraceWriter, cpu: u32) -> Session {
        let tid = root.pid().as_raw();
        let mut tasks = HashMap::new();
        tasks.insert(tid, Task::new(root, tid, State::Running));
        Session {
            writer,
            files: MappedFiles::default(),
            echo: HashMap::from([(tid, EchoFds::default())]),
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
                self.schedule_next()?;
            }
            let (pid, stop) = self.wait_any()?;
            self.dispatch(pid.as_raw(), stop)?;
        }
        self.root_status
            .context("the initial process ended without a reported status")
    }

    /// Waits for any task, writing out buffered events and watching for spinning tasks while
    /// they take long.
    fn wait_any(&mut self) -> Result<(Pid, Stop)> {
        let Session {
            writer,
            tasks,
            current,
            ready,
            stall,
            ..
        } = self;
        tracee::stop::wait_any(&mut || {
            writer.flush()?;
            // No clock is read on the recorder's hot path (the tracer thread traps `rdtsc`, so
            // a clock read costs a signal): a stall is counted in timer ticks instead.
            let now = (*current, writer.event_count());
            if (stall.0, stall.1) == now {
                stall.2 += 1;
            } else {
                *stall = (now.0, now.1, 0);
            }
            if TICK * stall.2 >= SPIN_WARNING {
                warn_if_spinning(tasks, ready, *current, TICK * stall.2);
            }
            Ok(())
        })
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
        self.record_exec(root)?;
        let t = self.task(root)?;
        t.tracee.cont_syscall(0)?;
        match t.tracee.wait()? {
            Stop::SyscallStop => {}
            other => bail!("unexpected stop after exec: {other:?}"),
        }
        let r = t.tracee.regs()?;
        self.resume(root, r)
    }

    /// At an exec stop of `tid`: records the new program image.
    fn record_exec(&mut self, tid: i32) -> Result<()> {
        let Session {
            tasks,
            writer,
            files,
            ..
        } = self;
        let t = tasks.get_mut(&tid).context("exec of an unknown task")?;
        t.tracee.reopen_mem()?;
        let ev = exec::capture(&t.tracee, writer, files)?;
        writer.push(&Event::Exec(Box::new(ev)))?;
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

    /// Resumes `tid` in user code right after an event, with the CPU.
    fn resume(&mut self, tid: i32, regs: Regs) -> Result<()> {
        self.after_event(tid, regs)?;
        let t = self.task(tid)?;
        t.state = State::Running;
        t.tracee.cont(0)?;
        self.current = Some(tid);
        Ok(())
    }

    fn dispatch(&mut self, tid: i32, stop: Stop) -> Result<()> {
        match stop {
            Stop::Exited(c) => return self.on_death(tid, ExitStatus::Exited(c), stop),
            Stop::Killed(s) => return self.on_death(tid, ExitStatus::Signaled(s), stop),
            _ => {}
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
            // Nothing but its end is expected from an exiting task: let it go on.
            State::Exiting => t.tracee.cont(0),
            State::ReadyToStart | State::ReadyAfter(_) => {
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
        if self.current == Some(tid) {
            self.current = None;
        }
        if t.is_leader() {
            self.echo.remove(&t.pid);
        }
        self.exits.push(ExitEvent { tid, status });
        Ok(())
    }

    fn warn_once(&mut self, key: u64, msg: impl FnOnce() -> String) {
        if self.warned.insert(key) {
            eprintln!("deja: warning: {}", msg());
        }
    }

    /// The entry of a syscall by the running task `tid`.
    fn on_syscall_entry(&mut self, tid: i32) -> Result<()> {
        let t = self.task(tid)?;
        let entry = t.tracee.regs()?;
        let (nr, args) = (entry.orig_rax, regs::syscall_args(&entry));
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
            tid,
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
            | Replay::Mmap
            | Replay::Exec
            | Replay::Clone => {
                // Calls that change the address space, the signal state, the program or the
                // task tree, and calls that send signals, run while no other task runs; the
                // others (which may block) let other tasks run meanwhile.
                let exclusive = replay != Replay::Emulate || syscalls::sends_signal(nr);
                let t = self.task(tid)?;
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

    /// A stop of `tid` while it is inside a syscall.
    fn on_syscall_stop(&mut self, tid: i32, stop: Stop) -> Result<()> {
        let t = self.task(tid)?;
        let State::InSyscall(mut entry) = std::mem::replace(&mut t.state, State::Running) else {
            bail!("task {tid} is not in a syscall");
        };
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
                self.record_exec(tid)?;
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
        if !args.is_thread() {
            let table = self.echo.get(&parent_pid).cloned().unwrap_or_default();
            self.echo.insert(child, table);
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
                self.tasks.insert(child, task);
            }
        }
        entry.exclusive = false;
        let t = self.task(tid)?;
        t.state = State::InSyscall(entry);
        t.tracee.cont_syscall(0)?;
        self.current = None;
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
            echo,
            warned,
            ..
        } = self;
        let t = tasks
            .get_mut(&tid)
            .context("finishing a syscall of an unknown task")?;
        let exit = t.tracee.regs()?;
        ev.result = exit.rax as i64;
        let (nr, args) = (ev.nr, ev.args);
        let call = Call {
            nr,
            args,
            result: ev.result,
        };
        for region in syscalls::out_regions(&call, &TraceeMemory(&t.tracee)) {
            ev.writes
                .extend(capture(writer, &t.tracee, region.addr, region.len)?);
        }
        if nr == libc::SYS_mmap as u64
            && !syscalls::is_error(ev.result)
            && args[3] & libc::MAP_ANONYMOUS as u64 == 0
        {
            let fd = format!("/proc/{}/fd/{}", t.tracee.pid(), args[4]);
            let f = files.store_link(writer, &fd)?;
            // A shared mapping the program may write, or one in /dev/shm, is how processes
            // share memory: one outside the recording would change it unrecorded.
            let shared = args[3] & libc::MAP_SHARED as u64 != 0
                && (args[2] & libc::PROT_WRITE as u64 != 0 || f.path.starts_with("/dev/shm/"));
            if shared && warned.insert(hash_path(&f.path)) {
                eprintln!(
                    "deja: warning: {} is mapped shared: changes other processes outside the \
                     recording make to it are not recorded, so the replay may differ",
                    f.path
                );
            }
            ev.mapped_file = Some(f);
        }
        let fds = echo.entry(t.pid).or_default();
        if matches!(
            nr as i64,
            libc::SYS_write | libc::SYS_writev | libc::SYS_pwrite64 | libc::SYS_pwritev
        ) && ev.result > 0
        {
            ev.echo = fds.stream(args[0]);
        }
        fds.after_syscall(nr, &args, ev.result);
        writer.push(&Event::Syscall(ev))?;
        self.resume(tid, exit)
    }

    /// Called with the registers `tid` is about to resume with, right after an event: sends
    /// its held-back signals so they are delivered at this boundary.
    fn after_event(&mut self, tid: i32, resume_regs: Regs) -> Result<()> {
        let t = self.task(tid)?;
        for (sig, info) in std::mem::take(&mut t.deferred) {
            t.tracee.tgkill(Pid::from_raw(t.pid), sig)?;
            t.resent.push((sig, info));
        }
        t.boundary = Some(resume_regs);
        Ok(())
    }

    /// A signal stop of the running task `tid`.
    fn on_signal(&mut self, tid: i32, sig: i32) -> Result<()> {
        let t = self.task(tid)?;
        let Ok(info) = t.tracee.siginfo() else {
            // A group-stop (no siginfo): let the task go on.
            return t.tracee.cont(0);
        };
        let regs = t.tracee.regs()?;
        let (signo, code) = signo_code(&info);
        if sig == libc::SIGSEGV && code == libc::SI_KERNEL && self.emulate_trapped(tid, regs)? {
            return Ok(());
        }
        let t = self.task(tid)?;
        let at_boundary = t
            .boundary
            .take()
            .is_some_and(|b| regs::to_words(&b) == regs::to_words(&regs));
        let resent = t.resent.iter().position(|(s, _)| *s == sig);
        let (origin, info) = if is_fault(signo, code) {
            (SignalOrigin::Fault, info)
        } else if let Some(i) = resent {
            let (_, original) = t.resent.remove(i);
            t.tracee.set_siginfo(&original)?;
            (SignalOrigin::Async, original)
        } else if at_boundary {
            (SignalOrigin::Async, info)
        } else {
            tracing::debug!(
                tid,
                sig,
                rip = regs.rip,
                "holding back a signal that landed mid-code"
            );
            t.deferred.push((sig, info));
            return t.tracee.cont(0);
        };
        self.writer.push(&Event::Signal(SignalEvent {
            tid,
            signo: sig,
            siginfo: info.to_vec(),
            origin,
            rip: regs.rip,
            delivered: true,
            point: None,
        }))?;
        let t = self.task(tid)?;
        t.tracee.cont(sig)
    }

    /// Emulates a trapped `rdtsc`/`rdtscp` at `regs.rip`; false if the fault was something else.
    fn emulate_trapped(&mut self, tid: i32, mut regs: Regs) -> Result<bool> {
        let cpu = self.cpu;
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
        regs.rax = tsc & 0xffff_ffff;
        regs.rdx = tsc >> 32;
        if let Some(a) = aux {
            regs.rcx = u64::from(a);
        }
        regs.rip += len as u64;
        t.tracee.set_regs(&regs)?;
        self.writer
            .push(&Event::Rdtsc(RdtscEvent { tid, rip, tsc, aux }))?;
        self.resume(tid, regs)?;
        Ok(true)
    }
}

/// What the kernel left in `len` bytes of `tracee`'s memory at `addr`, as recorded bytes: as
/// much as is readable, or nothing if none is.
fn capture(
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

/// The recording error for an `execve` by a thread other than its process's main thread.
const THREAD_EXEC: &str = "execve from a thread other than the main thread of a multi-threaded \
                           process is not supported yet";

/// A warning key for a path (apart from syscall numbers and ioctl requests).
fn hash_path(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish() | (1 << 63)
}

/// Warns once per task when the task holding the CPU has run user code for long without a
/// syscall while another task waits for the CPU: that one cannot run until it makes one.
fn warn_if_spinning(
    tasks: &mut HashMap<i32, Task>,
    ready: &VecDeque<i32>,
    current: Option<i32>,
    ran: Duration,
) {
    let waiting = ready.iter().any(|r| {
        tasks
            .get(r)
            .is_some_and(|t| matches!(t.state, State::ReadyToStart | State::ReadyAfter(_)))
    });
    let Some(t) = current.and_then(|c| tasks.get_mut(&c)) else {
        return;
    };
    if !waiting || t.warned_spin || !matches!(t.state, State::Running) {
        return;
    }
    t.warned_spin = true;
    let tid = t.tid();
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
    eprintln!(
        "deja: warning: task {tid} ({}) has run for {} s without a system call while other \
         tasks wait: they cannot run until it makes one (threads that spin-wait on each other \
         without system calls hang under this version of deja)",
        comm.trim(),
        ran.as_secs()
    );
}
