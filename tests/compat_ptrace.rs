//! ptrace inside a recording: a recorded task tracing another recorded task gets the stops,
//! registers, memory and options it asks for, recorded and replayed exactly (issue 11).

mod common;

use common::*;

/// PTRACE_TRACEME, a SIGSTOP stop, PEEKDATA/POKEDATA, PTRACE_SYSCALL through every syscall
/// of the child with GETREGS, and SETREGS changing a syscall's result.
#[test]
fn tracer_follows_syscalls_and_changes_the_child() {
    let r = assert_replays_like_native(
        program("ptrace_syscalls"),
        &[],
        0,
        Some(
            "child: secret=42 getppid=4242\n\
             parent: secret was 1, poked 42\n\
             parent: enter syscall 110\n\
             parent: leave syscall 110\n\
             parent: enter syscall 1\n\
             parent: leave syscall 1\n\
             parent: enter syscall 231\n\
             parent: child exited with 3 after 5 syscall stops\n",
        ),
    );
    let show = r.ctx.run_deja(&["dump".as_ref(), r.trace.as_os_str()]);
    assert!(
        stdout_str(&show).contains("emulated ptrace"),
        "the trace has no emulated ptrace event:\n{}",
        describe("dump", &show)
    );
}

/// PTRACE_SINGLESTEP 200 times through the child's code, then PTRACE_CONT to its end.
#[test]
fn tracer_single_steps_the_child() {
    assert_replays_like_native(
        program("ptrace_step"),
        &[],
        0,
        Some(
            "child: total=385\n\
             parent: 200 steps, 200 traps, rip moved 200 times\n\
             parent: child exited with 0\n",
        ),
    );
}

/// PTRACE_ATTACH of a child blocked in `read`, fork and exit events
/// (PTRACE_O_TRACEFORK/TRACEEXIT), the auto-traced grandchild (not the tracer's child) from
/// its first stop to its end, the child's SIGCHLD stop passed on, PTRACE_DETACH.
#[test]
fn tracer_attaches_and_follows_a_fork() {
    assert_replays_like_native(
        program("ptrace_attach_fork"),
        &[],
        0,
        Some(
            "parent: fork event, the new task is newer\n\
             parent: grandchild exit event, status 5\n\
             parent: grandchild exited with 5\n\
             parent: child stopped by signal 17\n\
             parent: child exited with 6\n",
        ),
    );
}

/// A request deja does not emulate fails with EIO and a warning naming it, instead of
/// hanging; PTRACE_KILL ends the held child.
#[test]
fn unemulated_request_fails_cleanly() {
    let r = assert_replays_exactly(program("ptrace_unemulated"), &[]);
    assert_eq!(
        stdout_str(&r.rec),
        "sysemu_singlestep: -1 (Input/output error)\nkill: 0\nchild killed by signal 9\n"
    );
    assert_stderr_mentions(
        "rec",
        &r.rec,
        &["PTRACE_SYSEMU_SINGLESTEP is not emulated inside a recording"],
    );
}

/// Writes into another task's memory through `/proc/PID/mem` (`pwrite`, `lseek` + `write`),
/// which the replay does not run, are made again in replay.
#[test]
fn writes_through_proc_mem_are_replayed() {
    assert_replays_like_native(
        program("ptrace_proc_mem"),
        &[],
        0,
        Some("child: first=111 second=222\nparent: child exited with 0\n"),
    );
}

/// The real strace, or `None` (the test is skipped with a note) when it is not installed.
fn strace() -> Option<std::path::PathBuf> {
    installed("strace")
}

/// Asserts the recording emulated every ptrace request strace made (no "not emulated"
/// warning, e.g. for `PTRACE_GET_SYSCALL_INFO`, which strace uses at every syscall stop).
fn assert_every_request_emulated(rec: &std::process::Output) {
    assert!(
        !stderr_str(rec).contains("is not emulated"),
        "a request strace made was refused\n{}",
        describe("rec", rec)
    );
}

/// `strace -f -o FILE true` inside a recording: strace's self-tests (`PTRACE_SEIZE` of a
/// child stopped by job control, `PTRACE_INTERRUPT`, `PTRACE_GET_SYSCALL_INFO`) and its
/// `wait4(-1)` (passed as a zero-extended `0xffffffff`) are served, it traces `true` to its
/// end, and the replay is faithful.
#[test]
fn strace_traces_true() {
    let Some(strace) = strace() else { return };
    let ctx = Ctx::new();
    let out = ctx.dir().join("strace.out");
    let out_arg = out.to_str().expect("a UTF-8 path");
    let (trace, rec) = ctx.record(&strace, &["-f", "-o", out_arg, "true"]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    assert_every_request_emulated(&rec);
    let log = std::fs::read_to_string(&out).expect("strace wrote its output file");
    assert!(
        log.contains("execve(\"") && log.contains("+++ exited with 0 +++"),
        "strace's output lacks the traced program's exec or end:\n{log}"
    );
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}

/// strace following a C program's fork and thread, writing its trace to stderr: the program's
/// output is the native one, strace's lines name the child's `write` and its exit status, and
/// the replay echoes both streams exactly.
#[test]
fn strace_follows_a_forking_program() {
    let Some(strace) = strace() else { return };
    let prog = threaded("strace_target");
    let prog_arg = prog.to_str().expect("a UTF-8 path");
    let native = run_native(&prog, &[]);
    let r = assert_replays_exactly(&strace, &["-f", prog_arg]);
    assert_eq!(
        stdout_str(&r.rec),
        stdout_str(&native),
        "{}",
        describe("rec", &r.rec)
    );
    assert_every_request_emulated(&r.rec);
    let log = stderr_str(&r.rec);
    for needle in [
        "write(4, \"hello from the child",
        "+++ exited with 3 +++",
        "+++ exited with 0 +++",
    ] {
        assert!(
            log.contains(needle),
            "strace's trace lacks {needle:?}:\n{log}"
        );
    }
}

/// A seized tracee's group-stop (its tracer passes a `SIGSTOP` on) is reported as
/// `PTRACE_EVENT_STOP` with `SIGSTOP`; `PTRACE_CONT` runs it despite the stop, and a
/// `PTRACE_INTERRUPT` then names `SIGSTOP` while its process stays stopped. Recorded and
/// replayed like the native run (it used to leave the tracer waiting forever).
#[test]
fn tracee_group_stop_is_reported_and_resumed() {
    assert_replays_like_native(
        program("ptrace_tracee_group_stop"),
        &[],
        0,
        Some(
            "signal stop: SIGSTOP\n\
             group-stop reported: yes\n\
             interrupted while the group is stopped: SIGSTOP\n",
        ),
    );
}

/// gdb inside a recording runs a forking, threaded program to its end (its breakpoints on
/// the dynamic loader, thread events, `PTRACE_O_TRACECLONE`), and the replay is faithful.
#[test]
fn gdb_runs_a_program_inside_a_recording() {
    let Some(gdb) = installed("gdb") else { return };
    let prog = threaded("strace_target");
    let prog_arg = prog.to_str().expect("a UTF-8 path");
    let r = assert_replays_exactly(&gdb, &["-batch", "-nx", "-ex", "run", "--args", prog_arg]);
    assert_stdout_has(
        "rec",
        &r.rec,
        &[
            "parent: child exited with 3",
            "parent: thread saw its own process: yes",
            "exited normally",
        ],
    );
}

/// `PTRACE_SYSEMU`: the child stops at a syscall's entry, which its tracer skips and answers
/// itself (SETREGS); `PTRACE_SYSCALL` from such a stop shows the skipped call's exit.
#[test]
fn tracer_emulates_syscalls_with_sysemu() {
    assert_replays_like_native(
        program("ptrace_sysemu"),
        &[],
        0,
        Some(
            "entry stop: yes, syscall getpid\n\
             entry stop: yes, syscall getppid\n\
             exit stop: yes, skipped: yes\n\
             child exited with 0\n",
        ),
    );
}
