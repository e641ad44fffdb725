//! The replay loop: drives the tracee from event to event of the trace.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use syscalls::Replay;
use trace_format::{
    CloneEvent, Event, EventIter, ExitStatus, MemWrite, RdtscEvent, SignalEvent, SignalOrigin,
    StartEvent, SyscallEvent, Tid, TraceReader,
};
use tracee::insn::Trapped;
use tracee::{regs, spawn, SpawnOptions, Stop, Tracee};

use crate::divergence::{Divergence, Incomplete};
use crate::tasks::{self, RState, Task, Tasks};
use crate::{echo, exec, mmap, sigmask};

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

/// `-ERESTARTSYS` .. `-ERESTART_RESTARTBLOCK`: results that make the kernel restart or fail the
/// syscall when the signal that follows is delivered.
fn is_restart_code(result: i64) -> bool {
    (-516..=-512).contains(&result)
}

/// Replays the trace in `dir` to its end.
pub fn replay(dir: &Path, opts: &ReplayOptions) -> Result<ReplayOutcome> {
    let (dir, opts) = (dir.to_path_buf(), opts.clone());
    tracee::tsc::on_tracer_thread(move || replay_here(&dir, &opts))
}

/// [`replay`], on the tracer thread.
fn replay_here(dir: &Path, opts: &ReplayOptions) -> Result<ReplayOutcome> {
    let reader = TraceReader::open(dir)?;
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
    if let Some(c) = cpu {
        tracee::pin_current_thread(c)?;
    }
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
    })?;
    let mut tasks = Tasks::default();
    let pid = tracee.pid();
    tasks.add(exec_ev.tid, tracee, pid, RState::Unstarted);
    let mut session = Session {
        tasks,
        reader: &reader,
        events,
        next: None,
        index: 0,
        opts: opts.clone(),
        root: exec_ev.tid,
        root_status: None,
    };
    let result = session.run(&exec_ev);
    session.tasks.kill_all();
    result
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

struct Session<'r> {
    tasks: Tasks,
    reader: &'r TraceReader,
    events: EventIter,
    /// The next event, once peeked.
    next: Option<Event>,
    /// Index of the event being replayed.
    index: u64,
    opts: ReplayOptions,
    /// The initial process (recorded id).
    root: Tid,
    root_status: Option<ExitStatus>,
}

/// How long an `Exit` event waits for its task to end before calling it a divergence.
const END_GRACE: Duration = Duration::from_secs(10);

impl Session<'_> {
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

    fn run(&mut self, exec_ev: &trace_format::ExecEvent) -> Result<ReplayOutcome> {
        let root = self.root;
        let t = self.tracee(root)?;
        t.cont_syscall(0)?;
        match t.wait()? {
            Stop::Exec => {}
            other => bail!("the recorded program did not start in replay: {other:?}"),
        }
        self.finish_exec(root, exec_ev)?;
        loop {
            let Some(ev) = self.take()? else {
                if self.events.truncated() || !self.reader.meta().complete {
                    bail!(Incomplete {
                        events: self.index + 1
                    });
                }
                let status = self
                    .root_status
                    .context("the trace ends without the program's exit")?;
                return Ok(ReplayOutcome {
                    status,
                    events: self.index + 1,
                });
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
            }
        }
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
            other => bail!("task {tid} is not stopped at an event ({other:?})"),
        }
    }

    /// Resumes `tid` after an event, first sending the signal the recording delivered right
    /// at this point, if any, then runs it to its next stop: exactly one task runs user code
    /// at a time, in the recorded order.
    fn resume(&mut self, tid: Tid, sig: i32) -> Result<()> {
        let next = match self.peek()? {
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
        t.tracee.cont(sig)?;
        self.park(tid)
    }

    /// Waits for the next stop of `tid` that belongs to the recording and parks it there.
    /// Signals the replay itself causes but the recording delivered at other points (a
    /// child's SIGCHLD, which the replayer delivers from the trace) and signals sent from
    /// outside are dropped.
    fn park(&mut self, tid: Tid) -> Result<()> {
        loop {
            let stop = self.wait_task(tid)?;
            let t = self.task(tid)?;
            if let Stop::Signal(sig) = stop {
                if t.injected == Some(sig) {
                    t.injected = None;
                } else {
                    let drop = match t.tracee.siginfo() {
                        Err(_) => true,
                        Ok(info) => {
                            let (_, code) = tracee::tracee::signo_code(&info);
                            code <= 0 || sig == libc::SIGCHLD
                        }
                    };
                    if drop {
                        tracing::debug!(tid, sig, "dropping a signal the recording did not have");
                        t.tracee.cont(0)?;
                        continue;
                    }
                }
            }
            t.state = match stop {
                Stop::Exited(c) => RState::Dead(ExitStatus::Exited(c)),
                Stop::Killed(s) => RState::Dead(ExitStatus::Signaled(s)),
                other => RState::Parked(other),
            };
            return Ok(());
        }
    }

    fn wait_task(&mut self, tid: Tid) -> Result<Stop> {
        let real = self.tracee(tid)?.pid();
        self.tasks.wait_real(real)
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
        let reader = self.reader;
        let stop = self.parked(tid)?;
        let t = self.tracee(tid)?;
        let mut r = t.regs()?;
        if stop != Stop::SeccompEntry || r.orig_rax != libc::SYS_execve as u64 {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(tid, format!("execve of {}", ev.exe.path), found));
        }
        let path = reader.file_path(&ev.exe)?;
        let mut bytes = path.as_os_str().as_encoded_bytes().to_vec();
        bytes.push(0);
        // Just below the red zone of the old image's stack, which the exec discards anyway.
        let at = (r.rsp - 128 - bytes.len() as u64) & !15;
        t.write_mem(at, &bytes)?;
        r.rdi = at;
        t.set_regs(&r)?;
        t.cont_syscall(0)?;
        match self.wait_task(tid)? {
            Stop::Exec => self.finish_exec(tid, ev),
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
        let mut r = self.tracee(tid)?.regs()?;
        self.check_entry(tid, &r, e)?;
        let replay = syscalls::lookup(e.nr)
            .map(|d| d.replay)
            .unwrap_or(Replay::Deny(libc::ENOSYS));
        match replay {
            Replay::Execute => {
                self.run_for_real(tid, &name)?;
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
                let reader = self.reader;
                let t = self.tracee(tid)?;
                let mut after = t.regs()?;
                if after.rax as i64 != e.result {
                    return Err(self.diverged(
                        tid,
                        format!("mmap to return {:#x}", e.result),
                        format!("{:#x} ({})", after.rax, errno_text(after.rax as i64)),
                    ));
                }
                mmap::fill_from_file(t, reader, e)?;
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
            Some(Event::Signal(s)) if s.tid == tid && s.origin == SignalOrigin::Async => {
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
        let t = self.tracee(tid)?;
        let r = t.regs()?;
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
        t.clone_entry = Some(r);
        self.write_memory(tid, &e.writes, "clone")?;
        let child_pid = if e.child_pid == e.child {
            real
        } else {
            parent_pid
        };
        let child = Tracee::attach_traced(real)?;
        self.tasks.add(e.child, child, child_pid, RState::Unstarted);
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
            let stop = self.tasks.wait_real(real)?;
            if !matches!(stop, Stop::Signal(_)) {
                let found = self.describe_stop(tid, stop);
                return Err(self.diverged(tid, "the new task to start".into(), found));
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
        let reader = self.reader;
        let t = self.tracee(tid)?;
        for w in writes {
            let data = reader.read_data(&w.data)?;
            t.write_mem(w.addr, &data)
                .with_context(|| format!("restoring what {name} wrote"))?;
        }
        Ok(())
    }

    fn signal(&mut self, e: &SignalEvent) -> Result<()> {
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
        if e.origin == SignalOrigin::Async {
            t.set_siginfo(&e.siginfo)?;
        }
        self.resume(tid, if e.delivered { e.signo } else { 0 })
    }

    fn rdtsc(&mut self, e: &RdtscEvent) -> Result<()> {
        let tid = e.tid;
        let stop = self.parked(tid)?;
        let t = self.tracee(tid)?;
        let mut r = t.regs()?;
        let decoded = t.trapped_insn_at(r.rip);
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
        Ok(())
    }
}

fn errno_text(v: i64) -> String {
    if syscalls::is_error(v) {
        std::io::Error::from_raw_os_error(-v as i32).to_string()
    } else {
        "success".into()
    }
}
