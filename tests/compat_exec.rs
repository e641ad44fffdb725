//! Programs from the `exec` families of issue 11, recorded and replayed exactly: `fexecve` of
//! a memfd (an executable without a path), `execve` from a thread that is not the main one, a
//! program's own seccomp filter (`SECCOMP_RET_ERRNO` and `SECCOMP_RET_TRAP` with a `SIGSYS`
//! handler), and realtime signals queued with `sigqueue`; a signal mask blocking `SIGSEGV`
//! survives an exec (deja's `rdtsc` trap in the new program's loader must not unblock it).

mod common;

use common::*;

#[test]
fn fexecve_of_a_memfd_replays_exactly() {
    let prog = program("memfd_exec");
    assert_replays_like_native(
        &prog,
        &[],
        0,
        Some("copied some bytes into the memfd\nsecond run: exe is a memfd: yes\n"),
    );
}

#[test]
fn execve_from_a_second_thread_replays_exactly() {
    let prog = threaded("thread_exec");
    assert_replays_like_native(
        &prog,
        &[],
        0,
        Some(
            "thread is not main, exec\nafter exec: pid == tid, SIGUSR2 blocked, SIGSEGV blocked\n",
        ),
    );
}

#[test]
fn own_seccomp_filter_with_errno_and_trap_replays_exactly() {
    let prog = program("own_seccomp");
    let round = "getppid: -1 (Operation not permitted)\n";
    let mut expected = String::from("PR_GET_SECCOMP before: 0\nPR_GET_SECCOMP after: 2\n");
    for n in 1..=3 {
        expected.push_str(round);
        expected.push_str(&format!(
            "uname: 42, SIGSYS handled {n} times, siginfo right\n"
        ));
    }
    assert_replays_like_native(&prog, &[], 0, Some(&expected));
}

#[test]
fn realtime_signals_queued_with_sigqueue_replay_exactly() {
    let prog = program("sigqueue_rt");
    assert_replays_like_native(
        &prog,
        &[],
        0,
        Some(
            "queued: 6 delivered: RTMIN+2=100 RTMIN+2=103 RTMIN+1=101 RTMIN+1=102 \
             RTMIN+1=104 RTMIN+1=105\nraised 31, caught 31\n",
        ),
    );
}

#[test]
fn the_program_inherits_the_default_sigpipe_not_deja_s() {
    // deja, a Rust program, ignores SIGPIPE itself; the recorded program must not inherit that.
    let prog = program("inherited_sigpipe");
    assert_replays_like_native(&prog, &[], 0, Some("child killed by signal 13\n"));
}

#[test]
fn a_clone_vm_child_killing_itself_runs_up_to_its_kill_in_replay() {
    let prog = program("clone_vm_selfkill");
    assert_replays_like_native(&prog, &[], 0, Some("child killed by 9; word 7: abcdefg\n"));
}

#[test]
fn a_signal_unblocked_when_ppoll_restarts_after_ignored_signals_replays_exactly() {
    let prog = program("ppoll_ignored_signal");
    let mut expected = String::new();
    for round in 0..4 {
        expected.push_str(&format!(
            "round {round}: ppoll 0, SIGCHLD handled -, blocked after: no\n"
        ));
    }
    assert_replays_like_native(&prog, &[], 0, Some(&expected));
}

#[test]
fn a_pid_namespace_init_survives_a_signal_it_has_no_handler_for_in_replay() {
    let prog = program("ns_init_signal");
    assert_replays_like_native(&prog, &[], 0, Some("child exited with 55\n"));
}
