//! Reading a trace.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{io_err, sql_err, Result, TraceError};
use crate::event::{Data, Event, FileRef};
use crate::format::{
    self, BlobHeader, ChunkHeader, BLOBS_FILE, BLOB_HEADER_LEN, CHUNK_HEADER_LEN, EVENTS_FILE,
    INDEX_FILE,
};
use crate::index;
use crate::meta::TraceMeta;
use crate::verify::{self, Verifier};

/// One events chunk as the index lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Sequence number, from 0.
    pub seq: u64,
    /// Offset of the chunk header in the `events` file.
    pub offset: u64,
    /// Length of header and compressed frame together.
    pub len: u64,
    /// Index of the chunk's first event.
    pub first_event: u64,
    /// Number of events in the chunk.
    pub events: u64,
    /// Size of the chunk's events once decompressed.
    pub raw_len: u64,
}

/// An open trace directory.
pub struct TraceReader {
    dir: PathBuf,
    index_path: PathBuf,
    db: Connection,
    meta: TraceMeta,
    events_path: PathBuf,
    blobs_path: PathBuf,
    blobs: File,
    verifier: Verifier,
}

impl std::fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceReader")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl TraceReader {
    /// Opens the trace in `dir`: [`TraceError::NotATrace`] without an `index.sqlite`,
    /// [`TraceError::UnsupportedVersion`] for another format version, [`TraceError::Corrupt`]
    /// for unreadable metadata or missing data files.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::metadata(dir).map_err(io_err(dir))?;
        let index_path = dir.join(INDEX_FILE);
        match fs::symlink_metadata(&index_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TraceError::NotATrace(dir.to_path_buf()))
            }
            Err(e) => return Err(io_err(&index_path)(e)),
            Ok(m) if m.is_dir() => return Err(TraceError::NotATrace(dir.to_path_buf())),
            Ok(_) => {}
        }
        // SQLite opens the index by name: it is checked first, and opened with
        // SQLITE_OPEN_NOFOLLOW; its journal must not lead elsewhere either.
        verify::open_regular(dir, &index_path, "the index")?;
        for journal in ["-journal", "-wal"] {
            let p = dir.join(format!("{INDEX_FILE}{journal}"));
            verify::refuse_symlink(dir, &p, &format!("the index's {INDEX_FILE}{journal}"))?;
        }
        let (db, meta) = index::open(&index_path)?;
        let events_path = dir.join(EVENTS_FILE);
        verify::open_regular(dir, &events_path, "the events file")?;
        let blobs_path = dir.join(BLOBS_FILE);
        let blobs = verify::open_regular(dir, &blobs_path, "the blobs file")?;
        Ok(TraceReader {
            dir: dir.to_path_buf(),
            index_path,
            db,
            meta,
            events_path,
            blobs_path,
            blobs,
            verifier: Verifier::default(),
        })
    }

    /// The trace's seal, as its index keeps it (not checked).
    pub fn seal(&self) -> Result<Option<crate::seal::Seal>> {
        Ok(index::read_sealed(&self.db, &self.index_path)?.1)
    }

    /// Checks the trace against its seal under `policy` (see `seal.rs`): its digest is
    /// computed from its files as they are now and must be the seal's; then the seal must be
    /// the user's own, or the digest the one given, or the trace trusted. A finished trace
    /// without a seal counts as sealed by no key; an unfinished one (its recorder killed) is
    /// accepted, since its replay ends in an error where it ends.
    pub fn check_seal(&self, policy: &crate::seal::Policy) -> Result<crate::seal::Accepted> {
        use crate::seal::Accepted;
        let (json, seal) = index::read_sealed(&self.db, &self.index_path)?;
        if seal.is_none() && !self.meta.complete {
            return Ok(Accepted::Unfinished);
        }
        let lengths = (self.meta.events_bytes, self.meta.blobs_bytes);
        let digest = crate::seal::digest_of(&self.dir, &json, lengths, &self.db, &self.index_path)?;
        // A finished trace without a seal (an older deja's, or its seal removed) is one
        // sealed by no key.
        let seal = seal.unwrap_or_else(|| crate::seal::Seal {
            digest: digest.clone(),
            key_id: String::new(),
            mac: String::new(),
        });
        if digest != seal.digest {
            return Err(TraceError::corrupt(
                &self.dir,
                "the trace was changed after it was recorded (its files do not have the digest \
                 its seal names)",
            ));
        }
        if let Some(expected) = &policy.digest {
            if !expected.eq_ignore_ascii_case(&digest) {
                return Err(TraceError::corrupt(
                    &self.dir,
                    format!("the trace's digest is {digest}, not the {expected} you gave"),
                ));
            }
            return Ok(Accepted::Digest);
        }
        match &policy.key {
            Some(key) if key.id() == seal.key_id => {
                if key.verifies(&seal) {
                    Ok(Accepted::Sealed)
                } else {
                    Err(TraceError::corrupt(
                        &self.dir,
                        "the trace's seal is not valid: it was changed after it was recorded",
                    ))
                }
            }
            _ if policy.trust => Ok(Accepted::Trusted),
            _ => Err(TraceError::Untrusted {
                path: self.dir.clone(),
                key_id: seal.key_id,
                digest,
            }),
        }
    }

    /// Seals the trace anew with `key`, its digest taken from its files as they are now: for
    /// tools that rewrite a trace on purpose (the tests that forge one), never needed after a
    /// recording, which seals its trace itself.
    pub fn reseal(&self, key: &crate::seal::Key) -> Result<()> {
        let (json, _) = index::read_sealed(&self.db, &self.index_path)?;
        let lengths = (self.meta.events_bytes, self.meta.blobs_bytes);
        let digest = crate::seal::digest_of(&self.dir, &json, lengths, &self.db, &self.index_path)?;
        index::write_seal(&self.db, &self.index_path, &key.seal(&digest))
    }

    /// The trace's metadata.
    pub fn meta(&self) -> &TraceMeta {
        &self.meta
    }

    /// The trace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Streams the events from the first, one chunk in memory at a time. See [`EventIter`]
    /// for how the stream ends.
    pub fn events(&self) -> Result<EventIter> {
        let file = verify::open_regular(&self.dir, &self.events_path, "the events file")?;
        let file_len = file.metadata().map_err(io_err(&self.events_path))?.len();
        let last_indexed: Option<i64> = self
            .db
            .query_row("SELECT MAX(offset) FROM chunks", [], |r| r.get(0))
            .map_err(sql_err(&self.index_path))?;
        Ok(EventIter {
            path: self.events_path.clone(),
            file,
            file_len,
            offset: 0,
            seq: 0,
            next_index: 0,
            pending: VecDeque::new(),
            complete: self.meta.complete,
            expected: self.meta.event_count,
            last_indexed_offset: last_indexed.map(|o| u64::try_from(o).unwrap_or(0)),
            done: false,
            truncated: false,
        })
    }

    /// The bytes `data` stands for, checked against its length and the blob checksum.
    pub fn read_data(&self, data: &Data) -> Result<Vec<u8>> {
        let (offset, len) = match data {
            Data::Inline(v) => return Ok(v.clone()),
            Data::Blob { offset, len } => (*offset, *len),
        };
        let corrupt = |what: String| {
            TraceError::corrupt(&self.blobs_path, format!("blob at offset {offset} {what}"))
        };
        let file_len = self
            .blobs
            .metadata()
            .map_err(io_err(&self.blobs_path))?
            .len();
        if offset
            .checked_add(BLOB_HEADER_LEN as u64)
            .map_or(true, |end| end > file_len)
        {
            return Err(corrupt(format!(
                "lies beyond the end of the blob file ({file_len} bytes)"
            )));
        }
        let mut h = [0u8; BLOB_HEADER_LEN];
        self.blobs
            .read_exact_at(&mut h, offset)
            .map_err(io_err(&self.blobs_path))?;
        let header = BlobHeader::decode(&h).ok_or_else(|| corrupt("has no blob magic".into()))?;
        if header.raw_len != len {
            return Err(corrupt(format!(
                "holds {} bytes, but the event says {len}",
                header.raw_len
            )));
        }
        let start = offset + BLOB_HEADER_LEN as u64;
        if header.compressed_len > file_len - start {
            return Err(corrupt(format!(
                "is cut short ({} compressed bytes announced, {} in the file)",
                header.compressed_len,
                file_len - start
            )));
        }
        // Bounded by the file's size, checked above.
        let mut frame = vec![0u8; header.compressed_len as usize];
        self.blobs
            .read_exact_at(&mut frame, start)
            .map_err(io_err(&self.blobs_path))?;
        if format::checksum(&frame) != header.checksum {
            return Err(corrupt("fails its checksum".into()));
        }
        format::decode_blob(&frame, len).map_err(corrupt)
    }

    /// The path of a stored file in this trace, verified (see [`TraceReader::open_file`]).
    pub fn file_path(&self, file: &FileRef) -> Result<PathBuf> {
        self.open_file(file).map(|(_, path)| path)
    }

    /// The stored file `file`, opened for reading, and its path. It is verified at its first
    /// use (by this reader, or by any replay since it last changed, see the README's
    /// "Integrity"): a [`TraceError::Corrupt`] naming the recorded path if it is missing, a
    /// symlink (never followed) or not a regular file, has another size, or its content does
    /// not hash to the name it is stored under.
    pub fn open_file(&self, file: &FileRef) -> Result<(File, PathBuf)> {
        self.verifier.open(&self.dir, file)
    }

    /// Verifies every file in the file store as [`TraceReader::open_file`] does (those this
    /// reader already verified, or the cache lists, cost a `statx`): the first bad one is the
    /// error. A replay to the end calls this last, so that no stored byte, used or not, is
    /// damaged in a trace that replays successfully.
    pub fn verify_stored_files(&self) -> Result<()> {
        for (file, _) in self.stored_files()? {
            self.open_file(&file)?;
        }
        Ok(())
    }

    /// Uses `cache` (a private directory), or no cache, to remember verified stored files,
    /// instead of the user's (`<trace root>/.pool/verified`).
    pub fn set_verify_cache(&mut self, cache: Option<PathBuf>) {
        self.verifier = Verifier::with_cache(cache);
    }

    /// Every file in the file store, with how it was stored (`"link"` or `"copy"`), in the
    /// order they were stored.
    pub fn stored_files(&self) -> Result<Vec<(FileRef, String)>> {
        let mut stmt = self
            .db
            .prepare("SELECT hash, path, size, how FROM files ORDER BY rowid")
            .map_err(sql_err(&self.index_path))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    FileRef {
                        hash: r.get(0)?,
                        path: r.get(1)?,
                        size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    },
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(sql_err(&self.index_path))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_err(&self.index_path))
    }

    /// The events chunks the index lists, in order. The index may miss the last chunk of a
    /// trace whose recorder was killed; [`TraceReader::events`] reads it anyway.
    pub fn chunks(&self) -> Result<Vec<ChunkInfo>> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT seq, offset, len, first_event, events, raw_len FROM chunks ORDER BY seq",
            )
            .map_err(sql_err(&self.index_path))?;
        let rows = stmt
            .query_map([], |r| {
                let u = |i: usize| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
                };
                Ok(ChunkInfo {
                    seq: u(0)?,
                    offset: u(1)?,
                    len: u(2)?,
                    first_event: u(3)?,
                    events: u(4)?,
                    raw_len: u(5)?,
                })
            })
            .map_err(sql_err(&self.index_path))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_err(&self.index_path))
    }
}

/// The events of a trace, in order, read chunk by chunk.
///
/// The iteration ends with `None` at the end of a sound stream. In a trace whose recorder did
/// not finish (`meta.complete == false`), a cut or garbled last chunk also ends it, and
/// [`EventIter::truncated`] then says so. Damage anywhere else, a damaged end of a complete
/// trace, or an event count other than `meta.event_count` yields one
/// `Err(TraceError::Corrupt)`, after which the iterator is exhausted.
pub struct EventIter {
    path: PathBuf,
    file: File,
    file_len: u64,
    offset: u64,
    seq: u64,
    next_index: u64,
    pending: VecDeque<Event>,
    complete: bool,
    expected: u64,
    last_indexed_offset: Option<u64>,
    done: bool,
    truncated: bool,
}

/// How the bytes at the end of an events file are wrong.
enum Tail {
    /// The file ends inside the chunk.
    Cut,
    /// The chunk is all there but wrong (bad magic or checksum).
    Garbled,
}

impl EventIter {
    /// An independent iterator at the same place (its own handle on the events file), for a
    /// copy of a replay that goes on from here separately.
    pub fn try_clone(&self) -> Result<EventIter> {
        use std::io::{Seek, SeekFrom};
        let mut file = File::open(&self.path).map_err(io_err(&self.path))?;
        file.seek(SeekFrom::Start(self.offset))
            .map_err(io_err(&self.path))?;
        Ok(EventIter {
            path: self.path.clone(),
            file,
            file_len: self.file_len,
            offset: self.offset,
            seq: self.seq,
            next_index: self.next_index,
            pending: self.pending.clone(),
            complete: self.complete,
            expected: self.expected,
            last_indexed_offset: self.last_indexed_offset,
            done: self.done,
            truncated: self.truncated,
        })
    }

    /// Whether the stream ended at a cut or garbled last chunk of an incomplete trace (the
    /// events of that chunk are lost). Meaningful once the iteration has ended.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Number of events yielded or buffered so far; after a clean end, the trace's count.
    pub fn events_read(&self) -> u64 {
        self.next_index
    }

    /// Either ends the stream at a tolerated tail (returning `Ok(false)`) or reports damage.
    fn bad_tail(&mut self, kind: Tail, what: String) -> Result<bool> {
        let later_chunk_indexed = self.last_indexed_offset.is_some_and(|o| o > self.offset);
        let tolerated = !self.complete
            && match kind {
                Tail::Cut => true,
                Tail::Garbled => !later_chunk_indexed,
            };
        if tolerated {
            tracing::debug!("{}: {what}; the recording ends here", self.path.display());
            self.truncated = true;
            Ok(false)
        } else {
            Err(self.corrupt(what))
        }
    }

    fn corrupt(&self, what: String) -> TraceError {
        TraceError::corrupt(&self.path, what)
    }

    /// Loads the next chunk into `pending`; `Ok(false)` at the end of the stream.
    fn read_chunk(&mut self) -> Result<bool> {
        let remaining = self.file_len - self.offset;
        if remaining == 0 {
            return Ok(false);
        }
        let name = format!("events chunk {} at offset {}", self.seq, self.offset);
        if remaining < CHUNK_HEADER_LEN as u64 {
            return self.bad_tail(
                Tail::Cut,
                format!("{name} ends after {remaining} bytes of its header"),
            );
        }
        let mut h = [0u8; CHUNK_HEADER_LEN];
        self.file.read_exact(&mut h).map_err(io_err(&self.path))?;
        let Some(header) = ChunkHeader::decode(&h) else {
            return self.bad_tail(Tail::Garbled, format!("{name} has no chunk magic"));
        };
        let available = remaining - CHUNK_HEADER_LEN as u64;
        let len = u64::from(header.compressed_len);
        if len > available {
            return self.bad_tail(
                Tail::Cut,
                format!("{name} is cut short ({len} bytes announced, {available} present)"),
            );
        }
        let mut frame = Vec::with_capacity(len.min(16 << 20) as usize);
        (&mut self.file)
            .take(len)
            .read_to_end(&mut frame)
            .map_err(io_err(&self.path))?;
        if frame.len() as u64 != len {
            return self.bad_tail(Tail::Cut, format!("{name} is cut short"));
        }
        if format::checksum(&frame) != header.checksum {
            let what = format!("{name} fails its checksum");
            return if len == available {
                self.bad_tail(Tail::Garbled, what)
            } else {
                Err(self.corrupt(what))
            };
        }
        if header.first_event != self.next_index {
            return Err(self.corrupt(format!(
                "{name} starts at event {} instead of {}",
                header.first_event, self.next_index
            )));
        }
        let events = format::decode_chunk(&frame, header.events)
            .map_err(|e| self.corrupt(format!("{name}: {e}")))?;
        self.pending = events;
        self.next_index += u64::from(header.events);
        self.offset += CHUNK_HEADER_LEN as u64 + len;
        self.seq += 1;
        Ok(true)
    }
}

impl Iterator for EventIter {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            match self.read_chunk() {
                Ok(true) => continue,
                Ok(false) => {
                    self.done = true;
                    if self.complete && self.next_index != self.expected {
                        return Some(Err(self.corrupt(format!(
                            "the trace holds {} events but its metadata says {}",
                            self.next_index, self.expected
                        ))));
                    }
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for EventIter {}
