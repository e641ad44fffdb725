//! Writing a trace while recording.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::collections::HashSet;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{io_err, Result, TraceError};
use crate::event::{Data, Event, ExitStatus, FileRef};
use crate::format::{BLOBS_FILE, EVENTS_FILE, FILES_DIR, INDEX_FILE};
use crate::meta::{Stopped, TraceMeta};
use crate::sink::{self, Ending, Failure, FileRow, Msg, Sink};
use crate::FORMAT_VERSION;

/// Payloads shorter than this travel inline in events; longer ones go to the blob file.
pub const INLINE_MAX: usize = 16 * 1024;
/// An events chunk is written once this many encoded bytes are buffered.
pub const CHUNK_TARGET_BYTES: usize = 1 << 18;
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
/// The encoding, compression and index work is done by a thread of its own (see `sink.rs`),
/// fed in batches: the caller's thread only stores files and hands events over.
/// Dropping a writer without `finish` writes the buffered events (best effort) and leaves the
/// trace incomplete.
pub struct TraceWriter {
    files_dir: PathBuf,
    files_bytes: u64,
    file_cache: HashMap<SourceKey, (String, u64)>,
    /// The trace root's file pool, when the recorder gave one.
    pool: Option<crate::pool::Pool>,
    tmp_counter: u64,
    /// Hashes of the files stored so far (each gets one index row).
    stored_hashes: HashSet<String>,
    syscalls: crate::SyscallCounts,
    changing_files: Option<Vec<crate::event::FileId>>,
    /// Events not yet handed to the thread, and about how many payload bytes they hold.
    batch: Vec<Event>,
    /// Index rows of stored files not yet handed to the thread (they go before the events).
    rows: Vec<FileRow>,
    batch_bytes: usize,
    next_event: u64,
    to_sink: Option<SyncSender<Msg>>,
    /// Large payload buffers the writing thread is done with (see [`Self::recycled`]).
    spare: Arc<sink::Spare>,
    sink: Option<JoinHandle<()>>,
    failure: Arc<Failure>,
    /// The events file, opened again and `flock`ed for as long as the recording goes on (see
    /// [`recording_in_progress`]).
    lock: Option<File>,
}

/// Name of the reserve file in a trace being written (see `sink::RESERVE_BYTES` and
/// `sink::END_RESERVE_BYTES`).
const RESERVE_FILE: &str = ".reserve";

/// Events handed to the writing thread at once (each hand-over may wake it, which costs an
/// inter-processor interrupt: rare is cheap).
const BATCH_EVENTS: usize = 256;
/// Payload bytes handed to the writing thread at once: a large payload goes soon, so the
/// thread compresses it while the program runs rather than at its end, which waits for it.
const BATCH_BYTES: usize = 1 << 16;
/// Stored files' rows handed over at once.
const ROWS_AT_ONCE: usize = 4;
/// Batches that may wait for the writing thread before the caller waits for it in turn.
const QUEUED_BATCHES: usize = 8;

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

/// Makes `dir` an empty directory with mode 0700; whether it created it. An existing one must
/// be the user's own and not writable by group or others ([`crate::check_private_dir`]).
fn prepare_dir(dir: &Path) -> Result<bool> {
    if dir.is_dir() {
        crate::check_private_dir(dir, "the trace directory")?;
    }
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(TraceError::DirNotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(dir, true).map_err(io_err(dir))?;
            return Ok(true);
        }
        Err(e) => return Err(io_err(dir)(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    Ok(false)
}

/// Moves the reserve parked at `parked` to `reserve`, if there is one there and it is whole:
/// a regular file of `len` bytes, all allocated, the user's own. Whether it did (else
/// `reserve` does not exist).
fn take_parked_reserve(parked: &Path, reserve: &Path, len: u64) -> bool {
    if fs::rename(parked, reserve).is_err() {
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let whole = fs::symlink_metadata(reserve)
        .is_ok_and(|m| m.is_file() && m.len() == len && m.blocks() * 512 >= len && m.uid() == me);
    if !whole {
        let _ = fs::remove_file(reserve);
    }
    whole
}

/// Allocates `len` bytes to a new file at `path` (written as zeros where `fallocate` is not
/// supported): space the trace can count on when the disk fills up.
fn make_reserve(path: &Path, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = create_private_file(path)?;
    // SAFETY: fallocate on a file descriptor this function owns; no memory is passed.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        let why = format!("no room to start a trace here ({len} free bytes are needed): {err}");
        return Err(io_err(path.parent().unwrap_or(path))(io::Error::new(
            err.kind(),
            why,
        )));
    }
    if !matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) {
        return Err(io_err(path)(err));
    }
    let zeros = vec![0u8; len as usize];
    file.write_all_at(&zeros, 0).map_err(io_err(path))
}

/// Takes the lock that says the recording of the trace whose events file is `events` goes on.
fn lock_in_progress(events: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let file = File::open(events).map_err(io_err(events))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io_err(events)(io::Error::last_os_error()));
    }
    Ok(file)
}

/// Whether a recorder is writing the trace in `dir` now: it holds a `flock` on the trace's
/// events file from its creation until the trace is finished or stopped (the kernel drops it
/// when the recorder dies, so a killed recording does not look in progress).
pub fn recording_in_progress(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(EVENTS_FILE))
    else {
        return false;
    };
    // SAFETY: flock on a file descriptor this function owns; closing it drops the lock.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Removes what [`TraceWriter::create`] made in `dir` before it failed (`dir` too if it made
/// it), so no trace without an index version is left behind.
fn remove_partial_trace(dir: &Path, made_dir: bool) {
    for name in [INDEX_FILE, EVENTS_FILE, BLOBS_FILE, RESERVE_FILE] {
        let _ = fs::remove_file(dir.join(name));
    }
    let _ = fs::remove_file(dir.join(format!("{INDEX_FILE}-journal")));
    let _ = fs::remove_dir(dir.join(FILES_DIR));
    if made_dir {
        let _ = fs::remove_dir(dir);
    }
}

/// Counts the events a trace being written holds on file (see [`TraceWriter::kept_events`]).
#[derive(Clone)]
pub struct KeptEvents(Arc<Failure>);

impl KeptEvents {
    /// Events in the chunks written and indexed so far: what a reader of the trace finds.
    pub fn get(&self) -> u64 {
        self.0.kept.load(std::sync::atomic::Ordering::Acquire)
    }
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
pub fn is_system_path(path: &Path) -> bool {
    let s = path.to_string_lossy();
    SYSTEM_PREFIXES.iter().any(|p| s.starts_with(p))
}

impl TraceWriter {
    /// Creates a trace in `dir` (created with mode 0700; it may exist if it is empty) and
    /// records `meta` in it, marked incomplete. `format_version` is set to
    /// [`FORMAT_VERSION`]; the counters and `exit` are filled in by [`TraceWriter::finish`].
    ///
    /// Space is reserved for the end of the trace here, before the recording starts (see the
    /// README, "How a recording ends"): if there is no room, what was made is removed and the
    /// error returned. The writing thread creates the index meanwhile, and may use the
    /// reserve to do it.
    pub fn create(dir: &Path, meta: &TraceMeta) -> Result<Self> {
        Self::create_completing(dir, meta, None, |_| {})
    }

    /// [`Self::create`], with `complete` filling in parts of the metadata on the writing
    /// thread before it is first written (the recorder's CPU fingerprint: half a millisecond
    /// of `cpuid`s, exits to the hypervisor on a VM, that need not delay the program's start).
    /// With `pool`, the trace shares stored files with the other traces of its root (see
    /// [`Self::use_pool`]) and takes its reserve from the pool, where the last recording
    /// parked it (see [`crate::pool::Pool::reserve_path`]).
    pub fn create_completing(
        dir: &Path,
        meta: &TraceMeta,
        pool: Option<crate::pool::Pool>,
        complete: impl FnOnce(&mut TraceMeta) + Send + 'static,
    ) -> Result<Self> {
        let made_dir = prepare_dir(dir)?;
        let parked = pool.as_ref().map(|p| p.reserve_path());
        match Self::create_in(dir, meta, parked, complete) {
            Ok(mut w) => {
                w.pool = pool;
                Ok(w)
            }
            Err(e) => {
                remove_partial_trace(dir, made_dir);
                Err(e)
            }
        }
    }

    /// [`Self::create_completing`] in the prepared `dir`.
    fn create_in(
        dir: &Path,
        meta: &TraceMeta,
        parked: Option<PathBuf>,
        complete: impl FnOnce(&mut TraceMeta) + Send + 'static,
    ) -> Result<Self> {
        // One file for both reserves, the end's last: releasing the chunks' part cuts it down.
        // Blocks freed cost a synchronous discard on a file system mounted with `discard` and
        // no journal (the machines deja is measured on: up to a few milliseconds each under
        // load), so the reserve is taken from where the last recording parked it when it can
        // be, and parked again at the end (a rename each: nothing allocated, nothing freed).
        let reserve = dir.join(RESERVE_FILE);
        let len = sink::RESERVE_BYTES + sink::END_RESERVE_BYTES;
        if !parked
            .as_deref()
            .is_some_and(|p| take_parked_reserve(p, &reserve, len))
        {
            make_reserve(&reserve, len)?;
        }
        let index_path = dir.join(INDEX_FILE);
        create_private_file(&index_path)?;
        let events_path = dir.join(EVENTS_FILE);
        let events = create_private_file(&events_path)?;
        let lock = lock_in_progress(&events_path)?;
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
        let sink = Sink {
            index_path,
            reserve: Some(reserve),
            chunk_reserve: true,
            park: parked,
            avoid_cpu: meta.cpu,
            files_dir: files_dir.clone(),
            meta,
            events_path,
            events,
            blobs_path,
            blobs,
        };
        let failure = Arc::new(Failure::default());
        let (to_sink, rx) = std::sync::mpsc::sync_channel(QUEUED_BATCHES);
        let shared = Arc::clone(&failure);
        let spare = Arc::new(sink::Spare::default());
        let spare_for_sink = Arc::clone(&spare);
        let thread = std::thread::Builder::new()
            .name("deja-writer".into())
            .spawn(move || {
                let mut sink = sink;
                complete(&mut sink.meta);
                sink::run(sink, rx, shared, spare_for_sink)
            })
            .map_err(io_err(dir))?;

        Ok(TraceWriter {
            files_dir,
            files_bytes: 0,
            file_cache: HashMap::new(),
            pool: None,
            tmp_counter: 0,
            stored_hashes: HashSet::new(),
            syscalls: crate::SyscallCounts::default(),
            changing_files: None,
            batch: Vec::new(),
            rows: Vec::new(),
            batch_bytes: 0,
            next_event: 0,
            to_sink: Some(to_sink),
            spare,
            sink: Some(thread),
            failure,
            lock: Some(lock),
        })
    }

    /// A counter of the events the trace holds on file so far, readable after the writer is
    /// gone (by `finish`, say).
    pub fn kept_events(&self) -> KeptEvents {
        KeptEvents(Arc::clone(&self.failure))
    }

    /// Ends a recording that could not run to its end: writes every complete event that fits
    /// and marks the trace stopped by `cause` (with the program's `exit` status, if it ended);
    /// returns the number of events the trace keeps. The writer takes no more events.
    pub fn stop(&mut self, cause: Stopped, exit: Option<ExitStatus>) -> Result<u64> {
        if let Err(e) = self.hand_over() {
            tracing::debug!("the last events could not be handed over: {e}");
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let r = match self.send(Msg::Stop(cause, exit, reply)) {
            Ok(()) => answer.recv().unwrap_or_else(|_| Err(self.failure.take())),
            Err(e) => Err(e),
        };
        self.hang_up();
        r
    }

    /// Number of events pushed so far (the index the next event will get).
    pub fn event_count(&self) -> u64 {
        self.next_event
    }

    /// Appends an event and returns its index (0-based). The event reaches the disk with its
    /// chunk: when 256 KiB are encoded, or at [`TraceWriter::flush`]. The writer reads no clock
    /// (the recorder's tracer thread must not: see `tracee::tsc`); the recorder calls
    /// [`TraceWriter::flush_soon`] on its own timer so a killed recording keeps recent events.
    ///
    /// An error of the writing thread (a full disk, say) is returned by a later call.
    pub fn push(&mut self, mut ev: Event) -> Result<u64> {
        self.check()?;
        self.batch_bytes += payload_bytes(&mut ev);
        self.batch.push(ev);
        let idx = self.next_event;
        self.next_event += 1;
        // Stored files' rows go soon (the writing thread vouches for the files, and a short
        // recording would otherwise leave all its work to the end, where the program's exit
        // waits for it); events in batches.
        if self.batch.len() >= BATCH_EVENTS
            || self.batch_bytes >= BATCH_BYTES
            || self.rows.len() >= ROWS_AT_ONCE
        {
            self.hand_over()?;
        }
        Ok(idx)
    }

    /// Turns a payload into [`Data`]. It travels inline in the event; the writing thread moves
    /// it to the blob file if it has [`INLINE_MAX`] bytes or more.
    pub fn data(&mut self, bytes: &[u8]) -> Result<Data> {
        Ok(Data::Inline(bytes.to_vec()))
    }

    /// [`Self::data`] of bytes the caller owns, without a copy.
    pub fn data_vec(&mut self, bytes: Vec<u8>) -> Data {
        Data::Inline(bytes)
    }

    /// A buffer for a large payload to give [`Self::data_vec`]: one the writing thread is done
    /// with, when there is one (its bytes are stale), else a new one. Reusing them spares the
    /// recorder an allocation, page faults and, once freed by the other thread, the unmapping
    /// whose TLB shootdown interrupts every CPU the recorder's threads ran on.
    pub fn recycled(&mut self) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        spare.pop().unwrap_or_default()
    }

    /// Gives back a buffer from [`Self::recycled`] that was not used.
    pub fn reuse(&mut self, buf: Vec<u8>) {
        sink::give_back(&self.spare, buf);
    }

    /// Writes the events pushed so far as a chunk, and waits until it is on file.
    pub fn flush(&mut self) -> Result<()> {
        self.hand_over()?;
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        self.send(Msg::Flush(Some(ack)))?;
        let _ = done.recv();
        self.check()
    }

    /// Asks the writing thread to write the events pushed so far as a chunk, without waiting.
    pub fn flush_soon(&mut self) -> Result<()> {
        self.hand_over()?;
        self.send(Msg::Flush(None))
    }

    /// Hands the batch of events to the writing thread.
    fn hand_over(&mut self) -> Result<()> {
        if self.batch.is_empty() && self.rows.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.batch);
        let files = std::mem::take(&mut self.rows);
        self.batch_bytes = 0;
        self.send(Msg::Batch { files, events })
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        let sent = self.to_sink.as_ref().map(|tx| tx.send(msg).is_ok());
        if sent != Some(true) {
            return Err(self.failure.take());
        }
        Ok(())
    }

    /// The writing thread's error, if it met one.
    fn check(&self) -> Result<()> {
        if self.failure.set.load(std::sync::atomic::Ordering::Acquire) {
            return Err(self.failure.take());
        }
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
                error: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
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
        how: &'static str,
        cache: Option<SourceKey>,
    ) -> Result<FileRef> {
        // A file is stored once per trace (the cache or the `files/` entry answers later
        // requests), so its row is new.
        let inserted = self.stored_hashes.insert(hash.clone());
        if inserted {
            self.rows.push(FileRow {
                hash: hash.clone(),
                path: recorded_path.to_string(),
                size,
                how,
            });
        }
        if inserted {
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
        self.syscalls = counts;
    }

    /// Notes the mapped files whose content changed (see [`TraceMeta::changing_files`]), for
    /// the metadata [`Self::finish`] writes.
    pub fn set_changing_files(&mut self, files: Vec<crate::event::FileId>) {
        self.changing_files = Some(files);
    }

    /// Writes the remaining events and marks the trace complete with the program's `exit`
    /// status; returns the final metadata.
    ///
    /// Nothing is synced to the disk: the trace survives the recorder's death at any point
    /// (the kernel has every byte written), not a crash of the machine, like rr's.
    pub fn finish(mut self, exit: ExitStatus) -> Result<TraceMeta> {
        self.hand_over()?;
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let ending = Ending {
            exit,
            syscalls: self.syscalls,
            changing_files: self.changing_files.take(),
            files_bytes: self.files_bytes,
        };
        self.send(Msg::Finish(ending, reply))?;
        let meta = answer.recv().map_err(|_| self.failure.take());
        self.hang_up();
        meta?
    }

    /// Hangs up on the writing thread, which writes what it holds, and waits for it; then
    /// the recording is no longer in progress.
    fn hang_up(&mut self) {
        self.to_sink = None;
        if let Some(t) = self.sink.take() {
            let _ = t.join();
        }
        self.lock = None;
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        if self.to_sink.is_some() {
            if let Err(e) = self.hand_over() {
                tracing::warn!("could not write the last events of the trace: {e}");
            }
        }
        self.hang_up();
    }
}

/// About how many payload bytes an event carries.
fn payload_bytes(ev: &mut Event) -> usize {
    let stack = match ev {
        Event::Exec(e) => e.stack.len(),
        _ => 0,
    };
    stack
        + ev.data_mut()
            .iter()
            .map(|d| d.len() as usize)
            .sum::<usize>()
}

/// Writes `record` at `offset` (the end of the file); on failure cuts the file back so that no
/// partial record stays in front of later ones.
pub(crate) fn write_record(file: &File, path: &Path, record: &[u8], offset: u64) -> Result<()> {
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
