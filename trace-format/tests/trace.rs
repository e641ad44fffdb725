//! Writing, reading, damaging and storing traces.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use trace_format::*;

fn meta() -> TraceMeta {
    TraceMeta {
        deja_version: "0.1.0".into(),
        argv: vec!["/bin/prog".into(), "arg".into()],
        exe: "/bin/prog".into(),
        cwd: "/tmp".into(),
        env: vec!["A=b".into()],
        start_time_unix: 1_700_000_000,
        cpu: Some(3),
        cpuid_faulting: true,
        cpuid: vec![CpuidRecord {
            leaf: 1,
            subleaf: 0,
            regs: [1, 2, 3, 4],
        }],
        ..TraceMeta::default()
    }
}

/// Deterministic pseudo-random bytes (incompressible enough to fill chunks quickly).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file_ref(hash: &str) -> FileRef {
    FileRef {
        hash: hash.into(),
        path: "/bin/prog".into(),
        size: 42,
    }
}

fn syscall(tid: Tid, nr: u64, writes: Vec<MemWrite>) -> Event {
    Event::Syscall(SyscallEvent {
        tid,
        nr,
        args: [1, 2, 3, 4, 5, 6],
        rip: 0x401000 + nr,
        regs_digest: nr.wrapping_mul(31),
        result: -4,
        writes,
        mapped_file: None,
        file_effect: None,
        echo: Some(Echoed {
            stream: 1,
            bytes: b"hi\n".to_vec(),
        }),
    })
}

/// One event of every kind, with inline and blob payloads.
fn every_variant(w: &mut TraceWriter) -> (Vec<Event>, Vec<(Data, Vec<u8>)>) {
    let small = b"hello".to_vec();
    let big = noise(7, 100_000);
    let exactly = vec![9u8; INLINE_MAX];
    let below = vec![8u8; INLINE_MAX - 1];
    let mut payloads = Vec::new();
    for bytes in [small, big, exactly, below, Vec::new()] {
        let d = w.data(&bytes).unwrap();
        payloads.push((d, bytes));
    }
    // The writer decides where a payload goes when it writes the event.
    assert!(payloads.iter().all(|(d, _)| matches!(d, Data::Inline(_))));
    let mut regs = [0u64; 27];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = i as u64 * 0x1111_1111_1111;
    }
    let fr = file_ref(&"ab".repeat(32));
    let events = vec![
        Event::Exec(Box::new(ExecEvent {
            tid: 100,
            regs,
            exe: fr.clone(),
            argv: vec!["prog".into(), "arg".into()],
            stack_addr: 0x7ffd_0000_0000,
            stack: noise(1, 3000),
            mappings: vec![
                Mapping {
                    start: 0x400000,
                    end: 0x401000,
                    perms: "r-xp".into(),
                    offset: 0,
                    name: "/bin/prog".into(),
                    file: Some(fr.clone()),
                },
                Mapping {
                    start: 0x7ffd_0000_0000,
                    end: 0x7ffd_0002_1000,
                    perms: "rw-p".into(),
                    offset: 0,
                    name: "[stack]".into(),
                    file: None,
                },
            ],
            sig_blocked: 1 << 13,
            sig_ignored: 1 << 1,
            comm: String::new(),
            syscallbuf: None,
        })),
        syscall(
            100,
            0,
            payloads
                .iter()
                .enumerate()
                .map(|(i, (d, _))| MemWrite {
                    addr: 0x1000 * i as u64,
                    data: d.clone(),
                })
                .collect(),
        ),
        Event::Syscall(SyscallEvent {
            mapped_file: Some(fr),
            file_effect: None,
            echo: None,
            result: i64::MIN,
            ..match syscall(101, 9, vec![]) {
                Event::Syscall(s) => s,
                _ => unreachable!(),
            }
        }),
        Event::Signal(SignalEvent {
            tid: 101,
            signo: 11,
            siginfo: noise(2, 128),
            origin: SignalOrigin::Fault,
            rip: 0x401234,
            delivered: true,
            point: None,
        }),
        Event::Signal(SignalEvent {
            tid: 100,
            signo: 14,
            siginfo: vec![0; 128],
            origin: SignalOrigin::Async,
            rip: 0x401235,
            delivered: false,
            point: None,
        }),
        Event::Rdtsc(RdtscEvent {
            tid: 100,
            rip: 0x401300,
            tsc: u64::MAX,
            aux: None,
        }),
        Event::Rdtsc(RdtscEvent {
            tid: 100,
            rip: 0x401300,
            tsc: 12345,
            aux: Some(7),
        }),
        Event::Cpuid(CpuidEvent {
            tid: 100,
            rip: 0x401400,
            leaf: 0x8000_0001,
            subleaf: 3,
            regs: [u32::MAX, 0, 1, 2],
        }),
        Event::Exit(ExitEvent {
            tid: 101,
            status: ExitStatus::Signaled(9),
        }),
        Event::Exit(ExitEvent {
            tid: 100,
            status: ExitStatus::Exited(3),
        }),
    ];
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(w.push(ev.clone()).unwrap(), i as u64);
    }
    (events, payloads)
}

/// `ev` with its blob payloads read back inline.
fn resolved(r: &TraceReader, mut ev: Event) -> Event {
    let inline = |d: &mut Data| {
        if matches!(d, Data::Blob { .. }) {
            *d = Data::Inline(r.read_data(d).unwrap());
        }
    };
    match &mut ev {
        Event::Syscall(e) => e.writes.iter_mut().for_each(|w| inline(&mut w.data)),
        Event::Clone(e) => e.writes.iter_mut().for_each(|w| inline(&mut w.data)),
        Event::Start(e) => e.writes.iter_mut().for_each(|w| inline(&mut w.data)),
        Event::Buffered(e) => inline(&mut e.records),
        _ => {}
    }
    ev
}

fn read_all(dir: &Path) -> (Vec<Event>, bool) {
    let r = TraceReader::open(dir).unwrap();
    let mut it = r.events().unwrap();
    let evs: Vec<Event> = (&mut it).map(|e| e.unwrap()).collect();
    (evs, it.truncated())
}

/// Writes `n` syscall events of `payload` bytes each, flushing every `per_chunk` events.
fn write_chunked(dir: &Path, n: u64, per_chunk: u64, payload: usize) -> (TraceWriter, Vec<Event>) {
    let mut w = TraceWriter::create(dir, &meta()).unwrap();
    let mut evs = Vec::new();
    for i in 0..n {
        let d = w.data(&noise(i, payload)).unwrap();
        let ev = syscall(1, i, vec![MemWrite { addr: i, data: d }]);
        w.push(ev.clone()).unwrap();
        evs.push(ev);
        if (i + 1) % per_chunk == 0 {
            w.flush().unwrap();
        }
    }
    (w, evs)
}

fn trace_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    (tmp, dir)
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn assert_corrupt(res: Result<(), TraceError>, needle: &str) {
    match res {
        Err(TraceError::Corrupt { what, .. }) => {
            assert!(what.contains(needle), "{what:?} lacks {needle:?}")
        }
        other => panic!("expected Corrupt({needle}), got {other:?}"),
    }
}

/// Iterates everything; the first error, if any.
fn drain(dir: &Path) -> Result<(usize, bool), TraceError> {
    let r = TraceReader::open(dir)?;
    let mut it = r.events()?;
    let mut n = 0;
    for ev in &mut it {
        ev?;
        n += 1;
    }
    Ok((n, it.truncated()))
}

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

#[test]
fn unknown_version_is_unsupported() {
    let (_tmp, dir) = trace_dir();
    TraceWriter::create(&dir, &meta())
        .unwrap()
        .finish(ExitStatus::Exited(0))
        .unwrap();
    sql(&dir, "PRAGMA user_version = 7");
    let err = TraceReader::open(&dir).unwrap_err();
    assert!(matches!(
        err,
        TraceError::UnsupportedVersion {
            found: 7,
            supported: FORMAT_VERSION
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "trace format version 7 is not supported (this deja reads version {FORMAT_VERSION}): \
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

fn files_in_store(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn file_store_dedups_and_copies() {
    let (tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let x = tmp.path().join("x");
    fs::write(&a, b"same content").unwrap();
    fs::write(&b, b"same content").unwrap();
    fs::write(&x, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&x, fs::Permissions::from_mode(0o755)).unwrap();

    let ra = w.store_file(&a, "/home/u/a").unwrap();
    let rb = w.store_file(&b, "/home/u/b").unwrap();
    let ra2 = w.store_file(&a, "/home/u/a").unwrap();
    assert_eq!(ra.hash, blake3::hash(b"same content").to_hex().to_string());
    assert_eq!(ra.hash, rb.hash);
    assert_eq!(ra, ra2);
    assert_eq!(rb.path, "/home/u/b");
    assert_eq!(ra.size, 12);
    let rx = w.store_file(&x, "/home/u/x").unwrap();
    assert_eq!(files_in_store(&dir), {
        let mut v = vec![ra.hash.clone(), rx.hash.clone()];
        v.sort();
        v
    });

    // /proc links are copied.
    let open = fs::File::open(&b).unwrap();
    use std::os::fd::AsRawFd;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", open.as_raw_fd()));
    assert_eq!(w.store_file(&fd_path, "/home/u/b").unwrap().hash, ra.hash);
    let exe = w
        .store_file(Path::new("/proc/self/exe"), "test-exe")
        .unwrap();
    assert!(w.store_file(tmp.path(), "/dir").is_err());
    assert!(w.store_file(&tmp.path().join("nope"), "/nope").is_err());
    let meta = w.finish(ExitStatus::Exited(0)).unwrap();

    let r = TraceReader::open(&dir).unwrap();
    let stored = r.stored_files().unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|(_, how)| how == "copy"));
    assert_eq!(stored[0].0, ra);
    assert_eq!(
        meta.files_bytes,
        stored.iter().map(|(f, _)| f.size).sum::<u64>()
    );
    let pa = r.file_path(&ra).unwrap();
    assert_eq!(fs::read(&pa).unwrap(), b"same content");
    assert_ne!(
        fs::metadata(&pa).unwrap().ino(),
        fs::metadata(&a).unwrap().ino()
    );
    assert_eq!(mode(&pa), 0o600);
    assert_eq!(mode(&r.file_path(&rx).unwrap()), 0o700);
    let pe = r.file_path(&exe).unwrap();
    assert_eq!(fs::read(pe).unwrap(), fs::read("/proc/self/exe").unwrap());
    // Missing, resized or ill-named files are errors.
    let mut bad = ra.clone();
    bad.size += 1;
    assert!(r.file_path(&bad).is_err());
    bad = ra.clone();
    bad.hash = "../../etc/passwd".into();
    assert!(r.file_path(&bad).is_err());
    fs::remove_file(&pa).unwrap();
    assert!(matches!(r.file_path(&ra), Err(TraceError::Corrupt { .. })));
}

#[test]
fn a_stored_file_is_verified_against_its_hash_and_never_followed() {
    let (tmp, dir) = trace_dir();
    let src = tmp.path().join("prog");
    fs::write(&src, b"what time is it").unwrap();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let f = w.store_file(&src, "/usr/bin/prog").unwrap();
    w.finish(ExitStatus::Exited(0)).unwrap();
    let p = dir.join("files").join(&f.hash);
    let mut r = TraceReader::open(&dir).unwrap();
    r.set_verify_cache(None);
    let (_, path) = r.open_file(&f).unwrap();
    assert_eq!(path, p);

    // One byte changed, same size.
    let mut bytes = fs::read(&p).unwrap();
    bytes[5..9].copy_from_slice(b"TIME");
    fs::remove_file(&p).unwrap();
    fs::write(&p, &bytes).unwrap();
    let mut r = TraceReader::open(&dir).unwrap();
    r.set_verify_cache(None);
    assert_eq!(
        r.file_path(&f).unwrap_err().to_string(),
        format!(
            "corrupt trace {}: the stored copy of /usr/bin/prog does not match its hash",
            dir.display()
        )
    );

    // A symlink, even to a file with the right content, is refused.
    fs::write(tmp.path().join("good"), b"what time is it").unwrap();
    fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("good"), &p).unwrap();
    assert_eq!(
        r.file_path(&f).unwrap_err().to_string(),
        format!(
            "corrupt trace {}: the stored copy of /usr/bin/prog is a symlink",
            dir.display()
        )
    );

    // The trace directory itself may be reached through a symlink (`latest-trace` is one).
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let r = TraceReader::open(&link).unwrap();
    assert_eq!(r.meta().exit, Some(ExitStatus::Exited(0)));

    // So are symlinked data files.
    let events = dir.join("events");
    fs::rename(&events, tmp.path().join("events")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("events"), &events).unwrap();
    let err = TraceReader::open(&dir).unwrap_err().to_string();
    assert!(err.ends_with(": the events file is a symlink"), "{err}");
    fs::remove_file(&events).unwrap();
    fs::rename(tmp.path().join("events"), &events).unwrap();
    let index = dir.join("index.sqlite");
    fs::rename(&index, tmp.path().join("index.sqlite")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("index.sqlite"), &index).unwrap();
    let err = TraceReader::open(&dir).unwrap_err().to_string();
    assert!(err.ends_with(": the index is a symlink"), "{err}");
}

/// A regular file under a system prefix, found through a symlink when possible.
fn system_file() -> Option<PathBuf> {
    [
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/bin/env",
        "/bin/sh",
        "/usr/bin/true",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| fs::metadata(p).map(|m| m.is_file()).unwrap_or(false))
}

#[test]
fn file_store_links_system_files_when_it_can() {
    let Some(src) = system_file() else {
        eprintln!("no system file to test with");
        return;
    };
    let (_tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let f = w.store_file(&src, &src.to_string_lossy()).unwrap();
    let again = w.store_file(&src, "/other/name").unwrap();
    assert_eq!(again.hash, f.hash);
    w.finish(ExitStatus::Exited(0)).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    let stored = r.stored_files().unwrap();
    assert_eq!(stored.len(), 1);
    let p = r.file_path(&f).unwrap();
    let m = fs::symlink_metadata(&p).unwrap();
    assert!(m.is_file(), "stored file must not be a symlink");
    let linked = m.ino() == fs::metadata(&src).unwrap().ino();
    assert_eq!(stored[0].1, if linked { "link" } else { "copy" });
    assert_eq!(
        f.hash,
        blake3::hash(&fs::read(&src).unwrap()).to_hex().to_string()
    );
    eprintln!("{} stored as {}", src.display(), stored[0].1);
}

#[test]
fn root_names_traces_and_tracks_the_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().join("root");
    let root = TraceRoot::open(&root_dir).unwrap();
    assert_eq!(mode(&root_dir), 0o700);
    assert_eq!(root.path(), root_dir);
    let err = root.latest().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no traces yet in {}; record one with `deja rec PROG`",
            root_dir.display()
        )
    );
    assert!(matches!(
        root.resolve(None),
        Err(TraceError::NoTraces { .. })
    ));

    let d0 = root.new_trace_dir("/usr/bin/ls").unwrap();
    let d1 = root.new_trace_dir("ls").unwrap();
    let odd = root.new_trace_dir("../we ird/").unwrap();
    assert_eq!(d0, root_dir.join("ls-0"));
    assert_eq!(d1, root_dir.join("ls-1"));
    assert_eq!(odd, root_dir.join("we_ird-0"));
    assert_eq!(mode(&d0), 0o700);

    for (d, t) in [(&d1, 200), (&d0, 100)] {
        let m = TraceMeta {
            start_time_unix: t,
            ..meta()
        };
        TraceWriter::create(d, &m)
            .unwrap()
            .finish(ExitStatus::Exited(0))
            .unwrap();
        root.set_latest(d).unwrap();
    }
    assert_eq!(root.latest().unwrap(), d0);
    assert_eq!(
        fs::read_link(root_dir.join(LATEST_LINK)).unwrap(),
        PathBuf::from("ls-0")
    );
    root.set_latest(&d1).unwrap();
    assert_eq!(root.latest().unwrap(), d1);
    assert_eq!(root.resolve(None).unwrap(), d1);
    assert_eq!(root.resolve(Some("ls-0")).unwrap(), d0);
    assert_eq!(root.resolve(Some(&d0.to_string_lossy())).unwrap(), d0);
    let err = root.resolve(Some("nope")).unwrap_err();
    assert!(matches!(err, TraceError::TraceNotFound { .. }));
    assert!(err.to_string().contains("\"nope\""), "{err}");

    let list = root.list().unwrap();
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    // we_ird-0 is not a trace: it sorts by its mtime (now), after the 1970s traces.
    assert_eq!(names, ["ls-0", "ls-1", "we_ird-0"]);
    assert_eq!(list[0].meta.as_ref().unwrap().start_time_unix, 100);
    assert!(list[2]
        .meta
        .as_ref()
        .unwrap_err()
        .contains("not a deja trace"));

    // A trace outside the root is linked absolutely.
    let outside = tmp.path().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    root.set_latest(&outside).unwrap();
    assert_eq!(root.latest().unwrap(), outside);
    fs::remove_dir(&outside).unwrap();
    assert!(matches!(
        root.latest(),
        Err(TraceError::LatestMissing { .. })
    ));
    // No temporary links are left behind.
    assert_eq!(fs::read_dir(&root_dir).unwrap().count(), 4);
}

#[test]
fn handles_are_send() {
    fn send<T: Send>() {}
    send::<TraceWriter>();
    send::<TraceReader>();
    send::<EventIter>();
    send::<TraceError>();
    fn sync<T: Sync>() {}
    sync::<TraceError>();
}

/// A root's file pool: a file stored by one trace, unchanged for a while, is linked into the
/// next trace from the pool (same content, same hash, not hashed again); a file changed just
/// now is never taken from it.
#[test]
fn file_pool_shares_settled_files_between_traces() {
    // A file of this crate: copied (not a system file), unchanged since the checkout.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let tmp = tempfile::tempdir().unwrap();
    let pool = trace_format::pool::Pool::open(&tmp.path().join(".pool")).unwrap();
    let fresh = tmp.path().join("fresh.bin");
    fs::write(&fresh, b"written just now").unwrap();
    let mut hows = Vec::new();
    let mut hashes = Vec::new();
    for n in 0..2 {
        let dir = tmp.path().join(format!("t{n}"));
        let mut w = TraceWriter::create(&dir, &meta()).unwrap();
        w.use_pool(pool.clone());
        let f = w.store_file(&src, &src.to_string_lossy()).unwrap();
        let g = w.store_file(&fresh, "/fresh").unwrap();
        hashes.push((f.hash.clone(), g.hash.clone()));
        w.finish(ExitStatus::Exited(0)).unwrap();
        let r = TraceReader::open(&dir).unwrap();
        let stored = r.stored_files().unwrap();
        let how = |h: &str| stored.iter().find(|(f, _)| f.hash == h).unwrap().1.clone();
        hows.push((how(&f.hash), how(&g.hash)));
        assert_eq!(
            fs::read(r.file_path(&f).unwrap()).unwrap(),
            fs::read(&src).unwrap()
        );
    }
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(hows[1].0, "pool", "{hows:?}");
    assert_eq!(
        hows[1].1, "copy",
        "a file changed less than 2 s ago: {hows:?}"
    );
}
