//! Helpers shared by the trace-format integration tests.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use trace_format::*;

pub fn meta() -> TraceMeta {
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
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
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

pub fn file_ref(hash: &str) -> FileRef {
    FileRef {
        hash: hash.into(),
        path: "/bin/prog".into(),
        size: 42,
    }
}

pub fn syscall(tid: Tid, nr: u64, writes: Vec<MemWrite>) -> Event {
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
pub fn every_variant(w: &mut TraceWriter) -> (Vec<Event>, Vec<(Data, Vec<u8>)>) {
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
pub fn resolved(r: &TraceReader, mut ev: Event) -> Event {
    for d in ev.data_mut() {
        if matches!(d, Data::Blob { .. }) {
            *d = Data::Inline(r.read_data(d).unwrap());
        }
    }
    ev
}

pub fn read_all(dir: &Path) -> (Vec<Event>, bool) {
    let r = TraceReader::open(dir).unwrap();
    let mut it = r.events().unwrap();
    let evs: Vec<Event> = (&mut it).map(|e| e.unwrap()).collect();
    (evs, it.truncated())
}

/// Writes `n` syscall events of `payload` bytes each, flushing every `per_chunk` events.
pub fn write_chunked(
    dir: &Path,
    n: u64,
    per_chunk: u64,
    payload: usize,
) -> (TraceWriter, Vec<Event>) {
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

pub fn trace_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    (tmp, dir)
}

pub fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn assert_corrupt(res: Result<(), TraceError>, needle: &str) {
    match res {
        Err(TraceError::Corrupt { what, .. }) => {
            assert!(what.contains(needle), "{what:?} lacks {needle:?}")
        }
        other => panic!("expected Corrupt({needle}), got {other:?}"),
    }
}

/// Iterates everything; the first error, if any.
pub fn drain(dir: &Path) -> Result<(usize, bool), TraceError> {
    let r = TraceReader::open(dir)?;
    let mut it = r.events()?;
    let mut n = 0;
    for ev in &mut it {
        ev?;
        n += 1;
    }
    Ok((n, it.truncated()))
}
