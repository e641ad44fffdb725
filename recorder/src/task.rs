//! One traced task (thread or process) of the recording, and what it is doing.

use syscalls::Replay;

use crate::ptrace_emu::Held;
use trace_format::SyscallEvent;
use tracee::tracee::SIGINFO_SIZE;
use tracee::{Regs, Tracee};

/// A syscall between its entry and the moment its event is written.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The event, with the entry fields filled in.
    pub ev: SyscallEvent,
    /// How the table says it is replayed.
    pub replay: Replay,
    /// Whether the task keeps the CPU while the syscall runs (no other task runs user code).
    pub exclusive: bool,
    /// The exec stop of a successful `execve` was recorded: the exit is no syscall event.
    pub exec_done: bool,
}

/// Where a task is in the recorder's schedule.
#[derive(Debug)]
pub enum State {
    /// Made by a clone; its first stop has not been seen yet.
    Unborn,
    /// Stopped at its first stop, waiting for the CPU (a [`trace_format::StartEvent`] is
    /// written when it gets it).
    ReadyToStart,
    /// Stopped at the exit of a syscall, waiting for the CPU (the syscall's event is written
    /// when it gets it).
    ReadyAfter(Box<Entry>),
    /// Holds the CPU, running user code.
    Running,
    /// Inside a syscall (resumed to its exit stop). Holds the CPU only if `exclusive`.
    InSyscall(Box<Entry>),
    /// The recorder's preemption `SIGSTOP` interrupted this syscall (its exit showed a restart
    /// code): the attempt is not recorded; the task goes on to the signal's stop, where the
    /// recorder suppresses it, and the kernel then restarts the call (a new seccomp entry).
    /// Holds the CPU only if `exclusive`. `ev.result` holds the restart code.
    Restarting(Box<Entry>),
    /// Taken off the CPU at a point in its user code (a [`trace_format::PreemptEvent`]),
    /// stopped there, waiting for the CPU (a [`trace_format::ResumeEvent`] is written when it
    /// gets it).
    Preempted,
    /// Made `exit` or `exit_group`, or was killed; its death has not been reported yet.
    Exiting,
    /// Held in an emulated ptrace stop for its emulated tracer (see `recording::ptrace`);
    /// waits for the CPU once the tracer resumed it.
    Ptraced(Held),
    /// Stopped at the entry of a syscall the recorder handles when it gets the CPU (a tracer's
    /// `wait` restarted because one of its tracees stopped).
    AtEntry,
    /// Stopped at the entry of a tracer's `wait` that only an emulated tracee that is not its
    /// child can answer (by a stop or its end); becomes [`State::AtEntry`] when one does.
    WaitsForTracee,
    /// Stopped by job control (a group-stop: `SIGSTOP`, `SIGTSTP`, ...), kept stopped until its
    /// process gets a `SIGCONT` (see `recording::group_stop`). Holds the syscall it was
    /// restarting, if any (else it stopped on its way back to user code).
    GroupStopped(Option<Box<Entry>>),
    /// Continued after a group-stop, waiting for the CPU to go on.
    ReadyToContinue(Option<Box<Entry>>),
    /// Moved from another lane at a syscall's entry (see `recording::lanes`): stopped right
    /// before making that syscall again, waiting for the CPU.
    Moved,
}

impl State {
    /// A short description for logs: the variant and the syscall it holds, if any.
    pub fn describe(&self) -> String {
        match self {
            State::ReadyAfter(e) => format!("ReadyAfter({})", syscalls::name(e.ev.nr)),
            State::InSyscall(e) => format!("InSyscall({})", syscalls::name(e.ev.nr)),
            State::Restarting(e) => format!("Restarting({})", syscalls::name(e.ev.nr)),
            other => format!("{other:?}"),
        }
    }

    /// Whether a task in this state waits in the ready FIFO for the CPU.
    pub fn waits_for_cpu(&self) -> bool {
        matches!(
            self,
            State::ReadyToStart
                | State::ReadyAfter(_)
                | State::Preempted
                | State::AtEntry
                | State::Ptraced(Held {
                    resume: Some(_),
                    ..
                })
                | State::ReadyToContinue(_)
                | State::Moved
        )
    }
}

/// A signal the recorder sent again, with the siginfo it first arrived with.
pub type HeldSignal = (i32, [u8; SIGINFO_SIZE]);

/// A traced task.
pub struct Task {
    /// ptrace handle.
    pub tracee: Tracee,
    /// Its process (thread group) id.
    pub pid: i32,
    /// The process whose address space it runs in: its own, or its parent's for a child made
    /// with `CLONE_VM` but not `CLONE_THREAD` (`vfork`, `posix_spawn`) until it calls `execve`.
    pub mm: i32,
    /// Schedule state.
    pub state: State,
    /// Registers the task was resumed with right after its last event, while no instruction
    /// can have run since: a signal stop with these registers landed exactly after that event.
    pub boundary: Option<Regs>,
    /// Signals the recorder had to discard at a stop where it delivered another one, and sent
    /// again (with `tgkill`); their stop gets back their original siginfo.
    pub resent: Vec<HeldSignal>,
    /// Where the kernel wrote this task's id into its own memory (`CLONE_CHILD_SETTID`).
    pub child_tid_at: Option<u64>,
    /// Where the kernel clears a word when the task exits (`CLONE_CHILD_CLEARTID`,
    /// `set_tid_address`).
    pub clear_tid_at: Option<u64>,
    /// The recorder sent this task a preemption `SIGSTOP` whose stop has not been seen yet.
    pub stop_sent: bool,
    /// The timer's count of ticks (`tracee::alarm::fired`) when the recorder asked the
    /// library to give the CPU up at the task's next syscall (its slice ran out while others
    /// waited): the task yields at the entry of its next traced call.
    pub yield_asked: Option<u64>,
    /// Its slot's count of buffered calls a tick before its time slice ended.
    pub calls_seen: Option<u64>,
    /// The task is stopped at the signal-delivery-stop of this signal, to be handled when the
    /// task gets the CPU (right after its pending syscall event is written).
    pub held_signal: Option<i32>,
    /// Its slot of the in-process library (its `gs` base), when its address space has it.
    pub slot: Option<u64>,
    /// The library is to be loaded at the exit stop of the exec that planned it.
    pub library_pending: bool,
    /// An asynchronous signal was just delivered by a single step: its stop (at the handler's
    /// first instruction) is still that signal's boundary.
    pub entering_handler: bool,
    /// The lane (tracer thread) that traces it (see `recording::lanes`).
    pub lane: u8,
    /// It has just executed a new program and not run since (it may move to another lane).
    pub just_execed: bool,
}

impl Task {
    /// A task of process `pid` in state `state`, in its own process's address space.
    pub fn new(tracee: Tracee, pid: i32, state: State) -> Task {
        Task {
            tracee,
            pid,
            mm: pid,
            state,
            boundary: None,
            resent: Vec::new(),
            child_tid_at: None,
            clear_tid_at: None,
            stop_sent: false,
            yield_asked: None,
            calls_seen: None,
            held_signal: None,
            slot: None,
            library_pending: false,
            entering_handler: false,
            lane: 0,
            just_execed: false,
        }
    }

    /// The task id.
    pub fn tid(&self) -> i32 {
        self.tracee.pid().as_raw()
    }

    /// Whether the task is the leader of its process.
    pub fn is_leader(&self) -> bool {
        self.tid() == self.pid
    }
}
