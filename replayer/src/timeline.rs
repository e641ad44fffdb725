//! Going backwards in a debugged replay: `reverse-continue` and `reverse-stepi`, on replays
//! started from checkpoints (forked copies of the replay) and run forward to an exact position
//! (see the crate README, "Going backwards").
//!
//! A [`Timeline`] holds the replay the debugger looks at, its checkpoints, and what the
//! debugger set (breakpoints, watchpoints, its interrupt check), so that it can make another
//! replay of the same trace with the same requests, run it to where it wants, and put it in
//! the first one's place.
//! Breakpoints never change what a replay computes, so two replays with the same requests halt
//! at the same moments, in the same order: the n-th halt of one is the n-th halt of the other.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use trace_format::Tid;

use crate::debug::{Halt, HwPoint, Position, ProcEvents};
use crate::debugger::{BreakpointFilter, DebugReplay, Resume};
use crate::start::StartPoint;

/// How many instructions `reverse-stepi` single-steps through at most to find the one before
/// the current position (going backwards steps a task's run from its start).
const MAX_STEPS: u64 = 2_000_000;

/// How many forward single steps of one task's run may go by without a new anchor: the
/// latest anchor is then at most this many steps before the current position, which bounds
/// what `reverse-stepi` replays, and `stepi` forks a copy of the replay only once per as many
/// steps (see [`Timeline::resume`]).
const ANCHOR_EVERY: u64 = 256;

/// How many checkpoints a timeline keeps, the one at the start among them.
const MAX_CHECKPOINTS: usize = 48;

/// How often, at most, a scan going backwards keeps a copy of itself at a halt (so that the
/// replay to the last halt it finds starts from close to it).
const SNAP_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// How often a replay the timeline runs pauses to keep a checkpoint (when it can be copied
/// there): going backwards then replays at most about this long before the position.
const PAUSE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A copy of the replay kept stopped at a position, to start replays from (its process forked
/// again for each).
struct Checkpoint {
    /// The event replayed last there.
    event: u64,
    /// A task had run since that event (the position is within its run).
    within: bool,
    replay: DebugReplay,
}

/// The debugger's interrupt check, shared by every replay the timeline makes.
type Interrupt = Rc<RefCell<Box<dyn FnMut() -> bool>>>;

/// The debugger's breakpoint filter, shared by every replay the timeline makes.
type Filter = Rc<RefCell<BreakpointFilter>>;

/// A debugged replay that can also go backwards.
pub struct Timeline {
    replay: DebugReplay,
    dir: PathBuf,
    start: StartPoint,
    quiet: bool,
    /// The software breakpoints the debugger set (addresses it asked for).
    breakpoints: BTreeSet<u64>,
    /// The hardware breakpoints and watchpoints it set.
    hw: Vec<HwPoint>,
    interrupt: Option<Interrupt>,
    /// Which breakpoint hits halt (conditions), in every replay.
    filter: Option<Filter>,
    /// Copies of the replay at earlier positions, in the order of their events.
    checkpoints: Vec<Checkpoint>,
    /// Positions the debugger saved (`monitor checkpoint`), numbered from 1; `None` once
    /// deleted.
    saved: Vec<Option<Position>>,
    /// Copies of the replay at the last two positions it was anchored at part-way through a
    /// task's run, the earlier first (see [`Anchor`]).
    anchors: [Option<Anchor>; 2],
    /// How many forward single steps went by since the later anchor was taken (0: it is at
    /// the current position; more: it is before it, on the same run).
    steps_past: u64,
    /// The process events the debugger halts at (going forward only: the replays that go
    /// backwards do not halt at them).
    proc_events: ProcEvents,
}

/// A copy of the replay kept at a halt part-way through task `tid`'s run after event `event`.
/// The replay went forward from the earlier anchor to the later one, so the earlier one is
/// known to be before the current position: `reverse-stepi` single-steps from it rather than
/// from the start of the task's run (which a loop of buffered syscalls makes long).
struct Anchor {
    event: u64,
    tid: Tid,
    replay: DebugReplay,
}

impl Timeline {
    /// Starts replaying the trace in `dir` and runs it to `start`; `quiet` keeps the program's
    /// output from being echoed.
    /// The replay starts at the debugged process's last exec before `start` (see
    /// [`StartPoint::first`]), keeps a checkpoint there, and runs on to `start` (echoing
    /// output as asked, nothing halting on the way), so that going backwards can reach back
    /// to that exec.
    pub fn open(dir: &Path, start: StartPoint, quiet: bool) -> Result<Self> {
        let first = StartPoint {
            event: start.first,
            ..start.clone()
        };
        let replay = DebugReplay::open(dir, &first, quiet)?;
        let mut timeline = Timeline {
            replay,
            dir: dir.to_path_buf(),
            start,
            quiet,
            breakpoints: BTreeSet::new(),
            hw: Vec::new(),
            interrupt: None,
            filter: None,
            checkpoints: Vec::new(),
            saved: Vec::new(),
            anchors: [None, None],
            steps_past: 0,
            proc_events: ProcEvents::default(),
        };
        timeline.replay.set_pause_every(Some(PAUSE_EVERY));
        timeline.checkpoint_here()?;
        if timeline.start.event > timeline.start.first {
            let to = Position::Boundary(timeline.start.event);
            timeline.replay.set_mark(&to);
            loop {
                match run(
                    &mut timeline.checkpoints,
                    &mut timeline.replay,
                    Resume::Continue,
                )? {
                    Halt::Reached(_) => break,
                    end @ (Halt::Exited(_) | Halt::End) => bail!(
                        "the replay could not reach its starting point (event {}): it stopped \
                         with {end:?}",
                        timeline.start.event
                    ),
                    _ => {}
                }
            }
            timeline.checkpoint_here()?;
        }
        if timeline.start.at_exit {
            timeline.run_to_end()?;
        }
        Ok(timeline)
    }

    /// Runs on to the debugged process's end (`deja replay -e`): to its task's stop at the
    /// syscall that ends it ([`Halt::Ending`]), keeping checkpoints on the way (nothing the
    /// debugger set yet: the recorded signals it meets are passed over). A process that a
    /// signal killed makes no such call: the replay goes back from its end to its last halt,
    /// the signal's delivery; one the recording ends without ending stops at its last halt
    /// too.
    fn run_to_end(&mut self) -> Result<()> {
        loop {
            match run(&mut self.checkpoints, &mut self.replay, Resume::Continue)? {
                Halt::Ending(_) => return self.checkpoint_here(),
                Halt::Exited(_) | Halt::End => break,
                _ => {}
            }
        }
        match self.reverse(Resume::Continue)? {
            Halt::Start(_) => bail!(
                "process {} has no end in the recording to start at (`deja ps` tells how it \
                 ended)",
                self.start.process
            ),
            _ => Ok(()),
        }
    }

    /// Which process events halt the replay going forward (what gdb asked for).
    pub fn set_proc_events(&mut self, events: ProcEvents) {
        self.proc_events = events;
        self.replay.set_proc_events(events);
    }

    /// Debugs process `pid` from its fork on (gdb following a fork's child): the replay goes
    /// to the child's first instruction (forwards, or backwards if the child ran before its
    /// parent was back from the fork, as a `vfork`'s always does), with nothing set in it; that
    /// is where going backwards, and `run`, start from now (the checkpoints and saved
    /// positions before it are dropped).
    pub fn switch_to(&mut self, pid: Tid) -> Result<()> {
        let start = crate::start::start_point(
            &self.dir,
            &crate::start::DebugOptions {
                process: Some(pid),
                from_fork: true,
                ..Default::default()
            },
        )?;
        self.drop_anchors();
        self.breakpoints.clear();
        self.hw.clear();
        self.start = start;
        let replay = self.fresh_at(&Position::Boundary(self.start.event))?;
        self.take(replay);
        // Nothing before the child's start is reachable now: not the checkpoints of its
        // parent's replay, nor the positions the debugger saved there.
        self.checkpoints.clear();
        self.saved.iter_mut().for_each(|p| *p = None);
        self.checkpoint_here()
    }

    /// Keeps a copy of the replay at its position (see [`keep_checkpoint`]).
    pub fn checkpoint_here(&mut self) -> Result<()> {
        keep_checkpoint(&mut self.checkpoints, &mut self.replay)
    }

    /// The replay the debugger looks at.
    pub fn replay(&self) -> &DebugReplay {
        &self.replay
    }

    /// The replay the debugger looks at, to change.
    pub fn replay_mut(&mut self) -> &mut DebugReplay {
        &mut self.replay
    }

    /// Ends the replay and starts it again from its start, with nothing set (gdb's `run`).
    pub fn start_over(&mut self) -> Result<()> {
        self.drop_anchors();
        self.replay.kill();
        self.breakpoints.clear();
        self.hw.clear();
        let replay = self.fresh_at(&Position::Boundary(self.start.event))?;
        self.take(replay);
        Ok(())
    }

    /// Installs the check for the debugger's interrupt request (see
    /// [`DebugReplay::set_interrupt`]), in this replay and every later one.
    pub fn set_interrupt(&mut self, check: Box<dyn FnMut() -> bool>) {
        self.interrupt = Some(Rc::new(RefCell::new(check)));
        self.install_interrupt();
    }

    /// Whether the debugger asks for an interrupt now (its check, for what runs outside the
    /// replay: a diversion).
    pub fn interrupt_requested(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|check| (check.borrow_mut())())
    }

    fn install_interrupt(&mut self) {
        if let Some(check) = forwarding(&self.interrupt) {
            self.replay.set_interrupt(check);
        }
    }

    /// Installs the check of which breakpoint hits halt (see
    /// [`DebugReplay::set_breakpoint_filter`]), in this replay and every later one: the
    /// replays going backwards pass over the same hits as going forward.
    pub fn set_breakpoint_filter(&mut self, filter: BreakpointFilter) {
        let shared = Rc::new(RefCell::new(filter));
        self.replay
            .set_breakpoint_filter(forwarding_filter(&shared));
        self.filter = Some(shared);
    }

    /// Inserts a software breakpoint (see [`DebugReplay::add_breakpoint`]).
    pub fn add_breakpoint(&mut self, addr: u64) -> Result<bool> {
        let added = self.replay.add_breakpoint(addr)?;
        if added {
            self.breakpoints.insert(addr);
        }
        Ok(added)
    }

    /// Removes a software breakpoint.
    pub fn remove_breakpoint(&mut self, addr: u64) -> Result<bool> {
        self.breakpoints.remove(&addr);
        self.replay.remove_breakpoint(addr)
    }

    /// Adds a hardware breakpoint or watchpoint.
    pub fn add_hw_point(&mut self, point: HwPoint) -> bool {
        let added = self.replay.add_hw_point(point);
        if added && !self.hw.contains(&point) {
            self.hw.push(point);
        }
        added
    }

    /// Removes a hardware breakpoint or watchpoint.
    pub fn remove_hw_point(&mut self, point: HwPoint) -> bool {
        self.hw.retain(|p| *p != point);
        self.replay.remove_hw_point(point)
    }

    /// Goes to the boundary after event `event` (no task has run since), from the latest
    /// checkpoint before it (`monitor seek`); no earlier than where the replay starts.
    pub fn seek(&mut self, event: u64) -> Result<()> {
        self.drop_anchors();
        let count = self.replay.event_count();
        if event >= count {
            bail!("event {event} is past the end of the recording ({count} events)");
        }
        let pos = Position::Boundary(event.max(self.start.first));
        let replay = self.fresh_at(&pos)?;
        self.take(replay);
        self.checkpoint_here()
    }

    /// Keeps the current position under the next number (`monitor checkpoint`, as rr's
    /// `checkpoint`); returns it.
    pub fn save_position(&mut self) -> Result<usize> {
        let pos = self.replay.position()?;
        self.checkpoint_here()?;
        self.saved.push(Some(pos));
        Ok(self.saved.len())
    }

    /// Goes back (or forward) to the position saved as `n` (`monitor restart N`).
    pub fn restore_position(&mut self, n: usize) -> Result<()> {
        self.drop_anchors();
        let Some(Some(pos)) = n.checked_sub(1).and_then(|i| self.saved.get(i)).cloned() else {
            bail!("there is no checkpoint {n} (`monitor checkpoints` lists them)");
        };
        let replay = self.fresh_at(&pos)?;
        self.take(replay);
        Ok(())
    }

    /// Forgets the position saved as `n`; false if there is none.
    pub fn forget_position(&mut self, n: usize) -> bool {
        match n.checked_sub(1).and_then(|i| self.saved.get_mut(i)) {
            Some(slot @ Some(_)) => {
                *slot = None;
                true
            }
            _ => false,
        }
    }

    /// The saved positions, by number: the event each is after.
    pub fn saved_positions(&self) -> Vec<(usize, u64)> {
        self.saved
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i + 1, p.as_ref()?.event()?)))
            .collect()
    }

    /// Runs forward as asked, until the replay halts (keeping a checkpoint there).
    ///
    /// A halt part-way through a task's run gets an anchor (a forked copy of the replay),
    /// except after a single step on the run of the latest anchor, fewer than
    /// [`ANCHOR_EVERY`] steps past it: that anchor is then before the position, which is all
    /// `reverse-stepi` needs, and `stepi` costs a step rather than a fork.
    pub fn resume(&mut self, how: Resume) -> Result<Halt> {
        let halt = run(&mut self.checkpoints, &mut self.replay, how)?;
        self.checkpoint_here()?;
        let on_latest_run = match (&self.anchors[1], self.replay.part_way()) {
            (Some(a), Some(tid)) => a.tid == tid && a.event == self.replay.when(),
            _ => false,
        };
        if matches!(how, Resume::Step(_)) && on_latest_run && self.steps_past < ANCHOR_EVERY {
            self.steps_past += 1;
        } else {
            // Forward: the latest anchor stays before the new one.
            let earlier = self.anchors[1].take();
            self.anchors = [earlier, self.anchor_here()?];
            self.steps_past = 0;
        }
        Ok(halt)
    }

    /// Forgets the anchors (the replay moved where they say nothing of).
    fn drop_anchors(&mut self) {
        self.anchors = [None, None];
        self.steps_past = 0;
    }

    /// Runs backwards as asked: to the last halt before the current position
    /// ([`Resume::Continue`]), or to the moment before the task's last instruction
    /// ([`Resume::Step`]); [`Halt::Start`] where the replay starts.
    pub fn reverse(&mut self, how: Resume) -> Result<Halt> {
        let here = self.replay.position()?;
        if here == Position::Boundary(self.start.first) {
            return Ok(Halt::Start(self.replay.current_thread()));
        }
        if self.steps_past > 0 {
            // The later anchor is before the position: the closest one known.
            self.anchors[0] = self.anchors[1].take();
            self.steps_past = 0;
        }
        let halt = match how {
            Resume::Continue => {
                // (Nothing is known to be before where it lands.)
                self.drop_anchors();
                self.reverse_continue(&here)
            }
            // (The earlier anchor, if used, is before where it lands.)
            Resume::Step(tid) => self.reverse_step(&here, tid),
        }?;
        tracing::debug!(?halt, "went backwards");
        self.checkpoint_here()?;
        self.anchors[1] = self.anchor_here()?;
        Ok(halt)
    }

    /// The last halt before `here`: a replay started from the latest checkpoint before
    /// `here` runs to `here` counting the halts on the way, and another from the same
    /// checkpoint runs to the last of them. No halt there: the same between the checkpoint
    /// before and that one, and so on back to the start.
    fn reverse_continue(&mut self, here: &Position) -> Result<Halt> {
        let mut end = here.clone();
        let mut before = self.checkpoints.len();
        loop {
            let from = self.latest_before(&end, before);
            let mut scan = self.fresh_from(from)?;
            scan.set_mark(&end);
            let mut halts = 0u64;
            let mut last = None;
            // A copy of the scan at a recent halt, and how many halts it had made: the replay
            // to the last halt goes on from it rather than from the checkpoint.
            let mut snap: Option<(DebugReplay, u64)> = None;
            let mut snapped = Instant::now();
            loop {
                match run(&mut self.checkpoints, &mut scan, Resume::Continue)? {
                    Halt::Reached(tid) => {
                        // A breakpoint right at an earlier checkpoint's position (the mark
                        // is found before the `int3` runs) is a halt before it: the scan is
                        // there.
                        if end != *here && scan.at_breakpoint(tid)? {
                            self.take(scan);
                            return Ok(Halt::Breakpoint(tid));
                        }
                        break;
                    }
                    Halt::Exited(_) | Halt::End if end == Position::End => break,
                    e @ (Halt::Exited(_) | Halt::End) => bail!(lost(&end, e)),
                    // The debugger interrupted the search: it stays where it was.
                    i @ Halt::Interrupted(_) => return Ok(i),
                    other => {
                        halts += 1;
                        last = Some(other);
                        if snap.is_none() || snapped.elapsed() >= SNAP_EVERY {
                            if let Some(copy) = scan.copy()? {
                                snap = Some((copy, halts));
                                snapped = Instant::now();
                            }
                        }
                    }
                }
            }
            drop(scan);
            if let Some(last) = last {
                return match snap {
                    Some((copy, at)) => self.go_on_to(copy, halts - at, last),
                    None => self.rerun_to(from, halts, last),
                };
            }
            match from {
                // Nothing before `end` since the start.
                None | Some(0) => return self.go_to_start(),
                Some(i) => {
                    end = self.checkpoints[i].replay.position()?;
                    before = i;
                }
            }
        }
    }

    /// Makes a replay from checkpoint `from` that halts `halts` times, the last being `last`,
    /// the one the debugger looks at (see [`Self::go_on_to`]).
    fn rerun_to(&mut self, from: Option<usize>, halts: u64, last: Halt) -> Result<Halt> {
        let replay = self.fresh_from(from)?;
        self.go_on_to(replay, halts, last)
    }

    /// Runs `replay` on for `halts` more halts, the last being `last`, and makes it the one
    /// the debugger looks at. A watchpoint's hit is taken back to before the access.
    fn go_on_to(&mut self, mut replay: DebugReplay, halts: u64, last: Halt) -> Result<Halt> {
        self.attach_interrupt(&mut replay);
        // (A copy of a scan has the scan's mark, past the halts it goes to.)
        replay.set_mark(&Position::End);
        let mut halt = (halts == 0).then_some(last);
        for _ in 0..halts {
            halt = Some(run(&mut self.checkpoints, &mut replay, Resume::Continue)?);
        }
        if halt != Some(last) {
            bail!(
                "going backwards: a second replay halted at {halt:?} where the first one had \
                 {last:?}"
            );
        }
        self.take(replay);
        if let Halt::Watch { tid, .. } = last {
            // Going backwards, a watchpoint halts before the access: the debugger then shows
            // the value as it was before the write.
            let at_hit = self.replay.position()?;
            self.reverse_step(&at_hit, tid)?;
        }
        Ok(last)
    }

    /// The latest checkpoint among the first `before` from which a replay gets to `pos`: one
    /// at an earlier event, or at `pos`'s event before any task ran.
    fn latest_before(&self, pos: &Position, before: usize) -> Option<usize> {
        let limit = pos.event();
        self.checkpoints[..before.min(self.checkpoints.len())]
            .iter()
            .rposition(|c| match limit {
                None => true,
                Some(e) => c.event < e || (c.event == e && !c.within),
            })
    }

    /// The moment before task `tid`'s last instruction before `here`: a replay started over
    /// single-steps the task from the start of that instruction's run until it gets to
    /// `here`, and another takes one step fewer.
    fn reverse_step(&mut self, here: &Position, tid: Tid) -> Result<Halt> {
        let from = match here {
            Position::Within { event, tid: t, .. } if *t == tid => Some(*event),
            Position::End | Position::Ending { .. } => bail!("going backwards by single steps from the end of the replay is not supported; `reverse-continue` to a breakpoint first"),
            _ => self.replay.run_before(tid),
        };
        let Some(from) = from else {
            // The task has not run before: nothing of it is earlier.
            return self.go_to_start();
        };
        // From the earlier anchor if it is on the same run, else from the run's start.
        let anchored = match (&self.anchors[0], here) {
            (Some(a), Position::Within { event, tid: t, .. }) => a.event == *event && a.tid == *t,
            _ => false,
        };
        if !anchored {
            self.anchors[0] = None;
        }
        let mut scan = self.start_of_steps(from)?;
        let mut steps = 0u64;
        let limit = here.event().unwrap_or(u64::MAX);
        while !scan.is_at(here)? && scan.when() <= limit {
            match run(&mut self.checkpoints, &mut scan, Resume::Step(tid))? {
                Halt::Step(t) if t == tid => steps += 1,
                end @ (Halt::Exited(_) | Halt::End) => bail!(lost(here, end)),
                i @ Halt::Interrupted(_) => return Ok(i),
                _ => {}
            }
            if steps > MAX_STEPS {
                bail!(
                    "going backwards by single steps: task {tid} ran more than {MAX_STEPS} \
                     instructions since its last event; `reverse-continue` to a breakpoint \
                     instead"
                );
            }
        }
        drop(scan);
        if steps == 0 && self.anchors[0].is_some() {
            // The anchor is here, not before: from the run's start instead.
            self.anchors[0] = None;
            return self.reverse_step(here, tid);
        }
        if steps <= 1 {
            // The replay lands on the anchor itself, which is then no longer before it.
            let anchor = self.anchors[0].take();
            if let Some(mut a) = anchor {
                let mut replay = a.replay.copy()?.context("copying the anchor of a step")?;
                self.prepare(&mut replay)?;
                self.take(replay);
                return Ok(Halt::Step(tid));
            }
        }
        let mut replay = self.start_of_steps(from)?;
        let mut done = 0u64;
        while done + 1 < steps {
            match run(&mut self.checkpoints, &mut replay, Resume::Step(tid))? {
                Halt::Step(t) if t == tid => done += 1,
                end @ (Halt::Exited(_) | Halt::End) => bail!(lost(here, end)),
                _ => {}
            }
        }
        self.take(replay);
        Ok(Halt::Step(tid))
    }

    /// A replay where counting single steps toward the current position starts: a copy of
    /// the earlier anchor, else the boundary after event `from`.
    fn start_of_steps(&mut self, from: u64) -> Result<DebugReplay> {
        let copy = match &mut self.anchors[0] {
            Some(a) => a.replay.copy()?,
            None => None,
        };
        match copy {
            Some(mut replay) => {
                self.prepare(&mut replay)?;
                Ok(replay)
            }
            None => self.fresh_at(&Position::Boundary(from)),
        }
    }

    /// A copy of the replay at its position if a task is part-way through its run there.
    fn anchor_here(&mut self) -> Result<Option<Anchor>> {
        let Some(tid) = self.replay.part_way() else {
            return Ok(None);
        };
        let event = self.replay.when();
        Ok(self
            .replay
            .copy()?
            .map(|replay| Anchor { event, tid, replay }))
    }

    /// Goes to where the replay starts.
    fn go_to_start(&mut self) -> Result<Halt> {
        let replay = self.fresh()?;
        self.take(replay);
        Ok(Halt::Start(self.replay.current_thread()))
    }

    /// A new replay at the start (from its checkpoint), with the debugger's requests, not
    /// echoing output.
    fn fresh(&mut self) -> Result<DebugReplay> {
        self.fresh_from(self.latest_before(&Position::Boundary(self.start.first), usize::MAX))
    }

    /// A new replay from checkpoint `from` (or, with none, one started from scratch), with
    /// the debugger's requests, not echoing output.
    fn fresh_from(&mut self, from: Option<usize>) -> Result<DebugReplay> {
        let copy = match from {
            Some(i) => self.checkpoints[i].replay.copy()?,
            None => None,
        };
        let mut replay = match copy {
            Some(r) => r,
            None => DebugReplay::open(
                &self.dir,
                &StartPoint {
                    event: self.start.first,
                    ..self.start.clone()
                },
                true,
            )
            .context("starting the replay over to go backwards")?,
        };
        self.prepare(&mut replay)?;
        Ok(replay)
    }

    /// Gives a copy of a replay the debugger's requests as they are now, not echoing output.
    fn prepare(&self, replay: &mut DebugReplay) -> Result<()> {
        replay.set_quiet(true);
        replay.set_proc_events(ProcEvents::default());
        replay.set_pause_every(Some(PAUSE_EVERY));
        // (A checkpoint kept from a scan has the scan's mark.)
        replay.set_mark(&Position::End);
        let now = replay.breakpoint_addrs();
        for &addr in now.difference(&self.breakpoints) {
            replay.remove_breakpoint(addr)?;
        }
        // (A checkpoint kept before the debugger followed a fork's child debugs the parent:
        // its breakpoints are gone from there now.)
        replay.set_process(self.start.process);
        for &addr in self.breakpoints.difference(&now) {
            replay.add_breakpoint_or_pending(addr)?;
        }
        for p in replay.hw_points() {
            if !self.hw.contains(&p) {
                replay.remove_hw_point(p);
            }
        }
        for &p in &self.hw {
            replay.add_hw_point(p);
        }
        self.attach_interrupt(replay);
        Ok(())
    }

    /// Installs the debugger's interrupt check and breakpoint filter in `replay`.
    fn attach_interrupt(&self, replay: &mut DebugReplay) {
        if let Some(check) = forwarding(&self.interrupt) {
            replay.set_interrupt(check);
        }
        if let Some(shared) = &self.filter {
            replay.set_breakpoint_filter(forwarding_filter(shared));
        }
    }

    /// A new replay run to `pos` (halts on the way passed over), from the latest checkpoint
    /// before it.
    fn fresh_at(&mut self, pos: &Position) -> Result<DebugReplay> {
        let mut replay = self.fresh_from(self.latest_before(pos, usize::MAX))?;
        if replay.is_at(pos)? {
            return Ok(replay);
        }
        replay.set_mark(pos);
        loop {
            match run(&mut self.checkpoints, &mut replay, Resume::Continue)? {
                Halt::Reached(_) => return Ok(replay),
                end @ (Halt::Exited(_) | Halt::End) => bail!(lost(pos, end)),
                _ => {}
            }
        }
    }

    /// Makes `replay` the one the debugger looks at.
    fn take(&mut self, mut replay: DebugReplay) {
        replay.set_quiet(self.quiet);
        replay.set_mark(&Position::End);
        replay.set_proc_events(self.proc_events);
        self.replay.kill();
        self.replay = replay;
    }
}

/// A check that asks the debugger's shared interrupt check, for one replay.
fn forwarding(interrupt: &Option<Interrupt>) -> Option<Box<dyn FnMut() -> bool>> {
    let shared = interrupt.clone()?;
    Some(Box::new(move || (shared.borrow_mut())()))
}

/// A filter that asks the debugger's shared breakpoint filter, for one replay.
fn forwarding_filter(shared: &Filter) -> BreakpointFilter {
    let shared = shared.clone();
    Box::new(move |replay, tid| (shared.borrow_mut())(replay, tid))
}

/// Resumes `replay` as asked until it halts for something other than a pause, keeping a
/// checkpoint at each pause.
fn run(checkpoints: &mut Vec<Checkpoint>, replay: &mut DebugReplay, how: Resume) -> Result<Halt> {
    loop {
        match replay.resume(how)? {
            Halt::Pause(_) => keep_checkpoint(checkpoints, replay)?,
            halt => return Ok(halt),
        }
    }
}

/// Keeps a copy of `replay` at its position among `checkpoints`, unless one is kept at its
/// event already or the replay cannot be copied there. Checkpoints are cheap (a fork: memory
/// is shared until either side writes it); past [`MAX_CHECKPOINTS`] the one whose neighbours
/// are closest goes (never the start's), so that they stay spread over the replay.
fn keep_checkpoint(checkpoints: &mut Vec<Checkpoint>, replay: &mut DebugReplay) -> Result<()> {
    let event = replay.when();
    if checkpoints.iter().any(|c| c.event == event) {
        return Ok(());
    }
    let within = replay.part_way().is_some();
    let Some(mut copy) = replay.copy()? else {
        return Ok(());
    };
    copy.set_quiet(true);
    let at = checkpoints
        .iter()
        .position(|c| c.event > event)
        .unwrap_or(checkpoints.len());
    checkpoints.insert(
        at,
        Checkpoint {
            event,
            within,
            replay: copy,
        },
    );
    if checkpoints.len() > MAX_CHECKPOINTS {
        let densest = (1..checkpoints.len() - 1)
            .min_by_key(|&i| checkpoints[i + 1].event - checkpoints[i - 1].event)
            .unwrap_or(1);
        checkpoints.remove(densest);
    }
    tracing::debug!(event, within, kept = checkpoints.len(), "checkpoint");
    Ok(())
}

/// Why going backwards failed: a replay started over ended without getting to `pos`.
fn lost(pos: &Position, end: Halt) -> String {
    let at = match pos {
        Position::Boundary(e) => format!("event {e}"),
        Position::Within { event, tid, .. } => format!("task {tid}'s run after event {event}"),
        Position::Ending { event, tid } => format!("task {tid}'s exit after event {event}"),
        Position::End => "the end".into(),
    };
    format!(
        "going backwards: the replay started over did not get back to its position ({at}); it \
         ended ({end:?})"
    )
}
