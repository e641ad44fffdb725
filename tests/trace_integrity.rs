//! A trace's stored files are verified before a replay uses them: a stored file changed in
//! one byte (same size), or replaced by a symlink, makes `deja replay -a` fail with a one-line
//! message naming the recorded path, also after an earlier replay of the intact trace was
//! remembered in the verification cache. And a trace is sealed: any byte of it changed, even
//! consistently (checksums recomputed, sealed again with another key), makes the replay refuse
//! it, unless it is given the trace's digest or told to trust it.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use trace_format::TraceReader;

/// The path of the trace's stored copy of `program` and the path it was recorded under.
fn stored_copy(trace: &Path, program: &Path) -> (PathBuf, String) {
    let reader = TraceReader::open(trace).expect("open the trace");
    let want = fs::canonicalize(program).expect("the program's real path");
    let (file, _) = reader
        .stored_files()
        .expect("list the stored files")
        .into_iter()
        .find(|(f, _)| fs::canonicalize(&f.path).is_ok_and(|p| p == want))
        .unwrap_or_else(|| panic!("the trace stores no copy of {}", program.display()));
    (trace.join("files").join(&file.hash), file.path)
}

/// Changes "time" to "TIME" where the program's last line is printed from ("time   %lld"),
/// in place: the same file, the same size, its modification time put back.
fn tamper(stored: &Path) {
    let bytes = fs::read(stored).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"time    ")
        .expect("the format string of the time line in the program");
    let mtime = fs::metadata(stored).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(stored).unwrap();
    f.write_all_at(b"TIME", at as u64).unwrap();
    f.set_modified(mtime).unwrap();
    assert_eq!(fs::metadata(stored).unwrap().len(), bytes.len() as u64);
}

/// Asserts that a replay was refused with the one-line corrupt-trace message `what` (after
/// the trace directory).
fn assert_refused(out: &std::process::Output, trace: &Path, what: &str) {
    assert_ne!(shell_code(&out.status), 0, "{}", describe("replay", out));
    assert_deja_error("replay of a damaged trace", out);
    // One line from deja (the replayed program may have written to stderr before).
    let from_deja = stderr_str(out)
        .lines()
        .filter(|l| l.starts_with("deja: "))
        .count();
    assert_eq!(from_deja, 1, "{}", describe("replay", out));
    let want = format!("deja: corrupt trace {}: {what}", trace.display());
    assert!(
        stderr_str(out).lines().any(|l| l == want),
        "expected {want:?}\n{}",
        describe("replay", out)
    );
}

#[test]
fn a_stored_file_changed_in_one_byte_fails_the_replay() {
    let prog = program("time");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let (stored, recorded) = stored_copy(&trace, &prog);
    tamper(&stored);
    let out = ctx.replay(&trace);
    assert_refused(
        &out,
        &trace,
        &format!("the stored copy of {recorded} does not match its hash"),
    );
    assert!(
        !stdout_str(&out).contains("TIME"),
        "{}",
        describe("replay", &out)
    );
    // `deja info` and `dump` do not use stored files: they still read the trace.
    let info = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str()]);
    assert!(info.status.success(), "{}", describe("info", &info));
}

#[test]
fn a_stored_file_replaced_by_a_symlink_is_refused_without_following_it() {
    let prog = program("time");
    let other = program("exit3");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let (stored, recorded) = stored_copy(&trace, &prog);
    let what = format!("the stored copy of {recorded} is a symlink");
    // To another program (which would replay it), and to a file of another size (whose size
    // the message must not tell).
    for target in [other.as_path(), Path::new("/etc/passwd")] {
        fs::remove_file(&stored).unwrap();
        std::os::unix::fs::symlink(target, &stored).unwrap();
        let out = ctx.replay(&trace);
        assert_refused(&out, &trace, &what);
        assert!(
            !stderr_str(&out).contains("bytes"),
            "{}",
            describe("replay", &out)
        );
    }
    // A symlinked events file likewise.
    let events = trace.join("events");
    let moved = ctx.fresh_path("events");
    fs::rename(&events, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &events).unwrap();
    let out = ctx.replay(&trace);
    assert_refused(&out, &trace, "the events file is a symlink");
}

#[test]
fn the_verification_cache_lets_no_file_changed_since_through() {
    let prog = program("time");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    // The cache remembers files unchanged for two seconds.
    std::thread::sleep(Duration::from_millis(2100));
    let out = ctx.replay(&trace);
    assert_eq!(shell_code(&out.status), 0, "{}", describe("replay", &out));
    let cache = ctx.trace_root().join(".pool").join("verified");
    let (stored, recorded) = stored_copy(&trace, &prog);
    let hash = stored.file_name().unwrap();
    assert!(
        cache.join(hash).is_file(),
        "the replay did not remember the program's copy in {}",
        cache.display()
    );
    // A second replay uses the cache, and still replays.
    let out = ctx.replay(&trace);
    assert_eq!(shell_code(&out.status), 0, "{}", describe("replay", &out));

    tamper(&stored);
    let out = ctx.replay(&trace);
    assert_refused(
        &out,
        &trace,
        &format!("the stored copy of {recorded} does not match its hash"),
    );
}

/// Every stored file, used by the replay or not, changed in one byte (through a new file of
/// the same name: a hard-linked system file must not be touched): each makes the replay fail
/// and names that file.
#[test]
fn no_stored_file_can_be_changed_and_replay() {
    let prog = program("time");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let files = TraceReader::open(&trace)
        .expect("open the trace")
        .stored_files()
        .expect("list the stored files");
    assert!(files.len() >= 2, "{files:?}");
    for (file, how) in files {
        let stored = trace.join("files").join(&file.hash);
        let intact = fs::read(&stored).unwrap();
        let mode = fs::metadata(&stored).unwrap().permissions();
        let mut bytes = intact.clone();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let replace = |content: &[u8]| {
            fs::remove_file(&stored).unwrap();
            fs::write(&stored, content).unwrap();
            fs::set_permissions(&stored, mode.clone()).unwrap();
        };
        replace(&bytes);
        let out = ctx.replay(&trace);
        assert_refused(
            &out,
            &trace,
            &format!("the stored copy of {} does not match its hash", file.path),
        );
        replace(&intact);
        let out = ctx.replay(&trace);
        assert_eq!(
            shell_code(&out.status),
            0,
            "after restoring {} ({how})\n{}",
            file.path,
            describe("replay", &out)
        );
    }
}

/// The digest `deja info --json` shows for `trace`.
fn digest_of(ctx: &Ctx, trace: &Path) -> String {
    let out = ctx.run_deja(&[OsStr::new("info"), OsStr::new("--json"), trace.as_os_str()]);
    assert!(out.status.success(), "{}", describe("info", &out));
    let v: serde_json::Value = serde_json::from_str(&stdout_str(&out)).expect("info's JSON");
    v["digest"].as_str().expect("a digest").to_string()
}

/// How a replay refuses a trace whose files no longer have its seal's digest.
const CHANGED: &str =
    "the trace was changed after it was recorded (its files do not have the digest its seal names)";

/// A new private directory (another user's trace root, say) in the test's sandbox.
fn private_dir(ctx: &Ctx, stem: &str) -> PathBuf {
    let dir = ctx.fresh_path(stem);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    dir
}

/// One byte of the events file changed, its chunk's checksum recomputed (what a forger
/// without the key can do): the seal no longer matches, whatever the replay is told.
#[test]
fn a_chunk_changed_with_its_checksum_recomputed_is_refused() {
    let prog = program("time");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    // The first chunk: a 24-byte header (the frame's length at bytes 4..8, its checksum, a
    // truncated BLAKE3 of the frame, at 20..24) and its zstd frame. Change a byte of the frame
    // and put the checksum right, so only the seal can tell.
    const HEADER: usize = 24;
    let events = trace.join("events");
    let mut bytes = fs::read(&events).unwrap();
    let end = HEADER + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    bytes[end - 8] ^= 0x01;
    let sum = blake3::hash(&bytes[HEADER..end]);
    bytes[20..24].copy_from_slice(&sum.as_bytes()[..4]);
    fs::write(&events, &bytes).unwrap();
    let digest = digest_of(&ctx, &trace);
    for extra in [
        vec![],
        vec!["--trust".to_string()],
        vec!["--digest".to_string(), digest],
    ] {
        let mut args = vec!["replay".to_string(), "-a".to_string()];
        args.extend(extra);
        args.push(trace.to_string_lossy().into_owned());
        assert_refused(&ctx.run_deja(&args), &trace, CHANGED);
    }
}

/// A trace forged consistently (an event changed, the trace written again and sealed with
/// another user's key): refused as not sealed by this user, refused against the original's
/// digest, and replayed (to its divergence) only when trusted.
#[test]
fn a_trace_forged_and_sealed_with_another_key_is_refused() {
    let prog = program("time");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let original = digest_of(&ctx, &trace);
    let forger = private_dir(&ctx, "forger");
    let forged = ctx.fresh_path("forged");
    common::rewrite::rewrite_trace(&trace, &forged, &forger, |_, ev| {
        if let trace_format::Event::Syscall(s) = ev {
            if let Some(echoed) = s.echo.as_mut() {
                echoed
                    .bytes
                    .iter_mut()
                    .for_each(|b| *b = b.to_ascii_uppercase());
            }
        }
    });
    let out = ctx.replay(&forged);
    assert_ne!(shell_code(&out.status), 0, "{}", describe("replay", &out));
    assert_deja_error("replay of a forged trace", &out);
    assert!(
        stderr_str(&out).contains("sealed by another user or machine"),
        "{}",
        describe("replay", &out)
    );
    let out = ctx.run_deja(&[
        OsStr::new("replay"),
        OsStr::new("-a"),
        OsStr::new("--digest"),
        OsStr::new(&original),
        forged.as_os_str(),
    ]);
    assert_ne!(shell_code(&out.status), 0, "{}", describe("replay", &out));
    assert!(
        stderr_str(&out).contains(&format!("not the {original} you gave")),
        "{}",
        describe("replay", &out)
    );
    // Trusted, it replays what the forger made it say, and the replay tells.
    let out = ctx.run_deja(&[
        OsStr::new("replay"),
        OsStr::new("-a"),
        OsStr::new("--trust"),
        forged.as_os_str(),
    ]);
    assert_ne!(shell_code(&out.status), 0, "{}", describe("replay", &out));
    assert!(
        stderr_str(&out).contains("diverged"),
        "{}",
        describe("replay", &out)
    );
    // Its seal copied from the original: the digest no longer matches it.
    let seal = TraceReader::open(&trace).unwrap().seal().unwrap().unwrap();
    let db = rusqlite::Connection::open(forged.join("index.sqlite")).unwrap();
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'seal'",
        [serde_json::to_string(&seal).unwrap()],
    )
    .unwrap();
    drop(db);
    assert_refused(&ctx.replay(&forged), &forged, CHANGED);
}

/// A trace recorded under another trace root (another user or machine: another key) replays
/// with its digest or with `--trust`, and not without.
#[test]
fn a_trace_from_elsewhere_replays_with_its_digest_or_when_trusted() {
    let prog = program("time");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let digest = digest_of(&ctx, &trace);
    let elsewhere = private_dir(&ctx, "elsewhere");
    let replay = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(deja_bin());
        cmd.env("DEJA_TRACE_DIR", &elsewhere)
            .args(["replay", "-a"])
            .args(extra)
            .arg(&trace);
        run_with_timeout(&mut cmd, TIMEOUT)
    };
    let out = replay(&[]);
    assert_ne!(shell_code(&out.status), 0, "{}", describe("replay", &out));
    let err = stderr_str(&out);
    assert!(
        err.contains("sealed by another user or machine") && err.contains(&digest),
        "{}",
        describe("replay", &out)
    );
    let out = replay(&["--digest", &digest]);
    assert_replay_matches(&rec, &out);
    let out = replay(&["--trust"]);
    assert_replay_matches(&rec, &out);
    assert!(
        stderr_str(&out).contains("not sealed by you"),
        "{}",
        describe("replay", &out)
    );
}
