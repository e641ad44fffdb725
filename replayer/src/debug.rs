//! What a debugger attached to a replay asks of it: where to halt (breakpoints, watchpoints,
//! single steps, an interrupt, an event number) and why the replay halted.
//!
//! A debugger never changes what the replay computes. Breakpoints are `int3` bytes that the
//! replay hides from every read (its own and the debugger's) and steps over; watchpoints are
//! the CPU's debug registers, plus a check of the memory the replay itself writes for a
//! syscall; halts happen between two instructions of one task, or before a task runs after an
//! event, and resuming goes on exactly where the replay was.

use std::collections::{BTreeMap, BTreeSet};

use trace_format::{ExitStatus, Point, Tid};
use tracee::debugregs::{self, DebugRegs};

/// Why a debugged replay halted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// The task executed a software breakpoint (its pc is the breakpoint's address).
    Breakpoint(Tid),
    /// The task reached a hardware breakpoint.
    HwBreakpoint(Tid),
    /// The task accessed watched memory (or a syscall it made wrote there).
    Watch {
        /// The task.
        tid: Tid,
        /// The kind of the watchpoint that fired.
        kind: WatchKind,
        /// The address the debugger watches.
        addr: u64,
    },
    /// The task completed the single step it was asked for.
    Step(Tid),
    /// A recorded signal is about to be delivered to the task.
    Signal {
        /// The task.
        tid: Tid,
        /// The signal.
        signo: i32,
    },
    /// The debugger interrupted the replay (Ctrl-C); the task is the one that was running.
    Interrupted(Tid),
    /// The replay reached the position it was asked to start at.
    Reached(Tid),
    /// The debugged process ended as recorded.
    Exited(ExitStatus),
    /// The recording ends here without the debugged process having ended (its recorder was
    /// killed); nothing further can be replayed.
    End,
    /// Going backwards reached the start of the replay: there is nothing earlier to go to.
    Start(Tid),
    /// The debugged process is about to end: its task is stopped at the `exit_group` (or its
    /// last thread's `exit`) it is making. Reported once per arrival, as rr does, so that the
    /// debugger can still go backwards from the end; going on ends the process.
    Ending(Tid),
    /// The replay paused between events for its timeline to keep a checkpoint (see
    /// [`Debug::pause_every`]); never a debugger's halt.
    Pause(Tid),
    /// The task's `fork` (or `vfork`, or a `clone` making a process) made process `child`;
    /// the task is back from the call, in the parent (only when the debugger asked, see
    /// [`ProcEvents`]).
    Fork {
        /// The task that forked.
        tid: Tid,
        /// The new process (its recorded pid).
        child: Tid,
        /// It was a `vfork` (`CLONE_VFORK`): [`Halt::VForkDone`] comes next.
        vfork: bool,
    },
    /// The `vfork` the task made is over: its child exec'd or ended (in a replay, as in the
    /// recording, the parent is back from `vfork` only then, so this comes right after the
    /// [`Halt::Fork`] halt).
    VForkDone(Tid),
    /// The task (of the debugged process) exec'd a new program: it is at that program's
    /// first instruction (only when the debugger asked, see [`ProcEvents`]).
    Exec(Tid),
}

/// Which of the debugged process's fork, vfork and exec events halt the replay (gdb's
/// `fork-events`, `vfork-events` and `exec-events`, which it asks for to stop at
/// catchpoints and to follow an exec to the new program).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcEvents {
    /// Halt after a fork (or a `clone` making a process) returns in the parent.
    pub fork: bool,
    /// Halt after a `vfork` returns in the parent.
    pub vfork: bool,
    /// Halt after an exec, at the new program's first instruction.
    pub exec: bool,
}

impl Halt {
    /// The task whose doing the halt is, if it is a task's (not a recorded signal's: a task
    /// about to take one is reported where it is).
    pub(crate) fn task(&self) -> Option<Tid> {
        match *self {
            Halt::Breakpoint(t)
            | Halt::HwBreakpoint(t)
            | Halt::Watch { tid: t, .. }
            | Halt::Step(t)
            | Halt::Interrupted(t)
            | Halt::Reached(t)
            | Halt::Start(t)
            | Halt::Ending(t)
            | Halt::Pause(t)
            | Halt::Fork { tid: t, .. }
            | Halt::VForkDone(t)
            | Halt::Exec(t) => Some(t),
            Halt::Signal { .. } | Halt::Exited(_) | Halt::End => None,
        }
    }
}

/// An exact position in a replay, the same in every replay of the trace: where a debugger
/// halted, and where going backwards starts from or goes to (see the crate README, "Going
/// backwards").
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// This event has been replayed and no task has run since.
    Boundary(u64),
    /// Task `tid` runs after event `event` (it was resumed there) and is part-way to its next
    /// stop, in exactly the state `point`: registers, FP state and memory. Between events a
    /// task's run is deterministic, so the first moment of that run in this state is the
    /// same moment in every replay (a later one in the same state would have the same future).
    Within {
        /// The event replayed last.
        event: u64,
        /// The task part-way through its run.
        tid: Tid,
        /// Its state there.
        point: Box<Point>,
    },
    /// Task `tid` of the debugged process, having run since event `event`, is stopped at the
    /// syscall that ends its process ([`Halt::Ending`]).
    Ending {
        /// The event replayed last.
        event: u64,
        /// The task making the call.
        tid: Tid,
    },
    /// The end of the replay: the debugged process ended, or the recording did.
    End,
}

impl Position {
    /// The event replayed last at this position (`None` at the end).
    pub fn event(&self) -> Option<u64> {
        match self {
            Position::Boundary(e)
            | Position::Within { event: e, .. }
            | Position::Ending { event: e, .. } => Some(*e),
            Position::End => None,
        }
    }
}

/// What a watchpoint watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// Writes.
    Write,
    /// Reads (x86 debug registers cannot watch reads alone: reads and writes fire).
    Read,
    /// Reads and writes.
    Access,
}

/// A hardware breakpoint or watchpoint the debugger set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwPoint {
    /// Its address.
    pub addr: u64,
    /// How many bytes it watches (1 for a breakpoint).
    pub len: u64,
    /// `None` for a breakpoint (execution), else the watchpoint's kind.
    pub watch: Option<WatchKind>,
}

impl HwPoint {
    /// Whether `[addr, addr+len)` overlaps what this point watches for writes.
    fn catches_write(&self, addr: u64, len: u64) -> bool {
        matches!(self.watch, Some(WatchKind::Write | WatchKind::Access))
            && addr < self.addr + self.len
            && self.addr < addr + len
    }

    /// How the debug registers watch for this point.
    fn dr_kind(&self) -> debugregs::WatchKind {
        match self.watch {
            None => debugregs::WatchKind::Execute,
            Some(WatchKind::Write) => debugregs::WatchKind::Write,
            Some(WatchKind::Read | WatchKind::Access) => debugregs::WatchKind::ReadWrite,
        }
    }

    /// The halt this point causes in task `tid`.
    pub fn halt(&self, tid: Tid) -> Halt {
        match self.watch {
            None => Halt::HwBreakpoint(tid),
            Some(kind) => Halt::Watch {
                tid,
                kind,
                addr: self.addr,
            },
        }
    }
}

/// A single step the debugger asked of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub tid: Tid,
    /// The task was resumed for the step (so its next halt before running completes it).
    pub launched: bool,
}

/// The debugger's side of a replay session.
pub(crate) struct Debug {
    /// The debugged process (recorded pid); halts happen only in its tasks.
    pub process: Tid,
    /// Software breakpoints inserted in the debugged process: address → the byte `int3`
    /// replaced.
    pub breakpoints: BTreeMap<u64, u8>,
    /// A breakpoint taken out to step its task over it, to put back before the next run.
    pub lifted: Option<u64>,
    /// The debug registers implementing the hardware breakpoints and watchpoints.
    pub regs: DebugRegs,
    /// The point each debug register serves.
    pub hw: [Option<HwPoint>; debugregs::SLOTS],
    /// Bumped whenever `hw` changes, so each task's debug registers are rewritten before it
    /// next runs.
    pub hw_generation: u64,
    /// The single step in progress.
    pub step: Option<Step>,
    /// Why the replay halted, once it has.
    pub halt: Option<Halt>,
    /// A watchpoint hit by memory a syscall wrote, reported before the task runs again.
    pub pending_watch: Option<Halt>,
    /// Halt before any task runs once this event has been replayed.
    pub halt_after_event: Option<u64>,
    /// Asks whether the debugger wants the replay interrupted (gdb's Ctrl-C).
    pub interrupt: Option<Box<dyn FnMut() -> bool>>,
    /// The task sent `SIGSTOP` to interrupt it.
    pub interrupt_sent: Option<Tid>,
    /// The debugged process's auxiliary vector as the program saw it (raw words).
    pub auxv: Vec<u8>,
    /// Path of the debugged process's executable (the trace's copy).
    pub exe: std::path::PathBuf,
    /// The thread name the kernel gave the debugged program in the recording.
    pub comm: String,
    /// The last task of the debugged process that ran or halted.
    pub current: Option<Tid>,
    /// The task single-stepped over a breakpoint at its pc (its step trap is not a halt).
    pub stepped_over: Option<Tid>,
    /// A halt of the task that was in deja's code (its in-process library, a stub) when it
    /// came: the task is first stepped back into the program's code (see
    /// `Session::leave_before_halt`).
    pub leaving: Option<(Tid, Halt)>,
    /// Breakpoints the debugger set strictly inside a patched window: the original address
    /// → the address of its instruction's copy in the stub, where the `int3` is (and which
    /// `breakpoints` holds).
    pub in_windows: BTreeMap<u64, u64>,
    /// Halt when the replay gets to this position (going backwards: the position the
    /// debugger was at), reporting [`Halt::Reached`]; halts on the way happen as usual.
    pub mark: Option<Position>,
    /// The coming [`Halt::Reached`] is the mark's: it halts where the task is, even in deja's
    /// code (the position it reproduces was a halt there: one put off until the task left
    /// deja's code would have named a position outside it).
    pub at_mark: bool,
    /// The replay halted at the debugged process's end ([`Halt::Ending`]) once already.
    pub end_reported: bool,
    /// Pause ([`Halt::Pause`]) between events once this long has passed since the last pause
    /// (so that checkpoints are kept along long runs).
    pub pause_every: Option<std::time::Duration>,
    /// When the replay last paused (or started).
    pub last_pause: std::time::Instant,
    /// Software breakpoints the debugger wants at addresses with no code yet (a library
    /// mapped later, when the replay started over to go backwards): inserted when it is
    /// mapped.
    pub pending_breakpoints: BTreeSet<u64>,
    /// The process events the debugger halts at.
    pub proc_events: ProcEvents,
    /// Process events of the debugged process to report, each before its task next runs.
    pub proc_halts: std::collections::VecDeque<Halt>,
    /// The recorded `siginfo_t` of the last signal delivered to each task (gdb's
    /// `$_siginfo`).
    pub siginfo: std::collections::HashMap<Tid, Vec<u8>>,
    /// The debugged process's command line as its last exec had it (`/proc/PID/cmdline`:
    /// each argument followed by a NUL).
    pub cmdline: Vec<u8>,
}

impl Debug {
    /// A debugger for process `process`.
    pub fn new(process: Tid) -> Self {
        Debug {
            process,
            breakpoints: BTreeMap::new(),
            lifted: None,
            regs: DebugRegs::new(),
            hw: [None; debugregs::SLOTS],
            hw_generation: 1,
            step: None,
            halt: None,
            pending_watch: None,
            halt_after_event: None,
            interrupt: None,
            interrupt_sent: None,
            auxv: Vec::new(),
            exe: Default::default(),
            comm: String::new(),
            current: None,
            stepped_over: None,
            leaving: None,
            in_windows: BTreeMap::new(),
            mark: None,
            at_mark: false,
            end_reported: false,
            pause_every: None,
            last_pause: std::time::Instant::now(),
            pending_breakpoints: BTreeSet::new(),
            proc_events: ProcEvents::default(),
            proc_halts: Default::default(),
            siginfo: Default::default(),
            cmdline: Vec::new(),
        }
    }

    /// The same requests for a copy of the replay (without the interrupt check, which the
    /// copy's user installs).
    pub fn copy(&self) -> Debug {
        Debug {
            process: self.process,
            breakpoints: self.breakpoints.clone(),
            lifted: self.lifted,
            regs: self.regs,
            hw: self.hw,
            hw_generation: self.hw_generation,
            step: self.step,
            halt: self.halt,
            pending_watch: self.pending_watch,
            halt_after_event: self.halt_after_event,
            interrupt: None,
            interrupt_sent: self.interrupt_sent,
            auxv: self.auxv.clone(),
            exe: self.exe.clone(),
            comm: self.comm.clone(),
            current: self.current,
            stepped_over: self.stepped_over,
            leaving: self.leaving,
            in_windows: self.in_windows.clone(),
            mark: self.mark.clone(),
            at_mark: false,
            end_reported: self.end_reported,
            pause_every: self.pause_every,
            last_pause: std::time::Instant::now(),
            pending_breakpoints: self.pending_breakpoints.clone(),
            proc_events: self.proc_events,
            proc_halts: self.proc_halts.clone(),
            siginfo: self.siginfo.clone(),
            cmdline: self.cmdline.clone(),
        }
    }

    /// Notes a process event of task `tid` (of the debugged process), reported before the
    /// task next runs if the debugger wants it. Nothing is noted on the way to the starting
    /// point.
    pub fn note_proc_event(&mut self, halt: Halt) {
        let wanted = match halt {
            Halt::Fork { vfork: false, .. } => self.proc_events.fork,
            Halt::Fork { vfork: true, .. } | Halt::VForkDone(_) => self.proc_events.vfork,
            Halt::Exec(_) => self.proc_events.exec,
            _ => false,
        };
        if wanted && self.halt_after_event.is_none() {
            self.proc_halts.push_back(halt);
        }
    }

    /// The process event to report before task `tid` runs, if any.
    pub fn take_proc_halt(&mut self, tid: Tid) -> Option<Halt> {
        if self.proc_halts.front()?.task() != Some(tid) {
            return None;
        }
        self.proc_halts.pop_front()
    }

    /// Whether the debugger wants the replay interrupted now.
    pub fn interrupt_requested(&mut self) -> bool {
        self.interrupt.as_mut().is_some_and(|f| f())
    }

    /// Replaces inserted breakpoint bytes in `buf` (read at `addr`) with the program's own.
    pub fn hide_breakpoints(&self, addr: u64, buf: &mut [u8]) {
        let end = addr.saturating_add(buf.len() as u64);
        for (&at, &orig) in self.breakpoints.range(addr..end) {
            if Some(at) != self.lifted {
                buf[(at - addr) as usize] = orig;
            }
        }
    }

    /// Notes that a syscall of task `tid` wrote `[addr, addr+len)`: a watchpoint there fires
    /// before the task runs again.
    pub fn note_write(&mut self, tid: Tid, addr: u64, len: u64) {
        if self.pending_watch.is_some() {
            return;
        }
        if let Some(p) = self
            .hw
            .iter()
            .flatten()
            .find(|p| p.catches_write(addr, len))
        {
            self.pending_watch = Some(p.halt(tid));
        }
    }

    /// Adds a hardware breakpoint or watchpoint; false if the debug registers cannot take it.
    pub fn add_hw_point(&mut self, point: HwPoint) -> bool {
        if self.hw.contains(&Some(point)) {
            return true;
        }
        let Some(slots) = self.regs.insert(point.addr, point.len, point.dr_kind()) else {
            return false;
        };
        for i in slots {
            self.hw[i] = Some(point);
        }
        self.hw_generation += 1;
        true
    }

    /// Removes a hardware breakpoint or watchpoint; false if there was none.
    pub fn remove_hw_point(&mut self, point: HwPoint) -> bool {
        let Some(slots) = self.regs.remove(point.addr, point.len, point.dr_kind()) else {
            return false;
        };
        for i in slots {
            self.hw[i] = None;
        }
        self.hw_generation += 1;
        true
    }

    /// The point whose debug register fired, from the status register DR6.
    pub fn point_hit(&self, dr6: u64) -> Option<HwPoint> {
        debugregs::hit_slots(dr6).find_map(|i| self.hw[i])
    }
}

/// Puts the program's bytes back where breakpoints are in `t`, a forked child of the debugged
/// process: it starts with a copy of the debugged memory, `int3` bytes included.
pub(crate) fn restore_original_bytes(
    t: &tracee::Tracee,
    breakpoints: &BTreeMap<u64, u8>,
) -> anyhow::Result<()> {
    for (&addr, &orig) in breakpoints {
        let mut now = [0u8];
        if t.read_mem_partial(addr, &mut now) == 1 && now[0] == INT3 {
            t.write_mem(addr, &[orig])?;
        }
    }
    Ok(())
}

/// The name the kernel gives the threads of a program executed from `path`: its file name,
/// cut to 15 bytes.
pub(crate) fn comm_of(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// The breakpoint instruction.
pub(crate) const INT3: u8 = 0xcc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_come_from_the_file_name() {
        assert_eq!(comm_of("/usr/bin/python3.11"), "python3.11");
        assert_eq!(comm_of("./a-very-long-program-name"), "a-very-long-pro");
        assert_eq!(comm_of("plain"), "plain");
    }

    #[test]
    fn hides_breakpoints_in_reads() {
        let mut d = Debug::new(1);
        d.breakpoints.insert(0x1001, 0x55);
        d.breakpoints.insert(0x1010, 0x90);
        let mut buf = [0xcc, 0xcc, 0xcc];
        d.hide_breakpoints(0x1000, &mut buf);
        assert_eq!(buf, [0xcc, 0x55, 0xcc]);
        d.lifted = Some(0x1001);
        let mut buf = [0x55];
        d.hide_breakpoints(0x1001, &mut buf);
        assert_eq!(buf, [0x55]);
    }

    #[test]
    fn hardware_points_take_debug_registers() {
        let mut d = Debug::new(1);
        let watch = HwPoint {
            addr: 0x4010,
            len: 4,
            watch: Some(WatchKind::Write),
        };
        let unaligned = HwPoint {
            addr: 0x5001,
            len: 8,
            watch: Some(WatchKind::Access),
        };
        assert!(d.add_hw_point(watch));
        assert!(
            !d.add_hw_point(unaligned),
            "four pieces, three registers left"
        );
        assert_eq!(d.point_hit(0b1), Some(watch));
        assert!(d.remove_hw_point(watch));
        assert!(d.add_hw_point(unaligned));
        assert_eq!(d.point_hit(0b100), Some(unaligned));
        assert!(!d.remove_hw_point(watch));
    }

    #[test]
    fn syscall_writes_fire_write_watchpoints_only() {
        let mut d = Debug::new(1);
        assert!(d.add_hw_point(HwPoint {
            addr: 0x2000,
            len: 8,
            watch: Some(WatchKind::Read),
        }));
        d.note_write(5, 0x1ff0, 0x20);
        assert_eq!(d.pending_watch, None);
        assert!(d.add_hw_point(HwPoint {
            addr: 0x2004,
            len: 4,
            watch: Some(WatchKind::Write),
        }));
        d.note_write(5, 0x1ff0, 0x14);
        assert_eq!(d.pending_watch, None, "ends just before the watched bytes");
        d.note_write(5, 0x1ff0, 0x15);
        assert_eq!(
            d.pending_watch,
            Some(Halt::Watch {
                tid: 5,
                kind: WatchKind::Write,
                addr: 0x2004
            })
        );
    }
}
