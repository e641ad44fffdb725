//! Traces recorded in lanes (see the recorder's README, "Processes recorded in parallel"):
//! each lane of the recorder ran one of its tasks at a time, the lanes at once, so a task's
//! next event is the next event *of its lane*, with other lanes' events in between. A task's
//! lane is 0 until a `Lane` event moves its process; the tasks it creates are in its lane.
//! The replay still runs one task at a time, each from its event to its next stop, in the
//! trace's order: tasks of different lanes share no memory, so the order of their runs
//! changes nothing they compute.

use std::collections::HashMap;

use anyhow::Result;
use trace_format::{Event, LaneEvent, Tid};

use super::Session;

impl Session {
    /// The lane of task `tid`.
    pub(super) fn lane(&self, tid: Tid) -> u8 {
        self.lanes.get(&tid).copied().unwrap_or(0)
    }

    /// A `Lane` event: `e.tid`'s runs from now on are in lane `e.lane`.
    pub(super) fn lane_event(&mut self, e: &LaneEvent) {
        tracing::debug!(tid = e.tid, lane = e.lane, "moves to another lane");
        self.lanes.insert(e.tid, e.lane);
    }

    /// A task `child` made by `parent`: in its parent's lane.
    pub(super) fn inherit_lane(&mut self, parent: Tid, child: Tid) {
        match self.lanes.get(&parent).copied() {
            Some(lane) => self.lanes.insert(child, lane),
            None => self.lanes.remove(&child),
        };
    }

    /// Right after `tid`'s event, before it runs on: takes the `Lane` event of `tid` the
    /// recorder wrote there, if any.
    pub(super) fn take_lane_change(&mut self, tid: Tid) -> Result<()> {
        if let Some(Event::Lane(e)) = self.peek()? {
            if e.tid == tid {
                let e = e.clone();
                self.take()?;
                self.index += 1;
                self.lane_event(&e);
            }
        }
        Ok(())
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
