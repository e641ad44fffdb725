//! Printing traces for people (and, with `--json`, for programs): `ls`, `info`, `dump`, `ps`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use trace_format::{Event, ExitStatus, TraceMeta, TraceReader, TraceRoot};

/// `deja ls`: one line per trace under the root.
pub fn list(root: &TraceRoot) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for entry in root.list()? {
        let summary = match &entry.meta {
            Ok(m) => format!("{:<12} {}", status_text(m), m.argv.join(" ")),
            Err(e) => format!("unreadable: {e}"),
        };
        writeln!(out, "{:<24} {summary}", entry.name)?;
    }
    Ok(())
}

fn status_text(m: &TraceMeta) -> String {
    match (m.complete, m.exit) {
        (true, Some(ExitStatus::Exited(c))) => format!("exit {c}"),
        (true, Some(ExitStatus::Signaled(s))) => format!("signal {s}"),
        _ => "incomplete".into(),
    }
}

/// `deja info`: the trace's metadata.
pub fn info(dir: &Path, json: bool) -> Result<()> {
    let reader = TraceReader::open(dir)?;
    let m = reader.meta();
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(m)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("path".into(), dir.display().to_string().into());
            obj.insert("status".into(), status_text(m).into());
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "trace:          {}", dir.display())?;
    writeln!(out, "command:        {}", m.argv.join(" "))?;
    writeln!(out, "executable:     {}", m.exe)?;
    writeln!(out, "cwd:            {}", m.cwd)?;
    writeln!(out, "recorded at:    {} (unix time)", m.start_time_unix)?;
    writeln!(out, "status:         {}", status_text(m))?;
    writeln!(out, "complete:       {}", m.complete)?;
    if m.complete {
        writeln!(out, "events:         {}", m.event_count)?;
    } else {
        let kept: u64 = reader.chunks()?.iter().map(|c| c.events).sum();
        writeln!(
            out,
            "events:         {kept} (kept before the recording was cut off)"
        )?;
    }
    writeln!(out, "format version: {}", m.format_version)?;
    writeln!(
        out,
        "sizes:          events {} B, blobs {} B, files {} B",
        m.events_bytes, m.blobs_bytes, m.files_bytes
    )?;
    if let Some(cpu) = m.cpu {
        writeln!(out, "pinned to CPU:  {cpu}")?;
    }
    Ok(())
}

/// `deja dump`: every event, one per line.
pub fn dump(dir: &Path, json: bool) -> Result<()> {
    let reader = TraceReader::open(dir)?;
    let mut out = std::io::stdout().lock();
    let mut events = reader.events()?;
    for (i, ev) in events.by_ref().enumerate() {
        let ev = ev?;
        if json {
            let mut v = serde_json::to_value(&ev)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("index".into(), i.into());
            }
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "{i:>8} {}", describe(&ev))?;
        }
    }
    if events.truncated() {
        writeln!(out, "(the trace ends here: its recording was cut off)")?;
    }
    Ok(())
}

fn describe(ev: &Event) -> String {
    let tid = ev.tid();
    match ev {
        Event::Exec(e) => format!(
            "[{tid}] exec {} (stack {} bytes at {:#x}, {} mappings)",
            e.exe.path,
            e.stack.len(),
            e.stack_addr,
            e.mappings.len()
        ),
        Event::Syscall(e) => {
            let written: u64 = e.writes.iter().map(|w| w.data.len()).sum();
            let mut s = format!(
                "[{tid}] syscall {}({}) = {}",
                syscalls::name(e.nr),
                e.args
                    .iter()
                    .map(|a| format!("{a:#x}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                e.result
            );
            if written > 0 {
                s += &format!(" wrote {written} bytes");
            }
            if let Some(f) = &e.mapped_file {
                s += &format!(" maps {}", f.path);
            }
            s
        }
        Event::Signal(e) => format!(
            "[{tid}] signal {} ({:?}) at rip {:#x}",
            e.signo, e.origin, e.rip
        ),
        Event::Rdtsc(e) => match e.aux {
            Some(aux) => format!(
                "[{tid}] rdtscp = {:#x} aux {aux} at rip {:#x}",
                e.tsc, e.rip
            ),
            None => format!("[{tid}] rdtsc = {:#x} at rip {:#x}", e.tsc, e.rip),
        },
        Event::Cpuid(e) => format!(
            "[{tid}] cpuid {:#x}/{:#x} = {:x?} at rip {:#x}",
            e.leaf, e.subleaf, e.regs, e.rip
        ),
        Event::Exit(e) => format!("[{tid}] exit: {}", e.status),
        Event::Clone(e) => format!(
            "[{tid}] {} made task {} (process {}, flags {:#x})",
            syscalls::name(e.nr),
            e.child,
            e.child_pid,
            e.flags
        ),
        Event::Start(_) => format!("[{tid}] starts"),
    }
}

/// `deja ps`: the processes of the trace (one until process trees are recorded).
pub fn ps(dir: &Path) -> Result<()> {
    let reader = TraceReader::open(dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<8} {:<8} {:<12} CMD", "PID", "PPID", "EXIT")?;
    let mut pid = None;
    let mut status = None;
    for ev in reader.events()? {
        match ev? {
            Event::Exec(e) => pid = pid.or(Some(e.tid)),
            Event::Exit(e) => status = Some(e.status),
            _ => {}
        }
    }
    let exit = match status {
        Some(s) => s.shell_code().to_string(),
        None => "none".into(),
    };
    let pid = pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    writeln!(
        out,
        "{pid:<8} {:<8} {exit:<12} {}",
        "--",
        reader.meta().argv.join(" ")
    )?;
    Ok(())
}
