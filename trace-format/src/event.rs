//! The events a trace is made of: one per source of nondeterminism the recorder closed.
//!
//! Events are plain data. The recorder builds them from ptrace stops; the replayer consumes them
//! in order and checks the replayed tracee against them.

use serde::{Deserialize, Serialize};

/// A thread id as the recording saw it.
pub type Tid = i32;

/// The general registers in the kernel's `struct user_regs_struct` order (27 words).
pub type RegsWords = [u64; 27];

/// One event of a recording, in the order it happened.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Event {
    /// The program image right after the kernel loaded it (the first event of every trace).
    Exec(Box<ExecEvent>),
    /// A system call and everything it returned.
    Syscall(SyscallEvent),
    /// A signal delivered to the tracee.
    Signal(SignalEvent),
    /// A trapped `rdtsc`/`rdtscp` and the value it produced.
    Rdtsc(RdtscEvent),
    /// A trapped `cpuid` and the values it produced (only where CPUID faulting exists).
    Cpuid(CpuidEvent),
    /// The tracee ended.
    Exit(ExitEvent),
    /// A task made a new task (`clone`, `fork`, `vfork`, `clone3`), at the moment the kernel
    /// created it; the parent's syscall event follows later, when the parent runs again.
    Clone(CloneEvent),
    /// A task made by a [`CloneEvent`] runs for the first time.
    Start(StartEvent),
    /// The recorder took the CPU from a task in the middle of its user code (its time slice
    /// ran out while another task waited): the task stops at [`PreemptEvent::point`].
    Preempt(PreemptEvent),
    /// A preempted task gets the CPU again and runs on from its point.
    Resume(ResumeEvent),
    /// Emulated ptrace between two recorded tasks: the traced task stops for its emulated
    /// tracer, is changed by it, or is resumed by it (see the recorder's README).
    Ptrace(PtraceEvent),
    /// Syscalls the task made through the in-process library (the fast path) during its run
    /// since its previous event, in order, drained at its stop.
    Buffered(BufferedEvent),
    /// A syscall site was patched to jump into the in-process library; the task, stopped at
    /// that syscall's entry, makes the call again through the patch.
    Patch(PatchEvent),
    /// Like `Patch`, with more sites of the task's process patched right after the site the
    /// task is stopped at, ahead of their first call (see [`PatchesEvent`]). Added in format
    /// version 7.
    Patches(PatchesEvent),
    /// The task's process moved to another lane of the recorder (a tracer thread of another
    /// CPU): from its next run on, its runs overlap those of the other lane's tasks.
    Lane(LaneEvent),
    /// The files the `mmap`s of the task's next [`BufferedEvent`] mapped (it comes right
    /// before that event). Added in format version 8.
    BufferedMaps(BufferedMapsEvent),
}

impl Event {
    /// The recorded bytes the event carries as [`Data`] (memory writes, a `Buffered` event's
    /// records), which the writer may move to the blob file.
    pub fn data_mut(&mut self) -> Vec<&mut Data> {
        match self {
            Event::Syscall(e) => e.writes.iter_mut().map(|w| &mut w.data).collect(),
            Event::Clone(e) => e.writes.iter_mut().map(|w| &mut w.data).collect(),
            Event::Start(e) => e.writes.iter_mut().map(|w| &mut w.data).collect(),
            Event::Buffered(e) => vec![&mut e.records],
            _ => Vec::new(),
        }
    }

    /// The task the event belongs to.
    pub fn tid(&self) -> Tid {
        match self {
            Event::Exec(e) => e.tid,
            Event::Syscall(e) => e.tid,
            Event::Signal(e) => e.tid,
            Event::Rdtsc(e) => e.tid,
            Event::Cpuid(e) => e.tid,
            Event::Exit(e) => e.tid,
            Event::Clone(e) => e.tid,
            Event::Start(e) => e.tid,
            Event::Preempt(e) => e.tid,
            Event::Resume(e) => e.tid,
            Event::Ptrace(e) => e.tid,
            Event::Buffered(e) => e.tid,
            Event::Patch(e) => e.tid,
            Event::Patches(e) => e.first.tid,
            Event::Lane(e) => e.tid,
            Event::BufferedMaps(e) => e.tid,
        }
    }

    /// A short name of the event kind, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Exec(_) => "exec",
            Event::Syscall(_) => "syscall",
            Event::Signal(_) => "signal",
            Event::Rdtsc(_) => "rdtsc",
            Event::Cpuid(_) => "cpuid",
            Event::Exit(_) => "exit",
            Event::Clone(_) => "clone",
            Event::Start(_) => "start",
            Event::Preempt(_) => "preempt",
            Event::Resume(_) => "resume",
            Event::Ptrace(_) => "ptrace",
            Event::Buffered(_) => "buffered",
            Event::Patch(_) => "patch",
            Event::Patches(_) => "patches",
            Event::Lane(_) => "lane",
            Event::BufferedMaps(_) => "buffered maps",
        }
    }
}

/// Where a piece of recorded bytes lives: inline in the event stream, or in the blob file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Small payloads travel inside the event frame.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Large payloads are stored once in `blobs.zst` at this offset (compressed frame) and
    /// decompress to `len` bytes.
    Blob {
        /// Offset of the blob's record in the blob file.
        offset: u64,
        /// Uncompressed length.
        len: u64,
    },
}

impl Data {
    /// Number of bytes this payload holds once resolved.
    pub fn len(&self) -> u64 {
        match self {
            Data::Inline(v) => v.len() as u64,
            Data::Blob { len, .. } => *len,
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes the kernel wrote into the tracee's memory at `addr`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemWrite {
    /// Tracee address of the first byte.
    pub addr: u64,
    /// The bytes.
    pub data: Data,
}

/// A file kept in the trace's content-addressed file store.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileRef {
    /// Hex BLAKE3 digest of the content; the file is `files/<hash>` in the trace directory.
    pub hash: String,
    /// The path the recorded program knew it by.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// One line of `/proc/PID/maps` as it was in the recording.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions as the kernel prints them, e.g. `r-xp`.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// The path or pseudo-name (`[stack]`, `[vdso]`), empty for anonymous memory.
    pub name: String,
    /// The stored copy of the file, for file-backed mappings.
    pub file: Option<FileRef>,
}

/// A file's identity in the recording (its device and inode): every mapping of one file, and
/// every write to it, reaches one emulated copy of it in the replay.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Device number (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
}

/// A syscall's effect on a file the program maps. Replay keeps one emulated copy of each such
/// file, maps that copy wherever the recording mapped the file, and applies these effects to
/// it, so its mappings see what the recording's did (a `write` to a file mapped `MAP_SHARED`
/// changes the mapping).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum FileEffect {
    /// `mmap` of the file: the mapping is made from the emulated copy, whose content is first
    /// set to the event's `mapped_file` (the file as it was at this moment).
    Map(FileId),
    /// `write`, `pwrite64`, `writev`, `pwritev`, `pwritev2`: the call's `result` bytes, taken
    /// from its buffers in order, land in the file at `offset`.
    Write {
        /// The file written.
        file: FileId,
        /// File offset of the first byte.
        offset: u64,
    },
    /// A `write`-family call to `/proc/PID/mem` (or `/proc/PID/task/TID/mem`): its `result`
    /// bytes land in the memory of task `tid` (the recording's id) at `addr`.
    ProcMem {
        /// The task whose memory is written.
        tid: Tid,
        /// Address of the first byte.
        addr: u64,
    },
    /// `ftruncate`: the file now has `size` bytes.
    Resize {
        /// The file resized.
        file: FileId,
        /// Its new size.
        size: u64,
    },
    /// `fallocate(mode, offset, len)` on the file (e.g. punching a hole).
    Fallocate {
        /// The file.
        file: FileId,
        /// The `mode` flags.
        mode: i32,
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
    /// `shmat` of a System V shared memory segment, emulated as a shared mapping of a copy of
    /// the segment (`mapped_file`, the segment's bytes at this moment) of `size` bytes.
    ShmAttach {
        /// The segment's identity (`dev` 0, `ino` its id).
        file: FileId,
        /// Size of the segment.
        size: u64,
    },
    /// `shmdt`: the segment attached at the call's address, `size` bytes, is unmapped.
    ShmDetach {
        /// Size of the segment.
        size: u64,
    },
}

/// The state of a freshly exec'd program.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExecEvent {
    /// The task.
    pub tid: Tid,
    /// Registers at the exec stop.
    pub regs: RegsWords,
    /// The executable the kernel ran (after `#!` resolution), kept in the file store.
    pub exe: FileRef,
    /// The command line of the new program (`/proc/PID/cmdline`), for `deja ps`.
    pub argv: Vec<String>,
    /// Address of the first byte of `stack`: the stack pointer at the exec stop.
    pub stack_addr: u64,
    /// The initial stack from the stack pointer to the top of `[stack]`: argv, envp, auxv with
    /// its AT_RANDOM bytes, and the strings they point to, exactly as the program saw them.
    #[serde(with = "serde_bytes")]
    pub stack: Vec<u8>,
    /// The memory map at the exec stop.
    pub mappings: Vec<Mapping>,
    /// Signals blocked at the exec (bit `signo - 1`): the mask survives `execve`.
    pub sig_blocked: u64,
    /// Signals ignored (`SIG_IGN`) at the exec, which also survives `execve`.
    pub sig_ignored: u64,
    /// The task's name after the exec (`/proc/PID/comm`, what `prctl(PR_GET_NAME)` returns):
    /// the replay, which runs the trace's copy of the executable, gives its task this name.
    pub comm: String,
    /// The in-process library, loaded right after the exec stop (before the program ran),
    /// when the recording used the fast path.
    pub syscallbuf: Option<LibraryLoad>,
}

/// The in-process library as it was loaded into a new program image.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LibraryLoad {
    /// BLAKE3 digest (hex) of the library's image: the replay must load the same one.
    pub image: String,
    /// The exec'ing task's slot (its `gs` base).
    pub slot: u64,
}

/// Syscalls a task made through the in-process library, without a stop each.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BufferedEvent {
    /// The task.
    pub tid: Tid,
    /// How many calls `records` holds.
    pub calls: u32,
    /// The library's records of the calls, in the order the task made them, byte for byte as
    /// the library wrote them (each: number, six arguments, result, and the bytes the kernel
    /// wrote; the layout is `syscallbuf::abi`'s, fixed by the library image the trace names in
    /// its [`ExecEvent`]): the replay hands them back to the library as they are.
    pub records: Data,
}

/// The files a task's buffered `mmap`s mapped (of versions the trace keeps): one entry per
/// such call of the [`BufferedEvent`] that follows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BufferedMapsEvent {
    /// The task.
    pub tid: Tid,
    /// The calls, by increasing index.
    pub maps: Vec<BufferedMap>,
}

/// One buffered `mmap` of a file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BufferedMap {
    /// The call's index among the records of its [`BufferedEvent`].
    pub call: u32,
    /// The index of its file in the process's table (`syscallbuf::abi::FileTable`), as the
    /// record names it.
    pub table_index: u32,
    /// The file's identity (one emulated copy per file in replay).
    pub file: FileId,
    /// The file's content, as the trace keeps it.
    pub stored: FileRef,
}

/// The patch of one syscall site, made at the seccomp stop of its first call.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PatchEvent {
    /// The task stopped at the site's syscall.
    pub tid: Tid,
    /// The syscall number (fixed at this site).
    pub nr: u64,
    /// Address of the instruction after the `syscall` instruction (the stop's `rip`).
    pub site: u64,
    /// First byte of the patched window (the `syscall` instruction).
    pub window: u64,
    /// The window's original bytes.
    #[serde(with = "serde_bytes")]
    pub original: Vec<u8>,
    /// The bytes written over the window (a jump to the stub).
    #[serde(with = "serde_bytes")]
    pub patch: Vec<u8>,
    /// Where the stub goes.
    pub stub_addr: u64,
    /// The stub's code.
    #[serde(with = "serde_bytes")]
    pub stub: Vec<u8>,
    /// A page for stubs mapped first (its first 8 bytes hold the library hook's address).
    pub new_page: Option<u64>,
}

/// Syscall sites patched at one stop: the site the task is stopped at, as a `Patch` event
/// does, then sites of the same mapped file that earlier processes of the recording patched at
/// the same file offsets, ahead of their first call, in order (each write may need the stub
/// page the ones before mapped); the task then makes its call through the first (see the
/// recorder's README, "Patching ahead").
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PatchesEvent {
    /// The site the task is stopped at.
    pub first: PatchEvent,
    /// The sites patched ahead (their `tid` is the task's; their `site` is one past their
    /// `syscall` instruction, where no task is).
    pub ahead: Vec<PatchEvent>,
}

/// A process moves to another lane, right after its task's event and before it runs on (see
/// the recorder's README, "Processes recorded in parallel"). Each lane runs one of its tasks
/// at a time, and the lanes run at once: the events of a lane's tasks keep the order of a
/// one-CPU recording, and the other lanes' events come in between. Tasks of different lanes
/// share no memory, so what a task computes between its events depends on nothing the other
/// lanes do; a replay finds a task's next event as the next event of its lane. The tasks a
/// task creates are in its lane.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LaneEvent {
    /// The task (alone in its process).
    pub tid: Tid,
    /// Its lane from now on (0: the recorder's first).
    pub lane: u8,
}

/// A system call as it happened in the recording.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SyscallEvent {
    /// The task.
    pub tid: Tid,
    /// Syscall number (x86-64).
    pub nr: u64,
    /// The six argument registers at entry.
    pub args: [u64; 6],
    /// Address of the instruction after the `syscall` instruction.
    pub rip: u64,
    /// Digest of the general registers at entry, to detect divergence in registers the other
    /// fields do not name.
    pub regs_digest: u64,
    /// The value the kernel returned in `rax` (negative errno on failure, or a restart code
    /// when a signal interrupted the call).
    pub result: i64,
    /// Memory the kernel wrote into the tracee.
    pub writes: Vec<MemWrite>,
    /// For `mmap` of a file: the stored copy of the file that was mapped.
    pub mapped_file: Option<FileRef>,
    /// What the call did to a file the program maps, which the replay applies to its own copy
    /// of that file (see [`FileEffect`]).
    pub file_effect: Option<FileEffect>,
    /// For a write to the recording's stdout or stderr: the stream and the bytes the kernel
    /// took, so replay can echo them and check that the replayed program writes the same.
    pub echo: Option<Echoed>,
}

/// What a write to the recording's stdout or stderr put there.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Echoed {
    /// 1 for stdout, 2 for stderr.
    pub stream: u8,
    /// The bytes written (the first `result` bytes of the program's buffer or iovecs).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// How a recorded signal came about, which decides how the replayer reproduces it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalOrigin {
    /// Raised by the instruction at `rip` itself (a fault): replay reproduces it by executing.
    Fault,
    /// Sent from outside the instruction stream (kill, timer, raise, abort) and delivered at a
    /// syscall boundary: replay sends it at the same event.
    Async,
}

/// A signal delivered to the tracee.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SignalEvent {
    /// The task.
    pub tid: Tid,
    /// Signal number.
    pub signo: i32,
    /// The kernel's `siginfo_t` (128 bytes) as the tracee received it.
    #[serde(with = "serde_bytes")]
    pub siginfo: Vec<u8>,
    /// Fault or asynchronous.
    pub origin: SignalOrigin,
    /// Instruction pointer at delivery.
    pub rip: u64,
    /// Whether the signal was passed on to the program (false when the recorder consumed it).
    pub delivered: bool,
    /// For an asynchronous signal that landed in the middle of user code: the exact point it
    /// was delivered at, which the replay finds again before sending it. `None` when it was
    /// delivered right after the task's previous event (or is a fault).
    pub point: Option<Box<Point>>,
}

/// A trapped time-stamp-counter read.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RdtscEvent {
    /// The task.
    pub tid: Tid,
    /// Address of the `rdtsc`/`rdtscp` instruction.
    pub rip: u64,
    /// The counter value returned in `edx:eax`.
    pub tsc: u64,
    /// `TSC_AUX` returned in `ecx` by `rdtscp`; `None` for `rdtsc`.
    pub aux: Option<u32>,
}

/// A trapped `cpuid`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CpuidEvent {
    /// The task.
    pub tid: Tid,
    /// Address of the `cpuid` instruction.
    pub rip: u64,
    /// Leaf (`eax`) and subleaf (`ecx`) asked for.
    pub leaf: u32,
    /// Subleaf.
    pub subleaf: u32,
    /// `eax`, `ebx`, `ecx`, `edx` as returned.
    pub regs: [u32; 4],
}

/// How a task ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The status a shell reports: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exited with status {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The end of a task.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExitEvent {
    /// The task.
    pub tid: Tid,
    /// How it ended.
    pub status: ExitStatus,
}

/// A new task, as its parent's `clone`-family syscall created it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CloneEvent {
    /// The task that called `clone`, `fork`, `vfork` or `clone3`.
    pub tid: Tid,
    /// The syscall number used.
    pub nr: u64,
    /// The new task's id.
    pub child: Tid,
    /// The new task's process id: the parent's for a thread (`CLONE_THREAD`), else `child`.
    pub child_pid: Tid,
    /// The process id of the parent task.
    pub parent_pid: Tid,
    /// The `clone` flags (for `fork` and `vfork`, the flags they imply).
    pub flags: u64,
    /// What the kernel wrote into the parent's memory while creating the task (the child's
    /// id at `CLONE_PARENT_SETTID`, the pidfd at `CLONE_PIDFD`): replay writes these back, since
    /// ids differ in replay.
    pub writes: Vec<MemWrite>,
}

/// The first moment a task made by [`CloneEvent`] runs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StartEvent {
    /// The new task.
    pub tid: Tid,
    /// What the kernel wrote into the new task's memory before it ran (its id at
    /// `CLONE_CHILD_SETTID`).
    pub writes: Vec<MemWrite>,
    /// The task's slot of the in-process library (its `gs` base), when its process has it.
    pub slot: Option<u64>,
}

/// The general registers in [`RegsWords`] order that a [`Point`] does not compare: `orig_rax`
/// (kernel bookkeeping, not user state), at index 15.
pub const POINT_IGNORED_REG: usize = 15;

/// An exact moment in a task's user code between two of its events: the complete state the
/// task's future depends on, so the replay can recognise the same moment again (see the
/// recorder's README for why matching this state is exact).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Point {
    /// General registers (`rip`, `eflags`, `fs_base`, `gs_base` included) in `user_regs_struct`
    /// order. `orig_rax` is not compared, and only the arithmetic and direction flags of `eflags`.
    pub regs: RegsWords,
    /// The x87/SSE/AVX state in `tracee::xregs::FpRegs::to_bytes` form.
    #[serde(with = "serde_bytes")]
    pub fpregs: Vec<u8>,
    /// BLAKE3 digest (first 16 bytes) of every writable mapping of the task's process, with the
    /// `excluded` ranges left out (see `tracee::state::memory_digest`).
    pub digest: [u8; 16],
    /// `[start, end)` ranges left out of `digest`: memory the kernel may have written for other
    /// tasks' system calls whose events come later in the trace.
    pub excluded: Vec<(u64, u64)>,
    /// Memory the task wrote just before the point, with its value there: the replay's quick
    /// filter of candidate moments (loops whose progress lives in memory, not registers).
    pub watch: Vec<WatchedWord>,
    /// How many timer ticks the task had run since its previous event, a hint for reports.
    pub ticks: u32,
}

/// A small piece of memory and its value at a [`Point`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchedWord {
    /// Address.
    pub addr: u64,
    /// Size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// The value (little-endian, zero-extended).
    pub value: u64,
}

/// The recorder took the CPU from a task at a point in its user code.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PreemptEvent {
    /// The task.
    pub tid: Tid,
    /// Where it stopped.
    pub point: Box<Point>,
}

/// A preempted task runs again.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResumeEvent {
    /// The task.
    pub tid: Tid,
}

/// Something emulated ptrace did to a traced task, at this moment of the trace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PtraceEvent {
    /// The traced task (the tracee, not its tracer).
    pub tid: Tid,
    /// What happened to it.
    pub action: PtraceAction,
}

/// Where an emulated ptrace stop holds its task.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtraceHeld {
    /// At the signal-delivery-stop of this signal, which was not delivered (the event before
    /// is the task's undelivered [`SignalEvent`]).
    Signal(i32),
    /// At the entry of its next syscall, before the syscall's event.
    SyscallEntry,
    /// Right after its previous event (a syscall's exit, an exec, its start), before it runs
    /// on.
    AfterEvent,
    /// Inside the `clone`/`fork`/`vfork` whose [`CloneEvent`] came before, which returns only
    /// after it is resumed (no user code runs meanwhile).
    CloneEvent,
    /// At the entry of a syscall its tracer skips (`PTRACE_SYSEMU`): no event of that syscall
    /// follows; resumed, the task runs on past it with the registers its tracer left.
    SysemuEntry,
}

/// One emulated ptrace action on a traced task.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PtraceAction {
    /// The task entered an emulated ptrace stop: it stays stopped until a [`PtraceAction::Resume`].
    Stop(PtraceHeld),
    /// Its tracer changed it with this ptrace request while it was stopped (`PTRACE_POKEDATA`,
    /// `PTRACE_SETREGS`, ...): the replay makes the same request on the replayed task.
    Change {
        /// The `PTRACE_*` request.
        request: i64,
        /// Its `addr` argument.
        addr: u64,
        /// Its `data` argument: the word for a `PTRACE_POKE*`, else unused.
        word: u64,
        /// The bytes `data` pointed to in the tracer (registers, siginfo, an iovec's buffer).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Its tracer resumed it; written when the task gets the CPU again.
    Resume {
        /// The signal delivered as it resumes (0 for none).
        sig: i32,
        /// Resumed with `PTRACE_SINGLESTEP`: it runs one instruction.
        step: bool,
    },
}
