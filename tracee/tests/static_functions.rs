//! Function bounds in modules without `PT_GNU_EH_FRAME`: a statically linked program (its
//! glibc `read` and `getpid`, whose syscall sites the patcher must accept) and a PIE linked
//! with `--no-eh-frame-hdr` (a load bias to apply), found from the `.eh_frame` section named
//! by the file's section headers.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use nix::unistd::Pid;
use tracee::functions::{function_bounds, function_fde, function_fde_and_padding, padding_end};
use tracee::maps::MapEntry;
use tracee::patch::{plan, stub_page_near};

/// Builds `tests/programs/static_reads.c` with `flags` into `name`; `None` (with a note) when
/// gcc cannot (no static libc installed).
fn build(name: &str, flags: &[&str]) -> Option<PathBuf> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/static_reads.c");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let out = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&path)
        .args(flags)
        .arg(src)
        .output()
        .expect("running gcc");
    if !out.status.success() {
        eprintln!(
            "note: gcc {flags:?} failed, skipping: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(path)
}

/// The symbol table of `path` (by `nm`), addresses as in the file.
fn symbols(path: &Path) -> HashMap<String, u64> {
    let nm = Command::new("nm").arg(path).output().expect("running nm");
    assert!(nm.status.success(), "nm {}", path.display());
    String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let _kind = f.next()?;
            Some((f.next()?.to_string(), addr))
        })
        .collect()
}

/// Whether the program headers of `path` have a `PT_GNU_EH_FRAME`.
fn has_eh_frame_hdr(path: &Path) -> bool {
    let out = Command::new("readelf")
        .args(["-lW"])
        .arg(path)
        .output()
        .expect("running readelf");
    String::from_utf8_lossy(&out.stdout).contains("GNU_EH_FRAME")
}

/// The program running, blocked in its first read of stdin; killed on drop.
struct Running(Child);

impl Running {
    fn start(path: &Path) -> Running {
        let child = Command::new(path)
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting the program");
        let p = Running(child);
        // `spawn` may return as soon as the exec has replaced the address space, before the
        // program is mapped: wait for it to sleep in its read.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid()))
                .expect("the program's stat");
            let state = stat.rsplit_once(") ").map(|(_, s)| &s[..1]);
            if state == Some("S") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the program never blocked: {stat}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        p
    }
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
    fn maps(&self) -> Vec<MapEntry> {
        tracee::maps::read(self.pid()).expect("the program's maps")
    }
    fn reader(&self) -> impl Fn(u64, &mut [u8]) -> bool {
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid())).expect("its memory");
        move |a, b| mem.read_exact_at(b, a).is_ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn decode(code: &[u8], ip: u64) -> Vec<Instruction> {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .collect()
}

/// Whether `i` sets `eax` to `nr` (`mov eax, imm` or `xor eax, eax`).
fn sets_eax(i: &Instruction, nr: u64) -> bool {
    match i.mnemonic() {
        Mnemonic::Mov => {
            matches!(i.op0_register(), Register::EAX | Register::RAX)
                && matches!(
                    i.op1_kind(),
                    OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64
                )
                && i.immediate(1) == nr
        }
        Mnemonic::Xor => {
            nr == 0 && i.op0_register() == Register::EAX && i.op1_register() == Register::EAX
        }
        _ => false,
    }
}

/// Checks the bounds found for the function at `sym` (in memory) contain it, agree between
/// `/proc/PID/map_files` and the path, and that `plan` accepts a `syscall` site of it making
/// syscall `nr` (as the recorder would: the FDE, without LSDA, extended over its padding).
fn check_function(p: &Running, name: &str, sym: u64, nr: u64) {
    let maps = p.maps();
    let read = p.reader();
    let pid = Some(p.pid());
    let fde = function_fde(pid, &read, &maps, sym)
        .unwrap_or_else(|| panic!("no FDE found for {name} at {sym:#x}"));
    assert!(
        fde.start <= sym && sym < fde.end && fde.end - fde.start < 4096,
        "{name} at {sym:#x}: {fde:x?}"
    );
    assert_eq!(fde.lsda, None, "{name}");
    // By path (checked by device and inode), and from any address of the function.
    assert_eq!(function_fde(None, &read, &maps, sym), Some(fde));
    assert_eq!(
        function_bounds(pid, &read, &maps, fde.end - 1),
        Some((fde.start, fde.end))
    );
    if nr == u64::MAX {
        return;
    }
    let end = padding_end(pid, &read, &maps, fde.end);
    assert!(end >= fde.end && end - fde.end < 64, "{name}: {end:#x}");
    // The one-lookup form the recorder uses answers as the two calls.
    assert_eq!(
        function_fde_and_padding(pid, &read, &maps, sym),
        Some((fde, end))
    );
    let mut code = vec![0u8; (end - fde.start) as usize];
    assert!(read(fde.start, &mut code));
    let insns = decode(&code, fde.start);
    let sites: Vec<u64> = insns
        .windows(2)
        .filter(|w| w[1].mnemonic() == Mnemonic::Syscall && sets_eax(&w[0], nr))
        .map(|w| w[1].ip())
        .collect();
    assert!(!sites.is_empty(), "no syscall {nr} site in {name}");
    let stub = stub_page_near(&maps, fde.start).expect("a stub page");
    plan(fde.start, &code, sites[0], nr, stub, stub + 0x800)
        .unwrap_or_else(|e| panic!("{name}'s site {:#x} refused: {e}", sites[0]));
}

#[test]
fn static_program_functions_have_bounds_and_plannable_sites() {
    let Some(path) = build("static-reads", &["-static"]) else {
        return;
    };
    assert!(
        !has_eh_frame_hdr(&path),
        "a static binary with PT_GNU_EH_FRAME: this test checks the other case"
    );
    let syms = symbols(&path);
    let p = Running::start(&path);
    // Non-PIE: the symbols' addresses are the memory addresses.
    check_function(&p, "read", syms["read"], 0);
    check_function(&p, "getpid", syms["getpid"], 39);
    check_function(&p, "count_pids", syms["count_pids"], u64::MAX);
    // Nothing for memory outside modules.
    let maps = p.maps();
    let heap = maps.iter().find(|m| m.name == "[heap]" || m.inode == 0);
    if let Some(h) = heap {
        assert_eq!(
            function_bounds(Some(p.pid()), &p.reader(), &maps, h.start),
            None
        );
    }
}

#[test]
fn pie_without_eh_frame_hdr_has_bounds_at_its_load_bias() {
    let Some(path) = build("pie-no-hdr", &["-pie", "-fPIE", "-Wl,--no-eh-frame-hdr"]) else {
        return;
    };
    if has_eh_frame_hdr(&path) {
        eprintln!("note: the linker ignored --no-eh-frame-hdr; skipping");
        return;
    }
    let syms = symbols(&path);
    let p = Running::start(&path);
    let maps = p.maps();
    let canon = std::fs::canonicalize(&path).expect("the program's path");
    let base = maps
        .iter()
        .filter(|m| Path::new(&m.name) == canon)
        .map(|m| m.start)
        .min()
        .expect("the program's mappings");
    // The lowest PT_LOAD of a PIE is at 0: the bias is its mapping's address.
    check_function(&p, "count_pids", base + syms["count_pids"], u64::MAX);
    check_function(&p, "main", base + syms["main"], u64::MAX);
}
