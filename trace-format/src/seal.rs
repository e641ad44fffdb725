//! A trace's seal: a digest of every byte a reader uses, and a keyed MAC of it with the
//! recording user's key, so that a trace cannot be changed (even consistently, checksums
//! recomputed) without its replay refusing it (see the README's "Seals").
//!
//! The digest is BLAKE3 over a statement of the trace: the metadata as stored, the events
//! file and the blob file up to their recorded lengths, the `chunks` and `files` rows of the
//! index (stored files are bound to those rows by their content hashes, which every use
//! checks). The seal's MAC is `blake3::keyed_hash` of the digest with the user's key, a 32-byte
//! secret kept in `<trace root>/.pool/key` (mode 0600, created at the first recording).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, sql_err, Result, TraceError};

/// The domain of a trace digest (a new statement gets a new domain).
const DOMAIN: &[u8] = b"deja trace digest 1\n";

/// What the index keeps of a trace's seal (the `seal` row of its `meta` table).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// Hex BLAKE3 digest of the trace (see the module's doc).
    pub digest: String,
    /// Which key made the MAC: the first 16 hex digits of the key's own keyed hash of
    /// `"deja key id"` (it says nothing of the key).
    pub key_id: String,
    /// Hex `blake3::keyed_hash(key, digest)`.
    pub mac: String,
}

/// A user's sealing key.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

impl Key {
    /// The key's public name (see [`Seal::key_id`]).
    pub fn id(&self) -> String {
        blake3::keyed_hash(&self.0, b"deja key id").to_hex()[..16].to_string()
    }

    /// The seal of a trace of digest `digest` (hex).
    pub fn seal(&self, digest: &str) -> Seal {
        Seal {
            digest: digest.to_string(),
            key_id: self.id(),
            mac: blake3::keyed_hash(&self.0, digest.as_bytes())
                .to_hex()
                .to_string(),
        }
    }

    /// Whether `seal` is this key's seal of its digest (compared in constant time).
    pub fn verifies(&self, seal: &Seal) -> bool {
        let expected = blake3::keyed_hash(&self.0, seal.digest.as_bytes());
        let Ok(bytes) = decode_hex32(&seal.mac) else {
            return false;
        };
        expected == blake3::Hash::from_bytes(bytes)
    }

    /// The user's key, `<root>/.pool/key`: read, or made (from the kernel's random numbers)
    /// if there is none. `None` if the root or the key is not private to the user (the key
    /// file must be a regular file of 32 bytes that the user owns and only the user can
    /// read), or cannot be made.
    pub fn of_user(root: &Path) -> Option<Key> {
        Key::find(root, true)
    }

    /// The user's key as [`Key::of_user`] finds it, made only if `make`.
    fn find(root: &Path, make: bool) -> Option<Key> {
        let pool = root.join(".pool");
        if fs::symlink_metadata(&pool).is_err() {
            let _ = crate::writer::create_private_dir(&pool, false);
        }
        if crate::store::check_private_dir(root, "the trace root").is_err()
            || crate::store::check_private_dir(&pool, "the trace root's pool").is_err()
        {
            tracing::debug!("{}: not private: traces are not sealed", pool.display());
            return None;
        }
        let path = pool.join("key");
        match read_key(&path) {
            Ok(Some(key)) => return Some(key),
            Ok(None) if !make => return None,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("{}: {e}; traces are not sealed", path.display());
                return None;
            }
        }
        match make_key(&pool, &path) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!("could not make a key at {}: {e}", path.display());
                None
            }
        }
    }

    /// The key of the trace root named by the environment (see [`Key::of_user`]).
    pub fn of_env() -> Option<Key> {
        let root = crate::TraceRoot::from_env().ok()?;
        Key::of_user(root.path())
    }

    /// The key of the trace root named by the environment, if there is one already.
    pub fn existing() -> Option<Key> {
        let root = crate::TraceRoot::from_env().ok()?;
        Key::find(root.path(), false)
    }
}

/// Reads the key at `path`: `None` if there is none; an error if it is not a private
/// regular file of 32 bytes.
fn read_key(path: &Path) -> io::Result<Option<Key>> {
    let mut f = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = f.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.is_file() || m.uid() != me || m.mode() & 0o077 != 0 || m.len() != 32 {
        return Err(io::Error::other(
            "not a private 32-byte key file of this user",
        ));
    }
    let mut key = [0u8; 32];
    f.read_exact(&mut key)?;
    Ok(Some(Key(key)))
}

/// Makes a new key at `path` in `pool`, atomically (a temporary file linked into place): two
/// recorders starting at once end up with the same key.
fn make_key(pool: &Path, path: &Path) -> io::Result<Key> {
    let mut key = [0u8; 32];
    let mut got = 0;
    while got < key.len() {
        // SAFETY: the buffer is valid for `len - got` bytes from `got`.
        let n = unsafe { libc::getrandom(key[got..].as_mut_ptr().cast(), key.len() - got, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    let tmp = pool.join(format!(".key-{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)?;
    let written = f.write_all(&key).and_then(|()| f.sync_all());
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(Key(key)),
        // Another recorder made it first: use that one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key(path)?.ok_or_else(|| io::Error::other("the key vanished"))
        }
        Err(e) => Err(e),
    }
}

/// The parts of a trace's statement, hashed as they are written or read.
#[derive(Default, Clone)]
pub(crate) struct Digester {
    events: blake3::Hasher,
    blobs: blake3::Hasher,
}

impl Digester {
    /// Bytes appended to the events file.
    pub(crate) fn events(&mut self, bytes: &[u8]) {
        self.events.update(bytes);
    }

    /// Bytes appended to the blob file.
    pub(crate) fn blobs(&mut self, bytes: &[u8]) {
        self.blobs.update(bytes);
    }

    /// The digest of the trace whose metadata is `meta_json` (as stored) and whose index is
    /// `db` (its `chunks` and `files` rows), with the files hashed so far.
    pub(crate) fn digest(&self, meta_json: &str, db: &Connection, path: &Path) -> Result<String> {
        let mut h = blake3::Hasher::new();
        h.update(DOMAIN);
        h.update(blake3::hash(meta_json.as_bytes()).as_bytes());
        h.update(self.events.finalize().as_bytes());
        h.update(self.blobs.finalize().as_bytes());
        h.update(rows_digest(db, path)?.as_bytes());
        Ok(h.finalize().to_hex().to_string())
    }
}

/// BLAKE3 of the index's `chunks` rows (by sequence) and `files` rows (by hash).
fn rows_digest(db: &Connection, path: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut st = db
        .prepare("SELECT seq, offset, len, first_event, events, raw_len FROM chunks ORDER BY seq")
        .map_err(sql_err(path))?;
    let mut rows = st.query([]).map_err(sql_err(path))?;
    while let Some(r) = rows.next().map_err(sql_err(path))? {
        h.update(b"chunk");
        for i in 0..6 {
            let v: i64 = r.get(i).map_err(sql_err(path))?;
            h.update(&v.to_le_bytes());
        }
    }
    let mut st = db
        .prepare("SELECT hash, path, size, how FROM files ORDER BY hash")
        .map_err(sql_err(path))?;
    let mut rows = st.query([]).map_err(sql_err(path))?;
    while let Some(r) = rows.next().map_err(sql_err(path))? {
        h.update(b"file");
        for i in [0, 1, 3] {
            let s: String = r.get(i).map_err(sql_err(path))?;
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        let size: i64 = r.get(2).map_err(sql_err(path))?;
        h.update(&size.to_le_bytes());
    }
    Ok(h.finalize())
}

/// The digest of the trace in `dir` as its files are now: the metadata as stored (`meta_json`),
/// the events and blob files up to the lengths it records, the index's rows.
pub(crate) fn digest_of(
    dir: &Path,
    meta_json: &str,
    lengths: (u64, u64),
    db: &Connection,
    index_path: &Path,
) -> Result<String> {
    let (events_len, blobs_len) = lengths;
    let mut buf = vec![0u8; 1 << 20];
    let mut hash = |name: &str, len: u64, what: &str| -> Result<blake3::Hasher> {
        let path: PathBuf = dir.join(name);
        let mut f = crate::verify::open_regular(dir, &path, what)?.take(len);
        let mut h = blake3::Hasher::new();
        let mut rest = len;
        while rest > 0 {
            let n = f.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                return Err(TraceError::corrupt(
                    dir,
                    format!("{what} is shorter than the metadata says"),
                ));
            }
            h.update(&buf[..n]);
            rest -= n as u64;
        }
        Ok(h)
    };
    let d = Digester {
        events: hash(crate::format::EVENTS_FILE, events_len, "the events file")?,
        blobs: hash(crate::format::BLOBS_FILE, blobs_len, "the blobs file")?,
    };
    d.digest(meta_json, db, index_path)
}

/// What a replay accepts a trace on (see [`crate::TraceReader::check_seal`]).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The user's key (`None`: the user has none usable).
    pub key: Option<Key>,
    /// The digest the user expects (`deja replay --digest`).
    pub digest: Option<String>,
    /// Take a trace sealed by another key, or by none, as it is (`deja replay --trust`).
    pub trust: bool,
}

/// Why a trace was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Its seal is the user's own: nobody without the user's key changed it.
    Sealed,
    /// Its digest is the one the user gave.
    Digest,
    /// Sealed by another key or none, taken as it is on the user's word (`--trust`).
    Trusted,
    /// A recording that never finished (the recorder was killed): no seal, and a replay of it
    /// ends where it does with an error.
    Unfinished,
}

/// The 32 bytes a 64-digit hex string spells.
fn decode_hex32(s: &str) -> std::result::Result<[u8; 32], ()> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(());
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(()),
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_its_own_seal_only() {
        let a = Key([1; 32]);
        let b = Key([2; 32]);
        let seal = a.seal("00ff");
        assert!(a.verifies(&seal));
        assert!(!b.verifies(&seal));
        assert_ne!(a.id(), b.id());
        let mut forged = seal.clone();
        forged.digest = "00fe".into();
        assert!(!a.verifies(&forged));
    }

    #[test]
    fn a_key_is_made_once_and_kept_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let k1 = Key::of_user(root.path()).expect("a key");
        let k2 = Key::of_user(root.path()).expect("the same key");
        assert_eq!(k1.id(), k2.id());
        let key = root.path().join(".pool/key");
        let mode = fs::metadata(&key).expect("key file").mode();
        assert_eq!(mode & 0o777, 0o600);
        // A key others can read is not used.
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        assert!(Key::of_user(root.path()).is_none());
    }
}
