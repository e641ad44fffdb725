//! Processes recorded in parallel (the recorder's lanes: a tracer thread per CPU, see the
//! recorder's README): exec'd children run on two CPUs and replay exactly; a process that maps
//! a file shared comes back to the first lane, so two processes handing a counter back and
//! forth through shared memory still replay exactly; job control reaches a process of the
//! other lane; `--serial` records one task at a time.

mod common;

use common::*;

/// Whether this machine lets deja use two CPUs (lanes need a second one).
fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// The lines of `deja dump` of `trace` that say a task moved to another lane.
fn lane_moves(ctx: &Ctx, trace: &std::path::Path) -> Vec<String> {
    let out = ctx.run_deja(&["dump".as_ref(), trace.as_os_str()]);
    assert!(out.status.success(), "{}", describe("dump", &out));
    stdout_str(&out)
        .lines()
        .filter(|l| l.contains("moves to lane"))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn exec_children_are_recorded_in_parallel_and_replay() {
    let prog = program("lanes");
    let r = assert_replays_exactly(&prog, &["parallel"]);
    assert_stdout_has(
        "rec of lanes parallel",
        &r.rec,
        &[
            "child 0: 390 bytes, status 0\n",
            "child 1: 393 bytes, status 0\n",
        ],
    );
    let moves = lane_moves(&r.ctx, &r.trace);
    if two_cpus() {
        assert!(
            moves.iter().any(|m| m.ends_with(
                "moves to lane 1 (recorded in parallel with the other lanes)"
            )),
            "no child moved to the second lane: {moves:?}"
        );
    } else {
        eprintln!("one CPU only: nothing to record in parallel");
        assert!(moves.is_empty(), "{moves:?}");
    }
}

#[test]
fn serial_recording_moves_nothing() {
    let ctx = Ctx::new();
    let prog = program("lanes");
    let trace = ctx.fresh_path("serial");
    let rec = ctx.run_deja(&[
        "rec".as_ref(),
        "--serial".as_ref(),
        "-o".as_ref(),
        trace.as_os_str(),
        prog.as_os_str(),
        "parallel".as_ref(),
    ]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    assert!(lane_moves(&ctx, &trace).is_empty());
    assert_replay_matches(&rec, &ctx.replay(&trace));
}

#[test]
fn a_shared_mapping_brings_a_process_back_to_the_first_lane() {
    let prog = program("lanes");
    for round in 1..=3 {
        let ctx = Ctx::new();
        let file = ctx.dir().join("counter");
        let (trace, rec) = ctx.record(&prog, &["shared", file.to_str().unwrap()]);
        assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
        assert_stdout_has(
            &format!("recording {round}"),
            &rec,
            &[
                "peer: done at 4000 after ",
                "parent: done at 3999 after ",
                "peer status 0\n",
            ],
        );
        let replay = ctx.replay(&trace);
        assert_replay_matches(&rec, &replay);
        let moves = lane_moves(&ctx, &trace);
        if two_cpus() {
            assert_eq!(moves.len(), 2, "{moves:?}");
            assert!(
                moves[0].ends_with("moves to lane 1 (recorded in parallel with the other lanes)")
            );
            assert!(
                moves[1].ends_with("moves to lane 0 (recorded in parallel with the other lanes)")
            );
        }
    }
}

#[test]
fn a_process_of_the_second_lane_is_stopped_and_continued() {
    let prog = program("lanes");
    let r = assert_replays_exactly(&prog, &["stop"]);
    assert_stdout_has(
        "rec of lanes stop",
        &r.rec,
        &["stopped 1 by 19\n", "exited 1 with 3\n", "sleeper 4\n"],
    );
    if two_cpus() {
        assert_eq!(lane_moves(&r.ctx, &r.trace).len(), 1);
    }
}
