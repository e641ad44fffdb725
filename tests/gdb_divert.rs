//! Diversions with the real gdb: inferior calls (`print add(2, 3)`, `call bump(10)`, a C++
//! `std::string`'s `c_str()` and `size()`), `set var`, a crash inside a called function, calls
//! on two threads, all mid-replay; afterwards the replay goes on with its recorded values and
//! output to its recorded exit status, forwards and backwards.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::gdb::{assert_has, gdb_batch, text};
use common::*;

/// `divert.c` without optimization, so every local is visible.
fn program() -> PathBuf {
    built_once("divert", &["-O0"], "divert-O0")
}

/// What `divert.c` prints, recorded and replayed.
const RECORDED: &str = "x=4 global=7 counter=3 shared=5";

/// A recording of `divert.c` (with the in-process fast path unless `no_fast_path`), checked.
fn recorded(ctx: &Ctx, no_fast_path: bool) -> PathBuf {
    let trace = ctx.fresh_path("trace");
    let mut cmd = ctx.deja();
    cmd.arg("rec");
    if no_fast_path {
        cmd.arg("-n");
    }
    cmd.arg("-o").arg(&trace).arg(program());
    let rec = run_with_timeout(&mut cmd, TIMEOUT);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));
    assert_has(&stdout_str(&rec), RECORDED);
    trace
}

/// gdb's session (and the program's output) on a replay of a new recording of `divert.c`
/// with `commands`; `None` where gdb is not installed.
fn session(no_fast_path: bool, commands: &[&str]) -> Option<String> {
    installed("gdb")?;
    let ctx = Ctx::new();
    let trace = recorded(&ctx, no_fast_path);
    Some(text(&gdb_batch(&ctx, &trace, &[], commands)))
}

/// The values gdb printed (`$N = VALUE`), in order.
fn printed(all: &str) -> Vec<String> {
    all.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('$')?;
            let (n, value) = rest.split_once(" = ")?;
            n.parse::<u32>().ok()?;
            Some(value.trim().to_string())
        })
        .collect()
}

/// Calls, a call that changes a global and prints, one that writes shared memory, `set var`:
/// each shows its effect in the diversion, and after `continue` the replay shows the recorded
/// values and reaches its recorded output and exit status.
fn calls_and_changes_stay_in_the_diversion(no_fast_path: bool) {
    let Some(all) = session(
        no_fast_path,
        &[
            "break stop_here",
            "continue",
            "print add(2, 3)",
            "call bump(10)",
            "print global",
            // Shared memory: the diversion writes its own copy of it.
            "print poke(9)",
            "print *shared",
            // Syscalls: the recorded pid; a write to stdout shown; a close refused.
            "print (int)getpid()",
            "print (int)write(1, \"from the diversion\\n\", 19)",
            "print (int)close(0)",
            "continue",
            "print global",
            "print *shared",
            "print at",
            "up",
            "set var x = 99",
            "print x",
            "continue",
            "print at",
            "up",
            "print x",
            "delete",
            "continue",
            "continue",
        ],
    ) else {
        return;
    };
    let pid = all
        .split("(process ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no process id in gdb's session:\n{all}"));
    assert_eq!(
        printed(&all),
        ["5", "17", "17", "9", "9", pid, "19", "-1", "7", "5", "1", "99", "2", "2"],
        "gdb's session:\n{all}"
    );
    // The calls' own output, shown by deja.
    assert_has(&all, "bump: global=17");
    assert_has(&all, "from the diversion");
    // The replay's, as recorded (x was set to 99 in the diversion only).
    assert_has(&all, RECORDED);
    assert_has(&all, "exited with code 03");
}

#[test]
fn calls_and_set_var_run_in_a_diversion_and_the_replay_keeps_its_recorded_values() {
    calls_and_changes_stay_in_the_diversion(false);
}

#[test]
fn calls_run_in_a_diversion_without_the_fast_path_too() {
    calls_and_changes_stay_in_the_diversion(true);
}

#[test]
fn a_crash_in_a_called_function_stops_in_the_diversion_and_the_replay_is_untouched() {
    let Some(all) = session(
        false,
        &[
            "break stop_here",
            "continue",
            "set unwindonsignal on",
            "print crash()",
            // gdb put the registers back: the diversion goes on for the next call.
            "print add(1, 1)",
            "continue",
            "print at",
            "set unwindonsignal off",
            "print crash()",
            // The fault's siginfo is the diversion's.
            "print $_siginfo.si_signo",
            // Continuing delivers the fault in the diversion, whose process ends.
            "continue",
            "info threads",
            "continue",
            "print at",
            "delete",
            "continue",
            "continue",
        ],
    ) else {
        return;
    };
    assert_has(&all, "signaled while in a function called from GDB");
    assert_has(&all, "Program received signal SIGSEGV");
    assert_has(&all, "Program terminated with signal SIGSEGV");
    assert_eq!(
        printed(&all),
        ["2", "1", "11", "2"],
        "gdb's session:\n{all}"
    );
    assert_has(&all, RECORDED);
    assert_has(&all, "exited with code 03");
}

#[test]
fn breakpoints_inside_a_called_function_stop_there_and_finish_completes_the_call() {
    let Some(all) = session(
        false,
        &[
            "break stop_here",
            "continue",
            "break bump",
            "call bump(1)",
            "bt",
            "next",
            "print global",
            "finish",
            "print global",
            // A hardware breakpoint (the replay's debug registers) stops a call too.
            "hbreak add",
            "print add(1, 2)",
            "finish",
            "delete",
            "continue",
            "continue",
        ],
    ) else {
        return;
    };
    assert_has(&all, "Breakpoint 3, add (a=1, b=2)");
    assert_has(&all, "Value returned is $4 = 3");
    assert_has(
        &all,
        "The program being debugged stopped while in a function called from GDB",
    );
    assert_has(&all, "<function called from gdb>");
    assert_has(&all, "Value returned is $2 = 8");
    assert_eq!(printed(&all), ["8", "8"], "gdb's session:\n{all}");
    assert_has(&all, "bump: global=8");
    assert_has(&all, RECORDED);
    assert_has(&all, "exited with code 03");
}

#[test]
fn going_backwards_works_after_a_diversion() {
    let Some(all) = session(
        false,
        &[
            "break stop_here",
            "continue",
            "continue",
            "print add(at, 40)",
            "reverse-continue",
            "print at",
            "print add(at, 50)",
            "reverse-stepi",
            "continue",
            "print at",
            "continue",
            "print at",
        ],
    ) else {
        return;
    };
    assert_eq!(
        printed(&all),
        ["41", "0", "50", "0", "1"],
        "gdb's session:\n{all}"
    );
}

/// `reverse.c` without optimization (two threads, a raw syscall).
fn threaded_program() -> PathBuf {
    built_once("reverse", &["-pthread", "-O0"], "reverse-O0")
}

#[test]
fn calls_on_two_threads_and_refused_syscalls_leave_the_replay_as_recorded() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(threaded_program(), &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break writer",
            "continue",
            // step() makes a raw getppid, which a diversion refuses: 20 + (-ENOSYS % 1).
            "print step(2)",
            "print raw_getppid()",
            "thread 1",
            "print step(3)",
            "thread 2",
            "print shared",
            "set var shared = 5",
            "print shared",
            "delete",
            // The recorded SIGUSR1: a call where the thread is stopped for a signal.
            "continue",
            "print step(4)",
            "print shared",
            // The end, the exit.
            "continue",
            "continue",
        ],
    ));
    assert_eq!(
        printed(&all),
        ["20", "-38", "30", "0", "5", "40", "21"],
        "gdb's session:\n{all}"
    );
    assert_has(&all, "received signal SIGUSR1");
    assert_has(&all, "total=105 shared=21 got=10");
    assert_has(&all, "exited normally");
}

/// `divert_string.cpp` built with g++ (`-O0 -g`) into the test programs' directory.
fn cpp_program() -> Option<PathBuf> {
    installed("g++")?;
    let source = programs_src_dir().join("divert_string.cpp");
    let out_dir = programs_out_dir();
    std::fs::create_dir_all(&out_dir).expect("creating the test programs' directory");
    let out = out_dir.join(format!("divert_string-{}", std::process::id()));
    let built = Command::new("g++")
        .args(["-O0", "-g", "-o"])
        .arg(&out)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .expect("running g++");
    assert!(
        built.status.success(),
        "g++ failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    Some(out)
}

#[test]
fn a_cpp_string_shows_its_c_str_and_size_mid_replay() {
    if installed("gdb").is_none() {
        return;
    }
    let Some(prog) = cpp_program() else {
        return;
    };
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    assert_has(&stdout_str(&rec), "n=5 hello");
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break use",
            "continue",
            "print s.c_str()",
            "print s.size()",
            "up",
            "print s.length() + 1",
            "continue",
            "continue",
        ],
    ));
    std::fs::remove_file(&prog).ok();
    let values = printed(&all);
    assert_eq!(values.len(), 3, "gdb's session:\n{all}");
    assert!(
        values[0].ends_with("\"hello\""),
        "s.c_str() printed {:?}; gdb's session:\n{all}",
        values[0]
    );
    assert_eq!(values[1..], ["5", "6"], "gdb's session:\n{all}");
    assert_has(&all, "n=5 hello");
    assert_has(&all, "exited normally");
}

/// The children of process `pid` (of all its threads).
fn children(pid: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The pid of the gdb that deja process `deja` launched.
fn gdb_child(deja: u32) -> Option<i32> {
    children(deja).into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "gdb")
    })
}

/// Whether a process deja started (not gdb) is running: the diversion's copy, in `spin`
/// (the replay and its checkpoints are stopped).
fn copy_running(deja: u32) -> bool {
    children(deja).into_iter().any(|p| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // (The state follows the command's closing parenthesis.)
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        comm.trim() != "gdb" && state == Some(Some('R'))
    })
}

#[test]
fn an_interrupt_stops_a_called_function_that_loops_and_the_replay_goes_on() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let trace = recorded(&ctx, false);
    let log = ctx.fresh_path("gdb-output");
    let out = std::fs::File::create(&log).expect("creating gdb's output file");
    let mut cmd = ctx.deja();
    cmd.arg("replay").arg(&trace).args(["--", "-batch", "-nx"]);
    for c in [
        "break stop_here",
        "continue",
        "call spin()",
        "bt 3",
        // Let the call finish: gdb then stops silently at its end.
        "set var spinning = 0",
        "continue",
        "print global",
        "delete",
        "continue",
        "continue",
    ] {
        cmd.args(["-ex", c]);
    }
    let err = out.try_clone().expect("cloning the output file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .expect("spawning deja replay");
    let deja = child.id();
    // Once the called function runs, gdb's Ctrl-C.
    let started = std::time::Instant::now();
    let mut sent = false;
    while started.elapsed() < TIMEOUT {
        let so_far = std::fs::read_to_string(&log).unwrap_or_default();
        if so_far.contains("stop_here (at=0)") && copy_running(deja) {
            // (Running for a while: gdb is waiting for the call to end.)
            std::thread::sleep(std::time::Duration::from_millis(300));
            let gdb = gdb_child(deja).expect("deja's gdb");
            // SAFETY: kill with a pid this test's own child launched and an integer signal.
            unsafe { libc::kill(gdb, libc::SIGINT) };
            sent = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut child = child;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for deja replay") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let all = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        kill_group(deja);
        child.wait().ok();
        panic!("deja replay did not end:\n{all}");
    };
    assert!(sent, "gdb never stopped at stop_here:\n{all}");
    assert!(status.success(), "deja replay failed:\n{all}");
    assert_has(&all, "Program received signal SIGINT");
    assert_has(&all, "signaled while in a function called from GDB");
    assert_has(&all, "in spin ()");
    assert_eq!(printed(&all), ["7"], "gdb's session:\n{all}");
    assert_has(&all, RECORDED);
    assert_has(&all, "exited with code 03");
}
