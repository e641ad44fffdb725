//! Inspecting a replay in the real gdb as in a live process, and rr's commands: `$_siginfo`
//! (the recorded siginfo of a signal), `info proc` and `info proc mappings` (the recorded
//! process's), the AVX-512 registers, `when`, `when-tid`, `checkpoint`, `restart N`,
//! `info checkpoints`, `delete checkpoint N`, `run N`, and `deja replay -d DEBUGGER`.

mod common;

use std::path::{Path, PathBuf};

use common::gdb::{assert_has, gdb_batch, printed, text};
use common::*;

/// The numbers after each `prefix` in `all`, in order.
fn numbers_after(all: &str, prefix: &str) -> Vec<u64> {
    all.split(prefix)
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// A recording of `siginfo_kill.c` and the pid it had (which it printed).
fn siginfo_kill(ctx: &Ctx) -> (PathBuf, String) {
    let prog = built_once("siginfo_kill", &["-O0"], "siginfo_kill-O0");
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    let out = stdout_str(&rec);
    let words: Vec<&str> = out.split_whitespace().collect();
    let [_, pid, _, _, signo, _, sender] = words[..] else {
        panic!("unexpected output: {out}");
    };
    assert_eq!((signo, sender), ("10", pid), "{out}");
    (trace, pid.to_string())
}

#[test]
fn siginfo_at_a_recorded_kill_and_in_its_handler_names_the_sender() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, pid) = siginfo_kill(&ctx);
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break on_usr1",
            "continue",
            "p $_siginfo.si_signo",
            "continue",
            "p $_siginfo.si_signo",
            "p $_siginfo._sifields._kill.si_pid",
            "p $_siginfo.si_code",
            "p si->_sifields._kill.si_pid",
        ],
    ));
    assert_has(&all, "Program received signal SIGUSR1");
    assert_has(&all, "Breakpoint 1, on_usr1");
    // SI_USER (0): sent by kill(2), from the recorded process itself.
    assert_eq!(
        printed(&all),
        ["10", "10", pid.as_str(), "0", pid.as_str()],
        "{all}"
    );
}

#[test]
fn siginfo_is_each_threads_own() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(threaded("siginfo_thread"), &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &["-q"],
        &[
            "continue",
            "p $_siginfo.si_signo",
            "p $_siginfo.si_code",
            "thread 2",
            "p $_siginfo.si_signo",
            "thread 1",
            "p $_siginfo.si_signo",
        ],
    ));
    assert_has(&all, "received signal SIGUSR2");
    // SI_TKILL (-6): sent by pthread_kill; the other thread never had a signal.
    assert_eq!(printed(&all), ["12", "-6", "12"], "{all}");
    assert_has(&all, "Unable to read siginfo");
}

#[test]
fn siginfo_of_a_recorded_segv_has_the_fault_address() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("segv"), &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    assert_has(
        &stdout_str(&rec),
        "caught SIGSEGV at 0x1000 code SEGV_MAPERR",
    );
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "continue",
            "p $_siginfo.si_signo",
            "p $_siginfo._sifields._sigfault.si_addr",
            "p $_siginfo.si_code",
        ],
    ));
    assert_has(&all, "Program received signal SIGSEGV");
    // SEGV_MAPERR (1) at the bad pointer.
    assert_eq!(printed(&all), ["11", "(void *) 0x1000", "1"], "{all}");
}

#[test]
fn info_proc_shows_the_recorded_process_and_its_mappings() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, pid) = siginfo_kill(&ctx);
    let prog = built_once("siginfo_kill", &["-O0"], "siginfo_kill-O0");
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break on_usr1",
            "continue",
            "continue",
            "info proc",
            "info proc mappings",
            "info proc status",
        ],
    ));
    assert_has(&all, &format!("process {pid}\n"));
    assert_has(&all, &format!("\nPid:\t{pid}\n"));
    assert_has(&all, &format!("\nTgid:\t{pid}\n"));
    assert_has(&all, &format!("cmdline = '{}'", prog.display()));
    assert_has(&all, &format!("exe = '{}'", prog.display()));
    let maps: Vec<&str> = all
        .lines()
        .skip_while(|l| !l.contains("Start Addr"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("0x"))
        .collect();
    let exe = prog.display().to_string();
    let named = |name: &str| {
        maps.iter()
            .filter(|l| l.split_whitespace().last() == Some(name))
            .count()
    };
    assert!(named(&exe) >= 2, "the executable's mappings in:\n{all}");
    let libc = maps
        .iter()
        .filter(|l| {
            l.split_whitespace()
                .last()
                .is_some_and(|p| p.ends_with("/libc.so.6"))
        })
        .count();
    assert!(libc >= 2, "libc's mappings in:\n{all}");
    assert!(maps.iter().any(|l| l.ends_with("[stack]")), "{all}");
    // The replay's own copies (the trace's file store, emulated files) never show.
    let trace_dir = trace.display().to_string();
    assert!(!maps.iter().any(|l| l.contains(&trace_dir)), "{all}");
    assert!(!all.contains("unable to open /proc file"), "{all}");
}

#[test]
fn avx512_registers_are_the_recorded_ones() {
    if installed("gdb").is_none() {
        return;
    }
    if !std::is_x86_feature_detected!("avx512f") {
        eprintln!("note: this CPU has no AVX-512; skipping");
        return;
    }
    let ctx = Ctx::new();
    let prog = built_once("avx512_regs", &["-O1", "-mavx512f"], "avx512_regs");
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break probe",
            "continue",
            "p $zmm0.v16_int32",
            "p $zmm17.v16_int32",
            "p/x $k1",
            "info registers k1",
        ],
    ));
    let lanes = "{287454020 <repeats 16 times>}";
    assert_eq!(printed(&all), [lanes, lanes, "0x5a5a"], "{all}");
    assert_has(&all, "k1             0x5a5a");
}

/// `threads.c` in its mutex mode, recorded.
fn threads(ctx: &Ctx) -> PathBuf {
    let (trace, rec) = ctx.record(threaded("threads"), &["mutex"]);
    assert_eq!(rec.status.code(), Some(0), "{}", describe("rec", &rec));
    trace
}

#[test]
fn rr_checkpoints_and_when_in_a_multithreaded_program() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let trace = threads(&ctx);
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &["-q"],
        &[
            "break work",
            "continue",
            "when",
            "when-tid",
            "p n",
            "checkpoint",
            "info checkpoints",
            "continue",
            "continue",
            "p n",
            "restart 1",
            "when",
            "when-tid",
            "p n",
            "continue",
            "restart",
            "p n",
            "info checkpoints",
            "delete checkpoint 1",
            "info checkpoints",
            "delete checkpoint 1",
            "restart 1",
        ],
    ));
    let when = numbers_after(&all, "Completed event: ");
    assert_eq!(when.len(), 2, "{all}");
    assert_eq!(
        when[0], when[1],
        "restart 1 goes back to the checkpoint's event:\n{all}"
    );
    // The thread gdb switched to at the breakpoint, by its recorded id.
    let switched = all
        .split("[Switching to Thread ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|ptid| ptid.split('.').nth(1))
        .unwrap_or_else(|| panic!("no thread switch in:\n{all}"));
    let tids = numbers_after(&all, "Current tid: ");
    assert_eq!(tids.len(), 2, "{all}");
    assert_eq!(tids[0].to_string(), switched, "{all}");
    assert_eq!(tids[1], tids[0], "{all}");
    let values = printed(&all);
    assert_eq!(values.len(), 4, "{all}");
    assert_eq!(values[2], values[0], "the checkpoint's value again:\n{all}");
    assert_eq!(
        values[3], values[0],
        "plain restart: the last checkpoint:\n{all}"
    );
    assert_has(&all, "Checkpoint 1 at work (n=");
    assert_has(&all, &format!("ID\tWhen\tWhere\n1\t{}\twork (n=", when[0]));
    assert_has(&all, "Thread 2 stopped.");
    assert_has(
        &all,
        "Deleted checkpoint 1.\nNo checkpoints.\nNo checkpoint number 1.",
    );
    assert_has(&all, "Checkpoint 1 not found.");
}

#[test]
fn run_n_restarts_the_replay_at_event_n_and_plain_run_at_the_start() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let trace = threads(&ctx);
    let count = ctx.info_json(&trace)["event_count"]
        .as_u64()
        .expect("the trace's event count");
    let (late, early) = (count / 2, count / 4);
    let late_cmd = format!("run {late}");
    let early_cmd = format!("run {early}");
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &["-q"],
        &[
            late_cmd.as_str(),
            "when",
            early_cmd.as_str(),
            "when",
            "break main",
            "run",
            "when",
            "run 999999999",
        ],
    ));
    assert_has(&all, "event 999999999 is past the end of the recording");
    let when = numbers_after(&all, "Completed event: ");
    assert_eq!(when.len(), 3, "{all}");
    assert_eq!(&when[..2], [late, early], "{all}");
    assert!(when[2] < early, "plain `run` starts at the start:\n{all}");
    assert_has(&all, "Breakpoint 1, main");
}

#[test]
fn dash_d_chooses_the_debugger() {
    let Some(gdb) = installed("gdb") else {
        return;
    };
    let ctx = Ctx::new();
    let (trace, _) = siginfo_kill(&ctx);
    let used = ctx.dir().join("wrapper-used");
    let wrapper = ctx.dir().join("my-gdb");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > '{}'\nexec '{}' \"$@\"\n",
        used.display(),
        gdb.display()
    );
    std::fs::write(&wrapper, script).expect("writing the wrapper");
    set_executable(&wrapper);
    let wrapper_arg = wrapper.display().to_string();
    let all = text(&gdb_batch(
        &ctx,
        &trace,
        &["-d", wrapper_arg.as_str()],
        &["when"],
    ));
    let args = std::fs::read_to_string(&used)
        .unwrap_or_else(|e| panic!("the wrapper did not run ({e}):\n{all}"));
    assert!(args.contains("target extended-remote"), "{args}");
    assert_has(&all, "Completed event: ");
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("making the wrapper executable");
}

#[test]
fn the_connect_hint_of_a_server_loads_the_commands() {
    if installed("gdb").is_none() {
        return;
    }
    use std::io::BufRead;
    let ctx = Ctx::new();
    let (trace, _) = siginfo_kill(&ctx);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server = spawn_captured(ctx.deja().arg("replay").arg(&trace).args([
        "-s",
        &port.to_string(),
        "--once",
    ]));
    let pgid = server.id();
    let mut err = std::io::BufReader::new(server.stderr.take().expect("the server's stderr"));
    let mut hint = String::new();
    while !hint.contains("connect with:") {
        hint.clear();
        let n = err.read_line(&mut hint).expect("reading the server's hint");
        assert!(n > 0, "the server ended without a hint");
    }
    let mut command = String::new();
    err.read_line(&mut command)
        .expect("reading the gdb command");
    let command = command.trim();
    assert!(command.starts_with("gdb "), "{command}");
    assert!(command.contains(" -x "), "the script is passed: {command}");
    let gdb = run_with_timeout(
        std::process::Command::new("sh").arg("-c").arg(format!(
            "{command} -batch -nx -ex when -ex 'info checkpoints'"
        )),
        std::time::Duration::from_secs(120),
    );
    let all = text(&gdb);
    assert_has(&all, "Completed event: ");
    assert_has(&all, "No checkpoints.");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = server.try_wait().expect("waiting for the server") {
            assert!(status.success(), "the server failed: {status}");
            break;
        }
        if std::time::Instant::now() > deadline {
            kill_group(pgid);
            panic!("the server did not end after its one gdb");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A program recorded a second time maps its libraries without a stop (the first recording's
/// files, stored ahead; the in-process library maps the replay's copies): gdb still reads the
/// C library's symbols, stops at a breakpoint in it, and `info proc mappings` names the
/// recorded files.
#[test]
fn libraries_mapped_without_a_stop_are_the_debugger_s_too() {
    let ctx = Ctx::new();
    let mut trace = PathBuf::new();
    for _ in 0..2 {
        let (t, rec) = ctx.record("/bin/ls", &["/"]);
        assert!(rec.status.success(), "{}", describe("rec", &rec));
        trace = t;
    }
    let dump = ctx.run_deja(&[std::ffi::OsStr::new("dump"), trace.as_os_str()]);
    let events = stdout_str(&dump);
    assert!(
        events
            .lines()
            .any(|l| l.contains("buffered mmaps of") && l.contains("libc.so")),
        "the second recording mapped the C library on the traced path:\n{events}"
    );
    let out = gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break opendir",
            "continue",
            "bt 2",
            "info sharedlibrary",
            "info proc mappings",
        ],
    );
    let all = text(&out);
    // (With the C library's debugging information or without: "Breakpoint 1.1, invalid_name
    // (...) at .../opendir.c:33", "Breakpoint 1, 0x... in opendir () from ...".)
    assert!(
        all.lines()
            .any(|l| l.starts_with("Breakpoint 1") && l.contains("opendir")),
        "the breakpoint in opendir was not hit:\n{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.contains("libc.so.6") && l.contains("Yes")),
        "the C library's symbols were not read:\n{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.contains("r-xp") && l.contains("/libc.so.6")),
        "no mapping of the C library by its recorded name:\n{all}"
    );
}
