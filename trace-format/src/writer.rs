//! Writing a trace while recording.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{io_err, sql_err, Result, TraceError};
use crate::event::{Data, Event, ExitStatus, FileRef};
use crate::format::{
    self, BlobHeader, ChunkHeader, BLOBS_FILE, CHUNK_HEADER_LEN, EVENTS_FILE, FILES_DIR,
    INDEX_FILE, ZSTD_LEVEL,
};
use crate::index;
use crate::meta::TraceMeta;
use crate::FORMAT_VERSION;

/// Payloads shorter than this travel inline in events; longer ones go to the blob file.
pub const INLINE_MAX: usize = 16 * 1024;
/// An events chunk is written once this many encoded bytes are buffered.
pub const CHUNK_TARGET_BYTES: usize = 1 << 20;
/// Path prefixes of files the file store hard-links instead of copying: package managers
/// replace such files by rename, so a link keeps the recorded content.
pub const SYSTEM_PREFIXES: [&str; 5] = ["/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/"];

/// Identity of a source file, to skip re-hashing an unchanged system file.
#[derive(Hash, PartialEq, Eq)]
struct SourceKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl SourceKey {
    fn of(m: &fs::Metadata) -> Self {
        SourceKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Writes a trace directory. Everything in complete chunks stays readable if the process dies
/// at any point; [`TraceWriter::finish`] marks the trace complete.
///
/// Dropping a writer without `finish` writes the buffered events (best effort) and leaves the
/// trace incomplete.
pub struct TraceWriter {
    dir: PathBuf,
    index_path: PathBuf,
    db: Connection,
    meta: TraceMeta,
    events_path: PathBuf,
    events: File,
    events_len: u64,
    blobs_path: PathBuf,
    blobs: File,
    blobs_len: u64,
    files_dir: PathBuf,
    files_bytes: u64,
    file_cache: HashMap<SourceKey, (String, u64)>,
    /// The trace root's file pool, when the recorder gave one.
    pool: Option<crate::pool::Pool>,
    tmp_counter: u64,
    buf: Vec<u8>,
    buf_events: u32,
    buf_first: u64,
    next_event: u64,
    next_seq: u64,
    finished: bool,
}

/// Creates a file that must not exist yet, mode 0600.
fn create_private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

/// Makes `dir` an empty directory with mode 0700.
fn prepare_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(TraceError::DirNotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return create_private_dir(dir, true).map_err(io_err(dir));
        }
        Err(e) => return Err(io_err(dir)(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// Creates directory `dir` with mode 0700 whatever the umask (and its parents, if
/// `parents`).
pub(crate) fn create_private_dir(dir: &Path, parents: bool) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(parents)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Whether `path` lies under one of the [`SYSTEM_PREFIXES`].
pub(crate) fn is_system_path(path: &Path) -> bool {
    let s = path.to_string_lossy();
    SYSTEM_PREFIXES.iter().any(|p| s.starts_with(p))
}

impl TraceWriter {
    /// Creates a trace in `dir` (created with mode 0700; it may exist if it is empty) and
    /// records `meta` in it, marked incomplete. `format_version` is set to
    /// [`FORMAT_VERSION`]; the counters and `exit` are filled in by [`TraceWriter::finish`].
    pub fn create(dir: &Path, meta: &TraceMeta) -> Result<Self> {
        prepare_dir(dir)?;
        let index_path = dir.join(INDEX_FILE);
        create_private_file(&index_path)?;
        let db = Connection::open_with_flags(
            &index_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err(&index_path))?;
        index::create_schema(&db, &index_path)?;

        let events_path = dir.join(EVENTS_FILE);
        let events = create_private_file(&events_path)?;
        let blobs_path = dir.join(BLOBS_FILE);
        let blobs = create_private_file(&blobs_path)?;
        let files_dir = dir.join(FILES_DIR);
        create_private_dir(&files_dir, false).map_err(io_err(&files_dir))?;

        let meta = TraceMeta {
            format_version: FORMAT_VERSION,
            exit: None,
            event_count: 0,
            complete: false,
            events_bytes: 0,
            blobs_bytes: 0,
            files_bytes: 0,
            ..meta.clone()
        };
        index::write_meta(&db, &index_path, &meta)?;

        Ok(TraceWriter {
            dir: dir.to_path_buf(),
            index_path,
            db,
            meta,
            events_path,
            events,
            events_len: 0,
            blobs_path,
            blobs,
            blobs_len: 0,
            files_dir,
            files_bytes: 0,
            file_cache: HashMap::new(),
            pool: None,
            tmp_counter: 0,
            buf: Vec::with_capacity(CHUNK_TARGET_BYTES + (CHUNK_TARGET_BYTES >> 2)),
            buf_events: 0,
            buf_first: 0,
            next_event: 0,
            next_seq: 0,
            finished: false,
        })
    }

    /// Number of events pushed so far (the index the next event will get).
    pub fn event_count(&self) -> u64 {
        self.next_event
    }

    /// Appends an event and returns its index (0-based). The event reaches the disk with its
    /// chunk: when 1 MiB is buffered, or at [`TraceWriter::flush`]. The writer reads no clock
    /// (the recorder's tracer thread must not: see `tracee::tsc`); the recorder calls `flush`
    /// on its own timer so a killed recording keeps recent events.
    pub fn push(&mut self, ev: &Event) -> Result<u64> {
        format::encode_event(ev, &mut self.buf).map_err(|message| TraceError::Encode {
            what: "an event",
            message,
        })?;
        let idx = self.next_event;
        if self.buf_events == 0 {
            self.buf_first = idx;
        }
        self.buf_events += 1;
        self.next_event += 1;
        if self.buf.len() >= CHUNK_TARGET_BYTES || self.buf_events == u32::MAX {
            self.flush()?;
        }
        Ok(idx)
    }

    /// Turns a payload into [`Data`]: inline below [`INLINE_MAX`] bytes, else written to the
    /// blob file right away (so it precedes any chunk that refers to it).
    pub fn data(&mut self, bytes: &[u8]) -> Result<Data> {
        if bytes.len() < INLINE_MAX {
            return Ok(Data::Inline(bytes.to_vec()));
        }
        let frame = zstd::bulk::compress(bytes, ZSTD_LEVEL).map_err(io_err(&self.blobs_path))?;
        let header = BlobHeader {
            compressed_len: frame.len() as u64,
            raw_len: bytes.len() as u64,
            checksum: format::checksum(&frame),
        };
        let mut record = Vec::with_capacity(header.encode().len() + frame.len());
        record.extend_from_slice(&header.encode());
        record.extend_from_slice(&frame);
        let offset = self.blobs_len;
        write_record(&self.blobs, &self.blobs_path, &record, offset)?;
        self.blobs_len += record.len() as u64;
        Ok(Data::Blob {
            offset,
            len: bytes.len() as u64,
        })
    }

    /// Writes the buffered events as one chunk, if there are any.
    pub fn flush(&mut self) -> Result<()> {
        if self.buf_events == 0 {
            return Ok(());
        }
        let frame =
            zstd::bulk::compress(&self.buf, ZSTD_LEVEL).map_err(io_err(&self.events_path))?;
        let compressed_len = u32::try_from(frame.len()).map_err(|_| TraceError::Encode {
            what: "an events chunk",
            message: "compressed chunk is larger than 4 GiB".into(),
        })?;
        let header = ChunkHeader {
            compressed_len,
            events: self.buf_events,
            first_event: self.buf_first,
            checksum: format::checksum(&frame),
        };
        let mut record = Vec::with_capacity(CHUNK_HEADER_LEN + frame.len());
        record.extend_from_slice(&header.encode());
        record.extend_from_slice(&frame);
        let offset = self.events_len;
        write_record(&self.events, &self.events_path, &record, offset)?;

        // The chunk is on file: from here on the state must move on even if the index fails.
        let seq = self.next_seq;
        let raw_len = self.buf.len() as u64;
        let events = u64::from(self.buf_events);
        self.events_len += record.len() as u64;
        self.next_seq += 1;
        self.buf.clear();
        self.buf_events = 0;
        self.db
            .execute(
                "INSERT INTO chunks(seq, offset, len, first_event, events, raw_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    seq as i64,
                    offset as i64,
                    record.len() as i64,
                    header.first_event as i64,
                    events as i64,
                    raw_len as i64
                ],
            )
            .map_err(sql_err(&self.index_path))?;
        Ok(())
    }

    /// Shares stored files with the other traces of a root through its pool (see
    /// [`crate::pool`]).
    pub fn use_pool(&mut self, pool: crate::pool::Pool) {
        self.pool = Some(pool);
    }

    /// Keeps a copy of `source` in the content-addressed file store (`files/<blake3 hex>`) and
    /// returns its reference, naming it `recorded_path`.
    ///
    /// Files under [`SYSTEM_PREFIXES`] are hard-linked when the kernel allows it; others are
    /// copied (mode 0700 if the source is executable, else 0600). `source` may be a
    /// `/proc/PID/fd/N` or `/proc/PID/exe` link. The hash is taken of the stored copy, so the
    /// name always matches the content.
    pub fn store_file(&mut self, source: &Path, recorded_path: &str) -> Result<FileRef> {
        let src_meta = fs::metadata(source).map_err(io_err(source))?;
        if !src_meta.is_file() {
            return Err(TraceError::Io {
                path: source.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let key = SourceKey::of(&src_meta);
        if let Some((hash, size)) = self.file_cache.get(&key) {
            if self.files_dir.join(hash).is_file() {
                return Ok(FileRef {
                    hash: hash.clone(),
                    path: recorded_path.to_string(),
                    size: *size,
                });
            }
        }

        if let Some((hash, pooled)) = self.pool.as_ref().and_then(|p| p.find(&src_meta)) {
            let stored = self.files_dir.join(&hash);
            if stored.symlink_metadata().is_ok() || fs::hard_link(&pooled, &stored).is_ok() {
                return self.note_stored(hash, recorded_path, src_meta.len(), "pool", None);
            }
        }
        self.tmp_counter += 1;
        let tmp = self
            .files_dir
            .join(format!(".tmp-{}-{}", std::process::id(), self.tmp_counter));
        let system_source = fs::canonicalize(source)
            .ok()
            .filter(|real| is_system_path(real));
        let linked = match &system_source {
            Some(real) => link_same_file(real, &tmp, &key),
            None => false,
        };
        // A system file hashed by an earlier recording, unchanged since: no need to read it.
        let known = linked
            .then(|| self.pool.as_ref().and_then(|p| p.find_system(&src_meta)))
            .flatten();
        if let Some(hash) = known {
            let stored = self.files_dir.join(&hash);
            if fs::symlink_metadata(&stored).is_ok() {
                fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            } else {
                fs::rename(&tmp, &stored).map_err(io_err(&stored))?;
            }
            return self.note_stored(hash, recorded_path, src_meta.len(), "link", Some(key));
        }
        if !linked {
            let executable = src_meta.permissions().mode() & 0o111 != 0;
            if let Err(e) = copy_file(source, &tmp, if executable { 0o700 } else { 0o600 }) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let (hash, size) = match hash_file(&tmp) {
            Ok(h) => h,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let stored = self.files_dir.join(&hash);
        if fs::symlink_metadata(&stored).is_ok() {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        } else if let Err(e) = fs::rename(&tmp, &stored) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&stored)(e));
        }

        // Copies only: a pooled file must be deja's own, which nothing modifies (a linked
        // system file is the system's; linking it changes its change time anyway). Of a
        // linked one, only the hash is remembered.
        match (&self.pool, linked) {
            (Some(pool), false) => pool.add(&src_meta, &hash, &stored),
            (Some(pool), true) => pool.add_system(&src_meta, &hash),
            (None, _) => {}
        }
        let how = if linked { "link" } else { "copy" };
        let cache = system_source.is_some().then_some(key);
        self.note_stored(hash, recorded_path, size, how, cache)
    }

    /// Records a stored file in the index (and, with `cache`, in this trace's cache of
    /// system files).
    fn note_stored(
        &mut self,
        hash: String,
        recorded_path: &str,
        size: u64,
        how: &str,
        cache: Option<SourceKey>,
    ) -> Result<FileRef> {
        let inserted = self
            .db
            .execute(
                "INSERT OR IGNORE INTO files(hash, path, size, how) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![hash, recorded_path, size as i64, how],
            )
            .map_err(sql_err(&self.index_path))?;
        if inserted > 0 {
            self.files_bytes += size;
        }
        // Only system files are cached: their timestamps can't hide an in-place rewrite
        // within one clock tick in practice, while a program's own files might.
        if let Some(key) = cache {
            self.file_cache.insert(key, (hash.clone(), size));
        }
        Ok(FileRef {
            hash,
            path: recorded_path.to_string(),
            size,
        })
    }

    /// Notes how the recording's syscalls were recorded, for the metadata [`Self::finish`]
    /// writes.
    pub fn set_syscall_counts(&mut self, counts: crate::SyscallCounts) {
        self.meta.syscalls = counts;
    }

    /// Writes the remaining events and marks the trace complete with the program's `exit`
    /// status; returns the final metadata.
    pub fn finish(mut self, exit: ExitStatus) -> Result<TraceMeta> {
        self.flush()?;
        self.events.sync_all().map_err(io_err(&self.events_path))?;
        self.blobs.sync_all().map_err(io_err(&self.blobs_path))?;
        let mut meta = self.meta.clone();
        meta.complete = true;
        meta.exit = Some(exit);
        meta.event_count = self.next_event;
        meta.events_bytes = self.events_len;
        meta.blobs_bytes = self.blobs_len;
        meta.files_bytes = self.files_bytes;
        // This last commit is synced, and with it every page written before.
        self.db
            .execute_batch("PRAGMA synchronous = FULL")
            .map_err(sql_err(&self.index_path))?;
        index::write_meta(&self.db, &self.index_path, &meta)?;
        self.finished = true;
        Ok(meta)
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = self.flush() {
                tracing::warn!(
                    "could not write the last events of {}: {e}",
                    self.dir.display()
                );
            }
        }
    }
}

/// Writes `record` at `offset` (the end of the file); on failure cuts the file back so that no
/// partial record stays in front of later ones.
fn write_record(file: &File, path: &Path, record: &[u8], offset: u64) -> Result<()> {
    if let Err(e) = file.write_all_at(record, offset) {
        let _ = file.set_len(offset);
        return Err(io_err(path)(e));
    }
    Ok(())
}

/// Hard-links `real` to `tmp` and checks the link is the file `key` describes.
fn link_same_file(real: &Path, tmp: &Path, key: &SourceKey) -> bool {
    if fs::hard_link(real, tmp).is_err() {
        return false;
    }
    match fs::symlink_metadata(tmp) {
        Ok(m) if m.is_file() && m.dev() == key.dev && m.ino() == key.ino => true,
        _ => {
            let _ = fs::remove_file(tmp);
            false
        }
    }
}

/// Copies `source` to the new file `dest` with `mode`, leaving holes as holes.
fn copy_file(source: &Path, dest: &Path, mode: u32) -> Result<()> {
    let from = File::open(source).map_err(io_err(source))?;
    let size = from.metadata().map_err(io_err(source))?.len();
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)
        .map_err(io_err(dest))?;
    crate::sparse::copy(&from, &to, size).map_err(io_err(source))
}

/// The hex content hash (see `sparse::hash`) and the size of a file.
fn hash_file(path: &Path) -> Result<(String, u64)> {
    let file = File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    let hash = crate::sparse::hash(&file, size).map_err(io_err(path))?;
    Ok((hash, size))
}
