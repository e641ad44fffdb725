//! The file pool of a trace root: stored files shared by its traces, so that recording the
//! same unchanged file again (a program's own libraries, which are copied, not hard-linked
//! like system files) neither copies nor hashes it (see the README's "File pool").
//!
//! `<pool>/<hash>` is a hard link to a trace's stored copy (never modified: traces are written
//! once); `<pool>/keys/<identity>` holds the hash of the source file with that identity
//! (device, inode, size, modification and change times). A key is written only for a file
//! whose change time was at least [`SETTLED`] old when it was hashed: any later write to it
//! (`write`, `truncate`, `mmap` writes reaching the file) sets its change time to a later
//! clock tick, so a key that still matches names unchanged content. A rewrite within the
//! clock tick of an earlier change could keep the times as they were: such recent files are
//! never keyed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a file must have been unchanged when it is hashed for its hash to be keyed.
const SETTLED: Duration = Duration::from_secs(2);

/// A trace root's file pool.
#[derive(Debug, Clone)]
pub struct Pool {
    dir: PathBuf,
}

impl Pool {
    /// The pool in `dir`, created (mode 0700) if missing; `None` if it cannot be.
    pub fn open(dir: &Path) -> Option<Pool> {
        crate::writer::create_private_dir(&dir.join("keys"), true).ok()?;
        Some(Pool {
            dir: dir.to_path_buf(),
        })
    }

    /// The pooled copy of the source file whose metadata is `m`, if it is pooled and unchanged
    /// since: its hash and path.
    /// Where a finished recording parks its trace's reserve (`.reserve`, see the README, "A
    /// full disk") for the next recording to take: renamed there and back, a reserve is
    /// neither allocated nor freed again (freeing blocks is a synchronous discard on some
    /// file systems). At most one is parked; it holds its 640 KiB of the disk meanwhile.
    pub fn reserve_path(&self) -> PathBuf {
        self.dir.join("reserve")
    }

    pub(crate) fn find(&self, m: &fs::Metadata) -> Option<(String, PathBuf)> {
        let hash = fs::read_to_string(self.key_path(m)).ok()?;
        let hash = hash.trim();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let pooled = self.dir.join(hash);
        pooled
            .symlink_metadata()
            .ok()
            .filter(|p| p.is_file() && p.len() == m.len())?;
        Some((hash.to_string(), pooled))
    }

    /// Adds `stored` (a trace's copy, named by its `hash`) to the pool as the content of the
    /// source file whose metadata was `m` when it was copied. Best effort: a pool that cannot
    /// take it is only slower.
    pub(crate) fn add(&self, m: &fs::Metadata, hash: &str, stored: &Path) {
        if !settled(m.ctime()) {
            return;
        }
        let pooled = self.dir.join(hash);
        if pooled.symlink_metadata().is_err() && fs::hard_link(stored, &pooled).is_err() {
            return;
        }
        write_atomically(&self.key_path(m), hash);
    }

    /// The hash of the system file whose metadata is `m` (a file the writer hard-links), if
    /// an earlier recording hashed it and it is unchanged since (see [`Pool::add_system`]).
    pub(crate) fn find_system(&self, m: &fs::Metadata) -> Option<String> {
        let hash = fs::read_to_string(self.system_key_path(m)).ok()?;
        let hash = hash.trim();
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hash.to_string())
    }

    /// Remembers `hash` as the content of the system file whose metadata is `m`. Keyed without
    /// its change time, which every hard link to the file changes; a system file is replaced,
    /// not rewritten, by package managers (a new inode), and one modified less than
    /// [`SETTLED`] before (by its modification time) is not keyed. The trace's stored file is
    /// that very inode, so a key can only be as wrong as the hard link itself.
    pub(crate) fn add_system(&self, m: &fs::Metadata, hash: &str) {
        if !settled(m.mtime()) {
            return;
        }
        write_atomically(&self.system_key_path(m), hash);
    }

    fn system_key_path(&self, m: &fs::Metadata) -> PathBuf {
        self.dir.join("keys").join(format!(
            "sys-{:x}-{:x}-{:x}-{}.{}",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ))
    }

    fn key_path(&self, m: &fs::Metadata) -> PathBuf {
        self.dir.join("keys").join(format!(
            "{:x}-{:x}-{:x}-{}.{}-{}.{}",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ))
    }
}

/// Whether a file time `t` (seconds since the epoch) is at least [`SETTLED`] old.
fn settled(t: i64) -> bool {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|now| now.checked_sub(Duration::new(t.max(0) as u64, 0)))
        .is_some_and(|age| age >= SETTLED)
}

/// Writes `text` to `path` through a temporary file and a rename (best effort).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if written.is_err() || fs::rename(&tmp, path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}
