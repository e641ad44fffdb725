//! gdb's range stepping (`vCont;rSTART,END:TID`): gdb's `next` and `step` single-step a line's
//! instructions until the pc leaves the line, and with range stepping the server takes those
//! steps itself and reports only the one that leaves, instead of a stop reply and gdb's
//! requests (pc, stack, breakpoints) for every instruction.

use std::ops::Range;
use std::time::{Duration, Instant};

use gdbstub::common::Tid;
use gdbstub::target::ext::base::multithread::MultiThreadRangeStepping;
use replayer::{Halt, Resume, Timeline};

use crate::target::{recorded_tid, ReplayTarget};

/// How long one range step runs at most before it reports a stop anyway (still in the range:
/// gdb then asks for another), so that gdb's interrupt is seen and the replay's position is
/// never far from what gdb last saw.
const MAX_RANGE_TIME: Duration = Duration::from_millis(200);

impl MultiThreadRangeStepping for ReplayTarget {
    fn set_resume_action_range_step(
        &mut self,
        tid: Tid,
        start: u64,
        end: u64,
    ) -> Result<(), Self::Error> {
        self.set_range_step(recorded_tid(tid), start..end);
        Ok(())
    }
}

/// Single-steps task `tid` of `timeline` until its pc leaves `range` (at least one step; an
/// empty range is one step), it reaches one of the debugger's breakpoints, anything else
/// halts the replay (returned as it is), or [`MAX_RANGE_TIME`] passes.
pub(crate) fn range_step(
    timeline: &mut Timeline,
    tid: trace_format::Tid,
    range: Range<u64>,
) -> anyhow::Result<Halt> {
    let started = Instant::now();
    let mut steps = 0u64;
    loop {
        steps += 1;
        let halt = timeline.resume(Resume::Step(tid))?;
        if halt != Halt::Step(tid) || range.is_empty() {
            return Ok(halt);
        }
        let pc = timeline.replay().regs(tid)?.rip;
        // (The clock every 256 steps: on the tracer thread, reading it costs a trap.)
        if !range.contains(&pc)
            || timeline.replay().has_breakpoint_at(pc)
            || (steps % 256 == 0 && started.elapsed() >= MAX_RANGE_TIME)
        {
            return Ok(halt);
        }
    }
}
