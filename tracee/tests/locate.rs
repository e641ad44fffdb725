//! The locator against real programs: a point recorded in one run of a deterministic program
//! is found again, exactly, in a second run, at native speed through the trampoline; tampered
//! points end in an error or in the program's next stop, never in a hang.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use trace_format::{Point, WatchedWord};
use tracee::debugregs::{DebugRegs, WatchKind};
use tracee::locate::{Locator, Method, Verdict};
use tracee::regs::{self, to_words};
use tracee::state::capture;
use tracee::{spawn, SignalState, SpawnOptions, Stop, Tracee};

/// The test program, built once, and its symbols.
struct Prog {
    path: PathBuf,
    syms: HashMap<String, u64>,
}

impl Prog {
    fn sym(&self, name: &str) -> u64 {
        *self
            .syms
            .get(name)
            .unwrap_or_else(|| panic!("no symbol {name}"))
    }
}

fn prog() -> &'static Prog {
    static PROG: OnceLock<Prog> = OnceLock::new();
    PROG.get_or_init(|| {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/locate.c");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("locate-prog");
        let out = Command::new("gcc")
            .args([
                "-O1",
                "-static",
                "-nostdlib",
                "-fno-stack-protector",
                "-fno-pie",
                "-no-pie",
                "-fcf-protection=none",
                "-o",
            ])
            .arg(&path)
            .arg(src)
            .output()
            .expect("running gcc");
        assert!(
            out.status.success(),
            "gcc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nm = Command::new("nm").arg(&path).output().expect("running nm");
        assert!(nm.status.success());
        let syms = String::from_utf8_lossy(&nm.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let _kind = f.next()?;
                Some((f.next()?.to_string(), addr))
            })
            .collect();
        Prog { path, syms }
    })
}

/// A tracee killed and reaped however the test ends.
struct Child(Tracee);

impl Drop for Child {
    fn drop(&mut self) {
        self.0.kill_and_reap();
    }
}

/// Starts the program in `mode` and runs it to the exit of its `getppid`, the last event
/// before its loop.
fn start(mode: &str) -> Child {
    let p = prog();
    let t = spawn(&SpawnOptions {
        program: p.path.clone(),
        argv: vec![p.path.display().to_string(), mode.to_string()],
        env: vec![],
        cpu: Some(0),
        trap_tsc: false,
        seccomp: true,
        allow_syscalls_from: None,
        no_core_dump: true,
        signals: SignalState::default(),
        bind_over: None,
        own_process_group: false,
    })
    .expect("spawning the test program");
    let mut c = Child(t);
    loop {
        c.0.cont(0).unwrap();
        match c.0.wait().unwrap() {
            Stop::Exec => c.0.reopen_mem().unwrap(),
            Stop::SeccompEntry => {
                if c.0.regs().unwrap().orig_rax == libc::SYS_getppid as u64 {
                    c.0.cont_syscall(0).unwrap();
                    assert_eq!(c.0.wait().unwrap(), Stop::SyscallStop);
                    return c;
                }
            }
            other => panic!("unexpected stop {other:?} before getppid"),
        }
    }
}

/// The point `t` is stopped at, watching the counter.
fn point_here(t: &Tracee) -> Point {
    let addr = prog().sym("counter");
    let value = t.read_u64(addr).unwrap();
    capture(
        t,
        vec![],
        vec![WatchedWord {
            addr,
            size: 8,
            value,
        }],
        0,
    )
    .unwrap()
}

/// Run 1, as the recorder preempts: runs `mode` for `ms` after its syscall, stops it with
/// SIGSTOP wherever it is, and captures the point there.
fn record_timed(mode: &str, ms: u64) -> Point {
    let c = start(mode);
    let t = &c.0;
    t.cont(0).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    t.tgkill(t.pid(), libc::SIGSTOP).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGSTOP));
    point_here(t)
}

/// Run 1 stopped deterministically: at the `n`th execution of the instruction at `rip`.
fn record_at_visit(mode: &str, rip: u64, n: usize) -> Point {
    let c = start(mode);
    let t = &c.0;
    let mut d = DebugRegs::new();
    d.insert(rip, 1, WatchKind::Execute).unwrap();
    t.set_debug_regs(&d).unwrap();
    for _ in 0..n {
        t.cont(0).unwrap();
        assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGTRAP));
        assert_eq!(t.regs().unwrap().rip, rip);
    }
    t.set_debug_regs(&DebugRegs::new()).unwrap();
    point_here(t)
}

/// What a replay reports: the verdict, the locator's account, the time taken.
struct Replay {
    child: Child,
    verdict: anyhow::Result<Verdict>,
    method: Method,
    visits: u64,
    near_misses: usize,
    report: String,
    elapsed: Duration,
}

/// Run 2: the program again to the same syscall, then the locator to `point`, counting
/// every visit.
fn replay(mode: &str, point: &Point, avoid: &[(u64, u64)], free_slots: &[usize]) -> Replay {
    replay_with(mode, point, avoid, free_slots, true)
}

/// [`replay`] with a locator that counts every visit or (as the replayer's) only those past
/// its quick filter.
fn replay_with(
    mode: &str,
    point: &Point,
    avoid: &[(u64, u64)],
    free_slots: &[usize],
    counting: bool,
) -> Replay {
    let child = start(mode);
    let t = &child.0;
    let mut loc = if counting {
        Locator::new_counting(t, point, avoid, free_slots, &[]).unwrap()
    } else {
        Locator::new(t, point, avoid, free_slots, &[]).unwrap()
    };
    let method = loc.method();
    let t0 = Instant::now();
    let verdict = loc.run(t, 0);
    let elapsed = t0.elapsed();
    let (visits, near_misses, report) = (loc.visits(), loc.near_misses(), loc.report());
    if verdict.is_ok() {
        loc.finish(t).unwrap();
    } else {
        // The task may be anywhere; finishing restores what it can.
        let _ = loc.finish(t);
    }
    Replay {
        child,
        verdict,
        method,
        visits,
        near_misses,
        report,
        elapsed,
    }
}

/// The replay ended exactly at `point`: same registers, FP state and memory.
fn assert_reached(r: &Replay, point: &Point) {
    match &r.verdict {
        Ok(Verdict::Reached) => {}
        other => panic!("not reached: {other:?}; {}", r.report),
    }
    let now = point_here(&r.child.0);
    let differ = regs::differences(&point.regs, &now.regs);
    // orig_rax is not part of a point.
    assert!(
        differ.iter().all(|d| d.starts_with("orig_rax")),
        "registers differ: {differ:?}"
    );
    assert_eq!(now.fpregs, point.fpregs, "FP state differs");
    assert_eq!(now.digest, point.digest, "memory differs");
    assert_eq!(now.watch, point.watch);
}

#[test]
fn finds_a_preempted_point_whose_progress_is_in_registers() {
    let point = record_timed("r", 30);
    let r = replay("r", &point, &[], &[0, 1, 2, 3]);
    assert_reached(&r, &point);
    assert!(
        matches!(r.method, Method::Trampoline { .. }),
        "{:?}",
        r.method
    );
    let count = point.watch[0].value;
    eprintln!(
        "registers loop: point {:#x} after {count} iterations reached in {:?}: {} trampoline \
         visits, {:.1} ns per visit; {}",
        point.regs[16],
        r.elapsed,
        r.visits,
        r.elapsed.as_nanos() as f64 / r.visits as f64,
        r.report
    );
    assert!(r.visits > 1000, "the filter saw only {} visits", r.visits);
    assert_eq!(r.near_misses, 0);
    assert!(r.elapsed < Duration::from_secs(10));
}

#[test]
fn finds_a_preempted_point_whose_progress_is_only_in_memory() {
    let point = record_timed("m", 30);
    let r = replay("m", &point, &[], &[0, 1, 2, 3]);
    assert_reached(&r, &point);
    assert!(
        matches!(r.method, Method::Trampoline { .. }),
        "{:?}",
        r.method
    );
    eprintln!(
        "memory loop: counter {} reached in {:?}, {} visits; {}",
        point.watch[0].value, r.elapsed, r.visits, r.report
    );
    assert!(r.visits > 1000, "the filter saw only {} visits", r.visits);
    assert!(r.elapsed < Duration::from_secs(10));
}

#[test]
fn the_quick_filter_finds_the_same_points_faster() {
    for mode in ["r", "m"] {
        let point = record_timed(mode, 30);
        let counted = replay(mode, &point, &[], &[0, 1, 2, 3]);
        assert_reached(&counted, &point);
        let r = replay_with(mode, &point, &[], &[0, 1, 2, 3], false);
        assert_reached(&r, &point);
        assert!(
            matches!(r.method, Method::Trampoline { .. }),
            "{:?}",
            r.method
        );
        eprintln!(
            "mode {mode}: {} visits counted in {:?}; quick filter: {:?}, {}",
            counted.visits, counted.elapsed, r.elapsed, r.report
        );
        // The visits the quick filter lets through are those whose quick checks all match.
        assert!(r.visits < counted.visits / 100, "{}", r.report);
        assert!(r.report.contains("past the quick filter"), "{}", r.report);
    }
}

#[test]
fn a_point_never_reached_ends_at_the_programs_next_stop() {
    let mut point = record_timed("b", 20);
    point.watch[0].value += 1;
    let r = replay("b", &point, &[], &[0, 1, 2, 3]);
    match r.verdict {
        Ok(Verdict::Other(Stop::SeccompEntry)) => {}
        other => panic!(
            "expected the exit's seccomp stop, got {other:?}; {}",
            r.report
        ),
    }
    // `finish` unmapped the scratch page from that seccomp stop: the task was set back before
    // its `syscall`, which it makes again.
    let t = &r.child.0;
    t.cont(0).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::SeccompEntry);
    assert_eq!(t.regs().unwrap().orig_rax, libc::SYS_exit_group as u64);
    t.cont(0).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Exited(0));
    assert_eq!(r.near_misses, 0);
    eprintln!("tampered watch: {:?}; {}", r.elapsed, r.report);
}

#[test]
fn a_point_with_other_memory_is_a_near_miss_then_the_programs_next_stop() {
    let mut point = record_timed("b", 20);
    point.digest[0] ^= 1;
    let r = replay("b", &point, &[], &[0, 1, 2, 3]);
    match r.verdict {
        Ok(Verdict::Other(Stop::SeccompEntry)) => {}
        other => panic!(
            "expected the exit's seccomp stop, got {other:?}; {}",
            r.report
        ),
    }
    assert_eq!(r.near_misses, 1, "{}", r.report);
    assert!(r.report.contains("memory"), "{}", r.report);
}

#[test]
fn a_repeating_state_is_a_cycle_not_a_hang() {
    let p = prog();
    let mut point = record_at_visit("s", p.sym("spin_point"), 3);
    point.digest[0] ^= 1;
    let r = replay("s", &point, &[], &[0, 1, 2, 3]);
    let err = match r.verdict {
        Err(e) => format!("{e:#}"),
        Ok(v) => panic!("expected a cycle, got {v:?}; {}", r.report),
    };
    assert!(err.contains("cycle"), "{err}");
    assert_eq!(r.near_misses, 1, "{}", r.report);
}

#[test]
fn guards_catch_branches_into_the_patched_bytes() {
    let p = prog();
    let rip = p.sym("guard_point");
    // `inc rax` (3 bytes), then the branch target the first passes jump to.
    assert_eq!(p.sym("guard_target"), rip + 3);
    let point = record_at_visit("g", rip, 5000);
    let r = replay("g", &point, &[], &[1, 3]);
    assert_eq!(r.method, Method::Trampoline { guards: 1 });
    assert_reached(&r, &point);
    assert!(r.report.contains("4 guard hit(s)"), "{}", r.report);
    assert!(r.visits >= 5000, "{}", r.report);
}

#[test]
fn without_room_for_guards_or_a_patch_every_visit_stops() {
    let p = prog();
    let rip = p.sym("guard_point");
    let visits = 3000;
    let point = record_at_visit("g", rip, visits);

    // The guard needs a slot: none free, so a breakpoint... none either: int3.
    let r = replay("g", &point, &[], &[]);
    assert_eq!(r.method, Method::Int3);
    assert_reached(&r, &point);
    let int3 = r.elapsed.as_nanos() as f64 / r.visits as f64;

    // A debugger breakpoint inside the bytes a patch would cover: a hardware breakpoint.
    let r = replay("g", &point, &[(rip + 4, rip + 5)], &[2]);
    assert_eq!(r.method, Method::HardwareBreakpoint);
    assert_reached(&r, &point);
    assert_eq!(r.visits, visits as u64, "{}", r.report);
    let hw = r.elapsed.as_nanos() as f64 / r.visits as f64;

    let r = replay("g", &point, &[], &[0]);
    assert_eq!(r.method, Method::Trampoline { guards: 1 });
    assert_reached(&r, &point);
    let tramp = r.elapsed.as_nanos() as f64 / r.visits as f64;
    eprintln!(
        "per visit: int3 {:.0} ns, hardware breakpoint {:.0} ns, trampoline {:.0} ns (including \
         its 4 guard hits and the scratch mapping over {} visits)",
        int3, hw, tramp, r.visits
    );
}

#[test]
fn inject_syscall_leaves_the_task_as_it_was() {
    let c = start("r");
    let t = &c.0;
    let before = t.regs().unwrap();
    // From the syscall-exit stop of getppid: the syscall instruction before rip is reused.
    let pid = t.inject_syscall(libc::SYS_getpid, [0; 6]).unwrap();
    assert_eq!(pid, i64::from(t.pid().as_raw()));
    assert_eq!(to_words(&t.regs().unwrap()), to_words(&before));
    // From a signal-delivery-stop in the loop, where `0f 05` is written over the code.
    t.cont(0).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    t.tgkill(t.pid(), libc::SIGSTOP).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGSTOP));
    let before = t.regs().unwrap();
    let code = t.read_vec(before.rip, 2).unwrap();
    let r = t
        .inject_syscall(libc::SYS_getppid, [0; 6])
        .expect("getppid");
    assert_eq!(r, i64::from(std::process::id()));
    assert_eq!(to_words(&t.regs().unwrap()), to_words(&before));
    assert_eq!(t.read_vec(before.rip, 2).unwrap(), code);
    // A failing call returns -errno.
    let r = t
        .inject_syscall(libc::SYS_close, [u64::MAX, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(r, -i64::from(libc::EBADF));
    // The program goes on as if nothing happened.
    let counter = prog().sym("counter");
    let n = t.read_u64(counter).unwrap();
    t.cont(0).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    t.tgkill(t.pid(), libc::SIGSTOP).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGSTOP));
    assert!(t.read_u64(counter).unwrap() > n);
}

#[test]
fn signals_that_stop_an_injected_syscall_are_set_aside() {
    let c = start("r");
    let t = &c.0;
    // At the exit stop of getppid, a signal pending stops the task before an injected call.
    t.tgkill(t.pid(), libc::SIGUSR2).unwrap();
    let before = t.regs().unwrap();
    let err = t.inject_syscall(libc::SYS_getpid, [0; 6]).unwrap_err();
    assert!(
        format!("{err:#}").contains("signal 12 stopped task"),
        "{err:#}"
    );
    assert_eq!(to_words(&t.regs().unwrap()), to_words(&before));
    // Set aside: the signal is taken (with its siginfo) and the call runs.
    t.tgkill(t.pid(), libc::SIGUSR1).unwrap();
    t.set_signals_aside();
    let pid = t.inject_syscall(libc::SYS_getpid, [0; 6]).unwrap();
    let aside = t.signals_set_aside();
    assert_eq!(pid, i64::from(t.pid().as_raw()));
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(aside[0].0, libc::SIGUSR1);
    let (signo, code) = tracee::tracee::signo_code(&aside[0].1);
    assert_eq!((signo, code), (libc::SIGUSR1, libc::SI_TKILL));
    assert_eq!(to_words(&t.regs().unwrap()), to_words(&before));
    // Not set aside any more: the next signal fails the injection again.
    t.tgkill(t.pid(), libc::SIGUSR1).unwrap();
    assert!(t.inject_syscall(libc::SYS_getpid, [0; 6]).is_err());
}

#[test]
fn a_task_already_at_the_point_is_reached_without_running() {
    let point = point_here(&start("r").0);
    let r = replay("r", &point, &[], &[0, 1, 2, 3]);
    assert_reached(&r, &point);
    assert_eq!(r.visits, 0);
}

#[test]
fn the_signal_to_deliver_goes_before_anything_else() {
    let point = record_timed("r", 10);
    let c = start("r");
    let t = &c.0;
    // SIGUSR1 kills the program (no handler): delivered first, the point is never reached;
    // discarded (as resuming an injected syscall would), it would be.
    t.tgkill(t.pid(), libc::SIGUSR1).unwrap();
    t.cont(0).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGUSR1));
    let mut loc = Locator::new(t, &point, &[], &[0, 1, 2, 3], &[]).unwrap();
    assert_eq!(
        loc.run(t, libc::SIGUSR1).unwrap(),
        Verdict::Other(Stop::Killed(libc::SIGUSR1))
    );
    loc.finish(t).unwrap();
}

#[test]
fn a_watchpoint_hit_in_the_moved_code_is_reported_at_the_original_address() {
    let p = prog();
    let rip = p.sym("guard_point");
    let point = record_at_visit("g", rip, 100);
    let c = start("g");
    let t = &c.0;
    // The debugger's write watchpoint on the counter, which the patched `addq` writes.
    let mut d = DebugRegs::new();
    assert_eq!(
        d.insert(p.sym("counter"), 8, WatchKind::Write),
        Some(vec![0])
    );
    t.set_debug_regs(&d).unwrap();
    let mut loc = Locator::new(t, &point, &[], &[1, 2, 3], &[]).unwrap();
    assert_eq!(loc.method(), Method::Trampoline { guards: 1 });
    assert_eq!(
        loc.run(t, 0).unwrap(),
        Verdict::Other(Stop::Signal(libc::SIGTRAP))
    );
    // Trapped after the copy of `addq` in the trampoline: seen after the original.
    assert_eq!(t.regs().unwrap().rip, p.sym("guard_target") + 8);
    assert_eq!(t.read_u64(p.sym("counter")).unwrap(), 1);
    t.set_debug_regs(&DebugRegs::new()).unwrap();
    assert_eq!(loc.run(t, 0).unwrap(), Verdict::Reached);
    loc.finish(t).unwrap();
    let now = point_here(t);
    assert_eq!(now.digest, point.digest);
    assert_eq!(now.watch, point.watch);
}

#[test]
fn a_branch_back_to_the_point_among_the_patched_instructions_is_a_visit() {
    let p = prog();
    // `inc rax` (3 bytes) then `loop tight_point` (2): the loop's branch is moved too.
    let rip = p.sym("tight_point");
    let point = record_at_visit("t", rip, 2000);
    let r = replay("t", &point, &[], &[0]);
    assert_eq!(r.method, Method::Trampoline { guards: 1 });
    assert_reached(&r, &point);
    assert_eq!(r.visits, 2000, "{}", r.report);
}

#[test]
fn a_guard_hit_too_often_gives_way_to_a_punned_jump() {
    let p = prog();
    // `add $1, %rax` (4 bytes), then the target the loop enters by three times in four.
    let rip = p.sym("pun_point");
    assert_eq!(p.sym("pun_target"), rip + 4);
    let point = record_at_visit("p", rip, 3000);
    let r = replay("p", &point, &[], &[0, 1, 2, 3]);
    // Guarded first; after 64 guard hits the patch is a punned jump, which leaves the target
    // in place and needs no guard.
    assert_eq!(r.method, Method::Trampoline { guards: 1 }, "{}", r.report);
    assert_reached(&r, &point);
    assert!(
        r.report.contains("trampoline with 0 guard(s)") && r.report.contains(" 64 guard hit(s)"),
        "{}",
        r.report
    );
    assert_eq!(r.visits, 3000, "{}", r.report);
}
