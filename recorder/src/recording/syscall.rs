//! Syscalls: at a syscall's entry, how the table says it is recorded (denied, emulated in
//! the recorder, run alone or alongside other tasks); at its exit, its event.

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use syscalls::{Call, Replay};
use trace_format::{Echoed, Event, SyscallEvent};
use tracee::forced_segv::KERNEL_SIGACTION;
use tracee::{regs, Regs, Stop};

use crate::echo;
use crate::emulated;
use crate::ioctls::ioctl_warning;
use crate::memory::TraceeMemory;
use crate::own_filters;
use crate::remote_memory;
use crate::task::{Entry, State};

use super::{capture, Session, THREAD_EXEC};

/// How many times the recorder looks at a task running a syscall that may block before it
/// gives the CPU to the others all the same (a call that keeps computing in the kernel).
const MAX_RUNNABLE_POLLS: usize = 64;

impl Session {
    /// The entry of a syscall by the running task `tid`.
    pub(super) fn on_syscall_entry(&mut self, tid: i32) -> Result<()> {
        let t = self.task(tid)?;
        let (entry, pid) = (t.tracee.regs()?, t.pid);
        if self.move_back_for(tid, &entry)? {
            return Ok(());
        }
        self.refuse_across_lanes(&entry)?;
        if self.ptrace_entry(tid, &entry)? {
            return Ok(());
        }
        if self.yield_at_entry(tid)? {
            return Ok(());
        }
        if !self.ptrace.is_traced(tid) && self.try_patch(tid, &entry)? {
            return Ok(());
        }
        self.fast.counts.traced += 1;
        let (nr, args) = (entry.orig_rax, regs::syscall_args(&entry));
        if tracee::fastpath::seccomp_turns_off(nr, &args) {
            self.fast_path_off(tid)?;
        }
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
                self.writer.push(Event::Syscall(ev))?;
                self.resume(tid, r)
            }
            Replay::Exit => {
                self.writer.push(Event::Syscall(ev))?;
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
                // others (which may block) let other tasks run meanwhile, but for the futex
                // calls that never block (`syscalls::runs_exclusively`). Writes
                // to the recording's stdout/stderr also run alone, so the order in which their
                // bytes reach the stream is the order of their events, which the replay echoes.
                let echoed = ev.echo.is_some();
                let exclusive =
                    replay != Replay::Emulate || syscalls::runs_exclusively(nr, &args) || echoed;
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
                if echoed && self.other_lane_busy() {
                    // Across lanes too: the write's exit is taken now, under the session's
                    // lock, so no task of the other lane writes to the stream between this
                    // write and its event.
                    let stop = tracee::stop::wait_for(Pid::from_raw(tid))?;
                    let handled = self.dispatch(tid, stop);
                    self.unless_vanished(handled)?;
                    return Ok(());
                }
                if !exclusive {
                    // (Not while emulated ptrace runs: its tracers' waits and tracees' stops
                    // count on the hand-over.)
                    let yields = nr == libc::SYS_sched_yield as u64;
                    if yields && self.yield_in_turn(tid)? {
                        return Ok(());
                    }
                    let keep = !stop_now && !yields && self.ptrace.is_empty();
                    if keep && self.returns_without_blocking(tid)? {
                        return Ok(());
                    }
                    self.current = None;
                }
                Ok(())
            }
        }
    }

    /// At the entry of a syscall of `tid`, which was asked to give the CPU up there (its
    /// slice ran out while others waited, see `preempt_if_others_wait`): if others still
    /// wait, it does: stopped at the entry, it waits for the CPU behind them, and the call is
    /// handled when it gets it (no event marks the hand-over: the task ran no code since its
    /// last event but up to this stop, which its next event is). True then.
    fn yield_at_entry(&mut self, tid: i32) -> Result<bool> {
        // (Asked during this hold of the CPU: a task that gave it up since, at a call that
        // blocked, has a fresh slice.)
        let holds_since =
            self.stall.0 == Some(tid) && self.stall.2 >= super::ticks_in(super::TIME_SLICE);
        if self.task(tid)?.yield_asked.take().is_none()
            || !holds_since
            || !self.others_wait()
            || !self.ptrace.is_empty()
        {
            return Ok(false);
        }
        self.task(tid)?.state = State::AtEntry;
        self.ready.push_back(tid);
        self.current = None;
        tracing::debug!(tid, "gives the CPU up at a syscall's entry");
        Ok(true)
    }

    /// `tid`, holding the CPU, was just let into a syscall that may block: if the call
    /// returns without sleeping (a write to a pipe with room, a read of data already there),
    /// the task keeps the CPU, as it does natively, and its exit is handled now; true then.
    /// False as soon as it sleeps: the CPU goes to the others meanwhile. (Handing the CPU over
    /// at every such call let a woken thread run ahead of the one that woke it: rr's
    /// `spinlock_priorities`.) The tracer and its tracees share one CPU: yielding it lets
    /// the task run until it stops or sleeps.
    pub(super) fn returns_without_blocking(&mut self, tid: i32) -> Result<bool> {
        // A task that has kept the CPU this way for a time slice leaves it to the others here
        // (the timer's own count of ticks: a task stopping again at once never lets the
        // recorder's wait be interrupted by one, so `stall` would not see the time pass).
        let fired = tracee::alarm::fired();
        if self.kept_since.0 != Some(tid) {
            self.kept_since = (Some(tid), fired);
        }
        let held = fired.saturating_sub(self.kept_since.1);
        if held >= u64::from(super::ticks_in(super::TIME_SLICE)) && self.others_wait() {
            self.kept_since = (None, 0);
            return Ok(false);
        }
        let Some(stop) = tracee::stop::poll_while_runnable(Pid::from_raw(tid), MAX_RUNNABLE_POLLS)?
        else {
            return Ok(false);
        };
        if stop != Stop::SyscallStop {
            // Not its exit (a signal, its end): handled as when it gave the CPU up.
            self.current = None;
            self.dispatch(tid, stop)?;
            return Ok(true);
        }
        if let State::InSyscall(e) = &mut self.task(tid)?.state {
            e.exclusive = true;
        }
        // Deaths reported meanwhile come first: the call may have seen them (a `wait4` reaping
        // the child, a robust mutex its dead owner left), and the replay applies a death at its
        // event.
        for e in std::mem::take(&mut self.exits) {
            self.writer.push(Event::Exit(e))?;
        }
        self.dispatch(tid, stop)?;
        Ok(true)
    }

    /// `prctl(PR_GET_TSC | PR_SET_TSC | PR_GET_SECCOMP)` (answered from the program's own
    /// setting, see `tsc_mode.rs`) or a call through the vsyscall page, at its entry: the
    /// recorder answers it and the kernel skips it.
    pub(super) fn emulate_in_recorder(
        &mut self,
        tid: i32,
        entry: Regs,
        ev: SyscallEvent,
    ) -> Result<()> {
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
    pub(super) fn on_syscall_stop(&mut self, tid: i32, stop: Stop) -> Result<()> {
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

    /// At the exit stop of `tid`'s syscall, with the CPU: writes the syscall's event and
    /// resumes the task.
    pub(super) fn finish_syscall(&mut self, tid: i32, entry: Entry) -> Result<()> {
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
            // Once per recording: a program using POSIX semaphores or shared memory maps one
            // file under /dev/shm per object (python's multiprocessing, several per Pool).
            if warned.insert(SHARED_MAPPING_WARNING) {
                eprintln!(
                    "deja: warning: {path} is mapped shared: changes other processes outside the \
                     recording make to it are not recorded, so the replay may differ (said \
                     once; later shared mappings are not named)"
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
        let mapped = ev.mapped_file.as_ref().map(|f| (t.mm, f.path.clone()));
        writer.push(Event::Syscall(ev))?;
        if let Some((mm, path)) = mapped {
            self.note_mapped_by_exe(mm, &path);
        }
        self.resume(tid, exit)
    }
}

/// The warning key of the shared-mapping warning (apart from syscall numbers, below 1024, and
/// the ioctl and ptrace request keys, below 3 << 32).
const SHARED_MAPPING_WARNING: u64 = 1 << 63;
