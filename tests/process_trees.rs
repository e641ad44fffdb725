//! Process trees and threads: programs that clone, fork, vfork, exec and wait, threads that
//! synchronise through futexes, signals between tasks, and real multi-process programs (a shell
//! pipeline, `make -j2`, python threads, a Rust test harness). Each is recorded and replayed; the
//! replay (`deja replay -a`) must exit 0 and print exactly what the recording printed.
//!
//! Where the program's output depends on the interleaving, native runs are first checked to
//! differ, so an equal replay means deja reproduced the recorded schedule. Where it does not,
//! the recording's output is compared with a native run's, so the recorder did not change what
//! the program did. Tests whose program (sh, make, rustc, python3) is missing print a note and
//! pass.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

// ---------------------------------------------------------------------------------------------
// 1. pthreads whose output depends on the interleaving.

/// `threads MODE`: native runs differ; three recordings each replay exactly; every recording
/// shows the mode's invariants (no lost updates, no torn reads...).
fn racy_threads(mode: &str, invariants: &[&str]) {
    let prog = threaded("threads");
    assert_native_nondeterministic_within(&prog, &[mode], 10);
    for round in 1..=3 {
        let r = assert_replays_exactly(&prog, &[mode]);
        assert_stdout_has(
            &format!("recording {round} of threads {mode}"),
            &r.rec,
            invariants,
        );
    }
}

#[test]
fn threads_mutex_log() {
    racy_threads(
        "mutex",
        &[
            "mutex: counter 12000 (expected 12000) thread0=3000 thread1=3000 thread2=3000 \
             thread3=3000\n",
            "mutex: log entries 12000 ",
        ],
    );
}

#[test]
fn threads_condvar_producers_consumers() {
    racy_threads(
        "condvar",
        &[
            "condvar: taken 3000 from producer0 1500 producer1 1500 order errors 0\n",
            "condvar: log entries 3000 ",
        ],
    );
}

#[test]
fn threads_barrier_phases() {
    racy_threads(
        "barrier",
        &[
            "barrier: phases 300 bad phases 0\n",
            "barrier: log entries 1200 ",
        ],
    );
}

#[test]
fn threads_rwlock_readers_writers() {
    racy_threads(
        "rwlock",
        &[
            "rwlock: counter 2000/2000 (expected 2000) torn reads 0\n",
            "rwlock: log entries 5000 ",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 2-4. fork, pipes, exec, wait statuses, children killed by signals, vfork and posix_spawn.

const FORK_EXEC_EXPECTED: &str = "\
talker answered: HELLO TALKER (my parent is the sender: yes)
echo wrote: echoed by /bin/echo
cat gave back 51 bytes, the same:
first line for cat
second line
third and last line
child talker: exited 1 status 11
child echo: exited 1 status 0
child cat: exited 1 status 0
child quitter: exited 1 status 42
arrival order: talker echo cat quitter 
";

#[test]
fn fork_pipes_exec_and_exit_statuses() {
    assert_replays_like_native(program("fork_exec"), &[], 0, Some(FORK_EXEC_EXPECTED));
}

#[test]
fn children_killed_by_sigsegv_and_sigkill() {
    // The recording printed what the native run printed, so these hold natively too.
    let r = assert_replays_like_native(program("child_signaled"), &[], 0, None);
    assert_stdout_has(
        "rec of child_signaled",
        &r.rec,
        &[
            "segv child: WIFEXITED 0 WIFSIGNALED 1 WTERMSIG 11 ",
            "blocked child: WIFEXITED 0 WIFSIGNALED 1 WTERMSIG 9 ",
            "parent done\n",
        ],
    );
}

#[test]
fn vfork_exec_and_posix_spawn() {
    let expected = "\
hello from vfork + execve of /bin/echo
vfork echo: exited 1 status 0
vfork true: exited 1 status 0
vfork _exit(5): exited 1 status 5
posix_spawn child wrote: hello from posix_spawn through a pipe
posix_spawn echo: exited 1 status 0
posix_spawnp true: exited 1 status 0
";
    assert_replays_like_native(program("vfork_spawn"), &[], 0, Some(expected));
}

// ---------------------------------------------------------------------------------------------
// 5-8. Real programs that start processes or threads.

#[test]
fn sh_pipeline_ls_sort_head() {
    let Some(sh) = installed("sh") else { return };
    let args = ["-c", "ls / | sort | head"];
    // The recorded pipeline printed what the native one printed.
    let r = assert_replays_like_native(&sh, &args, 0, None);
    assert!(
        stdout_str(&r.rec).lines().count() >= 3,
        "ls / printed too little\n{}",
        describe("rec", &r.rec)
    );
}

/// Writes a small C project (4 .c files, a header, a Makefile whose default goal builds and runs
/// the program) into `dir`.
fn write_c_project(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let files: &[(&str, &str)] = &[
        (
            "parts.h",
            "int part_a(int x);\nint part_b(int x);\nint part_c(int x);\n",
        ),
        (
            "a.c",
            "#include \"parts.h\"\nint part_a(int x) { return 3 * x + 1; }\n",
        ),
        (
            "b.c",
            "#include \"parts.h\"\nint part_b(int x) { int s = 0; for (int i = 0; i <= x; i++) s += i; return s; }\n",
        ),
        (
            "c.c",
            "#include \"parts.h\"\nint part_c(int x) { return part_a(x) * part_b(x); }\n",
        ),
        (
            "main.c",
            "#include <stdio.h>\n#include \"parts.h\"\n\
             int main(void) { printf(\"project result: a=%d b=%d c=%d\\n\", part_a(4), part_b(4), part_c(4)); return 0; }\n",
        ),
        (
            "Makefile",
            "CC = gcc\nCFLAGS = -O1\nOBJS = a.o b.o c.o main.o\n\n\
             run: prog\n\t./prog\n\n\
             prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n\
             %.o: %.c parts.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Variables a surrounding `make` (or cargo) may have set that would change how make runs.
fn without_make_env(cmd: &mut Command) {
    for var in [
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        "MAKEFILES",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
}

#[test]
fn make_j2_builds_a_c_project() {
    // The only reason to skip: make is not installed (CI installs it).
    let Some(make) = installed("make") else {
        return;
    };
    let ctx = Ctx::new();
    let result_line = "project result: a=13 b=10 c=130\n";

    // The project builds natively (so a failure below is deja's).
    let native_dir = ctx.dir().join("native-project");
    write_c_project(&native_dir);
    let mut cmd = Command::new(&make);
    cmd.arg("-j2").arg("-C").arg(&native_dir);
    without_make_env(&mut cmd);
    let native = run_with_timeout(&mut cmd, TIMEOUT);
    assert!(
        native.status.success() && stdout_str(&native).contains(result_line),
        "the generated project does not build natively\n{}",
        describe("native make", &native)
    );

    let dir = ctx.dir().join("project");
    write_c_project(&dir);
    let dir_s = dir.to_str().unwrap();
    let (trace, rec) = ctx.record_with(&make, &["-j2", "-C", dir_s], without_make_env);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    assert_stdout_has(
        "rec of make -j2",
        &rec,
        &[
            result_line,
            "Entering directory",
            "-c -o a.o a.c",
            "-c -o b.o b.c",
            "-c -o c.o c.c",
            "-c -o main.o main.c",
            "gcc -o prog",
        ],
    );
    assert!(
        dir.join("prog").is_file(),
        "make under deja did not produce the program"
    );
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}

const PYTHON_THREADS: &str = r#"
import random, threading, time
lock = threading.Lock()
total = 0
finished = []
def work(i):
    global total
    mine = 0
    for k in range(300):
        with lock:
            total += 1
        mine += k * (i + 1)
        if k % 60 == 0:
            time.sleep(random.random() / 500)
    with lock:
        finished.append(i)
threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("total", total)
print("completion order", " ".join(map(str, finished)))
"#;

#[test]
fn python_threads_with_a_lock() {
    let Some(python) = python3_interpreter() else {
        return;
    };
    let args = ["-c", PYTHON_THREADS];
    assert_native_nondeterministic_within(&python, &args, 10);
    for round in 1..=2 {
        let r = assert_replays_exactly(&python, &args);
        let out = stdout_str(&r.rec);
        assert!(
            out.starts_with("total 1800\ncompletion order "),
            "recording {round}\n{}",
            describe("rec", &r.rec)
        );
        let order = out.lines().nth(1).unwrap_or("");
        let mut ids: Vec<&str> = order
            .trim_start_matches("completion order")
            .split_whitespace()
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            ["0", "1", "2", "3", "4", "5"],
            "recording {round}\n{}",
            describe("rec", &r.rec)
        );
    }
}

const RUST_TESTS: &str = r#"
use std::time::Duration;

fn spin(n: u64) -> u64 {
    let mut x = n;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

#[test]
fn sleeps_3ms() {
    std::thread::sleep(Duration::from_millis(3));
}

#[test]
fn sleeps_1ms() {
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
fn computes_a() {
    assert_ne!(spin(300_000), 0);
}

#[test]
fn computes_b() {
    assert_ne!(spin(600_000), 1);
}

#[test]
fn computes_then_sleeps() {
    spin(100_000);
    std::thread::sleep(Duration::from_millis(2));
}

#[test]
fn sleeps_then_computes() {
    std::thread::sleep(Duration::from_millis(1));
    spin(200_000);
}
"#;

const RUST_TEST_NAMES: [&str; 6] = [
    "sleeps_3ms",
    "sleeps_1ms",
    "computes_a",
    "computes_b",
    "computes_then_sleeps",
    "sleeps_then_computes",
];

/// Variables of the libtest harness that would change what the recorded test binary does.
fn without_test_env(cmd: &mut Command) {
    for var in [
        "RUST_TEST_THREADS",
        "RUST_TEST_NOCAPTURE",
        "RUST_TEST_SHUFFLE",
        "RUST_TEST_SHUFFLE_SEED",
        "RUST_TEST_TIME_UNIT",
        "RUST_TEST_TIME_INTEGRATION",
        "RUST_TEST_TIME_DOCTEST",
    ] {
        cmd.env_remove(var);
    }
}

#[test]
fn rust_test_harness_on_four_threads() {
    let Some(rustc) = which("rustc") else {
        eprintln!("note: rustc is not on PATH; skipping");
        return;
    };
    let ctx = Ctx::new();
    let src = ctx.dir().join("harness_tests.rs");
    std::fs::write(&src, RUST_TESTS).unwrap();
    let bin = ctx.dir().join("harness_tests");
    let build = run_with_timeout(
        Command::new(&rustc)
            .args(["--edition", "2021", "--test", "-O", "-o"])
            .arg(&bin)
            .arg(&src),
        TIMEOUT,
    );
    assert!(
        build.status.success(),
        "rustc could not build the test binary\n{}",
        describe("rustc", &build)
    );
    let (trace, rec) = ctx.record_with(&bin, &["--test-threads=4"], without_test_env);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let mut needles = vec![
        "running 6 tests\n".to_string(),
        "test result: ok. 6 passed; 0 failed".to_string(),
    ];
    needles.extend(RUST_TEST_NAMES.iter().map(|n| format!("test {n} ... ok\n")));
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    assert_stdout_has("rec of the test harness", &rec, &needles);
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}

// ---------------------------------------------------------------------------------------------
// 9. Signals between tasks.

/// The lines the reader thread of `thread_signal_read` printed.
fn reader_lines(out: &Output) -> Vec<String> {
    stdout_str(out)
        .lines()
        .filter(|l| l.starts_with("reader: "))
        .map(str::to_owned)
        .collect()
}

fn thread_signal_read(mode: &str, reader_expected: &[&str]) {
    let prog = threaded("thread_signal_read");
    let native = native_expect(&prog, &[mode], 0);
    assert_eq!(
        reader_lines(&native),
        reader_expected,
        "the test program misbehaves natively\n{}",
        describe("native", &native)
    );
    let r = assert_replays_exactly(&prog, &[mode]);
    assert_eq!(
        reader_lines(&r.rec),
        reader_expected,
        "the reader saw something else under the recorder\n{}",
        describe("rec", &r.rec)
    );
    assert_stdout_has(
        "rec",
        &r.rec,
        &[
            &format!("mode {mode}: "),
            "handler ran 1 time(s), in thread 1\n",
        ],
    );
}

#[test]
fn pthread_kill_interrupts_read_with_sa_restart() {
    thread_signal_read("restart", &["reader: first read returned 1 byte 'x'"]);
}

#[test]
fn pthread_kill_interrupts_read_without_sa_restart() {
    thread_signal_read(
        "norestart",
        &[
            "reader: first read returned -1 errno EINTR",
            "reader: second read returned 1 byte 'x'",
        ],
    );
}

#[test]
fn sigchld_handler_with_sigsuspend() {
    let prog = program("sigchld");
    assert_native_nondeterministic_within(&prog, &[], 10);
    let r = assert_replays_exactly(&prog, &[]);
    let out = stdout_str(&r.rec);
    assert!(
        out.starts_with("reaped 6 children, status sum 75\nhandler ran "),
        "{}",
        describe("rec", &r.rec)
    );
    // sigsuspend returned at least once, each time after the handler ran (which may run again
    // before sigsuspend returns); the handler ran at most once per child.
    let line = out.lines().nth(1).unwrap_or("");
    let nums: Vec<u32> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        nums.len() == 2 && 1 <= nums[1] && nums[1] <= nums[0] && nums[0] <= 6,
        "unexpected handler/sigsuspend counts in {line:?}\n{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn sigpipe_ignored_gives_epipe() {
    let expected = "reader child exited with status 0; writing again (SIGPIPE ignored)\n\
                    second write returned -1 errno EPIPE\n";
    assert_replays_like_native(program("sigpipe"), &["ignore"], 0, Some(expected));
}

#[test]
fn sigpipe_default_kills_the_writer() {
    let expected = "reader child exited with status 0; writing again (SIGPIPE default)\n";
    // rec exits 141 like the program; the faithful replay exits 0 with the same output.
    let r = assert_replays_like_native(program("sigpipe"), &["default"], 128 + 13, Some(expected));
    // The trace says how the program ended.
    let info = r.ctx.info_json(&r.trace);
    assert_eq!(
        info["exit"],
        serde_json::json!({"Signaled": 13}),
        "info --json does not show death by SIGPIPE (13)\n{info}"
    );
}

#[test]
fn process_directed_signal_goes_to_the_thread_that_unblocks_it() {
    let expected = "\
round 0: SIGUSR2 sent to the process, handled by thread 2 (handled 1 so far); blocked in workers: 1 1 0 1; main blocks it: 1
round 1: SIGUSR2 sent to the process, handled by thread 0 (handled 2 so far); blocked in workers: 0 1 1 1; main blocks it: 1
round 2: SIGUSR2 sent to the process, handled by thread 3 (handled 3 so far); blocked in workers: 1 1 1 0; main blocks it: 1
";
    assert_replays_like_native(threaded("thread_sigmask"), &[], 0, Some(expected));
}

// ---------------------------------------------------------------------------------------------
// 10. Scale: a thousand children under a low descriptor limit.

/// Makes the command (and so deja and the program it runs) start with `RLIMIT_NOFILE` = `n`.
fn with_fd_limit(cmd: &mut Command, n: u64) {
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn thousand_children_under_a_low_fd_limit() {
    let prog = program("fork_many");
    let n = 1000u64;
    let sum: u64 = (0..n).map(|i| i % 256).sum();
    let squares: u64 = (0..n).map(|i| (i % 256) * (i % 256)).sum();
    let expected =
        format!("forked {n} children, reaped {n}, status sum {sum}, sum of squares {squares}\n");
    let native = native_expect(&prog, &[], 0);
    assert_eq!(
        stdout_str(&native),
        expected,
        "{}",
        describe("native", &native)
    );

    let ctx = Ctx::new();
    // 256 descriptors: plenty for a recorder that keeps a few per live task (the program keeps
    // at most 8 children alive), far too few for one that leaks one per child.
    let (trace, rec) = ctx.record_with(&prog, &[], |c| with_fd_limit(c, 256));
    assert_eq!(
        shell_code(&rec.status),
        0,
        "rec of 1000 forks with 256 descriptors failed (a descriptor leaked per child?)\n{}",
        describe("rec", &rec)
    );
    assert_eq!(stdout_str(&rec), expected, "{}", describe("rec", &rec));
    let mut cmd = ctx.deja();
    cmd.arg("replay").arg("-a").arg(&trace);
    with_fd_limit(&mut cmd, 256);
    let replay = run_with_timeout(&mut cmd, TIMEOUT);
    assert_replay_matches(&rec, &replay);
}

// ---------------------------------------------------------------------------------------------
// 11. deja ps.

#[test]
fn ps_lists_the_process_tree() {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("fork_exec"), &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    // ps checks the header and that there is no blank line.
    let rows = ctx.ps(&trace);
    let ctx_msg = || format!("deja ps rows: {rows:#?}");
    assert_eq!(
        rows.len(),
        5,
        "expected the initial process and its 4 children\n{}",
        ctx_msg()
    );
    for r in &rows {
        assert!(
            r.pid.parse::<u32>().is_ok(),
            "PID {:?} is not a number\n{}",
            r.pid,
            ctx_msg()
        );
    }
    let pids: Vec<&str> = rows.iter().map(|r| r.pid.as_str()).collect();
    let mut unique = pids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), rows.len(), "duplicate PIDs\n{}", ctx_msg());
    // The initial process is the one whose parent is not in the trace.
    let roots: Vec<&PsRow> = rows
        .iter()
        .filter(|r| !pids.contains(&r.ppid.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "expected exactly one root\n{}", ctx_msg());
    let root = roots[0];
    assert_eq!(root.exit, "0", "the initial process's exit\n{}", ctx_msg());
    assert!(
        root.cmd.contains("fork_exec"),
        "the initial process's CMD\n{}",
        ctx_msg()
    );
    let children: Vec<&PsRow> = rows.iter().filter(|r| r.pid != root.pid).collect();
    for c in &children {
        assert_eq!(
            c.ppid,
            root.pid,
            "child {} has PPID {}, not the initial process's PID\n{}",
            c.pid,
            c.ppid,
            ctx_msg()
        );
    }
    let mut exits: Vec<&str> = children.iter().map(|c| c.exit.as_str()).collect();
    exits.sort();
    assert_eq!(
        exits,
        ["0", "0", "11", "42"],
        "the children's exit codes\n{}",
        ctx_msg()
    );
    for (exe, what) in [("/bin/echo", "echo"), ("/bin/cat", "cat")] {
        let row = children
            .iter()
            .find(|c| c.cmd.contains(exe))
            .unwrap_or_else(|| panic!("no child with {exe} in its CMD\n{}", ctx_msg()));
        assert_eq!(row.exit, "0", "the {what} child's exit\n{}", ctx_msg());
    }
    let echo = children
        .iter()
        .find(|c| c.cmd.contains("/bin/echo"))
        .unwrap();
    assert!(
        echo.cmd.contains("echoed by"),
        "the echo child's CMD should be its exec'd command line\n{}",
        ctx_msg()
    );
}

// ---------------------------------------------------------------------------------------------
// 12. Traces of an older format.

/// Runs SQL on a trace's index with the sqlite3 CLI, else the real python3's sqlite3 module.
/// Returns false (with a note) when neither is available.
fn run_sql(index: &Path, sql: &str) -> bool {
    if let Some(sqlite3) = which("sqlite3") {
        let out = run_with_timeout(Command::new(sqlite3).arg(index).arg(sql), TIMEOUT);
        if out.status.success() && out.stderr.is_empty() {
            return true;
        }
        eprintln!("note: {}", describe("sqlite3", &out));
    }
    let Some(python) = python3_interpreter() else {
        eprintln!("note: neither sqlite3 nor python3 can edit the index");
        return false;
    };
    let script = "import sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1])\n\
                  db.executescript(sys.argv[2])\n\
                  db.commit()\n";
    let out = run_native(&python, &["-c", script, index.to_str().unwrap(), sql]);
    assert!(
        out.status.success(),
        "python3 could not run {sql:?} on the index\n{}",
        describe("python3", &out)
    );
    true
}

fn assert_refused_as_version_1(ctx: &Ctx, trace: &Path, what: &str) {
    let out = ctx.replay(trace);
    assert_one_line_error(what, &out);
    let err = stderr_str(&out);
    assert!(
        err.contains("format version 1") && err.contains("record the program again"),
        "{what}: the error should name format version 1 and say to record the program again\n{}",
        describe(what, &out)
    );
}

#[test]
fn older_trace_format_is_refused() {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("exit3"), &[]);
    assert_eq!(shell_code(&rec.status), 3, "{}", describe("rec", &rec));
    assert_replay_matches(&rec, &ctx.replay(&trace));
    let index = trace.join("index.sqlite");
    assert!(index.is_file(), "no index.sqlite in {}", trace.display());

    // The metadata says version 1 (the index's own version still current).
    let meta_sql = "UPDATE meta SET value = json_set(value, '$.format_version', 1) \
                    WHERE key = 'meta';";
    if !run_sql(&index, meta_sql) {
        return;
    }
    assert_refused_as_version_1(&ctx, &trace, "replay -a of a trace whose metadata says 1");

    // Both say version 1, as in a trace written by an older deja.
    assert!(run_sql(&index, "PRAGMA user_version = 1;"));
    assert_refused_as_version_1(&ctx, &trace, "replay -a of a format 1 trace");
}

// ---------------------------------------------------------------------------------------------
// 13-14. A thread that never makes a syscall; exit() from a thread.

/// The iteration count of `spin_thread`'s loop that takes about `secs` seconds on this machine
/// (measured by a short native run, which prints how long its loop took).
fn spin_iterations_for(prog: &Path, secs: f64) -> u64 {
    let probe: u64 = 300_000_000;
    // The faster of two runs: a run slowed down by other tests would make the real loop too
    // short for the warning.
    let took = (0..2)
        .map(|_| {
            let out = native_expect(prog, &[&probe.to_string()], 0);
            stdout_str(&out)
                .lines()
                .find_map(|l| l.strip_prefix("spinner: ")?.split(" in ").nth(1))
                .and_then(|t| t.trim_end_matches(" s").parse::<f64>().ok())
                .unwrap_or_else(|| {
                    panic!("cannot read the loop's time\n{}", describe("native", &out))
                })
        })
        .fold(f64::INFINITY, f64::min);
    ((probe as f64 / took.max(0.001)) * secs).clamp(5e8, 5e10) as u64
}

/// A thread that computes for a second without a syscall no longer holds up the others: the
/// recorder preempts it, so the sleeper's line comes out while the spinner still computes, and
/// the replay reaches the same preemption points exactly.
#[test]
fn spinning_thread_is_preempted() {
    let prog = threaded("spin_thread");
    let n = spin_iterations_for(&prog, 1.0);
    let n_s = n.to_string();
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[&n_s]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let out = stdout_str(&rec);
    let woke = out.find("sleeper: woke up\n");
    let spun = out.find(&format!("spinner: {n} iterations -> "));
    assert!(
        matches!((woke, spun), (Some(w), Some(s)) if w < s),
        "the sleeper should print while the spinner computes\n{}",
        describe("rec", &rec)
    );
    assert!(
        !stderr_str(&rec).contains("without a system call"),
        "{}",
        describe("rec", &rec)
    );
    ctx.assert_preempted_and_replays(&trace, &rec);
}

#[test]
fn exit_from_a_non_main_thread() {
    let prog = threaded("thread_exit");
    let native = native_expect(&prog, &[], 7);
    assert_stdout_has("native", &native, &["worker 0: calling exit(7)\n"]);
    let r = assert_replays_exactly_status(&prog, &[], 7);
    assert_stdout_has(
        "rec",
        &r.rec,
        &[
            "main: starting workers\n",
            "worker 1: blocking in read\n",
            "worker 2: blocking in read\n",
            "worker 0: calling exit(7)\n",
        ],
    );
    assert!(
        !stdout_str(&r.rec).contains("unexpected"),
        "{}",
        describe("rec", &r.rec)
    );
}

/// A divergence in a child process is reported with the event and the child's task id: the
/// trace's copy of the program a shell runs in a child is swapped for a build that makes
/// another syscall.
#[test]
fn divergence_in_a_child_names_the_task() {
    let recorded = build_program("variant", &["-DVARIANT=1"], "variant1");
    let swapped = build_program("variant", &["-DVARIANT=2"], "variant2");
    let ctx = Ctx::new();
    let sh = installed("sh").expect("sh");
    let script = r#""$0"; echo "after the child""#;
    let (trace, rec) = ctx.record(&sh, &["-c", script, recorded.to_str().unwrap()]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let ps = ctx.ps(&trace);
    let child_pid = ps
        .iter()
        .find(|r| r.cmd.contains("variant1") && r.ppid != "--")
        .map(|r| r.pid.clone())
        .unwrap_or_else(|| panic!("no variant1 process: {ps:#?}"));
    // Swap the trace's copy of the executable for the other build.
    swap_trace_file(&trace, &ctx.trace_root(), &recorded, &swapped);
    let err = assert_variant_diverged(&ctx.replay(&trace));
    assert!(
        err.contains(&format!("(task {child_pid})")),
        "the report does not name task {child_pid}: {err}"
    );
}

/// Anonymous and file `MAP_SHARED` memory written by forked children replays exactly; the
/// file mapping, which a process outside the recording could change, is warned about by name.
#[test]
fn shared_memory_between_forked_processes() {
    let ctx = Ctx::new();
    let file = ctx.dir().join("shared-page");
    let prog = program("shared_memory");
    let (trace, rec) = ctx.record(&prog, &[file.to_str().unwrap()]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    assert_stdout_has("rec", &rec, &["anon 3000 file 6000"]);
    let err = stderr_str(&rec);
    assert!(
        err.lines().any(|l| l.starts_with("deja: warning:")
            && l.contains(file.to_str().unwrap())
            && l.contains("mapped shared")),
        "no warning naming the shared file\n{}",
        describe("rec", &rec)
    );
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}
