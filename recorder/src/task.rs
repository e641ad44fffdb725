//! One traced task (thread or process) of the recording, and what it is doing.

use syscalls::Replay;
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
    /// Made `exit` or `exit_group`; its death has not been reported yet.
    Exiting,
}

/// A signal the recorder held back, with the siginfo it arrived with.
pub type HeldSignal = (i32, [u8; SIGINFO_SIZE]);

/// A traced task.
pub struct Task {
    /// ptrace handle.
    pub tracee: Tracee,
    /// Its process (thread group) id.
    pub pid: i32,
    /// Schedule state.
    pub state: State,
    /// Registers the task was resumed with right after its last event, while no instruction
    /// can have run since: a signal stop with these registers landed exactly after that event.
    pub boundary: Option<Regs>,
    /// Asynchronous signals that landed in the middle of user code, held back until the task's
    /// next event boundary (see the crate README).
    pub deferred: Vec<HeldSignal>,
    /// Held-back signals sent again by the recorder, with their original siginfo.
    pub resent: Vec<HeldSignal>,
    /// Where the kernel wrote this task's id into its own memory (`CLONE_CHILD_SETTID`).
    pub child_tid_at: Option<u64>,
    /// Whether the "runs without a system call" warning was printed for it.
    pub warned_spin: bool,
}

impl Task {
    /// A task in state `state`.
    pub fn new(tracee: Tracee, pid: i32, state: State) -> Task {
        Task {
            tracee,
            pid,
            state,
            boundary: None,
            deferred: Vec::new(),
            resent: Vec::new(),
            child_tid_at: None,
            warned_spin: false,
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
