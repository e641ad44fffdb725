//! The errors reading or writing a trace can end in.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong with a trace. Each message reads well as one line after
/// `deja: `.
#[derive(thiserror::Error, Debug)]
pub enum TraceError {
    /// The directory has no `index.sqlite`.
    #[error("{} is not a deja trace (no index.sqlite)", .0.display())]
    NotATrace(PathBuf),

    /// The trace was written in a format version this build cannot read.
    #[error(
        "trace format version {found} is not supported (this deja reads versions {} to \
         {supported}): \
         replay it with the deja that recorded it, or record the program again",
        crate::OLDEST_READABLE_VERSION
    )]
    UnsupportedVersion {
        /// The version the trace declares.
        found: u32,
        /// The newest version this build reads (the one it writes).
        supported: u32,
    },

    /// The trace's bytes do not mean what the format says they must.
    #[error("corrupt trace {}: {what}", .path.display())]
    Corrupt {
        /// The file (or trace directory) the damage was found in.
        path: PathBuf,
        /// What is wrong, e.g. `events chunk 3 at offset 1234 fails its checksum`.
        what: String,
    },

    /// A system call on a trace file failed. (The kernel's error is part of the message and
    /// deliberately not the error's `source()`: a report of the whole chain would say it twice.)
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file the call was about.
        path: PathBuf,
        /// The error the kernel returned.
        error: io::Error,
    },

    /// The trace index (`index.sqlite`) could not be read or written.
    #[error("trace index {}: {error}", .path.display())]
    Sqlite {
        /// The index file.
        path: PathBuf,
        /// What SQLite reported.
        error: rusqlite::Error,
    },

    /// An event or the metadata could not be encoded (a bug, not a property of any file).
    #[error("cannot encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },

    /// A new trace was to be created in a directory that already holds something.
    #[error("{} already exists and is not empty", .0.display())]
    DirNotEmpty(PathBuf),

    /// The trace was sealed by another user or machine (or by none), and the replay was
    /// given neither its digest nor leave to trust it (see `seal.rs`).
    #[error(
        "{} was {}; it may have been changed since. Replay it with --digest {digest} if that is \
         the digest its recording printed (deja info shows it where it was recorded), or with \
         --trust to take it as it is",
        .path.display(),
        if .key_id.is_empty() { "not sealed (recorded by an older deja or without a sealing key, or its seal was removed)".to_string() } else { format!("sealed by another user or machine (key {})", .key_id) }
    )]
    Untrusted {
        /// The trace directory.
        path: PathBuf,
        /// The key the seal names (empty: none).
        key_id: String,
        /// The trace's digest as its files are now.
        digest: String,
    },

    /// There is no place to keep traces.
    #[error("cannot find a place for traces: set $DEJA_TRACE_DIR or $HOME")]
    NoTraceRoot,

    /// `latest` was asked for but nothing has been recorded yet.
    #[error("no traces yet in {}; record one with `deja rec PROG`", .root.display())]
    NoTraces {
        /// The trace root directory.
        root: PathBuf,
    },

    /// The `latest-trace` link names a trace that is gone.
    #[error("the latest trace {} no longer exists", .target.display())]
    LatestMissing {
        /// Where `latest-trace` points.
        target: PathBuf,
    },

    /// A trace named on the command line is neither a path nor a trace under the root.
    #[error("no trace {name:?}: not a directory, nor a trace in {}", .root.display())]
    TraceNotFound {
        /// The name as given.
        name: String,
        /// The trace root directory that was searched.
        root: PathBuf,
    },

    /// A directory deja would write to or trust is owned by another user, or writable by
    /// others: they could rename files in it or re-point `latest-trace`.
    #[error("refusing {}: {why}", .path.display())]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        why: String,
    },
}

/// Result of trace operations.
pub type Result<T, E = TraceError> = std::result::Result<T, E>;

impl TraceError {
    /// A `Corrupt` error about `path`.
    pub(crate) fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        TraceError::Corrupt {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Wraps an I/O error with the path it concerns, for `map_err`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TraceError + '_ {
    move |error| TraceError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Wraps an SQLite error with the index path, for `map_err`.
pub(crate) fn sql_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> TraceError + '_ {
    move |error| TraceError::Sqlite {
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of the whole chain (`deja: {:#}`) says the kernel's error once.
    #[test]
    fn an_io_error_is_said_once() {
        let e = io_err(Path::new("/t/events"))(io::Error::from_raw_os_error(libc::ENOSPC));
        let shown = format!("{:#}", anyhow::Error::from(e).context("writing the trace"));
        assert_eq!(
            shown.matches("No space left on device").count(),
            1,
            "{shown}"
        );
        assert!(
            shown.starts_with("writing the trace: /t/events: "),
            "{shown}"
        );
    }
}
