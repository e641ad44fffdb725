//! Every way a recording ends keeps its trace: a stop signal to the recorder (`SIGTERM`,
//! `SIGHUP`, a `SIGINT` sent to it), a disk that fills up; `info` tells a recording in
//! progress from one cut off; trace directories of another user, or that others may write to,
//! are refused.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `deja info TRACE` (text), asserting it succeeded.
fn info_text(ctx: &Ctx, trace: &Path) -> String {
    let out = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str()]);
    assert_no_panic("info", &out);
    assert!(out.status.success(), "{}", describe("info", &out));
    stdout_str(&out)
}

/// The `status:` line of `deja info TRACE`.
fn info_status(ctx: &Ctx, trace: &Path) -> String {
    info_text(ctx, trace)
        .lines()
        .find_map(|l| l.strip_prefix("status:").map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

/// Records `slow` (prints a line with its pid, then sleeps 30 s), checks `info` calls the
/// recording in progress, sends `sig` to deja alone, and checks that deja exits 128+`sig`,
/// the program is gone, `info` says the recorder was stopped by `sig` (named `name`), and
/// the trace replays its first line.
fn stop_mid_recording(sig: i32, name: &str) {
    let ctx = Ctx::new();
    let trace = ctx.fresh_path("trace");
    let slow = program("slow");
    let mut cmd = ctx.deja();
    cmd.arg("rec").arg("-o").arg(&trace).arg(&slow);
    let mut child = spawn_captured(&mut cmd);
    let pgid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let first = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) if l.starts_with("slow: started pid ") => l,
        other => {
            kill_group(pgid);
            panic!("no first line from `deja rec slow` within 30 s: {other:?}");
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx.stdout_writes(&trace).is_empty() {
        if Instant::now() > deadline {
            kill_group(pgid);
            panic!("the write of {first:?} did not reach the trace within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = info_status(&ctx, &trace);
    assert_eq!(status, "in progress", "info during the recording");

    // SAFETY: kill sends a signal to the deja process this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(pgid);
            panic!("deja rec did not end within 30 s of {name}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    kill_group(pgid);
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let out = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr,
    };
    assert_no_panic("deja rec stopped by a signal", &out);
    assert_eq!(
        out.status.code(),
        Some(128 + sig),
        "deja rec stopped by {name} should exit 128+{sig}\n{}",
        describe("rec", &out)
    );
    assert_stderr_mentions("rec", &out, &[&format!("stopped by {name}")]);
    let pid: i32 = first.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the recorded program (pid {pid}) should be gone once deja stopped"
    );

    let status = info_status(&ctx, &trace);
    assert!(
        status.starts_with(&format!("stopped by {name} to the recorder after ")),
        "info after {name}: {status:?}"
    );
    let info = ctx.info_json(&trace);
    assert_eq!(info["complete"], serde_json::json!(false), "{info}");
    assert_eq!(
        info["stopped"],
        serde_json::json!({ "signal": sig }),
        "{info}"
    );
    let kept = info["event_count"].as_u64().unwrap_or(0);
    assert!(
        kept > 0,
        "the events recorded before {name} are kept: {info}"
    );

    let out = ctx.replay(&trace);
    assert_deja_error("replay -a of a stopped recording", &out);
    assert_stderr_mentions(
        "replay -a of a stopped recording",
        &out,
        &[
            &format!("replayed all {kept} recorded events"),
            &format!("its recorder was stopped by {name}"),
        ],
    );
    assert!(
        stdout_str(&out).starts_with(&first),
        "the replay should echo {first:?}\n{}",
        describe("replay", &out)
    );
}

#[test]
fn sigterm_mid_recording_keeps_the_trace() {
    stop_mid_recording(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_mid_recording_keeps_the_trace() {
    stop_mid_recording(libc::SIGHUP, "SIGHUP");
}

/// A `SIGINT` sent to deja alone (not Ctrl-C, which the program gets too and decides about).
#[test]
fn sigint_sent_to_the_recorder_keeps_the_trace() {
    stop_mid_recording(libc::SIGINT, "SIGINT");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `8M`) at `dir`; `None` (with a message) where mounting is
    /// not permitted.
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
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
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

/// A program reading random bytes forever fills a small file system: deja stops with an
/// error naming the full disk and the true number of events kept, the reserve leaves room for
/// them and the index, and the trace replays them all.
#[test]
fn full_disk_keeps_every_event_that_fits() {
    let ctx = Ctx::new();
    let Some(fs) = Tmpfs::mount(&ctx.dir().join("small"), "8M") else {
        return;
    };
    let trace = fs.0.join("trace");
    let out = run_with_timeout(
        ctx.deja()
            .arg("rec")
            .arg("-o")
            .arg(&trace)
            .arg(program("fill_random")),
        TIMEOUT,
    );
    assert_deja_error("rec on a small tmpfs", &out);
    assert_stderr_mentions(
        "rec on a small tmpfs",
        &out,
        &["no space left", "disk is full"],
    );
    let err = stderr_str(&out);
    let kept: u64 = err
        .split("the first ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of events kept in {err:?}"));
    assert!(kept > 0, "events fit before the disk was full: {err}");
    assert!(
        !trace.join(".reserve").exists(),
        "the reserve is released at the end"
    );

    let info = ctx.info_json(&trace);
    assert_eq!(info["format_version"].as_u64().map(|v| v > 0), Some(true));
    assert_eq!(info["event_count"].as_u64(), Some(kept), "{info}");
    assert_eq!(info["complete"], serde_json::json!(false), "{info}");
    let why = info["stopped"]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("No space left") || why.contains("disk is full"),
        "{info}"
    );
    let status = info_status(&ctx, &trace);
    assert!(
        status.contains(&format!("stopped after {kept} events")),
        "{status:?}"
    );

    let replay = ctx.replay(&trace);
    assert_stderr_mentions(
        "replay of the trace the full disk cut off",
        &replay,
        &[&format!("replayed all {kept} recorded events")],
    );
    let recorded = stdout_str(&out);
    let replayed = stdout_str(&replay);
    assert!(
        !replayed.is_empty() && recorded.starts_with(&replayed),
        "the replay prints what the recording printed, up to where the trace ends\n{}",
        describe("replay", &replay)
    );
}

/// A disk without room for the trace's reserve refuses to start the recording, and leaves no
/// trace without an index version behind.
#[test]
fn nearly_full_disk_refuses_to_start() {
    let ctx = Ctx::new();
    let Some(fs) = Tmpfs::mount(&ctx.dir().join("tiny"), "1M") else {
        return;
    };
    std::fs::write(fs.0.join("filler"), vec![0u8; 800 * 1024]).unwrap();
    let trace = fs.0.join("trace");
    let out = run_with_timeout(
        ctx.deja()
            .arg("rec")
            .arg("-o")
            .arg(&trace)
            .arg(program("exit3")),
        TIMEOUT,
    );
    assert_one_line_error("rec on a full tmpfs", &out);
    assert_stderr_mentions("rec on a full tmpfs", &out, &["no room to start a trace"]);
    assert!(
        !trace.exists(),
        "no half-made trace is left in {}",
        trace.display()
    );
}

/// Gives `path` to user `nobody`; `false` (with a message) when that is not permitted.
fn give_to_nobody(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: chown reads the NUL-terminated path.
    if unsafe { libc::chown(c.as_ptr(), 65534, 65534) } != 0 {
        eprintln!(
            "skipped: cannot chown {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        return false;
    }
    true
}

/// deja refuses a trace root and a `-o` directory that group or others may write to, with
/// one line naming it and the fix.
#[test]
fn open_directories_are_refused() {
    let ctx = Ctx::new();
    let open = ctx.dir().join("open-root");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_with_timeout(ctx.deja().env("DEJA_TRACE_DIR", &open).arg("ls"), TIMEOUT);
    assert_one_line_error("a world-writable trace root", &out);
    assert_stderr_mentions(
        "a world-writable trace root",
        &out,
        &["writable by group or others (mode 0777); run `chmod go-w"],
    );

    let open_out = ctx.dir().join("open-out");
    std::fs::create_dir(&open_out).unwrap();
    std::fs::set_permissions(&open_out, std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("-o"),
        open_out.as_os_str(),
        program("exit3").as_os_str(),
    ]);
    assert_one_line_error("rec -o into a group-writable directory", &out);
    assert_stderr_mentions("rec -o", &out, &["writable by group or others"]);
    assert_eq!(
        std::fs::read_dir(&open_out).unwrap().count(),
        0,
        "nothing written"
    );
}

/// deja refuses a trace root, a `-o` directory and a trace owned by another user (`nobody`),
/// with one line naming it. Skipped where files cannot be given away (not root).
#[test]
fn foreign_directories_are_refused() {
    let ctx = Ctx::new();
    let exit3 = program("exit3");

    let foreign = ctx.dir().join("foreign-root");
    std::fs::create_dir(&foreign).unwrap();
    if !give_to_nobody(&foreign) {
        return;
    }
    for args in [
        vec![OsStr::new("ls")],
        vec![OsStr::new("rec"), exit3.as_os_str()],
    ] {
        let out = run_with_timeout(
            ctx.deja().env("DEJA_TRACE_DIR", &foreign).args(&args),
            TIMEOUT,
        );
        assert_one_line_error("a foreign trace root", &out);
        assert_stderr_mentions(
            "a foreign trace root",
            &out,
            &["owned by uid 65534, not by you"],
        );
    }
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        0,
        "nothing written"
    );

    let foreign_out = ctx.dir().join("foreign-out");
    std::fs::create_dir(&foreign_out).unwrap();
    assert!(give_to_nobody(&foreign_out));
    let out = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("-o"),
        foreign_out.as_os_str(),
        exit3.as_os_str(),
    ]);
    assert_one_line_error("rec -o into another user's directory", &out);
    assert_stderr_mentions("rec -o", &out, &["owned by uid 65534"]);
    assert_eq!(
        std::fs::read_dir(&foreign_out).unwrap().count(),
        0,
        "nothing written"
    );

    // A recorded trace handed to another user.
    let (trace, rec) = ctx.record(&exit3, &[]);
    assert_eq!(shell_code(&rec.status), 3, "{}", describe("rec", &rec));
    assert!(give_to_nobody(&trace));
    for cmd in ["info", "replay"] {
        let out = ctx.run_deja(&[OsStr::new(cmd), trace.as_os_str()]);
        assert_one_line_error("a foreign trace", &out);
        assert_stderr_mentions("a foreign trace", &out, &["owned by uid 65534"]);
    }
}

/// Records `fill_disk` (with `args` after its file) onto an 8 MiB tmpfs that it fills, and
/// checks that its exit status 7 passed through: the mount (kept while it is held), the trace
/// and `rec`'s output. `None` when mounting is not permitted here.
fn record_filling_the_disk(
    ctx: &Ctx,
    args: &[&str],
) -> Option<(Tmpfs, PathBuf, std::process::Output)> {
    let fs = Tmpfs::mount(&ctx.dir().join("shared"), "8M")?;
    let trace = fs.0.join("trace");
    let filler = fs.0.join("filler");
    let out = run_with_timeout(
        ctx.deja()
            .arg("rec")
            .arg("-o")
            .arg(&trace)
            .arg(program("fill_disk"))
            .arg(&filler)
            .args(args),
        TIMEOUT,
    );
    assert_no_panic("rec of a program filling the disk", &out);
    assert_eq!(
        shell_code(&out.status),
        7,
        "the program's status passes through\n{}",
        describe("rec", &out)
    );
    Some((fs, trace, out))
}

/// A program that fills the disk its trace is on is recorded to its end (the reserve keeps
/// room for the last chunk and the index), and its exit status passes through.
#[test]
fn program_filling_the_trace_disk_keeps_its_status() {
    let ctx = Ctx::new();
    let Some((_fs, trace, out)) = record_filling_the_disk(&ctx, &[]) else {
        return;
    };
    assert!(
        stdout_str(&out).starts_with("fill_disk: full after "),
        "{}",
        describe("rec", &out)
    );
    let info = ctx.info_json(&trace);
    assert_eq!(info["complete"], serde_json::json!(true), "{info}");
    assert_eq!(info["status"], serde_json::json!("exit 7"), "{info}");
    // Room for the replay's nothing: it writes no file, it only reads the trace.
    let replay = ctx.replay(&trace);
    assert!(
        replay.status.success(),
        "{}",
        describe("replay of the program that filled the disk", &replay)
    );
    assert_eq!(stdout_str(&replay), stdout_str(&out));
}

/// A program that fills the disk, then makes a payload larger than any reserve, ends: its
/// status still passes through, deja says the trace could not be finished and how many events
/// it keeps, and `info` shows both.
#[test]
fn unfinished_trace_still_passes_the_status_through() {
    let ctx = Ctx::new();
    let Some((_fs, trace, out)) = record_filling_the_disk(&ctx, &["then-a-big-read"]) else {
        return;
    };
    assert_stderr_mentions("rec", &out, &["keeps the first "]);
    let info = ctx.info_json(&trace);
    assert_eq!(info["complete"], serde_json::json!(false), "{info}");
    assert_eq!(info["exit"], serde_json::json!({ "Exited": 7 }), "{info}");
    let status = info["status"].as_str().unwrap_or_default();
    assert!(status.contains("the program ended (exit 7)"), "{status}");
    let kept = info["event_count"].as_u64().unwrap_or(0);
    let replay = ctx.replay(&trace);
    assert_stderr_mentions(
        "replay of the unfinished trace",
        &replay,
        &[&format!("replayed all {kept} recorded events")],
    );
}

/// Ctrl-C at a terminal reaches the whole foreground process group: the program gets it and
/// decides (`slow` dies of it), and the recorder records that to the end instead of stopping.
/// The terminal is a pseudo-terminal `script` makes; skipped without `script`.
#[test]
fn ctrl_c_at_the_terminal_is_left_to_the_program() {
    let Some(script) = which("script") else {
        eprintln!("skipped: no `script` (util-linux) to make a terminal");
        return;
    };
    let ctx = Ctx::new();
    let trace = ctx.fresh_path("trace");
    let command = format!(
        "'{}' rec -o '{}' '{}'",
        deja_bin().display(),
        trace.display(),
        program("slow").display()
    );
    let mut cmd = std::process::Command::new(script);
    cmd.env("DEJA_TRACE_DIR", ctx.trace_root())
        .args(["-q", "-f", "-e", "-c", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn script");
    let pgid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trace.join("index.sqlite").exists() || ctx.stdout_writes(&trace).is_empty() {
        if Instant::now() > deadline {
            kill_group(pgid);
            panic!("the program's first line did not reach the trace within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"\x03").unwrap();
    let out = wait_with_timeout(child, "script deja rec slow", Duration::from_secs(30));
    kill_group(pgid);
    assert_no_panic("deja rec under a terminal", &out);
    let info = ctx.info_json(&trace);
    assert_eq!(info["complete"], serde_json::json!(true), "{info}");
    assert_eq!(info["exit"], serde_json::json!({ "Signaled": 2 }), "{info}");
    assert_eq!(info["stopped"], serde_json::Value::Null, "{info}");
}
