//! Asynchronous events without a PMU (issue 5): time-slice preemption of threads that never make
//! a syscall, and signals that land in the middle of a computation.
//!
//! Each program is recorded several times. Where native runs differ, the recordings must differ
//! too (the recorder really let timing decide where the program was interrupted), and every
//! recording must replay (`deja replay -a`) to exactly what it printed. A recording's points
//! (the registers and memory digest of every `Preempt` and mid-code `Signal` event) are what
//! really shows where timing interrupted it: two recordings whose outputs happen to be equal
//! still prove different interleavings when their points differ.
//!
//! A trace rewritten with one point's memory digest changed must be reported as a divergence
//! naming the point; the same rewrite without the change must replay faithfully (so the
//! divergence comes from the tampered point, not from the rewriting).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::rewrite::{rewrite_trace, writes_mut};
use common::*;
use trace_format::{Data, Event, Point, Tid, TraceReader};

/// Recordings made of each program before judging whether they differ.
const MIN_RECORDINGS: usize = 3;
/// Recordings made at most while they all print the same thing.
const MAX_RECORDINGS: usize = 6;
/// Native runs tried before concluding a program is deterministic natively.
const NATIVE_TRIES: usize = 5;
/// How long a deliberately diverging replay may take to report it.
const DIVERGENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// One recording: its trace directory and what `deja rec` printed.
struct Recording {
    trace: PathBuf,
    rec: Output,
}

/// Every event of a trace, in order, with the blobs they refer to read in (so the events of
/// two traces with the same contents compare equal whatever their blob files' layout).
fn resolved_events(trace: &Path) -> Vec<Event> {
    let reader = TraceReader::open(trace).expect("open the trace");
    let mut evs = events(trace);
    for ev in &mut evs {
        for w in writes_mut(ev) {
            w.data = Data::Inline(reader.read_data(&w.data).expect("read a blob"));
        }
    }
    evs
}

/// Every event of a trace, in order.
fn events(trace: &Path) -> Vec<Event> {
    let reader = TraceReader::open(trace)
        .unwrap_or_else(|e| panic!("cannot open the trace {}: {e}", trace.display()));
    reader
        .events()
        .unwrap_or_else(|e| panic!("cannot read the events of {}: {e}", trace.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("cannot read the events of {}: {e}", trace.display()))
}

/// The point of an event that interrupted user code: a preemption, or a signal delivered
/// mid-code.
fn point_of(ev: &Event) -> Option<&Point> {
    match ev {
        Event::Preempt(e) => Some(&e.point),
        Event::Signal(e) => e.point.as_deref(),
        _ => None,
    }
}

/// One interruption of user code, comparable across recordings: the task (numbered in order of
/// first appearance, since thread ids differ between recordings), the event kind, and the state
/// the task was interrupted in (general registers without `orig_rax`, memory digest).
type Interruption = (usize, &'static str, Vec<u64>, [u8; 16]);

/// Where the recording interrupted user code, in order.
fn interruptions(events: &[Event]) -> Vec<Interruption> {
    let mut order: HashMap<Tid, usize> = HashMap::new();
    let mut out = Vec::new();
    for ev in events {
        let next = order.len();
        let task = *order.entry(ev.tid()).or_insert(next);
        if let Some(p) = point_of(ev) {
            let mut regs = p.regs.to_vec();
            regs[trace_format::POINT_IGNORED_REG] = 0;
            out.push((task, ev.kind(), regs, p.digest));
        }
    }
    out
}

/// `deja dump TRACE`, which must succeed.
fn dump(ctx: &Ctx, trace: &Path) -> String {
    let out = ctx.run_deja(&[std::ffi::OsStr::new("dump"), trace.as_os_str()]);
    assert_no_panic("deja dump", &out);
    assert!(out.status.success(), "{}", describe("dump", &out));
    stdout_str(&out)
}

/// Records `prog args` once; it must exit 0.
fn record_ok(ctx: &Ctx, prog: &Path, args: &[&str]) -> Recording {
    let start = Instant::now();
    let (trace, rec) = ctx.record(prog, args);
    assert_eq!(
        shell_code(&rec.status),
        0,
        "deja rec of {} {args:?} failed\n{}",
        prog.display(),
        describe("rec", &rec)
    );
    eprintln!(
        "recorded {} {args:?} in {:.2} s: {}",
        prog.display(),
        start.elapsed().as_secs_f64(),
        stdout_str(&rec).lines().last().unwrap_or("")
    );
    Recording { trace, rec }
}

/// How many different stdouts `recs` printed.
fn distinct_outputs(recs: &[Recording]) -> usize {
    recs.iter()
        .map(|r| r.rec.stdout.clone())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Records `prog args` [`MIN_RECORDINGS`] times, and, if `varies` (native runs differ), more
/// (up to [`MAX_RECORDINGS`]) while every recording printed the same thing. Then, if `varies`,
/// checks the recordings differ: at least two different outputs; or, should all of them happen
/// to print the same (possible, if improbable), at least two different sets of interruption
/// points, which is what really shows that timing chose where the program was interrupted.
///
/// Without `varies` (a program whose output is deterministic), the points may well be the same
/// in every recording: a thread preempted while it spins on an unchanging variable is in the
/// same state whenever the preemption comes.
fn record_several(ctx: &Ctx, prog: &Path, args: &[&str], varies: bool) -> Vec<Recording> {
    let mut recs: Vec<Recording> = (0..MIN_RECORDINGS)
        .map(|_| record_ok(ctx, prog, args))
        .collect();
    while varies && distinct_outputs(&recs) < 2 && recs.len() < MAX_RECORDINGS {
        recs.push(record_ok(ctx, prog, args));
    }
    let signatures: BTreeSet<Vec<Interruption>> = recs
        .iter()
        .map(|r| interruptions(&events(&r.trace)))
        .collect();
    eprintln!(
        "{} recordings of {} {args:?}: {} different outputs, {} different sets of interruption \
         points",
        recs.len(),
        prog.display(),
        distinct_outputs(&recs),
        signatures.len()
    );
    if varies && distinct_outputs(&recs) < 2 {
        assert!(
            signatures.len() >= 2,
            "{} recordings of {} {args:?} printed the same output and were interrupted at \
             exactly the same points (or at none), although native runs differ: the recorder \
             does not let timing decide where the program is interrupted\n{}",
            recs.len(),
            prog.display(),
            describe("first rec", &recs[0].rec)
        );
        eprintln!(
            "note: the recordings all printed the same output; their different interruption \
             points show the interleavings differed"
        );
    }
    recs
}

/// Replays every recording with `deja replay -a`: each must exit 0 and print exactly what its
/// recording printed.
fn replay_all(ctx: &Ctx, recs: &[Recording]) {
    for (i, r) in recs.iter().enumerate() {
        let start = Instant::now();
        let replay = ctx.replay(&r.trace);
        eprintln!(
            "replayed recording {} in {:.2} s",
            i + 1,
            start.elapsed().as_secs_f64()
        );
        assert_replay_matches(&r.rec, &replay);
    }
}

/// The `deja dump` lines of `dump` that contain every one of `needles`.
fn dump_lines<'a>(dump: &'a str, needles: &[&str]) -> Vec<&'a str> {
    dump.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// Asserts the dump of every recording shows at least one preemption.
fn assert_preempted(ctx: &Ctx, recs: &[Recording]) {
    for r in recs {
        let d = dump(ctx, &r.trace);
        let preempted = dump_lines(&d, &[" preempted at rip "]);
        let resumed = dump_lines(&d, &[" resumes"]);
        assert!(
            !preempted.is_empty(),
            "the recording has no `preempted` event\n{d}"
        );
        assert!(
            resumed.len() <= preempted.len() && !resumed.is_empty(),
            "{} preemptions but {} resumptions\n{d}",
            preempted.len(),
            resumed.len()
        );
    }
}

/// The number after `key` in `text` (e.g. `final ` in `... final 123, ...`).
fn number_after(text: &str, key: &str) -> Option<i64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

#[test]
fn timer_signal_lands_mid_loop() {
    let prog = program("timer_loop");
    assert_native_nondeterministic_within(&prog, &[], NATIVE_TRIES);
    let ctx = Ctx::new();
    let recs = record_several(&ctx, &prog, &[], true);
    for r in &recs {
        let out = stdout_str(&r.rec);
        assert!(
            out.starts_with("timer_loop: 3 signals every 20000 us\n")
                && out.matches(" saw counter ").count() == 3,
            "{}",
            describe("rec", &r.rec)
        );
        // The loop has no syscall: every SIGALRM lands in it, and is recorded at the point it
        // landed (one may land exactly at the boundary of the task's previous event, where no
        // point is needed, if the timer fired while the recorder handled that event).
        let d = dump(&ctx, &r.trace);
        let alarms = dump_lines(&d, &["] signal 14 (Async)"]);
        let mid_code = dump_lines(&d, &["] signal 14 (Async)", " mid-code"]);
        assert!(alarms.len() >= 3, "fewer than 3 SIGALRM events\n{d}");
        assert!(
            !mid_code.is_empty(),
            "no SIGALRM was recorded mid-code\n{d}"
        );
    }
    replay_all(&ctx, &recs);
}

#[test]
fn spinning_threads_hand_a_token_round() {
    let prog = threaded("spin_handoff");
    let args = ["3", "10"];
    let native = native_expect(&prog, &args, 0);
    let expected = stdout_str(&native);
    assert!(
        expected.contains("30 hand-offs, order ok"),
        "{}",
        describe("native", &native)
    );
    let ctx = Ctx::new();
    let recs = record_several(&ctx, &prog, &args, false);
    for r in &recs {
        assert_eq!(
            stdout_str(&r.rec),
            expected,
            "the recording printed something else than the native run\n{}",
            describe("rec", &r.rec)
        );
    }
    assert_preempted(&ctx, &recs);
    replay_all(&ctx, &recs);
}

#[test]
fn racy_counter_loses_updates_where_preempted() {
    let prog = threaded("racy_counter");
    assert_native_nondeterministic_within(&prog, &[], NATIVE_TRIES);
    let ctx = Ctx::new();
    let recs = record_several(&ctx, &prog, &[], true);
    for r in &recs {
        let out = stdout_str(&r.rec);
        let expected = number_after(&out, "expected ");
        let fin = number_after(&out, "final ");
        assert!(
            expected == Some(16_000_000) && fin.is_some_and(|f| f > 0 && f <= 16_000_000),
            "{}",
            describe("rec", &r.rec)
        );
    }
    assert_preempted(&ctx, &recs);
    replay_all(&ctx, &recs);
}

/// Threads spending their time in `rep movsb` (one instruction, interrupted between its
/// iterations) are preempted in the middle of one: the point is taken once the instruction
/// has finished (a point inside it could never be found again, its registers changing while
/// its address does not), and every recording replays.
#[test]
fn preemptions_inside_rep_movsb_replay() {
    let prog = threaded("rep_movs_threads");
    let ctx = Ctx::new();
    let recs = record_several(&ctx, &prog, &[], false);
    for r in &recs {
        assert_stdout_has("rec", &r.rec, &["checksum "]);
    }
    assert_preempted(&ctx, &recs);
    replay_all(&ctx, &recs);
}

/// Threads preempted in a nested loop built at `-O0`, whose outer counter only a stack word
/// holds (never written in the steps past the point, which the inner loop fills): the point
/// records the stack's words around `rsp` too, so the replay filters its visits on that
/// counter instead of giving up after thousands of near misses (one per outer pass).
#[test]
fn preemptions_in_an_unoptimized_nested_loop_replay() {
    let prog = built_once("nested_loops", &["-pthread", "-O0"], "nested_loops-O0");
    let ctx = Ctx::new();
    let recs = record_several(&ctx, &prog, &[], false);
    for r in &recs {
        assert_stdout_has("rec", &r.rec, &["thread 0: 3\n", "thread 1: 3\n"]);
    }
    assert_preempted(&ctx, &recs);
    replay_all(&ctx, &recs);
}

#[test]
fn sigusr1_from_the_parent_lands_in_a_computing_child() {
    let prog = program("sigusr_child");
    assert_native_nondeterministic_within(&prog, &[], NATIVE_TRIES);
    let ctx = Ctx::new();
    let recs = record_several(&ctx, &prog, &[], true);
    for r in &recs {
        assert_stdout_has(
            "rec",
            &r.rec,
            &[
                "parent: the child wrote: child: SIGUSR1 landed at counter ",
                "parent: the child exited with status ",
            ],
        );
        // The child computes until the signal comes, so it got the signal while it was in its
        // loop: either recorded mid-code, or (the parent's kill runs while no other task runs
        // user code) right where the child was preempted, when it resumes.
        let evs = events(&r.trace);
        let at = evs
            .iter()
            .position(|e| matches!(e, Event::Signal(s) if s.signo == libc::SIGUSR1))
            .unwrap_or_else(|| panic!("no SIGUSR1 event\n{}", dump(&ctx, &r.trace)));
        let child = evs[at].tid();
        let before = evs[..at].iter().rev().find(|e| e.tid() == child);
        let mid_code = point_of(&evs[at]).is_some();
        assert!(
            mid_code || matches!(before, Some(Event::Resume(_))),
            "the child's SIGUSR1 was neither recorded mid-code nor at its resumption after a \
             preemption\n{}",
            dump(&ctx, &r.trace)
        );
        if !mid_code {
            eprintln!("note: SIGUSR1 reached the child at a resumption after a preemption");
        }
    }
    replay_all(&ctx, &recs);
}

/// `deja replay -a` of a trace that must diverge: it must fail (within
/// [`DIVERGENCE_TIMEOUT`]) without panicking and say it diverged, naming the point by its rip.
fn assert_point_divergence(ctx: &Ctx, trace: &Path, rip: u64) -> Output {
    let start = Instant::now();
    let out = run_with_timeout(
        ctx.deja().arg("replay").arg("-a").arg(trace),
        DIVERGENCE_TIMEOUT,
    );
    eprintln!(
        "the tampered trace was refused in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert_no_panic("replay of a tampered trace", &out);
    assert_ne!(
        shell_code(&out.status),
        0,
        "the replay of a trace with a wrong point succeeded\n{}",
        describe("replay", &out)
    );
    let err = stderr_str(&out);
    assert!(
        err.contains("diverged"),
        "the replay of a trace with a wrong point did not report a divergence\n{}",
        describe("replay", &out)
    );
    let rip_text = format!("{rip:#x}");
    assert!(
        err.contains(&rip_text),
        "the divergence report does not name the point's rip {rip_text}\n{}",
        describe("replay", &out)
    );
    out
}

/// The point of an event that has one, to change it.
fn point_mut(ev: &mut Event) -> Option<&mut Point> {
    match ev {
        Event::Preempt(e) => Some(&mut e.point),
        Event::Signal(e) => e.point.as_deref_mut(),
        _ => None,
    }
}

/// Rewrites the recording `r` twice: unchanged, which must replay faithfully (the rewriting
/// itself changes nothing), and with the memory digest of event `target`'s point changed, which
/// the replay must report as a divergence at that event naming the point's rip and that the
/// nearest candidate differed in memory. Returns the report.
fn assert_tampered_digest_diverges(ctx: &Ctx, r: &Recording, target: usize) -> String {
    let evs = events(&r.trace);
    let rip = point_of(&evs[target])
        .map(|p| p.regs[16])
        .expect("the target event has a point");

    let same = ctx.fresh_path("rewritten");
    rewrite_trace(&r.trace, &same, &ctx.trace_root(), |_, _| {});
    assert!(
        resolved_events(&same) == resolved_events(&r.trace),
        "the rewritten trace has other events"
    );
    let replay = ctx.replay(&same);
    assert_replay_matches(&r.rec, &replay);

    let bad = ctx.fresh_path("tampered");
    rewrite_trace(&r.trace, &bad, &ctx.trace_root(), |i, ev| {
        if i == target {
            if let Some(p) = point_mut(ev) {
                p.digest[0] ^= 0xff;
            }
        }
    });
    let out = assert_point_divergence(ctx, &bad, rip);
    let err = stderr_str(&out);
    assert!(
        err.contains(&format!("at event {target} ")),
        "the divergence report does not name event {target}\n{}",
        describe("replay", &out)
    );
    assert!(
        err.contains("memory"),
        "the divergence report does not say the candidate's memory differed\n{}",
        describe("replay", &out)
    );
    eprintln!("divergence report: {}", err.trim());
    err
}

#[test]
fn tampered_preemption_digest_is_a_divergence() {
    let prog = threaded("spin_handoff");
    let ctx = Ctx::new();
    let r = record_ok(&ctx, &prog, &["3", "4"]);
    let evs = events(&r.trace);
    // Tamper with a preemption in the wait loop (the rip most preemptions share): there the
    // task's state does not change while it spins, so the replay meets the point's registers
    // again and again, and must give up (the same state twice: a cycle), not spin on.
    let mut by_rip: HashMap<u64, usize> = HashMap::new();
    for ev in &evs {
        if let Event::Preempt(p) = ev {
            *by_rip.entry(p.point.regs[16]).or_default() += 1;
        }
    }
    let (&rip, _) = by_rip
        .iter()
        .max_by_key(|(rip, n)| (**n, std::cmp::Reverse(**rip)))
        .unwrap_or_else(|| panic!("the recording has no preemption\n{}", dump(&ctx, &r.trace)));
    let target = evs
        .iter()
        .position(|e| matches!(e, Event::Preempt(p) if p.point.regs[16] == rip))
        .expect("a preemption at the chosen rip");
    assert_tampered_digest_diverges(&ctx, &r, target);
}

#[test]
fn tampered_signal_point_digest_is_a_divergence() {
    // The idle loop (`while (!done) ;`) never changes the task's state, so the replay meets the
    // tampered point's registers again and again, as above. (In the counting loop every
    // iteration has other registers: a wrong point there is only given up at the replayer's
    // time limit, 30 s.)
    let prog = program("timer_loop");
    let ctx = Ctx::new();
    let r = record_ok(&ctx, &prog, &["20000", "2", "idle"]);
    let evs = events(&r.trace);
    let target = evs
        .iter()
        .position(|e| matches!(e, Event::Signal(s) if s.point.is_some()))
        .unwrap_or_else(|| panic!("no mid-code signal\n{}", dump(&ctx, &r.trace)));
    assert_tampered_digest_diverges(&ctx, &r, target);
}
