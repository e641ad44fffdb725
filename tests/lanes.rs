//! Processes recorded in parallel (`deja rec`'s default, the recorder's lanes: a tracer thread
//! per CPU, see the recorder's README): exec'd children run on two CPUs and replay exactly; a
//! process that maps a file shared comes back to the first lane, so two processes handing a
//! counter back and forth through shared memory still replay exactly; job control reaches a
//! process of the other lane; gdb goes backwards and forwards on such a recording; with
//! `--serial` a recording runs one task at a time.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::gdb::{gdb_batch, printed, text};
use common::*;

/// Whether this machine lets deja use two CPUs (lanes need a second one).
fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// `deja rec` (processes in parallel, the default) of the `lanes` program with `args`; the
/// trace and deja's output.
fn record_parallel(ctx: &Ctx, args: &[&str]) -> (PathBuf, Output) {
    let (trace, rec) = ctx.record(program("lanes"), args);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    (trace, rec)
}

/// The lines of `deja dump` of `trace` that say a task moved to another lane.
fn lane_moves(ctx: &Ctx, trace: &Path) -> Vec<String> {
    let out = ctx.run_deja(&["dump".as_ref(), trace.as_os_str()]);
    assert!(out.status.success(), "{}", describe("dump", &out));
    stdout_str(&out)
        .lines()
        .filter(|l| l.contains("moves to lane"))
        .map(|l| l.trim().to_string())
        .collect()
}

const TO_SECOND: &str = "moves to lane 1 (recorded in parallel with the other lanes)";
const TO_FIRST: &str = "moves to lane 0 (recorded in parallel with the other lanes)";

#[test]
fn exec_children_are_recorded_in_parallel_and_replay() {
    let ctx = Ctx::new();
    let (trace, rec) = record_parallel(&ctx, &["parallel"]);
    assert_stdout_has(
        "rec of lanes parallel",
        &rec,
        &[
            "child 0: 390 bytes, status 0\n",
            "child 1: 393 bytes, status 0\n",
        ],
    );
    assert_replay_matches(&rec, &ctx.replay(&trace));
    let moves = lane_moves(&ctx, &trace);
    if two_cpus() {
        assert!(
            moves.iter().any(|m| m.ends_with(TO_SECOND)),
            "no child moved to the second lane: {moves:?}"
        );
    } else {
        eprintln!("one CPU only: nothing to record in parallel");
        assert!(moves.is_empty(), "{moves:?}");
    }
}

/// A shell that execs the program: the initial process runs a new program, yet stays in the
/// first lane (its real parent is the recorder's first tracer thread, whose waits would take
/// its stops from the other lane's thread); its exec'd children still go to the second. The
/// replay, in parallel, matches.
#[test]
fn the_initial_process_stays_in_the_first_lane() {
    let ctx = Ctx::new();
    let lanes = program("lanes");
    let script = format!("exec {} parallel", lanes.display());
    let (trace, rec) = ctx.record("/bin/sh", &["-c", &script]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let dump = ctx.run_deja(&["dump".as_ref(), trace.as_os_str()]);
    let dump = stdout_str(&dump);
    let root = dump
        .lines()
        .next()
        .and_then(|l| l.split('[').nth(1)?.split(']').next().map(str::to_string))
        .expect("the first event's task");
    let moves = lane_moves(&ctx, &trace);
    assert!(
        !moves.iter().any(|m| m.contains(&format!("[{root}]"))),
        "the initial process {root} moved: {moves:?}"
    );
    if two_cpus() {
        assert!(
            moves.iter().any(|m| m.ends_with(TO_SECOND)),
            "no child moved to the second lane: {moves:?}"
        );
    }
    assert_replay_matches(&rec, &ctx.replay(&trace));
}

#[test]
fn with_serial_nothing_moves() {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record_opts(&["--serial"], program("lanes"), &["parallel"]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    assert!(lane_moves(&ctx, &trace).is_empty());
    assert_replay_matches(&rec, &ctx.replay(&trace));
}

#[test]
fn a_shared_mapping_brings_a_process_back_to_the_first_lane() {
    for round in 1..=3 {
        let ctx = Ctx::new();
        let file = ctx.dir().join("counter");
        let (trace, rec) = record_parallel(&ctx, &["shared", file.to_str().unwrap()]);
        assert_stdout_has(
            &format!("recording {round}"),
            &rec,
            &[
                "peer: done at 4000 after ",
                "parent: done at 3999 after ",
                "peer status 0\n",
            ],
        );
        assert_replay_matches(&rec, &ctx.replay(&trace));
        let moves = lane_moves(&ctx, &trace);
        if two_cpus() {
            assert_eq!(moves.len(), 2, "{moves:?}");
            assert!(moves[0].ends_with(TO_SECOND), "{moves:?}");
            assert!(moves[1].ends_with(TO_FIRST), "{moves:?}");
        }
    }
}

#[test]
fn lanes_replay_at_once_and_echo_output_in_the_recorded_order() {
    let ctx = Ctx::new();
    let (trace, rec) = record_parallel(&ctx, &["chatter"]);
    let out = stdout_str(&rec);
    for who in ["parent ", "child "] {
        let lines = out
            .lines()
            .filter(|l| l.starts_with(who) && !l.contains("status"))
            .count();
        assert_eq!(lines, 40, "{who}lines in:\n{out}");
    }
    assert!(out.ends_with("child status 0\n"), "{out}");
    // Byte for byte, interleaving included, whichever lane replays first.
    assert_replay_matches(&rec, &ctx.replay(&trace));
    let serial = ctx.run_deja(&[
        OsStr::new("replay"),
        OsStr::new("-a"),
        OsStr::new("--serial"),
        trace.as_os_str(),
    ]);
    assert_replay_matches(&rec, &serial);
    if two_cpus() {
        assert_eq!(lane_moves(&ctx, &trace).len(), 1);
        let logged = run_with_timeout(
            ctx.deja()
                .env("DEJA_LOG", "debug")
                .args(["replay", "-a", "-q"])
                .arg(&trace),
            TIMEOUT,
        );
        assert!(logged.status.success(), "{}", describe("replay", &logged));
        assert!(
            stderr_str(&logged).contains("replays lane 1 on a thread of its own"),
            "{}",
            describe("replay", &logged)
        );
    }
}

/// A child stopped and continued at once while it starts in the second lane (rr's
/// `exec_stopsig`): its `SIGSTOP` may be delivered mid-code with the `SIGCONT` coming before
/// the stop takes hold (the recorder holds a stop signal while it takes its point), so the
/// recording's task runs on; its replay, where nothing cancels the stop, passes over that
/// group-stop. Several recordings (the timing decides), each replays.
#[test]
fn a_child_stopped_and_continued_as_it_starts_replays() {
    let ctx = Ctx::new();
    for _ in 0..8 {
        let (trace, rec) = record_parallel(&ctx, &["stopcont"]);
        assert_stdout_has("rec of lanes stopcont", &rec, &["child exited 1 with 5\n"]);
        assert_replay_matches(&rec, &ctx.replay(&trace));
    }
}

/// A recording in lanes whose recorder is killed while both processes print: the replay runs
/// both lanes to the trace's end, echoes every recorded write in the trace's order, and then
/// says the recording is incomplete.
#[test]
fn a_killed_recording_in_lanes_replays_both_lanes_to_its_end() {
    if !two_cpus() {
        return;
    }
    let ctx = Ctx::new();
    let trace = ctx.fresh_path("trace");
    let mut cmd = ctx.deja();
    cmd.arg("rec")
        .arg("-o")
        .arg(&trace)
        .arg(program("lanes"))
        .args(["chatter", "2000"]);
    let mut child = spawn_captured(&mut cmd);
    let pgid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let writes = ctx.stdout_writes(&trace);
        let mut tids: Vec<i64> = writes.iter().map(|(t, _)| *t).collect();
        tids.dedup();
        if tids.len() >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no writes of both processes in the trace within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    kill_group(pgid);
    let expected: Vec<u8> = ctx
        .stdout_writes(&trace)
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    let out = ctx.replay(&trace);
    assert!(!out.status.success(), "{}", describe("replay", &out));
    assert_stderr_mentions("replay -a of a killed recording", &out, &["incomplete"]);
    assert!(
        out.stdout == expected,
        "the replay did not echo the recorded writes in order\n{}\nexpected:\n{}",
        describe("replay", &out),
        String::from_utf8_lossy(&expected)
    );
}

#[test]
fn a_process_of_the_second_lane_is_stopped_and_continued() {
    let ctx = Ctx::new();
    let (trace, rec) = record_parallel(&ctx, &["stop"]);
    assert_stdout_has(
        "rec of lanes stop",
        &rec,
        &["stopped 1 by 19\n", "exited 1 with 3\n", "sleeper 4\n"],
    );
    assert_replay_matches(&rec, &ctx.replay(&trace));
    if two_cpus() {
        assert_eq!(lane_moves(&ctx, &trace).len(), 1);
    }
}

#[test]
fn gdb_goes_backwards_and_forwards_on_a_recording_in_lanes() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, _) = record_parallel(&ctx, &["parallel"]);
    let out = gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break waitpid",
            "continue",
            "print $rdi",
            "continue",
            "print $rdi",
            // Back over the parent's SIGCHLD (delivered in deja's library, right after a read
            // whose run the other lane's events interleave) to the first wait, then on again.
            "reverse-continue",
            "print $rdi",
            "continue",
            "print $rdi",
        ],
    );
    let all = text(&out);
    // The parent waits for its first child, then its second.
    let waited = printed(&all);
    assert_eq!(waited.len(), 4, "{all}");
    assert_ne!(waited[0], waited[1], "{all}");
    assert_eq!(waited[2], waited[0], "{all}");
    assert_eq!(waited[3], waited[1], "{all}");
    assert!(!all.contains("going backwards:"), "{all}");
}
