//! Verifying a trace's files before they are used: every stored file against the content hash
//! that names it, and every file of a trace as a regular file, never through a symlink (see
//! the README's "Integrity").
//!
//! Verification is lazy, per file, at its first use by a reader, and remembered: in the
//! reader for the rest of its life, and across replays in a per-user cache
//! (`<trace root>/.pool/verified/`, mode 0700) keyed by the stored file's identity, so a
//! replay of an unchanged trace hashes nothing. A cache entry holds the identity (boot,
//! mount, device, inode, size, modification and change times) of a file that hashed to the
//! hash it is named by. Any write to the file since sets its change time to a later clock
//! tick, which no process of the user can set back (only the clock can, and only root sets
//! it), so a matching identity means unchanged bytes. An entry is written only for a file
//! whose change time was at least [`SETTLED`] old when it was hashed (a rewrite within the
//! clock tick of an earlier change could keep the times), and only into a cache directory
//! that the user owns and nobody else can write.

use std::cell::{OnceCell, RefCell};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{io_err, Result, TraceError};
use crate::event::FileRef;
use crate::format::FILES_DIR;

/// How long a file must have been unchanged when it is hashed for its identity to be cached.
const SETTLED: Duration = Duration::from_secs(2);

/// How many identities the cache keeps per hash (copies of one content in several traces
/// that do not share an inode).
const KEYS_PER_HASH: usize = 8;

/// How many identities a cache entry may hold before it is rewritten to the newest
/// [`KEYS_PER_HASH`] (see [`remember`]): an entry grows by one line per recording that stores
/// its file, and a rewrite frees a block.
const KEYS_BEFORE_REWRITE: usize = 8 * KEYS_PER_HASH;

/// Opens `path`, a file of a trace, for reading: refused (as a corrupt trace) if it is a
/// symlink, which is never followed, or anything but a regular file. `what` names it in
/// messages (e.g. `the events file`); `dir` is the trace. The descriptor is checked, not
/// only the path: a file swapped for a symlink or a FIFO between the check and the open is
/// refused too, and a FIFO cannot block the open.
pub(crate) fn open_regular(dir: &Path, path: &Path, what: &str) -> Result<File> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(TraceError::corrupt(dir, format!("{what} is a symlink")))
        }
        Ok(m) if !m.is_file() => {
            return Err(TraceError::corrupt(
                dir,
                format!("{what} is not a regular file"),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TraceError::corrupt(dir, format!("{what} is missing")))
        }
        Err(e) => return Err(io_err(path)(e)),
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => TraceError::corrupt(dir, format!("{what} is a symlink")),
            _ => io_err(path)(e),
        })?;
    let m = file.metadata().map_err(io_err(path))?;
    if !m.is_file() {
        return Err(TraceError::corrupt(
            dir,
            format!("{what} is not a regular file"),
        ));
    }
    Ok(file)
}

/// Refuses `path` if it exists and is a symlink (a file SQLite would open by name, such as
/// the index's rollback journal, or a directory of the trace).
pub(crate) fn refuse_symlink(dir: &Path, path: &Path, what: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(TraceError::corrupt(dir, format!("{what} is a symlink")))
        }
        _ => Ok(()),
    }
}

/// The verifier of one reader's stored files.
#[derive(Default)]
pub(crate) struct Verifier {
    /// The identities of the files verified by this reader.
    seen: RefCell<HashSet<String>>,
    /// The per-user cache directory, once looked for (`None`: none usable).
    cache: OnceCell<Option<PathBuf>>,
    /// A cache directory given explicitly (tests), instead of the user's.
    cache_override: Option<Option<PathBuf>>,
}

impl Verifier {
    /// A verifier that uses `cache` (or no cache) instead of the user's.
    pub(crate) fn with_cache(cache: Option<PathBuf>) -> Self {
        Verifier {
            cache_override: Some(cache),
            ..Verifier::default()
        }
    }

    /// Opens the stored copy of `file` in trace `dir` and checks it: a regular file, not a
    /// symlink, of the recorded size, whose content hashes to the name it is stored under
    /// (unless this reader or the cache already verified this very file). Returns the open
    /// file and its path.
    pub(crate) fn open(&self, dir: &Path, file: &FileRef) -> Result<(File, PathBuf)> {
        let valid = file.hash.len() == 64
            && file
                .hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(TraceError::corrupt(
                dir,
                format!(
                    "stored file name {:?} for {} is not a hash",
                    file.hash, file.path
                ),
            ));
        }
        let files = dir.join(FILES_DIR);
        refuse_symlink(dir, &files, "the files directory")?;
        let path = files.join(&file.hash);
        let what = format!("the stored copy of {}", file.path);
        let f = open_regular(dir, &path, &what)?;
        let size = f.metadata().map_err(io_err(&path))?.len();
        if size != file.size {
            return Err(TraceError::corrupt(
                dir,
                format!("{what} has {size} bytes instead of {}", file.size),
            ));
        }
        let before = identity(&f).map_err(io_err(&path))?;
        if self.seen.borrow().contains(&before.key) {
            return Ok((f, path));
        }
        let cache = self.cache();
        if cache.is_some_and(|c| cached(c, &file.hash, &before.key)) {
            self.seen.borrow_mut().insert(before.key);
            return Ok((f, path));
        }
        let hash = crate::sparse::hash(&f, size).map_err(io_err(&path))?;
        if hash != file.hash {
            return Err(TraceError::corrupt(
                dir,
                format!("{what} does not match its hash"),
            ));
        }
        let after = identity(&f).map_err(io_err(&path))?;
        // A file that changed while it was hashed is used (its hash matched) but not
        // remembered.
        if after.key == before.key {
            if let Some(c) = cache.filter(|_| settled(before.ctime)) {
                remember(c, &file.hash, &before.key);
            }
            self.seen.borrow_mut().insert(before.key);
        }
        Ok((f, path))
    }

    /// The cache directory, found (and created) on first use.
    fn cache(&self) -> Option<&Path> {
        self.cache
            .get_or_init(|| match &self.cache_override {
                Some(c) => c.clone().filter(|c| private_dir(c, true)),
                None => user_cache(),
            })
            .as_deref()
    }
}

/// What identifies one state of a file: its key, and its change time (seconds).
struct Identity {
    key: String,
    ctime: i64,
}

/// The identity of the open file `f`: the boot (a file system changed while another system
/// ran keeps no trace in its times), the mount (unique for the boot where the kernel says so:
/// a removable disk changed elsewhere and mounted again is another mount), device, inode,
/// size, and modification and change times to the nanosecond.
fn identity(f: &File) -> io::Result<Identity> {
    // SAFETY: an all-zero `statx` is a valid value of this plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_BASIC_STATS | libc::STATX_MNT_ID | libc::STATX_MNT_ID_UNIQUE;
    // SAFETY: statx of a descriptor `f` owns (AT_EMPTY_PATH with an empty, NUL-terminated
    // path), writing only into `st`, which lives for the call.
    let r = unsafe {
        libc::statx(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            mask,
            &mut st,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mount = if st.stx_mask & libc::STATX_MNT_ID_UNIQUE != 0 {
        format!("u{:x}", st.stx_mnt_id)
    } else if st.stx_mask & libc::STATX_MNT_ID != 0 {
        format!("m{:x}", st.stx_mnt_id)
    } else {
        "-".to_string()
    };
    let key = format!(
        "{} {mount} {:x}:{:x} {:x} {:x} {}.{} {}.{}",
        boot_id(),
        st.stx_dev_major,
        st.stx_dev_minor,
        st.stx_ino,
        st.stx_size,
        st.stx_mtime.tv_sec,
        st.stx_mtime.tv_nsec,
        st.stx_ctime.tv_sec,
        st.stx_ctime.tv_nsec
    );
    Ok(Identity {
        key,
        ctime: st.stx_ctime.tv_sec,
    })
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once; `-` if unreadable.
fn boot_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "-".to_string())
    })
}

/// Whether a change time `t` (seconds since the epoch) is at least [`SETTLED`] old.
fn settled(t: i64) -> bool {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|now| now.checked_sub(Duration::new(t.max(0) as u64, 0)))
        .is_some_and(|age| age >= SETTLED)
}

/// The user's cache of verified files, `<trace root>/.pool/verified` (created mode 0700), if
/// the root, the pool and the cache are directories the user owns that nobody else can write.
pub(crate) fn user_cache() -> Option<PathBuf> {
    let root = crate::TraceRoot::from_env().ok()?;
    let pool = root.path().join(".pool");
    let cache = pool.join("verified");
    let usable = private_dir(root.path(), false) && private_dir(&pool, true) && {
        private_dir(&cache, true)
    };
    if !usable {
        tracing::debug!(
            "{}: not a private directory; stored files are verified at every replay",
            cache.display()
        );
    }
    usable.then_some(cache)
}

/// Whether `dir` is a directory (not a symlink) owned by this user that neither group nor
/// others can write; created with mode 0700 first if `create` and it is missing.
fn private_dir(dir: &Path, create: bool) -> bool {
    if create && fs::symlink_metadata(dir).is_err() {
        let _ = crate::writer::create_private_dir(dir, false);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0)
}

/// The recorder's word for a file it has just stored at `path` under `hash` (it hashed the
/// copy, or linked a file whose hash its pool knew): remembered in the user's cache, so that
/// the first replay does not hash it again. No 2-second rule here: the rule guards a reader
/// against a second write in the tick after its hash, and between storing a file in a private
/// trace directory and this, only a process of the same user could write it, which could as
/// well write a cache entry. Best effort.
pub(crate) fn vouch(cache: &Path, path: &Path, hash: &str) {
    let Ok(f) = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    else {
        return;
    };
    if let Ok(id) = identity(&f) {
        remember(cache, hash, &id.key);
    }
}

/// Whether the cache says the file of identity `key` hashed to `hash`. Only whole lines
/// count: a line being appended (see [`remember`]) is not one until its newline is there.
fn cached(cache: &Path, hash: &str, key: &str) -> bool {
    fs::read_to_string(cache.join(hash)).is_ok_and(|s| has_key(&s, key))
}

/// Whether the cache entry `text` holds the whole line `key`.
fn has_key(text: &str, key: &str) -> bool {
    text.split_inclusive('\n')
        .any(|l| l.strip_suffix('\n') == Some(key))
}

/// Records in the cache that the file of identity `key` hashed to `hash` (best effort: a
/// cache that cannot take it only makes the next replay hash the file again). Keeps the
/// newest [`KEYS_PER_HASH`] identities per hash, and up to [`KEYS_BEFORE_REWRITE`] between
/// rewrites.
///
/// A new identity is appended to the hash's entry, one `write` of a whole line: replacing the
/// entry (a new file renamed over it) frees the old one's block, a synchronous discard on a
/// file system mounted with `discard` and no journal, which under load costs milliseconds per
/// stored file of a recording (their identities change at every recording: linking a file
/// changes its change time). The entry is rewritten, and renamed into place, only when it is
/// new, damaged (no final newline), or holds [`KEYS_BEFORE_REWRITE`] lines.
fn remember(cache: &Path, hash: &str, key: &str) {
    let path = cache.join(hash);
    let old = fs::read_to_string(&path).unwrap_or_default();
    if has_key(&old, key) {
        return;
    }
    let lines = old.lines().filter(|l| !l.is_empty()).count();
    if !old.is_empty() && old.ends_with('\n') && lines < KEYS_BEFORE_REWRITE {
        let appended = fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .and_then(|mut f| {
                // Only a regular file is appended to (the entry is replaced otherwise).
                if !f.metadata()?.is_file() {
                    return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
                }
                f.write_all(format!("{key}\n").as_bytes())
            });
        if appended.is_ok() {
            return;
        }
    }
    // The newest identities are the last lines.
    let kept: Vec<&str> = old.lines().filter(|l| !l.is_empty()).collect();
    let mut text = String::new();
    for line in &kept[kept.len().saturating_sub(KEYS_PER_HASH - 1)..] {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(key);
    text.push('\n');
    let tmp = cache.join(format!(".tmp-{hash}-{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if written.is_err() || fs::rename(&tmp, &path).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A trace directory with one stored file of content `data`, and its reference.
    fn stored(data: &[u8]) -> (tempfile::TempDir, FileRef) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(FILES_DIR)).unwrap();
        let hash = blake3::hash(data).to_hex().to_string();
        fs::write(dir.path().join(FILES_DIR).join(&hash), data).unwrap();
        let file = FileRef {
            hash,
            path: "/usr/bin/prog".into(),
            size: data.len() as u64,
        };
        (dir, file)
    }

    fn message(r: Result<(File, PathBuf)>) -> String {
        r.expect_err("the file is refused").to_string()
    }

    #[test]
    fn an_intact_file_is_verified_and_opened() {
        let (dir, file) = stored(b"the time is now");
        let v = Verifier::with_cache(None);
        let (f, path) = v.open(dir.path(), &file).unwrap();
        assert_eq!(path, dir.path().join(FILES_DIR).join(&file.hash));
        assert_eq!(f.metadata().unwrap().len(), file.size);
    }

    #[test]
    fn a_changed_byte_of_the_same_size_is_reported_by_the_recorded_path() {
        let (dir, file) = stored(b"the time is now");
        let path = dir.path().join(FILES_DIR).join(&file.hash);
        fs::write(&path, b"the TIME is now").unwrap();
        let msg = message(Verifier::with_cache(None).open(dir.path(), &file));
        assert!(
            msg.contains("the stored copy of /usr/bin/prog does not match its hash"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_file_with_holes_verifies_with_the_sparse_hash() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(FILES_DIR)).unwrap();
        let tmp = dir.path().join("tmp");
        let f = File::create(&tmp).unwrap();
        f.set_len(1 << 24).unwrap();
        f.write_all_at(b"data", 1 << 20).unwrap();
        let f = File::open(&tmp).unwrap();
        let hash = crate::sparse::hash(&f, 1 << 24).unwrap();
        fs::rename(&tmp, dir.path().join(FILES_DIR).join(&hash)).unwrap();
        let file = FileRef {
            hash,
            path: "/dev/shm/sparse".into(),
            size: 1 << 24,
        };
        Verifier::with_cache(None).open(dir.path(), &file).unwrap();
    }

    #[test]
    fn a_symlink_is_refused_without_following_it() {
        let (dir, file) = stored(b"abc");
        let path = dir.path().join(FILES_DIR).join(&file.hash);
        fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"abc").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let msg = message(Verifier::with_cache(None).open(dir.path(), &file));
        assert!(
            msg.contains("the stored copy of /usr/bin/prog is a symlink"),
            "{msg}"
        );
        // A symlink to a file of another size leaks no size either.
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("other")).unwrap();
        fs::rename(dir.path().join("other"), &path).unwrap();
        let msg = message(Verifier::with_cache(None).open(dir.path(), &file));
        assert!(
            msg.contains("is a symlink") && !msg.contains("bytes"),
            "{msg}"
        );
    }

    #[test]
    fn a_fifo_or_directory_is_refused() {
        let (dir, file) = stored(b"abc");
        let path = dir.path().join(FILES_DIR).join(&file.hash);
        fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo of a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let msg = message(Verifier::with_cache(None).open(dir.path(), &file));
        assert!(msg.contains("is not a regular file"), "{msg}");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let msg = message(Verifier::with_cache(None).open(dir.path(), &file));
        assert!(msg.contains("is not a regular file"), "{msg}");
    }

    #[test]
    fn a_symlinked_files_directory_is_refused() {
        let (dir, file) = stored(b"abc");
        let real = dir.path().join("real");
        fs::rename(dir.path().join(FILES_DIR), &real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join(FILES_DIR)).unwrap();
        let msg = message(Verifier::with_cache(None).open(dir.path(), &file));
        assert!(msg.contains("the files directory is a symlink"), "{msg}");
    }

    #[test]
    fn the_cache_skips_an_unchanged_file_and_not_a_changed_one() {
        let (dir, mut file) = stored(b"the time is now");
        let cache = dir.path().join("cache");
        fs::create_dir(&cache).unwrap();
        fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        // The file stored under the name of other content: only an entry of the cache can
        // make it pass, which shows that a listed identity is not hashed again.
        let wrong = blake3::hash(b"the TIME is now").to_hex().to_string();
        let path = dir.path().join(FILES_DIR).join(&wrong);
        fs::rename(dir.path().join(FILES_DIR).join(&file.hash), &path).unwrap();
        file.hash = wrong;
        let msg = message(Verifier::with_cache(Some(cache.clone())).open(dir.path(), &file));
        assert!(msg.contains("does not match its hash"), "{msg}");
        let id = identity(&File::open(&path).unwrap()).unwrap();
        remember(&cache, &file.hash, &id.key);
        Verifier::with_cache(Some(cache.clone()))
            .open(dir.path(), &file)
            .unwrap();

        // Any write moves the change time: the entry no longer matches, the file is hashed.
        std::thread::sleep(Duration::from_millis(20));
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"time", 4)
            .unwrap();
        let msg = message(Verifier::with_cache(Some(cache.clone())).open(dir.path(), &file));
        assert!(msg.contains("does not match its hash"), "{msg}");
    }

    #[test]
    fn a_freshly_changed_file_is_not_cached_and_a_foreign_cache_is_not_used() {
        let (dir, file) = stored(b"abc");
        let cache = dir.path().join("cache");
        fs::create_dir(&cache).unwrap();
        fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Verifier::with_cache(Some(cache.clone()))
            .open(dir.path(), &file)
            .unwrap();
        // Changed a moment ago: within a clock tick of a rewrite, so not remembered.
        assert!(!cache.join(&file.hash).exists());

        // A cache others can write could whitelist anything: not used.
        fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(Verifier::with_cache(Some(cache.clone())).cache().is_none());
    }

    #[test]
    fn a_cache_entry_grows_by_appends_and_is_rewritten_to_the_newest_keys() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let entry = cache.join("h");
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        remember(cache, "h", "k0");
        let first = ino(&entry);
        for i in 1..KEYS_BEFORE_REWRITE {
            remember(cache, "h", &format!("k{i}"));
            // A known key is not written again.
            remember(cache, "h", &format!("k{i}"));
        }
        // Appended to in place, every key kept once.
        assert_eq!(ino(&entry), first);
        let text = fs::read_to_string(&entry).unwrap();
        assert_eq!(text.lines().count(), KEYS_BEFORE_REWRITE);
        let last = format!("k{}", KEYS_BEFORE_REWRITE - 1);
        assert!(cached(cache, "h", "k0") && cached(cache, "h", &last));
        // Full: rewritten with the newest keys, the new one last.
        remember(cache, "h", "new");
        assert_ne!(ino(&entry), first);
        let text = fs::read_to_string(&entry).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), KEYS_PER_HASH);
        assert_eq!(lines.last(), Some(&"new"));
        assert!(cached(cache, "h", &last) && !cached(cache, "h", "k0"));
        // A line without its newline (an append under way) does not count.
        fs::write(&entry, "k1\nk2").unwrap();
        assert!(cached(cache, "h", "k1") && !cached(cache, "h", "k2"));
        // A damaged entry is rewritten whole.
        remember(cache, "h", "k3");
        assert_eq!(fs::read_to_string(&entry).unwrap(), "k1\nk2\nk3\n");
        assert!(!cache
            .join(format!(".tmp-h-{}", std::process::id()))
            .exists());
    }

    #[test]
    fn the_reader_remembers_a_verified_file_until_it_changes() {
        let (dir, file) = stored(b"abc");
        let v = Verifier::with_cache(None);
        v.open(dir.path(), &file).unwrap();
        assert_eq!(v.seen.borrow().len(), 1);
        v.open(dir.path(), &file).unwrap();
        assert_eq!(v.seen.borrow().len(), 1);
        let path = dir.path().join(FILES_DIR).join(&file.hash);
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&path, b"abd").unwrap();
        let msg = message(v.open(dir.path(), &file));
        assert!(msg.contains("does not match its hash"), "{msg}");
    }
}
