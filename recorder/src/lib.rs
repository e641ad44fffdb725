//! The recorder: runs a program under ptrace with every syscall trapped by seccomp, and writes a
//! trace of everything nondeterministic it observed (see `README.md` in this crate).

mod echo;
mod emulated;
mod exec;
mod fastpath;
mod file_effects;
mod ioctls;
mod mapped_files;
mod memory;
mod own_filters;
mod points;
mod ptrace_emu;
mod recording;
mod remote_memory;
mod session;
mod signals;
mod site_cache;
mod task;
mod tsc_mode;

use std::path::PathBuf;

pub use recording::STOP_AT_SYSCALLS_ENV;
pub use session::{record, set_ticks_blocked, signal_name, RecordOptions, RecordOutcome};

/// Where a new recording goes: an explicit directory, or a fresh one under the trace root.
#[derive(Debug, Clone)]
pub enum TraceDest {
    /// `-o DIR`.
    Dir(PathBuf),
    /// Under `$DEJA_TRACE_DIR` (or the default root), named after the program.
    Root,
}
