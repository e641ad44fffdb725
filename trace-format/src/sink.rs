//! The writing thread behind [`crate::TraceWriter`]: it encodes events, moves large payloads to
//! the blob file, compresses chunks and keeps the index, so that none of that work delays the
//! recorder's tracer thread (whose every instruction is on the recorded program's path).
//!
//! It is fed through a bounded channel, in order: a payload reaches the blob file before the
//! chunk of the event naming it, and a stored file's index row is committed no later than the
//! chunk of the first event naming it (rows wait and go in the chunk's transaction), so a trace
//! cut at any point stays consistent.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::error::{io_err, sql_err, Result, TraceError};
use crate::event::{Data, Event, ExitStatus, MemWrite};
use crate::format::{self, BlobHeader, ChunkHeader, CHUNK_HEADER_LEN, ZSTD_LEVEL};
use crate::index;
use crate::meta::{SyscallCounts, TraceMeta};
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
}

impl Failure {
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
    pub meta: TraceMeta,
    pub events_path: PathBuf,
    pub events: File,
    pub blobs_path: PathBuf,
    pub blobs: File,
    /// The CPU the recorded program is pinned to, which the thread stays off when it can.
    pub avoid_cpu: Option<u32>,
}

/// The thread's state once the index is open.
struct Open {
    sink: Sink,
    spare: Arc<Spare>,
    db: Connection,
    events_len: u64,
    blobs_len: u64,
    compressor: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
    buf_events: u32,
    buf_first: u64,
    next_event: u64,
    next_seq: u64,
    rows: Vec<FileRow>,
}

/// The thread's body: creates the index, then serves `rx` until the writer hangs up (a writer
/// dropped without `finish` gets its buffered events written, best effort).
pub(crate) fn run(sink: Sink, rx: Receiver<Msg>, failure: Arc<Failure>, spare: Arc<Spare>) {
    block_signals();
    if let Some(cpu) = sink.avoid_cpu {
        stay_off_cpu(cpu);
    }
    let mut open = match Open::new(sink, spare) {
        Ok(o) => o,
        Err(e) => {
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
            answer_failed(msg, &failure);
            continue;
        }
        let step = match msg {
            Msg::Batch { files, events } => {
                open.rows.extend(files);
                events.into_iter().try_for_each(|ev| open.push(ev))
            }
            Msg::Flush(ack) => {
                let r = open.flush();
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                r
            }
            Msg::Finish(ending, reply) => {
                let r = open.finish(ending);
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok {
                    return;
                }
                failed = true;
                continue;
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
        _ => {}
    }
}

/// The thread takes no signal: the recorder's timer (`SIGALRM`, per process) must interrupt
/// only the tracer thread's waits.
fn block_signals() {
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
    fn new(sink: Sink, spare: Arc<Spare>) -> Result<Self> {
        let db = Connection::open_with_flags(
            &sink.index_path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err(&sink.index_path))?;
        index::create_schema(&db, &sink.index_path)?;
        index::write_meta(&db, &sink.index_path, &sink.meta)?;
        let compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(io_err(&sink.blobs_path))?;
        Ok(Open {
            sink,
            spare,
            db,
            events_len: 0,
            blobs_len: 0,
            compressor,
            buf: Vec::with_capacity(CHUNK_TARGET_BYTES + (CHUNK_TARGET_BYTES >> 2)),
            buf_events: 0,
            buf_first: 0,
            next_event: 0,
            next_seq: 0,
            rows: Vec::new(),
        })
    }

    /// Encodes one event (its large payloads first go to the blob file).
    fn push(&mut self, mut ev: Event) -> Result<()> {
        self.move_payloads(&mut ev, INLINE_MAX)?;
        if format::encode_event(&ev, &mut self.buf).is_err() {
            // Larger than an event may be: every payload goes to the blob file.
            self.move_payloads(&mut ev, 1)?;
            format::encode_event(&ev, &mut self.buf).map_err(|message| TraceError::Encode {
                what: "an event",
                message,
            })?;
        }
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
        let writes: &mut [MemWrite] = match ev {
            Event::Syscall(e) => &mut e.writes,
            Event::Clone(e) => &mut e.writes,
            Event::Start(e) => &mut e.writes,
            Event::Buffered(e) => return self.move_to_blob(&mut e.records, min),
            _ => return Ok(()),
        };
        for w in writes {
            self.move_to_blob(&mut w.data, min)?;
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
        write_record(&self.sink.blobs, &self.sink.blobs_path, &record, offset)?;
        self.blobs_len += record.len() as u64;
        let len = bytes.len() as u64;
        let old = std::mem::replace(data, Data::Blob { offset, len });
        if let Data::Inline(buf) = old {
            give_back(&self.spare, buf);
        }
        Ok(())
    }

    /// Writes the buffered events as one chunk, with the file rows waiting, in one commit.
    fn flush(&mut self) -> Result<()> {
        if self.buf_events == 0 {
            return self.commit_rows(None);
        }
        let frame = self
            .compressor
            .compress(&self.buf)
            .map_err(io_err(&self.sink.events_path))?;
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
        write_record(&self.sink.events, &self.sink.events_path, &record, offset)?;

        // The chunk is on file: from here on the state must move on even if the index fails.
        let row = ChunkRow {
            seq: self.next_seq,
            offset,
            len: record.len() as u64,
            first_event: header.first_event,
            events: u64::from(self.buf_events),
            raw_len: self.buf.len() as u64,
        };
        self.events_len += record.len() as u64;
        self.next_seq += 1;
        self.buf.clear();
        self.buf_events = 0;
        self.commit_rows(Some(row))
    }

    /// Commits the waiting file rows and `chunk`'s row in one transaction.
    fn commit_rows(&mut self, chunk: Option<ChunkRow>) -> Result<()> {
        if chunk.is_none() && self.rows.is_empty() {
            return Ok(());
        }
        let path = &self.sink.index_path;
        let tx = self.db.transaction().map_err(sql_err(path))?;
        for r in self.rows.drain(..) {
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
        tx.commit().map_err(sql_err(path))
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
        index::write_meta(&self.db, &self.sink.index_path, &meta)?;
        Ok(meta)
    }
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
