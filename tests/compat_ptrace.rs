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
