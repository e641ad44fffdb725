//! A trace written on a file system that fills up keeps every complete event that fits: the
//! reserve makes room for the chunk being written and the index, then smaller and smaller
//! chunks fill what is left, and the index says how many events the trace holds and why it
//! stops there.

use std::path::{Path, PathBuf};

use trace_format::*;

mod common;
use common::noise;

/// Event `i`: a syscall that wrote 12 KiB of noise (inline: below [`INLINE_MAX`]).
fn event(i: u64) -> Event {
    Event::Syscall(SyscallEvent {
        tid: 100,
        nr: i,
        args: [0; 6],
        rip: 0x401000,
        regs_digest: i,
        result: 0,
        writes: vec![MemWrite {
            addr: 0x10000,
            data: Data::Inline(noise(i + 1, 12 * 1024)),
        }],
        mapped_file: None,
        file_effect: None,
        echo: None,
    })
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                eprintln!("skipped: cannot mount a tmpfs here: {other:?}");
                None
            }
        }
    }

    /// Bytes still free.
    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_keeps_every_complete_event_that_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&tmp.path().join("small"), "2M") else {
        return;
    };
    let dir = fs.0.join("trace");
    let mut w = TraceWriter::create(&dir, &TraceMeta::default()).unwrap();
    assert!(recording_in_progress(&dir));
    let mut pushed = 0u64;
    let err = loop {
        if let Err(e) = w.push(event(pushed)) {
            break e;
        }
        pushed += 1;
        if pushed % 8 == 0 {
            if let Err(e) = w.flush() {
                break e;
            }
        }
        assert!(pushed < 10_000, "2 MiB never filled up");
    };
    let full = |e: &str| e.contains("No space left") || e.contains("disk is full");
    assert!(full(&err.to_string()), "{err}");
    let kept = w
        .stop(Stopped::Error(err.to_string()), Some(ExitStatus::Exited(0)))
        .unwrap();
    assert!(!recording_in_progress(&dir));
    drop(w);
    assert!(!dir.join(".reserve").exists() && !dir.join(".reserve-end").exists());
    // Events of about 12 KiB each filled the disk: what is left is the reserve kept for the
    // final metadata (128 KiB, released to write it), less than one event and the index's
    // growth.
    assert!(
        fs.free() < (128 + 64) * 1024,
        "{} bytes left free after keeping {kept} events",
        fs.free()
    );
    assert!(kept > 100 && kept <= pushed, "kept {kept} of {pushed}");

    let r = TraceReader::open(&dir).unwrap();
    let m = r.meta();
    assert_eq!(m.event_count, kept);
    assert!(!m.complete);
    assert_eq!(m.exit, Some(ExitStatus::Exited(0)));
    assert!(matches!(&m.stopped, Some(Stopped::Error(e)) if full(e)));
    // The writer flushed every 8 events; the chunk that did not fit was cut in halves.
    let sizes: Vec<u64> = r.chunks().unwrap().iter().map(|c| c.events).collect();
    assert_eq!(sizes.iter().sum::<u64>(), kept, "{sizes:?}");
    assert!(sizes.iter().any(|&n| n < 8), "no smaller chunk: {sizes:?}");
    let events: Vec<Event> = r.events().unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(events.len() as u64, kept);
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev, &event(i as u64), "event {i}");
    }
}
