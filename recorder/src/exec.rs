//! Capturing the program image at its exec stop.

use std::io::Read;

use anyhow::{bail, Context, Result};
use trace_format::{ExecEvent, Mapping, TraceWriter};
use tracee::{auxv, maps, regs, vdso, Tracee};

use crate::mapped_files::MappedFiles;

/// At the exec stop: makes the vDSO's functions syscalls (see `tracee::vdso`), then records registers, the initial
/// stack, the memory map, and stores the executable and every mapped file.
pub fn capture(
    tracee: &Tracee,
    writer: &mut TraceWriter,
    files: &mut MappedFiles,
) -> Result<ExecEvent> {
    let pid = tracee.pid();
    refuse_non_x86_64(pid.as_raw())?;
    let r = tracee.regs()?;
    let entries = maps::read(pid)?;
    let stack_top = entries
        .iter()
        .find(|e| e.name == "[stack]")
        .map(|e| e.end)
        .context("the new program has no [stack] mapping")?;
    let mut stack = tracee.read_vec(r.rsp, (stack_top - r.rsp) as usize)?;
    // The vDSO stays (programs read its image), its functions made syscalls; where that
    // cannot be done it is hidden, and the C library makes the syscalls itself.
    if let Err(e) = vdso::patch_in(tracee, &entries) {
        tracing::warn!("hiding the vDSO: {e:#}");
        if auxv::hide_vdso(&mut stack) {
            tracee.write_mem(r.rsp, &stack)?;
        }
    }
    let exe_link = format!("/proc/{pid}/exe");
    let exe = files
        .store_link(writer, &exe_link, None, false)
        .context("keeping the executable of the new program")?;
    let mut mappings = Vec::with_capacity(entries.len());
    for e in entries {
        let file = if e.is_file() {
            let shown = e.name.strip_suffix(" (deleted)").unwrap_or(&e.name);
            let (source, meta) = mapping_source(pid.as_raw(), shown, &exe.path, e.start, e.end);
            Some(match meta {
                Some(m) => files.store_as(writer, &m, &source, shown, false)?,
                None => files.store(writer, &source, shown, false)?,
            })
        } else {
            None
        };
        mappings.push(Mapping {
            start: e.start,
            end: e.end,
            perms: e.perms,
            offset: e.offset,
            name: e.name,
            file,
        });
    }
    let signals = tracee::SignalState::of_task(pid)?;
    let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Ok(ExecEvent {
        tid: pid.as_raw(),
        regs: regs::to_words(&r),
        exe,
        argv,
        stack_addr: r.rsp,
        stack,
        mappings,
        sig_blocked: signals.blocked,
        sig_ignored: signals.ignored,
        comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end_matches('\n').to_string())
            .unwrap_or_default(),
        syscallbuf: None,
    })
}

/// Stops the recording, naming the program, when a recorded process has just exec'd a program
/// that is not x86-64: a 32-bit (i386) or x32 program makes syscalls deja does not model (the
/// seccomp filter answers them `ENOSYS`), so it would crash or misbehave under recording only.
fn refuse_non_x86_64(pid: i32) -> Result<()> {
    let exe = format!("/proc/{pid}/exe");
    let mut head = [0u8; 20];
    std::fs::File::open(&exe)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("reading the ELF header of {exe}"))?;
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let kind = match (head[4], machine) {
        (2, 62) => return Ok(()),
        (1, 62) => "an x32 program",
        (1, 3) => "a 32-bit (i386) program",
        (1, _) => "a 32-bit program",
        _ => "not an x86-64 program",
    };
    let shown = std::fs::read_link(&exe)
        .map(|p| p.display().to_string())
        .unwrap_or(exe);
    bail!("process {pid} exec'd {shown}, {kind}: deja records x86-64 programs only")
}

/// A path the recorder can open for the file a mapping of the new program shows as `shown`:
/// the executable through `/proc/PID/exe` (it may have no path at all: a memfd run by
/// `fexecve`), other files through `/proc/PID/map_files` (the file itself, even deleted or in
/// another mount namespace), or through the task's root directory if that is not readable.
/// With the metadata of what a `map_files` link names (read to see that it is readable).
fn mapping_source(
    pid: i32,
    shown: &str,
    exe: &str,
    start: u64,
    end: u64,
) -> (String, Option<std::fs::Metadata>) {
    if shown == exe {
        return (format!("/proc/{pid}/exe"), None);
    }
    let by_map = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    if let Ok(m) = std::fs::metadata(&by_map) {
        return (by_map, Some(m));
    }
    (format!("/proc/{pid}/root{shown}"), None)
}
