//! The trace's metadata: what was recorded, where, and how it ended.

use serde::{Deserialize, Serialize};

use crate::event::ExitStatus;

/// What one `cpuid` leaf returned on the recording machine.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidRecord {
    /// The leaf (`eax` on input).
    pub leaf: u32,
    /// The subleaf (`ecx` on input).
    pub subleaf: u32,
    /// `eax`, `ebx`, `ecx`, `edx` as returned.
    pub regs: [u32; 4],
}

/// Everything about a recording that is not an event. Stored as JSON in the index; fields
/// missing from the JSON take their default, so fields can be added without a new format
/// version.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct TraceMeta {
    /// The trace format version ([`crate::FORMAT_VERSION`] for traces this build writes).
    pub format_version: u32,
    /// The version of deja that recorded the trace.
    pub deja_version: String,
    /// The recorded program's command line.
    pub argv: Vec<String>,
    /// The executable the command line resolved to.
    pub exe: String,
    /// The working directory the program started in.
    pub cwd: String,
    /// The environment the program started with, as `NAME=value` strings.
    pub env: Vec<String>,
    /// When recording started, in seconds since the Unix epoch.
    pub start_time_unix: i64,
    /// The CPU the recording was pinned to, if it was.
    pub cpu: Option<u32>,
    /// Whether the recording machine trapped `cpuid` (so `cpuid` events were recorded).
    pub cpuid_faulting: bool,
    /// The `cpuid` leaves of the recording machine, to compare with the replaying one.
    pub cpuid: Vec<CpuidRecord>,
    /// How the recorded program ended; `None` while recording or if the recorder died.
    pub exit: Option<ExitStatus>,
    /// Number of events in the trace (valid when `complete` or `stopped`).
    pub event_count: u64,
    /// Whether the recorder finished the trace; `false` means it was still running or died.
    pub complete: bool,
    /// Size of the `events` file in bytes (valid when `complete`).
    pub events_bytes: u64,
    /// Size of the `blobs` file in bytes (valid when `complete`).
    pub blobs_bytes: u64,
    /// Total size of the distinct files in the file store, hard links included (valid when
    /// `complete`).
    pub files_bytes: u64,
    /// How the recording's syscalls were recorded (valid when `complete`).
    pub syscalls: SyscallCounts,
    /// The mapped files whose content changed during the recording: by a recorded effect (a
    /// write, `ftruncate`, `fallocate`), through a writable shared mapping, as System V
    /// segments, or outside the recording (stored with different contents at different
    /// times). Every other mapped file keeps one content throughout, so the replay may map
    /// the trace's copy of it as it is. `None` when unknown (the recorder did not finish, or
    /// an older deja recorded it): then every mapped file is treated as changing.
    pub changing_files: Option<Vec<crate::event::FileId>>,
    /// Why the recorder stopped before the recording's end, when it did and could say so
    /// (a recorder killed by `SIGKILL` leaves `None` and `complete` false). The trace then
    /// holds [`Self::event_count`] events, each complete.
    pub stopped: Option<Stopped>,
    /// The seed of the recording's chaos scheduling (`deja rec --chaos`), if it had it.
    pub chaos_seed: Option<u64>,
    /// The recorder kept the initial process in the first lane (see the recorder's README,
    /// "Processes recorded in parallel"): its real parent is a tracer thread, whose waits
    /// would take its stops from another lane's thread. False for traces of earlier builds,
    /// which may have moved it.
    pub root_stays_in_first_lane: bool,
}

/// Why a recording was stopped before its program ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// The recorder was sent this signal (`SIGTERM`, `SIGHUP`, or a `SIGINT` sent to it by a
    /// process): it killed the recorded tasks and kept what it had recorded.
    Signal(i32),
    /// The recorder could not go on (a full disk, say): the error's message.
    Error(String),
}

/// How many syscalls took the ptrace path and how many the in-process library buffered.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(default)]
pub struct SyscallCounts {
    /// Whether the fast path (the in-process library) was on.
    pub fast_path: bool,
    /// Syscalls recorded at a ptrace stop.
    pub traced: u64,
    /// Syscalls the library ran and logged without a stop.
    pub buffered: u64,
    /// Syscall sites patched to jump into the library.
    pub sites_patched: u64,
    /// Syscall sites of buffered calls left on the ptrace path (not safe to patch).
    pub sites_refused: u64,
}
