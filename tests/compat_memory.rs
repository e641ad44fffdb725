//! Shared and remapped memory (issue 11's memory family): files mapped `MAP_SHARED` and changed
//! by `write(2)`, `mremap` and `madvise(MADV_DONTNEED)`, `/dev/zero` and memfd mappings, System
//! V shared memory, memory written through `/proc/PID/mem` and `process_vm_writev`, and huge
//! sparse files whose trace must stay small. Each program checks what it sees and exits non-zero
//! on a wrong value; each is recorded and must replay exactly (same output, exit 0).

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Records and replays `name` with a scratch file path as its argument (when `with_file`),
/// asserts a faithful replay in which every check of the program printed "ok".
fn replays_with_checks(name: &str, with_file: bool) -> Replayed {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let file = scratch.path().join("file");
    let file = file.to_str().expect("utf-8 path");
    let args: &[&str] = if with_file { &[file] } else { &[] };
    let r = assert_replays_exactly(program(name), args);
    let out = stdout_str(&r.rec);
    assert!(
        out.contains(": ok") && !out.contains("WRONG"),
        "{name}: a check failed in the recording\n{}",
        describe("rec", &r.rec)
    );
    r
}

/// Disk blocks (bytes) the files under `dir` use: holes cost nothing.
fn disk_usage(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

#[test]
fn a_write_to_a_shared_mapped_file_changes_its_mappings() {
    let r = replays_with_checks("shared_file_write", true);
    assert_stdout_has(
        "shared_file_write",
        &r.rec,
        &["pwrite shows in both mappings: ok", "signal 7 past the end"],
    );
    // The written file is listed as changing (the replay keeps a copy of it to change); the
    // program's libraries are not (the replay maps the trace's copies of them as they are).
    let info = r.ctx.info_json(&r.trace);
    let changing = info["changing_files"].as_array().expect("changing_files");
    assert_eq!(changing.len(), 1, "changing_files: {changing:?}");
}

#[test]
fn mremap_grows_and_moves_and_madvise_dontneed_drops_pages() {
    let r = replays_with_checks("remap_advise", true);
    assert_stdout_has(
        "remap_advise",
        &r.rec,
        &["DONTNEED on a private file mapping rereads the file: ok"],
    );
}

#[test]
fn dev_zero_and_memfd_mappings_replay() {
    let r = replays_with_checks("zero_memfd", false);
    assert_stdout_has("zero_memfd", &r.rec, &["memwritten / from child"]);
}

#[test]
fn system_v_shared_memory_replays() {
    let r = replays_with_checks("sysv_shm", false);
    assert_stdout_has("sysv_shm", &r.rec, &["the attachments alias: ok"]);
}

#[test]
fn writes_through_proc_mem_and_process_vm_writev_replay() {
    let r = replays_with_checks("remote_memory", false);
    assert_stdout_has("remote_memory", &r.rec, &["the child saw the write: ok"]);
}

#[test]
fn huge_sparse_files_are_stored_sparsely() {
    let r = replays_with_checks("sparse_maps", true);
    let used = disk_usage(&r.trace);
    assert!(
        used < 64 << 20,
        "the trace of a program mapping a 1 TiB memfd and a 64 GiB file uses {used} bytes"
    );
}
