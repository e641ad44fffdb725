//! The trace root and the file store: stored copies, links to system files, the pool shared
//! between traces, and the verification of stored files.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use trace_format::*;

mod common;
use common::*;

fn files_in_store(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn file_store_dedups_and_copies() {
    let (tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let x = tmp.path().join("x");
    fs::write(&a, b"same content").unwrap();
    fs::write(&b, b"same content").unwrap();
    fs::write(&x, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&x, fs::Permissions::from_mode(0o755)).unwrap();

    let ra = w.store_file(&a, "/home/u/a").unwrap();
    let rb = w.store_file(&b, "/home/u/b").unwrap();
    let ra2 = w.store_file(&a, "/home/u/a").unwrap();
    assert_eq!(ra.hash, blake3::hash(b"same content").to_hex().to_string());
    assert_eq!(ra.hash, rb.hash);
    assert_eq!(ra, ra2);
    assert_eq!(rb.path, "/home/u/b");
    assert_eq!(ra.size, 12);
    let rx = w.store_file(&x, "/home/u/x").unwrap();
    assert_eq!(files_in_store(&dir), {
        let mut v = vec![ra.hash.clone(), rx.hash.clone()];
        v.sort();
        v
    });

    // /proc links are copied.
    let open = fs::File::open(&b).unwrap();
    use std::os::fd::AsRawFd;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", open.as_raw_fd()));
    assert_eq!(w.store_file(&fd_path, "/home/u/b").unwrap().hash, ra.hash);
    let exe = w
        .store_file(Path::new("/proc/self/exe"), "test-exe")
        .unwrap();
    assert!(w.store_file(tmp.path(), "/dir").is_err());
    assert!(w.store_file(&tmp.path().join("nope"), "/nope").is_err());
    let meta = w.finish(ExitStatus::Exited(0)).unwrap();

    let r = TraceReader::open(&dir).unwrap();
    let stored = r.stored_files().unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|(_, how)| how == "copy"));
    assert_eq!(stored[0].0, ra);
    assert_eq!(
        meta.files_bytes,
        stored.iter().map(|(f, _)| f.size).sum::<u64>()
    );
    let pa = r.file_path(&ra).unwrap();
    assert_eq!(fs::read(&pa).unwrap(), b"same content");
    assert_ne!(
        fs::metadata(&pa).unwrap().ino(),
        fs::metadata(&a).unwrap().ino()
    );
    assert_eq!(mode(&pa), 0o600);
    assert_eq!(mode(&r.file_path(&rx).unwrap()), 0o700);
    let pe = r.file_path(&exe).unwrap();
    assert_eq!(fs::read(pe).unwrap(), fs::read("/proc/self/exe").unwrap());
    // Missing, resized or ill-named files are errors.
    let mut bad = ra.clone();
    bad.size += 1;
    assert!(r.file_path(&bad).is_err());
    bad = ra.clone();
    bad.hash = "../../etc/passwd".into();
    assert!(r.file_path(&bad).is_err());
    fs::remove_file(&pa).unwrap();
    assert!(matches!(r.file_path(&ra), Err(TraceError::Corrupt { .. })));
}

#[test]
fn a_stored_file_is_verified_against_its_hash_and_never_followed() {
    let (tmp, dir) = trace_dir();
    let src = tmp.path().join("prog");
    fs::write(&src, b"what time is it").unwrap();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let f = w.store_file(&src, "/usr/bin/prog").unwrap();
    w.finish(ExitStatus::Exited(0)).unwrap();
    let p = dir.join("files").join(&f.hash);
    let mut r = TraceReader::open(&dir).unwrap();
    r.set_verify_cache(None);
    let (_, path) = r.open_file(&f).unwrap();
    assert_eq!(path, p);

    // One byte changed, same size.
    let mut bytes = fs::read(&p).unwrap();
    bytes[5..9].copy_from_slice(b"TIME");
    fs::remove_file(&p).unwrap();
    fs::write(&p, &bytes).unwrap();
    let mut r = TraceReader::open(&dir).unwrap();
    r.set_verify_cache(None);
    assert_eq!(
        r.file_path(&f).unwrap_err().to_string(),
        format!(
            "corrupt trace {}: the stored copy of /usr/bin/prog does not match its hash",
            dir.display()
        )
    );

    // A symlink, even to a file with the right content, is refused.
    fs::write(tmp.path().join("good"), b"what time is it").unwrap();
    fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("good"), &p).unwrap();
    assert_eq!(
        r.file_path(&f).unwrap_err().to_string(),
        format!(
            "corrupt trace {}: the stored copy of /usr/bin/prog is a symlink",
            dir.display()
        )
    );

    // The trace directory itself may be reached through a symlink (`latest-trace` is one).
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let r = TraceReader::open(&link).unwrap();
    assert_eq!(r.meta().exit, Some(ExitStatus::Exited(0)));

    // So are symlinked data files.
    let events = dir.join("events");
    fs::rename(&events, tmp.path().join("events")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("events"), &events).unwrap();
    let err = TraceReader::open(&dir).unwrap_err().to_string();
    assert!(err.ends_with(": the events file is a symlink"), "{err}");
    fs::remove_file(&events).unwrap();
    fs::rename(tmp.path().join("events"), &events).unwrap();
    let index = dir.join("index.sqlite");
    fs::rename(&index, tmp.path().join("index.sqlite")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("index.sqlite"), &index).unwrap();
    let err = TraceReader::open(&dir).unwrap_err().to_string();
    assert!(err.ends_with(": the index is a symlink"), "{err}");
}

/// A regular file under a system prefix, found through a symlink when possible.
fn system_file() -> Option<PathBuf> {
    [
        "/lib64/ld-linux-x86-64.so.2",
        "/usr/bin/env",
        "/bin/sh",
        "/usr/bin/true",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| fs::metadata(p).map(|m| m.is_file()).unwrap_or(false))
}

#[test]
fn file_store_links_system_files_when_it_can() {
    let Some(src) = system_file() else {
        eprintln!("no system file to test with");
        return;
    };
    let (_tmp, dir) = trace_dir();
    let mut w = TraceWriter::create(&dir, &meta()).unwrap();
    let f = w.store_file(&src, &src.to_string_lossy()).unwrap();
    let again = w.store_file(&src, "/other/name").unwrap();
    assert_eq!(again.hash, f.hash);
    w.finish(ExitStatus::Exited(0)).unwrap();
    let r = TraceReader::open(&dir).unwrap();
    let stored = r.stored_files().unwrap();
    assert_eq!(stored.len(), 1);
    let p = r.file_path(&f).unwrap();
    let m = fs::symlink_metadata(&p).unwrap();
    assert!(m.is_file(), "stored file must not be a symlink");
    let linked = m.ino() == fs::metadata(&src).unwrap().ino();
    assert_eq!(stored[0].1, if linked { "link" } else { "copy" });
    assert_eq!(
        f.hash,
        blake3::hash(&fs::read(&src).unwrap()).to_hex().to_string()
    );
    eprintln!("{} stored as {}", src.display(), stored[0].1);
}

#[test]
fn root_names_traces_and_tracks_the_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().join("root");
    let root = TraceRoot::open(&root_dir).unwrap();
    assert_eq!(mode(&root_dir), 0o700);
    assert_eq!(root.path(), root_dir);
    let err = root.latest().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no traces yet in {}; record one with `deja rec PROG`",
            root_dir.display()
        )
    );
    assert!(matches!(
        root.resolve(None),
        Err(TraceError::NoTraces { .. })
    ));

    let d0 = root.new_trace_dir("/usr/bin/ls").unwrap();
    let d1 = root.new_trace_dir("ls").unwrap();
    let odd = root.new_trace_dir("../we ird/").unwrap();
    assert_eq!(d0, root_dir.join("ls-0"));
    assert_eq!(d1, root_dir.join("ls-1"));
    assert_eq!(odd, root_dir.join("we_ird-0"));
    assert_eq!(mode(&d0), 0o700);

    for (d, t) in [(&d1, 200), (&d0, 100)] {
        let m = TraceMeta {
            start_time_unix: t,
            ..meta()
        };
        TraceWriter::create(d, &m)
            .unwrap()
            .finish(ExitStatus::Exited(0))
            .unwrap();
        root.set_latest(d).unwrap();
    }
    assert_eq!(root.latest().unwrap(), d0);
    assert_eq!(
        fs::read_link(root_dir.join(LATEST_LINK)).unwrap(),
        PathBuf::from("ls-0")
    );
    root.set_latest(&d1).unwrap();
    assert_eq!(root.latest().unwrap(), d1);
    assert_eq!(root.resolve(None).unwrap(), d1);
    assert_eq!(root.resolve(Some("ls-0")).unwrap(), d0);
    assert_eq!(root.resolve(Some(&d0.to_string_lossy())).unwrap(), d0);
    let err = root.resolve(Some("nope")).unwrap_err();
    assert!(matches!(err, TraceError::TraceNotFound { .. }));
    assert!(err.to_string().contains("\"nope\""), "{err}");

    let list = root.list().unwrap();
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    // we_ird-0 is not a trace: it sorts by its mtime (now), after the 1970s traces.
    assert_eq!(names, ["ls-0", "ls-1", "we_ird-0"]);
    assert_eq!(list[0].meta.as_ref().unwrap().start_time_unix, 100);
    assert!(list[2]
        .meta
        .as_ref()
        .unwrap_err()
        .contains("not a deja trace"));

    // A trace outside the root is linked absolutely.
    let outside = tmp.path().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    root.set_latest(&outside).unwrap();
    assert_eq!(root.latest().unwrap(), outside);
    fs::remove_dir(&outside).unwrap();
    assert!(matches!(
        root.latest(),
        Err(TraceError::LatestMissing { .. })
    ));
    // No temporary links are left behind.
    assert_eq!(fs::read_dir(&root_dir).unwrap().count(), 4);
}

#[test]
fn handles_are_send() {
    fn send<T: Send>() {}
    send::<TraceWriter>();
    send::<TraceReader>();
    send::<EventIter>();
    send::<TraceError>();
    fn sync<T: Sync>() {}
    sync::<TraceError>();
}

/// A root's file pool: a file stored by one trace, unchanged for a while, is linked into the
/// next trace from the pool (same content, same hash, not hashed again); a file changed just
/// now is never taken from it.
#[test]
fn file_pool_shares_settled_files_between_traces() {
    // A file of this crate: copied (not a system file), unchanged since the checkout.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let tmp = tempfile::tempdir().unwrap();
    let pool = trace_format::pool::Pool::open(&tmp.path().join(".pool")).unwrap();
    let fresh = tmp.path().join("fresh.bin");
    fs::write(&fresh, b"written just now").unwrap();
    let mut hows = Vec::new();
    let mut hashes = Vec::new();
    for n in 0..2 {
        let dir = tmp.path().join(format!("t{n}"));
        let mut w = TraceWriter::create(&dir, &meta()).unwrap();
        w.use_pool(pool.clone());
        let f = w.store_file(&src, &src.to_string_lossy()).unwrap();
        let g = w.store_file(&fresh, "/fresh").unwrap();
        hashes.push((f.hash.clone(), g.hash.clone()));
        w.finish(ExitStatus::Exited(0)).unwrap();
        let r = TraceReader::open(&dir).unwrap();
        let stored = r.stored_files().unwrap();
        let how = |h: &str| stored.iter().find(|(f, _)| f.hash == h).unwrap().1.clone();
        hows.push((how(&f.hash), how(&g.hash)));
        assert_eq!(
            fs::read(r.file_path(&f).unwrap()).unwrap(),
            fs::read(&src).unwrap()
        );
    }
    assert_eq!(hashes[0], hashes[1]);
    assert_eq!(hows[1].0, "pool", "{hows:?}");
    assert_eq!(
        hows[1].1, "copy",
        "a file changed less than 2 s ago: {hows:?}"
    );
}

/// A trace made with a pool takes its reserve from the pool and parks it there again at the
/// end (renamed both ways: no block allocated or freed); at most one is parked, and a reserve
/// that is not whole is not taken.
#[test]
fn the_reserve_is_parked_in_the_pool_between_recordings() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = trace_format::pool::Pool::open(&tmp.path().join(".pool")).unwrap();
    let parked = pool.reserve_path();
    let create = |n: &str| {
        TraceWriter::create_completing(&tmp.path().join(n), &meta(), Some(pool.clone()), |_| {})
            .unwrap()
    };
    let reserve = |n: &str| tmp.path().join(n).join(".reserve");

    // The first recording allocates its reserve and parks it.
    let w = create("t0");
    let ino = fs::metadata(reserve("t0")).unwrap().ino();
    assert!(!parked.exists());
    w.finish(ExitStatus::Exited(0)).unwrap();
    assert!(!reserve("t0").exists());
    assert_eq!(fs::metadata(&parked).unwrap().ino(), ino);
    assert_eq!(fs::metadata(&parked).unwrap().len(), 640 * 1024);

    // The next takes it; one made meanwhile allocates its own, and of the two at the end,
    // one is parked and the other deleted.
    let w1 = create("t1");
    assert_eq!(fs::metadata(reserve("t1")).unwrap().ino(), ino);
    assert!(!parked.exists());
    let w2 = create("t2");
    assert_ne!(fs::metadata(reserve("t2")).unwrap().ino(), ino);
    w1.finish(ExitStatus::Exited(0)).unwrap();
    w2.finish(ExitStatus::Exited(0)).unwrap();
    assert_eq!(fs::metadata(&parked).unwrap().ino(), ino);
    for t in ["t0", "t1", "t2"] {
        assert!(!reserve(t).exists());
        let r = TraceReader::open(&tmp.path().join(t)).unwrap();
        assert!(r.meta().complete);
    }

    // A parked reserve cut short is not taken (nor kept).
    fs::OpenOptions::new()
        .write(true)
        .open(&parked)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let w = create("t3");
    // A new one, whole (the inode number may be the freed one's again).
    let m = fs::metadata(reserve("t3")).unwrap();
    assert_eq!(m.len(), 640 * 1024);
    assert!(m.blocks() * 512 >= 640 * 1024);
    assert!(!parked.exists());
    w.finish(ExitStatus::Exited(0)).unwrap();
    assert!(parked.exists());
}
