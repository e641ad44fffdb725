//! A task running to the exact point of its next event: a preemption (the recorder took the
//! CPU from it mid-code) or an asynchronous signal that landed mid-code.
//!
//! The point is a complete state (registers, FP state, memory digest); the replay finds it
//! again with a [`Locator`] (see `tracee::locate`): a trampoline over the instruction at the
//! point's `rip` that traps only when the state matches. The session keeps the locator while the
//! task runs toward the point, arms it right before each `PTRACE_CONT` and disarms it right after
//! each stop, so that a debugger halting the replay meanwhile never sees the patch, and its
//! breakpoints, watchpoints and single steps keep working (a single step runs unarmed and is
//! followed by a full check of the state).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use trace_format::{Point, Tid};
use tracee::debugregs::{DebugRegs, WatchKind, SLOTS};
use tracee::locate::Locator;
use tracee::state::comparable;
use tracee::{regs, Tracee};

/// Index of `rip` in [`Point::regs`] (`user_regs_struct` order).
pub(crate) const RIP: usize = 16;

/// How long a task may run toward a point in any case before the replay calls it lost.
const BASE_LIMIT: Duration = Duration::from_secs(30);

/// The recorder's tick (see `Point::ticks`).
const TICK: Duration = Duration::from_millis(10);

/// How many times slower than the recording the run to a point may be before it is called lost
/// (the replay runs at native speed, but the machine may be busier than when it recorded).
const SLOWDOWN: u32 = 10;

/// The event a point belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointEvent {
    /// `Event::Preempt`.
    Preempt,
    /// `Event::Signal` of this signal, delivered at the point.
    Signal(i32),
    /// No event: the position a debugger halts at (`Position::Within`), on the way to the
    /// task's next stop.
    Mark,
}

/// A locator and what it was built for: when the debugger's breakpoints or hardware points
/// change, it is built again (its patch must not overlap a breakpoint, and its debug-register
/// slots must be ones the debugger leaves free).
struct Built {
    locator: Locator,
    room: Room,
    /// It was armed once (which maps its scratch memory).
    armed_once: bool,
}

/// What a locator may use in the task: code ranges it must not patch, debug-register slots it
/// may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Room {
    /// `[start, end)` byte ranges holding the debugger's breakpoints (software ones, and
    /// hardware ones, which code relocated into the trampoline would not trigger).
    pub avoid: Vec<(u64, u64)>,
    /// Debug-register slots the debugger does not use.
    pub free: Vec<usize>,
    /// `[start, end)` ranges the task maps while it runs toward the point (its buffered
    /// `mmap`s, which the replay's library places at their recorded addresses): the scratch
    /// page must leave them free.
    pub reserved: Vec<(u64, u64)>,
}

impl Room {
    /// A task the debugger does not look at: all of it.
    pub fn all() -> Room {
        Room {
            avoid: Vec::new(),
            free: (0..SLOTS).collect(),
            reserved: Vec::new(),
        }
    }

    /// A task of the debugged process, whose memory holds `breakpoints` and whose debug
    /// registers hold `regs`.
    pub fn around(breakpoints: &BTreeMap<u64, u8>, regs: &DebugRegs) -> Room {
        let hardware = regs
            .slots
            .iter()
            .flatten()
            .filter(|s| s.kind == WatchKind::Execute)
            .map(|s| s.addr);
        let mut avoid: Vec<(u64, u64)> = breakpoints
            .keys()
            .copied()
            .chain(hardware)
            .map(|a| (a, a + 1))
            .collect();
        avoid.sort_unstable();
        avoid.dedup();
        Room {
            avoid,
            free: (0..SLOTS).filter(|&i| regs.slots[i].is_none()).collect(),
            reserved: Vec::new(),
        }
    }
}

/// The task running to the point of its next event.
pub(crate) struct Toward {
    /// The task.
    pub tid: Tid,
    /// The point.
    pub point: Box<Point>,
    /// The event it belongs to.
    pub event: PointEvent,
    /// The locator, once built (lazily: not while a signal is still to be delivered).
    built: Option<Built>,
    /// The last launch continued the task with the locator armed.
    pub armed: bool,
    /// The last launch single-stepped the task (unarmed).
    pub stepped: bool,
    /// That single step delivered the signal the task resumed with (its trap, at the handler's
    /// first instruction, is the replay's, not the debugger's nor the recording's).
    pub delivering: bool,
    /// How long the task has run toward the point so far.
    pub ran: Duration,
    /// When to give up.
    pub limit: Duration,
    /// A `SIGSTOP` was sent because the task ran past `limit`.
    pub timeout_sent: bool,
    /// Near misses and guards the locator let pass, for reports.
    pub passes: u64,
}

impl Toward {
    /// Task `tid` must next stop at `point`, where `event` happened.
    pub fn new(tid: Tid, point: Box<Point>, event: PointEvent) -> Self {
        let limit = limit(point.ticks);
        Toward {
            tid,
            point,
            event,
            built: None,
            armed: false,
            stepped: false,
            delivering: false,
            ran: Duration::ZERO,
            limit,
            timeout_sent: false,
            passes: 0,
        }
    }

    /// The point's instruction address.
    pub fn rip(&self) -> u64 {
        rip(&self.point)
    }

    /// What the recording had there, for reports.
    pub fn expected(&self) -> String {
        match self.event {
            PointEvent::Preempt => format!("the preemption point at rip {:#x}", self.rip()),
            PointEvent::Signal(signo) => {
                format!("signal {signo} delivered mid-code at rip {:#x}", self.rip())
            }
            PointEvent::Mark => format!("the debugger's position at rip {:#x}", self.rip()),
        }
    }

    /// Details for a divergence report whose `found` part is `found`: how far the search went
    /// (unless `found` says so already, as the locator's give-up errors do).
    pub fn details(&self, found: &str) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(b) = &self.built {
            let report = b.locator.report();
            if !found.contains(&report) {
                d.push(format!("search: {report}"));
            }
        }
        let ticks = self.point.ticks;
        d.push(format!(
            "ran {:.2} s toward the point (the recording: {ticks} tick{} of 10 ms since the \
             previous event)",
            self.ran.as_secs_f64(),
            if ticks == 1 { "" } else { "s" }
        ));
        d
    }

    /// Whether the locator was built for other breakpoints or debug registers than `room`.
    pub fn stale(&self, room: &Room) -> bool {
        self.built.as_ref().is_some_and(|b| b.room != *room)
    }

    /// The locator, built for `room` in stopped task `t` if there is none yet.
    pub fn locator(&mut self, t: &Tracee, room: Room) -> Result<&mut Locator> {
        let built = match self.built.take() {
            Some(b) => b,
            None => Built {
                locator: Locator::new(t, &self.point, &room.avoid, &room.free, &room.reserved)
                    .with_context(|| {
                        format!("preparing to find {} in task {}", self.expected(), self.tid)
                    })?,
                room,
                armed_once: false,
            },
        };
        Ok(&mut self.built.insert(built).locator)
    }

    /// Arms the locator (built for `room` if there is none) in stopped task `t` before it is
    /// continued. The first arming maps the trampoline.
    pub fn arm(&mut self, t: &Tracee, room: Room) -> Result<()> {
        self.locator(t, room)?;
        let Some(b) = self.built.as_mut() else {
            bail!("task {} has no point locator to arm", self.tid);
        };
        b.locator.arm(t)?;
        b.armed_once = true;
        Ok(())
    }

    /// Whether arming the locator will run a syscall in the task (the first arming maps its
    /// trampoline).
    pub fn arming_injects(&self) -> bool {
        !self.built.as_ref().is_some_and(|b| b.armed_once)
    }

    /// The locator, if built.
    pub fn built(&mut self) -> Option<&mut Locator> {
        self.built.as_mut().map(|b| &mut b.locator)
    }

    /// Whether `rip` is in the locator's trampoline (where a near miss leaves the task, and
    /// where an interrupt may catch it).
    pub fn in_trampoline(&self, rip: u64) -> bool {
        self.built.as_ref().is_some_and(|b| {
            b.armed_once
                && b.locator
                    .scratch_range()
                    .is_some_and(|(start, end)| rip >= start && rip < end)
        })
    }

    /// The locator's scratch memory in the task, once mapped.
    pub fn scratch(&self) -> Option<(u64, u64)> {
        self.built
            .as_ref()
            .filter(|b| b.armed_once)
            .and_then(|b| b.locator.scratch_range())
    }

    /// Takes the locator out of stopped task `t` (its scratch memory and debug registers).
    pub fn finish(&mut self, t: &Tracee) -> Result<()> {
        match self.built.take() {
            Some(b) => b
                .locator
                .finish(t)
                .with_context(|| format!("removing the point locator from task {}", self.tid)),
            None => Ok(()),
        }
    }
}

/// The instruction address of `point`.
pub(crate) fn rip(point: &Point) -> u64 {
    point.regs[RIP]
}

/// How the registers and FP state of stopped task `t` differ from `point`'s (empty: equal), as
/// a point compares them. (Its memory digest is compared when the locator finds the point;
/// what the replay does in the task afterwards, syscalls run with its registers restored,
/// leaves the memory alone.)
pub(crate) fn registers_differ(t: &Tracee, point: &Point) -> Result<Vec<String>> {
    let now = comparable(&regs::to_words(&t.regs()?));
    let want = comparable(&point.regs);
    let mut out: Vec<String> = (0..regs::REGS_WORDS)
        .filter(|&i| now[i] != want[i])
        .map(|i| format!("{}: {:#x} -> {:#x}", regs::WORD_NAMES[i], want[i], now[i]))
        .collect();
    if t.fp_regs()?.to_bytes() != point.fpregs {
        out.push("FP state".into());
    }
    Ok(out)
}

/// How long a task may run toward a point it reached after `ticks` ticks in the recording.
pub(crate) fn limit(ticks: u32) -> Duration {
    BASE_LIMIT + TICK * ticks.saturating_mul(SLOWDOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rip: u64, ticks: u32) -> Box<Point> {
        let mut regs = [0u64; 27];
        regs[RIP] = rip;
        Box::new(Point {
            regs,
            fpregs: vec![],
            digest: [0; 16],
            excluded: vec![],
            watch: vec![],
            ticks,
        })
    }

    #[test]
    fn reports_name_the_event_and_the_point() {
        let w = Toward::new(7, point(0x401136, 3), PointEvent::Preempt);
        assert_eq!(w.rip(), 0x401136);
        assert_eq!(w.expected(), "the preemption point at rip 0x401136");
        let w = Toward::new(7, point(0x401136, 3), PointEvent::Signal(14));
        assert_eq!(w.expected(), "signal 14 delivered mid-code at rip 0x401136");
        assert_eq!(
            w.details("anything"),
            vec![
                "ran 0.00 s toward the point (the recording: 3 ticks of 10 ms since the \
                  previous event)"
                    .to_string()
            ]
        );
        let w = Toward::new(7, point(0x401136, 1), PointEvent::Preempt);
        assert!(w.details("")[0].contains(": 1 tick of"));
    }

    #[test]
    fn the_time_limit_grows_with_the_recorded_ticks() {
        assert_eq!(limit(0), Duration::from_secs(30));
        assert_eq!(limit(100), Duration::from_secs(40));
        assert!(limit(u32::MAX) > Duration::from_secs(30), "no overflow");
    }

    #[test]
    fn the_debuggers_points_are_left_alone() {
        let mut breakpoints = BTreeMap::new();
        breakpoints.insert(0x1000, 0x55);
        breakpoints.insert(0x2005, 0x90);
        let mut regs = DebugRegs::new();
        assert_eq!(regs.insert(0x4000, 8, WatchKind::Write), Some(vec![0]));
        assert_eq!(regs.insert(0x1000, 1, WatchKind::Execute), Some(vec![1]));
        assert_eq!(regs.insert(0x3000, 1, WatchKind::Execute), Some(vec![2]));
        let room = Room::around(&breakpoints, &regs);
        assert_eq!(
            room.avoid,
            vec![(0x1000, 0x1001), (0x2005, 0x2006), (0x3000, 0x3001)],
            "software and hardware breakpoints, not the watchpoint"
        );
        assert_eq!(room.free, vec![3]);
        assert_eq!(Room::all().free, vec![0, 1, 2, 3]);
        assert!(Room::all().avoid.is_empty());
    }
}
