//! The replay's tasks, named by their recorded ids, and waiting for one of them while keeping
//! what the others report for later.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::unistd::Pid;
use trace_format::{ExitStatus, Tid};
use tracee::{Regs, Stop, Tracee};

/// Where a replayed task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RState {
    /// Created by a clone; not seen stopped yet.
    Unstarted,
    /// Stopped at this stop, which belongs to the task's next event.
    Parked(Stop),
    /// Resumed after its event, to run up to its next one (stopped while a debugger has
    /// halted the replay).
    Resumed,
    /// Resumed to the exit of a syscall that really runs in replay (a clone).
    InSyscall,
    /// Stopped at the point in its user code where its next event (a preemption, a signal
    /// delivered mid-code) happened in the recording, found again (see `crate::point`).
    AtPoint,
    /// Resumed into its end (`exit`, `exit_group`, a fatal signal); the end is not collected.
    Exiting,
    /// Ended.
    Dead(ExitStatus),
}

/// The last trap (exception) a task took in the recording, which the kernel copies into every
/// signal frame it writes afterwards (`sigcontext.trapno` and `err`), in a form the replay can
/// take again when the debugger's traps took its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastTrap {
    /// A general-protection fault with error code 0: a trapped `rdtsc`. Every program starts
    /// with it: the tracer thread that forks it traps its own `rdtsc`s, and the fork inherits
    /// its last trap.
    Tsc,
    /// A debug exception with error code 0: the last trap settled at a point (see
    /// `tracee::state::settle_trap`).
    Debug,
    /// A fault of the program's (a page fault, ...), which the replay does not take again.
    Fault,
}

/// One task of the replay.
pub struct Task {
    /// ptrace handle (the replay's own task id).
    pub tracee: Tracee,
    /// The task's process id in replay.
    pub pid: Pid,
    /// The task's process id in the recording.
    pub rpid: Tid,
    /// Where it is.
    pub state: RState,
    /// A signal the replayer sent to reproduce the task's next event, not yet seen.
    pub injected: Option<i32>,
    /// The signal of the next event was already sent (see `sigmask`).
    pub signal_sent: bool,
    /// Registers at the entry of the clone whose result is still to come.
    pub clone_entry: Option<Regs>,
    /// The debugger's hardware breakpoints last written into this task's debug registers
    /// (their generation; 0 for none).
    pub hw_generation: u64,
    /// The task is a forked copy of the debugged process's memory, with these breakpoints
    /// (address, the byte their `int3` replaced) in it, to take out before it runs.
    pub inherits_breakpoints: Option<std::collections::BTreeMap<u64, u8>>,
    /// The debugger single-stepped the task since its last syscall entry.
    pub single_stepped: bool,
    /// The task's last trap in the recording.
    pub last_trap: LastTrap,
    /// The debugger's breakpoints or single steps trapped the task since `last_trap`: its
    /// signal frames would tell them instead.
    pub debugger_trapped: bool,
    /// A signal interrupts the task in `rt_sigsuspend` with the temporary mask of its
    /// syscall (see `crate::sigmask`).
    pub temporary_mask: bool,
    /// Parked at a group-stop (job control): it goes on at its next event (see
    /// `session::group_stop`).
    pub group_stopped: bool,
    /// Its slot of the in-process library (its `gs` base), when its process has it.
    pub slot: Option<u64>,
    /// The `Buffered` events placed in its slot and not checked yet: (event index, where its
    /// records end in the slot's buffer).
    pub placed: Vec<(u64, u64)>,
    /// The ranges the placed records' `mmap`s map (at their recorded addresses), which a
    /// locator's scratch page must leave free (see `point::Room::reserved`).
    pub reserved: Vec<(u64, u64)>,
    /// The task whose address space it runs in until it execs: its parent, for a child made
    /// with `CLONE_VM` but not `CLONE_THREAD` (`vfork`, `posix_spawn`).
    pub borrows_vm_of: Option<Tid>,
    /// The address the kernel clears (and wakes) when the task ends: its clone's
    /// `CLONE_CHILD_CLEARTID` word or its `set_tid_address` (a checkpoint's copy of the task
    /// needs it set again, as no fork or clone of the replay's passes it on).
    pub clear_tid_at: Option<u64>,
}

/// All tasks, and the stops reported by tasks other than the one waited for.
#[derive(Default)]
pub struct Tasks {
    by_tid: HashMap<Tid, Task>,
    /// Replay task id → recorded task id.
    recorded: HashMap<i32, Tid>,
    stash: HashMap<i32, VecDeque<Stop>>,
}

impl Task {
    /// This task's state for its copy in a forked copy of its process, traced as `tracee` in
    /// replay process `pid` (its debug registers are to be written again: a fork does not
    /// copy them).
    fn copy_as(&self, tracee: Tracee, pid: Pid) -> Task {
        Task {
            tracee,
            pid,
            rpid: self.rpid,
            state: self.state,
            injected: self.injected,
            signal_sent: self.signal_sent,
            clone_entry: self.clone_entry,
            hw_generation: 0,
            inherits_breakpoints: self.inherits_breakpoints.clone(),
            slot: self.slot,
            placed: self.placed.clone(),
            reserved: self.reserved.clone(),
            single_stepped: self.single_stepped,
            last_trap: self.last_trap,
            debugger_trapped: self.debugger_trapped,
            temporary_mask: self.temporary_mask,
            group_stopped: self.group_stopped,
            borrows_vm_of: self.borrows_vm_of,
            clear_tid_at: self.clear_tid_at,
        }
    }
}

impl Tasks {
    /// The tasks of a forked copy of the replay: `copies` holds, for each task (recorded id),
    /// its copy's handle and process id, which it takes out of `copies`. `None` unless every
    /// task has one and no stop waits.
    pub fn copy_with(&self, copies: &mut HashMap<Tid, (Tracee, Pid)>) -> Option<Tasks> {
        if self.stops_waiting() || copies.len() != self.by_tid.len() {
            return None;
        }
        let mut out = Tasks::default();
        for (&tid, task) in &self.by_tid {
            let (tracee, pid) = copies.remove(&tid)?;
            out.recorded.insert(tracee.pid().as_raw(), tid);
            out.by_tid.insert(tid, task.copy_as(tracee, pid));
        }
        Some(out)
    }

    /// Whether stops reported by tasks other than the one waited for wait to be collected.
    pub fn stops_waiting(&self) -> bool {
        self.stash.values().any(|s| !s.is_empty())
    }

    /// Whether a stop of task `tid` (recorded id) waits to be collected.
    pub fn stop_waiting(&self, tid: Tid) -> bool {
        self.by_tid.get(&tid).is_some_and(|t| {
            self.stash
                .get(&t.tracee.pid().as_raw())
                .is_some_and(|s| !s.is_empty())
        })
    }

    /// All tasks (recorded id, task).
    pub fn all(&self) -> impl Iterator<Item = (Tid, &Task)> {
        self.by_tid.iter().map(|(&tid, t)| (tid, t))
    }

    /// Adds task `tid` of recorded process `rpid`, traced as `tracee` in replay process `pid`.
    pub fn add(&mut self, tid: Tid, rpid: Tid, tracee: Tracee, pid: Pid, state: RState) {
        self.recorded.insert(tracee.pid().as_raw(), tid);
        self.by_tid.insert(
            tid,
            Task {
                tracee,
                pid,
                rpid,
                state,
                injected: None,
                signal_sent: false,
                clone_entry: None,
                hw_generation: 0,
                inherits_breakpoints: None,
                slot: None,
                placed: Vec::new(),
                reserved: Vec::new(),
                single_stepped: false,
                last_trap: LastTrap::Tsc,
                debugger_trapped: false,
                temporary_mask: false,
                group_stopped: false,
                borrows_vm_of: None,
                clear_tid_at: None,
            },
        );
    }

    /// The task the recording called `tid`.
    pub fn get(&mut self, tid: Tid) -> Option<&mut Task> {
        self.by_tid.get_mut(&tid)
    }

    /// Task `tid`, to look at.
    pub fn peek(&self, tid: Tid) -> Option<&Task> {
        self.by_tid.get(&tid)
    }

    /// The task the recording called `tid`, to look at.
    pub fn by_tid(&self, tid: Tid) -> Option<&Task> {
        self.by_tid.get(&tid)
    }

    /// The tasks of recorded process `rpid` that a debugger can look at: started, and not
    /// ended or on their way out.
    pub fn in_process(&self, rpid: Tid) -> impl Iterator<Item = (Tid, &Task)> {
        self.by_tid.iter().filter_map(move |(&id, t)| {
            let visible = matches!(
                t.state,
                RState::Parked(_) | RState::Resumed | RState::InSyscall | RState::AtPoint
            );
            (t.rpid == rpid && visible).then_some((id, t))
        })
    }

    /// Forgets an ended task.
    pub fn remove(&mut self, tid: Tid) {
        self.take(tid);
    }

    /// Takes task `tid` out, to hand it to another tracer thread (see `crate::parallel`).
    pub fn take(&mut self, tid: Tid) -> Option<Task> {
        let t = self.by_tid.remove(&tid)?;
        self.recorded.remove(&t.tracee.pid().as_raw());
        self.stash.remove(&t.tracee.pid().as_raw());
        Some(t)
    }

    /// Puts in task `tid`, taken out of another thread's tasks by [`Tasks::take`].
    pub fn insert(&mut self, tid: Tid, task: Task) {
        self.recorded.insert(task.tracee.pid().as_raw(), tid);
        self.by_tid.insert(tid, task);
    }

    /// The next stop of the replay task `real`, blocking; `on_idle` runs whenever a signal
    /// interrupts the wait (see `tracee::alarm`).
    pub fn wait_real(
        &mut self,
        real: Pid,
        on_idle: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Stop> {
        if let Some(s) = self
            .stash
            .get_mut(&real.as_raw())
            .and_then(|q| q.pop_front())
        {
            return Ok(s);
        }
        loop {
            let (pid, stop) = tracee::stop::wait_any(on_idle)?;
            if pid == real {
                return Ok(stop);
            }
            self.stash.entry(pid.as_raw()).or_default().push_back(stop);
        }
    }

    /// The next stop of replay task `a` or `b` (whichever comes first), blocking.
    pub fn wait_either(&mut self, a: Pid, b: Pid) -> Result<(Pid, Stop)> {
        for real in [a, b] {
            if let Some(s) = self
                .stash
                .get_mut(&real.as_raw())
                .and_then(|q| q.pop_front())
            {
                return Ok((real, s));
            }
        }
        loop {
            let (pid, stop) = tracee::stop::wait_any(&mut || Ok(()))?;
            if pid == a || pid == b {
                return Ok((pid, stop));
            }
            self.stash.entry(pid.as_raw()).or_default().push_back(stop);
        }
    }

    /// After thread `former` of recorded process `rpid` ran a new program (see
    /// `recorder/src/recording/thread_exec.rs`): the kernel gave it its process's id, so it is
    /// task `rpid` from now on, traced by the process id; the main thread's task is gone.
    pub fn exec_by_thread(&mut self, former: Tid, rpid: Tid) -> Result<()> {
        let mut task = self
            .by_tid
            .remove(&former)
            .with_context(|| unknown(former))?;
        self.recorded.remove(&task.tracee.pid().as_raw());
        self.stash.remove(&task.tracee.pid().as_raw());
        if let Some(old) = self.by_tid.remove(&rpid) {
            self.recorded.remove(&old.tracee.pid().as_raw());
        }
        task.tracee = Tracee::attach_traced(task.pid)
            .with_context(|| format!("taking over process {} after its exec", task.pid))?;
        self.recorded.insert(task.pid.as_raw(), rpid);
        self.by_tid.insert(rpid, task);
        Ok(())
    }

    /// Waits up to `limit` for the replay task `real` to end; `None` if it did not.
    pub fn wait_end(&mut self, real: Pid, limit: Duration) -> Result<Option<ExitStatus>> {
        let mut timed_out = false;
        tracee::alarm::start(limit, Duration::ZERO);
        let result = self.wait_end_until_alarm(real, &mut timed_out);
        tracee::alarm::stop();
        result
    }

    fn wait_end_until_alarm(
        &mut self,
        real: Pid,
        timed_out: &mut bool,
    ) -> Result<Option<ExitStatus>> {
        loop {
            while let Some(s) = self
                .stash
                .get_mut(&real.as_raw())
                .and_then(|q| q.pop_front())
            {
                match s {
                    Stop::Exited(c) => return Ok(Some(ExitStatus::Exited(c))),
                    Stop::Killed(s) => return Ok(Some(ExitStatus::Signaled(s))),
                    // On its way out (e.g. a stop just before a group exit killed it).
                    _ => {
                        let _ = nix::sys::ptrace::cont(real, None);
                    }
                }
            }
            if *timed_out {
                return Ok(None);
            }
            let waited = tracee::stop::wait_any(&mut || {
                *timed_out = true;
                anyhow::bail!("no end within the grace period")
            });
            match waited {
                Ok((pid, stop)) => self.stash.entry(pid.as_raw()).or_default().push_back(stop),
                Err(_) if *timed_out => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills every task (after an error or at the end).
    pub fn kill_all(&mut self) {
        Tracee::kill_and_reap_all(self.by_tid.values().map(|t| &t.tracee));
        self.by_tid.clear();
    }
}

/// The recorded task `tid` has no task in the replay.
pub fn unknown(tid: Tid) -> anyhow::Error {
    anyhow::anyhow!("the trace names task {tid}, which the replay never created")
}

/// Looks up `tid` or says it does not exist.
pub fn task(tasks: &mut Tasks, tid: Tid) -> Result<&mut Task> {
    tasks.get(tid).with_context(|| unknown(tid))
}
