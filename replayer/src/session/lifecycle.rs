//! Events that change the task tree or the program: exec, clone and a new task's start, and
//! a task's end.

use std::rc::Rc;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use trace_format::{CloneEvent, ExitStatus, StartEvent, SyscallEvent, Tid};
use tracee::{Stop, Tracee};

use crate::debug::{self, Halt};
use crate::exec;
use crate::tasks::{self, RState};

use super::{errno_text, Session, END_GRACE};

/// How many times a clone interrupted by signals is made again before the replay gives up.
const MAX_CLONE_RESTARTS: usize = 16;

impl Session {
    /// At the exec stop of `tid`: makes the new image the recorded one and runs to the end of
    /// `execve`.
    pub(super) fn finish_exec(&mut self, tid: Tid, ev: &trace_format::ExecEvent) -> Result<()> {
        let index = self.index;
        let t = self.task(tid)?;
        let rpid = t.rpid;
        // (An exec releases the old memory, clearing the task's clear-child-tid word.)
        t.clear_tid_at = None;
        t.tracee.reopen_mem()?;
        exec::restore(&t.tracee, ev, index)?;
        t.tracee.cont_syscall(0)?;
        match self.wait_task(tid)? {
            Stop::SyscallStop => {}
            other => bail!("unexpected stop after exec: {other:?}"),
        }
        // At the exec's exit stop, a signal pending (a child's SIGCHLD) would stop the task
        // before each syscall injected here.
        self.with_signals_aside(tid, |s| {
            s.load_library(tid, ev)?;
            s.segv.exec(rpid);
            s.sites.exec(rpid);
            let t = &tasks::task(&mut s.tasks, tid)?.tracee;
            s.segv_blocked.after_call(tid, t, None)?;
            exec::set_comm(s.tracee(tid)?, ev)
        })?;
        if let Some(d) = self.debug.as_mut().filter(|d| d.process == rpid) {
            d.cmdline = ev.argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
        }
        if self.debug.is_some() {
            let reader = self.reader.clone();
            for f in ev.mappings.iter().filter_map(|m| m.file.as_ref()) {
                self.emu.note_name(&reader.file_path(f)?, &f.path);
            }
            self.emu
                .note_name(&reader.file_path(&ev.exe)?, &ev.exe.path);
        }
        self.resume(tid, 0)
    }

    /// A successful `execve`: runs it for real, but on the trace's copy of the executable the
    /// recording ran.
    pub(super) fn exec(&mut self, ev: &trace_format::ExecEvent) -> Result<()> {
        let tid = ev.tid;
        let reader = Rc::clone(&self.reader);
        let stop = self.parked(tid)?;
        let t = self.tracee(tid)?;
        let mut r = t.regs()?;
        if stop != Stop::SeccompEntry || !exec::is_exec(r.orig_rax) {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(tid, format!("execve of {}", ev.exe.path), found));
        }
        let overwritten = exec::run_trace_copy(t, &mut r, &reader.file_path(&ev.exe)?)?;
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
                self.give_back_borrowed(tid, overwritten)?;
                self.note_exec(ev)?;
                if rpid != tid {
                    self.tasks.exec_by_thread(tid, rpid)?;
                    self.segv_blocked.forget(tid);
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

    /// After the exec of `tid`, a child that ran in its parent's address space (`vfork`): the
    /// bytes the replay wrote there to run the trace's copy of the program (`overwritten`:
    /// where, and what they were) go back to what they were, since the parent goes on with
    /// that memory, which the recording never changed.
    fn give_back_borrowed(&mut self, tid: Tid, overwritten: (u64, Vec<u8>)) -> Result<()> {
        let Some(owner) = self.task(tid)?.borrows_vm_of.take() else {
            return Ok(());
        };
        let Some(t) = self.tasks.by_tid(owner) else {
            return Ok(());
        };
        let (at, bytes) = overwritten;
        t.tracee.write_mem(at, &bytes).with_context(|| {
            format!("restoring the memory of task {owner} after its vfork child's exec")
        })
    }

    /// A clone, fork or vfork: runs it for real up to the moment the kernel made the new task,
    /// which then exists in the replay as the recorded task `e.child`.
    pub(super) fn clone_task(&mut self, e: &CloneEvent) -> Result<()> {
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
        let mut traced = r;
        if tracee::regs::strip_clone_untraced(&mut traced) {
            t.set_regs(&traced)?;
        }
        t.cont_syscall(0)?;
        let mut stop = self.wait_task(tid)?;
        // A signal the replay itself caused (a child's `SIGCHLD`, from another task's `Exit`
        // event handled while this one was stopped at its clone) makes the kernel refuse the
        // clone with a restart code: the signal is dropped at its delivery, as the replay drops
        // such signals, and the kernel makes the call again (a new seccomp stop first).
        for _ in 0..MAX_CLONE_RESTARTS {
            let restarting = match stop {
                Stop::SyscallStop => {
                    // Its exit with a restart code, or the entry of the call made again.
                    let t = self.tracee(tid)?;
                    let rax = t.regs()?.rax as i64;
                    (-516..=-512).contains(&rax) || t.at_syscall_entry()?
                }
                Stop::Signal(_) | Stop::SeccompEntry => true,
                _ => false,
            };
            if !restarting {
                break;
            }
            tracing::debug!(
                tid,
                ?stop,
                "a clone interrupted by a signal the replay caused"
            );
            self.tracee(tid)?.cont_syscall(0)?;
            stop = self.wait_task(tid)?;
        }
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
        // The debugger's breakpoints in the memory the child gets, as they are now (they
        // may be gone by the time it starts).
        let inherits = (e.flags & libc::CLONE_VM as u64 == 0 && self.debugged(tid))
            .then(|| self.debug.as_ref().map(|d| d.breakpoints.clone()))
            .flatten()
            .filter(|b| !b.is_empty());
        self.tasks
            .add(e.child, e.child_pid, child, child_pid, RState::Unstarted);
        self.inherit_lane(tid, e.child);
        if e.child_pid == e.child {
            self.segv.fork(e.parent_pid, e.child);
            self.sites.fork(e.parent_pid, e.child);
        }
        self.segv_blocked.clone_task(tid, e.child);
        let clear_tid_at = if e.flags & libc::CLONE_CHILD_CLEARTID as u64 == 0 {
            None
        } else if e.nr == libc::SYS_clone3 as u64 {
            // `struct clone_args`: `child_tid` is its third word.
            self.tracee(tid)?.read_u64(r.rdi.wrapping_add(16)).ok()
        } else {
            Some(r.r10)
        };
        if e.child_pid == e.child && self.debugged(tid) {
            if let Some(d) = self.debug.as_mut() {
                let vfork = e.flags & libc::CLONE_VFORK as u64 != 0;
                d.note_proc_event(Halt::Fork {
                    tid,
                    child: e.child,
                    vfork,
                });
                if vfork {
                    d.note_proc_event(Halt::VForkDone(tid));
                }
            }
        }
        let c = self.task(e.child)?;
        c.clear_tid_at = clear_tid_at.filter(|&a| a != 0);
        let shares_vm = e.flags & libc::CLONE_VM as u64 != 0 && e.child_pid == e.child;
        c.borrows_vm_of = shares_vm.then_some(tid);
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
    pub(super) fn finish_clone(&mut self, e: &SyscallEvent) -> Result<()> {
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
    pub(super) fn start(&mut self, e: &StartEvent) -> Result<()> {
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
        if let Some(inherited) = self.task(tid)?.inherits_breakpoints.take() {
            debug::restore_original_bytes(&self.task(tid)?.tracee, &inherited)?;
        }
        self.write_memory(tid, &e.writes, "clone")?;
        self.start_slot(tid, e.slot)?;
        self.resume(tid, 0)
    }

    /// The end of task `tid`: collects it and checks how it ended.
    pub(super) fn exit(&mut self, tid: Tid, expected: ExitStatus) -> Result<()> {
        let t = self.task(tid)?;
        let found = match t.state {
            RState::Dead(status) => status,
            RState::Parked(Stop::Signal(sig))
                if expected == ExitStatus::Signaled(sig)
                    && t.tracee.fault_ignored_as_ns_init(sig) =>
            {
                // A pid namespace init that faulted again instead of dying of its fault, as
                // the recorder's did: detached like it, it dies of it (see `tracee::nsinit`).
                t.tracee.detach(sig)?;
                expected
            }
            state => {
                let real = t.tracee.pid();
                if expected == ExitStatus::Signaled(libc::SIGKILL) {
                    // Killed from outside the task (another process, or outside the recording).
                    if matches!(state, RState::Parked(_) | RState::AtPoint) {
                        self.robust_futexes_die(tid)?;
                    }
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
        self.segv_blocked.forget(tid);
        if self.debug.as_ref().is_some_and(|d| d.process == tid) {
            self.halt(Halt::Exited(found));
        }
        Ok(())
    }
}
