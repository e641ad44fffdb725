//! The replay as a gdbstub target: threads, registers, memory, breakpoints, watchpoints and
//! resuming, all answered by a [`DebugReplay`].

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::rc::Rc;

use gdbstub::common::{Pid, Signal, Tid};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::single_register_access::{
    SingleRegisterAccess, SingleRegisterAccessOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::extended_mode::{
    Args, AttachKind, CurrentActivePid, CurrentActivePidOps, ExtendedMode, ExtendedModeOps,
    ShouldTerminate,
};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use replayer::{DebugReplay, Halt, HwPoint, Resume, StartPoint, Timeline};

use crate::arch::{RegId, Registers, X86_64Linux};
use crate::conditions::{BreakpointConditions, Conditions};
use crate::regcache::RegCache;
use divert::Diverted;

#[path = "divert.rs"]
mod divert;
use crate::tls::TlsResolver;
use crate::tls_packet::TlsRequest;

/// A debugged replay, as gdb sees it.
pub struct ReplayTarget {
    /// The live copy gdb's writes and calls go to, once it wrote something. (Declared
    /// first: it is killed before the replay, whose end reaps whatever it finds.)
    diversion: Option<Diverted>,
    timeline: Timeline,
    /// The thread gdb asked to single-step in the coming resume, if any.
    step: Option<trace_format::Tid>,
    /// The coming resume goes backwards.
    reverse: bool,
    /// The coming single step goes on while the pc stays in this range (gdb's range
    /// stepping, see [`crate::stepping`]).
    range: Option<std::ops::Range<u64>>,
    /// Where thread-local variables are.
    tls: TlsResolver,
    /// The registers read at the current stop.
    regs: RegCache,
    /// The breakpoints' conditions gdb sent, which the replay evaluates at each hit.
    conditions: Rc<RefCell<Conditions>>,
    /// The files gdb opened with host I/O (`crate::hostio`).
    pub(crate) files: crate::hostio::OpenFiles,
    /// `run N` or `restart N` moved the replay: the resume with which gdb's `run` goes on
    /// stops at once, there (as rr does).
    stop_at_resume: bool,
}

impl ReplayTarget {
    /// Starts the replay of `dir` at `start`; `quiet` keeps the program's output from being
    /// echoed.
    pub fn open(dir: PathBuf, start: StartPoint, quiet: bool) -> anyhow::Result<Self> {
        crate::arch::set_avx512(crate::avx512::shown(&dir)?);
        let mut timeline = Timeline::open(&dir, start, quiet)?;
        let conditions = Rc::new(RefCell::new(Conditions::default()));
        let shared = conditions.clone();
        timeline.set_breakpoint_filter(Box::new(move |replay, tid| {
            shared.borrow().holds(replay, tid)
        }));
        Ok(ReplayTarget {
            diversion: None,
            timeline,
            step: None,
            reverse: false,
            range: None,
            tls: TlsResolver::default(),
            regs: RegCache::default(),
            conditions,
            files: Default::default(),
            stop_at_resume: false,
        })
    }

    /// Ends the replay and starts it again from its start.
    pub(crate) fn start_over(&mut self) -> anyhow::Result<()> {
        self.regs.clear();
        self.conditions.borrow_mut().clear();
        self.end_diversion();
        self.timeline.start_over()?;
        self.step = None;
        self.reverse = false;
        self.range = None;
        self.tls.clear();
        self.stop_at_resume = false;
        Ok(())
    }

    /// `to` if the replay can go there: an event of the recording, a kept checkpoint.
    fn check_run_to(
        &mut self,
        to: crate::commands::RunTo,
    ) -> anyhow::Result<crate::commands::RunTo> {
        match to {
            crate::commands::RunTo::Event(n) => {
                let count = self.replay_ref().event_count();
                anyhow::ensure!(
                    n < count,
                    "event {n} is past the end of the recording ({count} events)"
                );
            }
            crate::commands::RunTo::Checkpoint(n) => {
                let saved = self.timeline.saved_positions();
                anyhow::ensure!(
                    saved.iter().any(|(k, _)| *k == n),
                    "Checkpoint {n} not found."
                );
            }
            crate::commands::RunTo::Start => {}
        }
        Ok(to)
    }

    /// Goes where gdb's `run ARG` asks, from the start.
    fn run_to(&mut self, to: crate::commands::RunTo) -> anyhow::Result<()> {
        self.regs.clear();
        match to {
            crate::commands::RunTo::Start => return Ok(()),
            crate::commands::RunTo::Event(n) => self.timeline.seek(n)?,
            crate::commands::RunTo::Checkpoint(n) => self.timeline.restore_position(n)?,
        }
        self.stop_at_resume = true;
        Ok(())
    }

    /// Whether the coming resume stops at once (see [`Self::take_stop_at_resume`]).
    pub(crate) fn stops_at_resume(&self) -> bool {
        self.stop_at_resume
    }

    /// The stop to report at once for the resume that follows `run N` or `restart N`, which
    /// leaves the replay where it is: a stop with no signal (gdb shows "stopped" and where).
    pub(crate) fn take_stop_at_resume(&mut self) -> Option<MultiThreadStopReason<u64>> {
        if !std::mem::take(&mut self.stop_at_resume) {
            return None;
        }
        self.step = None;
        self.reverse = false;
        Some(MultiThreadStopReason::SignalWithThread {
            tid: gdb_tid(self.replay_ref().current_thread()),
            signal: Signal(0),
        })
    }

    /// The replay, with going backwards (which may move it: the registers read are
    /// forgotten).
    pub fn timeline(&mut self) -> &mut Timeline {
        self.regs.clear();
        &mut self.timeline
    }

    /// The replay, to look at.
    pub fn replay_ref(&self) -> &DebugReplay {
        self.timeline.replay()
    }

    /// Runs the replay as gdb's last resume asked, until it halts.
    pub(crate) fn run(&mut self) -> anyhow::Result<Halt> {
        self.regs.clear();
        if let Some(diverted) = self.run_diverted() {
            return diverted;
        }
        let how = match self.step.take() {
            Some(tid) => Resume::Step(tid),
            None => Resume::Continue,
        };
        let range = self.range.take();
        if std::mem::take(&mut self.reverse) {
            self.timeline.reverse(how)
        } else if let (Some(range), Resume::Step(tid)) = (range, how) {
            crate::stepping::range_step(&mut self.timeline, tid, range)
        } else {
            self.timeline.resume(how)
        }
    }

    /// Makes the coming single step of `tid` go on while its pc stays in `range`.
    pub(crate) fn set_range_step(&mut self, tid: trace_format::Tid, range: std::ops::Range<u64>) {
        self.step = Some(tid);
        self.range = Some(range);
    }

    /// Keeps the conditions gdb sent with a breakpoint (see [`crate::conditions`]).
    pub(crate) fn set_conditions(&mut self, c: BreakpointConditions) {
        self.conditions.borrow_mut().set(c);
    }

    /// The address of a thread-local variable, as gdb's `qGetTLSAddr` asks.
    pub(crate) fn tls_address(&mut self, req: &TlsRequest) -> anyhow::Result<u64> {
        self.tls.address(self.timeline.replay(), req)
    }

    /// The stop reply for `halt`.
    pub(crate) fn stop_reason(&self, halt: Halt) -> MultiThreadStopReason<u64> {
        let trap = |tid| MultiThreadStopReason::SignalWithThread {
            tid: gdb_tid(tid),
            signal: Signal::SIGTRAP,
        };
        match halt {
            Halt::Breakpoint(tid) => MultiThreadStopReason::SwBreak(gdb_tid(tid)),
            Halt::HwBreakpoint(tid) => MultiThreadStopReason::HwBreak(gdb_tid(tid)),
            Halt::Watch { tid, kind, addr } => MultiThreadStopReason::Watch {
                tid: gdb_tid(tid),
                kind: match kind {
                    replayer::WatchKind::Write => WatchKind::Write,
                    replayer::WatchKind::Read => WatchKind::Read,
                    replayer::WatchKind::Access => WatchKind::ReadWrite,
                },
                addr,
            },
            // (A pause never reaches gdb: the timeline resumes after it.)
            Halt::Step(tid) | Halt::Reached(tid) | Halt::Pause(tid) => trap(tid),
            Halt::Signal { tid, signo } => MultiThreadStopReason::SignalWithThread {
                tid: gdb_tid(tid),
                signal: gdb_signal(signo),
            },
            Halt::Interrupted(tid) => MultiThreadStopReason::SignalWithThread {
                tid: gdb_tid(tid),
                signal: Signal::SIGINT,
            },
            Halt::Exited(trace_format::ExitStatus::Exited(code)) => {
                MultiThreadStopReason::Exited(code as u8)
            }
            Halt::Exited(trace_format::ExitStatus::Signaled(sig)) => {
                MultiThreadStopReason::Terminated(gdb_signal(sig))
            }
            // As rr does: the end is a stop, so that gdb can still go backwards from it.
            Halt::Ending(tid) => MultiThreadStopReason::SignalWithThread {
                tid: gdb_tid(tid),
                signal: Signal::SIGKILL,
            },
            Halt::Start(tid) => MultiThreadStopReason::ReplayLog {
                tid: Some(gdb_tid(tid)),
                pos: ReplayLogPosition::Begin,
            },
            // (The connection replaces these replies with gdb's fork and exec stops, see
            // `crate::procs`; gdbstub's own names the child with the parent's pid.)
            Halt::Fork { tid, .. } | Halt::Exec(tid) => trap(tid),
            Halt::VForkDone(tid) => MultiThreadStopReason::VForkDone(gdb_tid(tid)),
            Halt::End => MultiThreadStopReason::SignalWithThread {
                tid: gdb_tid(self.replay_ref().current_thread()),
                signal: Signal::SIGKILL,
            },
        }
    }

    /// The registers of thread `tid` (read once per stop): an error number if gdb names no
    /// live thread (its mistake, or a client's nonsense), an error of the replay if ptrace
    /// cannot read them.
    fn registers(&mut self, tid: Tid) -> Result<Registers, TargetError<anyhow::Error>> {
        if self.diversion.is_some() {
            // (gdb's writes and calls change the copy's: never cached.)
            return self.registers_now(tid);
        }
        self.regs.get(self.timeline.replay(), recorded_tid(tid))
    }

    /// The registers of thread `tid` read now, from the live copy gdb diverted the replay to
    /// if it has that thread, else from the replay (see [`Self::registers`]).
    fn registers_now(&self, tid: Tid) -> Result<Registers, TargetError<anyhow::Error>> {
        let t = match self.diverted_thread(recorded_tid(tid)) {
            Some(t) => t,
            None => self
                .replay_ref()
                .thread(recorded_tid(tid))
                .map_err(|_| TargetError::Errno(libc::ESRCH as u8))?,
        };
        let avx512 = if crate::arch::avx512() {
            t.avx512_regs().map_err(TargetError::Fatal)?
        } else {
            None
        };
        Ok(Registers {
            gpr: t.regs().map_err(TargetError::Fatal)?,
            fp: t.fp_regs().map_err(TargetError::Fatal)?,
            avx512: avx512.unwrap_or_default(),
        })
    }

    /// The registers the stop reply for `halt` carries (see [`crate::regcache`]): none for a
    /// stop that names no thread, or one whose registers cannot be read.
    pub(crate) fn expedited_registers(&mut self, halt: &Halt) -> Vec<(RegId, Vec<u8>)> {
        if self.diversion.is_some() {
            // (A stop of the live copy: gdb asks for its registers.)
            return Vec::new();
        }
        let tid = match *halt {
            Halt::Breakpoint(t)
            | Halt::HwBreakpoint(t)
            | Halt::Watch { tid: t, .. }
            | Halt::Step(t)
            | Halt::Reached(t)
            | Halt::Pause(t)
            | Halt::Signal { tid: t, .. }
            | Halt::Interrupted(t) => t,
            _ => return Vec::new(),
        };
        match self.regs.gpr(self.timeline.replay(), tid) {
            Ok(gpr) => crate::regcache::expedited(&gpr),
            Err(_) => Vec::new(),
        }
    }
}

/// gdb's number for Linux signal `signo` (the protocol numbers signals its own way).
pub(crate) fn gdb_signal(signo: i32) -> Signal {
    match signo {
        libc::SIGHUP => Signal::SIGHUP,
        libc::SIGINT => Signal::SIGINT,
        libc::SIGQUIT => Signal::SIGQUIT,
        libc::SIGILL => Signal::SIGILL,
        libc::SIGTRAP => Signal::SIGTRAP,
        libc::SIGABRT => Signal::SIGABRT,
        libc::SIGBUS => Signal::SIGBUS,
        libc::SIGFPE => Signal::SIGFPE,
        libc::SIGKILL => Signal::SIGKILL,
        libc::SIGUSR1 => Signal::SIGUSR1,
        libc::SIGSEGV => Signal::SIGSEGV,
        libc::SIGUSR2 => Signal::SIGUSR2,
        libc::SIGPIPE => Signal::SIGPIPE,
        libc::SIGALRM => Signal::SIGALRM,
        libc::SIGTERM => Signal::SIGTERM,
        libc::SIGSTKFLT => Signal(0),
        libc::SIGCHLD => Signal::SIGCHLD,
        libc::SIGCONT => Signal::SIGCONT,
        libc::SIGSTOP => Signal::SIGSTOP,
        libc::SIGTSTP => Signal::SIGTSTP,
        libc::SIGTTIN => Signal::SIGTTIN,
        libc::SIGTTOU => Signal::SIGTTOU,
        libc::SIGURG => Signal::SIGURG,
        libc::SIGXCPU => Signal::SIGXCPU,
        libc::SIGXFSZ => Signal::SIGXFSZ,
        libc::SIGVTALRM => Signal::SIGVTALRM,
        libc::SIGPROF => Signal::SIGPROF,
        libc::SIGWINCH => Signal::SIGWINCH,
        libc::SIGIO => Signal::SIGIO,
        libc::SIGPWR => Signal::SIGPWR,
        libc::SIGSYS => Signal::SIGSYS,
        32 => Signal::SIG32,
        // SIG33..SIG63 are numbered 45..75, SIG64.. from 78.
        33..=63 => Signal((signo + 12) as u8),
        64 => Signal::SIG64,
        _ => Signal(0),
    }
}

/// gdb's id for recorded task (or process) `tid`.
pub(crate) fn gdb_tid(tid: trace_format::Tid) -> Tid {
    NonZeroUsize::new(tid.max(1) as usize).unwrap_or(NonZeroUsize::MIN)
}

/// The recorded task gdb calls `tid`.
pub(crate) fn recorded_tid(tid: Tid) -> trace_format::Tid {
    tid.get() as trace_format::Tid
}

impl Target for ReplayTarget {
    type Arch = X86_64Linux;
    type Error = anyhow::Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(
        &mut self,
    ) -> Option<gdbstub::target::ext::monitor_cmd::MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_extended_mode(&mut self) -> Option<ExtendedModeOps<'_, Self>> {
        Some(self)
    }

    fn support_exec_file(
        &mut self,
    ) -> Option<gdbstub::target::ext::exec_file::ExecFileOps<'_, Self>> {
        Some(self)
    }

    fn support_auxv(&mut self) -> Option<gdbstub::target::ext::auxv::AuxvOps<'_, Self>> {
        Some(self)
    }

    // Fork, vfork and exec events: see `crate::procs`.
    fn use_fork_stop_reason(&self) -> bool {
        true
    }

    fn use_vfork_stop_reason(&self) -> bool {
        true
    }

    fn use_vforkdone_stop_reason(&self) -> bool {
        true
    }

    fn support_host_io(&mut self) -> Option<gdbstub::target::ext::host_io::HostIoOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadBase for ReplayTarget {
    fn read_registers(&mut self, regs: &mut Registers, tid: Tid) -> TargetResult<(), Self> {
        *regs = self.registers(tid)?;
        Ok(())
    }

    fn write_registers(&mut self, regs: &Registers, tid: Tid) -> TargetResult<(), Self> {
        let now = self.registers(tid)?;
        if now == *regs {
            return Ok(());
        }
        self.write_diverted_regs(recorded_tid(tid), regs)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _tid: Tid) -> TargetResult<usize, Self> {
        let read = self
            .read_diverted_mem(start, data)
            .unwrap_or_else(|| self.replay_ref().read_mem(start, data));
        match read {
            0 if !data.is_empty() => Err(TargetError::Errno(libc::EFAULT as u8)),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let mut now = vec![0u8; data.len()];
        let read = self
            .read_diverted_mem(start, &mut now)
            .unwrap_or_else(|| self.replay_ref().read_mem(start, &mut now));
        if read == data.len() && now == data {
            return Ok(());
        }
        self.write_diverted_mem(recorded_tid(tid), start, data)
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        for tid in self.replay_ref().threads() {
            thread_is_active(gdb_tid(tid));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<Tid> for ReplayTarget {
    fn read_register(&mut self, tid: Tid, reg: RegId, buf: &mut [u8]) -> TargetResult<usize, Self> {
        let regs = self.registers(tid)?;
        regs.read_reg(reg, buf).ok_or(TargetError::NonFatal)
    }

    fn write_register(&mut self, tid: Tid, reg: RegId, val: &[u8]) -> TargetResult<(), Self> {
        let regs = self.registers(tid)?;
        let mut changed = regs;
        changed
            .write_reg(reg, val)
            .map_err(|_| TargetError::NonFatal)?;
        // gdb writes orig_rax = -1 when it restarts a call; the replay restarts nothing.
        if changed == regs || (reg == RegId::OrigRax && self.diversion.is_none()) {
            return Ok(());
        }
        self.write_diverted_regs(recorded_tid(tid), &changed)
    }
}

impl MultiThreadResume for ReplayTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step = None;
        self.reverse = false;
        self.range = None;
        self.clear_divert_signal();
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // The signal gdb passes is the recorded one (or one it wants suppressed): the replay
        // delivers what the recording delivered either way. (A diversion delivers it.)
        self.divert_signal(signal);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_range_step(
        &mut self,
    ) -> Option<gdbstub::target::ext::base::multithread::MultiThreadRangeSteppingOps<'_, Self>>
    {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, Tid, Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, Tid, Self>> {
        Some(self)
    }
}

impl ReverseCont<Tid> for ReplayTarget {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.step = None;
        self.reverse = true;
        Ok(())
    }
}

impl ReverseStep<Tid> for ReplayTarget {
    fn reverse_step(&mut self, tid: Tid) -> Result<(), Self::Error> {
        self.step = Some(recorded_tid(tid));
        self.reverse = true;
        Ok(())
    }
}

impl MultiThreadSingleStep for ReplayTarget {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        self.step = Some(recorded_tid(tid));
        self.divert_signal(signal);
        Ok(())
    }
}

impl MultiThreadSchedulerLocking for ReplayTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        // Other threads run when the recording has them run: a replay cannot hold them back
        // (rr behaves the same). Halts still come from any thread of the debugged process.
        Ok(())
    }
}

impl ThreadExtraInfo for ReplayTarget {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let name = self
            .replay_ref()
            .thread_name(recorded_tid(tid))
            .unwrap_or_default();
        let n = name.len().min(buf.len());
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(n)
    }
}

impl Breakpoints for ReplayTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for ReplayTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if let Some(done) = self.divert_breakpoint(addr, true) {
            return Ok(done);
        }
        self.timeline
            .add_breakpoint(addr)
            .map_err(TargetError::Fatal)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.conditions.borrow_mut().remove(addr);
        if let Some(done) = self.divert_breakpoint(addr, false) {
            return Ok(done);
        }
        self.timeline
            .remove_breakpoint(addr)
            .map_err(TargetError::Fatal)
    }
}

fn hw_point(addr: u64, len: u64, kind: Option<WatchKind>) -> HwPoint {
    HwPoint {
        addr,
        len,
        watch: kind.map(|k| match k {
            WatchKind::Write => replayer::WatchKind::Write,
            WatchKind::Read => replayer::WatchKind::Read,
            WatchKind::ReadWrite => replayer::WatchKind::Access,
        }),
    }
}

impl HwBreakpoint for ReplayTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.timeline.add_hw_point(hw_point(addr, 1, None)))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.conditions.borrow_mut().remove(addr);
        Ok(self.timeline.remove_hw_point(hw_point(addr, 1, None)))
    }
}

impl HwWatchpoint for ReplayTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.timeline.add_hw_point(hw_point(addr, len, Some(kind))))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self
            .timeline
            .remove_hw_point(hw_point(addr, len, Some(kind))))
    }
}

impl ExtendedMode for ReplayTarget {
    /// gdb's `run`: the replay starts over from where it first started, or at the event or
    /// checkpoint its argument names (see [`crate::commands::RunTo`]).
    fn run(&mut self, _filename: Option<&[u8]>, mut args: Args<'_, '_>) -> TargetResult<Pid, Self> {
        let to = crate::commands::RunTo::parse(args.next()).and_then(|to| self.check_run_to(to));
        let to = match to {
            Ok(to) => to,
            Err(e) => {
                eprintln!("deja: {e:#}");
                return Err(TargetError::NonFatal);
            }
        };
        self.start_over().map_err(TargetError::Fatal)?;
        if let Err(e) = self.run_to(to) {
            eprintln!("deja: {e:#}; the replay is at its start");
        }
        Ok(gdb_tid(self.replay_ref().process()))
    }

    fn attach(&mut self, _pid: Pid) -> TargetResult<(), Self> {
        eprintln!("deja: a replay cannot attach to other processes (use `deja replay -p PID`)");
        Err(TargetError::NonFatal)
    }

    fn query_if_attached(&mut self, _pid: Pid) -> TargetResult<AttachKind, Self> {
        // "Attached": gdb's `quit` then detaches instead of killing, which ends the session.
        Ok(AttachKind::Attach)
    }

    /// gdb's `kill` (also sent before `run` restarts a running program): the replay ends,
    /// the session stays for `run`.
    fn kill(&mut self, _pid: Option<Pid>) -> TargetResult<ShouldTerminate, Self> {
        self.regs.clear();
        self.end_diversion();
        self.timeline.replay_mut().kill();
        Ok(ShouldTerminate::No)
    }

    fn restart(&mut self) -> Result<(), Self::Error> {
        self.start_over()
    }

    fn support_current_active_pid(&mut self) -> Option<CurrentActivePidOps<'_, Self>> {
        Some(self)
    }
}

impl CurrentActivePid for ReplayTarget {
    fn current_active_pid(&mut self) -> Result<Pid, Self::Error> {
        Ok(gdb_tid(self.replay_ref().process()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_use_gdb_numbers() {
        assert_eq!(gdb_signal(libc::SIGUSR1), Signal::SIGUSR1);
        assert_eq!(gdb_signal(libc::SIGBUS), Signal::SIGBUS);
        assert_eq!(gdb_signal(libc::SIGCHLD), Signal::SIGCHLD);
        assert_eq!(gdb_signal(33), Signal::SIG33);
        assert_eq!(gdb_signal(63), Signal::SIG63);
        assert_eq!(gdb_signal(64), Signal::SIG64);
    }
}
