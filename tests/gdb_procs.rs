//! Debugging the processes of a recorded tree with the real gdb: a forked child that never
//! execs at source level (`-p`), a process from its fork (`-f`) or its end (`-e`), `catch
//! fork`/`vfork`/`exec` stopping where the recording forked and exec'd, and gdb's
//! `follow-fork-mode child` and `detach-on-fork off`.

mod common;

use std::path::{Path, PathBuf};

use common::gdb::{assert_has, gdb_batch, text};
use common::*;

/// `procs.c` without optimization: a forked child running `child_work`, a forked child that
/// execs the program again (`again`), a vforked child that execs `/bin/true`.
fn procs() -> PathBuf {
    built_once("procs", &["-O0"], "procs-O0")
}

/// A recording of `procs` and its processes' pids: the parent, the child that never execs,
/// the child that execs the program again, the vforked child.
fn recorded(ctx: &Ctx) -> (PathBuf, [String; 4]) {
    let (trace, rec) = ctx.record(procs(), &[]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let rows = ctx.ps(&trace);
    assert_eq!(rows.len(), 4, "four processes");
    let pids = [0, 1, 2, 3].map(|i| rows[i].pid.clone());
    assert!(rows[2].cmd.contains("again"), "{:?}", rows[2].cmd);
    (trace, pids)
}

/// gdb's session on the replay of `trace` with `args`, as text.
fn session(ctx: &Ctx, trace: &Path, args: &[&str], commands: &[&str]) -> String {
    text(&gdb_batch(ctx, trace, args, commands))
}

#[test]
fn a_forked_child_that_never_execs_is_debugged_at_source_level_with_p() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, [_, child, _, _]) = recorded(&ctx);
    let all = session(
        &ctx,
        &trace,
        &["-p", &child],
        &[
            "info inferiors",
            "break child_work",
            "continue",
            "bt",
            "next",
            "next",
            "print local",
        ],
    );
    assert_has(&all, &format!("process {child}"));
    // The breakpoint resolves in the child's program (its parent's, at the load address
    // its auxiliary vector gives): no "Cannot access memory at address 0x...".
    assert!(!all.contains("Cannot access memory"), "{all}");
    assert_has(&all, "Breakpoint 1, child_work (n=6) at ");
    assert_has(&all, "in main (argc=1");
    assert_has(&all, "$1 = 42");
}

#[test]
fn f_starts_at_the_fork_and_catch_exec_stops_at_the_exec() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, [_, _, again, _]) = recorded(&ctx);
    let all = session(
        &ctx,
        &trace,
        &["-f", &again],
        &[
            "bt",
            "catch exec",
            "continue",
            "break main",
            "continue",
            "print argv[1]",
        ],
    );
    // At its fork the child is in its parent's program, back from fork() in main.
    assert_has(&all, "fork");
    assert_has(&all, "in main (argc=1");
    // Then it execs the program again: gdb follows it to the new program.
    assert_has(&all, &format!("process {again} is executing new program: "));
    assert_has(&all, "Catchpoint 1 (exec'd ");
    assert_has(&all, "Breakpoint 2, main (argc=2");
    assert_has(&all, "\"again\"");
}

#[test]
fn catch_fork_and_catch_vfork_stop_in_the_parent_where_it_forked() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, [parent, child, again, spawned]) = recorded(&ctx);
    let all = session(
        &ctx,
        &trace,
        &[],
        &[
            "catch fork",
            "catch vfork",
            "continue",
            "bt",
            "print $rax",
            "continue",
            "continue",
            "continue",
            "continue",
        ],
    );
    assert_has(&all, &format!("Catchpoint 1 (forked process {child}), "));
    assert_has(&all, "in main (argc=1");
    // Back from fork in the parent: the call returned the child's pid.
    assert_has(&all, &format!("$1 = {child}"));
    assert_has(
        &all,
        &format!("[Detaching after fork from child process {child}]"),
    );
    assert_has(&all, &format!("Catchpoint 1 (forked process {again}), "));
    assert_has(&all, &format!("Catchpoint 2 (vforked process {spawned}), "));
    // The children replayed as recorded meanwhile, and so does the parent to its end.
    assert_has(&all, "child works: 42");
    assert_has(&all, "parent done");
    assert_has(
        &all,
        &format!("[Inferior 1 (process {parent}) exited normally]"),
    );
}

#[test]
fn follow_fork_mode_child_debugs_the_child_from_its_fork() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, [parent, child, _, _]) = recorded(&ctx);
    let all = session(
        &ctx,
        &trace,
        &[],
        &[
            "set follow-fork-mode child",
            "break child_work",
            "continue",
            "info inferiors",
            "next",
            "next",
            "print local",
            // Backwards the child's replay starts at its fork.
            "reverse-continue",
            "reverse-continue",
            "bt 3",
            "continue",
            "print n",
        ],
    );
    assert_has(
        &all,
        &format!("[Detaching after fork from parent process {parent}]"),
    );
    assert_has(&all, "hit Breakpoint 1, child_work (n=6) at ");
    assert_has(&all, &format!("process {child}"));
    assert_has(&all, "$1 = 42");
    assert_has(&all, "No more reverse-execution history.");
    assert_has(&all, "fork");
    assert_has(&all, "$2 = 6");
}

#[test]
fn follow_fork_mode_child_follows_a_vfork_child_to_its_exec() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, [parent, _, _, spawned]) = recorded(&ctx);
    let all = session(
        &ctx,
        &trace,
        &[],
        &[
            "catch vfork",
            "catch exec",
            "continue",
            "set follow-fork-mode child",
            "continue",
            "info inferiors",
            "continue",
            "continue",
        ],
    );
    assert_has(&all, &format!("Catchpoint 1 (vforked process {spawned}), "));
    assert_has(
        &all,
        &format!("[Detaching vfork parent process {parent} after child exec]"),
    );
    assert_has(&all, "Catchpoint 2 (exec'd ");
    assert_has(
        &all,
        &format!("[Inferior 2 (process {spawned}) exited normally]"),
    );
}

#[test]
fn detach_on_fork_off_is_refused_with_a_message_and_the_parent_goes_on() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, [parent, child, _, _]) = recorded(&ctx);
    let all = session(
        &ctx,
        &trace,
        &["-q"],
        &[
            "set detach-on-fork off",
            "break waitpid",
            "continue",
            "info inferiors",
            "bt 2",
        ],
    );
    // gdb lists the child it kept, deja tells why it will not stay stopped.
    assert_has(&all, &format!("[New inferior 2 (process {child})]"));
    assert_has(
        &all,
        &format!("deja: cannot keep process {child} under gdb (detach-on-fork off)"),
    );
    // The parent goes on to its waitpid for the child.
    assert_has(&all, "hit Breakpoint 1");
    assert_has(&all, &format!("waitpid (pid={child}"));
    assert_has(&all, &format!("process {parent}"));
    assert_has(&all, "in main (argc=1");
}

#[test]
fn e_starts_at_the_end_of_a_process_and_goes_backwards() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, [_, child, _, _]) = recorded(&ctx);
    let all = session(
        &ctx,
        &trace,
        &["-q", "-e", &child],
        &[
            "bt",
            "break child_work",
            "reverse-continue",
            "bt",
            "print n",
        ],
    );
    // At the child's _exit, called from main.
    assert_has(&all, "_exit");
    assert_has(&all, "in main (argc=1");
    assert_has(&all, "Breakpoint 1, child_work (n=6) at ");
    assert_has(&all, "$1 = 6");
    // -e alone: the end of the initial process.
    let all = session(&ctx, &trace, &["-q", "-e"], &["bt", "continue"]);
    assert_has(&all, "_exit");
    assert_has(&all, "exited normally");
}

#[test]
fn e_of_a_process_a_signal_killed_stops_where_the_signal_came() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(
        built_once("child_signaled", &["-O0"], "child_signaled-O0"),
        &[],
    );
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    // The first child dies of SIGSEGV: it makes no exit call, its end is the fault.
    let child = ctx.ps(&trace)[1].pid.clone();
    let all = session(
        &ctx,
        &trace,
        &["-q", "-e", &child],
        &["bt", "print bad", "continue"],
    );
    assert_has(&all, "*bad = 1;");
    assert_has(&all, "(volatile int *) 0x10");
    assert_has(&all, "Program terminated with signal SIGSEGV");
}

#[test]
fn catch_exec_of_a_thread_shows_the_new_program_with_one_thread() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(threaded("thread_exec"), &[]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let pid = ctx.ps(&trace)[0].pid.clone();
    let all = session(
        &ctx,
        &trace,
        &["-q"],
        &[
            "catch exec",
            "continue",
            "info threads",
            "break main",
            "continue",
            "print argc",
            "continue",
            "continue",
        ],
    );
    // The thread that exec'd takes the process id; the threads the exec killed are gone.
    assert_has(&all, "Catchpoint 1 (exec'd ");
    assert_has(&all, &format!("* 1    Thread {pid}.{pid} "));
    assert!(!all.contains("  2    Thread"), "{all}");
    assert_has(&all, "Breakpoint 2, main (argc=2");
    assert_has(&all, "$1 = 2");
    assert_has(
        &all,
        &format!("[Inferior 1 (process {pid}) exited normally]"),
    );
}
