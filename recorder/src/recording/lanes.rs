//! Processes recorded in parallel: a tracer thread per CPU, each a *lane* with its own tasks
//! and its own schedule (see the crate README, "Processes recorded in parallel").
//!
//! The first lane is the recorder's tracer thread, on the recording's CPU, with every task at
//! first. A process that has just executed a new program, alone in its fresh address space,
//! moves to the second lane (a thread pinned to another CPU) when that lane has no task: the
//! first lane parks it (`tracee::migrate`), the second adopts it, and from then on it and the
//! tasks it creates are traced by the second thread and run on its CPU. Each lane runs one of
//! its tasks at a time, as the whole recorder did before; the two lanes run at once.
//!
//! Both lanes handle their stops under one lock over the session, so the trace is still one
//! sequence of events, in the order the lanes handled them. The events of one lane's tasks
//! keep the order of a one-CPU recording; a task of the other lane runs its user code
//! meanwhile, which changes nothing it computes: no task of one lane shares memory with a task
//! of the other (a process moves with nothing shared: after `exec`, with no other thread, no
//! emulated ptrace in the recording), so a replay that runs each task from its event to its
//! next one, one task at a time, computes what the recording did.
//!
//! Each lane's schedule (its ready tasks, the task holding its CPU, its time slice and its
//! deferred ends: [`Sched`]) is the session's own fields while the lane's thread holds the
//! lock: the first lane's live there, and the second lane's thread swaps its own in and out
//! around its work.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use trace_format::{Event, ExitEvent, ExitStatus, LaneEvent};
use tracee::migrate::{adopt, park, Parked, ParkedAt};
use tracee::{Regs, Stop};

use super::Session;
use crate::session::set_ticks_blocked;
use crate::task::State;

/// The lane of the recorder's own tracer thread.
pub(crate) const FIRST: u8 = 0;
/// The lane of the thread on the other CPU.
pub(crate) const SECOND: u8 = 1;

/// A process moved to another lane: its task, parked, and the registers it goes on with
/// right after its event (`None`: moved at a syscall's entry, which it makes again).
pub(crate) struct Moved {
    tid: i32,
    parked: Parked,
    regs: Option<Regs>,
}

/// The links between the lanes.
pub(crate) struct Link {
    /// Where tasks moved to the second lane go (`None` once the first lane has ended).
    to_second: Option<Sender<Moved>>,
    /// The second lane's CPU.
    cpu: u32,
    /// Where tasks moved back to the first lane go.
    to_first: Sender<Moved>,
    /// The first lane's thread (woken with a `SIGALRM` when a task comes back).
    first_thread: libc::pid_t,
    /// The first lane's CPU.
    first_cpu: u32,
}

/// One lane's schedule: the session's fields of these names while the lane works.
#[derive(Default)]
pub(crate) struct Sched {
    ready: VecDeque<i32>,
    current: Option<i32>,
    early: HashMap<i32, Stop>,
    exits: Vec<ExitEvent>,
    stall: (Option<i32>, u64, u32),
    ticks: u32,
    kept_since: (Option<i32>, u64),
}

/// The session, shared by the lanes.
pub(crate) type Shared<'a> = Mutex<&'a mut Session>;

/// The session, locked by a lane's thread ([`lock`]): the thread's resume requests are held
/// back while it holds the lock and made when it lets it go (see `tracee::deferred`: a tracee
/// resumed on its tracer's CPU runs at once, and its tracer, preempted, would keep the lock
/// all that time, while the other lane waits for it).
pub(crate) struct Locked<'a, 'b> {
    guard: Option<MutexGuard<'a, &'b mut Session>>,
}

impl<'b> std::ops::Deref for Locked<'_, 'b> {
    type Target = &'b mut Session;
    fn deref(&self) -> &Self::Target {
        self.guard
            .as_ref()
            .expect("a locked session has its guard until dropped")
    }
}

impl std::ops::DerefMut for Locked<'_, '_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.guard
            .as_mut()
            .expect("a locked session has its guard until dropped")
    }
}

impl Locked<'_, '_> {
    /// Lets the session go, then makes the resume requests held back meanwhile.
    pub(crate) fn unlock(mut self) -> Result<()> {
        self.guard = None;
        tracee::deferred::run()
    }
}

impl Drop for Locked<'_, '_> {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            if let Err(e) = tracee::deferred::run() {
                tracing::warn!("resuming a task after the session's lock: {e:#}");
            }
        }
    }
}

/// Locks the session (a lane that panicked leaves it usable: the other lane stops on its
/// reported failure).
pub(crate) fn lock<'a, 'b>(m: &'a Shared<'b>) -> Locked<'a, 'b> {
    // A lane's hold is short (one stop's handling): spinning a while takes the lock without
    // the futex wake-up, which crosses CPUs (tens of microseconds on these VMs).
    let guard = (|| {
        for _ in 0..SPINS {
            if let Ok(g) = m.try_lock() {
                return g;
            }
            std::hint::spin_loop();
        }
        m.lock().unwrap_or_else(|e| e.into_inner())
    })();
    tracee::deferred::defer();
    Locked { guard: Some(guard) }
}

/// How many times [`lock`] tries before it sleeps.
const SPINS: u32 = 1000;

impl Session {
    /// Swaps the session's schedule with `s` (a lane's own).
    fn swap_sched(&mut self, s: &mut Sched) {
        std::mem::swap(&mut self.ready, &mut s.ready);
        std::mem::swap(&mut self.current, &mut s.current);
        std::mem::swap(&mut self.early, &mut s.early);
        std::mem::swap(&mut self.exits, &mut s.exits);
        std::mem::swap(&mut self.stall, &mut s.stall);
        std::mem::swap(&mut self.ticks, &mut s.ticks);
        std::mem::swap(&mut self.kept_since, &mut s.kept_since);
    }

    /// The CPU of the second lane, if processes may be recorded in parallel: another CPU the
    /// recorder may use.
    pub(super) fn second_cpu(&self) -> Option<u32> {
        if !self.parallel || self.chaos.is_some() || !self.fast.enabled {
            return None;
        }
        tracee::affinity::allowed(std::process::id() as i32)
            .into_iter()
            .find(|&c| c != self.cpu)
    }

    /// Gives the calling lane's CPU to its next ready task if none holds it, writing the
    /// deaths deferred until then first.
    pub(super) fn schedule_lane(&mut self) -> Result<()> {
        loop {
            if self.current.is_some() {
                return Ok(());
            }
            for e in std::mem::take(&mut self.exits) {
                self.writer.push(Event::Exit(e))?;
            }
            if !self.lane_has_tasks(self.lane) {
                return Ok(());
            }
            let scheduled = self.schedule_next();
            if self.unless_vanished(scheduled)? {
                // The next ready task, if any, gets the CPU instead.
                continue;
            }
            if self.current.is_none() && self.others_wait() {
                // The task given the CPU gave it up at once (held or parked for emulated
                // ptrace, or gone into a blocking syscall from a held stop or a
                // group-stop): the next one gets it now, as no stop of its may ever come.
                continue;
            }
            return Ok(());
        }
    }

    /// At a tick that interrupted the calling lane's wait: its time slice and flushes (see
    /// `account_ticks`), and a group-stopped task of the lane whose process got a `SIGCONT`
    /// (an error that ends the wait: see `group_stop`).
    pub(super) fn on_tick(&mut self) -> Result<()> {
        let Session {
            writer,
            tasks,
            current,
            ready,
            stall,
            ticks,
            chaos,
            lane,
            ..
        } = self;
        super::account_ticks(
            writer,
            tasks,
            ready,
            *current,
            (stall, ticks),
            chaos.as_mut(),
        )?;
        super::group_stop::continued_while_waiting(tasks.values().filter(|t| t.lane == *lane))
    }

    /// Kills every task of `lane` (after an error).
    pub(super) fn kill_lane(&mut self, lane: u8) {
        for t in self.tasks.values().filter(|t| t.lane == lane) {
            let _ = nix::sys::signal::kill(t.tracee.pid(), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Whether lane `lane` traces any task.
    pub(super) fn lane_has_tasks(&self, lane: u8) -> bool {
        self.tasks.values().any(|t| t.lane == lane)
    }

    /// Whether a lane other than the calling one has tasks (which run meanwhile).
    pub(super) fn other_lane_busy(&self) -> bool {
        self.lanes.is_some() && self.tasks.values().any(|t| t.lane != self.lane)
    }

    /// Sets up the second lane on `cpu`, fed by `to_second`; tasks come back to the calling
    /// thread, the first lane's, through `to_first`.
    pub(super) fn link_second_lane(
        &mut self,
        to_second: Sender<Moved>,
        cpu: u32,
        to_first: Sender<Moved>,
    ) {
        self.lanes = Some(Link {
            to_second: Some(to_second),
            cpu,
            to_first,
            // SAFETY: gettid has no arguments and cannot fail.
            first_thread: unsafe { libc::gettid() },
            first_cpu: self.cpu,
        });
    }

    /// Ends the link to the second lane: its thread stops once it has no task left.
    pub(super) fn unlink_second_lane(&mut self) {
        if let Some(l) = &mut self.lanes {
            l.to_second = None;
        }
    }

    /// Whether task `tid` may move to another lane: alone in its process and address space
    /// (no other thread, no `vfork` child borrowing its memory), with nothing of the
    /// recorder's pending on it (a preemption `SIGSTOP` on its way, a signal held or sent
    /// again), and not the initial process: that one is the real child of the first lane's
    /// thread, and the kernel reports a child's ptrace stops to its real parent too when its
    /// tracer is a thread of the same process, so the first lane's waits would take its
    /// stops (a replay of a trace that moved it hung).
    fn movable(&self, tid: i32) -> bool {
        let Some(t) = self.tasks.get(&tid) else {
            return false;
        };
        let (pid, mm) = (t.pid, t.mm);
        if pid == self.root {
            return false;
        }
        let alone = !self
            .tasks
            .values()
            .any(|o| (o.pid == pid || o.mm == mm || o.mm == pid) && o.tid() != tid);
        alone && t.held_signal.is_none() && !t.stop_sent && t.resent.is_empty()
    }

    /// Moves task `tid`, stopped (`at`), out of the calling lane to lane `to` on `cpu`: writes
    /// the `Lane` event, pins it there and parks it for the other lane's thread to adopt.
    fn move_out(&mut self, tid: i32, to: u8, cpu: u32, at: ParkedAt) -> Result<Parked> {
        // The library's own `syscall` instruction, which the filter lets through.
        let insn = syscallbuf::loaded()?.untraced_end - 2;
        self.writer.push(Event::Lane(LaneEvent { tid, lane: to }))?;
        tracee::affinity::pin(tid, cpu)?;
        let parked = park(&self.task(tid)?.tracee, at, insn)
            .with_context(|| format!("moving task {tid} to CPU {cpu}"))?;
        tracing::debug!(tid, cpu, lane = to, "moved to another lane");
        let t = self.task(tid)?;
        t.lane = to;
        if self.current == Some(tid) {
            self.current = None;
        }
        Ok(parked)
    }

    /// In [`Session::resume`], right after an `exec` of `tid` (registers `regs`): moves its
    /// process to the second lane if it may go (see the module documentation). True if it
    /// did.
    pub(super) fn move_after_exec(&mut self, tid: i32, regs: Regs) -> Result<bool> {
        let Some(t) = self.tasks.get_mut(&tid) else {
            return Ok(false);
        };
        if !std::mem::take(&mut t.just_execed) {
            return Ok(false);
        }
        let Some(link) = self.lanes.as_ref().filter(|l| l.to_second.is_some()) else {
            return Ok(false);
        };
        let cpu = link.cpu;
        let has_library = self.tasks.get(&tid).is_some_and(|t| t.slot.is_some());
        if self.lane != FIRST
            || self.chaos.is_some()
            || self.stop_at_syscalls
            || !self.ptrace.is_empty()
            || !has_library
            || !self.movable(tid)
            || self.lane_has_tasks(SECOND)
        {
            return Ok(false);
        }
        let parked = self.move_out(tid, SECOND, cpu, ParkedAt::Elsewhere)?;
        self.task(tid)?.state = State::Running;
        self.current = None;
        let moved = Moved {
            tid,
            parked,
            regs: Some(regs),
        };
        if let Some(tx) = self.lanes.as_ref().and_then(|l| l.to_second.as_ref()) {
            tx.send(moved)
                .map_err(|_| anyhow::anyhow!("the second lane's thread is gone"))?;
        }
        Ok(true)
    }

    /// At the entry of syscall `entry` of `tid`, a task of the second lane: a call that could
    /// make its process share memory with a process of the other lane (a shared mapping of a
    /// file, System V shared memory, ptrace, another process's memory) moves the process back
    /// to the first lane, where it makes the call again. True if it moved.
    pub(super) fn move_back_for(&mut self, tid: i32, entry: &Regs) -> Result<bool> {
        if self.lane != SECOND
            || !shares_across_lanes(entry.orig_rax, entry.r10)
            || maps_system_file_read_only(tid, entry)
        {
            return Ok(false);
        }
        let call = syscalls::name(entry.orig_rax);
        if !self.movable(tid) {
            bail!(
                "a process recorded in parallel with others, with several threads, makes \
                 {call}, through which it could share memory with them (record it with \
                 `deja rec --serial`)"
            );
        }
        let Some(link) = &self.lanes else {
            bail!("no lane to move task {tid} back to");
        };
        let (tx, thread, cpu) = (link.to_first.clone(), link.first_thread, link.first_cpu);
        let parked = self.move_out(tid, FIRST, cpu, ParkedAt::SyscallEntry)?;
        tracing::debug!(tid, call = %call, "moved back to the first lane");
        self.task(tid)?.state = State::Moved;
        tx.send(Moved {
            tid,
            parked,
            regs: None,
        })
        .map_err(|_| anyhow::anyhow!("the first lane's thread is gone"))?;
        // Its wait is interrupted: it takes the task at once.
        // SAFETY: tgkill of a thread of this process with a signal it handles.
        unsafe { libc::syscall(libc::SYS_tgkill, std::process::id(), thread, libc::SIGALRM) };
        Ok(true)
    }

    /// At a syscall's entry in the first lane: ptrace or another process's memory reached
    /// across lanes (a task of the second lane, which only its lane's thread may trace, and
    /// whose memory changes while this lane runs) is refused with an error.
    pub(super) fn refuse_across_lanes(&self, entry: &Regs) -> Result<()> {
        let nr = entry.orig_rax;
        let target = if nr == libc::SYS_ptrace as u64 {
            entry.rsi as i32
        } else if nr == libc::SYS_process_vm_readv as u64
            || nr == libc::SYS_process_vm_writev as u64
        {
            entry.rdi as i32
        } else {
            return Ok(());
        };
        let across = self
            .tasks
            .values()
            .any(|t| (t.tid() == target || t.pid == target) && t.lane != self.lane);
        if across {
            bail!(
                "{} of process {target}, which deja records in parallel with the caller, is not \
                 supported (record with `deja rec --serial`)",
                syscalls::name(nr)
            );
        }
        Ok(())
    }

    /// Takes the tasks moved back to the calling lane, the first, from `rx`: each waits for
    /// the lane's CPU, to make its syscall again.
    pub(super) fn take_moved_back(&mut self, rx: &Receiver<Moved>) -> Result<()> {
        while let Ok(moved) = rx.try_recv() {
            let tid = moved.tid;
            if self.adopt_or_bury(tid, moved.parked)? {
                self.ready.push_back(tid);
            }
        }
        Ok(())
    }

    /// Takes the parked task `tid` over in the calling lane; false if it died while parked
    /// (only `SIGKILL` can end it there: every other signal is blocked), then its end is
    /// recorded as such and it is forgotten (its parent reaps it: it is no longer traced).
    fn adopt_or_bury(&mut self, tid: i32, parked: Parked) -> Result<bool> {
        let adopted = adopt(
            &self.task(tid)?.tracee,
            parked,
            tracee::spawn::PTRACE_OPTIONS,
        );
        let Err(e) = adopted else {
            return Ok(true);
        };
        // (A task being killed may still run its exit for a moment.)
        let dead = (0..100).any(|_| {
            exiting(tid) || {
                std::thread::sleep(Duration::from_millis(1));
                false
            }
        });
        if !dead {
            return Err(e);
        }
        tracing::debug!(tid, "a parked task was killed: {e:#}");
        self.on_death(
            tid,
            ExitStatus::Signaled(libc::SIGKILL),
            Stop::Killed(libc::SIGKILL),
        )?;
        Ok(false)
    }
}

/// Whether task `tid` is gone or dying (a zombie, or dead: `/proc/TID/stat` says `Z` or `X`,
/// or is no more).
fn exiting(tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    matches!(state, Some('Z' | 'X'))
}

/// Whether syscall `nr` (fourth argument `a3`) could make its process share memory with
/// processes of another lane: a shared mapping that is not anonymous (of a file, a memfd, a
/// device), System V shared memory, ptrace, reading or writing another process's memory.
fn shares_across_lanes(nr: u64, a3: u64) -> bool {
    let shared_map = {
        // The mapping type (`MAP_TYPE`, the low four bits): `MAP_SHARED_VALIDATE` is 3.
        let kind = a3 & 0xf;
        (kind == libc::MAP_SHARED as u64 || kind == libc::MAP_SHARED_VALIDATE as u64)
            && a3 & libc::MAP_ANONYMOUS as u64 == 0
    };
    (nr == libc::SYS_mmap as u64 && shared_map)
        || [
            libc::SYS_shmat,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
        ]
        .iter()
        .any(|&n| n as u64 == nr)
}

/// Whether `entry` (an `mmap` of task `tid`) maps a system file (under
/// `trace_format::SYSTEM_PREFIXES`, which deja takes as unchanging) read-only through a
/// descriptor opened read-only, which no `mprotect` can make writable: what glibc does with
/// `gconv-modules.cache` in every program that converts characters. Nothing another process
/// does can change what such a mapping shows.
fn maps_system_file_read_only(tid: i32, entry: &Regs) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if entry.orig_rax != libc::SYS_mmap as u64 || entry.rdx & libc::PROT_WRITE as u64 != 0 {
        return false;
    }
    let fd = format!("/proc/{tid}/fd/{}", entry.r8 as i32);
    let read_only =
        std::fs::symlink_metadata(&fd).is_ok_and(|m| m.permissions().mode() & 0o200 == 0);
    let system = std::fs::read_link(&fd).is_ok_and(|p| trace_format::is_system_path(&p));
    read_only && system
}

/// The second lane's thread: pinned to `cpu`, adopts the processes the first lane moves to it
/// (from `rx`) and records them until the first lane ends the link and no task is left.
/// A failure is left in the session for the first lane, which stops the recording.
pub(crate) fn second_lane(m: &Shared, rx: Receiver<Moved>, cpu: u32, tick: Duration) {
    let mut sched = Sched::default();
    // A panic is a failure like another: the first lane stops the recording on it (its
    // tasks would otherwise wait for this thread forever).
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        tracee::affinity::pin(0, cpu)?;
        set_ticks_blocked(true);
        tracee::alarm::start(tick, tick);
        loop {
            // A task is given this lane (its `lane` set) under the lock that sends it here:
            // under the lock, a task of this lane is adopted or on its way.
            let (pending, busy) = {
                let s = lock(m);
                (rx.try_recv().ok(), s.lane_has_tasks(SECOND))
            };
            if let Some(moved) = pending {
                take_moved(m, &mut sched, moved)?;
                continue;
            }
            if !busy {
                // Idle: wait for a process to move here (none once the link is gone).
                let Ok(moved) = rx.recv() else {
                    return Ok(());
                };
                take_moved(m, &mut sched, moved)?;
                continue;
            }
            let stop = wait_own(m, &mut sched)?;
            let mut s = lock(m);
            s.swap_sched(&mut sched);
            s.lane = SECOND;
            let r = (|| -> Result<()> {
                if let Some((pid, stop)) = stop {
                    let handled = s.dispatch(pid.as_raw(), stop);
                    s.unless_vanished(handled)?;
                }
                if s.any_group_stopped() {
                    s.continue_group_stops();
                }
                s.schedule_lane()
            })();
            s.lane = FIRST;
            s.swap_sched(&mut sched);
            r?;
            s.unlock()?;
        }
    }))
    .unwrap_or_else(|_| Err(anyhow::anyhow!("the second tracer thread panicked")));
    tracee::alarm::stop();
    if let Err(e) = outcome {
        let mut s = lock(m);
        s.kill_lane(SECOND);
        s.lane_failure.get_or_insert(e);
    }
}

/// Adopts a moved process and lets it run on in the second lane.
fn take_moved(m: &Shared, sched: &mut Sched, moved: Moved) -> Result<()> {
    let mut s = lock(m);
    let Moved { tid, parked, regs } = moved;
    let regs = regs.context("a task moved to the second lane without its registers")?;
    s.swap_sched(sched);
    s.lane = SECOND;
    let adopted = s.adopt_or_bury(tid, parked);
    s.lane = FIRST;
    s.swap_sched(sched);
    if !adopted? {
        return Ok(());
    }
    s.swap_sched(sched);
    s.lane = SECOND;
    let r = s.run_on(tid, regs, false);
    s.lane = FIRST;
    s.swap_sched(sched);
    r
}

/// Waits for a stop of one of the calling lane's tasks (`sched`: its schedule while the
/// session's is the other lane's), accounting for its ticks meanwhile. `None` when a tick found
/// a group-stopped task continued.
fn wait_own(m: &Shared, sched: &mut Sched) -> Result<Option<(Pid, Stop)>> {
    set_ticks_blocked(false);
    let stop = tracee::stop::wait_any(&mut || {
        set_ticks_blocked(true);
        let mut s = lock(m);
        s.swap_sched(sched);
        s.lane = SECOND;
        let r = s.on_tick();
        s.lane = FIRST;
        s.swap_sched(sched);
        drop(s);
        set_ticks_blocked(false);
        r
    });
    set_ticks_blocked(true);
    match stop {
        Ok(stop) => Ok(Some(stop)),
        Err(e) if super::group_stop::is_continued(&e) => Ok(None),
        Err(e) => {
            let s = lock(m);
            let own: Vec<(i32, String)> = s
                .tasks
                .values()
                .filter(|t| t.lane == SECOND)
                .map(|t| (t.tid(), t.state.describe()))
                .collect();
            Err(e.context(format!("in the second lane, with tasks {own:?}")))
        }
    }
}

/// The first lane's loop (the recorder's tracer thread): records its tasks until every task
/// of the recording has ended.
pub(super) fn first_lane(m: &Shared, back: &Receiver<Moved>) -> Result<()> {
    loop {
        {
            let mut s = lock(m);
            if let Some(e) = s.lane_failure.take() {
                return Err(e);
            }
            s.take_moved_back(back)?;
            s.schedule_lane()?;
            if s.tasks.is_empty() {
                return Ok(());
            }
            if !s.lane_has_tasks(FIRST) {
                // Only the second lane's tasks are left: wait for them to end, still open to
                // the signals that stop a recording.
                drop(s);
                set_ticks_blocked(false);
                std::thread::sleep(Duration::from_millis(1));
                set_ticks_blocked(true);
                crate::session::stop_requested()?;
                continue;
            }
        }
        let stop = wait_first(m, back)?;
        let mut s = lock(m);
        if let Some((pid, stop)) = stop {
            let handled = s.dispatch(pid.as_raw(), stop);
            s.unless_vanished(handled)?;
        }
        if s.any_group_stopped() {
            s.continue_group_stops();
        }
        s.unlock()?;
    }
}

/// Waits for a stop of a task of the first lane; at each timer tick while it waits, accounts
/// for the lane's time slice and flushes (see [`Session::on_tick`]) and checks for a request
/// to stop. `None` when a tick found a group-stopped task whose process got a `SIGCONT` (see
/// `group_stop`).
fn wait_first(m: &Shared, back: &Receiver<Moved>) -> Result<Option<(Pid, Stop)>> {
    set_ticks_blocked(false);
    let stop = tracee::stop::wait_any(&mut || {
        set_ticks_blocked(true);
        let ticked = {
            let mut s = lock(m);
            s.on_tick().and_then(|()| {
                // A task moved back from the second lane wakes this wait; it may get the CPU.
                s.take_moved_back(back)?;
                s.schedule_lane()
            })
        };
        set_ticks_blocked(false);
        ticked?;
        crate::session::stop_requested()
    });
    set_ticks_blocked(true);
    // A stop signal ends the loop (the caller kills the tasks and keeps the trace).
    crate::session::stop_requested()?;
    match stop {
        Ok(stop) => Ok(Some(stop)),
        Err(e) if super::group_stop::is_continued(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
