//! Capturing the program image at its exec stop.

use anyhow::{Context, Result};
use trace_format::{ExecEvent, Mapping, TraceWriter};
use tracee::{auxv, maps, regs, Tracee};

use crate::mapped_files::MappedFiles;

/// At the exec stop: hides the vDSO from the program, then records registers, the initial
/// stack, the memory map, and stores the executable and every mapped file.
pub fn capture(
    tracee: &Tracee,
    writer: &mut TraceWriter,
    files: &mut MappedFiles,
) -> Result<ExecEvent> {
    let pid = tracee.pid();
    let r = tracee.regs()?;
    let entries = maps::read(pid)?;
    let stack_top = entries
        .iter()
        .find(|e| e.name == "[stack]")
        .map(|e| e.end)
        .context("the new program has no [stack] mapping")?;
    let mut stack = tracee.read_vec(r.rsp, (stack_top - r.rsp) as usize)?;
    if auxv::hide_vdso(&mut stack) {
        tracee.write_mem(r.rsp, &stack)?;
    }
    let exe = files
        .store_link(writer, &format!("/proc/{pid}/exe"), false)
        .context("keeping the executable of the new program")?;
    let mut mappings = Vec::with_capacity(entries.len());
    for e in entries {
        let file = if e.is_file() {
            // Through the task's own root: the path is the one its mount namespace sees.
            let source = format!("/proc/{pid}/root{}", e.name);
            Some(files.store(writer, &source, &e.name, false)?)
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
    })
}
