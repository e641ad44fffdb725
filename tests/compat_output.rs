//! A replay that exits 0 printed exactly what the recording printed (issue 11): writes of
//! several threads and processes to stdout replay in the order they reached it; a trace whose
//! recorded output differs from what the replayed program writes is a divergence; ioctl and
//! prctl answers that depend on the recorder's own setup are the program's; `-g` reaches
//! events after a handled signal; a 32-bit program exec'd under recording is refused by name.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::rewrite::rewrite_trace;
use common::*;
use trace_format::Event;

fn dump(ctx: &Ctx, trace: &Path) -> String {
    let out = ctx.run_deja(&[OsStr::new("dump"), trace.as_os_str()]);
    assert!(out.status.success(), "{}", describe("dump", &out));
    stdout_str(&out)
}

#[test]
fn lines_of_threads_and_processes_replay_in_the_order_they_were_written() {
    let prog = threaded("interleaved_writes");
    for _ in 0..2 {
        let r = assert_replays_exactly(&prog, &["3", "40"]);
        let out = stdout_str(&r.rec);
        assert_eq!(out.lines().count(), 3 * 2 * 40 + 1, "{out}");
        assert!(out.ends_with("all 6 writers done\n"), "{out}");
    }
}

#[test]
fn a_recorded_write_the_replayed_program_does_not_make_is_a_divergence() {
    let prog = threaded("interleaved_writes");
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(&prog, &["1", "3"]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    // A faithful copy replays; the same copy with one echoed byte changed must not.
    let copy = ctx.fresh_path("copy");
    rewrite_trace(&trace, &copy, &ctx.trace_root(), |_, _| {});
    assert_replay_matches(&rec, &ctx.replay(&copy));
    let tampered = ctx.fresh_path("tampered");
    let mut changed = None;
    rewrite_trace(&trace, &tampered, &ctx.trace_root(), |i, ev| {
        if let Event::Syscall(s) = ev {
            if let (None, Some(echoed)) = (changed, s.echo.as_mut()) {
                echoed.bytes[0] ^= 0x20;
                changed = Some(i);
            }
        }
    });
    let event = changed.expect("the recording has an echoed write");
    let out = ctx.replay(&tampered);
    assert_no_panic("replay of a tampered trace", &out);
    assert!(!out.status.success(), "{}", describe("replay", &out));
    assert_stderr_mentions(
        "replay of a tampered trace",
        &out,
        &["diverged", &format!("event {event}"), "stdout to write"],
    );
}

#[test]
fn ioctls_are_recorded_by_what_they_point_to_and_unknown_legacy_ones_refused() {
    let prog = program("ioctl_requests");
    let native = run_native(&prog, &[]);
    let r = assert_replays_exactly(&prog, &[]);
    assert_eq!(
        stdout_str(&r.rec),
        stdout_str(&native),
        "{}",
        describe("rec", &r.rec)
    );
    assert_stdout_has("rec", &r.rec, &["FIONREAD: 0, 5 bytes", "0x56ff: -1"]);
    assert_stderr_mentions("rec", &r.rec, &["0x56ff", "ENOTTY"]);
}

#[test]
fn prctl_tsc_and_seccomp_answer_the_programs_own_setting() {
    let expected = "PR_GET_SECCOMP 0\n\
                    start: PR_GET_TSC 0 mode 1, rdtsc ran\n\
                    PR_SET_TSC(SIGSEGV) 0\n\
                    trapping: PR_GET_TSC 0 mode 2, rdtsc faulted\n\
                    PR_SET_TSC(ENABLE) 0\n\
                    enabled: PR_GET_TSC 0 mode 1, rdtsc ran\n\
                    PR_SET_TSC(7) -1\n";
    assert_replays_like_native(program("prctl_tsc"), &[], 0, Some(expected));
}

#[test]
fn goto_reaches_the_events_after_a_handled_signal() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record("/bin/sh", &["-c", "/bin/true; echo done"]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let signal = dump(&ctx, &trace)
        .lines()
        .find(|l| l.contains("signal 17"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .expect("the shell's SIGCHLD is in the trace");
    for event in [signal, signal + 1, signal + 2] {
        let mut cmd = ctx.deja();
        cmd.arg("replay")
            .arg(&trace)
            .args(["-g", &event.to_string()]);
        cmd.args([
            "--",
            "-batch",
            "-nx",
            "-ex",
            "monitor when",
            "-ex",
            "continue",
            // (The end is a stop first, as under rr.)
            "-ex",
            "continue",
        ]);
        let out = run_with_timeout(&mut cmd, TIMEOUT);
        assert_no_panic("replay -g", &out);
        let all = format!("{}{}", stdout_str(&out), stderr_str(&out));
        assert!(all.contains(&format!("Current event: {event}")), "{all}");
        assert!(all.contains("exited normally"), "{all}");
        assert!(!all.contains("could not reach"), "{all}");
    }
}

#[test]
fn a_32_bit_program_exec_d_under_recording_is_refused_by_name() {
    let ctx = Ctx::new();
    let prog32 = make_32bit_binary(ctx.dir());
    let script = format!("{}; echo status $?", prog32.display());
    let (_trace, out) = ctx.record("/bin/sh", &["-c", &script]);
    assert_no_panic("rec", &out);
    assert!(!out.status.success(), "{}", describe("rec", &out));
    assert!(
        !stdout_str(&out).contains("status 139"),
        "{}",
        describe("rec", &out)
    );
    assert_stderr_mentions("rec", &out, &["32-bit", &prog32.display().to_string()]);
}

#[test]
fn sigpipe_keeps_its_default_disposition_under_recording() {
    let expected = "SIGPIPE default\n";
    assert_replays_like_native(program("sigpipe_inherited"), &[], 128 + 13, Some(expected));
}

#[test]
fn calls_through_the_vsyscall_page_are_recorded() {
    let prog = program("vsyscall_page");
    let r = assert_replays_exactly(&prog, &[]);
    let out = stdout_str(&r.rec);
    assert!(
        out == "no vsyscall page\n" || !out.contains("wrong") && out.matches("sane").count() == 3,
        "{}",
        describe("rec", &r.rec)
    );
}

#[test]
fn a_file_mapping_replays_its_whole_last_page() {
    let expected = "mapped: ab, past the length: c, past the file: 0\n";
    assert_replays_like_native(program("mmap_page_tail"), &[], 0, Some(expected));
}

#[test]
fn the_vdso_stays_visible_and_its_clock_calls_are_recorded() {
    let expected = "vdso: an ELF64 image\n\
                    clock_gettime: 0 0 ordered, gettimeofday: 0, time: sane\n";
    let r = assert_replays_like_native(program("vdso_image"), &[], 0, Some(expected));
    let dump = dump(&r.ctx, &r.trace);
    for call in ["clock_gettime(", "gettimeofday(", "time("] {
        assert!(dump.contains(call), "no {call} event:\n{dump}");
    }
}
