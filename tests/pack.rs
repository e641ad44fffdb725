//! `deja pack` makes one self-contained file of a trace, which `replay`, `info`, `dump` and
//! `ps` accept as a TRACE and `deja unpack` turns back into a trace directory: it replays
//! after the original trace and program are gone, for another user (its digest given), and
//! with the system's libc and ELF interpreter hidden. A damaged pack, or one whose entries
//! would land outside the trace, is refused with one line.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Records a private copy of test program `name` (so that it can be deleted) in `ctx`; returns
/// the copy, the trace and the recording's output.
fn record_copy(ctx: &Ctx, name: &str) -> (PathBuf, PathBuf, Output) {
    let copy = ctx.fresh_path(name);
    fs::copy(program(name), &copy).expect("copy the test program");
    let (trace, rec) = ctx.record(&copy, &[]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    (copy, trace, rec)
}

/// `deja pack TRACE -o FILE`: asserts it succeeds and returns the digest it printed.
fn pack(ctx: &Ctx, trace: &Path, file: &Path) -> String {
    let out = ctx.run_deja(&[
        OsStr::new("pack"),
        trace.as_os_str(),
        OsStr::new("-o"),
        file.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", describe("pack", &out));
    assert!(file.is_file(), "{}", describe("pack", &out));
    let err = stderr_str(&out);
    let digest = err
        .lines()
        .find_map(|l| l.strip_prefix("deja: the trace's digest is "))
        .unwrap_or_else(|| panic!("pack printed no digest\n{}", describe("pack", &out)))
        .to_string();
    assert_eq!(digest.len(), 64, "{}", describe("pack", &out));
    digest
}

/// `deja replay -a --digest DIGEST FILE` run by `ctx`.
fn replay_digest(ctx: &Ctx, file: &Path, digest: &str) -> Output {
    let out = ctx.run_deja(&[
        OsStr::new("replay"),
        OsStr::new("-a"),
        OsStr::new("--digest"),
        OsStr::new(digest),
        file.as_os_str(),
    ]);
    assert_no_panic("replay of a pack", &out);
    out
}

/// The trace directories unpacked into `ctx`'s cache.
fn cached(ctx: &Ctx) -> Vec<PathBuf> {
    let dir = ctx.trace_root().join(".pool").join("unpacked");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    v
}

#[test]
fn a_pack_replays_for_another_user_after_the_trace_and_program_are_gone() {
    let ctx = Ctx::new();
    let (copy, trace, rec) = record_copy(&ctx, "time");
    let file = ctx.dir().join("time.deja");
    let digest = pack(&ctx, &trace, &file);
    // The pack holds real copies: it does not shrink when the trace (whose system files are
    // hard links) and the program are deleted.
    fs::remove_dir_all(&trace).unwrap();
    fs::remove_file(&copy).unwrap();

    // Another trace root is another user's: its key did not seal the trace.
    let other = Ctx::new();
    // A temporary directory left by an unpack that was killed is removed by the next one.
    let cache = other.trace_root().join(".pool").join("unpacked");
    fs::create_dir_all(cache.join(".tmp-0123-999999999")).unwrap();
    let refused = other.replay(&file);
    assert_ne!(
        shell_code(&refused.status),
        0,
        "{}",
        describe("replay", &refused)
    );
    assert_stderr_mentions("replay", &refused, &["sealed by another user"]);
    let named = format!("deja: {} was sealed by another user", file.display());
    assert!(
        stderr_str(&refused).starts_with(&named),
        "{}",
        describe("replay", &refused)
    );
    assert!(
        stderr_str(&refused).contains(&digest),
        "{}",
        describe("replay", &refused)
    );

    let out = replay_digest(&other, &file, &digest);
    assert_replay_matches(&rec, &out);
    // Unpacked once, into the cache: a second replay reuses it.
    assert_eq!(cached(&other).len(), 1, "{:?}", cached(&other));
    assert!(!cache.join(".tmp-0123-999999999").exists());
    let out = replay_digest(&other, &file, &digest);
    assert_replay_matches(&rec, &out);
    assert_eq!(cached(&other).len(), 1, "{:?}", cached(&other));

    // A wrong digest is refused.
    let wrong = format!(
        "{}{}",
        &digest[..63],
        if digest.ends_with('0') { '1' } else { '0' }
    );
    let out = replay_digest(&other, &file, &wrong);
    assert_ne!(shell_code(&out.status), 0, "{}", describe("replay", &out));
    assert_one_line_error("replay with a wrong digest", &out);

    // `deja unpack FILE DIR` makes a trace directory that replays the same.
    let dir = other.dir().join("unpacked");
    let out = other.run_deja(&[OsStr::new("unpack"), file.as_os_str(), dir.as_os_str()]);
    assert!(out.status.success(), "{}", describe("unpack", &out));
    assert_eq!(stdout_str(&out).trim(), dir.display().to_string());
    let out = replay_digest(&other, &dir, &digest);
    assert_replay_matches(&rec, &out);
    // Without DIR: a new trace in the root, named after the packed trace's program.
    let out = other.run_deja(&[OsStr::new("unpack"), file.as_os_str()]);
    assert!(out.status.success(), "{}", describe("unpack", &out));
    let made = PathBuf::from(stdout_str(&out).trim());
    assert_eq!(made.parent(), Some(other.trace_root().as_path()));
    assert!(
        made.join("index.sqlite").is_file(),
        "{}",
        describe("unpack", &out)
    );
    // No file of the unpacked trace is a hard link to anything.
    use std::os::unix::fs::MetadataExt;
    for e in fs::read_dir(made.join("files")).unwrap().flatten() {
        assert_eq!(e.metadata().unwrap().nlink(), 1, "{}", e.path().display());
    }
}

#[test]
fn info_dump_and_ps_read_a_pack() {
    let ctx = Ctx::new();
    let (_copy, trace, _rec) = record_copy(&ctx, "fork_exec");
    let file = ctx.dir().join("fork_exec.deja");
    let digest = pack(&ctx, &trace, &file);
    let info = ctx.info_json(&trace);
    let packed = ctx.info_json(&file);
    assert_eq!(packed["digest"], info["digest"]);
    assert_eq!(packed["digest"].as_str(), Some(digest.as_str()));
    assert_eq!(packed["event_count"], info["event_count"]);
    for cmd in ["dump", "ps"] {
        let a = ctx.run_deja(&[OsStr::new(cmd), trace.as_os_str()]);
        let b = ctx.run_deja(&[OsStr::new(cmd), file.as_os_str()]);
        assert!(
            a.status.success() && b.status.success(),
            "{}",
            describe(cmd, &b)
        );
        assert_eq!(
            stdout_str(&a),
            stdout_str(&b),
            "{cmd} of the trace and of its pack"
        );
    }
    assert_eq!(ctx.ps(&file).len(), ctx.ps(&trace).len());
}

/// The files the dynamic loader and libc are loaded from on this system.
fn system_loader_files() -> Vec<PathBuf> {
    [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect()
}

/// A directory with copies of the loader and every library `deja` needs (as `ldd` lists
/// them), and the command prefix that runs `deja` from them: `<dir>/ld.so --library-path
/// <dir>`, so deja itself runs while the system's copies are hidden.
fn private_loader(ctx: &Ctx) -> (PathBuf, Vec<PathBuf>) {
    let dir = ctx.dir().join("libs");
    fs::create_dir_all(&dir).unwrap();
    let out = Command::new("ldd")
        .arg(deja_bin())
        .output()
        .expect("run ldd");
    let mut loader = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let name = Path::new(path).file_name().unwrap();
        fs::copy(path, dir.join(name)).expect("copy a library");
        if name.to_string_lossy().starts_with("ld-linux") {
            loader = Some(dir.join(name));
        }
    }
    let loader = loader.expect("ldd names deja's loader");
    (dir.clone(), vec![loader, "--library-path".into(), dir])
}

#[test]
fn a_pack_replays_with_the_system_libc_and_loader_hidden() {
    let ctx = Ctx::new();
    let (copy, trace, rec) = record_copy(&ctx, "fork_exec");
    let file = ctx.dir().join("fork_exec.deja");
    let digest = pack(&ctx, &trace, &file);
    fs::remove_dir_all(&trace).unwrap();
    fs::remove_file(&copy).unwrap();
    let hide = build_program("hide_libs", &["-static"], "hide_libs");
    let garbage = ctx.dir().join("garbage");
    fs::write(&garbage, b"not a library\n").unwrap();
    let (_libs, prefix) = private_loader(&ctx);
    let other = Ctx::new();
    let hidden = system_loader_files();
    if hidden.len() != 2 {
        eprintln!("skipped: no Debian-style glibc here ({hidden:?}) to hide");
        return;
    }

    // First, that the namespace hides them: a dynamically linked program cannot start there.
    let mut probe = Command::new(&hide);
    probe.arg(&garbage).args(&hidden).arg("--").arg("/bin/true");
    let out = run_with_timeout(&mut probe, TIMEOUT);
    if shell_code(&out.status) == 77 {
        // Unprivileged user namespaces disabled (sysctl, AppArmor): deja's own replay then
        // needs the system's loader to be the recorded one.
        eprintln!(
            "skipped: no private mount namespace here (needed to hide the system's libc and \
             loader)\n{}",
            describe("hide_libs", &out)
        );
        return;
    }
    assert_ne!(
        shell_code(&out.status),
        0,
        "{}",
        describe("hide_libs /bin/true", &out)
    );

    let mut cmd = Command::new(&hide);
    cmd.arg(&garbage)
        .args(&hidden)
        .arg("--")
        .args(&prefix)
        .arg(deja_bin())
        .args(["replay", "-a", "--digest", &digest])
        .arg(&file)
        .env("DEJA_TRACE_DIR", other.trace_root())
        .env("DEJA_LOG", "replayer=info");
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    // The replay ran the trace's copy of the loader, bind-mounted over the hidden one...
    assert!(
        stderr_str(&out).contains("the ELF interpreter changed since the recording"),
        "{}",
        describe("replay with the system's loader hidden", &out)
    );
    // ... and mapped the trace's libc: the hidden one is not a library at all.
    let logs_removed = Output {
        status: out.status,
        stdout: out.stdout.clone(),
        stderr: stderr_str(&out)
            .lines()
            .filter(|l| !l.contains("the ELF interpreter changed"))
            .flat_map(|l| [l.as_bytes(), b"\n"].concat())
            .collect(),
    };
    assert_replay_matches(&rec, &logs_removed);
}

/// `deja info FILE` fails with one line naming the pack.
fn assert_pack_refused(ctx: &Ctx, file: &Path, what: &str) -> Output {
    let out = ctx.run_deja(&[OsStr::new("info"), file.as_os_str()]);
    assert_ne!(shell_code(&out.status), 0, "{}", describe("info", &out));
    assert_one_line_error("info of a bad pack", &out);
    assert!(
        stderr_str(&out).contains(what),
        "expected {what:?}\n{}",
        describe("info", &out)
    );
    out
}

#[test]
fn a_damaged_pack_is_refused_with_one_line() {
    let ctx = Ctx::new();
    let (_copy, trace, _rec) = record_copy(&ctx, "time");
    let file = ctx.dir().join("time.deja");
    pack(&ctx, &trace, &file);
    let intact = fs::read(&file).unwrap();
    let damaged = ctx.dir().join("damaged.deja");
    let reader = Ctx::new();
    let want = format!("damaged pack {}", damaged.display());

    // Cut short, at several places.
    for cut in [intact.len() / 3, intact.len() / 2, intact.len() - 7] {
        fs::write(&damaged, &intact[..cut]).unwrap();
        assert_pack_refused(&reader, &damaged, &want);
    }
    // One byte changed (the zstd frame's checksum, or what it decodes to, tells).
    for at in [intact.len() / 4, intact.len() / 2, intact.len() * 3 / 4] {
        let mut bytes = intact.clone();
        bytes[at] ^= 0x40;
        fs::write(&damaged, &bytes).unwrap();
        assert_pack_refused(&reader, &damaged, &want);
    }
    // Nothing half-unpacked is left, not even a temporary directory.
    let cache = reader.trace_root().join(".pool").join("unpacked");
    let left: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // `replay` and `unpack` refuse it the same way.
    let out = reader.run_deja(&[OsStr::new("replay"), OsStr::new("-a"), damaged.as_os_str()]);
    assert_one_line_error("replay of a damaged pack", &out);
    let dest = reader.dir().join("dest");
    fs::create_dir(&dest).unwrap();
    let out = reader.run_deja(&[OsStr::new("unpack"), damaged.as_os_str(), dest.as_os_str()]);
    assert_one_line_error("unpack of a damaged pack", &out);
    assert!(
        stderr_str(&out).contains(&want),
        "{}",
        describe("unpack", &out)
    );
    // The empty directory given stays, emptied again.
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
    // A file that is not a pack at all.
    fs::write(&damaged, b"hello").unwrap();
    assert_pack_refused(
        &reader,
        &damaged,
        "is neither a trace directory nor a deja pack",
    );
    // The intact pack still reads.
    let out = reader.run_deja(&[OsStr::new("info"), file.as_os_str()]);
    assert!(out.status.success(), "{}", describe("info", &out));
}

/// A tar entry header with a raw `name` (the tar crate refuses to make such names itself).
fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_old();
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o600);
    if kind == tar::EntryType::Symlink {
        h.set_link_name("/etc/passwd").unwrap();
    }
    h.set_cksum();
    h
}

/// Writes a pack whose first entry is a valid manifest and whose second is `name` of `kind`.
fn evil_pack(path: &Path, name: &str, kind: tar::EntryType) {
    let f = fs::File::create(path).unwrap();
    let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
    let mut tar = tar::Builder::new(enc);
    let manifest = br#"{"deja_pack": 1, "name": "evil-0", "digest": null}"#;
    tar.append(
        &raw_header(
            "deja-pack.json",
            tar::EntryType::Regular,
            manifest.len() as u64,
        ),
        &manifest[..],
    )
    .unwrap();
    let body = b"owned\n";
    let size = if kind == tar::EntryType::Regular {
        body.len() as u64
    } else {
        0
    };
    tar.append(&raw_header(name, kind, size), &body[..size as usize])
        .unwrap();
    tar.into_inner().unwrap().flush().unwrap();
}

#[test]
fn unpack_refuses_entries_outside_the_trace_and_special_files() {
    let ctx = Ctx::new();
    let file = ctx.dir().join("evil.deja");
    let hash = "0".repeat(64);
    let cases: Vec<(String, tar::EntryType)> = vec![
        ("../escaped".into(), tar::EntryType::Regular),
        ("files/../../escaped".into(), tar::EntryType::Regular),
        (
            format!("{}/escaped", ctx.dir().display()),
            tar::EntryType::Regular,
        ),
        ("index.sqlite".into(), tar::EntryType::Symlink),
        (format!("files/{hash}"), tar::EntryType::Symlink),
        (format!("files/{hash}"), tar::EntryType::Link),
        (format!("files/{hash}"), tar::EntryType::Char),
        ("files".into(), tar::EntryType::Directory),
    ];
    for (name, kind) in cases {
        evil_pack(&file, &name, kind);
        let dest = ctx.dir().join("dest");
        let out = ctx.run_deja(&[OsStr::new("unpack"), file.as_os_str(), dest.as_os_str()]);
        let what = format!("{name:?} {kind:?}");
        assert_ne!(
            shell_code(&out.status),
            0,
            "{what}\n{}",
            describe("unpack", &out)
        );
        assert_one_line_error(&what, &out);
        assert_stderr_mentions(&what, &out, &["refused"]);
        assert!(!ctx.dir().join("escaped").exists(), "{what}");
        assert!(!dest.exists(), "{what}: the partial trace was not removed");
    }
}

/// Disk blocks (bytes) the files under `dir` use: holes cost nothing.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = fs::symlink_metadata(e.path()).unwrap();
        total += m.blocks() * 512;
        if m.is_dir() {
            total += disk_usage(&e.path());
        }
    }
    total
}

#[test]
fn a_pack_keeps_holes_as_holes() {
    // A 1 TiB memfd and a 64 GiB file, mapped: stored with holes, packed as their data only,
    // unpacked with the same holes (their hashes, which cover the extents, must match).
    let ctx = Ctx::new();
    let scratch = ctx.dir().join("scratch");
    let (trace, rec) = ctx.record(program("sparse_maps"), &[scratch.to_str().unwrap()]);
    assert_eq!(shell_code(&rec.status), 0, "{}", describe("rec", &rec));
    let file = ctx.dir().join("sparse.deja");
    let digest = pack(&ctx, &trace, &file);
    let size = fs::metadata(&file).unwrap().len();
    assert!(size < 16 << 20, "the pack takes {size} bytes");
    let other = Ctx::new();
    let out = replay_digest(&other, &file, &digest);
    assert_replay_matches(&rec, &out);
    let unpacked = cached(&other);
    assert_eq!(unpacked.len(), 1);
    let used = disk_usage(&unpacked[0]);
    assert!(used < 64 << 20, "the unpacked trace uses {used} bytes");
}

#[test]
fn unpack_refuses_an_entry_larger_than_the_free_space() {
    let ctx = Ctx::new();
    let file = ctx.dir().join("huge.deja");
    let f = fs::File::create(&file).unwrap();
    let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
    let mut tar = tar::Builder::new(enc);
    let manifest = br#"{"deja_pack": 1, "name": "huge-0", "digest": null}"#;
    tar.append(
        &raw_header(
            "deja-pack.json",
            tar::EntryType::Regular,
            manifest.len() as u64,
        ),
        &manifest[..],
    )
    .unwrap();
    // An entry that says it holds 1 PiB (a few bytes of the stream).
    tar.append(
        &raw_header("events", tar::EntryType::Regular, 1 << 50),
        &b""[..],
    )
    .unwrap();
    tar.into_inner().unwrap().flush().unwrap();
    let dest = ctx.dir().join("dest");
    let out = ctx.run_deja(&[OsStr::new("unpack"), file.as_os_str(), dest.as_os_str()]);
    assert_one_line_error("unpack of a 1 PiB entry", &out);
    assert_stderr_mentions("unpack", &out, &["not enough free space"]);
    assert!(!dest.exists());
}

#[test]
fn pack_names_its_file_after_the_trace_and_shows_progress_only_on_a_terminal() {
    let ctx = Ctx::new();
    let (_copy, trace, _rec) = record_copy(&ctx, "time");
    let name = trace.file_name().unwrap().to_string_lossy().into_owned();
    let out = run_with_timeout(
        ctx.deja().arg("pack").arg(&trace).current_dir(ctx.dir()),
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe("pack", &out));
    let file = ctx.dir().join(format!("{name}.deja"));
    assert!(file.is_file(), "{}", describe("pack", &out));
    assert!(
        !stderr_str(&out).contains("packing "),
        "{}",
        describe("pack", &out)
    );
    // Packs are reproducible: the same trace gives the same bytes.
    let again = ctx.dir().join("again.deja");
    pack(&ctx, &trace, &again);
    assert_eq!(fs::read(&file).unwrap(), fs::read(&again).unwrap());

    // Under a terminal (`script` gives the command one), a progress bar on stderr.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to make a terminal");
        return;
    }
    let cmd = format!(
        "{} pack {} -o {}",
        deja_bin().display(),
        trace.display(),
        ctx.dir().join("tty.deja").display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &cmd, "/dev/null"])
        .env("DEJA_TRACE_DIR", ctx.trace_root());
    let out = run_with_timeout(&mut script, TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        describe("script deja pack", &out)
    );
    assert!(
        stdout_str(&out).contains("deja: packing "),
        "{}",
        describe("script deja pack", &out)
    );
}

#[test]
fn a_recording_in_progress_is_not_packed_and_a_killed_one_is() {
    let ctx = Ctx::new();
    let trace = ctx.fresh_path("trace");
    let mut cmd = ctx.deja();
    cmd.arg("rec").arg("-o").arg(&trace).arg(program("slow"));
    let child = spawn_captured(&mut cmd);
    let pgid = child.id();
    let file = ctx.dir().join("slow.deja");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        let out = ctx.run_deja(&[
            OsStr::new("pack"),
            trace.as_os_str(),
            OsStr::new("-o"),
            file.as_os_str(),
        ]);
        // Refused while in progress, and once the program's first line is in the trace (a
        // recorder killed before it wrote any metadata leaves no trace to pack).
        if stderr_str(&out).contains("is still being recorded")
            && !ctx.stdout_writes(&trace).is_empty()
        {
            break out;
        }
        if std::time::Instant::now() > deadline {
            kill_group(pgid);
            panic!(
                "pack never said the recording is in progress\n{}",
                describe("pack", &out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_one_line_error("pack of a recording in progress", &refused);
    assert!(!file.exists());
    // Killed, the recording leaves an unfinished trace without a seal: it packs, and its
    // pack replays to where its events end.
    kill_group(pgid);
    let _ = wait_with_timeout(child, "deja rec slow", TIMEOUT);
    let out = ctx.run_deja(&[
        OsStr::new("pack"),
        trace.as_os_str(),
        OsStr::new("-o"),
        file.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", describe("pack", &out));
    assert_stderr_mentions("pack", &out, &["has no seal"]);
    let other = Ctx::new();
    let out = other.replay(&file);
    assert_deja_error("replay of a killed recording's pack", &out);
    assert_stderr_mentions("replay", &out, &["incomplete"]);
}

/// Compiles C `source` with gcc and `args` into `out`.
fn gcc(dir: &Path, source: &str, args: &[&str], out: &Path) {
    let src = dir.join("src.c");
    fs::write(&src, source).unwrap();
    let res = Command::new("gcc")
        .arg("-o")
        .arg(out)
        .arg(&src)
        .args(args)
        .output()
        .expect("run gcc");
    assert!(res.status.success(), "{}", describe("gcc", &res));
}

#[test]
fn a_pack_replays_after_the_programs_own_library_changed() {
    let ctx = Ctx::new();
    let lib = ctx.dir().join("libgreet.so");
    let greet = |word: &str| {
        format!(
            "#include <stdio.h>\nvoid greet(void) {{ printf(\"{word} from the library\\n\"); }}\n"
        )
    };
    gcc(ctx.dir(), &greet("hello"), &["-shared", "-fPIC"], &lib);
    let prog = ctx.dir().join("greeter");
    let rpath = format!("-Wl,-rpath,{}", ctx.dir().display());
    gcc(
        ctx.dir(),
        "void greet(void);\nint main(void) { greet(); return 0; }\n",
        &[&rpath, lib.to_str().unwrap()],
        &prog,
    );
    let (trace, rec) = ctx.record(&prog, &[]);
    assert_eq!(
        stdout_str(&rec),
        "hello from the library\n",
        "{}",
        describe("rec", &rec)
    );
    let file = ctx.dir().join("greeter.deja");
    let digest = pack(&ctx, &trace, &file);
    fs::remove_dir_all(&trace).unwrap();
    // The library rebuilt to say something else (as long as it was), then deleted.
    gcc(ctx.dir(), &greet("HELLO"), &["-shared", "-fPIC"], &lib);
    let native = run_native(&prog, &[]);
    assert_eq!(stdout_str(&native), "HELLO from the library\n");
    let other = Ctx::new();
    let out = replay_digest(&other, &file, &digest);
    assert_replay_matches(&rec, &out);
    fs::remove_file(&lib).unwrap();
    fs::remove_file(&prog).unwrap();
    let out = replay_digest(&other, &file, &digest);
    assert_replay_matches(&rec, &out);
}

#[test]
fn seeded_mutations_of_a_pack_are_refused_with_one_line() {
    // Flipped bits, cuts and random runs: each read of the mutated pack either works (never
    // seen: the zstd checksum covers every byte) or is refused with one line, never a panic.
    let ctx = Ctx::new();
    let (_copy, trace, _rec) = record_copy(&ctx, "time");
    let file = ctx.dir().join("time.deja");
    pack(&ctx, &trace, &file);
    let intact = fs::read(&file).unwrap();
    let iters: u64 = std::env::var("DEJA_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut state: u64 = std::env::var("DEJA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut next = move |n: usize| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as usize % n.max(1)
    };
    let mutated = ctx.dir().join("mutated.deja");
    let reader = Ctx::new();
    for i in 0..iters {
        let mut b = intact.clone();
        match i % 3 {
            0 => {
                for _ in 0..1 + next(4) {
                    let at = next(b.len());
                    b[at] ^= 1 << next(8);
                }
            }
            1 => b.truncate(next(b.len())),
            _ => {
                let at = next(b.len());
                let end = (at + 1 + next(64)).min(b.len());
                for x in &mut b[at..end] {
                    *x = next(256) as u8;
                }
            }
        }
        fs::write(&mutated, &b).unwrap();
        let out = reader.run_deja(&[OsStr::new("info"), mutated.as_os_str()]);
        assert_no_panic(&format!("info of mutation {i}"), &out);
        if !out.status.success() {
            assert_one_line_error(&format!("info of mutation {i}"), &out);
        }
    }
}
