//! The command-line contract: exit statuses, trace location and `latest-trace`, `ls`, `info`,
//! `dump`, trace permissions, and `replay` without `-a`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[test]
fn rec_exit_status_is_programs() {
    // Exits 3 natively and under rec; output passes through unchanged.
    assert_replays_like_native(program("exit3"), &[], 3, None);
}

/// The traces directly under `DEJA_TRACE_DIR` (excluding the `latest-trace` link).
fn traces_in(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        // Dot names are the root's own (the file pool), not traces.
        .filter(|p| p.file_name().unwrap() != "latest-trace" && p.is_dir())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn default_location_and_ls() {
    let ctx = Ctx::new();
    let rec = ctx.record_default(program("exit3"), &[]);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));
    let rec2 = ctx.record_default(program("spin"), &["1000"]);
    assert!(rec2.status.success(), "{}", describe("rec", &rec2));
    let traces = traces_in(&ctx.trace_root());
    assert_eq!(
        traces.len(),
        2,
        "expected two traces under DEJA_TRACE_DIR, found {traces:?}"
    );

    let out = ctx.run_deja(&["ls"]);
    assert_no_panic("ls", &out);
    assert!(out.status.success(), "{}", describe("ls", &out));
    let listing = stdout_str(&out);
    for t in &traces {
        let name = t.file_name().unwrap().to_string_lossy();
        assert!(
            listing.contains(&*name),
            "deja ls does not list {name}\n{}",
            describe("ls", &out)
        );
    }
}

#[test]
fn latest_trace_is_default() {
    let ctx = Ctx::new();
    let first = ctx.record_default(program("spin"), &["1000"]);
    assert!(first.status.success(), "{}", describe("rec", &first));
    let second = ctx.record_default(program("pipe"), &[]);
    assert!(second.status.success(), "{}", describe("rec", &second));

    let link = ctx.trace_root().join("latest-trace");
    let meta = std::fs::symlink_metadata(&link)
        .unwrap_or_else(|e| panic!("no latest-trace link in DEJA_TRACE_DIR ({e})"));
    assert!(
        meta.file_type().is_symlink(),
        "latest-trace is not a symlink"
    );
    let target = ctx.latest_trace().unwrap();
    assert!(
        target.join("events").is_file(),
        "latest-trace -> {} is not a trace",
        target.display()
    );

    // No TRACE: replays the latest (the second) recording.
    let replay = ctx.replay_latest();
    assert_replay_matches(&second, &replay);
    // The same as naming it.
    let named = ctx.replay(&target);
    assert_replay_matches(&second, &named);
}

#[test]
fn info_json_fields() {
    let ctx = Ctx::new();
    let prog = program("exit3");
    let (trace, rec) = ctx.record(&prog, &["arg one", "two"]);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));
    let info = ctx.info_json(&trace);

    let argv = info["argv"]
        .as_array()
        .unwrap_or_else(|| panic!("argv is not an array: {info}"));
    let argv: Vec<&str> = argv
        .iter()
        .map(|a| a.as_str().expect("argv entries are strings"))
        .collect();
    assert_eq!(argv.len(), 3, "argv: {argv:?}");
    assert!(argv[0].ends_with("exit3"), "argv[0]: {argv:?}");
    assert_eq!(&argv[1..], &["arg one", "two"]);

    assert_eq!(
        info["exit"],
        serde_json::json!({"Exited": 3}),
        "exit does not show status 3: {info}"
    );
    let count = info["event_count"]
        .as_u64()
        .unwrap_or_else(|| panic!("event_count not a number: {info}"));
    assert!(
        count >= 3,
        "event_count {count} too small (exec, a write, exit at least)"
    );
    assert_eq!(
        info["complete"],
        serde_json::Value::Bool(true),
        "complete: {info}"
    );

    // The human-readable form works too.
    let out = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str()]);
    assert_no_panic("info", &out);
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "{}",
        describe("info", &out)
    );
}

#[test]
fn ps_and_process_counts_of_one_process() {
    let ctx = Ctx::new();
    let prog = program("exit3");
    let (trace, rec) = ctx.record(&prog, &["arg", "two"]);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));

    // ps checks the header.
    let rows = ctx.ps(&trace);
    assert_eq!(rows.len(), 1, "ps: a header and one process\n{rows:#?}");
    let row = &rows[0];
    assert!(row.pid.parse::<i32>().is_ok(), "PID column: {row:?}");
    assert_eq!(
        [row.ppid.as_str(), row.exit.as_str()],
        ["--", "3"],
        "{row:?}"
    );
    let cmd: Vec<&str> = row.cmd.split_whitespace().collect();
    assert!(cmd[0].ends_with("exit3"), "CMD column: {row:?}");
    assert_eq!(&cmd[1..], &["arg", "two"], "{row:?}");

    let info = ctx.info_json(&trace);
    assert_eq!(info["processes"], serde_json::json!(1), "{info}");
    assert_eq!(info["threads"], serde_json::json!(1), "{info}");
}

#[test]
fn dump_events() {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("pipe"), &[]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let count = ctx.info_json(&trace)["event_count"]
        .as_u64()
        .expect("event_count");

    let out = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
    assert_no_panic("dump", &out);
    assert!(out.status.success(), "{}", describe("dump", &out));
    let text = stdout_str(&out);
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    assert!(
        lines >= count,
        "dump printed {lines} lines for {count} events\n{text}"
    );
    let lower = text.to_lowercase();
    assert!(lower.contains("exec"), "dump does not mention exec\n{text}");
    assert!(
        lower.contains("syscall"),
        "dump does not mention syscall\n{text}"
    );

    let out = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str(), OsStr::new("--json")]);
    assert_no_panic("dump --json", &out);
    assert!(out.status.success(), "{}", describe("dump --json", &out));
    let mut n = 0u64;
    for line in stdout_str(&out).lines().filter(|l| !l.trim().is_empty()) {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("dump --json line is not JSON ({e}): {line}"));
        n += 1;
    }
    assert_eq!(
        n, count,
        "dump --json printed {n} events, info says {count}"
    );
}

fn assert_owner_only(trace: &Path) {
    let meta = std::fs::metadata(trace).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "trace dir {} mode",
        trace.display()
    );
    for p in walk(trace) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.permissions().mode() & 0o777;
        if m.is_file() && m.nlink() > 1 {
            // A hard link to a system file (the file store links /usr/lib/... instead of
            // copying): the mode is the original's, and the 0700 directories protect it.
            assert_eq!(
                mode & 0o022,
                0,
                "{} is a hard link to a group/other-writable file",
                p.display()
            );
            continue;
        }
        assert_eq!(
            mode & 0o077,
            0,
            "{} has mode {mode:o}: group/other bits set",
            p.display()
        );
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{} directory mode {mode:o}", p.display());
        } else {
            assert!(
                mode == 0o600 || mode == 0o700,
                "{} file mode {mode:o}",
                p.display()
            );
        }
    }
}

/// The stored copies in the trace whose content is `content`.
fn stored_copies(trace: &Path, content: &[u8]) -> Vec<PathBuf> {
    walk(trace)
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .filter(|p| std::fs::read(p).map(|c| c == content).unwrap_or(false))
        .collect()
}

#[test]
fn trace_permissions() {
    let ctx = Ctx::new();
    // mmap_file makes the trace keep a copy of the mapped file in its file store.
    let input = ctx.dir().join("input.txt");
    std::fs::write(&input, "some private data\n").unwrap();
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (trace, rec) = ctx.record(program("mmap_file"), &[input.to_str().unwrap()]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    assert_owner_only(&trace);
    // The user's (0644) file was copied into the trace, privately.
    let copies = stored_copies(&trace, b"some private data\n");
    assert!(
        !copies.is_empty(),
        "no copy of the mmapped input in the trace's file store"
    );
    for c in copies {
        let mode = std::fs::metadata(&c).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode,
            0o600,
            "stored copy {} of a 0644 user file has mode {mode:o}",
            c.display()
        );
    }

    let rec = ctx.record_default(program("exit3"), &[]);
    assert_eq!(rec.status.code(), Some(3));
    let latest = ctx.latest_trace().expect("latest-trace");
    assert_owner_only(&latest);
}

/// `DEJA_LOG=debug` logs to stderr, without colour codes when stderr is not a terminal (here,
/// a pipe).
#[test]
fn logs_have_no_colour_codes_in_a_pipe() {
    let ctx = Ctx::new();
    let out = ctx
        .deja()
        .env("DEJA_LOG", "debug")
        .arg("rec")
        .arg(program("exit3"))
        .output()
        .expect("run deja rec");
    let stderr = stderr_str(&out);
    assert!(stderr.contains(" INFO "), "no log: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr}"
    );
}

/// A recorded argument holding terminal control sequences (an escape that turns text red, a
/// carriage return that would overwrite the line) is printed escaped by `ls`, `info`, `ps` and
/// `dump`: a trace cannot drive the terminal of whoever inspects it.
#[test]
fn recorded_strings_are_printed_escaped() {
    let ctx = Ctx::new();
    let nasty = "\u{1b}[31mred\rover\u{202e}";
    let rec = ctx.record_default(program("exit3"), &[nasty]);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));
    let trace = ctx.trace_root().join("latest-trace");
    for args in [
        vec![OsStr::new("ls")],
        vec![OsStr::new("info"), trace.as_os_str()],
        vec![OsStr::new("ps"), trace.as_os_str()],
        vec![OsStr::new("dump"), trace.as_os_str()],
    ] {
        let out = ctx.run_deja(&args);
        assert!(out.status.success(), "{}", describe("deja", &out));
        let text = stdout_str(&out);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{202e}'),
            "{args:?} printed a raw control character:\n{text:?}"
        );
        if args[0] != "dump" {
            assert!(
                text.contains("\\u{1b}[31mred\\rover\\u{202e}"),
                "{args:?}:\n{text}"
            );
        }
    }
}

/// Asked-for logs carry timestamps, from every thread of the recorder: the writing thread's
/// too, although the tracer thread it was started from traps `rdtsc` (a timestamp read there
/// used to kill the recorder with `SIGSEGV`).
#[test]
fn debug_logs_from_every_thread_of_the_recorder() {
    let ctx = Ctx::new();
    let out = ctx
        .deja()
        .env("DEJA_LOG", "debug")
        .arg("rec")
        .arg(program("exit3"))
        .output()
        .expect("run deja rec");
    assert_eq!(out.status.code(), Some(3), "{}", describe("rec", &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the writing thread finished the trace"),
        "no log line from the writing thread:\n{err}"
    );
}
