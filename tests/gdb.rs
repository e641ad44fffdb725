//! Debugging replays with the real gdb: `deja replay TRACE -- GDB-ARGS` launches gdb on the
//! replay; each test scripts gdb in batch mode and checks what it prints against what the
//! recording printed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::gdb::{assert_has, gdb_batch, text};
use common::*;

/// `debugme.c` without optimization, so every local is visible.
fn debugme() -> PathBuf {
    built_once("debugme", &["-pthread", "-O0"], "debugme-O0")
}

/// The `name=value` fields of the program's result line.
fn field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        .to_string()
}

#[test]
fn threads_breakpoints_values_and_the_exit_status_are_the_recorded_ones() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(debugme(), &[]);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));
    let line = stdout_str(&rec);
    let seed = field(&line, "seed");
    let out = gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break worker",
            "continue",
            "info threads",
            "bt",
            "print seed_global",
            "next",
            "print id",
            "next",
            "print local",
            "info sharedlibrary",
            "delete",
            // The end stops first (as rr does), then the program exits.
            "continue",
            "continue",
        ],
    );
    let all = text(&out);
    // Which worker gets there first is as recorded; its id is its argument.
    let hit = "hit Breakpoint 1, worker (arg=0x";
    let at = all
        .find(hit)
        .unwrap_or_else(|| panic!("the breakpoint is hit:\n{all}"));
    let id: i32 = all[at + hit.len()..]
        .chars()
        .next()
        .unwrap()
        .to_digit(10)
        .unwrap() as i32;
    // Two threads, named as the recording named them, the second in worker.
    assert!(
        all.lines()
            .filter(|l| l.contains("Thread ") && l.contains("(debugme-O0)"))
            .count()
            >= 2,
        "info threads shows both threads by name:\n{all}"
    );
    // The backtrace goes through libc's thread start.
    assert_has(&all, "start_thread");
    assert_has(&all, &format!("$1 = {seed}"));
    assert_has(&all, &format!("$2 = {id}"));
    let local = id * 100 + seed.parse::<i32>().unwrap();
    assert_has(&all, &format!("$3 = {local}"));
    assert_has(&all, "/libc.so.6");
    // The program's own output, echoed, and its recorded exit status.
    assert_has(&all, line.trim());
    assert_has(&all, "received signal SIGKILL");
    assert_has(&all, "exited with code 03");
}

#[test]
fn finish_step_and_watchpoints_see_the_recorded_execution() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(debugme(), &[]);
    let line = stdout_str(&rec);
    let (seed, r) = (field(&line, "seed"), field(&line, "r"));
    let seed: i64 = seed.parse().unwrap();
    let out = gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break main",
            "continue",
            "next",
            "next",
            "step",
            "print x",
            "finish",
            "next",
            "next",
            "print errno",
            "watch counter",
            "continue",
            "print errno",
            "continue",
            "delete",
            "continue",
            "continue",
        ],
    );
    let all = text(&out);
    // `step` enters square_plus with the recorded argument; `finish` returns the recorded value.
    assert_has(&all, &format!("square_plus (x={}, k=3)", seed % 7));
    assert_has(&all, &format!("Value returned is $2 = {r}"));
    // errno is thread-local: ENOENT from the failed open in the main thread, 0 in a worker.
    assert_has(&all, "$3 = 2");
    assert_has(&all, "$4 = 0");
    // The watchpoint fires where a worker wrote the global, with the recorded values: each
    // write adds the writing worker's `local` (100 * id + seed).
    assert_has(&all, "Hardware watchpoint 2: counter");
    let values: Vec<i64> = all
        .lines()
        .filter_map(|l| l.strip_prefix("New value = "))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(values.len(), 2, "two watchpoint stops:\n{all}");
    let locals = [100 + seed, 200 + seed];
    assert!(locals.contains(&values[0]), "{values:?} {all}");
    assert!(
        locals.contains(&(values[1] - values[0])),
        "{values:?} {all}"
    );
    assert_has(&all, &format!("Old value = 0\nNew value = {}", values[0]));
    assert_has(&all, "exited with code 03");
}

#[test]
fn breakpoints_on_a_syscall_an_rdtsc_and_in_a_signal_handler_replay_exactly() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("debug_sites"), &[]);
    let line = stdout_str(&rec);
    let pid: i64 = field(&line, "pid").parse().unwrap();
    let tsc: u64 = field(&line, "tsc").parse().unwrap();
    let out = gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break *syscall_site",
            "break *rdtsc_site",
            "hbreak on_usr1",
            "continue",
            "stepi",
            "print $rax",
            "continue",
            "stepi",
            "print/x $rax",
            "print/x $rdx",
            "continue",
            "bt 1",
            "continue",
            "set var handled = 5",
            "print $rip = 0",
            "continue",
            "continue",
        ],
    );
    let all = text(&out);
    assert_has(&all, &format!("$1 = {pid}"));
    assert_has(&all, &format!("$2 = {:#x}", tsc & 0xffff_ffff));
    assert_has(&all, &format!("$3 = {:#x}", tsc >> 32));
    assert_has(&all, "Program received signal SIGUSR1");
    // A hardware breakpoint (a debug register) in the signal handler.
    assert_has(&all, "Hardware assisted breakpoint 3");
    assert_has(&all, "Breakpoint 3, on_usr1 (sig=10)");
    // Changes go to a diversion (a copy of the process), never to the replay.
    assert_has(&all, "$4 = (void (*)()) 0x0");
    // The replay went on exactly: same output, normal exit.
    assert_has(&all, line.trim());
    assert_has(&all, "exited normally");
    assert!(!all.contains("diverged"), "{all}");
}

#[test]
fn monitor_commands_starting_at_an_event_and_running_again_after_the_end() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(debugme(), &[]);
    let seed: i64 = field(&stdout_str(&rec), "seed").parse().unwrap();
    // An event after which a task runs (a syscall's): `-g` halts there. (After a `Buffered`
    // event, no task runs until the next event.)
    let dump = ctx.deja().arg("dump").arg(&trace).output().unwrap();
    let start = stdout_str(&dump)
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.trim_start().split_once(' ')?;
            let n: u64 = n.parse().ok()?;
            (n >= 12 && rest.contains("] syscall ")).then_some(n)
        })
        .next()
        .expect("a syscall event after event 12");
    let at = start.to_string();
    let out = gdb_batch(
        &ctx,
        &trace,
        &["-g", &at],
        &[
            "monitor when",
            "monitor help",
            "continue",
            "break square_plus",
            "run",
            "print x",
            "run",
            "print x",
        ],
    );
    let all = text(&out);
    assert_has(&all, &format!("Current event: {start}"));
    assert_has(&all, "monitor when");
    // The session outlives the program: `run` replays it again, from event 12.
    let end = all
        .find("received signal SIGKILL")
        .expect("the first run gets to the end");
    assert!(all[end..].contains("Breakpoint 1, square_plus"), "{all}");
    assert_has(&all, &format!("$1 = {}", seed % 7));
    // `run` while the program runs starts over too.
    assert_has(&all, &format!("$2 = {}", seed % 7));
    let out = gdb_batch(&ctx, &trace, &["-g", "999999"], &[]);
    assert_deja_error("replay -g past the end", &out);
    assert_stderr_mentions("replay -g past the end", &out, &["999999", "past the end"]);
}

#[test]
fn a_child_process_is_debugged_with_p() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("child_signaled"), &[]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    // The first child (which dies of SIGSEGV): the second row of the table.
    let child: String = ctx
        .ps(&trace)
        .get(1)
        .expect("deja ps lists the child")
        .pid
        .clone();
    let out = gdb_batch(
        &ctx,
        &trace,
        &["-p", &child],
        &["info inferiors", "continue", "continue"],
    );
    let all = text(&out);
    assert_has(&all, &format!("process {child}"));
    assert_has(&all, "Program received signal SIGSEGV");
    assert_has(&all, "Program terminated with signal SIGSEGV");
    let out = gdb_batch(&ctx, &trace, &["-p", "999999"], &[]);
    assert_deja_error("replay -p of no process", &out);
    assert_stderr_mentions("replay -p of no process", &out, &["999999", "deja ps"]);
}

/// A minimal GDB remote protocol client, for what batch gdb cannot do (an interrupt).
struct Rsp(TcpStream);

impl Rsp {
    fn connect(port: u16) -> Rsp {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    return Rsp(s);
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("cannot connect to deja's server: {e}"),
            }
        }
    }

    fn send(&mut self, body: &str) {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        write!(self.0, "${body}#{sum:02x}").unwrap();
    }

    /// The next packet's body (acknowledging it).
    fn recv(&mut self) -> String {
        let mut byte = [0u8];
        loop {
            self.0.read_exact(&mut byte).expect("a reply from deja");
            if byte[0] == b'$' {
                break;
            }
        }
        let mut body = Vec::new();
        loop {
            self.0.read_exact(&mut byte).unwrap();
            if byte[0] == b'#' {
                break;
            }
            body.push(byte[0]);
        }
        let mut sum = [0u8; 2];
        self.0.read_exact(&mut sum).unwrap();
        self.0.write_all(b"+").unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    fn ask(&mut self, body: &str) -> String {
        self.send(body);
        self.recv()
    }

    /// Continues to the program's exit: past the stop at its end (SIGKILL, as rr reports
    /// it), if it stops there; the exit's reply.
    fn continue_to_exit(&mut self) -> String {
        let mut reply = self.ask("vCont;c");
        if reply.starts_with("T09") {
            reply = self.ask("vCont;c");
        }
        reply
    }
}

#[test]
fn serving_only_binds_loopback_and_an_interrupt_stops_a_long_continue() {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("spin"), &["600000000"]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = spawn_captured(ctx.deja().arg("replay").arg(&trace).args([
        "-s",
        &port.to_string(),
        "--once",
    ]));
    let mut rsp = Rsp::connect(port);
    assert_eq!(rsp.ask("?").get(..3), Some("T05"));
    // Continue, then interrupt: the replay stops in the program with SIGINT (gdb's 2).
    rsp.send("vCont;c");
    std::thread::sleep(Duration::from_millis(200));
    rsp.0.write_all(&[0x03]).unwrap();
    let stop = rsp.recv();
    assert!(stop.starts_with("T02"), "an interrupt stop, got {stop:?}");
    // Continue to the end: a stop there (SIGKILL, as rr does), then the recorded exit status.
    rsp.send("vCont;c");
    let end = rsp.recv();
    assert!(end.starts_with("T09"), "the end, got {end:?}");
    rsp.send("vCont;c");
    let end = rsp.recv();
    assert!(end.starts_with('W'), "the exit, got {end:?}");
    rsp.send("vKill;1");
    drop(rsp);
    let out = wait_with_timeout(server, "deja replay -s", Duration::from_secs(60));
    let err = stderr_str(&out);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(out.status.success(), "{}", describe("deja replay -s", &out));
}

#[test]
fn without_gdb_replay_says_how_to_serve_only() {
    let ctx = Ctx::new();
    let (trace, _) = ctx.record(program("exit3"), &[]);
    let out = run_with_timeout(
        ctx.deja()
            .arg("replay")
            .arg(&trace)
            .env("PATH", ctx.dir().join("no-such-bin")),
        Duration::from_secs(60),
    );
    assert_deja_error("replay without gdb installed", &out);
    assert_stderr_mentions("replay without gdb installed", &out, &["gdb", "-s PORT"]);
}

/// The address of the last `<name>` syscall site `deja dump` says the recording patched.
fn patched_site(ctx: &Ctx, trace: &Path, name: &str) -> u64 {
    patched(ctx, trace, name).0
}

/// The last `<name>` syscall site `deja dump` says the recording patched, and its stub.
fn patched(ctx: &Ctx, trace: &Path, name: &str) -> (u64, u64) {
    let dump = ctx.deja().arg("dump").arg(trace).output().unwrap();
    let dump = stdout_str(&dump);
    let needle = format!("patched the {name} site at 0x");
    let hex_after = |l: &str, needle: &str| {
        let at = l.find(needle)? + needle.len();
        let hex: String = l[at..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        u64::from_str_radix(&hex, 16).ok()
    };
    dump.lines()
        .rev()
        .find_map(|l| Some((hex_after(l, &needle)?, hex_after(l, "its stub at 0x")?)))
        .unwrap_or_else(|| panic!("the recording patched no {name} site:\n{dump}"))
}

#[test]
fn patched_syscall_sites_show_and_step_like_the_programs_own_code() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("patched_calls"), &[]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let line = stdout_str(&rec);
    let pid = field(&line, "pid");
    // glibc's read (the last one patched: the dynamic loader's comes first) and getpid.
    let read = patched_site(&ctx, &trace, "read");
    let getpid = patched_site(&ctx, &trace, "getpid");
    let mut commands: Vec<String> = [
        "break patched_calls.c:25",
        "continue",
        "print c",
        "print n",
        &format!("x/2i {read:#x}"),
        &format!("x/2i {getpid:#x}"),
        // Strictly inside the patched window: the instruction after the syscall.
        &format!("break *{:#x}", read + 2),
        "continue",
        "print $rax",
        "delete",
        "break patched_calls.c:23",
        "continue",
        "next",
        "print pid",
        "next",
        "print c",
        "print n",
        "delete",
        "break patched_calls.c:24",
        "continue",
        "display/i $pc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    commands.extend(std::iter::repeat("stepi".to_string()).take(24));
    // The library writes the recorded byte: the watchpoint fires once the task is back at the
    // instruction after the syscall, here at the end of a `stepi` over it.
    let watch = [
        "undisplay".to_string(),
        "delete".to_string(),
        "finish".to_string(),
        "watch c".to_string(),
        format!("break *{read:#x}"),
        "continue".to_string(),
        "stepi".to_string(),
        "delete".to_string(),
        "continue".to_string(),
        "continue".to_string(),
    ];
    commands.extend(watch);
    let commands: Vec<&str> = commands.iter().map(|s| s.as_str()).collect();
    let out = gdb_batch(&ctx, &trace, &[], &commands);
    let all = text(&out);
    // Iteration i reads "deja"[i % 4], one byte.
    assert_has(&all, "$1 = 100 'd'");
    assert_has(&all, "$2 = 1");
    // The program's own instructions at the patched sites, not deja's jump.
    for site in [read, getpid] {
        assert!(
            all.lines()
                .any(|l| l.contains(&format!("{site:#x} <")) && l.contains("syscall")),
            "x/2i shows the syscall at {site:#x}:\n{all}"
        );
    }
    // A breakpoint inside the window stops there, after the (buffered) read returned 1.
    assert_has(&all, &format!("Breakpoint 2, {:#018x} in ", read + 2));
    assert_has(&all, "$3 = 1");
    // `next` over the calls: the recorded pid, then the third byte.
    assert_has(&all, &format!("$4 = {pid}"));
    assert_has(&all, "$5 = 106 'j'");
    assert_has(&all, "$6 = 1");
    // Stepping instruction by instruction into read, over its syscall and back into main:
    // every pc is the program's or glibc's (named by a symbol), never a stub or deja's library.
    let pcs: Vec<&str> = all.lines().filter(|l| l.starts_with("=> 0x")).collect();
    assert!(pcs.len() >= 20, "stepi shows each instruction:\n{all}");
    for pc in &pcs {
        assert!(
            pc.contains(" <"),
            "a pc outside the program's code: {pc}\n{all}"
        );
    }
    let syscall = pcs
        .iter()
        .position(|l| l.starts_with(&format!("=> {read:#x} <")) && l.contains("syscall"))
        .unwrap_or_else(|| panic!("stepi reaches the patched syscall:\n{all}"));
    let after = &pcs[syscall + 1];
    assert!(
        after.starts_with(&format!("=> {:#x} <", read + 2)),
        "one stepi goes over the syscall to the next instruction: {after}\n{all}"
    );
    assert!(
        pcs[syscall..].iter().any(|l| l.contains("<main+")),
        "stepi comes back into main:\n{all}"
    );
    // The fifth read (i = 4) writes 'd' over the fourth's 'a'.
    assert_has(&all, &format!("Breakpoint 6, {read:#018x} in "));
    assert_has(&all, "Old value = 97 'a'\nNew value = 100 'd'\n");
    let watch = all.find("New value = 100 'd'").unwrap();
    assert!(
        all[watch..].contains(&format!("{:#018x} in ", read + 2)),
        "the watchpoint halts after the syscall:\n{all}"
    );
    assert_has(&all, line.trim());
    assert_has(&all, "exited normally");
    assert!(!all.contains("diverged"), "{all}");
}

#[test]
fn an_interrupt_never_halts_in_deja_s_library_or_a_stub() {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("patched_calls"), &["1000000"]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let (_, stub) = patched(&ctx, &trace, "getpid");
    let stubs = stub & !0xfff..(stub & !0xfff) + 0x1000;
    // deja's in-process library and its threads' slots (`syscallbuf::abi`).
    let lib = 0x7000_0000_0000..0x7000_0000_0000 + 0x10_0000 + 64 * (4096 + 16384 + 65536);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = spawn_captured(ctx.deja().arg("replay").arg(&trace).args([
        "-s",
        &port.to_string(),
        "--once",
    ]));
    let mut rsp = Rsp::connect(port);
    assert_eq!(rsp.ask("?").get(..3), Some("T05"));
    // Most of the replay's time is in the library answering getpid: interrupt it there.
    let mut stops = 0;
    for _ in 0..5 {
        rsp.send("vCont;c");
        std::thread::sleep(Duration::from_millis(60));
        rsp.0.write_all(&[0x03]).unwrap();
        let stop = rsp.recv();
        if stop.starts_with('W') || stop.starts_with("T09") {
            break;
        }
        assert!(stop.starts_with("T02"), "an interrupt stop, got {stop:?}");
        stops += 1;
        // rip is register 16 of `g`'s 8-byte registers, little-endian hex.
        let regs = run_length_decoded(&rsp.ask("g"));
        assert!(regs.len() >= 272, "registers: {regs:?}");
        let rip = u64::from_str_radix(&regs[256..272], 16)
            .unwrap()
            .swap_bytes();
        assert!(
            !lib.contains(&rip) && !stubs.contains(&rip),
            "interrupted at {rip:#x}, in deja's code"
        );
        let mut code = [0u8; 2];
        let mem = run_length_decoded(&rsp.ask(&format!("m{rip:x},2")));
        for (i, b) in code.iter_mut().enumerate() {
            *b = u8::from_str_radix(&mem[i * 2..i * 2 + 2], 16).unwrap();
        }
        assert_ne!(
            code,
            [0xcc, 0xcc],
            "{rip:#x} is in a patched window's padding"
        );
    }
    assert!(stops > 0, "no interrupt came before the end");
    rsp.send("vKill;1");
    drop(rsp);
    let out = wait_with_timeout(server, "deja replay -s", Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe("deja replay -s", &out));
}

/// A remote protocol reply with its run-length encoding (`X*n`: `n - 29` more `X`s) expanded.
fn run_length_decoded(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '*' {
            let n = chars.next().expect("a run length") as usize - 29;
            let last = out.chars().last().expect("a character to repeat");
            out.extend(std::iter::repeat(last).take(n));
        } else {
            out.push(c);
        }
    }
    out
}

/// A free port on the loopback interface.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The most memory the process `pid` ever held (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Sends deja's server SIGINT (Ctrl-C), which ends it.
fn interrupt(server: &std::process::Child) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not waited for.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGINT) };
}

impl Rsp {
    /// The next packet's body, or `None` if the server closed the connection (or said
    /// nothing for `timeout`).
    fn try_recv(&mut self, timeout: Duration) -> Option<String> {
        // Console output (`O` and hex, from `qRcmd`) comes before the reply, as gdb reads it.
        loop {
            let body = self.try_recv_packet(timeout)?;
            let output = body.len() > 1
                && body.starts_with('O')
                && body[1..].bytes().all(|b| b.is_ascii_hexdigit());
            if !output {
                return Some(body);
            }
        }
    }

    /// The next packet's body within `timeout` (acknowledging it); `None` if the connection
    /// closed or nothing came.
    fn try_recv_packet(&mut self, timeout: Duration) -> Option<String> {
        self.0.set_read_timeout(Some(timeout)).unwrap();
        let mut byte = [0u8];
        loop {
            self.0.read_exact(&mut byte).ok()?;
            if byte[0] == b'$' {
                break;
            }
        }
        let mut body = Vec::new();
        loop {
            self.0.read_exact(&mut byte).ok()?;
            if byte[0] == b'#' {
                break;
            }
            body.push(byte[0]);
        }
        let mut sum = [0u8; 2];
        self.0.read_exact(&mut sum).ok()?;
        self.0.write_all(b"+").ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    }
}

#[test]
fn the_server_refuses_huge_requests_survives_garbage_and_serves_the_next_gdb() {
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("exit3"), &[]);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));
    let port = free_port();
    let server = spawn_captured(
        ctx.deja()
            .arg("replay")
            .arg(&trace)
            .args(["-s", &port.to_string()]),
    );
    // A bare connect, then random bytes, then a command gdbstub cannot parse.
    drop(Rsp::connect(port));
    let mut rsp = Rsp::connect(port);
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..20_000)
        .map(|_| {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            noise as u8
        })
        .collect();
    let _ = rsp.0.write_all(&bytes);
    drop(rsp);
    let mut rsp = Rsp::connect(port);
    rsp.send("mzz,1");
    assert_eq!(
        rsp.try_recv(Duration::from_secs(30)),
        None,
        "a closed connection"
    );

    let mut rsp = Rsp::connect(port);
    let stop = rsp.ask("?");
    assert_eq!(stop.get(..3), Some("T05"));
    let thread = stop
        .split(';')
        .find_map(|f| f.split_once("thread:"))
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("a thread in {stop:?}"));
    assert_eq!(rsp.ask(&format!("Hg{thread}")), "OK");
    // gdb's packet for `watch -l` on a 4 GiB object: refused at once (gdb then watches in
    // software), as are the longest ranges of every kind.
    for z in ["Z2,0,ffffffff", "Z3,1000,ffffffffffffffff", "Z4,1000,21"] {
        let reply = rsp.ask(z);
        assert!(reply.starts_with('E'), "{z}: {reply:?}");
    }
    assert_eq!(rsp.ask("Z2,1000,8"), "OK");
    assert_eq!(rsp.ask("z2,1000,8"), "OK");
    // A huge memory read is cut to what a packet holds.
    let regs = run_length_decoded(&rsp.ask("g"));
    let rip = u64::from_str_radix(&regs[256..272], 16)
        .unwrap()
        .swap_bytes();
    let mem = run_length_decoded(&rsp.ask(&format!("m{rip:x},ffffffffffffffff")));
    assert!(
        !mem.is_empty() && mem.len() <= 2 * 49_152 && !mem.starts_with('E'),
        "{} hex digits",
        mem.len()
    );
    // A thread that does not exist is an error number, and the session goes on.
    assert_eq!(rsp.ask("Hgp1.7fffffff"), "OK");
    assert!(rsp.ask("g").starts_with('E'));
    assert_eq!(rsp.ask(&format!("Hg{thread}")), "OK");
    assert!(!rsp.ask("g").starts_with('E'));
    let end = rsp.continue_to_exit();
    assert!(end.starts_with("W03"), "the exit, got {end:?}");
    drop(rsp);
    let peak = peak_rss_kib(server.id());

    // The next gdb finds the replay at its start again.
    let mut rsp = Rsp::connect(port);
    assert_eq!(rsp.ask("?").get(..3), Some("T05"));
    assert!(rsp.continue_to_exit().starts_with("W03"));
    drop(rsp);
    interrupt(&server);
    let out = wait_with_timeout(server, "deja replay -s", Duration::from_secs(60));
    let err = stderr_str(&out);
    assert!(err.contains("until Ctrl-C"), "{err}");
    assert!(err.contains("still serving"), "{err}");
    assert!(err.contains("closed a gdb connection"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(peak < 512 * 1024, "the server held {peak} KiB");
}

#[test]
fn random_packets_never_grow_the_server() {
    let iters: usize = std::env::var("DEJA_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(program("exit3"), &[]);
    assert_eq!(rec.status.code(), Some(3), "{}", describe("rec", &rec));
    let port = free_port();
    let server = spawn_captured(
        ctx.deja()
            .arg("replay")
            .arg(&trace)
            .args(["-s", &port.to_string()]),
    );
    // Packets gdbstub knows, with arguments gdb would never send (nothing resumes the
    // replay, so the pass stays short).
    const PREFIXES: [&str; 24] = [
        "m",
        "M",
        "g",
        "G",
        "p",
        "P",
        "Z0,",
        "Z1,",
        "Z2,",
        "Z3,",
        "Z4,",
        "z2,",
        "Hg",
        "Hc",
        "qXfer:auxv:read::",
        "qXfer:exec-file:read::",
        "qXfer:features:read:target.xml:",
        "qfThreadInfo",
        "qsThreadInfo",
        "qThreadExtraInfo,",
        "qRcmd,",
        "T",
        "qSupported:",
        "qAttached:",
    ];
    const ARGS: [&str; 10] = [
        "0",
        "1",
        "ffffffff",
        "ffffffffffffffff",
        "fffffffffffffffffffffffffff",
        "401000",
        ",",
        ":",
        "p1.1",
        "-1",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut rsp = Rsp::connect(port);
    let (mut answered, mut closed) = (0, 0);
    for _ in 0..iters {
        let mut body = PREFIXES[rand(PREFIXES.len())].to_string();
        for _ in 0..rand(4) {
            body.push_str(ARGS[rand(ARGS.len())]);
            body.push([',', ':', ';', '='][rand(4)]);
        }
        body.push_str(ARGS[rand(ARGS.len())]);
        rsp.send(&body);
        if rsp.try_recv(Duration::from_secs(30)).is_some() {
            answered += 1;
        } else {
            // gdbstub ends a session on a packet it cannot parse: the server takes the next.
            closed += 1;
            rsp = Rsp::connect(port);
        }
    }
    assert_eq!(
        rsp.ask("?").get(..3),
        Some("T05"),
        "the server still answers"
    );
    let peak = peak_rss_kib(server.id());
    drop(rsp);
    interrupt(&server);
    let out = wait_with_timeout(server, "deja replay -s", Duration::from_secs(60));
    let err = stderr_str(&out);
    assert!(!err.contains("panicked"), "{err}");
    eprintln!(
        "{iters} packets: {answered} answered, {closed} closed the connection; peak {peak} KiB"
    );
    assert!(answered > 0);
    assert!(peak < 512 * 1024, "the server held {peak} KiB");
}

#[test]
fn listening_beyond_loopback_warns_and_once_ends_with_the_first_gdb() {
    let ctx = Ctx::new();
    let (trace, _) = ctx.record(program("exit3"), &[]);
    let port = free_port();
    let server = spawn_captured(ctx.deja().arg("replay").arg(&trace).args([
        "-s",
        &port.to_string(),
        "--once",
        "--host",
        "0.0.0.0",
    ]));
    let mut rsp = Rsp::connect(port);
    assert_eq!(rsp.ask("?").get(..3), Some("T05"));
    drop(rsp);
    let out = wait_with_timeout(server, "deja replay -s --once", Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        describe("deja replay -s --once", &out)
    );
    let err = stderr_str(&out);
    assert!(
        err.contains("grants code execution to anyone who can connect"),
        "{err}"
    );
    assert!(err.contains("to one gdb"), "{err}");
}

#[test]
fn watching_an_object_larger_than_the_debug_registers_falls_back_to_software() {
    if installed("gdb").is_none() {
        return;
    }
    let ctx = Ctx::new();
    let (trace, rec) = ctx.record(built_once("bigwatch", &["-g", "-O0"], "bigwatch"), &[]);
    assert!(rec.status.success(), "{}", describe("rec", &rec));
    let out = gdb_batch(
        &ctx,
        &trace,
        &[],
        &[
            "break main",
            "continue",
            "watch -l big",
            "continue",
            "continue",
        ],
    );
    let all = text(&out);
    // A software watchpoint (gdb never asks the server for 4 KiB of debug registers), which
    // sees the recorded writes.
    assert_has(&all, "Watchpoint 2: -location big");
    assert!(!all.contains("Hardware watchpoint 2"), "{all}");
    assert!(!all.contains("Could not insert"), "{all}");
    assert_has(&all, "Old value = '\\000' <repeats 4095 times>");
}
