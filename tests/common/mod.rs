//! Shared helpers for deja's integration tests.
//!
//! * [`program`] builds `tests/programs/<name>.c` with gcc, once per test process, into
//!   `$CARGO_TARGET_TMPDIR/deja-test-programs/<name>`.
//! * [`Ctx`] is one test's sandbox: a temp directory (kept, and its path printed, when the test
//!   fails) that is also the test's `DEJA_TRACE_DIR`, plus `deja` commands bound to it.
//! * Every command runs with a timeout, with stdin closed, in its own process group, so a hung
//!   recorder or replayer (or an orphaned tracee) fails the test instead of hanging the suite.
#![allow(dead_code)]

pub mod gdb;
pub mod rewrite;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long any single deja or native command may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The deja binary under test.
pub fn deja_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_deja"))
}

/// `tests/programs` in the source tree.
pub fn programs_src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("programs")
}

/// Where compiled test programs go.
pub fn programs_out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("deja-test-programs")
}

fn gcc_missing_panic(e: &std::io::Error) -> ! {
    panic!(
        "cannot run gcc ({e}): deja's integration tests need gcc to build tests/programs/*.c \
         (install it, e.g. `apt-get install gcc`)"
    )
}

/// Builds `tests/programs/<name>.c` (once per test process) and returns the executable's path.
pub fn program(name: &str) -> PathBuf {
    built_once(name, &[], name)
}

/// Like [`program`], built with `-pthread`.
pub fn threaded(name: &str) -> PathBuf {
    built_once(name, &["-pthread"], &format!("{name}-pthread"))
}

/// [`build_program`], once per test process and output name.
pub fn built_once(src: &str, extra: &[&str], out_name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let cell = {
        let mut map = BUILT
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(out_name.to_string()).or_default().clone()
    };
    cell.get_or_init(|| build_program(src, extra, out_name))
        .clone()
}

/// Compiles `tests/programs/<src>.c` with extra gcc flags into `<out dir>/<out_name>`.
/// Panics with gcc's diagnostics if it fails.
pub fn build_program(src: &str, extra: &[&str], out_name: &str) -> PathBuf {
    match try_build_program(src, extra, out_name) {
        Ok(p) => p,
        Err(msg) => panic!("{msg}"),
    }
}

/// Like [`build_program`] but returns gcc's complaint instead of panicking (a missing gcc still
/// panics).
pub fn try_build_program(src: &str, extra: &[&str], out_name: &str) -> Result<PathBuf, String> {
    let source = programs_src_dir().join(format!("{src}.c"));
    assert!(
        source.exists(),
        "test program source {} does not exist",
        source.display()
    );
    let out_dir = programs_out_dir();
    std::fs::create_dir_all(&out_dir).expect("create deja-test-programs dir");
    let out = out_dir.join(out_name);
    // Build under a private name and rename: several test binaries may build the same program
    // at the same time.
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let tmp = out_dir.join(format!(
        ".{out_name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new("gcc");
    cmd.args(["-O1", "-g"])
        .args(extra)
        .arg("-o")
        .arg(&tmp)
        .arg(&source);
    let output = match cmd.stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) => gcc_missing_panic(&e),
    };
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "gcc failed to build {} (flags {extra:?}):\n{}{}",
            source.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&tmp, &out).expect("rename built program into place");
    Ok(out)
}

/// The status a shell would report: the exit code, or 128 + the signal number.
pub fn shell_code(status: &ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => -1,
    }
}

/// Human-readable dump of a command's result for failure messages.
pub fn describe(what: &str, out: &Output) -> String {
    format!(
        "---- {what}: {} (shell code {})\n---- stdout ({} bytes):\n{}\n---- stderr ({} bytes):\n{}\n----",
        out.status,
        shell_code(&out.status),
        out.stdout.len(),
        String::from_utf8_lossy(&out.stdout),
        out.stderr.len(),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout_str(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_str(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The program's own stderr inside a deja run's stderr: every line not starting with `deja: `.
pub fn program_stderr(stderr: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in stderr.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"deja: ") {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Kills a whole process group (ignoring errors: it may be gone already).
pub fn kill_group(pgid: u32) {
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// Spawns `cmd` with stdin closed, stdout/stderr captured, in a new process group.
pub fn spawn_captured(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"))
}

fn reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` to completion (see [`spawn_captured`]); panics with whatever it printed if it
/// takes longer than `timeout`. Anything left in its process group afterwards is killed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let child = spawn_captured(cmd);
    wait_with_timeout(child, &desc, timeout)
}

/// Waits for `child`, started by [`spawn_captured`], and collects its output; panics with
/// whatever it printed if it does not end within `timeout` from now (`desc` names it). Anything
/// left in its process group afterwards is killed.
pub fn wait_with_timeout(mut child: Child, desc: &str, timeout: Duration) -> Output {
    let pgid = child.id();
    let out_rx = reader(child.stdout.take().unwrap());
    let err_rx = reader(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if start.elapsed() > timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let Some(status) = status else {
        kill_group(pgid);
        let _ = child.kill();
        let status = child.wait().expect("wait");
        let stdout = out_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        let stderr = err_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        panic!(
            "timed out after {timeout:?}: {desc}\n{}",
            describe(
                "killed",
                &Output {
                    status,
                    stdout,
                    stderr
                }
            )
        );
    };
    // The command is done; give leftovers holding the pipes (an orphaned tracee) a moment, then
    // kill them so the readers see EOF.
    let mut stdout = out_rx.recv_timeout(Duration::from_secs(10));
    let mut stderr = err_rx.recv_timeout(Duration::from_secs(10));
    if stdout.is_err() || stderr.is_err() {
        kill_group(pgid);
        if stdout.is_err() {
            stdout = out_rx.recv_timeout(Duration::from_secs(5));
        }
        if stderr.is_err() {
            stderr = err_rx.recv_timeout(Duration::from_secs(5));
        }
        eprintln!("note: {desc} left processes holding its stdout/stderr; killed them");
    }
    Output {
        status,
        stdout: stdout.unwrap_or_default(),
        stderr: stderr.unwrap_or_default(),
    }
}

/// Runs a program natively (no deja).
pub fn run_native(prog: impl AsRef<OsStr>, args: &[&str]) -> Output {
    run_with_timeout(Command::new(prog.as_ref()).args(args), TIMEOUT)
}

/// Runs a program natively, expecting shell status `code`.
pub fn native_expect(prog: impl AsRef<OsStr>, args: &[&str], code: i32) -> Output {
    let out = run_native(prog.as_ref(), args);
    assert_eq!(
        shell_code(&out.status),
        code,
        "native run of {:?} {args:?}: unexpected status\n{}",
        prog.as_ref(),
        describe("native", &out)
    );
    out
}

/// Asserts that deja did not panic.
pub fn assert_no_panic(what: &str, out: &Output) {
    let err = stderr_str(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "deja panicked during {what}\n{}",
        describe(what, out)
    );
    // A panic that escapes main exits with 101.
    assert_ne!(
        out.status.code(),
        Some(101),
        "deja exited 101 (panic?) during {what}\n{}",
        describe(what, out)
    );
}

/// Asserts a failed deja command that reported its error properly: non-zero exit, no panic, and
/// a line starting with `deja: ` on stderr.
pub fn assert_deja_error(what: &str, out: &Output) {
    assert_no_panic(what, out);
    assert!(
        !out.status.success(),
        "{what} should have failed\n{}",
        describe(what, out)
    );
    assert!(
        stderr_str(out).lines().any(|l| l.starts_with("deja: ")),
        "{what}: expected a `deja: ...` error line on stderr\n{}",
        describe(what, out)
    );
}

/// [`assert_deja_error`] plus the contract's "one line": stderr is exactly one line,
/// `deja: ...`.
pub fn assert_one_line_error(what: &str, out: &Output) {
    assert_deja_error(what, out);
    let err = stderr_str(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("deja: "),
        "{what}: expected exactly one `deja: ...` line on stderr\n{}",
        describe(what, out)
    );
}

/// Asserts stderr mentions one of `needles` (case-insensitive).
pub fn assert_stderr_mentions(what: &str, out: &Output, needles: &[&str]) {
    let err = stderr_str(out).to_lowercase();
    assert!(
        needles.iter().any(|n| err.contains(&n.to_lowercase())),
        "{what}: stderr should mention one of {needles:?}\n{}",
        describe(what, out)
    );
}

/// One test's sandbox. The temp dir is created under `CARGO_TARGET_TMPDIR`; if the test fails
/// it is kept (and its path printed) so the traces can be inspected.
pub struct Ctx {
    tmp: Option<tempfile::TempDir>,
    seq: AtomicUsize,
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}

impl Ctx {
    pub fn new() -> Ctx {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deja-test-runs");
        std::fs::create_dir_all(&base).expect("create deja-test-runs");
        let tmp = tempfile::Builder::new()
            .prefix("t-")
            .tempdir_in(&base)
            .expect("tempdir");
        let ctx = Ctx {
            tmp: Some(tmp),
            seq: AtomicUsize::new(0),
        };
        std::fs::create_dir_all(ctx.trace_root()).expect("create trace root");
        // deja refuses a root others may write to, whatever the umask made it.
        std::fs::set_permissions(ctx.trace_root(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod the trace root");
        ctx
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        self.tmp.as_ref().unwrap().path()
    }

    /// `DEJA_TRACE_DIR` for this test's deja commands.
    pub fn trace_root(&self) -> PathBuf {
        self.dir().join("traces")
    }

    /// A fresh path inside the sandbox (not created).
    pub fn fresh_path(&self, stem: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir().join(format!("{stem}-{n}"))
    }

    /// A `deja` command with this test's `DEJA_TRACE_DIR`.
    pub fn deja(&self) -> Command {
        let mut cmd = Command::new(deja_bin());
        cmd.env("DEJA_TRACE_DIR", self.trace_root());
        cmd
    }

    /// Runs a deja command (with timeout) given its arguments.
    pub fn run_deja<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_with_timeout(self.deja().args(args), TIMEOUT)
    }

    /// Asserts that `deja dump` shows a preemption in `trace` and that it replays to what its
    /// recording `rec` printed.
    pub fn assert_preempted_and_replays(&self, trace: &Path, rec: &Output) {
        let dump = self.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
        assert!(
            stdout_str(&dump).contains("preempted at rip"),
            "no preemption in the trace\n{}",
            describe("dump", &dump)
        );
        let replay = self.replay(trace);
        assert_replay_matches(rec, &replay);
    }

    /// `deja rec -o <fresh dir> PROG ARGS...`; returns the trace directory and rec's output.
    /// The trace directory does not exist before the call.
    pub fn record(&self, prog: impl AsRef<OsStr>, args: &[&str]) -> (PathBuf, Output) {
        self.record_with(prog, args, |_| {})
    }

    /// [`Ctx::record`] with `options` of `deja rec` (before the program).
    pub fn record_opts(
        &self,
        options: &[&str],
        prog: impl AsRef<OsStr>,
        args: &[&str],
    ) -> (PathBuf, Output) {
        let trace = self.fresh_path("trace");
        let mut cmd = self.deja();
        cmd.arg("rec")
            .args(options)
            .arg("-o")
            .arg(&trace)
            .arg(prog.as_ref())
            .args(args);
        let out = run_with_timeout(&mut cmd, TIMEOUT);
        assert_no_panic("deja rec", &out);
        (trace, out)
    }

    /// [`Ctx::record`] after `tweak` adjusted the command (environment, limits).
    pub fn record_with(
        &self,
        prog: impl AsRef<OsStr>,
        args: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> (PathBuf, Output) {
        let trace = self.fresh_path("trace");
        let mut cmd = self.deja();
        cmd.arg("rec")
            .arg("-o")
            .arg(&trace)
            .arg(prog.as_ref())
            .args(args);
        tweak(&mut cmd);
        let out = run_with_timeout(&mut cmd, TIMEOUT);
        assert_no_panic("deja rec", &out);
        (trace, out)
    }

    /// `deja rec PROG ARGS...` without `-o` (trace goes under `DEJA_TRACE_DIR`).
    pub fn record_default(&self, prog: impl AsRef<OsStr>, args: &[&str]) -> Output {
        let mut cmd = self.deja();
        cmd.arg("rec").arg(prog.as_ref()).args(args);
        let out = run_with_timeout(&mut cmd, TIMEOUT);
        assert_no_panic("deja rec", &out);
        out
    }

    /// `deja replay -a TRACE`.
    pub fn replay(&self, trace: &Path) -> Output {
        let out = self.run_deja(&[OsStr::new("replay"), OsStr::new("-a"), trace.as_os_str()]);
        assert_no_panic("deja replay -a", &out);
        out
    }

    /// `deja replay -a` (latest trace).
    pub fn replay_latest(&self) -> Output {
        let out = self.run_deja(&["replay", "-a"]);
        assert_no_panic("deja replay -a (latest)", &out);
        out
    }

    /// `deja info TRACE --json`, parsed; panics if it fails or is not a JSON object.
    pub fn info_json(&self, trace: &Path) -> serde_json::Value {
        let out = self.run_deja(&[OsStr::new("info"), trace.as_os_str(), OsStr::new("--json")]);
        assert_no_panic("deja info --json", &out);
        assert!(
            out.status.success(),
            "deja info --json failed\n{}",
            describe("info", &out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "deja info --json printed invalid JSON ({e})\n{}",
                describe("info", &out)
            )
        });
        assert!(v.is_object(), "deja info --json is not an object: {v}");
        v
    }

    /// What `deja dump --json TRACE` (of a recording that may still be going on) says was
    /// written to stdout, in the trace's order: `(task, bytes)` of each write.
    pub fn stdout_writes(&self, trace: &Path) -> Vec<(i64, Vec<u8>)> {
        let out = self.run_deja(&[OsStr::new("dump"), OsStr::new("--json"), trace.as_os_str()]);
        assert_no_panic("dump --json of a recording in progress", &out);
        stdout_str(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["Syscall"]["echo"]["stream"] == serde_json::json!(1))
            .map(|v| {
                let bytes = v["Syscall"]["echo"]["bytes"]
                    .as_array()
                    .map(|b| {
                        b.iter()
                            .filter_map(|x| x.as_u64())
                            .map(|x| x as u8)
                            .collect()
                    })
                    .unwrap_or_default();
                (v["Syscall"]["tid"].as_i64().unwrap_or(0), bytes)
            })
            .collect()
    }

    /// `deja ps TRACE`, parsed into its rows; asserts it did not panic, succeeded, printed the
    /// header `PID PPID EXIT CMD` and no blank line.
    pub fn ps(&self, trace: &Path) -> Vec<PsRow> {
        let out = self.run_deja(&[OsStr::new("ps"), trace.as_os_str()]);
        assert_no_panic("deja ps", &out);
        assert!(
            out.status.success(),
            "deja ps failed\n{}",
            describe("ps", &out)
        );
        let text = stdout_str(&out);
        assert!(
            !text.lines().any(|l| l.trim().is_empty()),
            "deja ps printed a blank line\n{}",
            describe("ps", &out)
        );
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(
            header,
            ["PID", "PPID", "EXIT", "CMD"],
            "deja ps header\n{}",
            describe("ps", &out)
        );
        lines.map(PsRow::parse).collect()
    }

    /// The trace `latest-trace` points to, if any.
    pub fn latest_trace(&self) -> Option<PathBuf> {
        let link = self.trace_root().join("latest-trace");
        let target = std::fs::read_link(&link).ok()?;
        Some(if target.is_absolute() {
            target
        } else {
            self.trace_root().join(target)
        })
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(tmp) = self.tmp.take() {
                let kept = tmp.keep();
                eprintln!(
                    "note: test failed; its traces are kept in {}",
                    kept.display()
                );
            }
        }
    }
}

/// One row of `deja ps`: its whitespace-separated PID, PPID (`--` for the initial process) and
/// EXIT columns, and the rest, the command line, with its words joined by single spaces.
#[derive(Debug)]
pub struct PsRow {
    pub pid: String,
    pub ppid: String,
    pub exit: String,
    pub cmd: String,
}

impl PsRow {
    fn parse(line: &str) -> PsRow {
        let mut f = line.split_whitespace();
        let mut next = || f.next().unwrap_or("").to_string();
        let (pid, ppid, exit) = (next(), next(), next());
        PsRow {
            pid,
            ppid,
            exit,
            cmd: f.collect::<Vec<_>>().join(" "),
        }
    }
}

/// The result of [`assert_replays_exactly`]: the sandbox, trace and both outputs, for further
/// checks.
pub struct Replayed {
    pub ctx: Ctx,
    pub trace: PathBuf,
    pub rec: Output,
    pub replay: Output,
}

/// Records `prog args`, replays it with `-a`, and asserts: rec exited 0, replay exited 0, replay's
/// stdout equals the recorded stdout byte for byte, and the program's stderr (stderr without
/// `deja: ` lines) is equal too. No panics.
pub fn assert_replays_exactly(prog: impl AsRef<OsStr>, args: &[&str]) -> Replayed {
    assert_replays_exactly_status(prog, args, 0)
}

/// [`assert_replays_exactly`] for a program whose recording ends with shell status
/// `expected_rec_code` (128+N when killed by signal N). A faithful replay still exits 0.
pub fn assert_replays_exactly_status(
    prog: impl AsRef<OsStr>,
    args: &[&str],
    expected_rec_code: i32,
) -> Replayed {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(prog.as_ref(), args);
    assert_eq!(
        shell_code(&rec.status),
        expected_rec_code,
        "deja rec of {:?} {args:?}: unexpected exit status\n{}",
        prog.as_ref(),
        describe("rec", &rec)
    );
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
    Replayed {
        ctx,
        trace,
        rec,
        replay,
    }
}

/// Asserts `replay` is a faithful replay of `rec`: exit 0, same stdout, same program stderr.
pub fn assert_replay_matches(rec: &Output, replay: &Output) {
    let both = || {
        format!(
            "{}\n{}",
            describe("rec", rec),
            describe("replay -a", replay)
        )
    };
    assert_no_panic("replay", replay);
    assert!(
        replay.status.success(),
        "replay -a did not exit 0 (divergence?)\n{}",
        both()
    );
    assert!(
        replay.stdout == rec.stdout,
        "replay stdout differs from the recorded stdout\n{}",
        both()
    );
    assert!(
        program_stderr(&replay.stderr) == program_stderr(&rec.stderr),
        "replay stderr (without `deja: ` lines) differs from the recorded stderr\n{}",
        both()
    );
}

/// Runs `prog args` natively expecting shell status `code` ([`native_expect`]) and, if
/// `expected` is given, exactly that stdout; then [`assert_replays_exactly_status`] with the same
/// status, and asserts the recording printed the native run's stdout byte for byte (the recorder
/// did not change what the program did).
pub fn assert_replays_like_native(
    prog: impl AsRef<OsStr>,
    args: &[&str],
    code: i32,
    expected: Option<&str>,
) -> Replayed {
    let native = native_expect(prog.as_ref(), args, code);
    if let Some(expected) = expected {
        assert_eq!(
            stdout_str(&native),
            expected,
            "the test program misbehaves natively\n{}",
            describe("native", &native)
        );
    }
    let r = assert_replays_exactly_status(prog.as_ref(), args, code);
    assert!(
        r.rec.stdout == native.stdout,
        "the recording printed something else than the native run\n{}\n{}",
        describe("native", &native),
        describe("rec", &r.rec)
    );
    r
}

/// Asserts `out`'s stdout contains each of `needles`.
pub fn assert_stdout_has(what: &str, out: &Output, needles: &[&str]) {
    let text = stdout_str(out);
    for n in needles {
        assert!(
            text.contains(n),
            "{what}: stdout lacks {n:?}\n{}",
            describe(what, out)
        );
    }
}

/// Native runs of `prog args` differ ([`assert_native_nondeterministic`]); the recording
/// replays exactly ([`assert_replays_exactly`]) and its stdout contains each of
/// `stdout_needles`.
pub fn nondeterministic_roundtrip(
    prog: impl AsRef<OsStr>,
    args: &[&str],
    stdout_needles: &[&str],
) -> Replayed {
    assert_native_nondeterministic(prog.as_ref(), args);
    let r = assert_replays_exactly(prog.as_ref(), args);
    assert_stdout_has("rec", &r.rec, stdout_needles);
    r
}

/// Runs `prog args` natively twice and asserts the two stdouts differ (the program really is
/// nondeterministic, so an equal replay means deja did its job).
pub fn assert_native_nondeterministic(prog: impl AsRef<OsStr>, args: &[&str]) {
    let a = run_native(prog.as_ref(), args);
    let b = run_native(prog.as_ref(), args);
    assert!(
        a.stdout != b.stdout,
        "two native runs of {:?} {args:?} printed the same stdout; the test program is not \
         nondeterministic\n{}\n{}",
        prog.as_ref(),
        describe("native 1", &a),
        describe("native 2", &b)
    );
}

/// Like [`assert_native_nondeterministic`], for programs whose output differs between most but
/// not necessarily any two runs (thread interleavings): runs `prog args` natively up to `tries`
/// times and passes as soon as one stdout differs from the first. Every run must exit 0.
pub fn assert_native_nondeterministic_within(prog: impl AsRef<OsStr>, args: &[&str], tries: usize) {
    let first = run_native(prog.as_ref(), args);
    assert!(
        first.status.success(),
        "native run of {:?} {args:?} failed\n{}",
        prog.as_ref(),
        describe("native 1", &first)
    );
    for n in 2..=tries.max(2) {
        let again = run_native(prog.as_ref(), args);
        assert!(
            again.status.success(),
            "native run of {:?} {args:?} failed\n{}",
            prog.as_ref(),
            describe(&format!("native {n}"), &again)
        );
        if again.stdout != first.stdout {
            return;
        }
    }
    panic!(
        "{} native runs of {:?} {args:?} all printed the same stdout; the test program is not \
         nondeterministic enough\n{}",
        tries.max(2),
        prog.as_ref(),
        describe("native 1", &first)
    );
}

/// Whether the kernel randomises address spaces (so addresses differ between native runs).
pub fn aslr_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/randomize_va_space")
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
}

/// Deterministic-enough pseudo-random bytes (xorshift seeded from the clock and pid).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ ((std::process::id() as u64) << 32)
        ^ 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Finds `name` on `PATH` (like `which`).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Whether `path` is an ELF file (not a script, e.g. a pyenv shim that would fork).
pub fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}

/// Builds a 32-bit x86 executable: with `gcc -m32` if the multilib toolchain is there, else a
/// minimal hand-written ELF32 (`exit(0)` through `int 0x80`). Returns its path.
pub fn make_32bit_binary(dir: &Path) -> PathBuf {
    if let Ok(p) = try_build_program("exit3", &["-m32"], "exit3-m32") {
        let dst = dir.join("prog32");
        std::fs::copy(&p, &dst).expect("copy 32-bit program");
        return dst;
    }
    let base: u32 = 0x0804_8000;
    let code: [u8; 12] = [
        0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (exit)
        0xbb, 0x00, 0x00, 0x00, 0x00, // mov ebx, 0
        0xcd, 0x80, // int 0x80
    ];
    let total = (52 + 32 + code.len()) as u32;
    let mut f = Vec::new();
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type ET_EXEC
    f.extend_from_slice(&3u16.to_le_bytes()); // e_machine EM_386
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(base + 52 + 32).to_le_bytes()); // e_entry
    f.extend_from_slice(&52u32.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&52u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&32u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&40u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(f.len(), 52);
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type PT_LOAD
    f.extend_from_slice(&0u32.to_le_bytes()); // p_offset
    f.extend_from_slice(&base.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&base.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags R+X
    f.extend_from_slice(&0x1000u32.to_le_bytes()); // p_align
    f.extend_from_slice(&code);
    let dst = dir.join("prog32");
    std::fs::write(&dst, &f).expect("write ELF32");
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod ELF32");
    dst
}

/// Every file and directory under `root` (not following symlinks), including `root`.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        if std::fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            out.extend(entries);
        }
    }
    out
}

/// Replaces every copy of the file `original` in the trace's file store with the file
/// `replacement` (to make a replay diverge on purpose), as a trace of a recording that ran
/// `replacement` would hold it: under its own hash, every reference to it changed (the trace
/// is rewritten); panics if the trace kept no copy.
pub fn swap_trace_file(trace: &Path, key_root: &Path, original: &Path, replacement: &Path) {
    let original = std::fs::read(original).unwrap();
    let swapped_any = std::cell::Cell::new(false);
    let tmp = trace.with_extension("swapping");
    rewrite::rewrite_trace_swapping(
        trace,
        &tmp,
        key_root,
        |stored| {
            let same = std::fs::read(stored).unwrap() == original;
            swapped_any.set(swapped_any.get() || same);
            same.then(|| replacement.to_path_buf())
        },
        |_, _| {},
    );
    assert!(swapped_any.get(), "the trace keeps no copy of the file");
    std::fs::remove_dir_all(trace).unwrap();
    std::fs::rename(&tmp, trace).unwrap();
}

/// Checks the replay of a `variant` build swapped for the other (see `variant.c`): it reports a
/// divergence from getpid to getppid after replaying and echoing what came before. Returns the
/// report.
pub fn assert_variant_diverged(out: &Output) -> String {
    let err = stderr_str(out);
    assert_ne!(shell_code(&out.status), 0, "{}", describe("replay", out));
    assert_no_panic("replay", out);
    assert!(err.contains("diverged"), "{err}");
    assert!(err.contains("at event"), "{err}");
    assert!(err.contains("expected getpid"), "{err}");
    assert!(err.contains("found getppid"), "{err}");
    // Everything before the divergence replayed and was echoed.
    assert!(
        stdout_str(out).contains("before the syscall"),
        "{}",
        describe("replay", out)
    );
    err
}

/// The installed program's real executable (symlinks resolved), or `None` with a note.
pub fn installed(name: &str) -> Option<PathBuf> {
    let Some(p) = which(name) else {
        eprintln!("note: {name} is not installed; skipping");
        return None;
    };
    let real = std::fs::canonicalize(&p).unwrap_or(p);
    if !is_elf(&real) {
        eprintln!(
            "note: {} is not an ELF executable (a wrapper script?); skipping",
            real.display()
        );
        return None;
    }
    Some(real)
}

/// python3's real interpreter (`python3` may be a wrapper, e.g. a pyenv shim script that
/// forks), or `None` with a note.
pub fn python3_interpreter() -> Option<PathBuf> {
    let Some(launcher) = which("python3") else {
        eprintln!("note: python3 is not installed; skipping");
        return None;
    };
    let out = run_native(&launcher, &["-c", "import sys; print(sys.executable)"]);
    let exe = PathBuf::from(stdout_str(&out).trim());
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    if !out.status.success() || !is_elf(&exe) {
        eprintln!(
            "note: cannot find python3's real interpreter ({}); skipping",
            describe("python3", &out)
        );
        return None;
    }
    Some(exe)
}
