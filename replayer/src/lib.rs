//! The replayer: re-executes a recorded program from its trace, feeding it the recorded results
//! of every nondeterministic operation and checking at every event that it still does what the
//! recording did.

mod debug;
mod debugger;
mod divergence;
mod diversion;
mod diversion_syscalls;
mod echo;
mod exec;
mod inspect;
mod mmap;
mod parallel;
mod patched;
mod point;
mod seccomp;
mod session;
mod sigmask;
mod start;
mod tasks;
mod timeline;

pub use debug::{Halt, HwPoint, Position, ProcEvents, WatchKind};
pub use debugger::{BreakpointFilter, DebugReplay, Resume};
pub use divergence::{Divergence, Incomplete};
pub use diversion::Diversion;
pub use inspect::{PROC_FILES, PROC_LINKS};
pub use session::{replay, Progress, ReplayOptions, ReplayOutcome};
pub use start::{start_point, DebugOptions, StartPoint};
pub use timeline::Timeline;
