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
        let settled = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|now| now.checked_sub(Duration::new(m.ctime().max(0) as u64, 0)))
            .is_some_and(|age| age >= SETTLED);
        if !settled {
            return;
        }
        let pooled = self.dir.join(hash);
        if pooled.symlink_metadata().is_err() && fs::hard_link(stored, &pooled).is_err() {
            return;
        }
        let key = self.key_path(m);
        let tmp = key.with_extension(format!("tmp-{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(hash.as_bytes()));
        if written.is_err() || fs::rename(&tmp, &key).is_err() {
            let _ = fs::remove_file(&tmp);
        }
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
