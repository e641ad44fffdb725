//! Where traces live: the trace root directory, trace naming, and the `latest-trace` link.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result, TraceError};
use crate::meta::TraceMeta;
use crate::reader::TraceReader;

/// Name of the symlink to the most recent trace inside the root.
pub const LATEST_LINK: &str = "latest-trace";

/// One directory in the trace root, as [`TraceRoot::list`] reports it.
#[derive(Debug, Clone)]
pub struct TraceEntry {
    /// The directory name, e.g. `ls-0`.
    pub name: String,
    /// The full path.
    pub path: PathBuf,
    /// The trace's metadata, or why it could not be read.
    pub meta: std::result::Result<TraceMeta, String>,
}

/// The directory traces are recorded into (`$DEJA_TRACE_DIR`, else `~/.local/share/deja`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRoot {
    root: PathBuf,
}

impl TraceRoot {
    /// The root named by `$DEJA_TRACE_DIR`, else `$HOME/.local/share/deja`; created with mode
    /// 0700 if missing.
    pub fn from_env() -> Result<Self> {
        let nonempty = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty());
        let root = match nonempty(std::env::var_os("DEJA_TRACE_DIR")) {
            Some(dir) => PathBuf::from(dir),
            None => match nonempty(std::env::var_os("HOME")) {
                Some(home) => PathBuf::from(home).join(".local/share/deja"),
                None => return Err(TraceError::NoTraceRoot),
            },
        };
        Self::open(&root)
    }

    /// The root at `root`, created with mode 0700 if missing. An existing root must be owned
    /// by the current user and not writable by group or others (see [`check_private_dir`]).
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            crate::writer::create_private_dir(root, true).map_err(io_err(root))?;
        }
        check_private_dir(root, "the trace root")?;
        Ok(TraceRoot {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Creates and returns a fresh empty directory (mode 0700) for a trace of
    /// `program_name`: `<basename>-N` with the first free N from 0, the name reduced to
    /// `[A-Za-z0-9._+-]`.
    pub fn new_trace_dir(&self, program_name: &str) -> Result<PathBuf> {
        let base = sanitize_name(program_name);
        for n in 0u64.. {
            let dir = self.root.join(format!("{base}-{n}"));
            match crate::writer::create_private_dir(&dir, false) {
                Ok(()) => return Ok(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        Err(TraceError::Io {
            path: self.root.clone(),
            error: io::Error::other("no free trace name"),
        })
    }

    /// Points `latest-trace` at `dir`, replacing the previous link atomically. Traces inside
    /// the root are linked by their name, so the root can be moved.
    pub fn set_latest(&self, dir: &Path) -> Result<()> {
        let target = match dir.strip_prefix(&self.root) {
            Ok(rel) if rel.components().count() == 1 => rel.to_path_buf(),
            _ => std::path::absolute(dir).map_err(io_err(dir))?,
        };
        let tmp = self
            .root
            .join(format!(".{LATEST_LINK}.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io_err(&tmp))?;
        let link = self.root.join(LATEST_LINK);
        if let Err(e) = fs::rename(&tmp, &link) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&link)(e));
        }
        Ok(())
    }

    /// The most recent trace, as `latest-trace` names it.
    pub fn latest(&self) -> Result<PathBuf> {
        let link = self.root.join(LATEST_LINK);
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TraceError::NoTraces {
                    root: self.root.clone(),
                })
            }
            Err(e) => return Err(io_err(&link)(e)),
        };
        let path = self.root.join(target);
        if !path.is_dir() {
            return Err(TraceError::LatestMissing { target: path });
        }
        Ok(path)
    }

    /// The trace a command-line argument names: `None` is the latest; an existing path is
    /// itself; otherwise a trace of that name in the root. The trace directory must be the
    /// user's own and not writable by group or others ([`check_private_dir`]).
    pub fn resolve(&self, arg: Option<&str>) -> Result<PathBuf> {
        let dir = self.find(arg)?;
        if dir.is_dir() {
            check_private_dir(&dir, "the trace directory")?;
        }
        Ok(dir)
    }

    /// [`Self::resolve`] without the ownership check.
    fn find(&self, arg: Option<&str>) -> Result<PathBuf> {
        let Some(arg) = arg else {
            return self.latest();
        };
        let as_path = Path::new(arg);
        if !arg.is_empty() && as_path.exists() {
            return Ok(as_path.to_path_buf());
        }
        let simple_name = !arg.is_empty() && !arg.contains('/') && arg != "." && arg != "..";
        if simple_name {
            let in_root = self.root.join(arg);
            if in_root.is_dir() {
                return Ok(in_root);
            }
        }
        Err(TraceError::TraceNotFound {
            name: arg.to_string(),
            root: self.root.clone(),
        })
    }

    /// Every trace directory in the root with its metadata (or the reason it can't be read),
    /// oldest first.
    pub fn list(&self) -> Result<Vec<TraceEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let entry = entry.map_err(io_err(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == LATEST_LINK {
                continue;
            }
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if !is_dir {
                continue;
            }
            let path = entry.path();
            let meta = TraceReader::open(&path)
                .map(|r| r.meta().clone())
                .map_err(|e| e.to_string());
            entries.push(TraceEntry { name, path, meta });
        }
        let key = |e: &TraceEntry| {
            let time = match &e.meta {
                Ok(m) => m.start_time_unix,
                Err(_) => fs::metadata(&e.path)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            };
            (time, trailing_number(&e.name), e.name.clone())
        };
        entries.sort_by_cached_key(key);
        Ok(entries)
    }
}

/// Refuses a directory (`what`, e.g. "the trace root") that is not owned by the current user
/// or that group or others may write to, as ssh refuses such key files: another user could
/// rename or replace what deja writes or reads there, or re-point `latest-trace`. A symlink
/// is judged by the directory it points to.
pub fn check_private_dir(dir: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(dir).map_err(io_err(dir))?;
    // SAFETY: geteuid has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let why = if m.uid() != me {
        format!(
            "{what} is owned by uid {}, not by you (uid {me}); use a directory of your own",
            m.uid()
        )
    } else if m.mode() & 0o022 != 0 {
        format!(
            "{what} is writable by group or others (mode {:04o}); run `chmod go-w {}`",
            m.mode() & 0o7777,
            dir.display()
        )
    } else {
        return Ok(());
    };
    Err(TraceError::Unsafe {
        path: dir.to_path_buf(),
        why,
    })
}

/// The `N` of a `name-N` directory, for ordering traces started in the same second.
fn trailing_number(name: &str) -> u64 {
    name.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// The base name of `program` reduced to `[A-Za-z0-9._+-]`, never empty nor hidden.
pub(crate) fn sanitize_name(program: &str) -> String {
    let base = program
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let trimmed = name.trim_start_matches('.');
    if trimmed.len() != name.len() {
        name = trimmed.to_string();
    }
    if name.is_empty() {
        name = "trace".to_string();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::sanitize_name;

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize_name("/usr/bin/ls"), "ls");
        assert_eq!(sanitize_name("./a.out"), "a.out");
        assert_eq!(sanitize_name("my prog!"), "my_prog_");
        assert_eq!(sanitize_name(".."), "trace");
        assert_eq!(sanitize_name(""), "trace");
        assert_eq!(sanitize_name("dir/"), "dir");
        assert_eq!(sanitize_name(".hidden"), "hidden");
        assert_eq!(sanitize_name("héllo"), "h_llo");
        assert_eq!(sanitize_name(&"x".repeat(300)).len(), 64);
    }
}
