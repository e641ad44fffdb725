//! `deja ps` and the process counts of `deja info`, from hand-made event lists.

use super::*;
use trace_format::{CloneEvent, ExecEvent, ExitEvent, FileRef, StartEvent, SyscallEvent};

const SIGCHLD: u64 = libc::SIGCHLD as u64;
/// What glibc's `pthread_create` passes to `clone3`.
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

fn exec(tid: Tid, argv: &[&str]) -> Event {
    Event::Exec(Box::new(ExecEvent {
        tid,
        regs: [0; 27],
        exe: FileRef {
            hash: "0".repeat(64),
            path: format!("/usr/bin/{}", argv.first().copied().unwrap_or("prog")),
            size: 0,
        },
        argv: argv.iter().map(|a| a.to_string()).collect(),
        stack_addr: 0x7fff_0000,
        stack: Vec::new(),
        mappings: Vec::new(),
        sig_blocked: 0,
        sig_ignored: 0,
        comm: String::new(),
        syscallbuf: None,
    }))
}

/// `parent` (a task of process `parent_pid`) makes process `child` (fork-like flags).
fn fork(parent: Tid, parent_pid: Tid, child: Tid) -> Event {
    Event::Clone(CloneEvent {
        tid: parent,
        nr: 56,
        child,
        child_pid: child,
        parent_pid,
        flags: SIGCHLD,
        writes: Vec::new(),
    })
}

/// `parent` (a task of process `pid`) makes thread `child` in the same process.
fn thread(parent: Tid, pid: Tid, child: Tid) -> Event {
    Event::Clone(CloneEvent {
        tid: parent,
        nr: 435,
        child,
        child_pid: pid,
        parent_pid: pid,
        flags: THREAD_FLAGS,
        writes: Vec::new(),
    })
}

fn start(tid: Tid) -> Event {
    Event::Start(StartEvent {
        tid,
        writes: Vec::new(),
        slot: None,
    })
}

fn syscall(tid: Tid) -> Event {
    Event::Syscall(SyscallEvent {
        tid,
        nr: 39,
        args: [0; 6],
        rip: 0x401000,
        regs_digest: 0,
        result: i64::from(tid),
        writes: Vec::new(),
        mapped_file: None,
        file_effect: None,
        echo: None,
    })
}

fn exit(tid: Tid, status: ExitStatus) -> Event {
    Event::Exit(ExitEvent { tid, status })
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn row(pid: Tid, ppid: Option<Tid>, exit: Option<ExitStatus>, args: &[&str]) -> ProcessRow {
    ProcessRow {
        pid,
        ppid,
        exit,
        argv: argv(args),
    }
}

fn table(events: &[Event]) -> ProcessTable {
    process_table(&argv(&["meta-argv", "x"]), events)
}

#[test]
fn fork_then_exec_in_the_child() {
    let events = [
        exec(100, &["sh", "-c", "ls -l"]),
        syscall(100),
        fork(100, 100, 101),
        start(101),
        syscall(100),
        exec(101, &["ls", "-l"]),
        syscall(101),
        exit(101, ExitStatus::Exited(0)),
        syscall(100),
        exit(100, ExitStatus::Exited(2)),
    ];
    let t = table(&events);
    assert_eq!(
        t.rows,
        vec![
            row(
                100,
                None,
                Some(ExitStatus::Exited(2)),
                &["sh", "-c", "ls -l"]
            ),
            row(101, Some(100), Some(ExitStatus::Exited(0)), &["ls", "-l"]),
        ]
    );
    assert_eq!(t.tasks, 2);
    assert_eq!(
        t.rows.iter().map(ps_line).collect::<Vec<_>>(),
        vec![
            "100      --       2            sh -c ls -l",
            "101      100      0            ls -l",
        ]
    );
}

#[test]
fn threads_are_not_processes() {
    let events = [
        exec(100, &["worker", "4"]),
        thread(100, 100, 101),
        start(101),
        thread(101, 100, 102),
        start(102),
        syscall(102),
        // A thread's end is not its process's.
        exit(101, ExitStatus::Exited(7)),
        exit(102, ExitStatus::Exited(7)),
        exit(100, ExitStatus::Exited(0)),
    ];
    let t = table(&events);
    assert_eq!(
        t.rows,
        vec![row(
            100,
            None,
            Some(ExitStatus::Exited(0)),
            &["worker", "4"]
        )]
    );
    assert_eq!(t.tasks, 3);
}

#[test]
fn thread_exit_does_not_count_as_the_leaders() {
    // The process's leader never exits in the trace (cut off), but one of its threads does.
    let events = [
        exec(100, &["worker"]),
        thread(100, 100, 101),
        start(101),
        exit(101, ExitStatus::Exited(0)),
    ];
    let t = table(&events);
    assert_eq!(t.rows, vec![row(100, None, None, &["worker"])]);
}

#[test]
fn a_thread_forks_a_process_of_its_own_process() {
    let events = [
        exec(100, &["server"]),
        thread(100, 100, 101),
        start(101),
        fork(101, 100, 102),
        start(102),
        exec(102, &["helper", "--once"]),
        // The child's thread forks a grandchild.
        thread(102, 102, 103),
        start(103),
        fork(103, 102, 104),
        exit(104, ExitStatus::Exited(0)),
        exit(103, ExitStatus::Exited(0)),
        exit(102, ExitStatus::Exited(0)),
        exit(101, ExitStatus::Exited(0)),
        exit(100, ExitStatus::Exited(0)),
    ];
    let t = table(&events);
    let ok = Some(ExitStatus::Exited(0));
    assert_eq!(
        t.rows,
        vec![
            row(100, None, ok, &["server"]),
            row(102, Some(100), ok, &["helper", "--once"]),
            row(104, Some(102), ok, &["helper", "--once"]),
        ]
    );
    assert_eq!(t.tasks, 5);
}

#[test]
fn child_without_exec_keeps_its_parents_command_line_at_fork_time() {
    let events = [
        exec(100, &["make", "-j2"]),
        fork(100, 100, 101),
        start(101),
        // The parent execs after the fork: the child keeps the old command line.
        exec(100, &["cc", "-c", "a.c"]),
        exit(101, ExitStatus::Signaled(9)),
        exit(100, ExitStatus::Exited(1)),
    ];
    let t = table(&events);
    assert_eq!(
        t.rows,
        vec![
            row(100, None, Some(ExitStatus::Exited(1)), &["cc", "-c", "a.c"]),
            row(
                101,
                Some(100),
                Some(ExitStatus::Signaled(9)),
                &["make", "-j2"]
            ),
        ]
    );
    assert_eq!(
        ps_line(&t.rows[1]),
        "101      100      137          make -j2"
    );
}

#[test]
fn missing_exit_is_none() {
    // A recording cut off while both processes ran.
    let events = [
        exec(100, &["sh"]),
        fork(100, 100, 101),
        start(101),
        exec(101, &["sleep", "10"]),
        syscall(101),
    ];
    let t = table(&events);
    assert_eq!(
        t.rows,
        vec![
            row(100, None, None, &["sh"]),
            row(101, Some(100), None, &["sleep", "10"]),
        ]
    );
    assert_eq!(
        ps_line(&t.rows[1]),
        "101      100      none         sleep 10"
    );
}

#[test]
fn initial_process_before_any_exec_has_the_traces_command_line() {
    // Cut off before the exec event was written: only the metadata knows the command.
    let t = table(&[syscall(100)]);
    assert_eq!(t.rows, vec![row(100, None, None, &["meta-argv", "x"])]);
    let t = table(&[]);
    assert!(t.rows.is_empty());
    assert_eq!(t.tasks, 0);
}

#[test]
fn exec_without_argv_shows_the_executable() {
    let t = table(&[exec(100, &[]), exit(100, ExitStatus::Exited(0))]);
    assert_eq!(
        t.rows,
        vec![row(
            100,
            None,
            Some(ExitStatus::Exited(0)),
            &["/usr/bin/prog"]
        )]
    );
}

#[test]
fn exec_by_a_thread_belongs_to_its_process() {
    // A non-leader thread execs: the kernel gives it the process id, and the process goes on
    // with the new program.
    let events = [
        exec(100, &["app"]),
        thread(100, 100, 101),
        start(101),
        exit(101, ExitStatus::Exited(0)),
        exec(100, &["newapp", "--resumed"]),
        exit(100, ExitStatus::Exited(3)),
    ];
    let t = table(&events);
    assert_eq!(
        t.rows,
        vec![row(
            100,
            None,
            Some(ExitStatus::Exited(3)),
            &["newapp", "--resumed"]
        )]
    );
}

#[test]
fn reused_pid_is_a_new_process() {
    let events = [
        exec(100, &["sh"]),
        fork(100, 100, 101),
        exec(101, &["true"]),
        exit(101, ExitStatus::Exited(0)),
        fork(100, 100, 101),
        exec(101, &["false"]),
        exit(101, ExitStatus::Exited(1)),
        exit(100, ExitStatus::Exited(1)),
    ];
    let t = table(&events);
    assert_eq!(
        t.rows,
        vec![
            row(100, None, Some(ExitStatus::Exited(1)), &["sh"]),
            row(101, Some(100), Some(ExitStatus::Exited(0)), &["true"]),
            row(101, Some(100), Some(ExitStatus::Exited(1)), &["false"]),
        ]
    );
    assert_eq!(t.tasks, 3);
}

#[test]
fn shown_escapes_control_characters_only() {
    assert_eq!(
        super::shown("plain /usr/bin/ls -l é"),
        "plain /usr/bin/ls -l é"
    );
    assert_eq!(super::shown("a\nb\tc\u{1b}[0m"), "a\\nb\\tc\\u{1b}[0m");
    assert_eq!(super::shown("x\u{202e}y\u{7f}"), "x\\u{202e}y\\u{7f}");
}
