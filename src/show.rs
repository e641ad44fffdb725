//! Printing traces for people (and, with `--json`, for programs): `ls`, `info`, `dump`, `ps`.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use trace_format::{Event, ExitStatus, Stopped, Tid, TraceMeta, TraceReader};

/// `s` as it may be printed to a terminal: control characters (and the bidirectional
/// overrides that reorder what follows them) escaped as Rust does (`\n`, `\u{1b}`), so that a
/// recorded argument or path can neither move the cursor, change colours nor hide text.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A command line as it may be printed (see [`shown`]).
fn shown_argv(argv: &[String]) -> String {
    argv.iter().map(|a| shown(a)).collect::<Vec<_>>().join(" ")
}

/// How the recording of the trace in `dir` ended (or that it goes on).
fn status_text(m: &TraceMeta, dir: &Path) -> String {
    let exit = |e: ExitStatus| match e {
        ExitStatus::Exited(c) => format!("exit {c}"),
        ExitStatus::Signaled(s) => format!("signal {s}"),
    };
    if m.complete {
        if let Some(e) = m.exit {
            return exit(e);
        }
    }
    if trace_format::recording_in_progress(dir) {
        return "in progress".into();
    }
    match &m.stopped {
        Some(Stopped::Signal(s)) => format!(
            "stopped by {} to the recorder after {} events",
            recorder::signal_name(*s),
            m.event_count
        ),
        Some(Stopped::Error(e)) => {
            let program = m
                .exit
                .map(|s| format!("the program ended ({}); ", exit(s)))
                .unwrap_or_default();
            format!(
                "incomplete: {program}the recording stopped after {} events: {e}",
                m.event_count
            )
        }
        None => "incomplete (the recorder was killed)".into(),
    }
}

/// What the trace's seal says (not checked: `deja replay` checks it): whose key sealed it,
/// and its digest.
fn seal_text(reader: &TraceReader) -> String {
    match reader.seal() {
        Ok(Some(seal)) => {
            let whose = match trace_format::seal::Key::existing() {
                _ if seal.key_id.is_empty() => "no key".to_string(),
                Some(k) if k.id() == seal.key_id => format!("your key {}", seal.key_id),
                _ => format!("another key, {}", seal.key_id),
            };
            format!("digest {}, sealed by {whose}", seal.digest)
        }
        Ok(None) => "none (the recording did not finish)".into(),
        Err(e) => format!("unreadable ({e})"),
    }
}

/// `deja info`: the trace's metadata.
pub fn info(dir: &Path, json: bool) -> Result<()> {
    let reader = TraceReader::open(dir)?;
    let m = reader.meta();
    // Counting processes and threads takes every event; damaged events leave them unknown
    // without hiding the metadata.
    let (table, walked) = walk(&reader);
    let tasks = table.map(|table| (table.rows.len(), table.tasks));
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(m)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("path".into(), dir.display().to_string().into());
            obj.insert("status".into(), status_text(m, dir).into());
            let at = crate::traces::local_time(m.start_time_unix);
            obj.insert("recorded_at".into(), at.iso.into());
            let (processes, threads) = match &tasks {
                Ok((p, t)) => ((*p).into(), (*t).into()),
                Err(e) => {
                    obj.insert("events_error".into(), format!("{e:#}").into());
                    (serde_json::Value::Null, serde_json::Value::Null)
                }
            };
            obj.insert("seal".into(), seal_text(&reader).into());
            if let Ok(Some(seal)) = reader.seal() {
                obj.insert("digest".into(), seal.digest.into());
            }
            obj.insert("processes".into(), processes);
            obj.insert("threads".into(), threads);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "trace:          {}", shown(&dir.to_string_lossy()))?;
    writeln!(out, "command:        {}", shown_argv(&m.argv))?;
    writeln!(out, "executable:     {}", shown(&m.exe))?;
    writeln!(out, "cwd:            {}", shown(&m.cwd))?;
    let at = crate::traces::local_time(m.start_time_unix);
    writeln!(
        out,
        "recorded at:    {} {} (unix time {})",
        at.text, at.zone, m.start_time_unix
    )?;
    let status = status_text(m, dir);
    writeln!(out, "status:         {status}")?;
    writeln!(out, "complete:       {}", m.complete)?;
    if m.complete {
        writeln!(out, "events:         {}", m.event_count)?;
    } else {
        // The events read, which may include a last chunk the index missed; the index's
        // count when they cannot all be read.
        let kept: u64 = match &tasks {
            Ok(_) => walked,
            Err(_) => reader.chunks()?.iter().map(|c| c.events).sum(),
        };
        let why = if status == "in progress" {
            "so far: the recording goes on"
        } else {
            "kept before the recording was cut off"
        };
        writeln!(out, "events:         {kept} ({why})")?;
    }
    match &tasks {
        Ok((processes, threads)) => {
            let (kept, threads_kept) = if m.complete {
                ("", "")
            } else {
                (" (in the events kept)", "; in the events kept")
            };
            writeln!(out, "processes:      {processes}{kept}")?;
            writeln!(
                out,
                "threads:        {threads} (tasks, main threads included{threads_kept})"
            )?;
        }
        Err(e) => {
            writeln!(
                out,
                "processes:      unknown (the events cannot be read: {e:#})"
            )?;
            writeln!(out, "threads:        unknown")?;
        }
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
    writeln!(out, "seal:           {}", seal_text(&reader))?;
    if let Some(seed) = m.chaos_seed {
        writeln!(out, "chaos seed:     {seed} (deja rec --chaos={seed})")?;
    }
    if m.complete {
        let c = &m.syscalls;
        if c.fast_path {
            let all = c.traced + c.buffered;
            let pct = if all == 0 {
                0.0
            } else {
                100.0 * c.buffered as f64 / all as f64
            };
            writeln!(
                out,
                "syscalls:       {all}: {} buffered ({pct:.1}%), {} traced; {} sites patched, {} \
                 left traced",
                c.buffered, c.traced, c.sites_patched, c.sites_refused
            )?;
        } else {
            writeln!(
                out,
                "syscalls:       {} (all traced: fast path off)",
                c.traced
            )?;
        }
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
            if let Event::Buffered(b) = &ev {
                write_buffered_calls(&mut out, &reader, b)?;
            }
        }
    }
    if events.truncated() {
        writeln!(out, "(the trace ends here: its recording was cut off)")?;
    }
    Ok(())
}

/// The calls of a `Buffered` event, one per line under it.
fn write_buffered_calls(
    out: &mut impl Write,
    reader: &TraceReader,
    b: &trace_format::BufferedEvent,
) -> Result<()> {
    let records = reader.read_data(&b.records)?;
    let calls = syscallbuf::parse_records(&records).context("the buffered syscalls' records")?;
    for c in calls {
        let args = c
            .args
            .iter()
            .map(|a| format!("{a:#x}"))
            .collect::<Vec<_>>()
            .join(", ");
        write!(out, "    {}({args}) = {}", syscalls::name(c.nr), c.result)?;
        let written: usize = c.writes.iter().map(|(_, b)| b.len()).sum();
        if written > 0 {
            write!(out, " wrote {written} bytes")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn describe(ev: &Event) -> String {
    let tid = ev.tid();
    match ev {
        Event::Exec(e) => format!(
            "[{tid}] exec {} (stack {} bytes at {:#x}, {} mappings)",
            shown(&e.exe.path),
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
                s += &format!(" maps {}", shown(&f.path));
            }
            if let Some(fx) = &e.file_effect {
                s += &format!(" [{fx:?}]");
            }
            s
        }
        Event::Signal(e) => format!(
            "[{tid}] signal {} ({:?}) at rip {:#x}{}",
            e.signo,
            e.origin,
            e.rip,
            if e.point.is_some() { " mid-code" } else { "" }
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
        Event::Preempt(e) => format!(
            "[{tid}] preempted at rip {:#x} ({} memory words watched)",
            e.point.regs[16],
            e.point.watch.len()
        ),
        Event::Resume(_) => format!("[{tid}] resumes"),
        Event::Ptrace(e) => format!("[{tid}] emulated ptrace: {:?}", e.action),
        Event::Buffered(e) => format!("[{tid}] {} buffered syscall(s):", e.calls),
        Event::Patch(e) => format!(
            "[{tid}] patched the {} site at {:#x} ({} bytes) to its stub at {:#x}",
            syscalls::name(e.nr),
            e.window,
            e.patch.len(),
            e.stub_addr
        ),
        Event::Patches(e) => format!(
            "[{tid}] patched the {} site at {:#x} ({} bytes) to its stub at {:#x}, and {} more \
             ahead of their first call",
            syscalls::name(e.first.nr),
            e.first.window,
            e.first.patch.len(),
            e.first.stub_addr,
            e.ahead.len()
        ),
        Event::Lane(e) => format!(
            "[{tid}] moves to lane {} (recorded in parallel with the other lanes)",
            e.lane
        ),
        Event::BufferedMaps(e) => {
            let files: Vec<String> = e
                .maps
                .iter()
                .map(|m| format!("call {}: {}", m.call, m.stored.path))
                .collect();
            format!("[{tid}] buffered mmaps of {}", files.join(", "))
        }
    }
}

/// `deja ps`: the processes of the trace, in order of creation.
pub fn ps(dir: &Path) -> Result<()> {
    let reader = TraceReader::open(dir)?;
    let table = walk(&reader).0?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<8} {:<8} {:<12} CMD", "PID", "PPID", "EXIT")?;
    for row in &table.rows {
        writeln!(out, "{}", ps_line(row))?;
    }
    Ok(())
}

/// One line of `deja ps` under its header.
fn ps_line(row: &ProcessRow) -> String {
    let ppid = row
        .ppid
        .map(|p| p.to_string())
        .unwrap_or_else(|| "--".into());
    let exit = row
        .exit
        .map(|s| s.shell_code().to_string())
        .unwrap_or_else(|| "none".into());
    format!(
        "{:<8} {ppid:<8} {exit:<12} {}",
        row.pid,
        shown_argv(&row.argv)
    )
}

/// Every event of the trace through a [`ProcessTable`] (the events kept, for a recording that
/// was cut off), with the number of events read.
fn walk(reader: &TraceReader) -> (Result<ProcessTable>, u64) {
    let mut events = match reader.events() {
        Ok(events) => events,
        Err(e) => return (Err(e.into()), 0),
    };
    let mut error = None;
    let table = process_table(
        &reader.meta().argv,
        events
            .by_ref()
            .map_while(|ev| ev.map_err(|e| error = Some(e)).ok()),
    );
    let read = events.events_read();
    match error {
        Some(e) => (Err(e.into()), read),
        None => (Ok(table), read),
    }
}

/// One process of a trace, as `deja ps` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    /// Its process id.
    pub pid: Tid,
    /// The process id of the process that created it; `None` for the initial process.
    pub ppid: Option<Tid>,
    /// How its leader task (tid == pid) ended; `None` if the trace does not say.
    pub exit: Option<ExitStatus>,
    /// The command line of its last exec (inherited from its parent until it execs).
    pub argv: Vec<String>,
}

/// The processes and tasks of a trace, built one event at a time.
#[derive(Debug)]
pub struct ProcessTable {
    /// The processes in order of creation.
    pub rows: Vec<ProcessRow>,
    /// Every task seen: the initial one and each one a clone made (threads and processes).
    pub tasks: usize,
    /// The command line of the initial process until its first exec event (the trace's
    /// metadata).
    initial_argv: Vec<String>,
    /// The process (index in `rows`) of each task.
    process_of_task: HashMap<Tid, usize>,
    /// The latest process (index in `rows`) with each pid.
    process_of_pid: HashMap<Tid, usize>,
}

impl ProcessTable {
    /// An empty table; `initial_argv` is the initial process's command line before its first
    /// exec event.
    pub fn new(initial_argv: Vec<String>) -> Self {
        ProcessTable {
            rows: Vec::new(),
            tasks: 0,
            initial_argv,
            process_of_task: HashMap::new(),
            process_of_pid: HashMap::new(),
        }
    }

    /// The process a task belongs to. A task not seen before is taken to be a process leader
    /// (after an exec by a non-leader thread, that thread carries the pid as its tid).
    fn process(&self, tid: Tid) -> Option<usize> {
        self.process_of_task
            .get(&tid)
            .or_else(|| self.process_of_pid.get(&tid))
            .copied()
    }

    fn add_process(&mut self, pid: Tid, ppid: Option<Tid>, argv: Vec<String>) -> usize {
        let i = self.rows.len();
        self.rows.push(ProcessRow {
            pid,
            ppid,
            exit: None,
            argv,
        });
        self.process_of_pid.insert(pid, i);
        self.process_of_task.insert(pid, i);
        self.tasks += 1;
        i
    }

    /// Takes the next event of the trace into account.
    pub fn observe(&mut self, ev: &Event) {
        if self.rows.is_empty() {
            // The first event belongs to the initial process (it is its exec).
            let argv = std::mem::take(&mut self.initial_argv);
            self.add_process(ev.tid(), None, argv);
        }
        match ev {
            Event::Exec(e) => {
                if let Some(i) = self.process(e.tid) {
                    self.rows[i].argv = if e.argv.is_empty() {
                        vec![e.exe.path.clone()]
                    } else {
                        e.argv.clone()
                    };
                }
            }
            Event::Clone(e) => {
                let parent = self.process(e.tid);
                if e.flags & libc::CLONE_THREAD as u64 != 0 {
                    let process = self.process_of_pid.get(&e.child_pid).copied().or(parent);
                    if let Some(i) = process {
                        self.process_of_task.insert(e.child, i);
                    }
                    self.tasks += 1;
                } else {
                    let argv = parent
                        .map(|i| self.rows[i].argv.clone())
                        .unwrap_or_default();
                    self.add_process(e.child, Some(e.parent_pid), argv);
                }
            }
            Event::Exit(e) => {
                if let Some(i) = self.process(e.tid) {
                    if self.rows[i].pid == e.tid {
                        self.rows[i].exit = Some(e.status);
                    }
                }
                self.process_of_task.remove(&e.tid);
            }
            Event::Syscall(_)
            | Event::Signal(_)
            | Event::Rdtsc(_)
            | Event::Cpuid(_)
            | Event::Start(_)
            | Event::Preempt(_)
            | Event::Resume(_)
            | Event::Ptrace(_)
            | Event::Buffered(_)
            | Event::Patch(_)
            | Event::Patches(_)
            | Event::Lane(_)
            | Event::BufferedMaps(_) => {}
        }
    }
}

/// The processes and tasks of a list of events, `initial_argv` being the initial process's
/// command line before its first exec event.
pub fn process_table<E: Borrow<Event>>(
    initial_argv: &[String],
    events: impl IntoIterator<Item = E>,
) -> ProcessTable {
    let mut table = ProcessTable::new(initial_argv.to_vec());
    for ev in events {
        table.observe(ev.borrow());
    }
    table
}

#[cfg(test)]
mod tests;
