//! Keeping every file the program maps in the trace, once per file version.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use trace_format::{FileRef, TraceWriter};

/// Identity of one version of a file: device, inode, size and modification time.
type FileVersion = (u64, u64, u64, i64, i64);

/// Remembers which file versions are already in the store, so a library mapped segment by
/// segment is hashed and stored once.
#[derive(Default)]
pub struct MappedFiles {
    stored: HashMap<FileVersion, FileRef>,
}

impl MappedFiles {
    /// Stores the file behind `source` (a path the recorder can open, such as
    /// `/proc/PID/fd/N`), known to the program as `shown_path`.
    /// `fresh`: store it again even if this version (by its metadata) was stored before, for a
    /// file whose content may have changed without its metadata (a write through a mapping).
    pub fn store(
        &mut self,
        writer: &mut TraceWriter,
        source: &str,
        shown_path: &str,
        fresh: bool,
    ) -> Result<FileRef> {
        let m = std::fs::metadata(source).with_context(|| format!("inspecting {shown_path}"))?;
        self.store_as(writer, &m, source, shown_path, fresh)
    }

    /// [`Self::store`] of `source`, whose metadata the caller has read (`m`).
    pub fn store_as(
        &mut self,
        writer: &mut TraceWriter,
        m: &std::fs::Metadata,
        source: &str,
        shown_path: &str,
        fresh: bool,
    ) -> Result<FileRef> {
        match self.known(m, fresh) {
            Some(f) => Ok(f),
            None => self.store_new(writer, m, source, shown_path),
        }
    }

    /// The stored file of the version `m` describes, if it was stored before and need not be
    /// stored afresh.
    fn known(&self, m: &std::fs::Metadata, fresh: bool) -> Option<FileRef> {
        if fresh {
            return None;
        }
        self.stored.get(&version(m)).cloned()
    }

    /// [`Self::store`] of a version not stored yet, of metadata `m`.
    fn store_new(
        &mut self,
        writer: &mut TraceWriter,
        m: &std::fs::Metadata,
        source: &str,
        shown_path: &str,
    ) -> Result<FileRef> {
        // Link the program's path when it still names the same file (links are cheaper than
        // copies); otherwise store from the recorder's handle.
        let same_file = std::fs::metadata(shown_path)
            .map(|p| p.dev() == m.dev() && p.ino() == m.ino())
            .unwrap_or(false);
        let from = if same_file { shown_path } else { source };
        let f = writer
            .store_file(std::path::Path::new(from), shown_path)
            .with_context(|| format!("keeping a copy of {shown_path}"))?;
        self.stored.insert(version(m), f.clone());
        Ok(f)
    }

    /// The files stored with more than one content (changed between two mappings).
    pub fn with_several_contents(&self) -> Vec<trace_format::FileId> {
        let mut hashes: HashMap<(u64, u64), &str> = HashMap::new();
        let mut several = Vec::new();
        for ((dev, ino, ..), f) in &self.stored {
            match hashes.insert((*dev, *ino), &f.hash) {
                Some(h) if h != f.hash => several.push(trace_format::FileId {
                    dev: *dev,
                    ino: *ino,
                }),
                _ => {}
            }
        }
        several
    }

    /// Stores the file behind the `/proc` link `link` (`/proc/PID/exe`, `/proc/PID/fd/N`),
    /// known to the program by the path the link names. `meta`: the metadata of what `link`
    /// names, when the caller has it (a version stored before then costs no other syscall).
    pub fn store_link(
        &mut self,
        writer: &mut TraceWriter,
        link: &str,
        meta: Option<&std::fs::Metadata>,
        fresh: bool,
    ) -> Result<FileRef> {
        let m = match meta {
            Some(m) => m.clone(),
            None => std::fs::metadata(link).with_context(|| format!("inspecting {link}"))?,
        };
        if let Some(f) = self.known(&m, fresh) {
            return Ok(f);
        }
        let shown = std::fs::read_link(link).with_context(|| format!("reading {link}"))?;
        let shown = shown.to_string_lossy();
        let shown = shown.strip_suffix(" (deleted)").unwrap_or(&shown);
        self.store_new(writer, &m, link, shown)
    }
}

impl MappedFiles {
    /// The stored versions a buffered `mmap` may map (see `syscallbuf::abi::FileTable`),
    /// those `first` names first (so a full table keeps them), then by path, at most `max`:
    /// of files other than those in `changed`, that are
    /// system files (under `trace_format::SYSTEM_PREFIXES`, which deja takes as unchanging,
    /// and the dynamic loader's cache, which `ldconfig` replaces whole, never writes in
    /// place) or were last modified more than [`SETTLED`] before `now` (seconds and
    /// nanoseconds since the epoch): a write after `now` gives such a file another mtime
    /// (see the recorder's README, "Mapped files").
    pub fn table_versions(
        &self,
        changed: impl Fn(&trace_format::FileId) -> bool,
        now: (i64, i64),
        first: &std::collections::BTreeSet<String>,
        max: usize,
    ) -> Vec<(syscallbuf::abi::FileKey, trace_format::FileId, FileRef)> {
        let settled = |mtime: i64, nsec: i64| {
            (i128::from(now.0) * 1_000_000_000 + i128::from(now.1))
                - (i128::from(mtime) * 1_000_000_000 + i128::from(nsec))
                > SETTLED.as_nanos() as i128
        };
        let mut out: Vec<_> = self
            .stored
            .iter()
            .filter(|(&(.., mtime, nsec), f)| {
                f.path == "/etc/ld.so.cache"
                    || trace_format::is_system_path(std::path::Path::new(&f.path))
                    || settled(mtime, nsec)
            })
            .map(|(&(dev, ino, size, mtime, mtime_nsec), f)| {
                let key = syscallbuf::abi::FileKey {
                    dev,
                    ino,
                    size,
                    mtime,
                    mtime_nsec,
                };
                (key, trace_format::FileId { dev, ino }, f.clone())
            })
            .filter(|(_, id, _)| !changed(id))
            .collect();
        // The files `first` names first (what the process's executable mapped before), so
        // that a truncated table keeps them.
        out.sort_by_key(|(k, _, f)| (!first.contains(&f.path), f.path.clone(), k.ino));
        out.truncate(max);
        out
    }
}

/// How long before a file's table is written the file must have been last modified, for a
/// file outside the system directories: longer than the coarse clock's tick that stamps
/// writes, by far.
pub const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

/// The version of a file `m` describes.
fn version(m: &std::fs::Metadata) -> FileVersion {
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}
