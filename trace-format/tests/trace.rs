//! Writing, reading and damaging traces (the file store is in `stored_files.rs`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use trace_format::*;

mod common;
use common::*;

#[test]
fn round_trips_every_variant() {
    let (_tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let (events, payloads) = every_variant(&mut w);
    assert_eq!(w.event_count(), events.len() as u64);
    let done = w.finish(ExitStatus::Exited(3)).unwrap();
    assert!(done.complete);
    assert_eq!(done.event_count, events.len() as u64);
    assert_eq!(done.exit, Some(ExitStatus::Exited(3)));
    assert_eq!(
        done.events_bytes,
        fs::metadata(dir.join("events")).unwrap().len()
    );
    assert_eq!(
        done.blobs_bytes,
        fs::metadata(dir.join("blobs")).unwrap().len()
    );

    let r = TraceReader::open(&dir).unwrap();
    assert_eq!(r.meta(), &done);
    assert_eq!(r.meta().argv, meta().argv);
    assert_eq!(r.meta().cpuid, meta().cpuid);
    assert_eq!(r.meta().format_version, FORMAT_VERSION);
    assert_eq!(r.dir(), dir);
    let mut it = r.events().unwrap();
    let got: Vec<Event> = (&mut it).map(|e| e.unwrap()).collect();
    assert!(!it.truncated());
    assert_eq!(it.events_read(), events.len() as u64);
    assert!(it.next().is_none());
    // Payloads of INLINE_MAX bytes or more went to the blob file, the others stayed inline.
    let Event::Syscall(with_payloads) = &got[1] else {
        panic!("event 1 is not the syscall with payloads: {:?}", got[1]);
    };
    let stored: Vec<Data> = with_payloads
        .writes
        .iter()
        .map(|w| w.data.clone())
        .collect();
    for (d, (_, bytes)) in stored.iter().zip(&payloads) {
        assert_eq!(matches!(d, Data::Blob { .. }), bytes.len() >= INLINE_MAX);
        assert_eq!(&r.read_data(d).unwrap(), bytes);
    }
    let got: Vec<Event> = got.into_iter().map(|e| resolved(&r, e)).collect();
    assert_eq!(got, events);
    // A wrong length or offset is an error, not a panic.
    if let Data::Blob { offset, len } = stored[1] {
        assert!(r
            .read_data(&Data::Blob {
                offset,
                len: len + 1
            })
            .is_err());
        assert!(r
            .read_data(&Data::Blob {
                offset: offset + 1,
                len
            })
            .is_err());
        assert!(r
            .read_data(&Data::Blob {
                offset: u64::MAX - 3,
                len
            })
            .is_err());
    }
    let chunks = r.chunks().unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].events, events.len() as u64);
    assert_eq!(chunks[0].offset, 0);
    assert_eq!(chunks[0].len, done.events_bytes);
}

#[test]
fn many_events_span_many_chunks() {
    let (_tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let mut evs = Vec::new();
    for i in 0..3000u64 {
        let ev = syscall(
            1,
            i,
            vec![MemWrite {
                addr: i,
                data: w.data(&noise(i, 4000 + (i as usize % 3000))).unwrap(),
            }],
        );
        w.push(ev.clone()).unwrap();
        evs.push(ev);
    }
    w.finish(ExitStatus::Exited(0)).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    let chunks = r.chunks().unwrap();
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    let mut next = 0;
    let mut offset = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.seq, i as u64);
        assert_eq!(c.first_event, next);
        assert_eq!(c.offset, offset);
        assert!(c.raw_len >= CHUNK_TARGET_BYTES as u64 || i == chunks.len() - 1);
        next += c.events;
        offset += c.len;
    }
    assert_eq!(next, 3000);
    let (got, truncated) = read_all(&dir);
    assert!(!truncated);
    assert_eq!(got, evs);
}

#[test]
fn flush_makes_buffered_events_readable() {
    let (_tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    w.push(syscall(1, 0, vec![])).unwrap();
    w.push(syscall(1, 1, vec![])).unwrap();
    w.flush().unwrap();
    // Readable while the writer is still open.
    let r = TraceReader::open(&dir).unwrap();
    assert_eq!(r.chunks().unwrap().len(), 1);
    assert!(!r.meta().complete);
    let (got, truncated) = read_all(&dir);
    assert_eq!(got.len(), 2);
    assert!(!truncated);
    w.finish(ExitStatus::Exited(0)).unwrap();
}

#[test]
fn killed_writer_keeps_complete_chunks() {
    let (_tmp, dir) = trace_dir();
    let (mut w, evs) = write_chunked(&dir, 50, 10, 100);
    // Five more events still in the buffer when "SIGKILL" arrives.
    for i in 50..55 {
        w.push(syscall(1, i, vec![])).unwrap();
    }
    std::mem::forget(w);
    let (got, truncated) = read_all(&dir);
    assert_eq!(got, evs);
    assert!(!truncated);
    assert!(!TraceReader::open(&dir).unwrap().meta().complete);

    // Now cut the events file inside the last chunk.
    let events = dir.join("events");
    let len = fs::metadata(&events).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&events).unwrap();
    f.set_len(len - 5).unwrap();
    let (got, truncated) = read_all(&dir);
    assert_eq!(got, evs[..40]);
    assert!(truncated);

    // Cut inside the header of the last chunk.
    let r = TraceReader::open(&dir).unwrap();
    let last = *r.chunks().unwrap().last().unwrap();
    f.set_len(last.offset + 10).unwrap();
    let (got, truncated) = read_all(&dir);
    assert_eq!(got, evs[..40]);
    assert!(truncated);

    // Cut exactly at a chunk boundary: nothing is known to be lost.
    f.set_len(last.offset).unwrap();
    let (got, truncated) = read_all(&dir);
    assert_eq!(got, evs[..40]);
    assert!(!truncated);
}

#[test]
fn dropped_writer_flushes_and_chunk_without_index_row_is_read() {
    let (_tmp, dir) = trace_dir();
    let (w, evs) = write_chunked(&dir, 25, 10, 10);
    drop(w);
    let (got, truncated) = read_all(&dir);
    assert_eq!(got, evs);
    assert!(!truncated);
    // The recorder died between writing a chunk and indexing it.
    assert_eq!(delete_last_chunk_row(&dir), 2);
    let (got, _) = read_all(&dir);
    assert_eq!(got, evs);
}

/// Deletes the last row of the `chunks` table; returns the number of remaining rows.
fn delete_last_chunk_row(dir: &Path) -> usize {
    sql(
        dir,
        "DELETE FROM chunks WHERE seq = (SELECT MAX(seq) FROM chunks)",
    );
    TraceReader::open(dir).unwrap().chunks().unwrap().len()
}

/// Runs SQL on a trace index.
fn sql(dir: &Path, statement: &str) {
    let db = rusqlite::Connection::open(dir.join("index.sqlite")).unwrap();
    db.execute_batch(statement).unwrap();
}

#[test]
fn corrupt_middle_is_an_error() {
    let (_tmp, dir) = trace_dir();
    let (w, _) = write_chunked(&dir, 30, 10, 100);
    w.finish(ExitStatus::Exited(0)).unwrap();
    let events = dir.join("events");
    let pristine = fs::read(&events).unwrap();
    let chunks = TraceReader::open(&dir).unwrap().chunks().unwrap();
    assert_eq!(chunks.len(), 3);
    let mid = chunks[1];

    let mut bytes = pristine.clone();
    bytes[(mid.offset + mid.len / 2 + 12) as usize] ^= 0x40;
    fs::write(&events, &bytes).unwrap();
    let err = drain(&dir).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt trace {}: events chunk 1 at offset {} fails its checksum",
            events.display(),
            mid.offset
        )
    );
    // Ten events come out before the error.
    let r = TraceReader::open(&dir).unwrap();
    let results: Vec<_> = r.events().unwrap().collect();
    assert_eq!(results.len(), 11);
    assert!(results[..10].iter().all(|e| e.is_ok()));

    let mut bytes = pristine.clone();
    bytes[mid.offset as usize] = b'X';
    fs::write(&events, &bytes).unwrap();
    assert_corrupt(drain(&dir).map(|_| ()), "has no chunk magic");

    // The same damage in an unfinished trace is still an error: later chunks exist.
    sql(
        &dir,
        "UPDATE meta SET value = json_set(value, '$.complete', json('false'))",
    );
    assert!(!TraceReader::open(&dir).unwrap().meta().complete);
    assert_corrupt(drain(&dir).map(|_| ()), "has no chunk magic");
    let mut bytes = pristine.clone();
    bytes[(mid.offset + mid.len - 1) as usize] ^= 1;
    fs::write(&events, &bytes).unwrap();
    assert_corrupt(drain(&dir).map(|_| ()), "fails its checksum");
    // ... but a garbled *last* chunk of an unfinished trace just ends it.
    let last = chunks[2];
    let mut bytes = pristine.clone();
    bytes[(last.offset + last.len - 1) as usize] ^= 1;
    fs::write(&events, &bytes).unwrap();
    assert_eq!(drain(&dir).unwrap(), (20, true));
    sql(
        &dir,
        "UPDATE meta SET value = json_set(value, '$.complete', json('true'))",
    );
    assert_corrupt(drain(&dir).map(|_| ()), "fails its checksum");

    // A complete trace cut at a chunk boundary disagrees with its event count.
    fs::write(&events, &pristine[..last.offset as usize]).unwrap();
    assert_corrupt(
        drain(&dir).map(|_| ()),
        "holds 20 events but its metadata says 30",
    );
    fs::write(&events, &pristine).unwrap();
    assert_eq!(drain(&dir).unwrap(), (30, false));
}

#[test]
fn truncation_at_every_offset_never_panics() {
    let (_tmp, dir) = trace_dir();
    let (w, evs) = write_chunked(&dir, 9, 3, 20);
    w.finish(ExitStatus::Exited(0)).unwrap();
    let events = dir.join("events");
    let pristine = fs::read(&events).unwrap();
    let boundaries: Vec<u64> = TraceReader::open(&dir)
        .unwrap()
        .chunks()
        .unwrap()
        .iter()
        .map(|c| c.offset)
        .collect();
    assert!(pristine.len() < 2000);
    for complete in [true, false] {
        sql(
            &dir,
            &format!("UPDATE meta SET value = json_set(value, '$.complete', json('{complete}'))"),
        );
        for cut in 0..pristine.len() {
            fs::write(&events, &pristine[..cut]).unwrap();
            let r = TraceReader::open(&dir).unwrap();
            let mut it = r.events().unwrap();
            let mut got = Vec::new();
            let mut err = None;
            for e in &mut it {
                match e {
                    Ok(ev) => got.push(ev),
                    Err(e) => err = Some(e),
                }
            }
            assert_eq!(got, evs[..got.len()], "cut at {cut}");
            if complete {
                assert!(
                    matches!(err, Some(TraceError::Corrupt { .. })),
                    "cut at {cut}"
                );
            } else {
                assert!(err.is_none(), "cut at {cut}: {err:?}");
                let at_boundary = boundaries.contains(&(cut as u64));
                assert_eq!(it.truncated(), !at_boundary, "cut at {cut}");
            }
        }
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let (_tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let blob = w.data(&noise(3, 20_000)).unwrap();
    for i in 0..6 {
        w.push(syscall(1, i, vec![])).unwrap();
        if i % 2 == 1 {
            w.flush().unwrap();
        }
    }
    w.finish(ExitStatus::Exited(0)).unwrap();
    let events = dir.join("events");
    let pristine = fs::read(&events).unwrap();
    for complete in [true, false] {
        sql(
            &dir,
            &format!("UPDATE meta SET value = json_set(value, '$.complete', json('{complete}'))"),
        );
        for pos in 0..pristine.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bytes = pristine.clone();
                bytes[pos] ^= mask;
                fs::write(&events, &bytes).unwrap();
                let res = drain(&dir);
                if complete {
                    assert!(res.is_err(), "flip {mask:#x} at {pos} went unnoticed");
                }
            }
        }
    }
    fs::write(&events, &pristine).unwrap();

    let blobs = dir.join("blobs");
    let pristine = fs::read(&blobs).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    assert_eq!(r.read_data(&blob).unwrap(), noise(3, 20_000));
    for pos in (0..pristine.len()).step_by(7) {
        let mut bytes = pristine.clone();
        bytes[pos] ^= 0x10;
        fs::write(&blobs, &bytes).unwrap();
        assert!(r.read_data(&blob).is_err(), "blob flip at {pos}");
    }
    for cut in (0..pristine.len()).step_by(97) {
        fs::write(&blobs, &pristine[..cut]).unwrap();
        assert!(r.read_data(&blob).is_err(), "blob cut at {cut}");
    }
}

#[test]
fn damaged_index_is_an_error() {
    let (_tmp, dir) = trace_dir();
    let (w, _) = write_chunked(&dir, 3, 1, 10);
    w.finish(ExitStatus::Exited(0)).unwrap();
    let index = dir.join("index.sqlite");
    let pristine = fs::read(&index).unwrap();
    for cut in (0..pristine.len()).step_by(509) {
        fs::write(&index, &pristine[..cut]).unwrap();
        let _ = TraceReader::open(&dir).and_then(|r| r.chunks().map(|_| ()));
    }
    fs::write(&index, b"this is not a database, it is plain text padding....................................................").unwrap();
    assert!(matches!(
        TraceReader::open(&dir),
        Err(TraceError::Corrupt { .. })
    ));
    fs::write(&index, &pristine).unwrap();
    sql(&dir, "UPDATE meta SET value = '{not json'");
    assert_corrupt(TraceReader::open(&dir).map(|_| ()), "not JSON");
    sql(
        &dir,
        &format!("UPDATE meta SET value = '{{\"format_version\": {FORMAT_VERSION}, \"argv\": 5}}'"),
    );
    assert_corrupt(TraceReader::open(&dir).map(|_| ()), "malformed");
    sql(&dir, "DELETE FROM meta");
    assert_corrupt(TraceReader::open(&dir).map(|_| ()), "no metadata");
}

/// A version 6 trace (before the `Patches` event) is read: it is a version 7 trace without it.
#[test]
fn the_previous_version_is_read() {
    let (_tmp, dir) = trace_dir();
    TraceWriter::create(&dir, &meta())
        .unwrap()
        .finish(ExitStatus::Exited(0))
        .unwrap();
    sql(
        &dir,
        &format!("PRAGMA user_version = {OLDEST_READABLE_VERSION}"),
    );
    sql(
        &dir,
        &format!(
            "UPDATE meta SET value = json_set(value, '$.format_version', \
             {OLDEST_READABLE_VERSION})"
        ),
    );
    let r = TraceReader::open(&dir).unwrap();
    assert_eq!(r.meta().format_version, OLDEST_READABLE_VERSION);
    assert_eq!(OLDEST_READABLE_VERSION, 6);
    sql(&dir, "PRAGMA user_version = 5");
    assert!(matches!(
        TraceReader::open(&dir),
        Err(TraceError::UnsupportedVersion { found: 5, .. })
    ));
}

#[test]
fn unknown_version_is_unsupported() {
    let (_tmp, dir) = trace_dir();
    TraceWriter::create(&dir, &meta())
        .unwrap()
        .finish(ExitStatus::Exited(0))
        .unwrap();
    let next = FORMAT_VERSION + 1;
    sql(&dir, &format!("PRAGMA user_version = {next}"));
    let err = TraceReader::open(&dir).unwrap_err();
    assert!(matches!(
        err,
        TraceError::UnsupportedVersion {
            found,
            supported: FORMAT_VERSION
        } if found == next
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "trace format version {next} is not supported (this deja reads versions \
             {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}): \
             replay it with the deja that recorded it, or record the program again"
        )
    );
    sql(&dir, &format!("PRAGMA user_version = {FORMAT_VERSION}"));
    sql(
        &dir,
        "UPDATE meta SET value = json_set(value, '$.format_version', 9)",
    );
    assert!(matches!(
        TraceReader::open(&dir),
        Err(TraceError::UnsupportedVersion { found: 9, .. })
    ));
}

#[test]
fn not_a_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let err = TraceReader::open(tmp.path()).unwrap_err();
    assert!(matches!(err, TraceError::NotATrace(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a deja trace (no index.sqlite)",
            tmp.path().display()
        )
    );
    assert!(matches!(
        TraceReader::open(&tmp.path().join("missing")),
        Err(TraceError::Io { .. })
    ));
}

#[test]
fn create_requires_an_empty_directory_and_sets_permissions() {
    let (tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("files")), 0o700);
    for f in ["index.sqlite", "events", "blobs"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    // Metadata is there, incomplete, once the writer has written anything.
    w.flush().unwrap();
    let r = TraceReader::open(&dir).unwrap();
    assert!(!r.meta().complete);
    assert_eq!(r.meta().argv, meta().argv);
    drop(r);
    drop(w);
    assert!(matches!(
        TraceWriter::create(&dir, &meta()),
        Err(TraceError::DirNotEmpty(_))
    ));
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
    TraceWriter::create(&empty, &meta()).unwrap();
    assert_eq!(mode(&empty), 0o700);
}
