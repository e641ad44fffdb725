//! Replaying the recorder's lanes at once (`deja replay -a`): each lane's events are replayed
//! by a tracer thread of its own, the lanes' threads at the same time, as the recorder ran them.
//!
//! The recorder (its README, "Processes recorded in parallel: lanes") ran each lane's tasks one
//! at a time, and the lanes at once; the tasks of different lanes share no memory. So each
//! lane's events, taken alone in the trace's order, are a one-CPU recording of its tasks, which
//! the replay runs as any other (one task at a time, each from its event to its next stop):
//! what a task computes depends only on its own lane's events. A lane's thread reads the whole
//! trace and keeps its own lane's events ([`LaneFilter`]), with their indices in the trace.
//!
//! The lanes meet only where the recorder moved a process from one lane to the other: at the
//! `Lane` event, which both threads see. The thread of the lane the task leaves parks it (see
//! `tracee::migrate`) and hands it over here ([`Shared::hand_over`]) with what the replay keeps
//! of its process; the other thread waits for it ([`Shared::take_over`]), adopts it and lets it
//! run on. A thread waits only there, for the other to reach the same event, and a thread
//! reaches an event having waited only at earlier ones: no two threads wait for each other.
//! (The replay runs for real only the calls that shape a process — `mmap`, `clone`, `execve`,
//! exits — none of which waits for another process; `wait4`, pipes and futexes are emulated.)
//!
//! What the program wrote to stdout and stderr is echoed in the trace's order all the same:
//! an event's output waits until the other lane has gone past that event ([`Shared::echo`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use trace_format::{Event, Tid};
use tracee::forced_segv::KERNEL_SIGACTION;
use tracee::migrate::Parked;

use crate::patched::Site;
use crate::tasks::Task;

/// How many lanes the recorder has (its first and its second tracer thread).
pub(crate) const LANES: usize = 2;

/// Which events of the trace belong to one lane: those of its tasks, and the `Lane` events
/// that move a task into it. A task is in lane 0 until a `Lane` event moves its process; a
/// task a clone makes is in its parent's lane.
#[derive(Debug, Clone)]
pub(crate) struct LaneFilter {
    lane: u8,
    lanes: HashMap<Tid, u8>,
}

impl LaneFilter {
    /// The filter of lane `lane`.
    pub fn new(lane: u8) -> Self {
        LaneFilter {
            lane,
            lanes: HashMap::new(),
        }
    }

    /// Whether `ev`, the next event of the trace, belongs to this lane. Every event of the
    /// trace must pass through here, in order: the lanes of tasks change as they go by.
    pub fn keep(&mut self, ev: &Event) -> bool {
        let owner = self.lanes.get(&ev.tid()).copied().unwrap_or(0);
        let keep = match ev {
            Event::Lane(e) => owner == self.lane || e.lane == self.lane,
            _ => owner == self.lane,
        };
        match ev {
            Event::Lane(e) => {
                self.lanes.insert(e.tid, e.lane);
            }
            Event::Clone(c) => {
                self.lanes.insert(c.child, owner);
            }
            _ => {}
        }
        keep
    }
}

/// A task on its way from one lane's thread to the other's, with what the replay keeps of it
/// and of its process (it is alone in it: the recorder moves no other).
pub(crate) struct Moving {
    /// The task, parked (detached, waiting in `pause`).
    pub task: Task,
    /// How to take it over.
    pub parked: Parked,
    /// Its process's patched syscall sites.
    pub sites: Option<BTreeMap<u64, Site>>,
    /// Its process's `SIGSEGV` action (see `tracee::forced_segv`).
    pub segv: Option<[u8; KERNEL_SIGACTION]>,
    /// Whether it blocks `SIGSEGV` (see `tracee::segv_mask`).
    pub segv_blocked: bool,
}

/// A lane's thread stopped because the other lane's failed (that failure is the replay's).
#[derive(Debug)]
pub(crate) struct OtherLaneFailed;

impl std::fmt::Display for OtherLaneFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the replay of the other lane failed")
    }
}

impl std::error::Error for OtherLaneFailed {}

/// What the lanes' threads share.
pub(crate) struct Shared {
    /// By task and the index of the `Lane` event that moves it (a task may move back before
    /// the other thread took it the first time).
    moving: Mutex<HashMap<(Tid, u64), Moving>>,
    moved: Condvar,
    failed: AtomicBool,
    echo: Mutex<Echoes>,
    progress: Option<Arc<dyn crate::Progress>>,
}

/// Output waiting for its turn, and how far each lane is.
struct Echoes {
    /// By event index: the lane that wrote it, the stream, the bytes.
    pending: BTreeMap<u64, (usize, u8, Vec<u8>)>,
    /// The event each lane replays now: it writes nothing for an earlier one (`u64::MAX` for
    /// a lane that has no more, or none yet).
    at: [u64; LANES],
}

impl Shared {
    /// The lanes' shared state; output is echoed out of `progress`'s way.
    pub fn new(progress: Option<Arc<dyn crate::Progress>>) -> Arc<Self> {
        let mut at = [u64::MAX; LANES];
        at[0] = 0;
        Arc::new(Shared {
            moving: Mutex::new(HashMap::new()),
            moved: Condvar::new(),
            failed: AtomicBool::new(false),
            echo: Mutex::new(Echoes {
                pending: BTreeMap::new(),
                at,
            }),
            progress,
        })
    }

    /// Hands task `tid` (parked) to the other lane's thread at the `Lane` event `event`.
    pub fn hand_over(&self, tid: Tid, event: u64, m: Moving) {
        lock(&self.moving).insert((tid, event), m);
        self.moved.notify_all();
    }

    /// Waits for task `tid` from the other lane's thread at the `Lane` event `event` and
    /// takes it. Fails when a lane's replay failed meanwhile.
    pub fn take_over(&self, tid: Tid, event: u64) -> Result<Moving> {
        let mut moving = lock(&self.moving);
        loop {
            if let Some(m) = moving.remove(&(tid, event)) {
                return Ok(m);
            }
            if self.failed() {
                return Err(OtherLaneFailed.into());
            }
            moving = self
                .moved
                .wait_timeout(moving, Duration::from_millis(100))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }

    /// The tasks parked for a thread that will not take them (the replay failed): to kill.
    pub fn left_over(&self) -> Vec<Moving> {
        lock(&self.moving).drain().map(|(_, m)| m).collect()
    }

    /// A lane's replay failed: the other stops too.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.moved.notify_all();
    }

    /// Whether a lane's replay failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Lane `lane` replays event `index` now (`u64::MAX`: it has no more events). Echoes the
    /// output this lets through.
    pub fn at_event(&self, lane: usize, index: u64) {
        let mut e = lock(&self.echo);
        e.at[lane] = index;
        self.flush(&mut e);
    }

    /// Lane `lane`'s event `index` wrote `bytes` to `stream`: echoed once no lane can write
    /// anything for an earlier event.
    pub fn echo(&self, lane: usize, index: u64, stream: u8, bytes: &[u8]) {
        let mut e = lock(&self.echo);
        e.pending
            .entry(index)
            .and_modify(|(_, _, b)| b.extend_from_slice(bytes))
            .or_insert_with(|| (lane, stream, bytes.to_vec()));
        self.flush(&mut e);
    }

    /// Echoes what is still pending (the replay ended, or failed).
    pub fn flush_all(&self) {
        let mut e = lock(&self.echo);
        e.at = [u64::MAX; LANES];
        self.flush(&mut e);
    }

    fn flush(&self, e: &mut Echoes) {
        while let Some((&index, &(lane, _, _))) = e.pending.first_key_value() {
            let passed = (0..LANES).all(|other| other == lane || e.at[other] > index);
            if !passed {
                return;
            }
            if let Some((_, (_, stream, bytes))) = e.pending.pop_first() {
                if let Err(err) = crate::echo::write_out(stream, &bytes, self.progress.as_deref()) {
                    tracing::warn!("could not echo output: {err:#}");
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace_format::{CloneEvent, LaneEvent};

    fn lane(tid: Tid, lane: u8) -> Event {
        Event::Lane(LaneEvent { tid, lane })
    }

    #[test]
    fn a_lane_keeps_its_tasks_events_and_the_moves_into_it() {
        let clone = |tid, child| {
            Event::Clone(CloneEvent {
                tid,
                nr: libc::SYS_clone as u64,
                child,
                child_pid: child,
                parent_pid: tid,
                flags: 0,
                writes: vec![],
            })
        };
        let events = [
            clone(1, 2),
            lane(2, 1),
            clone(2, 3),
            clone(1, 4),
            lane(3, 0),
        ];
        let kept = |l| {
            let mut f = LaneFilter::new(l);
            events.iter().map(|e| f.keep(e)).collect::<Vec<_>>()
        };
        assert_eq!(kept(0), [true, true, false, true, true]);
        assert_eq!(kept(1), [false, true, true, false, true]);
    }
}
