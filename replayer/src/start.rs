//! Where a debugged replay starts: the process the debugger sees, the event it first halts
//! after, and what gdb needs to know that process's program there (its executable and
//! auxiliary vector, inherited across a fork from the nearest exec before it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use trace_format::{Event, FileRef, Tid, TraceReader};

/// Where the debugger wants the replay to start.
#[derive(Debug, Clone, Default)]
pub struct DebugOptions {
    /// The process to debug (recorded pid); the initial process if `None`. The replay starts
    /// at its first exec, or at its first instruction if it never execs (rr's `-p`).
    pub process: Option<Tid>,
    /// Start at the process's fork (its first instruction, in its parent's program) even if
    /// it execs later (rr's `-f`).
    pub from_fork: bool,
    /// Start right before the process ends: at the syscall that ends it (rr's `-e`), from
    /// where the debugger can go backwards.
    pub at_exit: bool,
    /// Start no earlier than after this event.
    pub event: Option<u64>,
    /// Do not echo what the program wrote to stdout/stderr.
    pub quiet: bool,
}

/// Where a debugged replay starts.
#[derive(Debug, Clone)]
pub struct StartPoint {
    /// The debugged process (recorded pid).
    pub process: Tid,
    /// The event after which the replay first halts.
    pub event: u64,
    /// The debugged process's last exec (or its fork, or its first run) at or before `event`:
    /// where going backwards stops.
    pub first: u64,
    /// The executable the process runs at `first` (the trace's copy), for gdb's symbols: its
    /// own exec's, or the program it inherited from its parent at its fork.
    pub exe: PathBuf,
    /// The name the kernel gave the process's threads there (from the recorded path).
    pub comm: String,
    /// The auxiliary vector of the program the process runs at `first` (raw words), which
    /// gdb needs to find the program's load address and the dynamic loader's (a forked child
    /// has its parent's).
    pub auxv: Vec<u8>,
    /// The command line of that program's exec (each argument followed by a NUL), which a
    /// forked child keeps too.
    pub cmdline: Vec<u8>,
    /// After reaching `event`, the replay goes on to the process's end (see
    /// [`DebugOptions::at_exit`]).
    pub at_exit: bool,
}

/// What a process runs: the trace's file of its executable, its auxiliary vector and
/// command line.
#[derive(Debug, Clone)]
struct Program {
    exe: FileRef,
    auxv: Vec<u8>,
    cmdline: Vec<u8>,
}

/// Finds where the replay of `dir` starts for `opts`: after the debugged process's first
/// exec (or its first run, if it never execs, or with [`DebugOptions::from_fork`]), and no
/// earlier than `opts.event`.
pub fn start_point(dir: &Path, opts: &DebugOptions) -> Result<StartPoint> {
    let reader = TraceReader::open(dir)?;
    // The first run (or the initial exec) of the wanted process, and its first exec.
    let mut forked = None;
    let mut exec_at = None;
    // The wanted process's last exec at or before `opts.event`.
    let mut last_exec = None;
    let mut root = None;
    let mut count = 0u64;
    // The process of each task, the program each process runs, and the wanted process's
    // program where it started and at its last exec.
    let mut process_of: HashMap<Tid, Tid> = HashMap::new();
    let mut program_of: HashMap<Tid, Program> = HashMap::new();
    let mut at_fork: Option<Program> = None;
    let mut at_exec: Option<Program> = None;
    for (index, ev) in reader.events()?.enumerate() {
        let ev = ev?;
        count += 1;
        let index = index as u64;
        let root = *root.get_or_insert(ev.tid());
        let wanted = opts.process.unwrap_or(root);
        match &ev {
            Event::Exec(e) => {
                let process = process_of.get(&e.tid).copied().unwrap_or(e.tid);
                process_of.insert(e.tid, process);
                let program = Program {
                    exe: e.exe.clone(),
                    auxv: tracee::auxv::raw(&e.stack),
                    cmdline: e.argv.iter().flat_map(|a| a.bytes().chain([0])).collect(),
                };
                program_of.insert(process, program.clone());
                if process == wanted {
                    exec_at.get_or_insert(index);
                    if forked.is_none() {
                        // The initial process: no fork before its exec.
                        forked = Some(index);
                        at_fork = Some(program.clone());
                    }
                    if opts.event.map_or(true, |o| index <= o) {
                        last_exec = Some(index);
                        at_exec = Some(program);
                    }
                }
            }
            Event::Clone(c) => {
                process_of.insert(c.child, c.child_pid);
                let parent = process_of.get(&c.tid).copied().unwrap_or(c.tid);
                if c.child_pid == c.child {
                    if let Some(program) = program_of.get(&parent).cloned() {
                        program_of.insert(c.child_pid, program);
                    }
                }
            }
            Event::Start(e) if e.tid == wanted && forked.is_none() => {
                forked = Some(index);
                at_fork = program_of.get(&wanted).cloned();
            }
            _ => {}
        }
        let found = if opts.from_fork {
            forked.is_some()
        } else {
            exec_at.is_some()
        };
        if found && opts.event.map_or(true, |e| e < index) {
            break;
        }
    }
    let root = root.context("the trace has no events")?;
    let process = opts.process.unwrap_or(root);
    let at = if opts.from_fork {
        forked
    } else {
        exec_at.or(forked)
    };
    let Some(at) = at else {
        bail!("the recording has no process {process} (`deja ps` lists its processes)");
    };
    let event = opts.event.map_or(at, |e| e.max(at));
    if event >= count {
        bail!(
            "event {event} is past the end of the recording ({count} events; `deja info` \
             tells)"
        );
    }
    // Going backwards reaches back to the last exec before `event`, or to the start.
    let (first, program) = match (last_exec, at_exec) {
        (Some(exec), Some(program)) if exec >= at => (exec, Some(program)),
        _ => (at, at_fork),
    };
    let program =
        program.with_context(|| format!("no executable is recorded for process {process}"))?;
    Ok(StartPoint {
        process,
        event,
        first: first.min(event),
        exe: reader.file_path(&program.exe)?,
        comm: crate::debug::comm_of(&program.exe.path),
        auxv: program.auxv,
        cmdline: program.cmdline,
        at_exit: opts.at_exit,
    })
}
