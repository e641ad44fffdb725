//! The writing thread behind [`crate::TraceWriter`]: it encodes events, moves large payloads to
//! the blob file, compresses chunks and keeps the index, so that none of that work delays the
//! recorder's tracer thread (whose every instruction is on the recorded program's path).
//!
//! It is fed through a bounded channel, in order: a payload reaches the blob file before the
//! chunk of the event naming it, and a stored file's index row is committed no later than the
//! chunk of the first event naming it (rows wait and go in the chunk's transaction), so a trace
//! cut at any point stays consistent.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::error::{io_err, sql_err, Result, TraceError};
use crate::event::{Data, Event, ExitStatus};
use crate::format::{self, BlobHeader, ChunkHeader, CHUNK_HEADER_LEN, ZSTD_LEVEL};
use crate::index;
use crate::meta::{Stopped, SyscallCounts, TraceMeta};
use crate::writer::{write_record, CHUNK_TARGET_BYTES, INLINE_MAX};

/// A stored file's row of the index.
pub(crate) struct FileRow {
    pub hash: String,
    pub path: String,
    pub size: u64,
    pub how: &'static str,
}

/// What the final metadata needs from the writer's side.
pub(crate) struct Ending {
    pub exit: ExitStatus,
    pub syscalls: SyscallCounts,
    pub changing_files: Option<Vec<crate::event::FileId>>,
    pub files_bytes: u64,
}

/// One piece of work for the thread.
pub(crate) enum Msg {
    /// Stored files' index rows, then events, in order.
    Batch {
        files: Vec<FileRow>,
        events: Vec<Event>,
    },
    /// Write the buffered events as a chunk; then answer, if asked.
    Flush(Option<SyncSender<()>>),
    /// Write everything, mark the trace complete and answer with the final metadata.
    Finish(Ending, SyncSender<Result<TraceMeta>>),
    /// Write everything that fits, mark the trace stopped for this cause (with the program's
    /// status, when it ended) and answer with the number of events kept.
    Stop(Stopped, Option<ExitStatus>, SyncSender<Result<u64>>),
}

/// Large payload buffers the thread is done with, for the recorder to fill again.
pub(crate) type Spare = Mutex<Vec<Vec<u8>>>;

/// Most buffers kept in [`Spare`].
const MAX_SPARE: usize = 16;
/// Smallest buffer worth keeping.
const SPARE_MIN: usize = 64 * 1024;

/// Keeps a large buffer in `spare` for the recorder to reuse.
pub(crate) fn give_back(spare: &Spare, buf: Vec<u8>) {
    if buf.capacity() < SPARE_MIN {
        return;
    }
    let mut spare = spare.lock().unwrap_or_else(|p| p.into_inner());
    if spare.len() < MAX_SPARE {
        spare.push(buf);
    }
}

/// The first error the thread met, for the writer to report.
#[derive(Default)]
pub(crate) struct Failure {
    pub set: AtomicBool,
    pub error: Mutex<Option<TraceError>>,
    /// Events in the chunks on file and in the index: what a reader finds.
    pub kept: AtomicU64,
}

impl Failure {
    /// The error's message, leaving it in place.
    fn message(&self) -> String {
        let slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .map_or_else(|| "an earlier error".into(), |e| e.to_string())
    }

    fn record(&self, e: TraceError) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.set.store(true, Ordering::Release);
    }

    /// The error, once (later calls get a generic one).
    pub fn take(&self) -> TraceError {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().unwrap_or_else(|| TraceError::Encode {
            what: "the trace",
            message: "the writing thread stopped after an earlier error".into(),
        })
    }
}

/// The files of a trace being written, as the thread owns them.
pub(crate) struct Sink {
    pub index_path: PathBuf,
    /// The reserve file: the space kept free for the last chunks and their index rows
    /// ([`RESERVE_BYTES`]) followed by the space kept for the final metadata
    /// ([`END_RESERVE_BYTES`]); `None` once deleted (to write the final metadata).
    pub reserve: Option<PathBuf>,
    /// The reserve file still holds the chunks' part: released (the file cut down to the
    /// end's part) when the disk fills up.
    pub chunk_reserve: bool,
    /// Where the reserve is parked at the end for the next recording, if it is whole then
    /// (see `Pool::reserve_path`).
    pub park: Option<PathBuf>,
    pub meta: TraceMeta,
    pub events_path: PathBuf,
    pub events: File,
    pub blobs_path: PathBuf,
    pub blobs: File,
    /// The CPU the recorded program is pinned to, which the thread stays off when it can.
    pub avoid_cpu: Option<u32>,
    /// The trace's store of files (`files/`).
    pub files_dir: PathBuf,
}

/// The thread's state once the index is open.
struct Open {
    sink: Sink,
    /// The user's cache of verified files, once looked for (see `verify::vouch`).
    verify_cache: std::cell::OnceCell<Option<PathBuf>>,
    spare: Arc<Spare>,
    failure: Arc<Failure>,
    db: Connection,
    events_len: u64,
    blobs_len: u64,
    compressor: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
    /// Where each event buffered in `buf` starts (a chunk can be cut at any of them).
    starts: Vec<usize>,
    buf_events: u32,
    buf_first: u64,
    next_event: u64,
    next_seq: u64,
    rows: Vec<FileRow>,
    /// The trace's digest so far (see `seal.rs`).
    digester: crate::seal::Digester,
    /// The user's sealing key, if usable.
    key: Option<crate::seal::Key>,
}

/// The thread's body: serves `rx` until the writer hangs up (a writer dropped without
/// `finish` gets its buffered events written, best effort).
///
/// After an error the thread takes no more events, but it still answers: `Stop` and `Finish`
/// write the metadata of a stopped trace (the reserve leaves room for it), so the index always
/// says how many events it holds and why it ends there.
pub(crate) fn run(sink: Sink, rx: Receiver<Msg>, failure: Arc<Failure>, spare: Arc<Spare>) {
    prepare_thread();
    if let Some(cpu) = sink.avoid_cpu {
        stay_off_cpu(cpu);
    }
    let index_path = sink.index_path.clone();
    let mut open = match Open::new(sink, spare, Arc::clone(&failure)) {
        Ok(o) => o,
        Err(e) => {
            // No index is better than one without a format version: the trace then reads as
            // "not a deja trace", and nothing else was written to it.
            let _ = std::fs::remove_file(&index_path);
            failure.record(e);
            // Answer a waiting `finish` or `flush` with the failure.
            for msg in rx {
                answer_failed(msg, &failure);
            }
            return;
        }
    };
    let mut failed = false;
    for msg in rx {
        if failed {
            open.after_failure(msg);
            continue;
        }
        let step = match msg {
            Msg::Batch { files, events } => {
                // The stored files' hashes are the recorder's: the first replay need not
                // hash them again (see `verify::vouch`).
                if !files.is_empty() {
                    let cache = open.verify_cache.get_or_init(crate::verify::user_cache);
                    if let Some(cache) = cache {
                        for f in &files {
                            let stored = open.sink.files_dir.join(&f.hash);
                            crate::verify::vouch(cache, &stored, &f.hash);
                        }
                    }
                }
                open.rows.extend(files);
                let pushed = events.into_iter().try_for_each(|ev| open.push(ev));
                if pushed.is_err() {
                    // The events before the one that failed are complete: keep them.
                    let _ = open.flush();
                }
                pushed
            }
            Msg::Flush(ack) => {
                let r = open.flush();
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                r
            }
            Msg::Finish(ending, reply) => {
                let exit = ending.exit;
                match open.finish(ending) {
                    Ok(meta) => {
                        let _ = reply.send(Ok(meta));
                        return;
                    }
                    Err(e) => {
                        let _ = open.stop(Stopped::Error(e.to_string()), Some(exit));
                        let _ = reply.send(Err(e));
                    }
                }
                failed = true;
                continue;
            }
            Msg::Stop(cause, exit, reply) => {
                let _ = reply.send(open.stop(cause, exit));
                return;
            }
        };
        if let Err(e) = step {
            failure.record(e);
            failed = true;
        }
    }
    if !failed {
        if let Err(e) = open.flush() {
            tracing::warn!(
                "could not write the last events of {}: {e}",
                open.sink.events_path.display()
            );
        }
    }
    open.park_reserve();
}

/// Answers a message after a failure: the waiting side learns it from [`Failure`].
fn answer_failed(msg: Msg, failure: &Failure) {
    match msg {
        Msg::Flush(Some(ack)) => {
            let _ = ack.send(());
        }
        Msg::Finish(_, reply) => {
            let _ = reply.send(Err(failure.take()));
        }
        Msg::Stop(_, _, reply) => {
            let _ = reply.send(Err(failure.take()));
        }
        _ => {}
    }
}

/// Renames `from` to `to` unless `to` exists (`renameat2` with `RENAME_NOREPLACE`).
fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated strings that live for the call; renameat2 only
    // reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `e` says the file system is full (or the user's quota spent).
pub(crate) fn is_no_space(e: &TraceError) -> bool {
    match e {
        TraceError::Io { error, .. } => {
            matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        }
        TraceError::Sqlite {
            error: rusqlite::Error::SqliteFailure(f, _),
            ..
        } => f.code == rusqlite::ErrorCode::DiskFull,
        _ => false,
    }
}

/// Releases the chunks' part of `sink`'s reserve, if it still holds it: cuts the reserve file
/// down to the end's part ([`END_RESERVE_BYTES`]), or deletes it if it cannot be cut (the
/// room matters more now than the end's reserve). Whether there was such a part.
fn release_chunk_reserve(sink: &mut Sink) -> bool {
    if !std::mem::replace(&mut sink.chunk_reserve, false) {
        return false;
    }
    let Some(path) = &sink.reserve else {
        return false;
    };
    let cut = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|f| f.set_len(END_RESERVE_BYTES));
    if let Err(e) = cut {
        tracing::debug!("could not cut {} down: {e}", path.display());
        if let Some(path) = sink.reserve.take() {
            let _ = std::fs::remove_file(path);
        }
    }
    true
}

/// Bytes kept free in a trace from its start (the first part of `.reserve`, a file of
/// allocated blocks) and
/// released when the disk fills up or the recording ends: room for the last chunk (at most
/// [`CHUNK_TARGET_BYTES`] before compression) and its index rows.
pub(crate) const RESERVE_BYTES: u64 = 2 * CHUNK_TARGET_BYTES as u64;

/// Bytes kept free (the last part of `.reserve`) for the final metadata and its journal:
/// released only to write them, once the chunks have taken all the rest.
pub(crate) const END_RESERVE_BYTES: u64 = 128 * 1024;

/// Readies the writing thread: it reads the time-stamp counter natively, and takes no signal
/// (the recorder's timer, `SIGALRM`, per process, must interrupt only the tracer thread's
/// waits).
fn prepare_thread() {
    // The recorder's tracer thread traps `rdtsc` (`PR_TSC_SIGSEGV`, see `tracee::tsc`) and this
    // thread inherits that; with every signal blocked, the fault of a clock read here (a
    // timestamped log line, SQLite's own timing) would kill the recorder. This thread reads
    // the time-stamp counter itself.
    // SAFETY: prctl with integer arguments, for the calling thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_ENABLE, 0, 0, 0);
    }
    // SAFETY: sigfillset fills a local set, which pthread_sigmask only reads.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Lets the thread run on any CPU the process may use but `cpu` (the recorded program's and
/// the tracer's), if there is another.
fn stay_off_cpu(cpu: u32) {
    // SAFETY: zero is a valid empty cpu_set_t; sched_getaffinity fills it for the process.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(std::process::id() as i32, size, &mut set) } != 0 {
        return;
    }
    // SAFETY: CPU_ISSET/CPU_CLR bounds-check their index against the set.
    unsafe {
        if !libc::CPU_ISSET(cpu as usize, &set) || libc::CPU_COUNT(&set) < 2 {
            return;
        }
        libc::CPU_CLR(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size, &set);
    }
}

impl Open {
    /// Creates the index (using the reserve if the disk is full).
    fn new(mut sink: Sink, spare: Arc<Spare>, failure: Arc<Failure>) -> Result<Self> {
        let db = match create_index(&sink) {
            Err(e) if is_no_space(&e) && release_chunk_reserve(&mut sink) => create_index(&sink)?,
            r => r?,
        };
        let compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(io_err(&sink.blobs_path))?;
        Ok(Open {
            sink,
            verify_cache: std::cell::OnceCell::new(),
            spare,
            failure,
            db,
            events_len: 0,
            blobs_len: 0,
            compressor,
            buf: Vec::with_capacity(CHUNK_TARGET_BYTES + (CHUNK_TARGET_BYTES >> 2)),
            starts: Vec::new(),
            buf_events: 0,
            buf_first: 0,
            next_event: 0,
            next_seq: 0,
            rows: Vec::new(),
            digester: Default::default(),
            key: crate::seal::Key::of_env(),
        })
    }

    /// Encodes one event (its large payloads first go to the blob file).
    fn push(&mut self, mut ev: Event) -> Result<()> {
        self.move_payloads(&mut ev, INLINE_MAX)?;
        let start = self.buf.len();
        if format::encode_event(&ev, &mut self.buf).is_err() {
            // Larger than an event may be: every payload goes to the blob file.
            self.buf.truncate(start);
            self.move_payloads(&mut ev, 1)?;
            if let Err(message) = format::encode_event(&ev, &mut self.buf) {
                self.buf.truncate(start);
                return Err(TraceError::Encode {
                    what: "an event",
                    message,
                });
            }
        }
        self.starts.push(start);
        // A recycled buffer holding a small payload goes back too.
        if let Event::Buffered(b) = ev {
            if let Data::Inline(buf) = b.records {
                give_back(&self.spare, buf);
            }
        }
        if self.buf_events == 0 {
            self.buf_first = self.next_event;
        }
        self.buf_events += 1;
        self.next_event += 1;
        if self.buf.len() >= CHUNK_TARGET_BYTES || self.buf_events == u32::MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// Moves every payload of `ev` of at least `min` bytes to the blob file.
    fn move_payloads(&mut self, ev: &mut Event, min: usize) -> Result<()> {
        for data in ev.data_mut() {
            self.move_to_blob(data, min)?;
        }
        Ok(())
    }

    fn move_to_blob(&mut self, data: &mut Data, min: usize) -> Result<()> {
        let Data::Inline(bytes) = data else {
            return Ok(());
        };
        if bytes.len() < min {
            return Ok(());
        }
        let frame = self
            .compressor
            .compress(bytes)
            .map_err(io_err(&self.sink.blobs_path))?;
        let header = BlobHeader {
            compressed_len: frame.len() as u64,
            raw_len: bytes.len() as u64,
            checksum: format::checksum(&frame),
        };
        let mut record = Vec::with_capacity(header.encode().len() + frame.len());
        record.extend_from_slice(&header.encode());
        record.extend_from_slice(&frame);
        let offset = self.blobs_len;
        // A full disk may take the reserve for chunks: if the chunks then do not fit, they
        // are cut smaller, and the final metadata keeps a reserve of its own.
        match write_record(&self.sink.blobs, &self.sink.blobs_path, &record, offset) {
            Err(e) if is_no_space(&e) && self.release_reserve() => {
                write_record(&self.sink.blobs, &self.sink.blobs_path, &record, offset)?
            }
            r => r?,
        }
        self.blobs_len += record.len() as u64;
        self.digester.blobs(&record);
        let len = bytes.len() as u64;
        let old = std::mem::replace(data, Data::Blob { offset, len });
        if let Data::Inline(buf) = old {
            give_back(&self.spare, buf);
        }
        Ok(())
    }

    /// Writes the buffered events as one chunk, with the file rows waiting, in one commit.
    ///
    /// When the disk is full, the reserve is released and the write tried again; if it still
    /// does not fit, the events are written in smaller chunks (halving down to one event), so
    /// every complete event that fits is kept. The rest are dropped with the error.
    fn flush(&mut self) -> Result<()> {
        if self.buf_events == 0 {
            return match self.commit_rows(None) {
                Err(e) if is_no_space(&e) && self.release_reserve() => self.commit_rows(None),
                r => r,
            };
        }
        let n = self.starts.len();
        let (mut from, mut want) = (0, n);
        let result = loop {
            if from == n {
                break Ok(());
            }
            let to = from + want.min(n - from);
            match self.write_chunk(from, to) {
                Ok(()) => from = to,
                Err(e) if is_no_space(&e) => {
                    if self.release_reserve() {
                        continue;
                    }
                    if to - from == 1 {
                        break Err(e);
                    }
                    want = (to - from) / 2;
                }
                Err(e) => break Err(e),
            }
        };
        self.buf.clear();
        self.starts.clear();
        self.buf_events = 0;
        result
    }

    /// Writes buffered events `from..to` (indices into `starts`) as one chunk and commits its
    /// row with the file rows waiting; on failure nothing of it stays (the file is cut back).
    fn write_chunk(&mut self, from: usize, to: usize) -> Result<()> {
        let start = self.starts[from];
        let end = self.starts.get(to).copied().unwrap_or(self.buf.len());
        let raw = &self.buf[start..end];
        let frame = self
            .compressor
            .compress(raw)
            .map_err(io_err(&self.sink.events_path))?;
        let compressed_len = u32::try_from(frame.len()).map_err(|_| TraceError::Encode {
            what: "an events chunk",
            message: "compressed chunk is larger than 4 GiB".into(),
        })?;
        let header = ChunkHeader {
            compressed_len,
            events: (to - from) as u32,
            first_event: self.buf_first + from as u64,
            checksum: format::checksum(&frame),
        };
        let mut record = Vec::with_capacity(CHUNK_HEADER_LEN + frame.len());
        record.extend_from_slice(&header.encode());
        record.extend_from_slice(&frame);
        let offset = self.events_len;
        write_record(&self.sink.events, &self.sink.events_path, &record, offset)?;
        let row = ChunkRow {
            seq: self.next_seq,
            offset,
            len: record.len() as u64,
            first_event: header.first_event,
            events: u64::from(header.events),
            raw_len: raw.len() as u64,
        };
        // A chunk the index does not name is cut off, so that the files agree.
        if let Err(e) = self.commit_rows(Some(row)) {
            let _ = self.sink.events.set_len(offset);
            return Err(e);
        }
        self.events_len += record.len() as u64;
        self.digester.events(&record);
        self.next_seq += 1;
        self.failure.kept.store(
            header.first_event + u64::from(header.events),
            Ordering::Release,
        );
        Ok(())
    }

    /// Deletes the reserve file, to write the final metadata.
    fn release_all_reserves(&mut self) {
        self.sink.chunk_reserve = false;
        if let Some(path) = self.sink.reserve.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::debug!("could not remove {}: {e}", path.display());
            }
        }
    }

    /// Parks the reserve file for the next recording where it can (it is whole, and the
    /// park is free and on the same file system), else deletes it: the trace is written.
    fn park_reserve(&mut self) {
        let Some(path) = self.sink.reserve.take() else {
            return;
        };
        let whole = std::mem::replace(&mut self.sink.chunk_reserve, false);
        if let Some(park) = self.sink.park.as_deref().filter(|_| whole) {
            if rename_noreplace(&path, park).is_ok() {
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!("could not remove {}: {e}", path.display());
        }
    }

    /// Writes the final metadata with its seal ([`Self::write_sealed`]), with the reserve
    /// still there; when the disk is full, the reserve is deleted to make room for it and the
    /// write tried again.
    fn write_final_meta(&mut self, meta: &TraceMeta) -> Result<()> {
        match self.write_sealed(meta) {
            Err(e) if is_no_space(&e) && self.sink.reserve.is_some() => {
                self.release_all_reserves();
                self.write_sealed(meta)
            }
            r => r,
        }
    }

    /// Releases the chunks' part of the reserve, if it is still held, to make room; whether
    /// it was.
    fn release_reserve(&mut self) -> bool {
        release_chunk_reserve(&mut self.sink)
    }

    /// Answers a message after the thread failed: no more events are written, but the trace's
    /// metadata can still say where and why it stopped.
    fn after_failure(&mut self, msg: Msg) {
        match msg {
            Msg::Finish(ending, reply) => {
                let cause = Stopped::Error(self.failure.message());
                let _ = self.stop(cause, Some(ending.exit));
                let _ = reply.send(Err(self.failure.take()));
            }
            Msg::Stop(cause, exit, reply) => {
                let _ = reply.send(self.stop(cause, exit));
            }
            other => answer_failed(other, &self.failure),
        }
    }

    /// Writes what fits of the buffered events, then the metadata of a trace stopped by
    /// `cause`; returns the number of events kept.
    fn stop(&mut self, cause: Stopped, exit: Option<ExitStatus>) -> Result<u64> {
        if let Err(e) = self.flush() {
            tracing::debug!("the last events are lost: {e}");
        }
        self.buf.clear();
        self.starts.clear();
        self.buf_events = 0;
        let kept = self.failure.kept.load(Ordering::Acquire);
        let mut meta = self.sink.meta.clone();
        meta.complete = false;
        meta.exit = exit;
        meta.stopped = Some(cause);
        meta.event_count = kept;
        meta.events_bytes = self.events_len;
        meta.blobs_bytes = self.blobs_len;
        self.write_final_meta(&meta)?;
        self.park_reserve();
        Ok(kept)
    }

    /// Writes the final metadata `meta` with the trace's seal (its digest alone, without a
    /// usable key).
    fn write_sealed(&mut self, meta: &TraceMeta) -> Result<()> {
        let path = &self.sink.index_path;
        let json = index::meta_json(meta)?;
        let digest = self.digester.digest(&json, &self.db, path)?;
        let seal = match &self.key {
            Some(key) => key.seal(&digest),
            None => crate::seal::Seal {
                digest,
                key_id: String::new(),
                mac: String::new(),
            },
        };
        index::write_sealed(&mut self.db, path, &json, &seal)
    }

    /// Commits the waiting file rows and `chunk`'s row in one transaction.
    fn commit_rows(&mut self, chunk: Option<ChunkRow>) -> Result<()> {
        if chunk.is_none() && self.rows.is_empty() {
            return Ok(());
        }
        let path = &self.sink.index_path;
        let tx = self.db.transaction().map_err(sql_err(path))?;
        for r in &self.rows {
            tx.execute(
                "INSERT OR IGNORE INTO files(hash, path, size, how) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![r.hash, r.path, r.size as i64, r.how],
            )
            .map_err(sql_err(path))?;
        }
        if let Some(c) = chunk {
            tx.execute(
                "INSERT INTO chunks(seq, offset, len, first_event, events, raw_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    c.seq as i64,
                    c.offset as i64,
                    c.len as i64,
                    c.first_event as i64,
                    c.events as i64,
                    c.raw_len as i64
                ],
            )
            .map_err(sql_err(path))?;
        }
        tx.commit().map_err(sql_err(path))?;
        self.rows.clear();
        Ok(())
    }

    /// Writes what is left and the final metadata, marking the trace complete.
    fn finish(&mut self, ending: Ending) -> Result<TraceMeta> {
        self.flush()?;
        let mut meta = self.sink.meta.clone();
        meta.complete = true;
        meta.exit = Some(ending.exit);
        meta.syscalls = ending.syscalls;
        meta.changing_files = ending.changing_files;
        meta.event_count = self.next_event;
        meta.events_bytes = self.events_len;
        meta.blobs_bytes = self.blobs_len;
        meta.files_bytes = ending.files_bytes;
        self.write_final_meta(&meta)?;
        self.park_reserve();
        tracing::debug!(
            events = meta.event_count,
            "the writing thread finished the trace"
        );
        Ok(meta)
    }
}

/// Creates the index of `sink` with its schema and first metadata.
fn create_index(sink: &Sink) -> Result<Connection> {
    let db = Connection::open_with_flags(
        &sink.index_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(&sink.index_path))?;
    index::create_schema(&db, &sink.index_path)?;
    index::write_meta(&db, &sink.index_path, &sink.meta)?;
    Ok(db)
}

/// A chunk's row of the index.
struct ChunkRow {
    seq: u64,
    offset: u64,
    len: u64,
    first_event: u64,
    events: u64,
    raw_len: u64,
}
