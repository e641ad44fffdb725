//! The on-disk trace of a deja recording: events, blobs, stored files and metadata.
//!
//! A trace is a directory written by [`TraceWriter`] and read by [`TraceReader`]; the layout
//! is described in this crate's `README.md`. [`TraceRoot`] manages the directory traces are
//! kept in. This crate is pure data: it never touches a tracee.

#![warn(missing_docs)]

mod error;
pub mod event;
mod format;
mod index;
mod meta;
pub mod pack;
mod reader;
mod remove;
pub mod seal;
mod sink;
pub mod sparse;
mod store;
mod verify;
mod writer;

pub use error::{Result, TraceError};
pub use event::*;
pub mod pool;
pub use meta::{CpuidRecord, Stopped, SyscallCounts, TraceMeta};
pub use reader::{ChunkInfo, EventIter, TraceReader};
pub use remove::{check_removable, remove_trace};
pub use store::{check_private_dir, TraceEntry, TraceRoot, LATEST_LINK};
pub use writer::{
    is_system_path, recording_in_progress, KeptEvents, TraceWriter, CHUNK_TARGET_BYTES, INLINE_MAX,
    SYSTEM_PREFIXES,
};

/// The trace format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 8;

/// The oldest trace format version this build reads: versions 7 and 8 only added event kinds
/// (`Patches`, `BufferedMaps`), so a version 6 trace is a version 8 trace without them.
pub const OLDEST_READABLE_VERSION: u32 = 6;
