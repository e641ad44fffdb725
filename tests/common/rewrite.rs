//! Rewriting a trace with `TraceWriter`, for tests that tamper with one event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use trace_format::{Data, Event, FileRef, MemWrite, TraceReader, TraceWriter};

/// Every [`MemWrite`] of an event, whose blobs must be copied into a rewritten trace.
pub fn writes_mut(ev: &mut Event) -> Vec<&mut MemWrite> {
    match ev {
        Event::Syscall(e) => e.writes.iter_mut().collect(),
        Event::Clone(e) => e.writes.iter_mut().collect(),
        Event::Start(e) => e.writes.iter_mut().collect(),
        Event::Exec(_)
        | Event::Buffered(_)
        | Event::Signal(_)
        | Event::Rdtsc(_)
        | Event::Cpuid(_)
        | Event::Exit(_)
        | Event::Preempt(_)
        | Event::Resume(_)
        | Event::Ptrace(_)
        | Event::Patch(_)
        | Event::Patches(_)
        | Event::Lane(_)
        | Event::BufferedMaps(_) => Vec::new(),
    }
}

/// Writes a copy of the trace `src` into the new directory `dst` with `TraceWriter`, after
/// `edit` has seen (and possibly changed) each event with its index: same metadata, same
/// stored files, blobs copied into the new blob file; sealed with the key of the trace root
/// `key_root`.
pub fn rewrite_trace(src: &Path, dst: &Path, key_root: &Path, edit: impl FnMut(usize, &mut Event)) {
    rewrite_trace_swapping(src, dst, key_root, |_| None, edit)
}

/// [`rewrite_trace`], with each stored file for which `swap` names a replacement stored as
/// that file instead (under its own hash), and every reference to it in the events changed
/// to the replacement (its hash and size; the recorded path stays).
pub fn rewrite_trace_swapping(
    src: &Path,
    dst: &Path,
    key_root: &Path,
    swap: impl Fn(&Path) -> Option<PathBuf>,
    mut edit: impl FnMut(usize, &mut Event),
) {
    let reader = TraceReader::open(src).expect("open the trace to rewrite");
    let meta = reader.meta().clone();
    let exit = meta.exit.expect("the trace to rewrite is complete");
    let mut writer = TraceWriter::create(dst, &meta).expect("create the rewritten trace");
    let mut swapped = HashMap::new();
    for (file, _how) in reader.stored_files().expect("list the stored files") {
        let path = reader.file_path(&file).expect("a stored file");
        if let Some(replacement) = swap(&path) {
            let stored = writer
                .store_file(&replacement, &file.path)
                .expect("store a replacement file in the rewritten trace");
            swapped.insert(file.hash.clone(), stored);
            continue;
        }
        let stored = writer
            .store_file(&path, &file.path)
            .expect("store a file in the rewritten trace");
        assert_eq!(stored.hash, file.hash, "a stored file changed its hash");
    }
    for (i, ev) in reader.events().expect("read the events").enumerate() {
        let mut ev = ev.expect("read an event");
        for d in ev.data_mut() {
            if matches!(d, Data::Blob { .. }) {
                let bytes = reader.read_data(d).expect("read a blob");
                *d = writer.data_vec(bytes);
            }
        }
        edit(i, &mut ev);
        if !swapped.is_empty() {
            let mut v = serde_json::to_value(&ev).expect("an event as JSON");
            swap_refs(&mut v, &swapped);
            ev = serde_json::from_value(v).expect("an event from JSON");
        }
        writer.push(ev).expect("write an event");
    }
    writer.finish(exit).expect("finish the rewritten trace");
    // Sealed with the key of the trace root `key_root` (the test's), as a forger who has the
    // user's key would: the replay then gets to the forged events themselves.
    let key = trace_format::seal::Key::of_user(key_root).expect("the test's sealing key");
    TraceReader::open(dst)
        .expect("open the rewritten trace")
        .reseal(&key)
        .expect("seal the rewritten trace");
}

/// Changes every `FileRef` (a JSON object with `hash`, `path` and `size`) in `v` whose hash
/// `swapped` maps to the replacement's hash and size.
fn swap_refs(v: &mut serde_json::Value, swapped: &HashMap<String, FileRef>) {
    match v {
        serde_json::Value::Object(o) => {
            let new = o
                .get("hash")
                .and_then(|h| h.as_str())
                .and_then(|h| swapped.get(h))
                .filter(|_| o.contains_key("size") && o.contains_key("path"));
            if let Some(new) = new {
                o.insert("hash".into(), new.hash.clone().into());
                o.insert("size".into(), new.size.into());
            }
            o.values_mut().for_each(|v| swap_refs(v, swapped));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| swap_refs(v, swapped)),
        _ => {}
    }
}
