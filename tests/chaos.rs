//! Chaos scheduling (`deja rec --chaos[=SEED]`): it makes a lost-update race that a plain
//! recording hides fail in recordings, each failing recording replays to the same output, the
//! seed is kept in the trace, and the same seed makes the same scheduling decisions.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// `deja rec --chaos=SEED -o TRACE PROG ARGS`.
fn record_chaos(ctx: &Ctx, seed: u64, prog: &Path, args: &[&str]) -> (PathBuf, Output) {
    let trace = ctx.fresh_path("chaos");
    let mut cmd = ctx.deja();
    cmd.arg("rec")
        .arg(format!("--chaos={seed}"))
        .arg("-o")
        .arg(&trace)
        .arg(prog)
        .args(args);
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    assert_no_panic("deja rec --chaos", &out);
    (trace, out)
}

/// Two threads adding to a counter with a load before and a store after their loop (-O1): a
/// plain recording runs each loop within one time slice, so no update is lost; chaos's short
/// slices preempt a thread inside its loop. Runs seeds until a recording loses updates (they
/// nearly all do), then checks that it replays to the same output and keeps its seed.
#[test]
fn chaos_makes_a_hidden_lost_update_fail_and_the_failing_run_replays() {
    let prog = threaded("lost_update");
    let ctx = Ctx::new();
    let mut failed = None;
    for seed in 1..=12u64 {
        let (trace, rec) = record_chaos(&ctx, seed, &prog, &["50000000"]);
        let out = stdout_str(&rec);
        assert!(out.contains("updates lost"), "{}", describe("rec", &rec));
        if !out.contains(": 0 of") {
            assert_eq!(shell_code(&rec.status), 1, "{}", describe("rec", &rec));
            failed = Some((seed, trace, rec));
            break;
        }
    }
    let (seed, trace, rec) = failed.expect("no chaos recording of 12 lost an update");
    assert_replay_matches(&rec, &ctx.replay(&trace));
    let info = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str()]);
    assert!(
        stdout_str(&info).contains(&format!("chaos seed:     {seed}")),
        "{}",
        describe("info", &info)
    );
    assert!(
        stderr_str(&rec).contains(&format!("chaos scheduling with seed {seed}")),
        "{}",
        describe("rec", &rec)
    );
}

/// The threads of `yield_order` in the order their `sched_yield` calls come in the trace,
/// each named by its rank among the threads' ids (their order of creation), so that two
/// recordings compare.
fn yield_order(ctx: &Ctx, trace: &Path) -> Vec<usize> {
    let dump = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
    assert!(dump.status.success(), "{}", describe("dump", &dump));
    let tids: Vec<i64> = stdout_str(&dump)
        .lines()
        .filter(|l| l.contains("sched_yield"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next()?.parse().ok())
        .collect();
    let mut ids = tids.clone();
    ids.sort_unstable();
    ids.dedup();
    tids.iter()
        .map(|t| ids.iter().position(|i| i == t).unwrap_or(usize::MAX))
        .collect()
}

/// Four threads taking turns with `sched_yield` after a barrier: which one runs after each
/// yield is chaos's choice among the ready ones, so the same seed gives the same order and
/// another seed another. (The kernel's timing can still change which tasks are ready at a
/// decision, rarely, and less rarely on a loaded machine: so the same seed must give one
/// order twice within eight recordings.)
#[test]
fn the_same_seed_makes_the_same_scheduling_decisions() {
    let prog = threaded("yield_order");
    let ctx = Ctx::new();
    let record = |seed| {
        let (trace, rec) = record_chaos(&ctx, seed, &prog, &[]);
        assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
        let order = yield_order(&ctx, &trace);
        assert_eq!(order.len(), 120, "{order:?}");
        order
    };
    let mut orders: Vec<Vec<usize>> = Vec::new();
    let twice = loop {
        let order = record(42);
        if orders.contains(&order) {
            break order;
        }
        orders.push(order);
        assert!(
            orders.len() < 8,
            "seed 42 made eight different orders: {orders:?}"
        );
    };
    let other = record(43);
    assert_ne!(twice, other, "seeds 42 and 43 made the same order");
}
