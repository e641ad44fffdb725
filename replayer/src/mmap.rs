//! Replaying `mmap`: the mapping is really created, at the recorded address; a file mapping is
//! rebuilt from the trace's copy of the file, so replay never depends on the file system.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use trace_format::{SyscallEvent, TraceReader};
use tracee::Tracee;

/// The arguments to run in place of the recorded `mmap`: an anonymous mapping at the recorded
/// address (the file contents are written in afterwards by [`fill_from_file`]).
pub fn replacement_args(ev: &SyscallEvent) -> [u64; 6] {
    let [_, len, prot, flags, fd, off] = ev.args;
    let addr = ev.result as u64;
    let mut flags = flags as i32;
    let fixed = if flags & libc::MAP_FIXED != 0 {
        libc::MAP_FIXED
    } else {
        libc::MAP_FIXED_NOREPLACE
    };
    flags &= !(libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE);
    if ev.mapped_file.is_some() {
        // A writable shared file mapping becomes shared anonymous memory, which stays shared
        // with the children the process forks afterwards, as the file mapping was. Any other
        // becomes private (the kernel refuses to fill a read-only shared mapping through
        // /proc/PID/mem, and nothing can write to it anyway).
        let writable_shared = flags & libc::MAP_SHARED != 0 && prot & libc::PROT_WRITE as u64 != 0;
        flags &= !0x3;
        flags |= libc::MAP_ANONYMOUS;
        flags |= if writable_shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        flags &= !(libc::MAP_POPULATE | libc::MAP_SYNC);
        return [addr, len, prot, (flags | fixed) as u64, u64::MAX, 0];
    }
    [addr, len, prot, (flags | fixed) as u64, fd, off]
}

/// Writes the recorded file's bytes into the fresh mapping made by [`replacement_args`].
pub fn fill_from_file(tracee: &Tracee, reader: &TraceReader, ev: &SyscallEvent) -> Result<()> {
    let Some(file) = &ev.mapped_file else {
        return Ok(());
    };
    let path = reader.file_path(file)?;
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // The mapping covers whole pages: the file's bytes past `len` up to the end of the last
    // page are mapped too (rr's syscall_in_writable_mem maps 2 bytes and runs the third).
    let page = 4096;
    let (len, offset) = (ev.args[1].div_ceil(page) * page, ev.args[5]);
    let avail = file.size.saturating_sub(offset).min(len);
    let mut buf = vec![0u8; avail as usize];
    f.read_exact_at(&mut buf, offset)
        .with_context(|| format!("reading the trace's copy of {}", file.path))?;
    tracee.write_mem(ev.result as u64, &buf)
}
