//! Tasks that die or stop while the recorder handles them, syscalls the kernel restarts, and
//! the end of a recording (rr's corpus: fatal_sigsegv_thread, grandchild_threads_*,
//! pid_ns_kill_*, daemon, sigstop, wait_sigstop, robust_futex, ...), and the real programs that
//! showed them (python's multiprocessing Pool, a cargo build). Each program is recorded and
//! replayed; the replay must exit 0 and print exactly what the recording printed.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::Path;

/// `deja dump TRACE`'s text.
fn dump(ctx: &Ctx, trace: &Path) -> String {
    let out = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
    assert!(out.status.success(), "{}", describe("deja dump", &out));
    stdout_str(&out)
}

/// Children killed with SIGKILL while they make syscalls: a child stopped by the recorder
/// (waiting for the CPU, at a syscall's exit) vanishes under it. Never an abort ("ESRCH");
/// every death is an `Exit` event, and the replay kills the children at the same events.
#[test]
fn children_killed_while_busy_making_syscalls() {
    let prog = program("kill_busy");
    for round in 1..=3 {
        let r = assert_replays_exactly(&prog, &["12"]);
        assert_stdout_has(
            &format!("recording {round} of kill_busy"),
            &r.rec,
            &["kill_busy: 12 of 12 children killed by SIGKILL\n"],
        );
        let killed = dump(&r.ctx, &r.trace)
            .matches("exit: killed by signal 9")
            .count();
        assert_eq!(
            killed, 12,
            "round {round}: every child's death is an Exit event"
        );
    }
}

/// Syscalls woken by a signal that the kernel restarts without delivering a signal to the
/// task: threads of a process stopped by SIGSTOP and continued by SIGCONT (one thread takes
/// each signal, the other restarts its read), and a thread's futex wait woken for a signal its
/// sibling takes. The recorded events of each call hold its final result; the group-stop is
/// real in the recording (the parent's `waitpid(WUNTRACED)` sees it).
#[test]
fn syscalls_restarted_without_a_signal() {
    let prog = threaded("restart_nosig");
    for _ in 1..=2 {
        let r = assert_replays_exactly(&prog, &[]);
        assert_stdout_has(
            "recording of restart_nosig",
            &r.rec,
            &[
                "part 1: child stopped by signal 19\n",
                "part 1: child continued\n",
                "part 1: child exited with 0\n",
                "part 2: 20 signals handled\n",
            ],
        );
    }
}

/// Python's multiprocessing Pool: worker processes, threads handing results over through
/// futexes woken by SIGCHLD (which another thread may take first: the futex restarts).
#[test]
fn python_multiprocessing_pool() {
    let Some(python) = python3_interpreter() else {
        return;
    };
    let script = "import multiprocessing as mp\n\
                  with mp.Pool(2) as p: print(p.map(abs, range(-3, 3)))";
    for round in 1..=2 {
        let r = assert_replays_exactly(&python, &["-c", script]);
        assert_stdout_has(
            &format!("recording {round} of the Pool"),
            &r.rec,
            &["[3, 2, 1, 0, 1, 2]\n"],
        );
    }
}

/// A daemon (and its busy child) still running when the initial process exits: the recording
/// ends with the initial process, the tasks left behind are killed and their deaths recorded.
#[test]
fn daemon_left_running_ends_with_the_recording() {
    let r = assert_replays_exactly(program("leave_daemon"), &[]);
    assert_stdout_has(
        "recording of leave_daemon",
        &r.rec,
        &["leave_daemon: the initial process exits, its daemon lives on\n"],
    );
    let killed = dump(&r.ctx, &r.trace)
        .matches("exit: killed by signal 9")
        .count();
    assert_eq!(killed, 2, "the daemon and its child are killed at the end");
}

/// `deja rec -w` records until every process has ended: the daemon's own line is recorded and
/// replayed, and it ends by itself.
#[test]
fn rec_wait_records_the_daemon_to_its_end() {
    let ctx = Ctx::new();
    let trace = ctx.fresh_path("trace");
    let mut cmd = ctx.deja();
    cmd.args(["rec", "-w", "-o"])
        .arg(&trace)
        .arg(program("leave_daemon"))
        .arg("brief");
    let rec = run_with_timeout(&mut cmd, TIMEOUT);
    assert_no_panic("deja rec -w", &rec);
    assert!(rec.status.success(), "{}", describe("rec -w", &rec));
    assert_stdout_has(
        "recording of leave_daemon brief",
        &rec,
        &[
            "leave_daemon: the initial process exits, its daemon lives on\n",
            "leave_daemon: the daemon ends by itself\n",
        ],
    );
    assert!(
        !dump(&ctx, &trace).contains("killed by signal 9"),
        "with -w nothing is killed"
    );
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}

/// Robust mutexes whose owner dies (a thread exits, a child is killed): the next locker gets
/// EOWNERDEAD in the recording and in the replay alike.
#[test]
fn robust_mutex_owner_dies() {
    let r = assert_replays_exactly(threaded("robust_owner_dies"), &[]);
    assert_stdout_has(
        "recording of robust_owner_dies",
        &r.rec,
        &[
            "thread: lock after the owner died: EOWNERDEAD\n",
            "child: killed by signal 9\n",
            "child: lock after the owner died: EOWNERDEAD\n",
        ],
    );
}

/// `cargo build` of a fresh crate: rustc's main thread waits in `pthread_join`'s futex while
/// `SIGCHLD`s of the jobs come (the futex restarts when another thread takes one).
#[test]
fn cargo_build_of_a_small_crate() {
    let Some(cargo) = which("cargo") else {
        eprintln!("note: cargo is not installed; skipping");
        return;
    };
    let ctx = Ctx::new();
    // Outside deja's own workspace, which `cargo new` would otherwise join.
    let outside = tempfile::tempdir().expect("a temporary directory");
    let krate = outside.path().join("small");
    let path = krate.to_string_lossy();
    let made = run_native(&cargo, &["new", "--vcs", "none", "--quiet", &path]);
    assert!(made.status.success(), "{}", describe("cargo new", &made));
    let trace = ctx.fresh_path("trace");
    let mut cmd = ctx.deja();
    cmd.current_dir(&krate)
        .env("CARGO_TARGET_DIR", krate.join("target"))
        .args(["rec", "-o"])
        .arg(&trace)
        .arg(&cargo)
        .args(["build", "--offline", "--quiet"]);
    let rec = run_with_timeout(&mut cmd, TIMEOUT);
    assert_no_panic("deja rec cargo build", &rec);
    assert!(
        rec.status.success(),
        "{}",
        describe("rec cargo build", &rec)
    );
    assert!(
        krate.join("target/debug/small").exists(),
        "cargo built the crate"
    );
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}
