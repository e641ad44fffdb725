//! A replay driven by a debugger: resumed, single-stepped and halted at breakpoints,
//! watchpoints and interrupts, its tasks' registers and memory open to inspection.
//!
//! The debugger sees one process of the recording (the initial one, or one it chose). Every
//! task of the recording still replays in the recorded order; breakpoints and steps only
//! decide where the replay pauses, never what it computes. Moving backwards will build on
//! this: a position is an event index plus, at most, a task part-way to its next event, and
//! [`DebugReplay::open`] can already reach any event from the start.

use std::path::Path;

use anyhow::{bail, Context, Result};
use trace_format::Tid;
use tracee::{Regs, Tracee};

use crate::debug::{Debug, Halt, HwPoint, Position, ProcEvents, Step, INT3};
use crate::divergence::Incomplete;
use crate::session::{ReplayOptions, Session};
use crate::start::StartPoint;

/// How the debugger resumes the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Run until something makes it halt.
    Continue,
    /// Run until this task has executed one instruction (other tasks run as the recording
    /// has them run meanwhile).
    Step(Tid),
}

/// A replay under a debugger's control. Must be used from the thread that made it (the
/// tracer).
pub struct DebugReplay {
    pub(crate) session: Session,
    /// The halt that ends the replay (the process ended, or the recording did).
    finished: Option<Halt>,
    /// Which breakpoint hits halt the replay (see [`DebugReplay::set_breakpoint_filter`]).
    filter: Option<BreakpointFilter>,
}

/// Whether task `tid` of a replay, halted at a software or hardware breakpoint, should stop
/// there (its condition holds); false: the replay goes on as if the breakpoint had not been
/// hit.
pub type BreakpointFilter = Box<dyn FnMut(&DebugReplay, Tid) -> bool>;

impl DebugReplay {
    /// Starts replaying the trace in `dir` and runs it to `start` (see [`crate::start_point`]);
    /// `quiet` keeps the program's output from being echoed.
    pub fn open(dir: &Path, start: &StartPoint, quiet: bool) -> Result<Self> {
        let mut debug = Debug::new(start.process);
        debug.halt_after_event = Some(start.event);
        debug.exe = start.exe.clone();
        debug.comm = start.comm.clone();
        debug.auxv = start.auxv.clone();
        debug.cmdline = start.cmdline.clone();
        let session = Session::open(
            dir,
            &ReplayOptions {
                quiet,
                ..Default::default()
            },
            Some(debug),
        )?;
        let mut replay = DebugReplay {
            session,
            finished: None,
            filter: None,
        };
        let halt = replay.advance()?;
        match halt {
            Halt::Reached(_) => Ok(replay),
            other => bail!(
                "the replay could not reach its starting point (event {}): it stopped with \
                 {other:?}",
                start.event
            ),
        }
    }

    /// Resumes the replay as asked, until it halts. Continuing, a breakpoint hit the
    /// breakpoint filter passes over does not halt it: it goes on from there (unless the
    /// debugger asked for an interrupt: a loop of such hits may make no event, where the
    /// replay otherwise looks for one).
    pub fn resume(&mut self, how: Resume) -> Result<Halt> {
        loop {
            let halt = self.resume_once(how)?;
            if let (Halt::Breakpoint(tid) | Halt::HwBreakpoint(tid), Resume::Continue) = (halt, how)
            {
                if !self.stops_at(tid) {
                    if self.debug_mut().interrupt_requested() {
                        return Ok(Halt::Interrupted(tid));
                    }
                    continue;
                }
            }
            return Ok(halt);
        }
    }

    /// Whether the breakpoint filter lets task `tid`'s breakpoint hit halt the replay.
    fn stops_at(&mut self, tid: Tid) -> bool {
        let Some(mut filter) = self.filter.take() else {
            return true;
        };
        let stop = filter(self, tid);
        self.filter = Some(filter);
        stop
    }

    /// Installs the check of whether a breakpoint hit halts the replay (a conditional
    /// breakpoint's condition), asked at each hit while the replay continues (a single step
    /// halts at any hit).
    pub fn set_breakpoint_filter(&mut self, filter: BreakpointFilter) {
        self.filter = Some(filter);
    }

    fn resume_once(&mut self, how: Resume) -> Result<Halt> {
        if let Some(end) = self.finished {
            return Ok(end);
        }
        let d = self.debug_mut();
        d.halt = None;
        // A halt put off (the task in deja's code) that another halt came before.
        d.leaving = None;
        d.step = match how {
            Resume::Continue => None,
            Resume::Step(tid) => Some(Step {
                tid,
                launched: false,
            }),
        };
        self.advance()
    }

    fn advance(&mut self) -> Result<Halt> {
        let halt = match self.session.run_events() {
            Ok(None) => self
                .debug_mut()
                .halt
                .take()
                .context("the replay halted for no reason")?,
            Ok(Some(outcome)) => Halt::Exited(outcome.status),
            Err(e) if e.downcast_ref::<Incomplete>().is_some() => Halt::End,
            Err(e) => return Err(e),
        };
        if matches!(halt, Halt::Exited(_) | Halt::End) {
            self.finished = Some(halt);
        }
        Ok(halt)
    }

    /// Installs the check for the debugger's interrupt request (gdb's Ctrl-C), polled
    /// between events and every 100 ms while a task runs.
    pub fn set_interrupt(&mut self, check: Box<dyn FnMut() -> bool>) {
        self.debug_mut().interrupt = Some(check);
    }

    /// The index of the event replayed last (0 is the program's exec).
    pub fn when(&self) -> u64 {
        self.session.when()
    }

    /// The debugged process (its recorded pid).
    pub fn process(&self) -> Tid {
        self.debug().process
    }

    /// The threads of the debugged process that exist now (recorded ids, ascending).
    /// A thread another thread's exec killed is left out: the replay keeps it until its
    /// recorded end, but it has no registers to show any more.
    pub fn threads(&self) -> Vec<Tid> {
        let mut ids: Vec<Tid> = self
            .session
            .tasks
            .in_process(self.process())
            .filter(|(_, t)| !gone(t.tracee.pid().as_raw()))
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The thread to name in a stop that is no thread's doing.
    pub fn current_thread(&self) -> Tid {
        self.session.halt_thread()
    }

    /// The name of thread `tid` (its `comm`, as the recording had it).
    pub fn thread_name(&self, tid: Tid) -> Option<String> {
        let real = self.thread(tid).ok()?.pid();
        let comm = std::fs::read_to_string(format!("/proc/{real}/task/{real}/comm")).ok()?;
        let comm = comm.trim_end();
        // The replay runs the trace's copy of the executable, named by its hash: a thread
        // that kept the default name shows the recorded program's.
        let copy = self.exe().file_name()?.to_string_lossy();
        Some(if !comm.is_empty() && copy.starts_with(comm) {
            self.debug().comm.clone()
        } else {
            comm.to_string()
        })
    }

    /// The ptrace handle of thread `tid`, to read more of its state.
    pub fn thread(&self, tid: Tid) -> Result<&Tracee> {
        let process = self.process();
        self.session
            .tasks
            .in_process(process)
            .find(|(id, _)| *id == tid)
            .map(|(_, t)| &t.tracee)
            .with_context(|| format!("thread {tid} is not a live thread of process {process}"))
    }

    /// The general registers of thread `tid`.
    pub fn regs(&self, tid: Tid) -> Result<Regs> {
        self.thread(tid)?.regs()
    }

    /// Reads the debugged process's memory at `addr` as the program sees it (breakpoints
    /// hidden, patched syscall sites showing the program's own instructions); returns how
    /// many bytes were readable.
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> usize {
        let Some(t) = self.session.process_tracee() else {
            return 0;
        };
        let n = t.read_mem_partial(addr, buf);
        self.debug().hide_breakpoints(addr, &mut buf[..n]);
        self.session
            .sites
            .show_original(self.process(), addr, &mut buf[..n]);
        n
    }

    /// Inserts a software breakpoint at `addr`; false if there is no code to patch there.
    /// Strictly inside a patched syscall site's window, the `int3` goes on the stub's copy of
    /// the instruction at `addr` (false if the program has no instruction starting there, or
    /// the stub holds no copy of it).
    pub fn add_breakpoint(&mut self, addr: u64) -> Result<bool> {
        if self.debug().in_windows.contains_key(&addr) {
            return Ok(true);
        }
        let process = self.process();
        if let Some(site) = self.session.sites.window_at(process, addr) {
            if addr != site.window {
                let Some(copy) = self.session.sites.copy_of(process, addr) else {
                    eprintln!(
                        "deja: no breakpoint at {addr:#x}: it is inside the syscall site deja \
                         patched at {:#x}, and no instruction of the program starts there",
                        site.window
                    );
                    return Ok(false);
                };
                if !self.insert_int3(copy)? {
                    return Ok(false);
                }
                self.debug_mut().in_windows.insert(addr, copy);
                return Ok(true);
            }
        }
        self.insert_int3(addr)
    }

    /// Writes a breakpoint's `int3` at `addr`, keeping the byte it replaces.
    fn insert_int3(&mut self, addr: u64) -> Result<bool> {
        if self.debug().breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let Some(t) = self.session.process_tracee() else {
            return Ok(false);
        };
        let mut orig = [0u8];
        if t.read_mem_partial(addr, &mut orig) != 1 || t.write_mem(addr, &[INT3]).is_err() {
            return Ok(false);
        }
        self.debug_mut().breakpoints.insert(addr, orig[0]);
        Ok(true)
    }

    /// Removes the software breakpoint at `addr`; false if there was none.
    pub fn remove_breakpoint(&mut self, addr: u64) -> Result<bool> {
        let d = self.debug_mut();
        if d.pending_breakpoints.remove(&addr) {
            return Ok(true);
        }
        let addr = d.in_windows.remove(&addr).unwrap_or(addr);
        let Some(orig) = d.breakpoints.remove(&addr) else {
            return Ok(false);
        };
        if d.lifted == Some(addr) {
            d.lifted = None;
            return Ok(true);
        }
        if let Some(t) = self.session.process_tracee() {
            t.write_mem(addr, &[orig])?;
        }
        Ok(true)
    }

    /// Adds a hardware breakpoint or watchpoint; false if the debug registers cannot take it,
    /// or it is a breakpoint strictly inside a patched syscall site's window at no
    /// instruction the stub holds a copy of (one at such an instruction watches the copy).
    pub fn add_hw_point(&mut self, point: HwPoint) -> bool {
        let Some(point) = self.in_stub(point) else {
            return false;
        };
        self.debug_mut().add_hw_point(point)
    }

    /// Removes a hardware breakpoint or watchpoint; false if there was none.
    pub fn remove_hw_point(&mut self, point: HwPoint) -> bool {
        let Some(point) = self.in_stub(point) else {
            return false;
        };
        self.debug_mut().remove_hw_point(point)
    }

    /// A hardware breakpoint strictly inside a patched window moved to the stub's copy of its
    /// instruction (`None` if there is none); any other point as it is.
    fn in_stub(&self, point: HwPoint) -> Option<HwPoint> {
        let process = self.process();
        match self.session.sites.window_at(process, point.addr) {
            Some(site) if point.watch.is_none() && point.addr != site.window => {
                let addr = self.session.sites.copy_of(process, point.addr)?;
                Some(HwPoint { addr, ..point })
            }
            _ => Some(point),
        }
    }

    /// The auxiliary vector of the debugged process's program.
    pub fn auxv(&self) -> &[u8] {
        &self.debug().auxv
    }

    /// The executable the debugged process runs (the trace's copy, so symbols match).
    pub fn exe(&self) -> &Path {
        &self.debug().exe
    }

    pub(crate) fn debug(&self) -> &Debug {
        self.session
            .debug
            .as_ref()
            .expect("a DebugReplay always has its debugger state")
    }

    fn debug_mut(&mut self) -> &mut Debug {
        self.session
            .debug
            .as_mut()
            .expect("a DebugReplay always has its debugger state")
    }
}

/// What going backwards needs of a replay (see `crate::timeline`).
impl DebugReplay {
    /// The exact position the replay is halted at.
    pub fn position(&mut self) -> Result<Position> {
        if self.finished.is_some() {
            return Ok(Position::End);
        }
        self.session.position()
    }

    /// Whether the replay is halted exactly at `pos`.
    pub fn is_at(&mut self, pos: &Position) -> Result<bool> {
        if self.finished.is_some() {
            return Ok(*pos == Position::End);
        }
        self.session.is_at(pos)
    }

    /// Makes the replay halt with [`Halt::Reached`] when it gets to `pos` (the end needs no
    /// mark: the replay halts there anyway).
    pub fn set_mark(&mut self, pos: &Position) {
        self.debug_mut().mark = match pos {
            Position::End => None,
            other => Some(other.clone()),
        };
    }

    /// The event after which task `tid` began the run it made before its current one (or
    /// before the one it is about to make, at a boundary).
    pub fn run_before(&self, tid: Tid) -> Option<u64> {
        let [now, before] = self.session.stretches.get(&tid).copied()?;
        let current = self.session.running_task() == Some(tid);
        if current {
            before
        } else {
            now
        }
    }

    /// How many events the trace holds.
    pub fn event_count(&self) -> u64 {
        self.session.event_count()
    }

    /// The task part-way through its run after the last event (it has executed instructions
    /// since), if any: then the position is within that run, else at the event's boundary.
    pub fn part_way(&self) -> Option<Tid> {
        self.session.running_task().filter(|_| self.session.ran)
    }

    /// Inserts a software breakpoint at `addr`, or keeps it to insert once code is mapped
    /// there (the replay started over to go backwards, before a library was loaded).
    pub fn add_breakpoint_or_pending(&mut self, addr: u64) -> Result<()> {
        if !self.add_breakpoint(addr)? {
            self.debug_mut().pending_breakpoints.insert(addr);
        }
        Ok(())
    }

    /// A copy of this replay at its position, its process forked (see `Session::fork_copy`):
    /// `None` where the replay cannot be copied.
    pub fn copy(&mut self) -> Result<Option<DebugReplay>> {
        if self.finished.is_some() {
            return Ok(None);
        }
        Ok(self.session.fork_copy()?.map(|session| DebugReplay {
            session,
            finished: None,
            filter: None,
        }))
    }

    /// A diversion at the replay's position, thread `tid` of the debugged process its leader:
    /// a live copy of the process for the debugger to run and change (see
    /// [`crate::Diversion`]); the replay stays as it is.
    pub fn divert(&self, tid: Tid) -> Result<crate::Diversion> {
        if self.finished.is_some() {
            bail!("the replay has ended");
        }
        self.session.divert(tid)
    }

    /// Whether task `tid` is stopped at one of the debugger's software breakpoints, about to
    /// execute it, one the breakpoint filter lets halt the replay.
    pub fn at_breakpoint(&mut self, tid: Tid) -> Result<bool> {
        let rip = self.regs(tid)?.rip;
        let d = self.debug();
        let at = d.breakpoints.contains_key(&rip) || d.in_windows.contains_key(&rip);
        Ok(at && self.stops_at(tid))
    }

    /// Whether a software breakpoint the debugger set is at `addr` (whatever its condition).
    pub fn has_breakpoint_at(&self, addr: u64) -> bool {
        let d = self.debug();
        d.breakpoints.contains_key(&addr) || d.in_windows.contains_key(&addr)
    }

    /// The addresses of the software breakpoints the debugger set (inserted or pending).
    pub fn breakpoint_addrs(&self) -> std::collections::BTreeSet<u64> {
        let d = self.debug();
        let copies: std::collections::BTreeSet<u64> = d.in_windows.values().copied().collect();
        d.breakpoints
            .keys()
            .copied()
            .filter(|a| !copies.contains(a))
            .chain(d.in_windows.keys().copied())
            .chain(d.pending_breakpoints.iter().copied())
            .collect()
    }

    /// The hardware breakpoints and watchpoints the debugger set.
    pub fn hw_points(&self) -> Vec<HwPoint> {
        let mut out: Vec<HwPoint> = Vec::new();
        for p in self.debug().hw.iter().flatten() {
            if !out.contains(p) {
                out.push(*p);
            }
        }
        out
    }

    /// Makes the replay pause ([`Halt::Pause`]) between events every `every` (`None`: never).
    pub fn set_pause_every(&mut self, every: Option<std::time::Duration>) {
        let d = self.debug_mut();
        d.pause_every = every;
        d.last_pause = std::time::Instant::now();
    }

    /// Whether the program's output is echoed (not while going backwards replays it again).
    pub fn set_quiet(&mut self, quiet: bool) {
        self.session.set_quiet(quiet);
    }
}

/// Following processes: the fork, vfork and exec events the debugger halts at, and the
/// debugged process of copies (see `Timeline::switch_to`).
impl DebugReplay {
    /// Which process events halt the replay from now on (none forgets those not reported
    /// yet).
    pub fn set_proc_events(&mut self, events: ProcEvents) {
        let d = self.debug_mut();
        d.proc_events = events;
        if events == ProcEvents::default() {
            d.proc_halts.clear();
        }
    }

    /// Makes `pid` the debugged process of a copy of the replay (see
    /// `Timeline::switch_to`), its breakpoints already taken out.
    pub(crate) fn set_process(&mut self, pid: Tid) {
        let d = self.debug_mut();
        if d.process != pid {
            d.process = pid;
            d.current = None;
            d.hw_generation += 1;
        }
    }

    /// The name the kernel gave the debugged program's threads in the recording.
    pub fn comm(&self) -> &str {
        &self.debug().comm
    }

    /// Ends the replay: kills its tasks (as dropping it does).
    pub fn kill(&mut self) {
        self.session.tasks.kill_all();
        self.finished = Some(Halt::End);
    }
}

impl Drop for DebugReplay {
    fn drop(&mut self) {
        self.session.tasks.kill_all();
    }
}

/// Whether the task with kernel id `tid` has ended (gone, or a zombie waiting to be reaped).
fn gone(tid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| matches!(state, 'Z' | 'X')),
        Err(_) => true,
    }
}
