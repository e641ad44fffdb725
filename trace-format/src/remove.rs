//! Removing a trace (`deja rm`, and the passing runs `deja rec --keep-failing` and
//! `--until-fail` drop): only a directory that is plainly a deja trace, the user's own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result, TraceError};
use crate::format::{BLOBS_FILE, EVENTS_FILE, FILES_DIR, INDEX_FILE};
use crate::store::{check_private_dir, TraceRoot, LATEST_LINK};

/// What may sit at the top of a trace directory besides [`FILES_DIR`]: the index and its
/// SQLite side files, the data files, and the reserves of a recording that did not finish.
const TOP_FILES: &[&str] = &[
    INDEX_FILE,
    "index.sqlite-journal",
    "index.sqlite-wal",
    "index.sqlite-shm",
    EVENTS_FILE,
    BLOBS_FILE,
    ".reserve",
    ".reserve-end",
];

/// Refuses `dir` unless it is a trace deja could have written, of the user's own: a real
/// directory (a symlink to one is judged by its target, which is what gets removed) that
/// [`check_private_dir`] accepts, holding an `index.sqlite`, and nothing but the files a trace
/// holds (`files/` only stored files, named by their hash). No recording may be writing it.
/// Returns the directory's real path.
pub fn check_removable(dir: &Path) -> Result<PathBuf> {
    let real = fs::canonicalize(dir).map_err(io_err(dir))?;
    let not_a_trace = |why: String| TraceError::Unsafe {
        path: dir.to_path_buf(),
        why: format!("not a deja trace ({why}); deja removes only traces"),
    };
    let m = fs::symlink_metadata(&real).map_err(io_err(&real))?;
    if !m.is_dir() {
        return Err(not_a_trace("not a directory".into()));
    }
    check_private_dir(&real, "the trace directory")?;
    let index = fs::symlink_metadata(real.join(INDEX_FILE));
    if !index.is_ok_and(|m| m.is_file()) {
        return Err(not_a_trace(format!("no {INDEX_FILE}")));
    }
    for entry in fs::read_dir(&real).map_err(io_err(&real))? {
        let entry = entry.map_err(io_err(&real))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type().map_err(io_err(&entry.path()))?;
        if name == FILES_DIR && kind.is_dir() {
            check_files_dir(&entry.path()).map_err(not_a_trace)?;
        } else if !(TOP_FILES.contains(&&*name) && kind.is_file()) {
            return Err(not_a_trace(format!("it holds {name:?}")));
        }
    }
    if crate::writer::recording_in_progress(&real) {
        return Err(TraceError::Unsafe {
            path: dir.to_path_buf(),
            why: "a recording is writing this trace; stop it first".into(),
        });
    }
    Ok(real)
}

/// Whether `files/` holds only stored files: regular files named by a 64-digit hex hash, or
/// the temporary names the writer stores them under first (`.tmp-PID-N`).
fn check_files_dir(files: &Path) -> std::result::Result<(), String> {
    let entries = fs::read_dir(files).map_err(|e| format!("{}: {e}", files.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", files.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let hashed = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if !(regular && (hashed || name.starts_with(".tmp-"))) {
            return Err(format!("{FILES_DIR}/ holds {name:?}"));
        }
    }
    Ok(())
}

/// Removes the trace in `dir` after [`check_removable`]; returns the real path it removed.
pub fn remove_trace(dir: &Path) -> Result<PathBuf> {
    let real = check_removable(dir)?;
    fs::remove_dir_all(&real).map_err(io_err(&real))?;
    Ok(real)
}

impl TraceRoot {
    /// Removes the trace in `dir` ([`remove_trace`]). If `latest-trace` pointed at it, the
    /// link is pointed back at `latest_before` (a trace directory that still exists: the
    /// latest trace before the removed one was recorded), or removed.
    pub fn remove_trace(&self, dir: &Path, latest_before: Option<&Path>) -> Result<PathBuf> {
        let link = self.path().join(LATEST_LINK);
        let was_latest = fs::canonicalize(&link).ok();
        let real = remove_trace(dir)?;
        if was_latest.as_deref() == Some(real.as_path()) {
            match latest_before
                .filter(|d| d.is_dir() && fs::canonicalize(d).ok() != Some(real.clone()))
            {
                Some(before) => self.set_latest(before)?,
                None => match fs::remove_file(&link) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&link)(e)),
                    _ => {}
                },
            }
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    }

    fn fake_trace(dir: &Path) {
        private(dir);
        for f in [INDEX_FILE, EVENTS_FILE, BLOBS_FILE] {
            fs::write(dir.join(f), b"x").unwrap();
        }
        private(&dir.join(FILES_DIR));
        fs::write(dir.join(FILES_DIR).join("ab".repeat(32)), b"lib").unwrap();
    }

    #[test]
    fn removes_a_trace_and_refuses_anything_else() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("prog-0");
        fake_trace(&t);
        let other = tmp.path().join("other");
        fake_trace(&other);
        fs::write(other.join("notes.txt"), b"mine").unwrap();
        let err = remove_trace(&other).unwrap_err().to_string();
        assert!(err.contains("not a deja trace"), "{err}");
        assert!(other.join("notes.txt").exists());
        let plain = tmp.path().join("plain");
        private(&plain);
        assert!(remove_trace(&plain).is_err());
        let stray = tmp.path().join("stray");
        fake_trace(&stray);
        fs::write(stray.join(FILES_DIR).join("x"), b"?").unwrap();
        assert!(remove_trace(&stray).is_err());
        remove_trace(&t).unwrap();
        assert!(!t.exists());
    }

    #[test]
    fn latest_link_follows_the_removal() {
        let tmp = tempfile::tempdir().unwrap();
        private(tmp.path());
        let root = TraceRoot::open(tmp.path()).unwrap();
        let (a, b) = (tmp.path().join("p-0"), tmp.path().join("p-1"));
        fake_trace(&a);
        fake_trace(&b);
        root.set_latest(&b).unwrap();
        root.remove_trace(&b, Some(&a)).unwrap();
        assert_eq!(root.latest().unwrap(), a);
        root.remove_trace(&a, None).unwrap();
        assert!(fs::symlink_metadata(tmp.path().join(LATEST_LINK)).is_err());
    }
}
