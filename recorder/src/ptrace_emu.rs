//! Emulated ptrace between recorded tasks: who traces whom, with which options, and the stop a
//! tracee is held in for its tracer (see the crate README, "ptrace inside a recording"). The
//! recorder is every task's real tracer; these relations exist only in the recorder, which
//! turns the tracee's real stops into the stops its emulated tracer asked for.

use std::collections::{HashMap, VecDeque};

use trace_format::{ExitStatus, PtraceHeld};

use crate::task::Entry;
use tracee::tracee::SIGINFO_SIZE;

/// How a tracer last resumed its tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `PTRACE_CONT` (or `PTRACE_DETACH`): stops only for signals and asked-for events.
    Cont,
    /// `PTRACE_SYSCALL`: also at the entry and exit of its next syscall.
    Syscall,
    /// `PTRACE_SINGLESTEP`: also after its next instruction.
    Step,
    /// `PTRACE_SYSEMU`: also at the entry of its next syscall, which is then skipped.
    Sysemu,
}

/// The emulated stop a tracee is in, as its tracer's `wait` reports it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The `wait` status (`WIFSTOPPED`).
    pub status: i32,
    /// What `PTRACE_GETSIGINFO` returns.
    pub siginfo: [u8; SIGINFO_SIZE],
    /// The tracer's `wait` already returned it.
    pub reported: bool,
}

/// One emulated tracing relation, keyed by the tracee's task id.
#[derive(Debug, Clone)]
pub struct Relation {
    /// The tracer's process id (any of its threads may wait for the tracee and drive it).
    pub tracer: i32,
    /// `PTRACE_O_*` options.
    pub options: u64,
    /// How it was last resumed.
    pub mode: Mode,
    /// The tracee is inside a syscall whose entry it was resumed from (an exit stop may come).
    pub in_syscall: bool,
    /// It made an `execve` whose stop has not been reported yet.
    pub exec_pending: bool,
    /// Its `PTRACE_EVENT_EXIT` stop was reported (it is on its way out).
    pub exit_reported: bool,
    /// The stop it is held in, if any.
    pub stop: Option<Report>,
    /// What `PTRACE_GETEVENTMSG` returns.
    pub event_msg: u64,
    /// Attached with `PTRACE_SEIZE` (its new tasks start with `PTRACE_EVENT_STOP`).
    pub seized: bool,
    /// Made by a traced clone: its first run starts with an emulated stop.
    pub start_pending: bool,
    /// Its real parent process, whose kernel `wait` reports its end (`None` for a thread):
    /// a tracer that is not that parent is told of the end by the recorder.
    pub real_parent: Option<i32>,
    /// Its `vfork` made this child: a `PTRACE_EVENT_VFORK_DONE` stop comes when it returns.
    pub vfork_done: Option<i32>,
    /// `PTRACE_INTERRUPT` sent it a `SIGSTOP` whose stop is reported as `PTRACE_EVENT_STOP`.
    pub interrupt: bool,
    /// The clone syscall it is held in at a clone event, to go on with when resumed.
    pub clone_entry: Option<Box<Entry>>,
    /// Held at its group-stop: the syscall it was restarting, if any, to go on with (see
    /// `recording/ptrace/job_control.rs`).
    pub group_stop: Option<Option<Box<Entry>>>,
    /// The stop signal of its process's group-stop, until a `SIGCONT` ends it: a
    /// `PTRACE_INTERRUPT` stop reports it in place of `SIGTRAP`.
    pub stop_sig: Option<i32>,
}

impl Relation {
    /// A new relation with tracer process `tracer` and options `options`.
    pub fn new(tracer: i32, options: u64) -> Relation {
        Relation {
            tracer,
            options,
            mode: Mode::Cont,
            in_syscall: false,
            exec_pending: false,
            exit_reported: false,
            stop: None,
            event_msg: 0,
            seized: false,
            start_pending: false,
            real_parent: None,
            clone_entry: None,
            group_stop: None,
            stop_sig: None,
            vfork_done: None,
            interrupt: false,
        }
    }

    /// Whether option `o` (`PTRACE_O_*`) is set.
    pub fn has(&self, o: i32) -> bool {
        self.options & o as u64 != 0
    }

    /// The wait status of a syscall stop (`SIGTRAP`, with bit 7 under `PTRACE_O_TRACESYSGOOD`).
    pub fn syscall_status(&self) -> i32 {
        let sig = if self.has(libc::PTRACE_O_TRACESYSGOOD) {
            libc::SIGTRAP | 0x80
        } else {
            libc::SIGTRAP
        };
        stopped_status(sig)
    }
}

/// Where the recorder holds a tracee in an emulated stop, and how its tracer resumed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Where it stands.
    pub at: PtraceHeld,
    /// Set once the tracer resumed it: the signal to deliver and how it runs on.
    pub resume: Option<(i32, Mode)>,
}

/// Every emulated tracing relation of the recording.
#[derive(Debug, Default)]
pub struct Relations {
    by_tracee: HashMap<i32, Relation>,
    /// Per tracer process, the `siginfo_t`s of the `SIGCHLD`s the recorder sent it for its
    /// tracees' stops, in order (their stops get these back).
    sigchld: HashMap<i32, VecDeque<[u8; SIGINFO_SIZE]>>,
    /// Ended tracees whose tracer is not their parent, until the tracer's `wait` reports them.
    pub zombies: Vec<Zombie>,
}

/// A tracee's end, for its tracer's `wait`.
#[derive(Debug, Clone, Copy)]
pub struct Zombie {
    /// The tracer process.
    pub tracer: i32,
    /// The tracee and its process.
    pub tid: i32,
    /// Its process.
    pub pid: i32,
    /// How it ended.
    pub status: ExitStatus,
}

/// The wait status of an end.
pub fn end_status(status: ExitStatus) -> i32 {
    match status {
        ExitStatus::Exited(c) => (c & 0xff) << 8,
        ExitStatus::Signaled(s) => s & 0x7f,
    }
}

/// The `siginfo_t` `waitid` fills in (and a `SIGCHLD` carries) for the end of `tid`.
pub fn end_siginfo(tid: i32, uid: u32, status: ExitStatus) -> [u8; SIGINFO_SIZE] {
    let (code, value) = match status {
        ExitStatus::Exited(c) => (libc::CLD_EXITED, c),
        ExitStatus::Signaled(s) => (libc::CLD_KILLED, s),
    };
    let mut info = [0u8; SIGINFO_SIZE];
    info[0..4].copy_from_slice(&libc::SIGCHLD.to_le_bytes());
    info[8..12].copy_from_slice(&code.to_le_bytes());
    info[16..20].copy_from_slice(&tid.to_le_bytes());
    info[20..24].copy_from_slice(&uid.to_le_bytes());
    info[24..28].copy_from_slice(&value.to_le_bytes());
    info
}

impl Relations {
    /// The relation of tracee `tid`.
    pub fn get(&self, tid: i32) -> Option<&Relation> {
        self.by_tracee.get(&tid)
    }

    /// The relation of tracee `tid`, to change it.
    pub fn get_mut(&mut self, tid: i32) -> Option<&mut Relation> {
        self.by_tracee.get_mut(&tid)
    }

    /// Whether `tid` has an emulated tracer.
    pub fn is_traced(&self, tid: i32) -> bool {
        self.by_tracee.contains_key(&tid)
    }

    /// Makes `tracer` trace `tid`.
    pub fn insert(&mut self, tid: i32, rel: Relation) {
        self.by_tracee.insert(tid, rel);
    }

    /// Ends the relation of tracee `tid`.
    pub fn remove(&mut self, tid: i32) -> Option<Relation> {
        self.by_tracee.remove(&tid)
    }

    /// The tracees of process `tracer`.
    pub fn tracees_of(&self, tracer: i32) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .by_tracee
            .iter()
            .filter(|(_, r)| r.tracer == tracer)
            .map(|(&t, _)| t)
            .collect();
        v.sort_unstable();
        v
    }

    /// Notes the `siginfo_t` of a `SIGCHLD` sent to process `tracer`.
    pub fn push_sigchld(&mut self, tracer: i32, info: [u8; SIGINFO_SIZE]) {
        self.sigchld.entry(tracer).or_default().push_back(info);
    }

    /// The `siginfo_t` of the oldest `SIGCHLD` sent to process `tracer` and not seen yet.
    pub fn pop_sigchld(&mut self, tracer: i32) -> Option<[u8; SIGINFO_SIZE]> {
        self.sigchld.get_mut(&tracer)?.pop_front()
    }

    /// Whether any task is traced (nothing to do for the others' waits otherwise).
    pub fn is_empty(&self) -> bool {
        self.by_tracee.is_empty()
    }
}

/// The wait status of a task stopped with `sig` (`WIFSTOPPED`, `WSTOPSIG == sig & 0xff`).
pub fn stopped_status(sig: i32) -> i32 {
    (sig << 8) | 0x7f
}

/// The wait status of a `PTRACE_EVENT_*` stop.
pub fn event_status(event: i32) -> i32 {
    stopped_status(libc::SIGTRAP | (event << 8))
}

/// A `siginfo_t` as the kernel shows it at a ptrace stop that is no signal (a syscall or event
/// stop): `SIGTRAP` with `si_code` the stop's signal number.
pub fn trap_siginfo(status: i32) -> [u8; SIGINFO_SIZE] {
    let mut info = [0u8; SIGINFO_SIZE];
    info[0..4].copy_from_slice(&libc::SIGTRAP.to_le_bytes());
    info[8..12].copy_from_slice(&((status >> 8) & 0xffff).to_le_bytes());
    info
}

/// The `siginfo_t` `waitid` fills in for a tracee `tid` (of process `pid`, user `uid`) in a
/// stop with wait status `status`.
pub fn waitid_siginfo(pid: i32, uid: u32, status: i32) -> [u8; SIGINFO_SIZE] {
    let mut info = [0u8; SIGINFO_SIZE];
    info[0..4].copy_from_slice(&libc::SIGCHLD.to_le_bytes());
    info[8..12].copy_from_slice(&libc::CLD_TRAPPED.to_le_bytes());
    info[16..20].copy_from_slice(&pid.to_le_bytes());
    info[20..24].copy_from_slice(&uid.to_le_bytes());
    info[24..28].copy_from_slice(&((status >> 8) & 0xffff).to_le_bytes());
    info
}

/// Which tasks a `wait4`/`waitid` call selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// Any child (also process groups, which are not told apart here).
    Any,
    /// The task or process with this id.
    Id(i32),
    /// None this emulation can serve (a pidfd).
    Unknown,
}

impl Selector {
    /// The selector of `wait4(pid, ...)`, `pid` the raw register: the kernel reads an `int`,
    /// so only its low 32 bits count (strace passes -1 zero-extended, `0xffffffff`).
    pub fn of_wait4(pid: u64) -> Selector {
        let pid = pid as u32 as i32;
        if pid > 0 {
            Selector::Id(pid)
        } else {
            Selector::Any
        }
    }

    /// The selector of `waitid(idtype, id, ...)`.
    pub fn of_waitid(idtype: u64, id: u64) -> Selector {
        match idtype as u32 {
            libc::P_ALL | libc::P_PGID => Selector::Any,
            libc::P_PID => Selector::Id(id as i32),
            _ => Selector::Unknown,
        }
    }

    /// Whether task `tid` of process `pid` is selected.
    pub fn selects(self, tid: i32, pid: i32) -> bool {
        match self {
            Selector::Any => true,
            Selector::Id(id) => id == tid || id == pid,
            Selector::Unknown => false,
        }
    }
}

/// The name of a `PTRACE_*` request, for warnings.
pub fn request_name(req: i64) -> String {
    let name = match req {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSER",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSER",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        14 => "PTRACE_GETFPREGS",
        15 => "PTRACE_SETFPREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        24 => "PTRACE_SYSCALL",
        25 => "PTRACE_GET_THREAD_AREA",
        26 => "PTRACE_SET_THREAD_AREA",
        30 => "PTRACE_ARCH_PRCTL",
        31 => "PTRACE_SYSEMU",
        32 => "PTRACE_SYSEMU_SINGLESTEP",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4201 => "PTRACE_GETEVENTMSG",
        0x4202 => "PTRACE_GETSIGINFO",
        0x4203 => "PTRACE_SETSIGINFO",
        0x4204 => "PTRACE_GETREGSET",
        0x4205 => "PTRACE_SETREGSET",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        0x4208 => "PTRACE_LISTEN",
        0x4209 => "PTRACE_PEEKSIGINFO",
        0x420e => "PTRACE_GET_SYSCALL_INFO",
        _ => return format!("ptrace request {req:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode_like_the_kernels() {
        let s = stopped_status(libc::SIGSTOP);
        assert!(libc::WIFSTOPPED(s));
        assert_eq!(libc::WSTOPSIG(s), libc::SIGSTOP);
        let mut r = Relation::new(1, libc::PTRACE_O_TRACESYSGOOD as u64);
        assert_eq!(r.syscall_status(), 0x857f);
        r.options = 0;
        assert_eq!(r.syscall_status(), 0x57f);
        let e = event_status(libc::PTRACE_EVENT_EXEC);
        assert_eq!(e >> 16, libc::PTRACE_EVENT_EXEC);
        assert_eq!(libc::WSTOPSIG(e), libc::SIGTRAP);
    }

    #[test]
    fn selectors() {
        assert!(Selector::of_wait4(-1i64 as u64).selects(5, 5));
        assert!(Selector::of_wait4(0xffff_ffff).selects(5, 5));
        assert!(Selector::of_wait4(7).selects(7, 3));
        assert!(!Selector::of_wait4(7).selects(8, 8));
        assert!(!Selector::of_waitid(3, 4).selects(4, 4));
    }
}
