//! Chaos scheduling (`deja rec --chaos[=SEED]`): scheduling decisions drawn from a seeded
//! generator instead of the fair defaults, so that races a fair one-task-at-a-time schedule
//! hides show up (see the crate README, "Chaos scheduling"). What it decides:
//!
//! - which ready task runs next: any but the one that ran last, at random; and now and then
//!   (one time in eight, drawn at random intervals of 100 to 500 ms) one task starves for
//!   such an interval, running only when no other is ready (rr's chaos mode starves tasks
//!   too, by random priorities);
//! - how long a time slice lasts: 1 to 5 ms three times in four, else 5 to 50 ms (the default
//!   is 50 ms), drawn for each slice (the recorder's timer then ticks every millisecond, not
//!   every 10);
//! - where a preemption lands: the recorder single-steps a task [`WATCH_STEPS`] instructions
//!   past the stop its `SIGSTOP` made before it takes the point (to learn the memory it writes
//!   near it, which lets the replay tell one visit of the place from another); chaos adds from
//!   none to [`MAX_EXTRA_STEPS`] more, so the point falls anywhere in a loop's body rather than
//!   at one phase.
//!
//! The recording stays exact whatever is drawn: every decision only chooses among schedules
//! the recorder can make anyway, and the trace holds the one it made.

use std::time::Duration;

use super::point::WATCH_STEPS;
use crate::task::State;

/// Most instructions chaos adds to [`WATCH_STEPS`].
pub(crate) const MAX_EXTRA_STEPS: usize = 256;

/// How many times the recorder looks for the exit of a `sched_yield`.
const YIELD_POLLS: usize = 64;

/// How many times the recorder looks for the stop of a task on its way to one before a chaos
/// decision.
const SETTLE_POLLS: usize = 64;

/// The generator and what it drew.
#[derive(Debug)]
pub(crate) struct Chaos {
    state: u64,
    /// The task starved until `redraw_at`, if any.
    starved: Option<i32>,
    /// The timer tick at which the starved task is drawn again.
    redraw_at: u32,
    /// The task picked last.
    last: Option<i32>,
    /// Ticks of the current time slice.
    slice: u32,
}

impl Chaos {
    /// A chaos scheduler drawing from `seed`.
    pub(crate) fn new(seed: u64) -> Chaos {
        Chaos {
            state: seed,
            starved: None,
            redraw_at: 0,
            last: None,
            slice: 1,
        }
    }

    /// The next number of the generator (SplitMix64).
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Ticks until the starved task is drawn again: 100 to 500 ms.
    fn redraw_interval(&mut self) -> u32 {
        super::ticks_in(Duration::from_millis(100 + self.below(401)))
    }

    /// Which of `ready` (task ids, all waiting for the CPU, in an order that does not depend
    /// on timing) runs next, at timer tick `tick`: its index. Not the task that ran last, nor the starved
    /// one, while another waits; else any, at random.
    pub(crate) fn pick(&mut self, ready: &[i32], tick: u32) -> usize {
        if tick.wrapping_sub(self.redraw_at) < u32::MAX / 2 {
            // One time in eight, one of the tasks ready now starves for a while.
            self.starved =
                (self.below(8) == 0).then(|| ready[self.below(ready.len() as u64) as usize]);
            self.redraw_at = tick.wrapping_add(self.redraw_interval());
        }
        let mut choice: Vec<usize> = (0..ready.len())
            .filter(|&i| Some(ready[i]) != self.starved && Some(ready[i]) != self.last)
            .collect();
        if choice.is_empty() {
            choice = (0..ready.len())
                .filter(|&i| Some(ready[i]) != self.starved)
                .collect();
        }
        if choice.is_empty() {
            choice = (0..ready.len()).collect();
        }
        let i = choice[self.below(choice.len() as u64) as usize];
        self.last = Some(ready[i]);
        i
    }

    /// A task ended.
    pub(crate) fn forget(&mut self, tid: i32) {
        if self.starved == Some(tid) {
            self.starved = None;
        }
        if self.last == Some(tid) {
            self.last = None;
        }
    }

    /// Draws the length of a new time slice: 1 to 5 ms three times in four, else 5 to 50 ms.
    pub(crate) fn new_slice(&mut self) {
        let ms = if self.below(4) != 0 {
            1 + self.below(5)
        } else {
            5 + self.below(46)
        };
        self.slice = super::ticks_in(Duration::from_millis(ms));
    }

    /// Ticks of the current time slice.
    pub(crate) fn slice(&self) -> u32 {
        self.slice
    }

    /// How many instructions to step past a preemption's stop before its point, beyond
    /// [`WATCH_STEPS`].
    pub(crate) fn extra_steps(&mut self) -> usize {
        self.below(MAX_EXTRA_STEPS as u64 + 1) as usize
    }
}

impl super::Session {
    /// With chaos scheduling, moves the ready task chaos picks to the front of the ready
    /// FIFO, where `schedule_next` takes it.
    pub(super) fn chaos_pick(&mut self) -> anyhow::Result<()> {
        if self.chaos.is_none() {
            return Ok(());
        }
        self.settle_runnable()?;
        // Deaths it reported come before any event of a task that may have seen them (a
        // `wait4` reaping the child), as at the top of the recording loop.
        for e in std::mem::take(&mut self.exits) {
            self.writer.push(trace_format::Event::Exit(e))?;
        }
        let Some(chaos) = self.chaos.as_mut() else {
            return Ok(());
        };
        // In the order the tasks were made (ids grow), not the order their stops came in, so
        // that the same tasks ready make the same choice.
        let mut waiting: Vec<(usize, i32)> = self
            .ready
            .iter()
            .enumerate()
            .filter(|(_, tid)| self.tasks.get(tid).is_some_and(|t| t.state.waits_for_cpu()))
            .map(|(i, &tid)| (i, tid))
            .collect();
        waiting.sort_by_key(|&(_, tid)| tid);
        if waiting.len() < 2 {
            chaos.last = waiting.first().map(|&(_, tid)| tid).or(chaos.last);
            return Ok(());
        }
        let tids: Vec<i32> = waiting.iter().map(|&(_, tid)| tid).collect();
        let (i, tid) = waiting[chaos.pick(&tids, self.ticks)];
        self.ready.remove(i);
        self.ready.push_front(tid);
        Ok(())
    }

    /// Before a chaos decision: lets every task that is on its way to a stop without the CPU
    /// (a new task before its first stop, a task whose syscall just returned) reach it, and
    /// handles those stops, so that the tasks to choose from are the same whatever the timing
    /// of their stops (the recorded tasks share one CPU with the recorder, which yields it
    /// while it waits). A task still running after [`SETTLE_POLLS`] looks is left to run.
    fn settle_runnable(&mut self) -> anyhow::Result<()> {
        let on_the_way: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                matches!(t.state, State::Unborn)
                    || matches!(&t.state, State::InSyscall(e) if !e.exclusive)
            })
            .map(|(&tid, _)| tid)
            .collect();
        for tid in on_the_way {
            let pid = nix::unistd::Pid::from_raw(tid);
            if let Some(stop) = tracee::stop::poll_while_runnable(pid, SETTLE_POLLS)? {
                let handled = self.dispatch(tid, stop);
                self.unless_vanished(handled)?;
            }
        }
        Ok(())
    }

    /// A `sched_yield` of `tid`, just let into the call while it holds the CPU: waits for the
    /// call's exit (it returns at once) and queues the task as ready behind the others, so
    /// that the next task to run (chaos's choice, or the first ready) is chosen among all the
    /// tasks ready, the yielder too, whatever the timing of the stops; true then. False while
    /// emulated ptrace runs, or if the exit did not come at once (the CPU then goes to the
    /// others, as at any call that may block). (Without it, two threads taking turns with
    /// `sched_yield` could see one run twice in a row when the other's exit stop came late:
    /// rr's `sched_yield` test failed one recording in three once the recorder made its
    /// resume requests after its lock.)
    pub(super) fn yield_in_turn(&mut self, tid: i32) -> anyhow::Result<bool> {
        if !self.ptrace.is_empty() {
            return Ok(false);
        }
        let pid = nix::unistd::Pid::from_raw(tid);
        let Some(stop) = tracee::stop::poll_while_runnable(pid, YIELD_POLLS)? else {
            return Ok(false);
        };
        // Its exit (or another stop) handled as when it gave the CPU up: the task waits for
        // the CPU in the ready FIFO.
        self.current = None;
        self.dispatch(tid, stop)?;
        Ok(true)
    }

    /// How many instructions to step past a preemption's stop before its point: [`WATCH_STEPS`],
    /// and as many more as chaos draws.
    pub(super) fn steps_to_point(&mut self) -> usize {
        WATCH_STEPS + self.chaos.as_mut().map_or(0, Chaos::extra_steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_decisions() {
        let draw = |seed| {
            let mut c = Chaos::new(seed);
            (0..200)
                .map(|i| {
                    c.new_slice();
                    (c.pick(&[1, 2, 3, 4], i), c.slice(), c.extra_steps())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn every_choice_is_drawn_sometimes() {
        let mut c = Chaos::new(1);
        let mut picked = [0; 3];
        let mut slices = [0; 6];
        for i in 0..3000 {
            picked[c.pick(&[10, 11, 12], i * 10)] += 1;
            c.new_slice();
            slices[c.slice() as usize] += 1;
            assert!(c.extra_steps() <= MAX_EXTRA_STEPS);
        }
        assert!(picked.iter().all(|&n| n > 0), "{picked:?}");
        assert!(slices[1..].iter().all(|&n| n > 0), "{slices:?}");
    }
}
