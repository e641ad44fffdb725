//! Bounded memory for any trace: forged lengths and damaged files cost at most a fixed bound
//! (or what the trace's files justify) before their clean "corrupt trace" error, and a short
//! mutation pass over real trace files (`DEJA_FUZZ_ITERS` makes it longer) finds no panic,
//! no unclean error and no allocation beyond the bound.
//!
//! Allocation is measured by a counting global allocator, per thread (tests run in parallel).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bincode::Options;
use trace_format::*;

/// The system allocator, counting the bytes each thread holds and its peak.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: nothing is counted while a thread's locals are torn down.
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call goes to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`; returns its result and the most bytes this thread held beyond what it held
/// before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = HELD.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

const MIB: usize = 1 << 20;

/// What reading a chunk may cost at most, whatever its bytes say: the format's bound on a
/// chunk's decompressed events, the events decoded from them, and small change.
const READ_BOUND: usize = 64 * MIB;

fn meta() -> TraceMeta {
    TraceMeta {
        argv: vec!["/bin/prog".into()],
        exe: "/bin/prog".into(),
        ..TraceMeta::default()
    }
}

fn syscall(nr: u64, writes: Vec<MemWrite>) -> Event {
    Event::Syscall(SyscallEvent {
        tid: 1,
        nr,
        args: [1, 2, 3, 4, 5, 6],
        rip: 0x401000,
        regs_digest: 7,
        result: 0,
        writes,
        mapped_file: None,
        file_effect: None,
        echo: None,
    })
}

/// A finished trace of one event, whose events file the tests replace.
fn one_event_trace() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    w.push(syscall(0, vec![])).unwrap();
    w.finish(ExitStatus::Exited(0)).unwrap();
    (tmp, dir)
}

/// The first four bytes of the BLAKE3 hash, as the format's headers hold them.
fn checksum(bytes: &[u8]) -> u32 {
    let h = blake3::hash(bytes);
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// An events chunk of `events` events whose zstd frame is `frame`, with a right checksum
/// (what someone forging a trace writes).
fn chunk(frame: &[u8], events: u32) -> Vec<u8> {
    let mut c = b"DJCK".to_vec();
    c.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    c.extend_from_slice(&events.to_le_bytes());
    c.extend_from_slice(&0u64.to_le_bytes());
    c.extend_from_slice(&checksum(frame).to_le_bytes());
    c.extend_from_slice(frame);
    c
}

/// A syscall event's encoding (length prefix and bincode) with one inline payload of `n`
/// zero bytes, compressed as one zstd frame without ever holding the payload: a few KiB
/// that claim (and really decompress to) `n` bytes. `declare` puts the size in the frame.
fn forged_frame(n: u64, declare: bool) -> Vec<u8> {
    let marker = vec![0xabu8; 1000];
    let template = syscall(
        0,
        vec![MemWrite {
            addr: 0,
            data: Data::Inline(marker.clone()),
        }],
    );
    let bytes = bincode::DefaultOptions::new().serialize(&template).unwrap();
    // bincode's varint: 251 then a u16 for 1000.
    let mut needle = vec![251u8, 0xe8, 0x03];
    needle.extend_from_slice(&marker);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the payload's encoding");
    let (prefix, suffix) = (&bytes[..at], &bytes[at + needle.len()..]);
    let body_len = prefix.len() as u64 + 9 + n + suffix.len() as u64;
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    if declare {
        enc.set_pledged_src_size(Some(4 + body_len)).unwrap();
        enc.include_contentsize(true).unwrap();
    }
    enc.write_all(&u32::try_from(body_len).unwrap().to_le_bytes())
        .unwrap();
    enc.write_all(prefix).unwrap();
    enc.write_all(&[253]).unwrap();
    enc.write_all(&n.to_le_bytes()).unwrap();
    let zeros = vec![0u8; MIB];
    let mut left = n;
    while left > 0 {
        let k = left.min(MIB as u64) as usize;
        enc.write_all(&zeros[..k]).unwrap();
        left -= k as u64;
    }
    enc.write_all(suffix).unwrap();
    enc.finish().unwrap()
}

/// Reads every event of the trace in `dir`; the first error, if any.
fn drain(dir: &Path) -> Result<usize, TraceError> {
    let r = TraceReader::open(dir)?;
    let mut n = 0;
    for ev in r.events()? {
        ev?;
        n += 1;
    }
    Ok(n)
}

fn assert_corrupt(res: Result<usize, TraceError>, needle: &str) {
    match res {
        Err(TraceError::Corrupt { what, .. }) => {
            assert!(what.contains(needle), "{what:?} lacks {needle:?}")
        }
        other => panic!("expected Corrupt({needle}), got {other:?}"),
    }
}

/// The forged chunk: some KiB of zstd that decompress to 1 GiB of one event's
/// payload. Refused as corrupt, at a cost within the bound, whether or not the frame
/// declares its size.
#[test]
fn a_forged_chunk_claiming_a_gigabyte_is_refused_within_the_bound() {
    for declare in [false, true] {
        let (_tmp, dir) = one_event_trace();
        let frame = forged_frame(1 << 30, declare);
        assert!(frame.len() < 200 * 1024, "{} bytes", frame.len());
        fs::write(dir.join("events"), chunk(&frame, 1)).unwrap();
        let (res, peak) = peak_of(|| drain(&dir));
        assert_corrupt(res, "more than");
        assert!(
            peak < READ_BOUND,
            "reading the forged chunk took {} MiB",
            peak / MIB
        );
    }
}

/// An event length prefix or an event count beyond what the chunk's bytes hold are refused
/// before anything of their size is allocated.
#[test]
fn forged_event_lengths_and_counts_are_refused() {
    let (_tmp, dir) = one_event_trace();
    let mut raw = u32::MAX.to_le_bytes().to_vec();
    raw.extend_from_slice(&[0; 64]);
    let frame = zstd::bulk::compress(&raw, 1).unwrap();
    fs::write(dir.join("events"), chunk(&frame, 1)).unwrap();
    let (res, peak) = peak_of(|| drain(&dir));
    assert_corrupt(res, "more than an event may take");
    assert!(peak < MIB, "{peak} bytes");
    fs::write(dir.join("events"), chunk(&frame, u32::MAX)).unwrap();
    let (res, peak) = peak_of(|| drain(&dir));
    assert_corrupt(res, "cannot hold them");
    assert!(peak < MIB, "{peak} bytes");
}

/// A blob whose header claims more bytes than its frame can decompress to, or than the
/// frame declares, is refused before decompressing; one that really holds a gigabyte (what
/// its event says, and its frame can hold) costs what it holds, not more.
#[test]
fn blob_lengths_are_bounded_by_their_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let payload = vec![7u8; 3 * INLINE_MAX];
    let d = w.data(&payload).unwrap();
    w.push(syscall(0, vec![MemWrite { addr: 0, data: d }]))
        .unwrap();
    w.finish(ExitStatus::Exited(0)).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    let Some(Ok(Event::Syscall(ev))) = r.events().unwrap().next() else {
        panic!("the syscall event");
    };
    let blob = ev.writes[0].data.clone();
    assert!(matches!(blob, Data::Blob { .. }));
    assert_eq!(r.read_data(&blob).unwrap(), payload);
    let Data::Blob { offset, .. } = blob else {
        unreachable!()
    };
    let blobs = dir.join("blobs");
    let pristine = fs::read(&blobs).unwrap();
    let at = offset as usize;
    for claim in [1u64 << 40, 3 * INLINE_MAX as u64 + 1] {
        let mut bytes = pristine.clone();
        bytes[at + 12..at + 20].copy_from_slice(&claim.to_le_bytes());
        fs::write(&blobs, &bytes).unwrap();
        let forged = Data::Blob { offset, len: claim };
        let (res, peak) = peak_of(|| r.read_data(&forged));
        match res {
            Err(TraceError::Corrupt { what, .. }) => {
                assert!(
                    what.contains("can hold") || what.contains("declares"),
                    "{what}"
                )
            }
            other => panic!("expected a corrupt blob, got {:?}", other.map(|v| v.len())),
        }
        assert!(peak < MIB, "{peak} bytes");
    }
}

/// The writer never writes an event the reader would refuse: one whose payloads, each small
/// enough to travel inline, add up to more than an event may take moves them to the blob
/// file, and reads back the same.
#[test]
fn an_event_of_many_inline_payloads_moves_them_to_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let payload = vec![5u8; INLINE_MAX - 1];
    let writes: Vec<MemWrite> = (0..1000u64)
        .map(|i| MemWrite {
            addr: i << 16,
            data: Data::Inline(payload.clone()),
        })
        .collect();
    w.push(syscall(0, writes.clone())).unwrap();
    w.finish(ExitStatus::Exited(0)).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    let Some(Ok(Event::Syscall(ev))) = r.events().unwrap().next() else {
        panic!("the syscall event");
    };
    assert_eq!(ev.writes.len(), writes.len());
    for (got, want) in ev.writes.iter().zip(&writes) {
        assert!(matches!(got.data, Data::Blob { .. }));
        assert_eq!(got.addr, want.addr);
        assert_eq!(r.read_data(&got.data).unwrap(), payload);
    }
}

/// A small deterministic generator (xorshift), so that a failing iteration can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A trace of many kinds of events over several chunks, with blobs.
fn sample_trace(dir: &Path) {
    let mut w = TraceWriter::create(dir, &meta()).unwrap();
    for i in 0..60u64 {
        let len = [3usize, 100, 2 * INLINE_MAX][i as usize % 3];
        let bytes: Vec<u8> = (0..len).map(|k| (k as u64 * 31 + i) as u8).collect();
        let d = w.data(&bytes).unwrap();
        w.push(syscall(i, vec![MemWrite { addr: i, data: d }]))
            .unwrap();
        w.push(Event::Signal(SignalEvent {
            tid: 1,
            signo: 11,
            siginfo: vec![i as u8; 128],
            origin: SignalOrigin::Fault,
            rip: 0x1234,
            delivered: true,
            point: None,
        }))
        .unwrap();
        w.push(Event::Rdtsc(RdtscEvent {
            tid: 1,
            rip: 0x1240 + i,
            tsc: i * 1000,
            aux: Some(1),
        }))
        .unwrap();
        if i % 20 == 19 {
            w.flush().unwrap();
        }
    }
    w.finish(ExitStatus::Exited(0)).unwrap();
}

/// The chunks of an events file: (header, decompressed events).
fn split_chunks(events: &[u8]) -> Vec<([u8; 24], Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < events.len() {
        let mut h = [0u8; 24];
        h.copy_from_slice(&events[at..at + 24]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let frame = &events[at + 24..at + 24 + len];
        out.push((h, zstd::decode_all(frame).unwrap()));
        at += 24 + len;
    }
    out
}

/// Mutates `bytes` one of the ways damage or forgery would: flipped bytes, a cut, a length
/// or count field set huge, a run of random bytes.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    match rng.below(5) {
        0 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        2 => {
            // A little-endian length field inflated, or a bincode varint made a u64.
            let at = rng.below(bytes.len());
            let huge = [u32::MAX as u64, u64::MAX, 1 << 31, 1 << 40][rng.below(4)];
            let field = if rng.below(2) == 0 {
                let mut f = vec![253u8];
                f.extend_from_slice(&huge.to_le_bytes());
                f
            } else {
                (huge as u32).to_le_bytes().to_vec()
            };
            let end = (at + field.len()).min(bytes.len());
            bytes.splice(at..end, field);
        }
        3 => {
            let at = rng.below(bytes.len());
            let n = rng.below(16).min(bytes.len() - at);
            for b in &mut bytes[at..at + n] {
                *b = rng.next() as u8;
            }
        }
        _ => {
            let at = rng.below(bytes.len());
            bytes.insert(at, rng.next() as u8);
        }
    }
}

/// Reads every event and every blob they name; the first error. Panics (the test fails) on
/// an error that is not a clean corrupt-trace error.
fn read_everything(dir: &Path) -> Result<usize, TraceError> {
    let r = TraceReader::open(dir)?;
    let mut n = 0;
    for ev in r.events()? {
        if let Event::Syscall(e) = ev? {
            for w in &e.writes {
                r.read_data(&w.data)?;
            }
        }
        n += 1;
    }
    Ok(n)
}

/// The short mutation pass CI runs (`DEJA_FUZZ_ITERS=N` for a longer one, `DEJA_FUZZ_SEED`
/// for another sequence): real trace files damaged as a disk would, and forged as an
/// attacker would (events changed before compression, with right checksums), always read to
/// a clean error or to the end, within the memory bound.
#[test]
fn mutated_traces_read_cleanly_within_the_bound() {
    let iters: usize = std::env::var("DEJA_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("DEJA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_dea1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    sample_trace(&dir);
    assert_eq!(read_everything(&dir).unwrap(), 180);
    let events_path = dir.join("events");
    let blobs_path = dir.join("blobs");
    let events = fs::read(&events_path).unwrap();
    let blobs = fs::read(&blobs_path).unwrap();
    let chunks = split_chunks(&events);
    assert!(chunks.len() >= 3);
    let mut rng = Rng(seed | 1);
    let (mut clean, mut refused, mut worst) = (0, 0, 0);
    for iter in 0..iters {
        let (mut ev_bytes, mut blob_bytes) = (events.clone(), blobs.clone());
        match rng.below(3) {
            // Damage to the files as they are.
            0 => mutate(&mut rng, &mut ev_bytes),
            1 => mutate(&mut rng, &mut blob_bytes),
            // A forged chunk: events changed, then compressed and checksummed anew.
            _ => {
                ev_bytes.clear();
                let pick = rng.below(chunks.len());
                for (i, (h, raw)) in chunks.iter().enumerate() {
                    let mut raw = raw.clone();
                    let mut h = *h;
                    if i == pick {
                        mutate(&mut rng, &mut raw);
                        if rng.below(4) == 0 {
                            let count = [u32::MAX, 1 << 20, 0][rng.below(3)];
                            h[8..12].copy_from_slice(&count.to_le_bytes());
                        }
                    }
                    let frame = zstd::bulk::compress(&raw, 1).unwrap();
                    let mut c = chunk(&frame, u32::from_le_bytes([h[8], h[9], h[10], h[11]]));
                    c[12..20].copy_from_slice(&h[12..20]);
                    ev_bytes.extend_from_slice(&c);
                }
            }
        }
        fs::write(&events_path, &ev_bytes).unwrap();
        fs::write(&blobs_path, &blob_bytes).unwrap();
        let (res, peak) = peak_of(|| read_everything(&dir));
        worst = worst.max(peak);
        match res {
            Ok(_) => clean += 1,
            Err(TraceError::Corrupt { what, .. }) => {
                assert!(
                    !what.trim().is_empty(),
                    "iteration {iter}: an empty message"
                );
                refused += 1;
            }
            Err(e) => panic!("iteration {iter} (seed {seed}): not a corrupt-trace error: {e}"),
        }
        assert!(
            peak < READ_BOUND,
            "iteration {iter} (seed {seed}) took {} MiB",
            peak / MIB
        );
    }
    eprintln!(
        "{iters} mutated traces: {clean} read to the end, {refused} refused as corrupt; \
         at most {} KiB held",
        worst / 1024
    );
    assert!(refused > 0);
}
