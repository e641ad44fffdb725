//! Emulated ptrace in the recording loop (see the crate README, "ptrace inside a recording"):
//! a recorded task's `ptrace` calls on another recorded task are served by the recorder, which
//! is that task's real tracer; the tracee's real stops its tracer asked for become emulated
//! stops in which it stays until the tracer resumes it; the tracer's `wait4`/`waitid` report
//! them. Everything is written as events the replay performs identically.

use anyhow::{Context, Result};
use trace_format::{
    Event, ExitStatus, MemWrite, PtraceAction, PtraceEvent, PtraceHeld, SignalEvent, SignalOrigin,
    SyscallEvent,
};
use tracee::tracee::{signo_code, SIGINFO_SIZE};
use tracee::{regs, Regs};

use super::{Session, RIP};
use crate::ptrace_emu::{self as emu, Held, Mode, Relation, Report};
use crate::signals::is_fault;
use crate::task::{Entry, State};

mod job_control;
mod requests;
mod syscall_info;
mod wait;

/// `PTRACE_EVENT_STOP`: the stop of a seized task (its first, or `PTRACE_INTERRUPT`'s).
const PTRACE_EVENT_STOP: i32 = 128;
/// `arch_prctl` codes (`asm/prctl.h`).
const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;
/// Size of `struct user_regs_struct`.
const REGS_SIZE: usize = 27 * 8;
/// Size of `struct user_fpregs_struct`.
const FPREGS_SIZE: usize = 512;
/// Size of `struct rusage`.
const RUSAGE_SIZE: usize = 144;
/// `waitid`'s `WNOWAIT`: report, but leave the stop reportable.
const WNOWAIT: u64 = 0x0100_0000;
/// `NT_PRSTATUS`: the general registers' register set.
const NT_PRSTATUS: u64 = 1;
/// End of `orig_rax` in `struct user_regs_struct` (word 15).
const ORIG_RAX_END: usize = 16 * 8;
/// A [`Served`] result meaning the syscall is not answered yet (its task waits).
const PARKED: i64 = i64::MIN;
/// Largest register set `PTRACE_GETREGSET` copies (the XSAVE area of this CPU is smaller).
const MAX_REGSET: usize = 1 << 16;

/// What an emulated syscall of a tracer returns and writes into its memory.
#[derive(Default)]
struct Served {
    result: i64,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Served {
    /// The caller was parked (no event now).
    fn parked() -> Served {
        Served::ok(PARKED)
    }

    fn ok(result: i64) -> Served {
        Served {
            result,
            writes: Vec::new(),
        }
    }

    fn err(errno: i32) -> Served {
        Served::ok(-(errno as i64))
    }

    fn writing(result: i64, addr: u64, bytes: Vec<u8>) -> Served {
        Served {
            result,
            writes: vec![(addr, bytes)],
        }
    }
}

/// `ptrace(req, pid, addr, data)` as a raw syscall (a `PEEK*` stores its word at `data`).
fn raw_ptrace(req: i64, pid: i32, addr: u64, data: u64) -> std::result::Result<i64, i32> {
    // SAFETY: every caller passes in `data` either a plain word or the address of a live
    // buffer of this process at least as large as the request writes or reads.
    let r = unsafe { libc::syscall(libc::SYS_ptrace, req, pid, addr, data) };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}

/// Whether a tracee resumed in `mode` stops at its syscalls' exits.
fn mode_is_syscall(mode: Option<Mode>) -> bool {
    mode == Some(Mode::Syscall)
}

/// The recorder's user id (the tracees').
fn rel_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Whether `e` says a task no longer exists (`ESRCH`): it was killed, its death not reported.
fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<nix::errno::Errno>() == Some(&nix::errno::Errno::ESRCH)
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error())
                == Some(libc::ESRCH)
    })
}

/// The parent process of task `tid` (`PPid` of `/proc/TID/status`).
fn parent_of(tid: i32) -> Result<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .with_context(|| format!("reading the status of task {tid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no parent in the status of task {tid}"))
}

impl Session {
    /// At the entry of a syscall of the running task `tid` (registers `entry`): an emulated
    /// syscall-entry stop, an emulated `ptrace` request, or a `wait` an emulated stop answers.
    /// True if handled here.
    pub(super) fn ptrace_entry(&mut self, tid: i32, entry: &Regs) -> Result<bool> {
        if let Some(rel) = self.ptrace.get(tid) {
            let held = match rel.mode {
                // The syscall is skipped whatever the tracer does next (see `ptrace_run_on`).
                Mode::Sysemu => Some(PtraceHeld::SysemuEntry),
                Mode::Syscall if !rel.in_syscall => Some(PtraceHeld::SyscallEntry),
                _ => None,
            };
            if let Some(held) = held {
                let status = rel.syscall_status();
                self.ptrace_stop(tid, held, status, emu::trap_siginfo(status))?;
                return Ok(true);
            }
        }
        let nr = entry.orig_rax;
        let exits = nr == libc::SYS_exit as u64 || nr == libc::SYS_exit_group as u64;
        if let Some(rel) = self.ptrace.get_mut(tid).filter(|_| exits) {
            if rel.has(libc::PTRACE_O_TRACEEXIT) && !rel.exit_reported {
                // PTRACE_EVENT_EXIT, before the exit; the message is the exit status.
                rel.exit_reported = true;
                rel.event_msg = (entry.rdi & 0xff) << 8;
                let status = emu::event_status(libc::PTRACE_EVENT_EXIT);
                self.ptrace_stop(
                    tid,
                    PtraceHeld::SyscallEntry,
                    status,
                    emu::trap_siginfo(status),
                )?;
                return Ok(true);
            }
        }
        if nr == libc::SYS_ptrace as u64 {
            let served = self.ptrace_request(tid, entry)?;
            self.finish_emulated(tid, entry, served)?;
            return Ok(true);
        }
        if let Some(served) = self.ptrace_wait(tid, entry)? {
            if served.result != PARKED {
                self.finish_emulated(tid, entry, served)?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes the event of a syscall the recorder answered itself (its memory writes done),
    /// skips the syscall and resumes the task with the result.
    fn finish_emulated(&mut self, tid: i32, entry: &Regs, served: Served) -> Result<()> {
        let mut writes = Vec::new();
        for (addr, bytes) in &served.writes {
            writes.push(MemWrite {
                addr: *addr,
                data: self.writer.data(bytes)?,
            });
        }
        self.writer.push(Event::Syscall(SyscallEvent {
            tid,
            nr: entry.orig_rax,
            args: regs::syscall_args(entry),
            rip: entry.rip,
            regs_digest: regs::digest(entry),
            result: served.result,
            writes,
            mapped_file: None,
            echo: None,
            file_effect: None,
        }))?;
        let mut r = *entry;
        r.orig_rax = u64::MAX;
        r.rax = served.result as u64;
        self.task(tid)?.tracee.set_regs(&r)?;
        self.resume(tid, r)
    }

    /// A signal `sig` (with `info`, registers `regs`) stopped the traced task `tid`: recorded
    /// undelivered, and the task is held for its tracer (which decides what is delivered).
    pub(super) fn ptrace_signal(
        &mut self,
        tid: i32,
        sig: i32,
        info: [u8; SIGINFO_SIZE],
        regs: &Regs,
        at_boundary: bool,
    ) -> Result<()> {
        let (signo, code) = signo_code(&info);
        let mut aside = Vec::new();
        let (origin, point) = if is_fault(signo, code) {
            (SignalOrigin::Fault, None)
        } else if at_boundary {
            (SignalOrigin::Async, None)
        } else {
            let Some(point) = self.reach_point(tid, &mut aside, Some((sig, info)))? else {
                return Ok(());
            };
            (SignalOrigin::Async, Some(Box::new(point)))
        };
        let rip = point.as_ref().map_or(regs.rip, |p| p.regs[RIP]);
        self.writer.push(Event::Signal(SignalEvent {
            tid,
            signo: sig,
            siginfo: info.to_vec(),
            origin,
            rip,
            delivered: false,
            point,
        }))?;
        let interrupted = sig == libc::SIGSTOP
            && self
                .ptrace
                .get_mut(tid)
                .is_some_and(|r| std::mem::take(&mut r.interrupt));
        let stop_sig = self.ptrace.get_mut(tid).and_then(|r| {
            if sig == libc::SIGCONT {
                // Its process's group-stop is over.
                r.stop_sig = None;
            }
            r.stop_sig
        });
        let status = match (interrupted, stop_sig) {
            // While its process is group-stopped, the kernel names the stop signal there.
            (true, Some(stop)) => emu::stopped_status(stop | (PTRACE_EVENT_STOP << 8)),
            (true, None) => emu::event_status(PTRACE_EVENT_STOP),
            (false, _) => emu::stopped_status(sig),
        };
        self.ptrace_stop(tid, PtraceHeld::Signal(sig), status, info)?;
        self.send_again(tid, aside)
    }

    /// Holds `tid` in an emulated stop (`at`, reported with wait status `status` and `info`)
    /// and wakes its tracer's threads blocked in `wait`, so they can see it.
    fn ptrace_stop(
        &mut self,
        tid: i32,
        at: PtraceHeld,
        status: i32,
        info: [u8; SIGINFO_SIZE],
    ) -> Result<()> {
        tracing::debug!(tid, ?at, status, "emulated ptrace stop");
        self.writer.push(Event::Ptrace(PtraceEvent {
            tid,
            action: PtraceAction::Stop(at),
        }))?;
        let t = self.task(tid)?;
        t.state = State::Ptraced(Held { at, resume: None });
        t.boundary = None;
        if self.current == Some(tid) {
            self.current = None;
        }
        let rel = self
            .ptrace
            .get_mut(tid)
            .context("a stop of an untraced task")?;
        rel.stop = Some(Report {
            status,
            siginfo: info,
            reported: false,
        });
        let tracer = rel.tracer;
        let woken = self.send_sigchld(tracer, tid, status);
        self.wake_waiters(tracer, woken);
        Ok(())
    }

    /// Right after an event of `tid`, before it runs on: whether an emulated stop comes here
    /// (the exit of a syscall under `PTRACE_SYSCALL`, an `execve`); it is then held.
    pub(super) fn ptrace_stops_after_event(&mut self, tid: i32) -> Result<bool> {
        let Some(rel) = self.ptrace.get_mut(tid) else {
            return Ok(false);
        };
        let status = if std::mem::take(&mut rel.start_pending) {
            if rel.seized {
                emu::event_status(PTRACE_EVENT_STOP)
            } else {
                emu::stopped_status(libc::SIGSTOP)
            }
        } else if std::mem::take(&mut rel.exec_pending) {
            if rel.has(libc::PTRACE_O_TRACEEXEC) {
                emu::event_status(libc::PTRACE_EVENT_EXEC)
            } else {
                // A tracee without PTRACE_O_TRACEEXEC gets a SIGTRAP after execve.
                emu::stopped_status(libc::SIGTRAP)
            }
        } else if let Some(child) = rel.vfork_done.take() {
            rel.event_msg = child as u64;
            emu::event_status(libc::PTRACE_EVENT_VFORK_DONE)
        } else if std::mem::take(&mut rel.in_syscall) && rel.mode == Mode::Syscall {
            rel.syscall_status()
        } else {
            return Ok(false);
        };
        self.ptrace_stop(
            tid,
            PtraceHeld::AfterEvent,
            status,
            emu::trap_siginfo(status),
        )?;
        Ok(true)
    }

    /// The held task `tid`, resumed by its tracer, gets the CPU: writes its resumption and
    /// lets it run on as asked.
    pub(super) fn ptrace_resume(&mut self, tid: i32, held: Held) -> Result<()> {
        let (sig, mode) = held
            .resume
            .context("resuming a task its tracer did not resume")?;
        let mut info = None;
        if let Some(rel) = self.ptrace.get_mut(tid) {
            rel.mode = mode;
            info = rel.stop.take().map(|s| s.siginfo);
            rel.in_syscall |= held.at == PtraceHeld::SyscallEntry && rel.group_stop.is_none();
        }
        let step = mode == Mode::Step;
        self.writer.push(Event::Ptrace(PtraceEvent {
            tid,
            action: PtraceAction::Resume { sig, step },
        }))?;
        self.current = Some(tid);
        match self.ptrace_run_on(tid, held.at, sig, step, info) {
            Err(e) if is_gone(&e) => {
                // Killed while held (its tracer's PTRACE_KILL or kill): its death comes next.
                tracing::debug!(tid, "a held task is gone: {e:#}");
                self.task(tid)?.state = State::Exiting;
                Ok(())
            }
            other => other,
        }
    }

    /// The held task `tid` runs on from `at` as its tracer asked (signal `sig`, one step).
    fn ptrace_run_on(
        &mut self,
        tid: i32,
        at: PtraceHeld,
        sig: i32,
        step: bool,
        info: Option<[u8; SIGINFO_SIZE]>,
    ) -> Result<()> {
        let group_stop = self.ptrace.get_mut(tid).and_then(|r| r.group_stop.take());
        if let Some(restarting) = group_stop {
            // Resumed from its group-stop: it runs on despite it, as in the kernel.
            return self.continue_stopped(tid, restarting);
        }
        match at {
            PtraceHeld::SyscallEntry => {
                self.task(tid)?.state = State::Running;
                self.on_syscall_entry(tid)
            }
            PtraceHeld::Signal(stopped) => {
                if sig != 0 {
                    self.stop_signal_delivered(tid, sig);
                }
                let t = self.task(tid)?;
                t.state = State::Running;
                t.boundary = Some(t.tracee.regs()?);
                if sig != 0 && sig == stopped {
                    if let Some(info) = info {
                        t.tracee.set_siginfo(&info)?;
                    }
                }
                if step {
                    t.tracee.step(sig)
                } else {
                    t.tracee.cont(sig)
                }
            }
            PtraceHeld::CloneEvent => {
                let entry = self
                    .ptrace
                    .get_mut(tid)
                    .and_then(|r| r.clone_entry.take())
                    .context("a task held at a clone event without its syscall")?;
                self.current = None;
                let t = self.task(tid)?;
                t.state = State::InSyscall(entry);
                t.tracee.cont_syscall(0)
            }
            PtraceHeld::SysemuEntry => {
                // Skipped: the kernel returns to user code with the registers as they are.
                let t = self.task(tid)?;
                let mut r = t.tracee.regs()?;
                r.orig_rax = u64::MAX;
                t.tracee.set_regs(&r)?;
                if mode_is_syscall(self.ptrace.get(tid).map(|r| r.mode)) {
                    // PTRACE_SYSCALL from there: the (skipped) syscall's exit stop comes next.
                    let status = self.ptrace.get(tid).map_or(0, |r| r.syscall_status());
                    return self.ptrace_stop(
                        tid,
                        PtraceHeld::AfterEvent,
                        status,
                        emu::trap_siginfo(status),
                    );
                }
                self.run_on(tid, r, step)
            }
            PtraceHeld::AfterEvent => {
                if self.ptrace_stops_after_event(tid)? {
                    return Ok(());
                }
                let r = self.task(tid)?.tracee.regs()?;
                self.run_on(tid, r, step)
            }
        }
    }

    /// At the clone event of `tid` (its syscall `entry`, new task `child`, clone `flags`):
    /// if its tracer asked for this event (`PTRACE_O_TRACECLONE`, `TRACEFORK`, `TRACEVFORK`),
    /// the new task is traced too and `tid` is held at the event (`None`); else `entry` back.
    pub(super) fn ptrace_on_clone(
        &mut self,
        tid: i32,
        child: i32,
        flags: u64,
        entry: Box<Entry>,
    ) -> Result<Option<Box<Entry>>> {
        let nr = entry.ev.nr;
        let vfork = nr == libc::SYS_vfork as u64 || flags & libc::CLONE_VFORK as u64 != 0;
        let Some(rel) = self.ptrace.get_mut(tid) else {
            return Ok(Some(entry));
        };
        if vfork && rel.has(libc::PTRACE_O_TRACEVFORKDONE) {
            rel.vfork_done = Some(child);
        }
        let (event, option) = if vfork {
            (libc::PTRACE_EVENT_VFORK, libc::PTRACE_O_TRACEVFORK)
        } else if nr == libc::SYS_fork as u64 || flags & 0xff == libc::SIGCHLD as u64 {
            (libc::PTRACE_EVENT_FORK, libc::PTRACE_O_TRACEFORK)
        } else {
            (libc::PTRACE_EVENT_CLONE, libc::PTRACE_O_TRACECLONE)
        };
        if !rel.has(option) || flags & libc::CLONE_UNTRACED as u64 != 0 {
            return Ok(Some(entry));
        }
        let mut traced = Relation::new(rel.tracer, rel.options);
        traced.seized = rel.seized;
        traced.start_pending = true;
        let thread = flags & libc::CLONE_THREAD as u64 != 0;
        traced.real_parent = (!thread).then(|| self.tasks.get(&tid).map_or(tid, |t| t.pid));
        if self.tasks.contains_key(&child) {
            self.ptrace.insert(child, traced);
        }
        let rel = self.ptrace.get_mut(tid).context("a traced parent")?;
        rel.event_msg = child as u64;
        rel.clone_entry = Some(entry);
        let status = emu::event_status(event);
        self.ptrace_stop(
            tid,
            PtraceHeld::CloneEvent,
            status,
            emu::trap_siginfo(status),
        )?;
        Ok(None)
    }

    /// Task `tid` of process `pid` died: its relation ends, and if its process has no task
    /// left, its tracees are detached (a held one runs on).
    pub(super) fn ptrace_on_death(&mut self, tid: i32, pid: i32, status: ExitStatus) -> Result<()> {
        if let Some(rel) = self.ptrace.remove(tid) {
            let alive = self.tasks.values().any(|t| t.pid == rel.tracer);
            if rel.real_parent != Some(rel.tracer) && alive {
                // The kernel tells only its parent: the recorder tells its tracer.
                self.ptrace.zombies.push(emu::Zombie {
                    tracer: rel.tracer,
                    tid,
                    pid,
                    status,
                });
                let uid = rel_uid();
                let woken = self.queue_sigchld(rel.tracer, emu::end_siginfo(tid, uid, status));
                self.wake_waiters(rel.tracer, woken);
            }
        }
        self.ptrace
            .zombies
            .retain(|z| z.tracer != pid || self.tasks.values().any(|t| t.pid == pid));
        if self.tasks.values().any(|t| t.pid == pid) {
            return Ok(());
        }
        for tracee in self.ptrace.tracees_of(pid) {
            self.ptrace.remove(tracee);
            let held = self
                .tasks
                .get(&tracee)
                .is_some_and(|t| matches!(t.state, State::Ptraced(Held { resume: None, .. })));
            if held {
                self.let_go(tracee, 0, Mode::Cont)?;
            }
        }
        Ok(())
    }
}
