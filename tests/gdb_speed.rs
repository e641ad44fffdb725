//! What makes debugging a replay fast, checked for what it must not change, with the real gdb
//! in batch mode on replays of `cond_loop.c`: conditions evaluated by the server stop only
//! where they hold (forward and backwards), `stepi`/`nexti` forward and `reverse-stepi` back
//! over more steps than the timeline keeps anchors for retrace the same instructions, and
//! `next` over a loop (range stepping) lands where the program got.

mod common;

use std::path::PathBuf;

use common::gdb::{assert_has, gdb_batch, line_of, printed, text};
use common::*;

/// `cond_loop.c` without optimization, so every local is visible.
fn program() -> PathBuf {
    built_once("cond_loop", &["-O0"], "cond_loop-O0")
}

/// gdb's session (and the program's output) on a replay of a new recording of
/// `cond_loop.c` with `commands`; `None` where gdb is not installed.
fn session(commands: &[&str]) -> Option<String> {
    installed("gdb")?;
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program(), &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    assert_has(&stdout_str(&rec), "counter=40 sink=780 s=8994");
    Some(text(&gdb_batch(&ctx, &trace, &[], commands)))
}

#[test]
fn a_conditional_breakpoint_stops_only_where_its_condition_holds() {
    let Some(all) = session(&[
        // On an argument (a register or the stack), then on a global (memory).
        "break f if i == 7",
        "continue",
        "print i",
        "print counter",
        "info breakpoints",
        "delete",
        "break f if counter == 30",
        "continue",
        "print i",
        "continue",
    ]) else {
        return;
    };
    // counter is incremented in f after the breakpoint: 7 calls before i == 7, 30 before
    // the stop where it is 30 (i == 30).
    assert_eq!(printed(&all), ["7", "7", "30"], "the stops:\n{all}");
    assert_has(&all, "(target evals)");
    // The server reported one hit, not the eight gdb would otherwise have evaluated.
    assert_has(&all, "breakpoint already hit 1 time");
    assert_eq!(all.matches("Breakpoint 1, f").count(), 1, "{all}");
    assert_eq!(all.matches("Breakpoint 2, f").count(), 1, "{all}");
    // No later hit holds: the program ran to its end (the end of the replay is a stop).
    assert_has(&all, "counter=40 sink=780 s=8994");
    assert_has(&all, "Program received signal SIGKILL");
}

#[test]
fn a_condition_the_server_cannot_evaluate_is_left_to_gdb() {
    // Address 8 is never mapped: the server's evaluation fails, it reports the first hit, and
    // gdb, evaluating the condition again, says why it stops there.
    let Some(all) = session(&[
        "break f if *(int *)8 == 1",
        "continue",
        "print i",
        "info breakpoints",
    ]) else {
        return;
    };
    assert_has(&all, "(target evals)");
    assert_has(&all, "Error in testing");
    assert_has(&all, "Cannot access memory at address 0x8");
    assert_eq!(printed(&all), ["0"], "the first call's stop:\n{all}");
}

#[test]
fn a_conditional_breakpoint_going_backwards_stops_at_the_earlier_hit_where_it_holds() {
    let Some(all) = session(&[
        "break f if i % 4 == 1",
        "continue",
        "print i",
        "continue",
        "print i",
        "continue",
        "print i",
        "reverse-continue",
        "print i",
        "reverse-continue",
        "print i",
        "continue",
        "print i",
    ]) else {
        return;
    };
    assert_eq!(
        printed(&all),
        ["1", "5", "9", "5", "1", "5"],
        "the hits, forward, backwards and forward again:\n{all}"
    );
}

/// gdb's python: `count` instruction steps forward (`how`), then as many back but one
/// (`back`), checking that the pcs going back are those of going forward, backwards.
fn retrace_script(how: &str, back_how: &str, count: usize) -> String {
    format!(
        "python exec(\"fwd = []\\nfor k in range({count}):\\n    gdb.execute('{how}', \
         to_string=True)\\n    fwd.append(int(gdb.parse_and_eval('$pc')))\\nback = []\\nfor k \
         in range({back}):\\n    gdb.execute('{back_how}', to_string=True)\\n    \
         back.append(int(gdb.parse_and_eval('$pc')))\\nprint('distinct', len(set(fwd)))\\n\
         print('retraced', back == fwd[-2::-1])\")",
        back = count - 1
    )
}

#[test]
fn stepi_forward_then_reverse_stepi_back_retraces_the_same_instructions() {
    // 300 steps: past the 256 the timeline steps without a new anchor.
    let script = retrace_script("stepi", "reverse-stepi", 300);
    let Some(all) = session(&["break main", "continue", &script]) else {
        return;
    };
    assert_has(&all, "retraced True");
    // Forward went through the loop and into f: many distinct instructions.
    assert!(
        all.lines()
            .find_map(|l| l.strip_prefix("distinct "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|n| n > 10),
        "{all}"
    );
}

#[test]
fn nexti_steps_over_calls_and_reverse_nexti_retraces_it() {
    let script = retrace_script("nexti", "reverse-nexti", 100);
    let Some(all) = session(&[
        "break main",
        "continue",
        &script,
        // Still in main: nexti never stopped in f.
        "python print('frame', gdb.selected_frame().name())",
    ]) else {
        return;
    };
    assert_has(&all, "retraced True");
    assert_has(&all, "frame main");
    assert!(
        !all.contains("\n11\t    counter++;"),
        "nexti stopped in f:\n{all}"
    );
}

#[test]
fn next_over_a_one_line_loop_lands_after_it_with_its_result() {
    let line = line_of("cond_loop.c", "/* one line */");
    let Some(all) = session(&[
        &format!("break {line}"),
        "continue",
        "next",
        "print s",
        "print k",
        "info line *$pc",
    ]) else {
        return;
    };
    // After the loop: s is its sum; k is out of scope at the printf line.
    let values = printed(&all);
    assert_eq!(values.first().map(String::as_str), Some("8994"), "{all}");
    assert_has(&all, &format!("Line {} of", line + 1));
}
