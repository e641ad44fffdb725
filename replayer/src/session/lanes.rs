//! Traces recorded in lanes (see the recorder's README, "Processes recorded in parallel"):
//! each lane of the recorder ran one of its tasks at a time, the lanes at once, so a task's
//! next event is the next event *of its lane*, with other lanes' events in between. A task's
//! lane is 0 until a `Lane` event moves its process; the tasks it creates are in its lane.
//! A replay under a debugger still runs one task at a time, each from its event to its next
//! stop, in the trace's order: tasks of different lanes share no memory, so the order of their
//! runs changes nothing they compute. A replay to the end replays each lane on a thread of its
//! own, as the recorder did (see `crate::parallel`): a session per lane, which keeps only its
//! lane's events, and hands a task over at a `Lane` event that moves it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use trace_format::{Event, ExitStatus, LaneEvent, Tid, TraceReader};
use tracee::migrate::{adopt, park, ParkedAt};
use tracee::Stop;

use super::{ReplayOptions, Session};
use crate::parallel::{LaneFilter, Moving, OtherLaneFailed, Shared};
use crate::tasks::{self, RState};

/// A session's part in a replay of the lanes at once.
pub(crate) struct LaneRole {
    /// The lane it replays.
    lane: u8,
    shared: Arc<Shared>,
    /// The trace, for the second lane's session to open.
    dir: PathBuf,
    opts: ReplayOptions,
    /// The CPU the lane's tasks run on, when pinned.
    cpu: Option<u32>,
    /// The first lane's: the second lane's thread, once a task moved there; it returns how
    /// the initial process ended, if it ended there.
    second: Option<JoinHandle<Result<Option<ExitStatus>>>>,
}

impl LaneRole {
    /// The first lane's part (its tasks on `cpu`, when pinned).
    pub fn first(dir: &Path, opts: &ReplayOptions, cpu: Option<usize>) -> Self {
        LaneRole {
            lane: 0,
            shared: Shared::new(opts.progress.clone()),
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            cpu: cpu.map(|c| c as u32),
            second: None,
        }
    }

    /// The session now replays event `index`.
    pub fn at_event(&self, index: u64) {
        self.shared.at_event(self.lane.into(), index);
    }

    /// Fails if the other lane's replay failed.
    pub fn check_other_lane(&self) -> Result<()> {
        if self.shared.failed() {
            return Err(OtherLaneFailed.into());
        }
        Ok(())
    }
}

impl Session {
    /// The lane of task `tid`.
    pub(super) fn lane(&self, tid: Tid) -> u8 {
        if let Some(&lane) = self.lanes.get(&tid) {
            return lane;
        }
        // The first lane's session of a replay of lanes at once never sees the clones of the
        // second lane's tasks: once a task went there, a task it does not have and that no
        // `Lane` event moved is one of those (its own are in lane 0 until they move).
        match &self.par {
            Some(p) if p.lane == 0 && p.second.is_some() && self.tasks.by_tid(tid).is_none() => 1,
            _ => 0,
        }
    }

    /// A `Lane` event: `e.tid`'s runs from now on are in lane `e.lane`. With lanes replayed
    /// at once, a task leaving this session's lane is parked and handed over (`at`: where it
    /// is, when it is about to run on after its event; else it is at the entry of the syscall
    /// it makes next), and a task coming in is taken over and run on. True if it left.
    pub(super) fn lane_event(&mut self, e: &LaneEvent, at: Option<ParkedAt>) -> Result<bool> {
        tracing::debug!(tid = e.tid, lane = e.lane, "moves to another lane");
        let from = self.lane(e.tid);
        self.lanes.insert(e.tid, e.lane);
        let Some(mine) = self.par.as_ref().map(|p| p.lane) else {
            return Ok(false);
        };
        if from == mine && e.lane != mine {
            let at = match at {
                Some(at) => at,
                None => match self.task(e.tid)?.state {
                    RState::Parked(Stop::SeccompEntry) => ParkedAt::SyscallEntry,
                    other => bail!(
                        "task {} moves to another lane where the replay has it {other:?}, not \
                         at a syscall's entry",
                        e.tid
                    ),
                },
            };
            self.move_out(e.tid, e.lane, at)?;
            return Ok(true);
        }
        if e.lane == mine && from != mine {
            self.move_in(e.tid)?;
        }
        Ok(false)
    }

    /// Parks task `tid` (`at`) and hands it to lane `to`'s thread, starting that thread if
    /// it is the first task to go there.
    fn move_out(&mut self, tid: Tid, to: u8, at: ParkedAt) -> Result<()> {
        // The library's own `syscall` instruction, which the filter lets through.
        let insn = syscallbuf::loaded()?.untraced_end - 2;
        if to != 0 {
            self.start_second_lane()?;
        }
        let task = self.tasks.take(tid).ok_or_else(|| tasks::unknown(tid))?;
        let parked = park(&task.tracee, at, insn)
            .with_context(|| format!("moving task {tid} to the replay of lane {to}"))?;
        let rpid = task.rpid;
        let moving = Moving {
            sites: self.sites.take(rpid),
            segv: self.segv.take(rpid),
            segv_blocked: self.segv_blocked.take(tid),
            task,
            parked,
        };
        if let Some(par) = &self.par {
            par.shared.hand_over(tid, self.index, moving);
        }
        Ok(())
    }

    /// Takes task `tid` over from the other lane's thread (waiting for it to get there) and
    /// runs it on from where it was parked.
    fn move_in(&mut self, tid: Tid) -> Result<()> {
        let par = self.par.as_ref().context("no lanes")?;
        let moving = par.shared.take_over(tid, self.index)?;
        let Moving {
            task,
            parked,
            sites,
            segv,
            segv_blocked,
        } = moving;
        if let Some(cpu) = par.cpu {
            tracee::affinity::pin(task.tracee.pid().as_raw(), cpu)?;
        }
        adopt(&task.tracee, parked, tracee::spawn::PTRACE_OPTIONS)
            .with_context(|| format!("taking task {tid} over from the other lane"))?;
        let rpid = task.rpid;
        self.sites.put(rpid, sites);
        self.segv.put(rpid, segv);
        self.segv_blocked.put(tid, segv_blocked);
        self.tasks.insert(tid, task);
        self.resume(tid, 0)
    }

    /// Starts the second lane's thread, unless it runs already.
    fn start_second_lane(&mut self) -> Result<()> {
        let index = self.index;
        let Some(par) = self
            .par
            .as_mut()
            .filter(|p| p.lane == 0 && p.second.is_none())
        else {
            return Ok(());
        };
        // Its tasks on another CPU than the first lane's, as in the recording.
        let cpu = tracee::affinity::allowed(std::process::id() as i32)
            .into_iter()
            .find(|&c| Some(c) != par.cpu);
        // It writes nothing before this event.
        par.shared.at_event(1, index);
        tracing::debug!(
            ?cpu,
            "the replay of lane 1 starts: it replays lane 1 on a thread of its own"
        );
        let (dir, opts, shared) = (par.dir.clone(), par.opts.clone(), Arc::clone(&par.shared));
        let handle = std::thread::Builder::new()
            .name("deja-replay-2".into())
            .spawn(move || second_lane(&dir, &opts, shared, cpu))
            .context("starting the second lane's replay thread")?;
        par.second = Some(handle);
        Ok(())
    }

    /// At the end of this session's events: the first lane waits for the second's to end and
    /// returns how the initial process ended there, if it did (`Some(None)` if it did not);
    /// `None` for the second lane itself.
    pub(super) fn end_lanes(&mut self) -> Result<Option<Option<ExitStatus>>> {
        let Some(par) = self.par.as_mut() else {
            return Ok(Some(None));
        };
        if par.lane != 0 {
            return Ok(None);
        }
        par.shared.at_event(0, u64::MAX);
        let Some(handle) = par.second.take() else {
            return Ok(Some(None));
        };
        let status = handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the second lane's replay thread panicked")))?;
        par.shared.flush_all();
        Ok(Some(status))
    }

    /// After this (first) lane's replay failed with `err`: stops the second lane's and
    /// returns the replay's failure (the second lane's own, if this one only stopped for it).
    pub(super) fn fail_lanes(&mut self, err: anyhow::Error) -> anyhow::Error {
        let Some(par) = self.par.as_mut() else {
            return err;
        };
        par.shared.fail();
        let theirs = par.second.take().map(|h| h.join());
        par.shared.flush_all();
        kill_left_over(&par.shared);
        match theirs {
            Some(Ok(Err(e))) if err.is::<OtherLaneFailed>() && !e.is::<OtherLaneFailed>() => e,
            _ => err,
        }
    }

    /// Echoes what the program wrote to `stream` at the current event: at once, or in the
    /// trace's order with the other lane's output.
    pub(super) fn echo_out(&self, stream: u8, bytes: &[u8]) {
        if let Some(par) = &self.par {
            par.shared.echo(par.lane.into(), self.index, stream, bytes);
            return;
        }
        if let Err(err) = crate::echo::write_out(stream, bytes, self.opts.progress.as_deref()) {
            tracing::warn!("could not echo output: {err:#}");
        }
    }

    /// A task `child` made by `parent`: in its parent's lane.
    pub(super) fn inherit_lane(&mut self, parent: Tid, child: Tid) {
        match self.lanes.get(&parent).copied() {
            Some(lane) => self.lanes.insert(child, lane),
            None => self.lanes.remove(&child),
        };
    }

    /// Right after `tid`'s event, before it runs on: takes the `Lane` event of `tid` the
    /// recorder wrote there, if any. True if the task left this session (see `lane_event`).
    pub(super) fn take_lane_change(&mut self, tid: Tid) -> Result<bool> {
        if let Some(Event::Lane(e)) = self.peek()? {
            if e.tid == tid {
                let e = e.clone();
                self.take()?;
                return self.lane_event(&e, Some(ParkedAt::Elsewhere));
            }
        }
        Ok(false)
    }

    /// Visits the positions of the events ahead that belong to `tid`'s lane, in order, while
    /// `visit` returns true. The lanes of tasks named by `Lane` and `Clone` events on the way
    /// count from those events on.
    pub(super) fn lane_walk(
        &mut self,
        tid: Tid,
        mut visit: impl FnMut(&mut Self, usize) -> Result<bool>,
    ) -> Result<()> {
        let mut later: HashMap<Tid, u8> = HashMap::new();
        let lane = self.lane(tid);
        let mut i = 0;
        loop {
            let Some(owner) = self.peek_at(i)?.map(Event::tid) else {
                return Ok(());
            };
            let owner_lane = later
                .get(&owner)
                .copied()
                .unwrap_or_else(|| self.lane(owner));
            if owner_lane == lane && !visit(self, i)? {
                return Ok(());
            }
            self.note_lane_change(i, &mut later)?;
            i += 1;
        }
    }

    /// The first event of `tid`'s lane ahead.
    pub(super) fn peek_lane(&mut self, tid: Tid) -> Result<Option<&Event>> {
        let mut first = None;
        self.lane_walk(tid, |_, i| {
            first = Some(i);
            Ok(false)
        })?;
        match first {
            Some(i) => self.peek_at(i),
            None => Ok(None),
        }
    }

    /// Notes in `later` the lane change the event at position `i` ahead makes, if any: a
    /// `Lane` event's, or a `Clone` event's (the new task in its parent's lane).
    fn note_lane_change(&mut self, i: usize, later: &mut HashMap<Tid, u8>) -> Result<()> {
        let change = match self.peek_at(i)? {
            Some(Event::Lane(e)) => Some((e.tid, Ok(e.lane))),
            Some(Event::Clone(c)) => Some((c.child, Err(c.tid))),
            _ => None,
        };
        if let Some((tid, lane)) = change {
            let lane = lane.unwrap_or_else(|parent| {
                later
                    .get(&parent)
                    .copied()
                    .unwrap_or_else(|| self.lane(parent))
            });
            later.insert(tid, lane);
        }
        Ok(())
    }
}

/// The second lane's thread: replays the trace's events of lane 1 (on `cpu`, when there is
/// one), taking its tasks over from the first lane's thread as they come. Returns how the
/// initial process ended, if it ended in this lane.
fn second_lane(
    dir: &Path,
    opts: &ReplayOptions,
    shared: Arc<Shared>,
    cpu: Option<u32>,
) -> Result<Option<ExitStatus>> {
    let result = (|| {
        tracee::tsc::trap_on_this_thread()?;
        if let Some(cpu) = cpu {
            tracee::affinity::pin(0, cpu)?;
        }
        let mut session = Session::open_second_lane(dir, opts, Arc::clone(&shared), cpu)?;
        let r = session.run_events();
        session.tasks.kill_all();
        match r {
            Ok(_) => Ok(session.root_status),
            // A trace that ends early: this lane's events are all replayed; the first lane's
            // own end says so for the whole replay.
            Err(e) if e.is::<crate::divergence::Incomplete>() => Ok(session.root_status),
            Err(e) => Err(e),
        }
    })();
    if result.is_err() {
        shared.fail();
    }
    shared.at_event(1, u64::MAX);
    result
}

/// Whether the trace moves the initial process `root` to another lane, which only recorders
/// before `TraceMeta::root_stays_in_first_lane` did. Such a trace replays one task at a time:
/// the initial process is the real child of the first lane's thread, whose waits would take
/// its stops from the second lane's thread (the kernel reports a child's ptrace stops to its
/// real parent too when its tracer is a thread of the same process).
pub(super) fn root_moves(reader: &TraceReader, root: Tid) -> Result<bool> {
    if reader.meta().root_stays_in_first_lane {
        return Ok(false);
    }
    // (A damaged or cut trace ends the look here: the replay reports it where it gets to it.)
    for ev in reader.events()?.map_while(|ev| ev.ok()) {
        if matches!(ev, Event::Lane(e) if e.tid == root) {
            tracing::debug!("the trace moves the initial process: replaying one task at a time");
            return Ok(true);
        }
    }
    Ok(false)
}

/// Kills the tasks parked for a lane that will not take them.
fn kill_left_over(shared: &Shared) {
    for m in shared.left_over() {
        let _ = nix::sys::signal::kill(m.task.tracee.pid(), nix::sys::signal::SIGKILL);
    }
}

impl Session {
    /// The second lane's session: no task yet; they come from the first lane.
    fn open_second_lane(
        dir: &Path,
        opts: &ReplayOptions,
        shared: Arc<Shared>,
        cpu: Option<u32>,
    ) -> Result<Self> {
        let reader = Rc::new(TraceReader::open(dir)?);
        let mut events = reader.events()?;
        let root = match events.next().transpose()? {
            Some(Event::Exec(e)) => e.tid,
            _ => bail!("the trace does not start with the program's exec"),
        };
        let mut session = Session::new(reader, events, root, opts, None);
        session.read = 1;
        session.filter = Some(LaneFilter::new(1));
        session.par = Some(LaneRole {
            lane: 1,
            shared,
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            cpu,
            second: None,
        });
        Ok(session)
    }
}
