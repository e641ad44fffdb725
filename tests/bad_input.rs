//! Bad input: programs deja cannot record, damaged or foreign traces, and a recording whose
//! recorder was killed. deja must answer with a `deja: ...` error and a non-zero status, and
//! never panic.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn missing_program() {
    let ctx = Ctx::new();
    let (trace, out) = ctx.record("/nonexistent/deja-no-such-program", &[]);
    assert_one_line_error("rec of a missing path", &out);
    assert_stderr_mentions(
        "rec of a missing path",
        &out,
        &["No such file", "not found"],
    );
    assert!(
        !trace.join("events").exists(),
        "a trace was written for a program that never ran"
    );

    // A bare name that is not on PATH.
    let (_trace, out) = ctx.record("deja-no-such-program-on-path", &[]);
    assert_one_line_error("rec of a missing command", &out);
    assert_stderr_mentions(
        "rec of a missing command",
        &out,
        &["No such file", "not found"],
    );
}

#[test]
fn non_executable_file() {
    let ctx = Ctx::new();
    let copy = ctx.dir().join("not-executable");
    std::fs::copy(program("exit3"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_trace, out) = ctx.record(&copy, &[]);
    assert_one_line_error("rec of a non-executable file", &out);
    assert_stderr_mentions(
        "rec of a non-executable file",
        &out,
        &["permission denied", "not executable"],
    );
}

#[test]
fn thirty_two_bit_binary() {
    let ctx = Ctx::new();
    let prog = make_32bit_binary(ctx.dir());
    let (_trace, out) = ctx.record(&prog, &[]);
    assert_one_line_error("rec of a 32-bit binary", &out);
    assert_stderr_mentions("rec of a 32-bit binary", &out, &["32-bit"]);
}

#[test]
fn text_file_without_shebang() {
    let ctx = Ctx::new();
    let script = ctx.dir().join("script.txt");
    std::fs::write(&script, "echo this is not a program\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_trace, out) = ctx.record(&script, &[]);
    assert_one_line_error("rec of a text file", &out);
    assert_stderr_mentions(
        "rec of a text file",
        &out,
        &["exec format error", "format", "ELF"],
    );
}

/// Records a small program that makes a good number of events; returns (ctx, trace, rec output).
fn good_trace() -> (Ctx, std::path::PathBuf, std::process::Output) {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("pipe"), &[]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    assert!(
        trace.join("events").is_file(),
        "trace has no `events` file: {}",
        trace.display()
    );
    (ctx, trace, rec)
}

/// Replay, info and dump of a damaged trace: replay fails cleanly; dump fails cleanly on a
/// corrupt trace (`dump_must_fail`) and may print the intact prefix of a truncated one; info may
/// succeed (it may only read metadata). Nothing panics.
fn check_damaged(ctx: &Ctx, trace: &Path, what: &str, dump_must_fail: bool) {
    let out = ctx.replay(trace);
    assert_deja_error(&format!("replay -a of a {what} trace"), &out);
    let out = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
    if dump_must_fail {
        assert_deja_error(&format!("dump of a {what} trace"), &out);
    } else {
        assert_no_panic(&format!("dump of a {what} trace"), &out);
    }
    let out = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str()]);
    assert_no_panic(&format!("info of a {what} trace"), &out);
    let out = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str(), OsStr::new("--json")]);
    assert_no_panic(&format!("info --json of a {what} trace"), &out);
}

#[test]
fn corrupt_trace() {
    let (ctx, trace, _rec) = good_trace();
    let events = trace.join("events");
    let mut bytes = std::fs::read(&events).unwrap();
    assert!(
        bytes.len() >= 16,
        "events file suspiciously small ({} bytes)",
        bytes.len()
    );
    let mid = bytes.len() / 2;
    let span = (bytes.len() / 8).clamp(8, 64);
    for b in &mut bytes[mid - span / 2..mid + span / 2] {
        *b ^= 0xa5;
    }
    std::fs::write(&events, &bytes).unwrap();
    check_damaged(&ctx, &trace, "corrupt", true);
}

#[test]
fn truncated_trace() {
    let (ctx, trace, _rec) = good_trace();
    let events = trace.join("events");
    let bytes = std::fs::read(&events).unwrap();
    std::fs::write(&events, &bytes[..bytes.len() / 2]).unwrap();
    check_damaged(&ctx, &trace, "truncated", false);
}

#[test]
fn directory_that_is_not_a_trace() {
    let ctx = Ctx::new();
    let empty = ctx.dir().join("empty-dir");
    std::fs::create_dir(&empty).unwrap();
    let junk = ctx.dir().join("junk-dir");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("events"), b"this is not an event stream\n").unwrap();
    std::fs::write(junk.join("README"), b"hello\n").unwrap();
    let missing = ctx.dir().join("does-not-exist");
    for dir in [&empty, &junk, &missing] {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let out = ctx.replay(dir);
        assert_one_line_error(&format!("replay -a {name}"), &out);
        for cmd in ["info", "dump"] {
            let out = ctx.run_deja(&[OsStr::new(cmd), dir.as_os_str()]);
            assert_one_line_error(&format!("{cmd} {name}"), &out);
        }
    }
    // A regular file instead of a directory.
    let file = ctx.dir().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let out = ctx.replay(&file);
    assert_one_line_error("replay -a of a plain file", &out);
}

#[test]
fn no_trace_recorded_yet() {
    // `deja replay -a` without TRACE and with no recordings at all.
    let ctx = Ctx::new();
    let out = ctx.replay_latest();
    assert_one_line_error("replay -a with no traces", &out);
}

#[test]
fn usage_errors_do_not_panic() {
    let ctx = Ctx::new();
    for args in [
        &["rec"][..],
        &["replay", "-a", "a", "b"],
        &["info"],
        &["no-such-subcommand"],
        &["rec", "-o"],
    ] {
        let out = ctx.run_deja(args);
        assert_no_panic(&format!("deja {args:?}"), &out);
        assert!(
            !out.status.success(),
            "deja {args:?} should fail\n{}",
            describe("usage", &out)
        );
    }
}

#[test]
fn killed_recorder_leaves_incomplete_trace() {
    killed_recording_replays_to_its_end(&program("slow"), "slow: started pid ");
}

/// The same with a thread and a child process alive when the recorder dies.
#[test]
fn killed_recorder_of_a_process_tree_leaves_incomplete_trace() {
    killed_recording_replays_to_its_end(&threaded("slow_tree"), "slow_tree: started pid ");
}

/// Kills `child` (started by `spawn_captured`) and its process group, and reaps it.
fn abandon(child: &mut std::process::Child) {
    kill_group(child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// Records `slow` (which prints a line starting with `first_prefix` and its pid, then sleeps),
/// kills the recorder, and checks that the trace replays faithfully up to its end and says it
/// is incomplete, and that `info` and `dump` still read it.
fn killed_recording_replays_to_its_end(slow: &Path, first_prefix: &str) {
    let ctx = Ctx::new();
    let trace = ctx.fresh_path("trace");
    let mut cmd = ctx.deja();
    cmd.arg("rec").arg("-o").arg(&trace).arg(slow);
    let mut child = spawn_captured(&mut cmd);
    let pgid = child.id();

    // Wait for the program's first line to come through deja.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let first = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) if !l.is_empty() => l,
        other => {
            abandon(&mut child);
            panic!(
                "no first line from `deja rec {}` within 30 s: {other:?}",
                slow.display()
            );
        }
    };
    assert!(
        first.starts_with(first_prefix),
        "unexpected first line {first:?}"
    );
    // Wait until the line's write is in the trace (the recorder writes its events out on a
    // 250 ms timer while the tracee sleeps), then kill the recorder.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx.stdout_writes(&trace).is_empty() {
        if Instant::now() > deadline {
            abandon(&mut child);
            panic!(
                "the write of {first:?} did not reach the trace of `deja rec {}` within 30 s",
                slow.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL deja rec");
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Clean up the tracee if it survived its tracer (it is ours: same process group, and its
    // pid is on its first line).
    kill_group(pgid);
    if let Ok(pid) = first.trim().rsplit(' ').next().unwrap().parse::<i32>() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_deref() == Some(slow) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    let out = ctx.replay(&trace);
    assert_deja_error("replay -a of a killed recording", &out);
    assert_stderr_mentions("replay -a of a killed recording", &out, &["incomplete"]);
    assert!(
        stdout_str(&out).starts_with(&first),
        "replay of the incomplete recording should still echo the first line {first:?}\n{}",
        describe("replay", &out)
    );

    let info = ctx.info_json(&trace);
    assert_eq!(
        info["complete"],
        serde_json::Value::Bool(false),
        "info --json: {info}"
    );
    let out = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str()]);
    assert_no_panic("info of a killed recording", &out);
    assert!(out.status.success(), "{}", describe("info", &out));
    let out = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
    assert_no_panic("dump of a killed recording", &out);
}

/// A replay whose program no longer does what the recording did must stop at the first
/// mismatching event and say what was expected and what was found.
#[test]
fn divergence_is_reported_with_the_event_and_both_sides() {
    let recorded = build_program("variant", &["-DVARIANT=1"], "variant1");
    let swapped = build_program("variant", &["-DVARIANT=2"], "variant2");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&recorded, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    // Swap the trace's copy of the executable for the other build.
    swap_trace_file(&trace, &ctx.trace_root(), &recorded, &swapped);
    assert_variant_diverged(&ctx.replay(&trace));
}
