//! Keeping the traces of failing runs (`deja rec --until-fail`, `--keep-failing`, as cargo's
//! test runner), and managing traces: where `rec` says its trace went, `ls`, `rm`, `info`'s
//! date, `replay -a --exit-status`, and the progress bar of a long replay on a terminal.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `deja ls --json`, parsed.
fn ls_json(ctx: &Ctx) -> Vec<serde_json::Value> {
    let out = ctx.run_deja(&["ls", "--json"]);
    assert!(out.status.success(), "{}", describe("ls --json", &out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ls --json: {e}\n{}", describe("ls --json", &out)));
    v.as_array()
        .unwrap_or_else(|| panic!("ls --json is not an array: {v}"))
        .clone()
}

/// The trace directories under the context's root (dot names and `latest-trace` apart).
fn trace_dirs(ctx: &Ctx) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(ctx.trace_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !name.starts_with('.') && name != "latest-trace"
        })
        .collect();
    v.sort();
    v
}

/// The directory a `deja: trace saved to DIR` line of `out`'s stderr names.
fn saved_to(out: &Output) -> PathBuf {
    let err = stderr_str(out);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("deja: trace saved to "))
        .unwrap_or_else(|| panic!("no `trace saved to` line\n{}", describe("rec", out)));
    PathBuf::from(line)
}

/// The `deja: run N of M: ...` lines of `out`'s stderr.
fn run_lines(out: &Output) -> Vec<String> {
    stderr_str(out)
        .lines()
        .filter(|l| l.starts_with("deja: run "))
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// --until-fail

/// A test that fails about one run in five is recorded until it fails: every passing run's
/// trace is deleted as it goes, one line per run, the failing run's trace alone is kept (and
/// is the latest), rec exits with its status, and it replays to the failing run's output.
#[test]
fn until_fail_keeps_exactly_the_failing_run() {
    let ctx = Ctx::new();
    let out = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--until-fail"),
        program("flaky").as_os_str(),
    ]);
    assert_no_panic("rec --until-fail", &out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe("rec --until-fail", &out)
    );
    let lines = run_lines(&out);
    let n = lines.len();
    assert!(n >= 1, "{}", describe("rec --until-fail", &out));
    for (i, line) in lines.iter().enumerate() {
        let status = if i + 1 == n { "exit 1" } else { "exit 0" };
        let want = format!("deja: run {} of 100: {status} (", i + 1);
        assert!(
            line.starts_with(&want) && line.ends_with(" s)"),
            "line {line:?}, expected {want:?}...\n{}",
            describe("rec", &out)
        );
    }
    // The program's own lines: one per run, the last the failing draw.
    let stdout = stdout_str(&out);
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), n, "{}", describe("rec", &out));
    assert!(
        printed[n - 1].ends_with("fails"),
        "{}",
        describe("rec", &out)
    );
    assert!(printed[..n - 1].iter().all(|l| l.ends_with("passes")));

    let kept = trace_dirs(&ctx);
    assert_eq!(kept.len(), 1, "exactly one trace kept: {kept:?}");
    assert_eq!(saved_to(&out), kept[0]);
    assert_eq!(ctx.latest_trace().as_deref(), Some(kept[0].as_path()));
    let rows = ls_json(&ctx);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["exit_code"], 1);

    let replay = ctx.run_deja(&[
        OsStr::new("replay"),
        OsStr::new("-a"),
        OsStr::new("--exit-status"),
        kept[0].as_os_str(),
    ]);
    assert_no_panic("replay", &replay);
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{}",
        describe("replay", &replay)
    );
    assert_eq!(stdout_str(&replay), format!("{}\n", printed[n - 1]));
}

/// With `-o DIR`, every run writes DIR afresh and the failing run's trace is what it holds.
#[test]
fn until_fail_with_an_output_directory() {
    let ctx = Ctx::new();
    let dir = ctx.fresh_path("failing");
    let out = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--until-fail"),
        OsStr::new("--max-runs"),
        OsStr::new("500"),
        OsStr::new("-o"),
        dir.as_os_str(),
        program("flaky").as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe("rec --until-fail -o", &out)
    );
    assert!(run_lines(&out)
        .last()
        .unwrap()
        .contains(" of 500: exit 1 ("));
    assert_eq!(saved_to(&out), dir);
    assert!(trace_dirs(&ctx).is_empty(), "nothing under the root");
    let replay = ctx.replay(&dir);
    assert!(replay.status.success(), "{}", describe("replay", &replay));
    assert!(
        stdout_str(&replay).ends_with("fails\n"),
        "{}",
        describe("replay", &replay)
    );
}

/// No run of `--max-runs N` fails: rec says so and exits 0, keeps no trace, and
/// `latest-trace` still names the trace that was latest before.
#[test]
fn until_fail_gives_up_after_max_runs() {
    let ctx = Ctx::new();
    let before = ctx.record_default(program("exit3"), &[]);
    assert_eq!(before.status.code(), Some(3));
    let latest = ctx.latest_trace().unwrap();
    let out = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--until-fail"),
        OsStr::new("--max-runs"),
        OsStr::new("3"),
        program("spin").as_os_str(),
        OsStr::new("1000"),
    ]);
    assert_no_panic("rec --until-fail", &out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        describe("rec --until-fail", &out)
    );
    let lines = run_lines(&out);
    assert_eq!(lines.len(), 3, "{}", describe("rec", &out));
    assert!(
        lines[2].starts_with("deja: run 3 of 3: exit 0 ("),
        "{lines:?}"
    );
    assert_stderr_mentions("rec", &out, &["no run failed in 3 runs; no trace kept"]);
    assert_eq!(trace_dirs(&ctx), vec![latest.clone()]);
    assert_eq!(ctx.latest_trace(), Some(latest));
}

/// A run killed by a signal is a failure: the first run of a program that aborts is kept, and
/// rec exits 128+SIGABRT.
#[test]
fn until_fail_stops_at_a_signal() {
    let ctx = Ctx::new();
    let out = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--until-fail"),
        program("abort").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(134), "{}", describe("rec", &out));
    let lines = run_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe("rec", &out));
    assert!(
        lines[0].starts_with("deja: run 1 of 100: killed by SIGABRT ("),
        "{lines:?}"
    );
    assert_eq!(trace_dirs(&ctx), vec![saved_to(&out)]);
}

/// `--until-fail --chaos=S` gives each run a seed of its own (S, S+1, ...): a lost-update race
/// that chaos scheduling makes show fails within a few runs, the failing run's trace alone is
/// kept with its seed, and it replays to the same output.
#[test]
fn until_fail_with_chaos_draws_a_new_seed_per_run() {
    let ctx = Ctx::new();
    let out = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--until-fail"),
        OsStr::new("--max-runs"),
        OsStr::new("12"),
        OsStr::new("--chaos=100"),
        threaded("lost_update").as_os_str(),
        OsStr::new("50000000"),
    ]);
    assert_no_panic("rec --until-fail --chaos", &out);
    assert_eq!(out.status.code(), Some(1), "{}", describe("rec", &out));
    let n = run_lines(&out).len();
    let err = stderr_str(&out);
    let seeds: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("deja: chaos scheduling with seed "))
        .collect();
    let want: Vec<String> = (0..n).map(|i| (100 + i).to_string()).collect();
    assert_eq!(seeds, want, "{}", describe("rec", &out));
    let kept = trace_dirs(&ctx);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(ctx.info_json(&kept[0])["chaos_seed"], 100 + n as u64 - 1);
    let last = stdout_str(&out).lines().last().unwrap().to_string();
    assert!(!last.contains(": 0 of"), "{last}");
    let replay = ctx.replay(&kept[0]);
    assert!(replay.status.success(), "{}", describe("replay", &replay));
    assert_eq!(stdout_str(&replay), format!("{last}\n"));
}

/// `--max-runs` makes sense only with `--until-fail`, and `--keep-failing` not with it.
#[test]
fn run_options_are_checked() {
    let ctx = Ctx::new();
    for args in [
        vec!["rec", "--max-runs", "3", "true"],
        vec!["rec", "--until-fail", "--max-runs", "0", "true"],
        vec!["rec", "--until-fail", "--keep-failing", "true"],
        vec!["replay", "--exit-status"],
    ] {
        let out = ctx.run_deja(&args);
        assert_no_panic("deja", &out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}\n{}",
            describe("deja", &out)
        );
    }
    let help = ctx.run_deja(&["rec", "--help"]);
    assert_stdout_has(
        "rec --help",
        &help,
        &[
            "--until-fail",
            "--max-runs <N>",
            "[default: 100]",
            "--keep-failing",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// --keep-failing

/// `--keep-failing` deletes the trace of a run that exits 0 (leaving `latest-trace` as it
/// was), keeps a failing one, and exits with the program's status either way.
#[test]
fn keep_failing_keeps_only_failing_runs() {
    let ctx = Ctx::new();
    let pass = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--keep-failing"),
        program("spin").as_os_str(),
        OsStr::new("1000"),
    ]);
    assert_eq!(pass.status.code(), Some(0), "{}", describe("rec", &pass));
    assert_stderr_mentions(
        "rec",
        &pass,
        &["exited 0; its trace is deleted (--keep-failing)"],
    );
    assert!(trace_dirs(&ctx).is_empty());
    assert!(
        std::fs::symlink_metadata(ctx.trace_root().join("latest-trace")).is_err(),
        "no dangling latest-trace"
    );

    let fail = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--keep-failing"),
        program("exit3").as_os_str(),
    ]);
    assert_eq!(fail.status.code(), Some(3), "{}", describe("rec", &fail));
    let kept = trace_dirs(&ctx);
    assert_eq!(kept, vec![saved_to(&fail)]);

    let pass = ctx.run_deja(&[
        OsStr::new("rec"),
        OsStr::new("--keep-failing"),
        program("spin").as_os_str(),
        OsStr::new("1000"),
    ]);
    assert_eq!(pass.status.code(), Some(0), "{}", describe("rec", &pass));
    assert_eq!(trace_dirs(&ctx), kept);
    assert_eq!(
        ctx.latest_trace().as_ref(),
        kept.first(),
        "latest-trace back to the failing run"
    );
}

/// A recording stopped by `SIGTERM` (a timeout around a hung test) is kept under
/// `--keep-failing` and `--until-fail`: a hang is a failure. No further run starts.
#[test]
fn a_stopped_recording_is_kept() {
    use std::io::{BufRead, BufReader};
    for keep in ["--keep-failing", "--until-fail"] {
        let ctx = Ctx::new();
        let mut cmd = ctx.deja();
        cmd.arg("rec").arg(keep).arg(program("slow"));
        let mut child = spawn_captured(&mut cmd);
        let pgid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        assert!(line.starts_with("slow: started"), "{keep}: {line:?}");
        // The program's write is recorded by now or soon; the stop keeps what was recorded.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill sends a signal to the deja process this test started.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.stdout = Some(stdout.into_inner());
        let out = wait_with_timeout(child, "deja rec slow", TIMEOUT);
        kill_group(pgid);
        assert_eq!(
            out.status.code(),
            Some(128 + libc::SIGTERM),
            "{keep}\n{}",
            describe("rec", &out)
        );
        assert_stderr_mentions("rec", &out, &["recording stopped by SIGTERM"]);
        let rows = ls_json(&ctx);
        assert_eq!(rows.len(), 1, "{keep}: {rows:?}");
        assert_eq!(rows[0]["status"], "stopped by SIGTERM");
        assert!(
            run_lines(&out).len() <= 1,
            "{keep}\n{}",
            describe("rec", &out)
        );
    }
}

/// Writes a small cargo project (no dependencies) with two test binaries, one of which fails.
fn failing_cargo_project(dir: &Path) {
    let files = [
        (
            "Cargo.toml",
            "[package]\nname = \"flakyproj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ndoctest = false\n\n[workspace]\n",
        ),
        ("src/lib.rs", "pub fn answer() -> u32 {\n    42\n}\n"),
        (
            "tests/passing.rs",
            "#[test]\nfn passes() {\n    assert_eq!(flakyproj::answer(), 42);\n}\n",
        ),
        (
            "tests/failing.rs",
            "#[test]\nfn passes_too() {\n    assert_eq!(flakyproj::answer(), 42);\n}\n\n\
             #[test]\nfn fails() {\n    let threads: Vec<_> = (0..3).map(|i| std::thread::spawn(move || i)).collect();\n    \
             let sum: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();\n    \
             assert_eq!(flakyproj::answer() + sum, 41, \"the flaky test failed\");\n}\n",
        ),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// `cargo test` with `deja rec --keep-failing` as the target runner records every test binary
/// it runs and keeps exactly the failing one's trace, which replays to the same failure.
#[test]
fn cargo_runner_keeps_only_the_failing_test_binary() {
    let ctx = Ctx::new();
    let proj = ctx.dir().join("proj");
    failing_cargo_project(&proj);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let runner = format!("{} rec --keep-failing", deja_bin().display());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&proj)
        .args(["test", "--offline", "--no-fail-fast"])
        .env("CARGO_TARGET_DIR", proj.join("target"))
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", &runner)
        .env("DEJA_TRACE_DIR", ctx.trace_root())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(600));
    assert!(
        !stderr_str(&out).contains("panicked"),
        "{}",
        describe("cargo test", &out)
    );
    assert_eq!(
        out.status.code(),
        Some(101),
        "{}",
        describe("cargo test", &out)
    );
    let stdout = stdout_str(&out);
    assert!(
        stdout.contains("the flaky test failed"),
        "{}",
        describe("cargo test", &out)
    );

    let kept = trace_dirs(&ctx);
    assert_eq!(
        kept.len(),
        1,
        "one trace kept: {kept:?}\n{}",
        describe("cargo test", &out)
    );
    let name = kept[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("failing-"),
        "the failing binary's trace: {name}"
    );
    assert_eq!(saved_to(&out), kept[0]);
    let rows = ls_json(&ctx);
    assert_eq!(rows[0]["exit_code"], 101, "{rows:?}");

    let replay = ctx.run_deja(&[
        OsStr::new("replay"),
        OsStr::new("-a"),
        OsStr::new("--exit-status"),
        kept[0].as_os_str(),
    ]);
    // (The test binary's panic, replayed, is on stderr: deja's own errors are `deja: ` lines.)
    assert!(
        !stderr_str(&replay).contains("deja: "),
        "{}",
        describe("replay", &replay)
    );
    assert_eq!(
        replay.status.code(),
        Some(101),
        "{}",
        describe("replay", &replay)
    );
    assert!(
        stdout_str(&replay).contains("the flaky test failed"),
        "{}",
        describe("replay", &replay)
    );
    assert!(stdout_str(&replay).contains("test result: FAILED. 1 passed; 1 failed"));
}

// ---------------------------------------------------------------------------------------------
// Trace management

/// `deja rec` ends by saying where its trace is, under the root or with `-o`.
#[test]
fn rec_says_where_the_trace_is() {
    let ctx = Ctx::new();
    let out = ctx.record_default(program("exit3"), &[]);
    assert_eq!(out.status.code(), Some(3));
    let last = stderr_str(&out).lines().last().unwrap_or("").to_string();
    assert_eq!(
        last,
        format!(
            "deja: trace saved to {}",
            ctx.trace_root().join("exit3-0").display()
        )
    );
    let (dir, out) = ctx.record(program("exit3"), &[]);
    assert_eq!(saved_to(&out), dir);
}

/// `deja ls`: a header and one row per trace with its name, local date, size, exit status and
/// command; `--json` the same as objects; an empty root said so (and `[]`).
#[test]
fn ls_shows_date_size_status_and_command() {
    let ctx = Ctx::new();
    let empty = ctx.run_deja(&["ls"]);
    assert!(empty.status.success(), "{}", describe("ls", &empty));
    assert_eq!(stdout_str(&empty), "");
    assert_stderr_mentions("ls", &empty, &["no traces in"]);
    assert!(ls_json(&ctx).is_empty());

    assert_eq!(
        ctx.record_default(program("exit3"), &["an-arg"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        ctx.record_default(program("abort"), &[]).status.code(),
        Some(134)
    );
    let out = run_with_timeout(ctx.deja().env("TZ", "UTC").arg("ls"), TIMEOUT);
    assert!(out.status.success(), "{}", describe("ls", &out));
    let text = stdout_str(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATE", "SIZE", "STATUS", "COMMAND"]);
    let rows = ls_json(&ctx);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        let line = lines[1..].iter().find(|l| l.starts_with(name)).unwrap();
        let (status, code) = match name {
            "exit3-0" => ("exit 3", 3),
            "abort-0" => ("killed by SIGABRT", 134),
            other => panic!("unexpected trace {other}"),
        };
        let unix = row["start_time_unix"].as_i64().unwrap();
        let date = Command::new("date")
            .env("TZ", "UTC")
            .arg("-d")
            .arg(format!("@{unix}"))
            .arg("+%Y-%m-%d %H:%M:%S")
            .output()
            .unwrap();
        let date = String::from_utf8_lossy(&date.stdout).trim().to_string();
        assert!(line.starts_with(name), "{line}");
        assert!(line.contains(&format!("  {date}  ")), "{line} lacks {date}");
        assert!(
            line.contains(&format!("  {status}  ")),
            "{line} lacks {status}"
        );
        assert!(
            line.contains(" MB  ") || line.contains(" kB  "),
            "{line}: size"
        );
        let command = row["command"][0].as_str().unwrap();
        assert!(
            line.ends_with(command) || line.ends_with(&format!("{command} an-arg")),
            "{line}"
        );
        assert_eq!(row["status"], status);
        assert_eq!(row["exit_code"], code);
        assert_eq!(row["complete"], true);
        assert!(row["size"].as_u64().unwrap() > 1000, "{row}");
        assert!(row["date"].as_str().unwrap().len() >= 25, "{row}");
    }
    let exit3 = rows.iter().find(|r| r["name"] == "exit3-0").unwrap();
    assert_eq!(exit3["command"][1], "an-arg");
}

/// `deja rm` removes traces by name or path, drops a `latest-trace` that pointed at one, and
/// refuses what is not a deja trace (an ordinary directory, a trace with a file of the user's
/// in it, the root itself), keeping them whole.
#[test]
fn rm_removes_traces_and_refuses_anything_else() {
    let ctx = Ctx::new();
    for _ in 0..3 {
        assert_eq!(
            ctx.record_default(program("exit3"), &[]).status.code(),
            Some(3)
        );
    }
    let root = ctx.trace_root();
    let out = ctx.run_deja(&["rm", "exit3-0"]);
    assert!(out.status.success(), "{}", describe("rm", &out));
    assert_eq!(
        trace_dirs(&ctx),
        vec![root.join("exit3-1"), root.join("exit3-2")]
    );
    assert_eq!(ctx.latest_trace(), Some(root.join("exit3-2")));
    let out = ctx.run_deja(&["rm", "latest-trace"]);
    assert!(
        out.status.success(),
        "{}",
        describe("rm latest-trace", &out)
    );
    assert_eq!(trace_dirs(&ctx), vec![root.join("exit3-1")]);
    assert!(
        std::fs::symlink_metadata(root.join("latest-trace")).is_err(),
        "the link is gone"
    );

    let (elsewhere, _) = ctx.record(program("exit3"), &[]);
    let out = ctx.run_deja(&[OsStr::new("rm"), elsewhere.as_os_str()]);
    assert!(out.status.success(), "{}", describe("rm DIR", &out));
    assert!(!elsewhere.exists());

    // Not traces: refused one by one, each kept whole; a trace named with them is removed.
    let plain = ctx.dir().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(plain.join("notes.txt"), "mine").unwrap();
    let (doctored, _) = ctx.record(program("exit3"), &[]);
    std::fs::write(doctored.join("notes.txt"), "mine").unwrap();
    let out = ctx.run_deja(&[
        OsStr::new("rm"),
        plain.as_os_str(),
        doctored.as_os_str(),
        root.as_os_str(),
        OsStr::new("no-such-trace"),
        OsStr::new("exit3-1"),
    ]);
    assert_no_panic("rm", &out);
    assert_eq!(out.status.code(), Some(1), "{}", describe("rm", &out));
    let err = stderr_str(&out);
    assert_eq!(err.lines().count(), 4, "one line per refusal\n{err}");
    assert_eq!(err.matches("not a deja trace").count(), 3, "{err}");
    assert!(err.contains("no-such-trace"), "{err}");
    assert!(plain.join("notes.txt").exists() && doctored.join("events").exists());
    assert!(root.join(".pool").exists(), "the root is whole");
    assert!(trace_dirs(&ctx).is_empty(), "exit3-1 removed");

    let none = ctx.run_deja(&["rm"]);
    assert_eq!(none.status.code(), Some(2), "{}", describe("rm", &none));
}

/// `deja info` shows the recording's date in the local time zone.
#[test]
fn info_shows_a_readable_date() {
    let ctx = Ctx::new();
    let (trace, _) = ctx.record(program("exit3"), &[]);
    let unix = ctx.info_json(&trace)["start_time_unix"].as_i64().unwrap();
    let out = run_with_timeout(ctx.deja().env("TZ", "UTC").arg("info").arg(&trace), TIMEOUT);
    assert!(out.status.success(), "{}", describe("info", &out));
    let date = Command::new("date")
        .env("TZ", "UTC")
        .arg("-d")
        .arg(format!("@{unix}"))
        .arg("+%Y-%m-%d %H:%M:%S UTC")
        .output()
        .unwrap();
    let date = String::from_utf8_lossy(&date.stdout).trim().to_string();
    assert_stdout_has(
        "info",
        &out,
        &[&format!("recorded at:    {date} (unix time {unix})")],
    );
}

/// `deja replay -a --exit-status` exits with the recorded program's status after a faithful
/// replay (128+N for a signal); without the option a faithful replay exits 0.
#[test]
fn replay_exits_with_the_recorded_status() {
    let ctx = Ctx::new();
    for (prog, code) in [("exit3", 3), ("abort", 134), ("spin", 0)] {
        let (trace, rec) = ctx.record(program(prog), &[]);
        assert_eq!(rec.status.code(), Some(code), "{}", describe("rec", &rec));
        let out = ctx.run_deja(&[
            OsStr::new("replay"),
            OsStr::new("-a"),
            OsStr::new("--exit-status"),
            trace.as_os_str(),
        ]);
        assert_no_panic("replay --exit-status", &out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            describe("replay", &out)
        );
        assert_eq!(out.stdout, rec.stdout);
        assert!(ctx.replay(&trace).status.success());
    }
}

/// A replay that takes over a second draws a progress bar on stderr when it is a terminal,
/// and clears it; with stderr a pipe it draws nothing.
#[test]
fn progress_bar_only_on_a_terminal() {
    let Some(script) = which("script") else {
        eprintln!("note: no `script` to give deja a terminal; skipped");
        return;
    };
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("spin"), &["3000000000"]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let piped = ctx.replay(&trace);
    assert!(piped.status.success(), "{}", describe("replay", &piped));
    assert!(
        !stderr_str(&piped).contains("replaying"),
        "{}",
        describe("replay", &piped)
    );
    let line = format!("{} replay -a {}", deja_bin().display(), trace.display());
    let out = run_with_timeout(
        Command::new(script)
            .args(["-qec", &line, "/dev/null"])
            .env("DEJA_TRACE_DIR", ctx.trace_root())
            .env("TERM", "xterm"),
        TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        describe("replay on a terminal", &out)
    );
    let text = stdout_str(&out);
    assert!(
        text.contains("deja: replaying"),
        "no progress bar\n{}",
        describe("replay", &out)
    );
    assert!(text.contains(" event "), "{}", describe("replay", &out));
    assert!(
        text.contains("spin 3000000000 -> "),
        "{}",
        describe("replay", &out)
    );
}
