//! Rewriting a trace with `TraceWriter`, for tests that tamper with one event.

use std::path::Path;

use trace_format::{Data, Event, MemWrite, TraceReader, TraceWriter};

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
        | Event::Patch(_) => Vec::new(),
    }
}

/// Writes a copy of the trace `src` into the new directory `dst` with `TraceWriter`, after
/// `edit` has seen (and possibly changed) each event with its index: same metadata, same
/// stored files, blobs copied into the new blob file.
pub fn rewrite_trace(src: &Path, dst: &Path, mut edit: impl FnMut(usize, &mut Event)) {
    let reader = TraceReader::open(src).expect("open the trace to rewrite");
    let meta = reader.meta().clone();
    let exit = meta.exit.expect("the trace to rewrite is complete");
    let mut writer = TraceWriter::create(dst, &meta).expect("create the rewritten trace");
    for (file, _how) in reader.stored_files().expect("list the stored files") {
        let path = reader.file_path(&file).expect("a stored file");
        let stored = writer
            .store_file(&path, &file.path)
            .expect("store a file in the rewritten trace");
        assert_eq!(stored.hash, file.hash, "a stored file changed its hash");
    }
    for (i, ev) in reader.events().expect("read the events").enumerate() {
        let mut ev = ev.expect("read an event");
        for w in writes_mut(&mut ev) {
            if matches!(w.data, Data::Blob { .. }) {
                let bytes = reader.read_data(&w.data).expect("read a blob");
                w.data = writer.data(&bytes).expect("write a blob");
            }
        }
        if let Event::Buffered(b) = &mut ev {
            if matches!(b.records, Data::Blob { .. }) {
                let bytes = reader.read_data(&b.records).expect("read a blob");
                b.records = writer.data(&bytes).expect("write a blob");
            }
        }
        edit(i, &mut ev);
        writer.push(ev).expect("write an event");
    }
    writer.finish(exit).expect("finish the rewritten trace");
}
