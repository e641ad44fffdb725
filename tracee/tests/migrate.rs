//! Moving a tracee between tracer threads (`tracee::migrate`): a real program under deja's
//! seccomp filter makes traced syscalls while two threads hand it back and forth; none of its
//! syscalls fails (one made untraced would get `ENOSYS`), a signal sent while it is parked is
//! delivered once after the move, and every syscall's entry stop reaches a tracer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::OnceLock;
use std::time::Instant;

use tracee::migrate::{adopt, park, Parked, ParkedAt};
use tracee::spawn::PTRACE_OPTIONS;
use tracee::{spawn, SignalState, SpawnOptions, Stop, Tracee};

/// `tests/programs/migrate.c`, static and at fixed addresses, and the address of the `syscall`
/// instruction of its `allowed_syscall`.
fn program() -> (PathBuf, u64) {
    static BUILT: OnceLock<(PathBuf, u64)> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> (PathBuf, u64) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/migrate.c");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("migrate-{}", std::process::id()));
    let o = Command::new("gcc")
        .args(["-O1", "-static", "-no-pie", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("running gcc (these tests need it)");
    assert!(
        o.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let nm = Command::new("nm").arg(&out).output().expect("running nm");
    let sym = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .find(|l| l.ends_with(" allowed_syscall"))
        .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
        .expect("allowed_syscall in nm's output");
    // `mov rax, rdi` (3 bytes), then `syscall`.
    (out, sym + 3)
}

/// A message between the two tracer threads.
enum Msg {
    /// Take this task over.
    Take(Box<Parked>),
    /// The task ended.
    Done,
}

/// Runs the task as a tracer would, from `t` (stopped, adopted or spawned), until it exits or
/// until it has made `move_every` more traced syscalls, then parks it and hands it over.
/// Returns the exit status once the task ends.
fn serve(
    mut t: Tracee,
    syscall_insn: u64,
    move_every: u32,
    stops: &mut u32,
    to_other: &Sender<Msg>,
    on_park: &mut dyn FnMut(i32),
) -> Option<i32> {
    let mut here = 0;
    let mut sig = 0;
    loop {
        t.cont(sig).expect("resuming");
        sig = 0;
        match t.wait().expect("waiting") {
            Stop::SeccompEntry => {
                let nr = t.regs().expect("regs").orig_rax;
                if nr == libc::SYS_getppid as u64 {
                    *stops += 1;
                    here += 1;
                    if here >= move_every {
                        on_park(t.pid().as_raw());
                        let p = park(&t, ParkedAt::SyscallEntry, syscall_insn).expect("parking");
                        to_other.send(Msg::Take(Box::new(p))).expect("sending");
                        return None;
                    }
                }
            }
            Stop::Exec => t.reopen_mem().expect("reopening memory"),
            Stop::Signal(s) => sig = s,
            Stop::Exited(code) => {
                to_other.send(Msg::Done).expect("sending");
                return Some(code);
            }
            other => panic!("unexpected stop {other:?}"),
        }
    }
}

/// One tracer thread's loop: takes tasks from `from` and serves them until the task ends.
fn tracer(
    from: Receiver<Msg>,
    to_other: Sender<Msg>,
    syscall_insn: u64,
    move_every: u32,
) -> (u32, u32, Option<i32>) {
    let (mut stops, mut moves) = (0, 0);
    for msg in from {
        match msg {
            Msg::Take(p) => {
                let t = Tracee::attach_traced(p.pid()).expect("a handle");
                adopt(&t, *p, PTRACE_OPTIONS).expect("adopting");
                moves += 1;
                if let Some(code) = serve(
                    t,
                    syscall_insn,
                    move_every,
                    &mut stops,
                    &to_other,
                    &mut |_| {},
                ) {
                    return (stops, moves, Some(code));
                }
            }
            Msg::Done => return (stops, moves, None),
        }
    }
    (stops, moves, None)
}

/// Records a run of `migrate.c` making `n` getppid calls while moved every `every` calls.
fn moved_around(n: u32, every: u32) -> (u32, u32, i32) {
    let (prog, insn) = program();
    let (to_b, from_a) = channel();
    let (to_a, from_b) = channel();
    let b = std::thread::spawn(move || tracer(from_a, to_a, insn, every));
    // Thread A (this one) spawns the task, so traces it first.
    let opts = SpawnOptions {
        program: prog.clone(),
        argv: vec![prog.display().to_string(), n.to_string()],
        env: vec![],
        cpu: None,
        trap_tsc: false,
        seccomp: true,
        allow_syscalls_from: Some(insn + 2),
        no_core_dump: true,
        signals: SignalState::default(),
        bind_over: None,
        own_process_group: true,
    };
    let t = spawn(&opts).expect("spawning migrate");
    let mut stops = 0;
    let mut first = true;
    // The first time it is parked, a SIGUSR1 is sent to it: pending, blocked, delivered once
    // the move is done.
    let mut on_park = |pid: i32| {
        if std::mem::take(&mut first) {
            // SAFETY: kill(2) of our own tracee.
            unsafe { libc::kill(pid, libc::SIGUSR1) };
        }
    };
    let mut code = serve(t, insn, every, &mut stops, &to_b, &mut on_park);
    let mut moves = 0;
    if code.is_none() {
        let (s, m, c) = tracer(from_b, to_b, insn, every);
        stops += s;
        moves += m;
        code = c;
    }
    let (s, m, c) = b.join().expect("thread B");
    stops += s;
    moves += m;
    (stops, moves, code.or(c).expect("an exit status"))
}

#[test]
fn a_task_moves_between_tracer_threads_without_an_untraced_syscall() {
    let (stops, moves, code) = moved_around(2000, 100);
    assert_eq!(
        code, 0,
        "the program saw a failed syscall or no SIGUSR1 (see its stderr)"
    );
    // Every getppid was seen at its entry by one tracer or the other (the one interrupted by
    // each move twice).
    assert!(stops >= 2000, "{stops} getppid entry stops");
    assert!(moves >= 19, "{moves} moves");
}

#[test]
fn the_cost_of_a_move() {
    // Not a timed assertion (the machines are shared): the cost is printed for the README.
    program();
    let start = Instant::now();
    let (_, few, code) = moved_around(4000, 4000);
    let base = start.elapsed();
    assert_eq!(code, 0);
    let start = Instant::now();
    let (_, many, code) = moved_around(4000, 4);
    let moved = start.elapsed();
    assert_eq!(code, 0);
    let per = (moved.as_secs_f64() - base.as_secs_f64()) / (many - few).max(1) as f64;
    eprintln!(
        "{many} moves: {moved:?} against {base:?} with {few}: {:.1} us per move",
        per * 1e6
    );
}
