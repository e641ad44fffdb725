//! Record then replay each test program in `tests/programs/`: the replay (`deja replay -a`)
//! must exit 0 and print exactly what the recording printed. Where the program is
//! nondeterministic natively, two native runs are checked to differ first, so equality under
//! replay means deja really reproduced the recorded values.

mod common;

use common::*;

#[test]
fn time_sources() {
    let r = nondeterministic_roundtrip(
        program("time"),
        &[],
        &[
            "vdso realtime",
            "gettimeofday",
            "raw syscall    0 ",
            "raw time",
            "loop digest",
        ],
    );
    assert!(
        stderr_str(&r.rec).contains("time: stderr line"),
        "{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn rdtsc_and_rdtscp() {
    nondeterministic_roundtrip(program("rdtsc"), &[], &[]);
}

#[test]
fn cpuid_leaves() {
    // Deterministic natively (on one CPU); only replay equality is checked.
    let r = assert_replays_exactly(program("cpuid"), &[]);
    assert!(
        stdout_str(&r.rec).starts_with("leaf0 max="),
        "{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn getrandom_and_urandom() {
    nondeterministic_roundtrip(
        program("random"),
        &[],
        &["getrandom returned 32", "urandom read 64"],
    );
}

#[test]
fn at_random_auxv() {
    nondeterministic_roundtrip(program("auxv"), &[], &[]);
}

#[test]
fn pids() {
    nondeterministic_roundtrip(program("pids"), &[], &[]);
}

#[test]
fn addresses() {
    let prog = program("addrs");
    if aslr_enabled() {
        assert_native_nondeterministic(&prog, &[]);
    } else {
        eprintln!("note: ASLR is disabled on this machine; not checking that native runs differ");
    }
    let r = assert_replays_exactly(&prog, &[]);
    // deja records without ASLR, so two recordings see the same addresses.
    let (_trace2, rec2) = r.ctx.record(&prog, &[]);
    assert!(rec2.status.success(), "{}", describe("second rec", &rec2));
    assert_eq!(
        stdout_str(&r.rec),
        stdout_str(&rec2),
        "two recordings of addrs printed different addresses: is ASLR disabled under deja?"
    );
}

#[test]
fn mmapped_input_file_changed_then_deleted() {
    let ctx = Ctx::new();
    let input = ctx.dir().join("input.txt");
    let nonce: String = random_bytes(12)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let original = format!("original contents {nonce}\nsecond line\n").repeat(50);
    std::fs::write(&input, &original).unwrap();
    let input_s = input.to_str().unwrap();

    let prog = program("mmap_file");
    let (trace, rec) = ctx.record(&prog, &[input_s]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    assert!(
        stdout_str(&rec).contains(&original),
        "recorded output lacks the file contents\n{}",
        describe("rec", &rec)
    );

    // Same contents: plain replay.
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);

    // Overwrite with other contents (different size too): replay must use the recorded copy.
    std::fs::write(&input, "something else entirely\n").unwrap();
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);

    // Delete it: still the original.
    std::fs::remove_file(&input).unwrap();
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}

#[test]
fn pipe_to_self() {
    nondeterministic_roundtrip(program("pipe"), &[], &[]);
}

#[test]
fn poll_and_epoll() {
    nondeterministic_roundtrip(program("poll"), &[], &["poll ready: 1", "epoll ready: 1"]);
}

#[test]
fn socketpair_stream_and_dgram() {
    nondeterministic_roundtrip(program("socketpair"), &[], &[]);
}

#[test]
fn tcp_loopback() {
    let r = nondeterministic_roundtrip(program("tcp"), &[], &["SO_ERROR 0", "client got"]);
    let out = stdout_str(&r.rec);
    assert!(
        out.contains("connect: -1 EINPROGRESS") || out.contains("connect: 0 ok"),
        "{out}"
    );
}

#[test]
fn large_read_of_changed_file() {
    let ctx = Ctx::new();
    let input = ctx.dir().join("big.bin");
    std::fs::write(&input, random_bytes(3 << 20)).unwrap();
    let input_s = input.to_str().unwrap();
    let prog = program("bigread");
    let (trace, rec) = ctx.record(&prog, &[input_s]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    assert!(
        stdout_str(&rec).contains("total 3145728 bytes"),
        "{}",
        describe("rec", &rec)
    );

    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);

    // The data must come from the trace, not the file.
    std::fs::write(&input, vec![0u8; 1 << 20]).unwrap();
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
    std::fs::remove_file(&input).unwrap();
    let replay = ctx.replay(&trace);
    assert_replay_matches(&rec, &replay);
}

#[test]
fn readv_writev() {
    let r = nondeterministic_roundtrip(program("iovec"), &[], &["second third\n"]);
    assert!(
        stderr_str(&r.rec).contains("stderr via writev"),
        "{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn sigsegv_handler() {
    nondeterministic_roundtrip(
        program("segv"),
        &[],
        &[
            "caught SIGSEGV at 0x1000 code SEGV_MAPERR",
            "offset 100 code SEGV_ACCERR",
            "continued after 2 faults",
        ],
    );
}

#[test]
fn alarm_interrupts_read() {
    nondeterministic_roundtrip(
        program("alarm"),
        &[],
        &["read returned -1 errno EINTR", "handler saw signal 14"],
    );
}

#[test]
fn signals_during_syscalls_with_temporary_masks_and_restarts() {
    let r = nondeterministic_roundtrip(
        program("sigmask"),
        &[],
        &[
            "sigsuspend: ret -1 errno Interrupted system call hits",
            "pselect: ret -1 errno Interrupted system call hits",
            "ppoll: ret -1 errno Interrupted system call hits",
            "epoll_pwait: ret -1 errno Interrupted system call hits",
            "restarted read: ret 1 errno - hits 5",
            "read byte R",
        ],
    );
    let out = stdout_str(&r.rec);
    // Handlers ran under the temporary mask, and the original mask came back after each call.
    assert_eq!(
        out.matches("usr1-blocked-in-handler 1 alrm-blocked-after 1")
            .count(),
        4,
        "{out}"
    );
}

#[test]
fn raise_sigusr1() {
    nondeterministic_roundtrip(
        program("raise"),
        &[],
        &[
            "in SIGUSR1 handler\nraise returned 0, handler ran 1 times",
            "after unblock handled=12",
        ],
    );
}

#[test]
fn abort_exit_status() {
    let prog = program("abort");
    let native = run_native(&prog, &[]);
    assert_eq!(
        shell_code(&native.status),
        134,
        "{}",
        describe("native", &native)
    );
    assert_native_nondeterministic(&prog, &[]);
    // rec exits 134 like the program; the faithful replay exits 0 with the same output.
    let r = assert_replays_exactly_status(&prog, &[], 134);
    assert!(
        stdout_str(&r.rec).starts_with("about to abort"),
        "{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn spin_compute_loop() {
    // Deterministic program: rec passes the output through unchanged.
    assert_replays_like_native(program("spin"), &["2000000"], 0, None);
}

#[test]
fn many_small_reads() {
    assert_replays_like_native(
        program("reads"),
        &["5000"],
        0,
        Some("reads 5000 ok 5000 sum 0\n"),
    );
}

/// The kernel loads the ELF interpreter from the system; a trace must still replay after it
/// changed (as after a glibc update): the replayer mounts the recorded copy over it.
#[test]
fn replays_after_the_elf_interpreter_changed() {
    let dir = programs_out_dir().join(format!("interp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let loader = dir.join("ld.so");
    std::fs::copy("/lib64/ld-linux-x86-64.so.2", &loader).unwrap();
    let flag = format!("-Wl,--dynamic-linker={}", loader.display());
    let prog = build_program(
        "pids",
        &[&flag],
        &format!("pids-own-loader-{}", std::process::id()),
    );
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    // "Update" the loader: any other content.
    std::fs::copy("/bin/true", &loader).unwrap();
    let out = ctx.replay(&trace);
    assert_eq!(shell_code(&out.status), 0, "{}", describe("replay", &out));
    assert_eq!(stdout_str(&out), stdout_str(&rec));
    // The system's file was not touched.
    assert_eq!(
        std::fs::read(&loader).unwrap(),
        std::fs::read("/bin/true").unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
