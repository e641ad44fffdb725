//! The in-process fast path (issue 12): each scenario is recorded and replayed with the fast
//! path on (the default), checked to replay exactly, and checked to have used it: `deja info
//! --json` counts buffered syscalls, and `deja dump` shows the calls that matter inside
//! "N buffered syscall(s):" events. The programs are `tests/programs/fp_*.c`.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;

use common::*;

/// The `syscalls` object of `deja info --json`.
#[derive(Debug)]
struct Counts {
    buffered: u64,
    traced: u64,
    fast_path: bool,
    sites_patched: u64,
    sites_refused: u64,
}

fn counts(ctx: &Ctx, trace: &Path) -> Counts {
    let info = ctx.info_json(trace);
    let s = &info["syscalls"];
    let num = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("deja info --json: syscalls.{k} is not a number: {info}"))
    };
    Counts {
        buffered: num("buffered"),
        traced: num("traced"),
        fast_path: s["fast_path"]
            .as_bool()
            .unwrap_or_else(|| panic!("deja info --json: syscalls.fast_path: {info}")),
        sites_patched: num("sites_patched"),
        sites_refused: num("sites_refused"),
    }
}

/// One event of `deja dump`: its index, task, first line, and, for a `Buffered` event, the
/// calls it holds (the names of the syscalls, and each call's whole line).
#[derive(Debug)]
struct DumpEvent {
    index: u64,
    tid: i32,
    line: String,
    calls: Vec<(String, String)>,
}

impl DumpEvent {
    fn is_buffered(&self) -> bool {
        self.line.ends_with("buffered syscall(s):")
    }
}

/// `deja dump TRACE`, parsed: a line starting (after its indent) with a digit begins an event
/// (`N [tid] ...`); the lines of a `Buffered` event's calls follow it (`    name(args) = r`).
fn dump(ctx: &Ctx, trace: &Path) -> Vec<DumpEvent> {
    let out = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
    assert!(out.status.success(), "{}", describe("dump", &out));
    let text = stdout_str(&out);
    let mut events: Vec<DumpEvent> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with(|c: char| c.is_ascii_digit()) {
            let mut words = t.splitn(3, ' ');
            let index = words.next().unwrap().parse().unwrap();
            let tid = words
                .next()
                .and_then(|w| w.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
                .unwrap_or_else(|| panic!("dump: no [tid] in {line:?}"));
            events.push(DumpEvent {
                index,
                tid,
                line: t.to_string(),
                calls: Vec::new(),
            });
        } else if let Some(ev) = events.last_mut() {
            if ev.is_buffered() {
                let name = t.split('(').next().unwrap_or("").to_string();
                ev.calls.push((name, t.to_string()));
            }
        }
    }
    events
}

/// How many buffered calls named `name` the dump holds (of task `tid` if given).
fn buffered_named(events: &[DumpEvent], name: &str, tid: Option<i32>) -> usize {
    events
        .iter()
        .filter(|e| e.is_buffered() && !matches!(tid, Some(t) if t != e.tid))
        .flat_map(|e| &e.calls)
        .filter(|(n, _)| n == name)
        .count()
}

/// Asserts the trace used the fast path: it was on, and at least `min` syscalls were buffered;
/// returns the counts.
fn assert_buffered_at_least(ctx: &Ctx, trace: &Path, min: u64) -> Counts {
    let c = counts(ctx, trace);
    assert!(c.fast_path, "the fast path was off: {c:?}");
    assert!(
        c.buffered >= min,
        "expected at least {min} buffered syscalls: {c:?}"
    );
    c
}

fn preemptions(events: &[DumpEvent]) -> usize {
    events
        .iter()
        .filter(|e| e.line.contains(" preempted at rip "))
        .count()
}

/// 20 000 one-byte reads of a file, each line written to stdout as it completes: the reads are
/// buffered (the writes, whose output deja echoes, stay traced), the output is the file's, and
/// the replay prints it again even once the file is gone (its bytes come from the trace).
#[test]
fn many_small_reads_and_writes() {
    let files = Ctx::new();
    let input = files.dir().join("input.txt");
    let nonce: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 20_000 {
        text += &format!("line {i} {nonce} {}\n", "x".repeat(i % 60));
        i += 1;
    }
    text.truncate(20_000);
    std::fs::write(&input, &text).unwrap();
    let input_s = input.to_str().unwrap();
    let r = assert_replays_like_native(program("fp_small_io"), &[input_s], 0, None);
    let out = stdout_str(&r.rec);
    assert!(
        out.starts_with(&text) && out.contains("fp_small_io: 20000 bytes"),
        "{}",
        describe("rec", &r.rec)
    );
    let c = assert_buffered_at_least(&r.ctx, &r.trace, 19_000);
    assert!(c.sites_patched > 0, "{c:?}");
    let events = dump(&r.ctx, &r.trace);
    let reads = buffered_named(&events, "read", None);
    assert!(
        reads >= 19_000,
        "only {reads} read calls inside buffered events"
    );
    // The data comes from the trace.
    std::fs::remove_file(&input).unwrap();
    let replay = r.ctx.replay(&r.trace);
    assert_replay_matches(&r.rec, &replay);
}

/// clock_gettime, gettimeofday and time in a loop through glibc (the vDSO, which deja turns
/// into syscalls): all buffered; the values differ between native runs and replay exactly.
#[test]
fn clock_calls_in_a_loop() {
    let r = nondeterministic_roundtrip(
        program("fp_clocks"),
        &["2000"],
        &["fp_clocks: 8000 calls, monotonic went backwards 0 times"],
    );
    assert_buffered_at_least(&r.ctx, &r.trace, 7_500);
    let events = dump(&r.ctx, &r.trace);
    for (name, min) in [
        ("clock_gettime", 3_800),
        ("gettimeofday", 1_900),
        ("time", 1_900),
    ] {
        let n = buffered_named(&events, name, None);
        assert!(n >= min, "only {n} {name} calls inside buffered events");
    }
}

/// A thread reads an empty pipe at a patched read site (its earlier reads there were buffered):
/// the library's non-blocking probe fails and the read blocks on the traced path, without
/// holding the CPU, while another thread sleeps, computes and writes the data. The recording
/// ends (within the helpers' timeout) and replays exactly.
#[test]
fn buffered_read_blocking_on_a_pipe_lets_another_thread_run() {
    let r = assert_replays_exactly(threaded("fp_pipe_block"), &[]);
    let out = stdout_str(&r.rec);
    assert!(
        out.contains("A read 200 zero bytes") && out.contains("A round 4 read"),
        "{}",
        describe("rec", &r.rec)
    );
    let fds = out.lines().next().unwrap_or("");
    let words: Vec<&str> = fds.split_whitespace().collect();
    assert!(
        words.len() == 6 && words[0] == "zero" && words[3] == "pipe",
        "first line: {fds:?}"
    );
    let (zero_fd, pipe_fd): (u64, u64) = (words[2].parse().unwrap(), words[5].parse().unwrap());
    assert_buffered_at_least(&r.ctx, &r.trace, 500);
    let events = dump(&r.ctx, &r.trace);
    // The reader: the task whose traced reads of the pipe are in the trace.
    let pipe_read = format!("syscall read({pipe_fd:#x},");
    let pipe_reads: Vec<&DumpEvent> = events
        .iter()
        .filter(|e| e.line.contains(&pipe_read))
        .collect();
    assert_eq!(
        pipe_reads.len(),
        5,
        "expected the 5 reads of the pipe on the traced path: {pipe_reads:#?}"
    );
    let reader = pipe_reads[0].tid;
    // Its reads of /dev/zero at the same site were buffered, before the pipe reads.
    let zero_read = format!("read({zero_fd:#x},");
    let first_pipe_read = pipe_reads[0].index;
    let buffered_zero_reads = events
        .iter()
        .filter(|e| e.tid == reader && e.is_buffered() && e.index < first_pipe_read)
        .flat_map(|e| &e.calls)
        .filter(|(_, l)| l.starts_with(&zero_read))
        .count();
    assert!(
        buffered_zero_reads >= 150,
        "the reader's reads of /dev/zero were not buffered ({buffered_zero_reads})"
    );
}

/// Checks fp_signals' report: at least `min` signals (a few more may come before the timer
/// stops), each handler's getpid answered.
fn assert_handled_signals(r: &Replayed, min: u64) {
    let out = stdout_str(&r.rec);
    let words: Vec<&str> = out.split_whitespace().collect();
    let n: u64 = words[2].parse().unwrap_or(0);
    let ok = words
        .iter()
        .position(|w| *w == "ok")
        .and_then(|i| words.get(i + 1))
        .map(|w| w.trim_end_matches(','));
    assert!(
        n >= min && ok == Some(n.to_string().as_str()),
        "{}",
        describe("rec", &r.rec)
    );
}

/// A timer fires every 500 us (ITIMER_REAL) while the program loops over buffered calls, so
/// most signals land while it is inside the library or a stub; the handler makes buffered
/// calls itself. 300 signals, each replayed at its recorded place.
#[test]
fn real_timer_signals_land_inside_the_library() {
    let r = nondeterministic_roundtrip(
        program("fp_signals"),
        &["real", "500", "300"],
        &["fp_signals real: ", " 0 bad"],
    );
    assert_handled_signals(&r, 300);
    assert_buffered_at_least(&r.ctx, &r.trace, 1_000);
    let events = dump(&r.ctx, &r.trace);
    let signals = events
        .iter()
        .filter(|e| e.line.contains("] signal 14 (Async)"))
        .count();
    assert!(signals >= 300, "only {signals} SIGALRM events");
    let in_handler = buffered_named(&events, "getpid", None);
    assert!(in_handler >= 300, "{in_handler} buffered getpid calls");
}

/// The same with ITIMER_PROF (SIGPROF after each interval of the process's CPU time): the
/// signals land wherever the program spends its CPU time, mostly in the library.
#[test]
fn prof_timer_signals_land_inside_the_library() {
    let r = nondeterministic_roundtrip(
        program("fp_signals"),
        &["prof", "500", "60"],
        &["fp_signals prof: ", " 0 bad"],
    );
    assert_handled_signals(&r, 60);
    assert_buffered_at_least(&r.ctx, &r.trace, 1_000);
    let events = dump(&r.ctx, &r.trace);
    let signals = events
        .iter()
        .filter(|e| e.line.contains("] signal 27 (Async)"))
        .count();
    assert!(signals >= 60, "only {signals} SIGPROF events");
}

/// A static binary: the library is loaded into it too, and its calls are buffered: the vDSO's
/// `clock_gettime` and the program's own copies of glibc's `read` and `getpid`, whose bounds
/// come from its `.eh_frame` section (it has no `PT_GNU_EH_FRAME`).
#[test]
fn static_binary() {
    let prog = match try_build_program("fp_static", &["-static"], "fp_static-static") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("note: cannot build a static binary (is libc.a installed?); skipping\n{e}");
            return;
        }
    };
    let r = nondeterministic_roundtrip(&prog, &[], &["fp_static: 4000 ok"]);
    let c = assert_buffered_at_least(&r.ctx, &r.trace, 5_700);
    let events = dump(&r.ctx, &r.trace);
    for (name, min) in [("clock_gettime", 1_900), ("read", 1_900), ("getpid", 1_900)] {
        let n = buffered_named(&events, name, None);
        assert!(n >= min, "{n} buffered {name} calls; {c:?}");
    }
    assert!(c.sites_patched >= 3, "{c:?}");
    if c.sites_refused > 0 {
        eprintln!("note: syscall sites of the static binary left traced: {c:?}");
    }
}

/// Fork and exec from a buffered program: the parent's calls before and after the fork, the
/// child's before its exec (in its copy of the patched code and library) and after it (in the
/// new program, which gets the library again) are all buffered.
#[test]
fn fork_and_exec_from_a_buffered_program() {
    let clocks = program("fp_clocks");
    let r = assert_replays_exactly(program("fp_fork_exec"), &[clocks.to_str().unwrap(), "500"]);
    assert_stdout_has(
        "rec",
        &r.rec,
        &[
            "parent before fork: 500\n",
            "child before exec: 500\n",
            "fp_clocks: 2000 calls",
            "parent after fork: 500; child exited 1 status 0\n",
        ],
    );
    assert_buffered_at_least(&r.ctx, &r.trace, 4_000);
    let events = dump(&r.ctx, &r.trace);
    let parent = events[0].tid;
    let exec = events
        .iter()
        .find(|e| e.tid != parent && e.line.contains("] exec "))
        .unwrap_or_else(|| panic!("no exec of the child in the trace: {events:#?}"));
    let child = exec.tid;
    let count = |tid: i32, before: Option<bool>| {
        events
            .iter()
            .filter(|e| {
                e.tid == tid
                    && e.is_buffered()
                    && !matches!(before, Some(b) if (e.index < exec.index) != b)
            })
            .map(|e| e.calls.len())
            .sum::<usize>()
    };
    // 500 reads of /dev/zero and 500 getpid before the fork and as many after it (less the
    // few that take the traced path when the buffer is full).
    let n = count(parent, None);
    assert!(n >= 1_900, "parent: {n} buffered calls");
    let n = count(child, Some(true));
    assert!(n >= 950, "child before its exec: {n} buffered calls");
    // fp_clocks 500: 2 000 clock calls.
    let n = count(child, Some(false));
    assert!(n >= 1_900, "child after its exec: {n} buffered calls");
    let tids: BTreeSet<i32> = events
        .iter()
        .filter(|e| e.is_buffered())
        .map(|e| e.tid)
        .collect();
    assert_eq!(tids.len(), 2, "{tids:?}");

    // Exec of a program that makes (almost) no buffered call.
    let r = assert_replays_exactly(program("fp_fork_exec"), &["/bin/true"]);
    assert_stdout_has(
        "rec",
        &r.rec,
        &["child before exec: 500\n", "child exited 1 status 0\n"],
    );
    assert_buffered_at_least(&r.ctx, &r.trace, 2_000);
}

/// `deja rec -n`: no `Buffered` event, `deja info` says the fast path is off; the same program
/// recorded with the fast path prints the same and buffers its reads.
#[test]
fn no_syscall_buffer_switch() {
    let ctx = Ctx::new();
    let input = ctx.dir().join("input.txt");
    std::fs::write(&input, "one\ntwo two\nthree three three\n".repeat(100)).unwrap();
    let prog = program("fp_small_io");
    let args = [input.to_str().unwrap()];

    let trace_n = ctx.fresh_path("trace-n");
    let rec_n = run_with_timeout(
        ctx.deja()
            .arg("rec")
            .arg("-n")
            .arg("-o")
            .arg(&trace_n)
            .arg(&prog)
            .args(args),
        TIMEOUT,
    );
    assert_no_panic("deja rec -n", &rec_n);
    assert!(rec_n.status.success(), "{}", describe("rec -n", &rec_n));
    let c = counts(&ctx, &trace_n);
    assert!(
        !c.fast_path && c.buffered == 0 && c.sites_patched == 0,
        "{c:?}"
    );
    assert!(c.traced > 2_000, "{c:?}");
    let events = dump(&ctx, &trace_n);
    assert!(
        !events
            .iter()
            .any(|e| e.is_buffered() || e.line.contains("] patched the ")),
        "a -n trace holds fast-path events"
    );
    let info = ctx.run_deja(&[OsStr::new("info"), trace_n.as_os_str()]);
    assert!(
        stdout_str(&info).contains("fast path off"),
        "{}",
        describe("info", &info)
    );
    assert_replay_matches(&rec_n, &ctx.replay(&trace_n));

    let (trace, rec) = ctx.record(&prog, &args);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    assert_eq!(
        stdout_str(&rec),
        stdout_str(&rec_n),
        "the fast path changed what the program printed"
    );
    let c = assert_buffered_at_least(&ctx, &trace, 2_500);
    assert!(c.traced < 1_000, "{c:?}");
    let info = ctx.run_deja(&[OsStr::new("info"), trace.as_os_str()]);
    assert!(
        stdout_str(&info).contains(" buffered ("),
        "{}",
        describe("info", &info)
    );
    assert_replay_matches(&rec, &ctx.replay(&trace));
}

/// Four threads each making buffered calls (getpid, getppid, clock_gettime, reads of /dev/zero)
/// with computing in between and no traced call in their loops but when a buffer fills. When a
/// thread's time slice runs out while the others wait, the recorder asks the library to hand
/// the CPU over at the thread's next call, which then takes the traced path (no point, no
/// single steps); with chaos scheduling it preempts them at points of their user code, some of
/// the time inside the library. Three recordings (the last with chaos), each replayed exactly;
/// hand-overs at calls in the plain ones, preemptions in the chaotic one.
#[test]
fn threads_preempted_amid_buffered_calls() {
    let prog = threaded("fp_threads");
    // Each thread computes for some 100 ms natively: more than a 50 ms time slice.
    let args = ["4", "300", "300000"];
    let ctx = Ctx::new();
    let (mut handed_over, mut preempted) = (0, 0);
    for round in 0..3 {
        let chaos = round == 2;
        let opts: &[&str] = if chaos { &["--chaos=7"] } else { &[] };
        let (trace, rec) = ctx.record_opts(opts, &prog, &args);
        assert!(
            rec.status.success(),
            "round {round}\n{}",
            describe("rec", &rec)
        );
        let out = stdout_str(&rec);
        assert_eq!(
            out.matches(": bad 0 digest ").count(),
            4,
            "round {round}\n{}",
            describe("rec", &rec)
        );
        assert!(out.contains("tickets 76\n"), "{}", describe("rec", &rec));
        assert_replay_matches(&rec, &ctx.replay(&trace));
        assert_buffered_at_least(&ctx, &trace, 4_000);
        let events = dump(&ctx, &trace);
        let tids: BTreeSet<i32> = events
            .iter()
            .filter(|e| e.is_buffered())
            .map(|e| e.tid)
            .collect();
        assert!(tids.len() >= 4, "buffered calls in {tids:?} only");
        if chaos {
            preempted += preemptions(&events);
        } else {
            // The loops' calls the library sent to the traced path to hand the CPU over.
            handed_over += events
                .iter()
                .filter(|e| {
                    ["] syscall read(", "] syscall getpid(", "] syscall getppid("]
                        .iter()
                        .any(|c| e.line.contains(c))
                })
                .count();
        }
    }
    assert!(handed_over > 0, "no hand-over at a call in two recordings");
    assert!(preempted > 0, "no preemption in the chaotic recording");
}

/// The buffered calls of `events` named `name`, as their dump lines (`name(args) = r ...`).
fn buffered_lines<'a>(events: &'a [DumpEvent], name: &'a str) -> impl Iterator<Item = &'a str> {
    events
        .iter()
        .filter(|e| e.is_buffered())
        .flat_map(|e| &e.calls)
        .filter(move |(n, _)| n == name)
        .map(|(_, l)| l.as_str())
}

/// Argument `i` of a dump line `name(0x1, 0x2, ...) = r`.
fn dump_arg(line: &str, i: usize) -> u64 {
    let args = line
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(a, _)| a)
        .unwrap_or_else(|| panic!("no arguments in {line:?}"));
    let a = args
        .split(", ")
        .nth(i)
        .unwrap_or_else(|| panic!("no argument {i} in {line:?}"));
    u64::from_str_radix(a.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("argument {i} of {line:?} is not hex"))
}

/// Calls the replay runs for real (`rt_sigaction`, `rt_sigprocmask`, `mprotect`, `munmap`,
/// `brk`, anonymous `mmap` placed at the recorded address) and emulated ones buffered only for
/// some arguments (`fcntl` F_GETFD/F_SETFD/F_GETFL/F_SETFL, `ioctl` TCGETS/TIOCGWINSZ,
/// `prlimit64` queries), in a loop: all buffered, and the replay (which runs the first kind
/// again, checking their results) is exact. What must stay traced does: `SIGSEGV`'s action and
/// masks naming it (deja follows both), `SIG_SETMASK` and unblocks of a pending signal.
#[test]
fn executed_and_conditional_calls_are_buffered() {
    let r = assert_replays_exactly(program("fp_exec_calls"), &["loop", "300"]);
    assert_stdout_has(
        "rec",
        &r.rec,
        &["fp_exec_calls: 300 iterations, raised 60, handler a 30 b 30"],
    );
    let c = assert_buffered_at_least(&r.ctx, &r.trace, 6_000);
    let events = dump(&r.ctx, &r.trace);
    for (name, min) in [
        ("rt_sigaction", 900),
        ("rt_sigprocmask", 850),
        ("mprotect", 600),
        ("brk", 600),
        ("munmap", 300),
        ("mmap", 300),
        ("fcntl", 1_800),
        ("ioctl", 900),
        ("prlimit64", 300),
    ] {
        let n = buffered_named(&events, name, None);
        assert!(
            n >= min,
            "only {n} {name} calls inside buffered events ({c:?})"
        );
    }
    // Only the safe arguments were buffered.
    for l in buffered_lines(&events, "rt_sigaction") {
        assert_ne!(dump_arg(l, 0), libc::SIGSEGV as u64, "{l}");
    }
    for l in buffered_lines(&events, "rt_sigprocmask") {
        assert!(
            dump_arg(l, 1) == 0 || dump_arg(l, 0) <= libc::SIG_UNBLOCK as u64,
            "{l}"
        );
    }
    for l in buffered_lines(&events, "fcntl") {
        assert!((1..=4).contains(&dump_arg(l, 1)), "{l}");
    }
    for l in buffered_lines(&events, "ioctl") {
        assert!(
            [libc::TCGETS, libc::TIOCGWINSZ].contains(&dump_arg(l, 1)),
            "{l}"
        );
    }
    for l in buffered_lines(&events, "prlimit64") {
        assert_eq!(dump_arg(l, 2), 0, "{l}");
    }
    let traced = |name: &str| {
        events
            .iter()
            .filter(|e| e.line.contains(&format!("] syscall {name}(")))
            .count()
    };
    // Every 10th iteration: sigaction(SIGSEGV) and three masks.
    assert!(traced("rt_sigaction") >= 30, "SIGSEGV's action not traced");
    // ... and the unblocks that make the raised SIGUSR1 deliverable (every 10th iteration):
    // it arrives at their exit, not inside the library.
    assert!(
        traced("rt_sigprocmask") >= 120,
        "masks naming SIGSEGV or unblocking a pending signal not traced"
    );
    let inside = events
        .iter()
        .filter(|e| e.line.contains("] signal ") && e.line.contains("mid-code"))
        .count();
    assert_eq!(inside, 0, "signals delivered inside the library");
    let traced_anon = events
        .iter()
        .filter(|e| e.line.contains("] syscall mmap(") && !e.line.contains(" maps /"))
        .count();
    assert_eq!(traced_anon, 0, "anonymous mmap traced");
    assert!(
        c.traced < 1_000,
        "{} traced syscalls: the loop's calls were not buffered ({c:?})",
        c.traced
    );
}

/// A `SIGUSR1` handler installed by a buffered `rt_sigaction` (run for real in replay) is the
/// one the replay's signal runs: the two handlers take turns, each says it ran, and a replay
/// where the call had not installed it would die of `SIGUSR1` or count the other handler.
#[test]
fn handler_installed_by_a_buffered_sigaction_runs_in_replay() {
    let r = assert_replays_exactly(program("fp_exec_calls"), &["loop", "40"]);
    assert_stdout_has(
        "replay",
        &r.replay,
        &["fp_exec_calls: 40 iterations, raised 8, handler a 4 b 4"],
    );
    let events = dump(&r.ctx, &r.trace);
    // Every SIGUSR1 delivery comes after a buffered rt_sigaction(SIGUSR1, handler) and no
    // traced one.
    let mut installed_by = None;
    let mut signals = 0;
    for e in &events {
        if e.line.contains("] syscall rt_sigaction(0xa,") {
            installed_by = Some("traced");
        }
        for (name, l) in &e.calls {
            if name == "rt_sigaction"
                && dump_arg(l, 0) == libc::SIGUSR1 as u64
                && dump_arg(l, 1) != 0
            {
                installed_by = Some("buffered");
            }
        }
        if e.line.contains("] signal 10") {
            signals += 1;
            assert_eq!(installed_by, Some("buffered"), "before {}", e.line);
        }
    }
    assert_eq!(signals, 8, "SIGUSR1 deliveries in the trace");
}

/// A buffered call the replay runs for real must return the recorded result: `sbrk` of 1 GiB
/// succeeds in the recording, and fails in a replay under a 256 MiB `RLIMIT_DATA`, which deja
/// reports as a divergence naming `brk` and both results (a replay without the limit is
/// exact).
#[test]
fn executed_call_returning_otherwise_in_replay_is_a_divergence() {
    let r = assert_replays_exactly(program("fp_exec_calls"), &["bigbrk"]);
    assert_stdout_has("rec", &r.rec, &["fp_exec_calls: bigbrk grew"]);
    let events = dump(&r.ctx, &r.trace);
    assert!(
        buffered_named(&events, "brk", None) >= 2,
        "the big brk was not buffered"
    );
    let mut cmd = r.ctx.deja();
    cmd.arg("replay").arg("-a").arg(&r.trace);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let lim = libc::rlimit {
                rlim_cur: 256 << 20,
                rlim_max: 256 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_with_timeout(&mut cmd, std::time::Duration::from_secs(60));
    assert_no_panic("deja replay -a (RLIMIT_DATA)", &out);
    assert!(!out.status.success(), "{}", describe("replay", &out));
    for needle in [
        "diverged",
        "buffered syscall brk(",
        "when the replay ran it",
    ] {
        assert_stderr_mentions("replay under RLIMIT_DATA", &out, &[needle]);
    }
}

/// Anonymous private memory mapped (without an address, with `MAP_FIXED` over an earlier
/// mapping, as a `MAP_NORESERVE` reservation) and unmapped in a loop: every `mmap` is buffered
/// (`PROBE_PLACE`: the replay's library maps at the recorded address), none is traced, and the
/// replay prints the same placements.
#[test]
fn anonymous_maps_are_buffered_and_placed_again() {
    let r = assert_replays_exactly(program("fp_anon_maps"), &["300"]);
    assert_stdout_has("rec", &r.rec, &["fp_anon_maps: 300 rounds"]);
    let events = dump(&r.ctx, &r.trace);
    let prog = events
        .iter()
        .rev()
        .find(|e| e.line.contains("] exec "))
        .map(|e| e.tid)
        .expect("an exec in the trace");
    // 300 rounds of three maps (the MAP_FIXED one in six rounds of seven) and two unmaps.
    let maps = buffered_named(&events, "mmap", Some(prog));
    assert!(maps >= 800, "{maps} buffered mmap calls");
    assert!(buffered_named(&events, "munmap", Some(prog)) >= 600);
    let traced_anon = events
        .iter()
        .filter(|e| e.tid == prog && e.line.contains("syscall mmap(") && e.index > 0)
        .filter(|e| !e.line.contains(" maps /"))
        .count();
    // (The C library's start-up may map anonymous memory before its first patched site.)
    assert!(
        traced_anon <= 3,
        "{traced_anon} traced anonymous mmaps: {events:#?}"
    );
}

/// The same program run three times by a shell: the sites the shell and the first run patched
/// in the C library and the dynamic loader are patched ahead in the next processes (`Patches`
/// events, at their first patched site), so the later runs take fewer patching stops than the
/// first; all replay exactly.
#[test]
fn sites_are_patched_ahead_in_the_next_processes() {
    let prog = program("fp_fork_exec");
    let cmd = format!(
        "{p} /bin/true; {p} /bin/true; {p} /bin/true",
        p = prog.display()
    );
    let r = assert_replays_exactly("/bin/sh", &["-c", &cmd]);
    let events = dump(&r.ctx, &r.trace);
    // The processes that ran the program, in order, with their patching stops.
    let mut runs: Vec<(i32, usize, usize)> = Vec::new();
    for e in &events {
        if e.line.contains("] exec ") && e.line.contains("fp_fork_exec") {
            runs.push((e.tid, 0, 0));
        } else if let Some(run) = runs.iter_mut().find(|(t, ..)| *t == e.tid) {
            if e.line.contains("] patched the ") {
                run.1 += 1;
                if e.line.contains("more ahead of their first call") {
                    run.2 += 1;
                }
            }
        }
    }
    assert_eq!(runs.len(), 3, "three runs of the program: {runs:?}");
    let first_stops = runs[0].1;
    for (i, &(tid, stops, ahead)) in runs.iter().enumerate() {
        assert!(ahead >= 1, "task {tid} patched nothing ahead: {runs:?}");
        assert!(
            i == 0 || stops < first_stops,
            "task {tid} stopped {stops} times to patch, the first run {first_stops}: {runs:?}"
        );
    }
}

/// The sites a recording patched are kept in the trace root's pool (`sites.json`): the next
/// recording of the program patches them ahead from its first process (a `Patches` event at
/// its first patching stop) and stops fewer times to patch; both replay exactly.
#[test]
fn sites_patched_in_one_recording_are_patched_ahead_in_the_next() {
    let ctx = Ctx::new();
    let prog = program("fp_clocks");
    let mut stops = Vec::new();
    for _ in 0..2 {
        let (trace, rec) = ctx.record(&prog, &["200"]);
        assert!(rec.status.success(), "{}", describe("rec", &rec));
        assert_replay_matches(&rec, &ctx.replay(&trace));
        let events = dump(&ctx, &trace);
        let patching = events
            .iter()
            .filter(|e| e.line.contains("] patched the "))
            .count();
        let ahead = events
            .iter()
            .filter(|e| e.line.contains("more ahead of their first call"))
            .count();
        stops.push((patching, ahead));
    }
    let (first, second) = (stops[0], stops[1]);
    assert_eq!(
        first.1, 0,
        "nothing to patch ahead in the first recording: {stops:?}"
    );
    assert!(
        second.1 >= 1,
        "nothing patched ahead in the second: {stops:?}"
    );
    assert!(
        second.0 < first.0,
        "as many patching stops the second time: {stops:?}"
    );
}

/// A private `mmap` of a file whose version the trace already keeps (a system library an
/// earlier process mapped) is buffered: the library checks the descriptor's file (`fstat`)
/// against the table the recorder wrote at the exec, and the trace names the file in a
/// `BufferedMaps` event; the replay's library maps the trace's copy at the recorded address.
/// The last process maps the C library without a stop.
#[test]
fn files_the_trace_keeps_are_mapped_without_a_stop() {
    let r = assert_replays_exactly("/bin/sh", &["-c", "/bin/true; /bin/true; ls / >/dev/null"]);
    let events = dump(&r.ctx, &r.trace);
    let last = events
        .iter()
        .rev()
        .find(|e| e.line.contains("] exec "))
        .map(|e| e.tid)
        .expect("an exec event");
    let of_last = |what: &str| {
        events
            .iter()
            .filter(|e| e.tid == last && e.line.contains(what) && e.line.contains("libc.so"))
            .count()
    };
    assert_eq!(
        of_last("syscall mmap("),
        0,
        "traced mmaps of libc in the last process"
    );
    assert!(
        of_last("buffered mmaps of") >= 1,
        "no buffered mmap of libc in the last process"
    );
}

/// Files a program's processes mapped in one recording are stored ahead at the exec of the
/// same program in the next (the site cache keeps them per executable), so that even its first
/// process maps them without a stop. A file outside the system directories is in the
/// library's table only once it was last modified more than a second before the exec: a
/// file just written (here, by the test) is mapped on the traced path by every process, as a
/// later write could leave its size and mtime as they were. All replay exactly.
#[test]
fn files_mapped_in_one_recording_are_mapped_without_a_stop_in_the_next() {
    let ctx = Ctx::new();
    let prog = program("mmap_file");
    let file = ctx.fresh_path("mapped.txt");
    std::fs::write(&file, "the mapped file's bytes\n").unwrap();
    let set_mtime = |t: std::time::SystemTime| {
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(t)
            .unwrap()
    };
    // Just written, as far as the recorder can tell however slow the machine: an mtime a
    // minute ahead.
    set_mtime(std::time::SystemTime::now() + std::time::Duration::from_secs(60));
    let cmd = format!("{p} {f}; {p} {f}", p = prog.display(), f = file.display());
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let mut counts = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // Settled: last modified an hour ago.
            set_mtime(std::time::SystemTime::now() - std::time::Duration::from_secs(3600));
        }
        let (trace, rec) = ctx.record("/bin/sh", &["-c", &cmd]);
        assert!(rec.status.success(), "{}", describe("rec", &rec));
        assert_replay_matches(&rec, &ctx.replay(&trace));
        let events = dump(&ctx, &trace);
        let with = |what: &str| {
            events
                .iter()
                .filter(|e| e.line.contains(what) && e.line.contains(&name))
                .count()
        };
        counts.push((with("] syscall mmap("), with("buffered mmaps of")));
    }
    assert_eq!(counts[0], (2, 0), "just written: traced in both processes");
    assert_eq!(
        counts[1],
        (0, 2),
        "settled and stored ahead: buffered in both"
    );
}
