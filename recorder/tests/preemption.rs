//! Recordings that only end if the recorder preempts threads spinning in user code and delivers
//! signals in the middle of it, and what their points say.
//!
//! Not under the standard test harness: the recorder's timer signal (`SIGALRM`) interrupts its
//! waits only if every thread but its tracer thread blocks it, the harness's main thread
//! included; `main` blocks it before any other thread exists, and runs the tests one by one
//! (the timer is per process). `cargo test -p recorder --test preemption [FILTER]`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use recorder::{record, set_ticks_blocked, RecordOptions, TraceDest, STOP_AT_SYSCALLS_ENV};
use trace_format::{Event, ExitStatus, Point, SignalOrigin, TraceReader};

/// How long a recording may take before the test fails (instead of hanging).
const RECORDING_TIMEOUT: Duration = Duration::from_secs(30);

/// `rip` in the register words of a point.
const RIP: usize = 16;

fn main() {
    set_ticks_blocked(true);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 4] = [
        ("spinning_threads_take_turns", spinning_threads_take_turns),
        ("timer_signal_lands_mid_loop", timer_signal_lands_mid_loop),
        ("pending_read_is_excluded", pending_read_is_excluded),
        (
            "interrupted_syscalls_are_recorded_once",
            interrupted_syscalls_are_recorded_once,
        ),
    ];
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        test();
        eprintln!("test {name} ... ok");
        ran += 1;
    }
    eprintln!("test result: ok. {ran} passed");
}

/// Two threads hand a token to each other by spinning on a variable, which only works if the
/// recorder takes the CPU from the one spinning: each such preemption is a `Preempt` event
/// followed, later, by the same task's `Resume`, with nothing of that task in between.
fn spinning_threads_take_turns() {
    let prog = build("token_ring");
    let (status, events) = record_ok(&prog, &["4"]);
    assert_eq!(status, ExitStatus::Exited(0));
    let preempts = events
        .iter()
        .filter(|e| matches!(e, Event::Preempt(_)))
        .count();
    // Each hand-over but the other thread's last one (after which it exits) needs the spinning
    // thread off the CPU.
    assert!(preempts >= 7, "only {preempts} preemptions");
    for (i, e) in events.iter().enumerate() {
        let Event::Preempt(p) = e else { continue };
        check_point(&p.point);
        let next = events[i + 1..].iter().find(|n| n.tid() == p.tid);
        assert!(
            matches!(next, Some(Event::Resume(_)) | Some(Event::Exit(_))),
            "event {i}: the preempted task {} goes on with {next:?}",
            p.tid
        );
    }
    for (i, e) in events.iter().enumerate() {
        let Event::Resume(r) = e else { continue };
        let before = events[..i].iter().rev().find(|b| b.tid() == r.tid);
        assert!(
            matches!(before, Some(Event::Preempt(_))),
            "event {i}: task {} resumes after {before:?}",
            r.tid
        );
    }
}

/// A timer signal whose handler ends a loop without syscalls: it is delivered in the middle of
/// the loop (not held back to a next syscall that never comes), recorded with its point.
fn timer_signal_lands_mid_loop() {
    let prog = build("alarm_spin");
    let (status, events) = record_ok(&prog, &[]);
    assert_eq!(status, ExitStatus::Exited(0));
    let signal = events
        .iter()
        .find_map(|e| match e {
            Event::Signal(s) if s.signo == libc::SIGALRM => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SIGALRM in {events:#?}"));
    assert_eq!(signal.origin, SignalOrigin::Async);
    assert!(signal.delivered);
    let point = signal
        .point
        .as_ref()
        .unwrap_or_else(|| panic!("SIGALRM recorded without its point: {signal:?}"));
    assert_eq!(point.regs[RIP], signal.rip);
    check_point(point);
    // The siginfo is the kernel's timer one, not a resend's.
    let code = i32::from_le_bytes([
        signal.siginfo[8],
        signal.siginfo[9],
        signal.siginfo[10],
        signal.siginfo[11],
    ]);
    assert_eq!(code, libc::SI_KERNEL, "si_code of the timer's SIGALRM");
}

/// While a thread blocks in `read(fd, buf, 4096)`, the points of the other threads of its
/// process leave `[buf, buf + 4096)` out of their digest: the kernel may fill it any time
/// before the read's event, which comes later in the trace.
fn pending_read_is_excluded() {
    let prog = build("blocked_read");
    let (status, events) = record_ok(&prog, &[]);
    assert_eq!(status, ExitStatus::Exited(0));
    let (at, read) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e {
            Event::Syscall(s) if s.nr == libc::SYS_read as u64 && s.args[2] == 4096 => Some((i, s)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no read of 4096 bytes in {events:#?}"));
    assert_eq!(read.result, 5);
    let (buf, end) = (read.args[1], read.args[1] + 4096);
    let excluding = events[..at]
        .iter()
        .filter_map(|e| match e {
            Event::Preempt(p) if p.tid != read.tid => Some(&p.point),
            _ => None,
        })
        .filter(|p| {
            p.excluded
                .iter()
                .any(|&(s, e)| s <= buf && end <= e && e - s < 2 * 4096)
        })
        .count();
    assert!(
        excluding > 0,
        "no preemption point before the read leaves {buf:#x}..{end:#x} out: {:#?}",
        events[..at]
            .iter()
            .filter_map(|e| match e {
                Event::Preempt(p) => Some(&p.point.excluded),
                _ => None,
            })
            .collect::<Vec<_>>()
    );
}

/// With the preemption `SIGSTOP` sent at every syscall entry (as it sometimes lands when it
/// races with one), blocking calls are interrupted and restarted by the kernel: each still
/// makes exactly one event, with its real result and its own number (not `restart_syscall`).
/// A call a program's signal interrupts too (`sigsuspend` with `SIGUSR1` or `SIGWINCH`
/// pending) is recorded with its restart code, followed by that signal.
fn interrupted_syscalls_are_recorded_once() {
    let prog = build("restarts");
    std::env::set_var(STOP_AT_SYSCALLS_ENV, "1");
    let recorded = record_ok(&prog, &[]);
    std::env::remove_var(STOP_AT_SYSCALLS_ENV);
    let (status, events) = recorded;
    assert_eq!(status, ExitStatus::Exited(0));
    let syscalls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Syscall(s) => Some(s),
            _ => None,
        })
        .collect();
    for (i, e) in events.iter().enumerate() {
        let Event::Syscall(s) = e else { continue };
        assert_ne!(s.nr, libc::SYS_restart_syscall as u64, "{s:?}");
        if !matches!(s.result, -516 | -514 | -513 | -512) {
            continue;
        }
        let next = events[i + 1..].iter().find(|n| n.tid() == s.tid);
        assert!(
            matches!(next, Some(Event::Signal(g))
                if [libc::SIGUSR1, libc::SIGWINCH].contains(&g.signo) && g.point.is_none()),
            "event {i}: an interrupted attempt without the signal that interrupted it: {s:?}, \
             then {next:?}"
        );
    }
    let suspends = syscalls
        .iter()
        .filter(|s| s.nr == libc::SYS_rt_sigsuspend as u64)
        .count();
    assert_eq!(suspends, 6);
    let count = |nr: i64, ok: &dyn Fn(i64) -> bool| {
        syscalls
            .iter()
            .filter(|s| s.nr == nr as u64 && ok(s.result))
            .count()
    };
    assert_eq!(count(libc::SYS_clock_nanosleep, &|r| r == 0), 20);
    // The sleeper's one-byte reads of the pipe, each of which got its byte: on the ptrace path
    // when the byte was not there yet, buffered by the in-process library when it was.
    let reads = syscalls
        .iter()
        .filter(|s| s.nr == libc::SYS_read as u64 && s.args[2] == 1)
        .map(|s| s.result)
        .chain(events.iter().flat_map(|e| match e {
            Event::Buffered(b) => {
                let trace_format::Data::Inline(bytes) = &b.records else {
                    panic!("records not inline");
                };
                syscallbuf::heads(bytes)
                    .expect("the buffered records")
                    .iter()
                    .filter(|c| c.nr == libc::SYS_read as u64 && c.args[2] == 1)
                    .map(|c| c.result)
                    .collect()
            }
            _ => Vec::new(),
        }))
        .collect::<Vec<_>>();
    assert_eq!(reads.len(), 20, "{reads:#?}");
    assert!(reads.iter().all(|&r| r == 1), "{reads:#?}");
}

/// What every point must hold.
fn check_point(p: &Point) {
    assert!(!p.fpregs.is_empty(), "a point without FP state");
    assert!(
        p.excluded.windows(2).all(|w| w[0].1 < w[1].0),
        "excluded ranges not sorted and merged: {:?}",
        p.excluded
    );
    assert!(p.excluded.iter().all(|(s, e)| s < e));
}

/// Records `prog args` into a fresh directory and returns how it ended and its events; fails
/// the test if the recording fails or takes longer than [`RECORDING_TIMEOUT`].
fn record_ok(prog: &Path, args: &[&str]) -> (ExitStatus, Vec<Event>) {
    let name = prog
        .file_name()
        .map_or("trace".into(), |n| n.to_os_string());
    let dir = tmp_dir().join("traces").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().expect("a parent")).expect("creating the trace root");
    let opts = RecordOptions {
        program: prog.to_string_lossy().into_owned(),
        args: args.iter().map(|a| a.to_string()).collect(),
        dest: TraceDest::Dir(dir.clone()),
        wait_all: false,
        syscall_buffer: true,
        chaos: None,
        parallel: true,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The program inherits this thread's signal mask: as a user's, without SIGALRM
        // blocked (`record` blocks it here itself while it records).
        set_ticks_blocked(false);
        let _ = tx.send(
            record(&opts)
                .map(|o| o.status)
                .map_err(|e| format!("{e:#}")),
        );
    });
    let status = rx
        .recv_timeout(RECORDING_TIMEOUT)
        .unwrap_or_else(|_| {
            panic!(
                "recording {} took over {RECORDING_TIMEOUT:?}",
                prog.display()
            )
        })
        .unwrap_or_else(|e| panic!("recording {} failed: {e}", prog.display()));
    let reader = TraceReader::open(&dir).expect("opening the trace");
    let mut events = reader
        .events()
        .expect("reading the events")
        .collect::<Result<Vec<_>, _>>()
        .expect("reading the events");
    // Buffered syscalls' records inline, for the tests to read without the trace.
    for e in &mut events {
        if let Event::Buffered(b) = e {
            let bytes = reader
                .read_data(&b.records)
                .expect("reading buffered records");
            b.records = trace_format::Data::Inline(bytes);
        }
    }
    (status, events)
}

/// Compiles `tests/programs/NAME.c` (with `-pthread`) once per test run.
fn build(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(format!("{name}.c"));
    let out = tmp_dir().join(name);
    let status = Command::new("gcc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("these tests need gcc: {e}"));
    assert!(status.success(), "gcc failed on {}", src.display());
    out
}

fn tmp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recorder-preemption");
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    dir
}
