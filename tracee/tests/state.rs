//! The state of real stopped programs: the memory digest, single-stepping for watched words,
//! and capturing and comparing points.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use tracee::state::{capture, differences, memory_digest, step_for_watch, watch_values};
use tracee::{auxv, maps, spawn, SignalState, SpawnOptions, Stop, Tracee};

/// Builds `tests/programs/<name>.c` with `flags` once per test process.
fn program(name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let cell = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_string())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/programs")
            .join(format!("{name}.c"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tracee-state-programs");
        std::fs::create_dir_all(&dir).expect("creating the program directory");
        let out = dir.join(format!("{name}-{}", std::process::id()));
        let o = Command::new("gcc")
            .args(["-O1", "-g"])
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .expect("running gcc (these tests need it)");
        assert!(
            o.status.success(),
            "gcc failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
    .clone()
}

/// The deterministic program without the C library.
fn loop_program() -> PathBuf {
    program(
        "state_loop",
        &["-nostdlib", "-static", "-fno-stack-protector"],
    )
}

/// A traced process, killed when the test ends; `threads` are its other traced tasks.
struct Child {
    t: Tracee,
    threads: Vec<Tracee>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.t.pid(), nix::sys::signal::Signal::SIGKILL);
        // Each task's end is waited for by its id (a wait for any task could take another
        // test's stops); the leader's end comes after the other threads'.
        for t in self.threads.iter().chain([&self.t]) {
            while let Ok(stop) = t.wait() {
                if stop.is_end() {
                    break;
                }
            }
        }
    }
}

fn options(program: &Path, args: &[&str], seccomp: bool) -> SpawnOptions {
    let mut argv = vec![program.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    SpawnOptions {
        program: program.to_path_buf(),
        argv,
        env: vec!["PATH=/usr/bin:/bin".into()],
        cpu: None,
        trap_tsc: false,
        seccomp,
        allow_syscalls_from: None,
        no_core_dump: true,
        signals: SignalState::default(),
        bind_over: None,
        own_process_group: true,
    }
}

/// Runs `state_loop` to its marker syscall (stopped at the seccomp entry). Returns the child,
/// the address of its 16 `AT_RANDOM` bytes, and the addresses it passed: `counter`, `big`,
/// `flags_image`.
fn loop_at_marker() -> (Child, u64, [u64; 3]) {
    let prog = loop_program();
    let mut t = spawn(&options(&prog, &[], true)).expect("spawning state_loop");
    // Stopped at the execve's seccomp entry: run the exec.
    t.cont(0).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Exec);
    t.reopen_mem().unwrap();
    let rsp = t.regs().unwrap().rsp;
    let stack = maps::read(t.pid())
        .unwrap()
        .into_iter()
        .find(|m| m.name == "[stack]")
        .expect("a [stack] mapping");
    let initial = t.read_vec(rsp, (stack.end - rsp) as usize).unwrap();
    let random = auxv::entries(&initial)
        .into_iter()
        .find(|&(_, ty, _)| ty == auxv::AT_RANDOM)
        .expect("an AT_RANDOM entry")
        .2;
    let child = Child { t, threads: vec![] };
    child.t.cont(0).unwrap();
    assert_eq!(child.t.wait().unwrap(), Stop::SeccompEntry);
    let r = child.t.regs().unwrap();
    assert_eq!(
        r.orig_rax,
        libc::SYS_getppid as u64,
        "not the marker syscall"
    );
    (child, random, [r.rdi, r.rsi, r.rdx])
}

/// Whether `addr`'s page is present in RAM, from `/proc/PID/pagemap`.
fn page_present(pid: Pid, addr: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, addr / 4096 * 8).unwrap();
    u64::from_le_bytes(b) & (1 << 63) != 0
}

#[test]
fn digest_is_stable_and_sees_one_byte() {
    let (child, _, [_, big, _]) = loop_at_marker();
    let t = &child.t;
    let d0 = memory_digest(t, &[]).unwrap();
    assert_eq!(memory_digest(t, &[]).unwrap(), d0, "two reads differ");

    // A byte in a page the program filled.
    let a = big + 131 * 3 + 1;
    let old = t.read_vec(a, 1).unwrap();
    t.write_mem(a, &[old[0] ^ 0x40]).unwrap();
    let d1 = memory_digest(t, &[]).unwrap();
    assert_ne!(d1, d0, "a changed byte does not show");
    t.write_mem(a, &old).unwrap();
    assert_eq!(memory_digest(t, &[]).unwrap(), d0);

    // A page the program never touched: not resident, skipped without reading.
    let untouched = big + 0xf0000;
    assert!(!page_present(t.pid(), untouched));
    t.write_mem(untouched + 9, &[0x5a]).unwrap();
    assert!(page_present(t.pid(), untouched));
    assert_ne!(memory_digest(t, &[]).unwrap(), d0);
    // Zero again but now resident: the same digest as when it was absent.
    t.write_mem(untouched + 9, &[0]).unwrap();
    assert!(page_present(t.pid(), untouched));
    assert_eq!(
        memory_digest(t, &[]).unwrap(),
        d0,
        "residency changed the digest"
    );
}

#[test]
fn digest_ignores_excluded_ranges() {
    let (child, _, [counter, big, _]) = loop_at_marker();
    let t = &child.t;
    // The program filled big[131 * i]; counter is zero here.
    let excluded = [(big + 4978, big + 4981), (counter, counter + 8)];
    let d0 = memory_digest(t, &excluded).unwrap();
    let all0 = memory_digest(t, &[]).unwrap();
    assert_ne!(d0, all0, "excluding non-zero bytes changes nothing");
    t.write_mem(big + 4978, &[1, 2, 3]).unwrap();
    t.write_mem(counter, &0x1234_5678u64.to_le_bytes()).unwrap();
    assert_eq!(memory_digest(t, &excluded).unwrap(), d0);
    assert_ne!(memory_digest(t, &[]).unwrap(), all0);
    // A byte just outside an excluded range still counts.
    t.write_mem(big + 4981, &[9]).unwrap();
    assert_ne!(memory_digest(t, &excluded).unwrap(), d0);
    // Unsorted, overlapping and empty ranges are fine.
    let messy = [
        (big + 4981, big + 4982),
        (counter + 4, counter + 8),
        (big + 4979, big + 4979),
        (counter, counter + 6),
        (big + 4978, big + 4981),
    ];
    assert_eq!(memory_digest(t, &messy).unwrap(), d0);
}

#[test]
fn digest_is_equal_for_two_runs() {
    let (a, random_a, _) = loop_at_marker();
    let (b, random_b, _) = loop_at_marker();
    assert_eq!(random_a, random_b, "address randomization is on");
    let excluded = [(random_a, random_a + 16)];
    assert_eq!(
        memory_digest(&a.t, &excluded).unwrap(),
        memory_digest(&b.t, &excluded).unwrap()
    );
    // The kernel's 16 random bytes are the only difference between the two runs.
    assert_ne!(
        memory_digest(&a.t, &[]).unwrap(),
        memory_digest(&b.t, &[]).unwrap()
    );
    let bytes = a.t.read_vec(random_a, 16).unwrap();
    b.t.write_mem(random_b, &bytes).unwrap();
    assert_eq!(
        memory_digest(&a.t, &[]).unwrap(),
        memory_digest(&b.t, &[]).unwrap()
    );
}

/// Lets `state_loop` run past its marker into its loop and stops it there with SIGSTOP.
fn stop_in_loop(t: &Tracee) {
    t.cont(0).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    t.tgkill(t.pid(), libc::SIGSTOP).unwrap();
    assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGSTOP));
}

/// Single-steps `t` to the loop's `call bump` (in `_start`, whose stack pointer is fixed).
fn step_to_call(t: &Tracee) {
    for _ in 0..100 {
        let rip = t.regs().unwrap().rip;
        if t.read_vec(rip, 1).unwrap() == [0xe8] {
            return;
        }
        t.step(0).unwrap();
        assert_eq!(t.wait().unwrap(), Stop::Signal(libc::SIGTRAP));
    }
    panic!("no call instruction reached");
}

#[test]
fn stepping_finds_the_loops_writes() {
    let (child, _, [counter, _, flags_image]) = loop_at_marker();
    let t = &child.t;
    stop_in_loop(t);
    step_to_call(t);
    let start = t.regs().unwrap();
    let before = t.read_u64(counter).unwrap();
    assert!(before > 0, "the loop did not run");
    let stepped = step_for_watch(t, 100).unwrap();
    assert_eq!(stepped.interrupted, None);
    let after = t.regs().unwrap();
    assert_eq!(after.rip, start.rip, "did not come back to the start");
    // One iteration: bump() ran once.
    assert_eq!(t.read_u64(counter).unwrap(), before + 1);
    let w = &stepped.written;
    assert!(w.contains(&(counter, 8)), "counter not written: {w:x?}");
    assert!(
        w.contains(&(flags_image, 8)),
        "flags_image not written: {w:x?}"
    );
    // The call's return address and pushf's image, just below the loop's stack pointer.
    assert!(
        w.contains(&(start.rsp - 8, 8)),
        "call not seen (rsp {:#x}): {w:x?}",
        start.rsp
    );
    assert!(w.contains(&(start.rsp - 16, 8)), "pushf not seen: {w:x?}");
    // Stepping did not leak its trap flag into memory.
    let image = t.read_u64(flags_image).unwrap();
    assert_eq!(image & (1 << 8), 0, "pushf pushed TF: {image:#x}");

    let words = watch_values(t, w, 3);
    assert_eq!(words.len(), 3);
    // Most recent first: the counter was the last write.
    assert_eq!(words[0].addr, counter);
    assert_eq!(words[0].size, 8);
    assert_eq!(words[0].value, before + 1);
    let all = watch_values(t, w, 100);
    let mut seen: Vec<(u64, u8)> = all.iter().map(|x| (x.addr, x.size)).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), all.len(), "duplicates in {all:x?}");
    assert!(all.len() <= w.len());

    // At most `max` steps.
    let short = step_for_watch(t, 2).unwrap();
    assert!(short.written.len() <= 2);
    assert_ne!(t.regs().unwrap().rip, start.rip);
}

#[test]
fn stepping_stops_before_a_syscall() {
    let (child, _, _) = loop_at_marker();
    let t = &child.t;
    // Back at the marker's `syscall` instruction, as if it had not run yet.
    let mut r = t.regs().unwrap();
    r.rip -= 2;
    r.rax = r.orig_rax;
    t.set_regs(&r).unwrap();
    let stepped = step_for_watch(t, 10).unwrap();
    assert!(stepped.written.is_empty());
    assert_eq!(stepped.interrupted, None);
    assert_eq!(t.regs().unwrap().rip, r.rip, "stepped the syscall");
}

#[test]
fn stepping_reports_another_stop() {
    let (child, _, _) = loop_at_marker();
    let t = &child.t;
    stop_in_loop(t);
    // A signal waiting for the task: the first step reports it instead of a step's SIGTRAP.
    t.tgkill(t.pid(), libc::SIGUSR1).unwrap();
    let stepped = step_for_watch(t, 50).unwrap();
    assert_eq!(stepped.interrupted, Some(Stop::Signal(libc::SIGUSR1)));
    // The task is in that stop: its siginfo is readable.
    assert_eq!(
        tracee::tracee::signo_code(&t.siginfo().unwrap()).0,
        libc::SIGUSR1
    );
}

#[test]
fn capture_then_differences() {
    let (child, _, [counter, big, _]) = loop_at_marker();
    let t = &child.t;
    stop_in_loop(t);
    let stepped = step_for_watch(t, 64).unwrap();
    let watch = watch_values(t, &stepped.written, 4);
    let excluded = vec![(big + 100, big + 200)];
    let p = capture(t, excluded.clone(), watch, 3).unwrap();
    assert_eq!(p.excluded, excluded);
    assert_eq!(p.ticks, 3);
    assert!(p.watch.iter().any(|w| w.addr == counter));
    assert_eq!(p.fpregs, t.fp_regs().unwrap().to_bytes());
    assert_eq!(p.regs[15], 0, "orig_rax kept");
    assert!(differences(t, &p, &[]).unwrap().is_empty());

    // Excluded memory does not count, the rest does.
    t.write_mem(big + 150, &[0xee]).unwrap();
    assert!(differences(t, &p, &[]).unwrap().is_empty());
    let old = t.read_vec(big + 300, 1).unwrap();
    t.write_mem(big + 300, &[!old[0]]).unwrap();
    assert_eq!(differences(t, &p, &[]).unwrap(), vec!["memory"]);
    assert!(differences(t, &p, &[(big + 300, big + 301)])
        .unwrap()
        .is_empty());
    t.write_mem(big + 300, &old).unwrap();

    // Registers by name; flags outside the compared ones do not count.
    let r = t.regs().unwrap();
    let mut changed = r;
    changed.rbx ^= 1;
    changed.r12 ^= 2;
    t.set_regs(&changed).unwrap();
    assert_eq!(differences(t, &p, &[]).unwrap(), vec!["r12", "rbx"]);
    changed = r;
    changed.eflags ^= 1 << 0; // CF
    t.set_regs(&changed).unwrap();
    assert_eq!(differences(t, &p, &[]).unwrap(), vec!["eflags"]);
    changed = r;
    changed.eflags ^= 1 << 18; // AC: not compared
    t.set_regs(&changed).unwrap();
    assert!(differences(t, &p, &[]).unwrap().is_empty());
    t.set_regs(&r).unwrap();

    let fp = t.fp_regs().unwrap();
    let mut other = fp;
    other.xmm[15][3] ^= 0x10;
    t.set_fp_regs(&other).unwrap();
    assert_eq!(differences(t, &p, &[]).unwrap(), vec!["FP state"]);
    t.set_fp_regs(&fp).unwrap();
    assert!(differences(t, &p, &[]).unwrap().is_empty());
}

/// Runs `state_heap` with `mib` MiB of heap until it stops itself, then stops its two threads.
fn heap_program(mib: usize) -> Child {
    let prog = program("state_heap", &["-pthread"]);
    // Without seccomp, spawn returns at the exec stop.
    let mut t = spawn(&options(&prog, &[&mib.to_string()], false)).expect("spawning state_heap");
    t.reopen_mem().unwrap();
    let mut child = Child { t, threads: vec![] };
    child.t.cont(0).unwrap();
    loop {
        match child.t.wait().unwrap() {
            Stop::Event(libc::PTRACE_EVENT_CLONE) => {
                let tid = Pid::from_raw(child.t.event_msg().unwrap() as i32);
                let th = Tracee::attach_traced(tid).unwrap();
                assert_eq!(th.wait().unwrap(), Stop::Signal(libc::SIGSTOP));
                th.cont(0).unwrap();
                child.threads.push(th);
                child.t.cont(0).unwrap();
            }
            Stop::Signal(libc::SIGSTOP) => break,
            Stop::Signal(sig) => child.t.cont(sig).unwrap(),
            other => panic!("unexpected stop of state_heap: {other:?}"),
        }
    }
    // Stop the threads too, so memory holds still.
    for th in &child.threads {
        th.tgkill(child.t.pid(), libc::SIGSTOP).unwrap();
        assert_eq!(th.wait().unwrap(), Stop::Signal(libc::SIGSTOP));
    }
    child
}

/// Sum of the sizes of the writable mappings and of their resident pages, in KiB.
fn writable_kib(pid: Pid) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut size, mut rss, mut writable) = (0, 0, false);
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let first = it.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            writable = it.next().is_some_and(|p| p.contains('w'));
            continue;
        }
        let kib = || {
            it.clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Size:" if writable => size += kib(),
            "Rss:" if writable => rss += kib(),
            _ => {}
        }
    }
    (size, rss)
}

/// Times `memory_digest` (best of five) and checks it is deterministic.
fn time_digest(t: &Tracee) -> ([u8; 16], Duration) {
    let first = memory_digest(t, &[]).unwrap();
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let d = memory_digest(t, &[]).unwrap();
        best = best.min(start.elapsed());
        assert_eq!(d, first);
    }
    (first, best)
}

#[test]
fn digest_cost() {
    let (small, _, _) = loop_at_marker();
    let (_, small_time) = time_digest(&small.t);
    let (size, rss) = writable_kib(small.t.pid());
    eprintln!(
        "memory_digest: state_loop (no libc; {size} KiB writable, {rss} KiB resident): {:.3} ms",
        small_time.as_secs_f64() * 1e3
    );
    for mib in [0, 16] {
        let c = heap_program(mib);
        assert_eq!(c.threads.len(), 2);
        let (size, rss) = writable_kib(c.t.pid());
        let (_, time) = time_digest(&c.t);
        eprintln!(
            "memory_digest: state_heap {mib} MiB pattern + {mib} MiB zeros, 2 threads \
             ({size} KiB writable, {rss} KiB resident): {:.3} ms, {:.0} MB/s of resident memory",
            time.as_secs_f64() * 1e3,
            rss as f64 * 1024.0 / time.as_secs_f64() / 1e6
        );
        // Generous: an unoptimized build on a slow machine still does better than 20 MB/s.
        assert!(
            time < Duration::from_millis(100) + Duration::from_micros(rss * 50),
            "memory_digest took {time:?} for {rss} KiB"
        );
    }
}

/// Runs `trapno` under ptrace, passing every signal on; at the SIGUSR1 stop, `settle_trap` first
/// when `settle` is set. Returns the program's exit status (the trap number its handler saw).
fn trapno_exit(settle: bool) -> i32 {
    let prog = program("trapno", &[]);
    // The tracer's exit kills it (PTRACE_O_EXITKILL) should an assertion fail midway.
    let t = spawn(&options(&prog, &[], false)).expect("spawning trapno");
    t.cont(0).unwrap();
    loop {
        match t.wait().unwrap() {
            Stop::Exited(code) => return code,
            Stop::Signal(libc::SIGUSR1) if settle => {
                let info = t.siginfo().unwrap();
                assert_eq!(tracee::state::settle_trap(&t).unwrap(), None);
                t.set_siginfo(&info).unwrap();
                t.cont(libc::SIGUSR1).unwrap();
            }
            Stop::Signal(sig) => t.cont(sig).unwrap(),
            stop => panic!("unexpected stop {stop:?}"),
        }
    }
}

#[test]
fn settle_trap_makes_signal_frames_say_debug_exception() {
    assert_eq!(trapno_exit(false), 3, "the int3's trap number");
    assert_eq!(trapno_exit(true), 1, "a debug exception's trap number");
}
