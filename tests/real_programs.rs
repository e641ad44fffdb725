//! Real, installed programs recorded and replayed. A test whose program is not installed prints
//! a note and passes. Only single-process uses: nothing here forks or execs another program.

mod common;

use common::*;

#[test]
fn python_random_time_urandom_uuid() {
    let Some(exe) = python3_interpreter() else {
        return;
    };
    let script = "import random,time,os,uuid; print(random.random(), time.time(), os.urandom(8).hex(), uuid.uuid4())";
    let r = nondeterministic_roundtrip(&exe, &["-c", script], &[]);
    assert_eq!(
        stdout_str(&r.rec).split_whitespace().count(),
        4,
        "{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn date_nanoseconds() {
    let Some(date) = installed("date") else {
        return;
    };
    nondeterministic_roundtrip(&date, &["+%N"], &[]);
}

#[test]
fn sort_random() {
    let Some(sort) = installed("sort") else {
        return;
    };
    let ctx = Ctx::new();
    let input = ctx.dir().join("lines.txt");
    let text: String = (0..200).map(|i| format!("line {i:03}\n")).collect();
    std::fs::write(&input, &text).unwrap();
    let input_s = input.to_str().unwrap();
    // --parallel=1: GNU sort would use threads on big inputs; keep it single-threaded.
    let args = ["-R", "--parallel=1", input_s];
    assert_native_nondeterministic(&sort, &args);
    let (trace, rec) = ctx.record(&sort, &args);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let mut lines: Vec<&str> = std::str::from_utf8(&rec.stdout).unwrap().lines().collect();
    lines.sort();
    assert_eq!(
        lines.len(),
        200,
        "sort -R lost lines\n{}",
        describe("rec", &rec)
    );
    // Replay must not depend on the input file still being there.
    std::fs::remove_file(&input).unwrap();
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}

#[test]
fn ls_proc_self() {
    let Some(ls) = installed("ls") else { return };
    let r = assert_replays_exactly(&ls, &["-la", "/proc/self/"]);
    assert!(
        stdout_str(&r.rec).contains("maps"),
        "{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn perl_rand() {
    let Some(perl) = installed("perl") else {
        return;
    };
    let args = ["-e", "print rand(), \"\\n\""];
    nondeterministic_roundtrip(&perl, &args, &[]);
}

#[test]
fn sh_builtins_only() {
    // Only builtins: an external command would make the shell fork, which deja does not
    // support yet.
    let Some(sh) = installed("sh") else { return };
    let args = ["-c", "echo $$; echo hi"];
    let r = nondeterministic_roundtrip(&sh, &args, &[]);
    assert!(
        stdout_str(&r.rec).ends_with("\nhi\n"),
        "{}",
        describe("rec", &r.rec)
    );
}

/// Three CPU-bound Python threads: the recorder preempts them in the interpreter's loop, where
/// the point's instruction passes at every bytecode with the same registers, and the replay must
/// still find each point (the watched words span several bytecodes) and print the same
/// interleaving.
#[test]
fn python_threads_preempted() {
    let Some(exe) = python3_interpreter() else {
        return;
    };
    let script = "import sys, threading\n\
                  order = []\n\
                  def work(k):\n\
                  \x20   s = 0\n\
                  \x20   for i in range(1500000):\n\
                  \x20       s += i * i\n\
                  \x20       if i % 100000 == 0: order.append(k)\n\
                  \x20   sys.stdout.write(f'thread {k} {s}\\n')\n\
                  ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]\n\
                  for t in ts: t.start()\n\
                  for t in ts: t.join()\n\
                  print('order', ''.join(map(str, order)))\n";
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&exe, &["-c", script]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    assert_stdout_has(
        "rec",
        &rec,
        &["thread 0 ", "thread 1 ", "thread 2 ", "order "],
    );
    ctx.assert_preempted_and_replays(&trace, &rec);
}
