//! Resume requests held back (`tracee::deferred`): a held `PTRACE_CONT` leaves the task
//! stopped until `run` (or a wait) makes it, and a held request for a task killed meanwhile is
//! dropped without an error.

use std::path::PathBuf;

use tracee::{deferred, spawn, SignalState, SpawnOptions, Stop, Tracee};

/// `/bin/true`, spawned stopped at its start under ptrace (no seccomp filter).
fn stopped_true() -> Tracee {
    let program = PathBuf::from("/bin/true");
    spawn(&SpawnOptions {
        program: program.clone(),
        argv: vec![program.display().to_string()],
        env: vec![],
        cpu: None,
        trap_tsc: false,
        seccomp: false,
        allow_syscalls_from: None,
        no_core_dump: true,
        signals: SignalState::default(),
        bind_over: None,
        own_process_group: true,
    })
    .expect("spawning /bin/true")
}

/// The scheduler state of task `pid` (`/proc/PID/stat`'s third field).
fn state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    let rest = &stat[stat.rfind(')').expect("a command name") + 1..];
    rest.trim_start().chars().next().expect("a state")
}

#[test]
fn a_held_resume_waits_for_run() {
    let t = stopped_true();
    let pid = t.pid().as_raw();
    deferred::defer();
    t.cont(0).expect("holding the resume");
    // Long enough for a resumed /bin/true to have run and exited.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(
        state(pid),
        't',
        "the task ran before the held resume was made"
    );
    deferred::run().expect("making the held resume");
    assert_eq!(t.wait().expect("waiting"), Stop::Exited(0));
}

#[test]
fn a_wait_makes_the_held_resumes_first() {
    let t = stopped_true();
    deferred::defer();
    t.cont(0).expect("holding the resume");
    // The wait itself resumes the task first: without that it would wait forever.
    assert_eq!(t.wait().expect("waiting"), Stop::Exited(0));
    deferred::run().expect("nothing left to make");
}

#[test]
fn a_held_resume_of_a_killed_task_is_dropped() {
    let t = stopped_true();
    let pid = t.pid().as_raw();
    deferred::defer();
    t.cont(0).expect("holding the resume");
    // SAFETY: kill(2) of our own tracee.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Reaped here, without a wait of `tracee::stop` (which would make the held request
    // first): the held request then finds no task.
    let mut status = 0;
    // SAFETY: waitpid stores one int at `status`, a local.
    let who = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    assert_eq!(who, pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    deferred::run().expect("a request for a task that is gone is dropped");
}
