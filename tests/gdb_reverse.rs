//! Going backwards in gdb: `reverse-continue`, `reverse-stepi`, `reverse-step`, `reverse-next`,
//! `reverse-finish` and watchpoints backwards, with the real gdb in batch mode on replays of
//! `reverse.c`; each checks the values gdb shows against what the program computed there.

mod common;

use std::path::PathBuf;

use common::gdb::{assert_has, gdb_batch, line_of, printed, text};
use common::*;

/// `reverse.c` without optimization, so every local is visible.
fn program() -> PathBuf {
    built_once("reverse", &["-pthread", "-O0"], "reverse-O0")
}

/// A recording of `reverse.c`, checked.
fn recorded(ctx: &Ctx) -> PathBuf {
    let (trace, rec) = ctx.record(program(), &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    assert_has(&stdout_str(&rec), "total=105 shared=21 got=10");
    trace
}

/// gdb's session (and the program's output) on a replay of a new recording of `reverse.c`
/// with `commands`; `None` where gdb is not installed.
fn session(commands: &[&str]) -> Option<String> {
    installed("gdb")?;
    let ctx = Ctx::new();
    let trace = recorded(&ctx);
    Some(text(&gdb_batch(&ctx, &trace, &[], commands)))
}

#[test]
fn reverse_continue_goes_back_to_the_earlier_iteration_and_forward_again_repeats_it() {
    let Some(all) = session(&[
        "break step",
        "continue",
        "continue",
        "continue",
        "print i",
        "reverse-continue",
        "print i",
        "reverse-continue",
        "print i",
        "continue",
        "print i",
        "continue",
        "print i",
        "reverse-continue",
        "reverse-continue",
        "print i",
        "reverse-continue",
        "continue",
        "print i",
    ]) else {
        return;
    };
    assert_eq!(
        printed(&all),
        ["2", "1", "0", "1", "2", "0", "0"],
        "the iterations, backwards and forwards:\n{all}"
    );
    // Before the first hit there is only the start.
    assert_has(&all, "No more reverse-execution history.");
}

#[test]
fn a_watchpoint_going_backwards_stops_before_the_other_threads_previous_write() {
    let Some(all) = session(&[
        "break writer",
        "continue",
        "watch shared",
        "continue",
        "continue",
        "continue",
        "print shared",
        "reverse-continue",
        "print shared",
        "print k",
        "reverse-continue",
        "print shared",
        "continue",
        "print shared",
        // On to the end from a copy of the two-thread replay: the writer ends, main joins
        // it (the kernel clears the writer's tid word in the copy too), the signal, exit.
        "delete",
        "handle SIGUSR1 nostop noprint pass",
        "continue",
        "continue",
    ]) else {
        return;
    };
    assert_has(&all, "total=105 shared=21 got=10");
    assert_has(&all, "exited normally");
    assert_eq!(
        printed(&all),
        ["21", "14", "3", "7", "14"],
        "the writes, undone one by one, then done again:\n{all}"
    );
    // gdb shows each write undone (the value after it, then before it).
    assert_has(&all, "Old value = 21\nNew value = 14");
    assert_has(&all, "Old value = 14\nNew value = 7");
    // The writer is the program's second thread.
    assert_has(&all, "Thread 2 hit Hardware watchpoint 2: shared");
}

#[test]
fn reverse_next_step_and_finish_walk_back_over_and_into_calls() {
    let after_call = line_of("reverse.c", "total += 1;");
    let call = line_of("reverse.c", "total += step(i);");
    let Some(all) = session(&[
        &format!("break reverse.c:{after_call}"),
        "continue",
        "continue",
        "delete",
        // Iteration 1, after the call: total = 1 (iteration 0) + 10.
        "print total",
        "reverse-next",
        "print total",
        "next",
        "print total",
        "reverse-step",
        "print i",
        "reverse-finish",
        "print total",
    ]) else {
        return;
    };
    assert_eq!(
        printed(&all),
        ["11", "1", "11", "1", "1"],
        "values before and after the call:\n{all}"
    );
    // reverse-next went back over the call to its line, reverse-step into it from its end,
    // reverse-finish back out to the call.
    assert_has(&all, &format!("{call}\t        total += step(i);"));
    assert_has(&all, "in main () at ");
    assert_has(&all, &format!("reverse.c:{call}\n"));
    assert!(
        all.contains("return v;") || all.contains("\n26\t}"),
        "reverse-step stops at step's last line:\n{all}"
    );
}

#[test]
fn reverse_stepi_crosses_a_syscall_and_a_recorded_signal() {
    let Some(all) = session(&[
        "break *after_syscall",
        "continue",
        "continue",
        "print $pc == (char *)after_syscall",
        // Back over the syscall: at the `syscall` instruction, the call not made.
        "reverse-stepi",
        "print $pc == (char *)after_syscall - 2",
        "print $rax == 110",
        // Forward again: the call's recorded result.
        "stepi",
        "print $pc == (char *)after_syscall",
        "print $rax > 1",
        "delete",
        "handle SIGUSR1 nostop noprint pass",
        "break *on_usr1",
        "continue",
        "print $pc == (char *)on_usr1",
        // Back over the signal's delivery: where the signal interrupted raise().
        "reverse-stepi",
        "print $pc == (char *)on_usr1",
        "bt 1",
        "stepi",
        "print $pc == (char *)on_usr1",
    ]) else {
        return;
    };
    assert_eq!(
        printed(&all),
        ["1", "1", "1", "1", "1", "1", "0", "1"],
        "the positions around the syscall and the signal:\n{all}"
    );
    assert_has(&all, "pthread_kill");
}

#[test]
fn monitor_checkpoint_restart_and_seek_move_the_replay() {
    let Some(all) = session(&[
        "break step",
        "continue",
        "continue",
        "monitor checkpoint",
        "continue",
        "continue",
        "print i",
        "monitor checkpoints",
        "monitor restart 1",
        "maintenance flush register-cache",
        "maintenance flush dcache",
        "print i",
        "continue",
        "print i",
        "monitor seek 5",
        "monitor when",
        "continue",
        "print i",
        "monitor restart 7",
        "monitor seek 999999",
        "monitor seek x",
    ]) else {
        return;
    };
    assert_eq!(
        printed(&all),
        ["3", "1", "2", "0"],
        "back to the checkpoint, on from it, back to event 5 and on:\n{all}"
    );
    assert_has(&all, "Checkpoint 1 at event ");
    assert_has(&all, "Current event: 5\n");
    assert_has(&all, "there is no checkpoint 7");
    assert_has(&all, "event 999999 is past the end of the recording");
    assert_has(&all, "`monitor seek` takes a number, not `x`");
}

#[test]
fn going_backwards_with_a_forked_child_alive_then_on_to_its_end() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let program = built_once("reverse_fork", &["-O0"], "reverse_fork-O0");
    let (trace, rec) = ctx.record(program, &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    let recorded = stdout_str(&rec);
    let out = gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break step",
            "continue",
            "continue",
            "continue",
            "print i",
            "reverse-continue",
            "print i",
            "continue",
            "print i",
            "delete",
            "continue",
            "continue",
        ],
    );
    let all = text(&out);
    assert_eq!(
        printed(&all),
        ["2", "1", "2"],
        "the parent's iterations:\n{all}"
    );
    // The child's output and the parent's wait, as recorded.
    for line in recorded.lines() {
        assert_has(&all, line);
    }
    assert_has(&all, "child status=7");
    assert_has(&all, "exited normally");
}

#[test]
fn starting_at_an_event_with_g_still_goes_back_before_it() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let trace = recorded(&ctx);
    // The event that makes the writer thread: after main's loop.
    let dump = ctx
        .deja()
        .arg("dump")
        .arg(&trace)
        .output()
        .expect("deja dump");
    let dump = stdout_str(&dump);
    let clone = dump
        .lines()
        .find(|l| l.contains(" made task "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("a clone event in:\n{dump}"))
        .to_string();
    let out = gdb_batch(
        &ctx,
        &trace,
        &["-g", &clone],
        &["monitor when", "break step", "reverse-continue", "print i"],
    );
    let all = text(&out);
    // (The first halt after the event: when a task next runs.)
    let when: u64 = all
        .split("Current event: ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("monitor when's answer in:\n{all}"));
    assert!(
        when >= clone.parse().unwrap(),
        "-g {clone} started at {when}:\n{all}"
    );
    assert_eq!(
        printed(&all),
        ["4"],
        "the loop's last call, before -g's event:\n{all}"
    );
}

#[test]
fn the_end_is_a_stop_to_go_backwards_from() {
    let Some(all) = session(&[
        "handle SIGUSR1 nostop noprint pass",
        // To the end: a stop there (SIGKILL, as rr reports it), the process still there.
        "continue",
        "break step",
        "reverse-continue",
        "print i",
        "delete",
        "continue",
        "continue",
    ]) else {
        return;
    };
    assert_has(&all, "received signal SIGKILL");
    assert_eq!(
        printed(&all),
        ["4"],
        "the last call of step, from the end:\n{all}"
    );
    // Forward again: the end, then the exit.
    assert_has(&all, "exited normally");
}
