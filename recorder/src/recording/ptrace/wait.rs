//! A tracer's `wait4`/`waitid` of its tracees' emulated stops and ends, and the `SIGCHLD`
//! that tells it of them (see the parent module).

use anyhow::{Context, Result};
use nix::unistd::Pid;
use trace_format::SyscallEvent;
use tracee::tracee::{signo_code, SIGINFO_SIZE};
use tracee::Regs;

use super::*;
use crate::ptrace_emu::{self as emu, Selector};
use crate::recording::Session;
use crate::task::State;

/// What a tracer's `wait` reports.
enum Found {
    /// The emulated stop of this tracee.
    Stop(i32),
    /// The end of the tracee `zombies[i]`.
    End(usize),
}

/// Which tasks a `wait4`/`waitid` selects (`None` for other syscalls).
fn wait_selector(nr: u64, args: &[u64; 6]) -> Option<Selector> {
    if nr == libc::SYS_wait4 as u64 {
        Some(Selector::of_wait4(args[0]))
    } else if nr == libc::SYS_waitid as u64 {
        Some(Selector::of_waitid(args[0], args[1]))
    } else {
        None
    }
}

/// Whether thread `tid` blocks `SIGCHLD` (`SigBlk` of `/proc/TID/status`; true if unknown).
fn sigchld_blocked(tid: i32) -> bool {
    tracee::tracee::signal_set(nix::unistd::Pid::from_raw(tid), "SigBlk")
        .map_or(true, |mask| mask & (1 << (libc::SIGCHLD - 1)) != 0)
}

impl Session {
    /// The emulated stop or end of a tracee of process `pid` that a `wait4`/`waitid` with
    /// these arguments would report now, if any.
    fn reportable(&self, pid: i32, nr: u64, args: &[u64; 6]) -> Option<Found> {
        let selector = wait_selector(nr, args)?;
        if let Some(i) = self
            .ptrace
            .zombies
            .iter()
            .position(|z| z.tracer == pid && selector.selects(z.tid, z.pid))
        {
            return Some(Found::End(i));
        }
        self.ptrace
            .tracees_of(pid)
            .into_iter()
            .find(|&t| {
                let stopped = self
                    .ptrace
                    .get(t)
                    .and_then(|r| r.stop.as_ref())
                    .is_some_and(|s| !s.reported);
                stopped && selector.selects(t, self.tasks.get(&t).map_or(t, |k| k.pid))
            })
            .map(Found::Stop)
    }

    /// Whether a `wait` of process `pid` with these arguments can only be answered by tracees
    /// that are not its children (the kernel would fail it with `ECHILD`, or block on other
    /// children): the recorder answers it when one of them stops or ends.
    pub(in crate::recording) fn waits_for_non_children(
        &self,
        pid: i32,
        nr: u64,
        args: &[u64; 6],
    ) -> bool {
        let Some(selector) = wait_selector(nr, args) else {
            return false;
        };
        let tracees = self.ptrace.tracees_of(pid);
        let foreign = |t: &i32| {
            self.ptrace
                .get(*t)
                .is_some_and(|r| r.real_parent != Some(pid))
        };
        match selector {
            Selector::Id(id) => tracees.iter().any(|t| *t == id && foreign(t)),
            Selector::Any => {
                tracees.iter().any(foreign)
                    && !self
                        .tasks
                        .values()
                        .any(|t| t.is_leader() && parent_of(t.tid()).ok() == Some(pid))
            }
            Selector::Unknown => false,
        }
    }

    /// Whether the restarted `wait` of `tid` (its event so far `ev`) now has an emulated stop
    /// to report.
    pub(in crate::recording) fn ptrace_wait_served(
        &self,
        tid: i32,
        ev: &SyscallEvent,
    ) -> Result<bool> {
        if self.ptrace.is_empty() && self.ptrace.zombies.is_empty() {
            return Ok(false);
        }
        let pid = self.tasks.get(&tid).map_or(tid, |t| t.pid);
        Ok(self.reportable(pid, ev.nr, &ev.args).is_some())
    }

    /// Serves a `wait4`/`waitid` of `tid` that an emulated stop answers, if one does.
    pub(super) fn ptrace_wait(&mut self, tid: i32, entry: &Regs) -> Result<Option<Served>> {
        let (nr, args) = (entry.orig_rax, regs::syscall_args(entry));
        if self.ptrace.is_empty() && self.ptrace.zombies.is_empty() {
            return Ok(None);
        }
        let pid = self.task(tid)?.pid;
        self.notice_sigcont(pid);
        let waitid = nr == libc::SYS_waitid as u64;
        let options = if waitid { args[3] } else { args[2] };
        let keep = waitid && options & WNOWAIT != 0;
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let (tracee, status, info) = match self.reportable(pid, nr, &args) {
            Some(Found::Stop(tracee)) => {
                let rel = self.ptrace.get_mut(tracee).context("a reportable tracee")?;
                let report = rel.stop.as_mut().context("a reportable stop")?;
                report.reported |= !keep;
                let status = report.status;
                (tracee, status, emu::waitid_siginfo(tracee, uid, status))
            }
            Some(Found::End(i)) => {
                let z = self.ptrace.zombies[i];
                if !keep {
                    self.ptrace.zombies.remove(i);
                }
                let status = emu::end_status(z.status);
                (z.tid, status, emu::end_siginfo(z.tid, uid, z.status))
            }
            None if self.waits_for_non_children(pid, nr, &args) => {
                if options & libc::WNOHANG as u64 != 0 {
                    return Ok(Some(Served::ok(0)));
                }
                tracing::debug!(tid, "a tracer waits for tracees that are not its children");
                self.task(tid)?.state = State::WaitsForTracee;
                self.current = None;
                return Ok(Some(Served::parked()));
            }
            None => return Ok(None),
        };
        let mut served = Served::ok(if waitid { 0 } else { tracee as i64 });
        let (info_at, rusage_at) = if waitid {
            (args[2], args[4])
        } else {
            (args[1], args[3])
        };
        if info_at != 0 {
            let bytes = if waitid {
                info.to_vec()
            } else {
                status.to_le_bytes().to_vec()
            };
            let a = self.answer(tid, served.result, info_at, bytes)?;
            served.writes.extend(a.writes);
        }
        if rusage_at != 0 {
            let a = self.answer(tid, served.result, rusage_at, vec![0u8; RUSAGE_SIZE])?;
            served.writes.extend(a.writes);
        }
        tracing::debug!(tid, tracee, status, "emulated wait");
        Ok(Some(served))
    }

    /// Sends the tracer process `tracer` the `SIGCHLD` of its tracee `tid`'s stop (status
    /// `status`). The recorder may not send a kernel `si_code` (`CLD_TRAPPED`) itself, so it
    /// sends `SI_QUEUE` and gives the signal its real `siginfo_t` at the tracer's stop.
    pub(in crate::recording) fn send_sigchld(
        &mut self,
        tracer: i32,
        tid: i32,
        status: i32,
    ) -> Option<i32> {
        self.queue_sigchld(tracer, emu::waitid_siginfo(tid, rel_uid(), status))
    }

    /// Sends process `tracer` a `SIGCHLD` that gets `real` as its `siginfo_t` at its stop.
    /// Returns the thread it went to if that thread does not block it: a `wait` of that thread
    /// is interrupted by it (and restarted as a new entry, which sees the emulated stop).
    pub(in crate::recording) fn queue_sigchld(
        &mut self,
        tracer: i32,
        real: [u8; SIGINFO_SIZE],
    ) -> Option<i32> {
        let uid = rel_uid();
        self.ptrace.push_sigchld(tracer, real);
        let mut info = [0u8; SIGINFO_SIZE];
        info[0..4].copy_from_slice(&libc::SIGCHLD.to_le_bytes());
        info[8..12].copy_from_slice(&libc::SI_QUEUE.to_le_bytes());
        info[16..20].copy_from_slice(&self.me.to_le_bytes());
        info[20..24].copy_from_slice(&uid.to_le_bytes());
        let to = self.sigchld_thread(tracer);
        // SAFETY: rt_tgsigqueueinfo reads the 128-byte siginfo_t it is given, on our stack.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                tracer,
                to,
                libc::SIGCHLD,
                info.as_ptr(),
            )
        };
        if r < 0 {
            tracing::debug!(tracer, "the tracer's SIGCHLD could not be sent");
            self.ptrace.pop_sigchld(tracer);
            return None;
        }
        (!sigchld_blocked(to)).then_some(to)
    }

    /// The thread of process `tracer` that gets its tracees' `SIGCHLD`: one waiting for a
    /// child, else one not blocked in a syscall, else the main thread. The kernel sends it to
    /// the process, and may then interrupt any thread's blocking syscall with it; a thread of
    /// the recorder's choosing keeps that choice out of the recording.
    pub(in crate::recording) fn sigchld_thread(&self, tracer: i32) -> i32 {
        let mut threads: Vec<&crate::task::Task> =
            self.tasks.values().filter(|t| t.pid == tracer).collect();
        threads.sort_by_key(|t| t.tid());
        let waiting = |t: &&crate::task::Task| match &t.state {
            State::InSyscall(e) => {
                e.ev.nr == libc::SYS_wait4 as u64 || e.ev.nr == libc::SYS_waitid as u64
            }
            State::WaitsForTracee | State::AtEntry => true,
            _ => false,
        };
        let free =
            |t: &&crate::task::Task| !matches!(t.state, State::InSyscall(_) | State::Restarting(_));
        threads
            .iter()
            .copied()
            .find(waiting)
            .or_else(|| threads.iter().copied().find(free))
            .map_or(tracer, |t| t.tid())
    }

    /// At a `SIGCHLD` stop of `tid` with `info`: if it is one the recorder sent for an
    /// emulated stop, the `siginfo_t` the kernel would have given it, which the task gets.
    pub(in crate::recording) fn ptrace_sigchld_info(
        &mut self,
        tid: i32,
        info: &[u8; SIGINFO_SIZE],
    ) -> Result<Option<[u8; SIGINFO_SIZE]>> {
        let (_, code) = signo_code(info);
        let sender = i32::from_le_bytes([info[16], info[17], info[18], info[19]]);
        if code != libc::SI_QUEUE || sender != self.me {
            return Ok(None);
        }
        let pid = self.task(tid)?.pid;
        let Some(real) = self.ptrace.pop_sigchld(pid) else {
            return Ok(None);
        };
        self.task(tid)?.tracee.set_siginfo(&real)?;
        Ok(Some(real))
    }

    /// Interrupts the threads of process `tracer` blocked in `wait4`/`waitid` in the kernel
    /// (with the preemption `SIGSTOP`): the kernel restarts the call, and the restart is
    /// answered by the emulated stop (see `on_restart_stop`).
    /// `woken`: a thread the tracee's `SIGCHLD` interrupts anyway.
    pub(in crate::recording) fn wake_waiters(&mut self, tracer: i32, woken: Option<i32>) {
        for t in self.tasks.values_mut() {
            if Some(t.tid()) == woken && matches!(t.state, State::InSyscall(_)) {
                continue;
            }
            if t.pid == tracer && matches!(t.state, State::WaitsForTracee) {
                t.state = State::AtEntry;
                self.ready.push_back(t.tid());
                continue;
            }
            let State::InSyscall(e) = &t.state else {
                continue;
            };
            let waits = e.ev.nr == libc::SYS_wait4 as u64 || e.ev.nr == libc::SYS_waitid as u64;
            if t.pid != tracer || !waits || t.stop_sent {
                continue;
            }
            match t.tracee.tgkill(Pid::from_raw(t.pid), libc::SIGSTOP) {
                Ok(()) => t.stop_sent = true,
                Err(e) => tracing::debug!(tid = t.tid(), "no wake-up: {e:#}"),
            }
        }
    }
}
