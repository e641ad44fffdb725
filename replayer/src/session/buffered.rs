//! The fast path in replay (see the recorder's README, "The fast path"): the library loaded
//! after each exec as in the recording, each task's slot, syscall sites patched at their
//! recorded event, and the buffered syscalls of a task's run placed in its slot before the
//! task runs, for the library to answer them; at their event, a check that the task made
//! exactly those calls.

use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use anyhow::{Context, Result};
use syscallbuf::abi;
use trace_format::{BufferedEvent, Event, ExecEvent, PatchEvent, PatchesEvent, Tid};
use tracee::fastpath::SitePatch;
use tracee::Stop;

use super::{errno_text, Session};
use crate::debug;

/// How far ahead the replay looks for the buffered syscalls of a task's next run (their
/// events come right at the task's stop, before anything else the task does).
const LOOKAHEAD: usize = 256;

impl Session {
    /// After an exec's exit stop: loads the library as the recording did.
    pub(super) fn load_library(&mut self, tid: Tid, ev: &ExecEvent) -> Result<()> {
        let Some(lib) = &ev.syscallbuf else {
            self.task(tid)?.slot = None;
            return Ok(());
        };
        if lib.image != syscallbuf::image_hash() {
            anyhow::bail!(
                "the trace was recorded with another build of deja's in-process library \
                 (image {}); replay it with the deja that recorded it",
                lib.image
            );
        }
        let t = self.task(tid)?;
        tracee::fastpath::load(&t.tracee, abi::MODE_REPLAY, lib.slot)
            .context("loading deja's in-process library")?;
        t.slot = Some(lib.slot);
        t.placed.clear();
        Ok(())
    }

    /// A successful `ptrace` call of `tid` that gave a task an emulated tracer: that task's
    /// process stops using the fast path, as in the recording.
    pub(super) fn ptrace_turns_fast_path_off(&mut self, tid: Tid, args: &[u64; 6]) -> Result<()> {
        let Some(target) = tracee::fastpath::ptrace_turns_off(tid, args) else {
            return Ok(());
        };
        match self.tasks.by_tid(target) {
            Some(t) if t.slot.is_some() => tracee::fastpath::turn_off(&t.tracee),
            _ => Ok(()),
        }
    }

    /// A new task's first run: its gs base at its slot, with a fresh header, as in the
    /// recording.
    pub(super) fn start_slot(&mut self, tid: Tid, slot: Option<u64>) -> Result<()> {
        let t = self.task(tid)?;
        t.slot = slot;
        t.placed.clear();
        if let Some(slot) = slot {
            tracee::fastpath::give_slot(&t.tracee, slot)?;
        }
        Ok(())
    }

    /// Before `tid` runs: places the buffered syscalls of its coming run (its `Buffered`
    /// events up to its next other event) in its slot.
    pub(super) fn place_buffered(&mut self, tid: Tid) -> Result<()> {
        if self.task(tid)?.slot.is_none() {
            return Ok(());
        }
        let placed: Vec<u64> = self.task(tid)?.placed.iter().map(|&(n, _)| n).collect();
        let mut batches = Vec::new();
        // The files of the batches to place (a `BufferedMaps` event comes right before its
        // `Buffered` one).
        let mut maps = Vec::new();
        let mut next_maps = Vec::new();
        // (Events of other lanes in between do not count: see `lanes`.)
        let mut seen = 0;
        self.lane_walk(tid, |s, i| {
            seen += 1;
            s.peek_at(i)?;
            let index = s.index_at(i);
            match s.peek_at(i)? {
                Some(Event::Buffered(b)) if b.tid == tid => {
                    let files = std::mem::take(&mut next_maps);
                    if !placed.contains(&index) {
                        batches.push((index, b.clone()));
                        maps.extend(files);
                    }
                    Ok(seen < LOOKAHEAD)
                }
                Some(Event::BufferedMaps(m)) if m.tid == tid => {
                    next_maps = m.maps.clone();
                    Ok(seen < LOOKAHEAD)
                }
                Some(ev) if ev.tid() == tid => Ok(false),
                Some(_) => Ok(seen < LOOKAHEAD),
                None => Ok(false),
            }
        })?;
        if batches.is_empty() {
            return Ok(());
        }
        let reader = Rc::clone(&self.reader);
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for (index, b) in &batches {
            bytes.extend(reader.read_data(&b.records)?);
            ends.push((*index, bytes.len() as u64));
        }
        self.name_mapped_files(tid, &maps)?;
        let reserved = mapped_by(&bytes);
        let t = self.task(tid)?;
        let slot = t.slot.context("no slot")?;
        tracee::fastpath::place(&t.tracee, slot, &bytes)
            .with_context(|| format!("placing the buffered syscalls of task {tid}"))?;
        t.placed = ends;
        t.reserved = reserved;
        Ok(())
    }

    /// Writes the paths of the replay's copies of the files the buffered `mmap`s `maps` of
    /// task `tid` map into its process's library (`abi::ReplayFiles`, at the recording's
    /// table index), for the library to open.
    fn name_mapped_files(&mut self, tid: Tid, maps: &[trace_format::BufferedMap]) -> Result<()> {
        let reader = Rc::clone(&self.reader);
        for m in maps {
            let path = self.emu.path_of(m.file, &reader, &m.stored)?;
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            let (at, bytes) =
                syscallbuf::replay_file_path(m.table_index as usize, path.as_os_str().as_bytes())
                    .with_context(|| {
                    format!(
                        "the replay's copy of {} ({}) cannot be named to the in-process \
                             library (index {}, a path of at most {} bytes)",
                        m.stored.path,
                        path.display(),
                        m.table_index,
                        abi::REPLAY_PATH_SIZE - 1
                    )
                })?;
            self.tracee(tid)?
                .write_mem(at, &bytes)
                .context("naming a mapped file to the in-process library")?;
        }
        Ok(())
    }

    /// A `Buffered` event: the task, stopped after its run, must have made exactly those
    /// calls.
    pub(super) fn check_buffered(&mut self, e: &BufferedEvent) -> Result<()> {
        let tid = e.tid;
        let index = self.index;
        let t = self.task(tid)?;
        let Some(slot) = t.slot else {
            return Err(self.diverged(
                tid,
                format!("{} buffered syscall(s)", e.calls),
                "no in-process library in the task".into(),
            ));
        };
        let Some(k) = t.placed.iter().position(|&(n, _)| n == index) else {
            anyhow::bail!("buffered syscalls of task {tid} were not placed before its run");
        };
        let end = t.placed[k].1;
        let last = k + 1 == t.placed.len();
        if !matches!(
            t.state,
            crate::tasks::RState::Parked(_) | crate::tasks::RState::AtPoint
        ) {
            // Killed in the recording before its next event: the replay does not run it.
            return Ok(());
        }
        let h = tracee::fastpath::header(&t.tracee, slot)?;
        if h.diverged != 0 && h.diverged - 1 < end {
            let at = h.diverged - 1;
            let r = t.tracee.regs()?;
            let start = if k == 0 {
                0
            } else {
                self.task(tid)?.placed[k - 1].1
            };
            let records = self.reader.read_data(&e.records)?;
            let expected = describe_call(&records, at.saturating_sub(start));
            match h.diverged_how {
                abi::DIVERGED_RESULT => {
                    // A call replay runs for real (`abi::PROBE_EXEC`) returned another result.
                    let got = h.exec_result as i64;
                    return Err(self.diverged_with(
                        tid,
                        expected,
                        format!(
                            "that call returning {} when the replay ran it",
                            show_result(got)
                        ),
                        vec![
                            "the buffered call runs for real in replay; the program went on \
                             with the result the replay got"
                                .into(),
                        ],
                    ));
                }
                abi::DIVERGED_FILE => {
                    return Err(self.diverged(
                        tid,
                        expected,
                        "that call, but the in-process library could not open the replay's \
                         copy of the file it maps"
                            .into(),
                    ));
                }
                abi::DIVERGED_COND => {
                    return Err(self.diverged(
                        tid,
                        expected,
                        "that call with a signal set naming SIGSEGV (not buffered in the \
                         recording)"
                            .into(),
                    ));
                }
                _ => {}
            }
            let found = format!(
                "{}({:#x}, {:#x}, {:#x}, ...)",
                syscalls::name(r.orig_rax),
                r.rdi,
                r.rsi,
                r.rdx
            );
            return Err(self.diverged(tid, expected, found));
        }
        if h.pos < end || (last && h.pos != end) {
            let stop = match t.state {
                crate::tasks::RState::Parked(s) => s,
                _ => Stop::Signal(0),
            };
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged_with(
                tid,
                format!(
                    "{} buffered syscall(s) before the task's next event",
                    e.calls
                ),
                found,
                vec![format!(
                    "the library answered {} of the {} bytes of records placed",
                    h.pos, end
                )],
            ));
        }
        Ok(())
    }

    /// A `Patch` event: the task, stopped at the site's syscall, gets the same patch and makes
    /// the call again through it.
    pub(super) fn patch(&mut self, e: &PatchEvent) -> Result<()> {
        self.check_patch_stop(e)?;
        self.install_patch(e, true)?;
        self.resume(e.tid, 0)
    }

    /// Checks that the task of `e` is stopped at the entry of the call `e` patches the site of.
    fn check_patch_stop(&mut self, e: &PatchEvent) -> Result<()> {
        let tid = e.tid;
        let stop = self.parked(tid)?;
        let r = self.entry_regs(tid)?;
        if stop != Stop::SeccompEntry || r.orig_rax != e.nr || r.rip != e.site {
            let found = self.describe_stop(tid, stop);
            return Err(self.diverged(
                tid,
                format!(
                    "syscall {} at rip {:#x} (its site patched)",
                    syscalls::name(e.nr),
                    e.site
                ),
                found,
            ));
        }
        Ok(())
    }

    /// A `Patches` event: as [`Session::patch`] for its first site, whose patch sends the
    /// task through it; the sites patched ahead are written before the task goes on.
    pub(super) fn patches(&mut self, e: &PatchesEvent) -> Result<()> {
        self.check_patch_stop(&e.first)?;
        self.install_patch(&e.first, true)?;
        for a in &e.ahead {
            self.install_patch(a, false)?;
        }
        self.resume(e.first.tid, 0)
    }

    /// Writes the patch of `e` into its task's process, the debugger's breakpoints in the
    /// window lifted and planted again around it; `redirect`: the task, at the site's
    /// syscall, is set to make the call again through the patch (else it stays as it is).
    fn install_patch(&mut self, e: &PatchEvent, redirect: bool) -> Result<()> {
        let tid = e.tid;
        let lifted = self.lift_breakpoints_in(tid, e)?;
        let p = SitePatch {
            nr: e.nr,
            window: e.window,
            patch: &e.patch,
            stub_addr: e.stub_addr,
            stub: &e.stub,
            new_page: e.new_page,
        };
        self.with_signals_aside(tid, |s| {
            let t = s.tracee(tid)?;
            if redirect {
                tracee::fastpath::apply(t, &p)
            } else {
                tracee::fastpath::install(t, &p)
            }
        })
        .with_context(|| format!("patching the syscall site {:#x}", e.window))?;
        let rpid = self.task(tid)?.rpid;
        self.sites.add(rpid, e);
        self.replant_breakpoints(rpid, lifted)
    }

    /// Takes the debugger's breakpoints out of the window patch `e` is about to overwrite in
    /// `tid`'s process (set before the site was patched: a replay started over to go
    /// backwards sets them all at its start); returns their addresses.
    fn lift_breakpoints_in(&mut self, tid: Tid, e: &PatchEvent) -> Result<Vec<u64>> {
        if !self.debugged(tid) {
            return Ok(Vec::new());
        }
        let end = e.window + e.patch.len() as u64;
        let Some(d) = self.debug.as_mut() else {
            return Ok(Vec::new());
        };
        let inside: Vec<(u64, u8)> = d
            .breakpoints
            .range(e.window..end)
            .map(|(&a, &b)| (a, b))
            .collect();
        for (addr, _) in &inside {
            d.breakpoints.remove(addr);
            if d.lifted == Some(*addr) {
                d.lifted = None;
            }
        }
        let t = self.tracee(tid)?;
        for &(addr, orig) in &inside {
            t.write_mem(addr, &[orig])?;
        }
        Ok(inside.into_iter().map(|(a, _)| a).collect())
    }

    /// Puts breakpoints lifted for a patch back: on the `jmp` at the window's start, on the
    /// stub's copy of an instruction inside it (as `DebugReplay::add_breakpoint` does).
    fn replant_breakpoints(&mut self, rpid: Tid, lifted: Vec<u64>) -> Result<()> {
        for addr in lifted {
            let at = match self.sites.window_at(rpid, addr) {
                Some(site) if addr != site.window => match self.sites.copy_of(rpid, addr) {
                    Some(copy) => copy,
                    None => continue,
                },
                _ => addr,
            };
            let Some(t) = self.process_tracee() else {
                return Ok(());
            };
            let mut orig = [0u8];
            if t.read_mem_partial(at, &mut orig) != 1 || t.write_mem(at, &[debug::INT3]).is_err() {
                continue;
            }
            let Some(d) = self.debug.as_mut() else {
                return Ok(());
            };
            d.breakpoints.insert(at, orig[0]);
            if at != addr {
                d.in_windows.insert(addr, at);
            }
        }
        Ok(())
    }

    /// The event `i` places after the current one, read ahead as needed.
    pub(super) fn peek_at(&mut self, i: usize) -> Result<Option<&Event>> {
        while self.ahead.len() <= i {
            let Some(ev) = self.events.next().transpose()? else {
                return Ok(None);
            };
            let at = self.read;
            self.read += 1;
            if self.filter.as_mut().is_some_and(|f| !f.keep(&ev)) {
                continue;
            }
            self.ahead.push_back(ev);
            self.ahead_at.push_back(at);
        }
        Ok(self.ahead.get(i))
    }

    /// The next event but the `Buffered` ones of `tid` right before it.
    pub(super) fn peek_past_buffered(&mut self, tid: Tid) -> Result<Option<&Event>> {
        let mut at = None;
        self.lane_walk(tid, |s, i| {
            at = Some(i);
            Ok(is_buffered_of(s.peek_at(i)?, tid))
        })?;
        // (Past the last buffered event, the trace ended.)
        match at {
            Some(i) if !is_buffered_of(self.peek_at(i)?, tid) => self.peek_at(i),
            _ => Ok(None),
        }
    }
}

/// Whether `ev` is a `Buffered` event of task `tid`, or the `BufferedMaps` event before one.
fn is_buffered_of(ev: Option<&Event>, tid: Tid) -> bool {
    match ev {
        Some(Event::Buffered(b)) => b.tid == tid,
        Some(Event::BufferedMaps(m)) => m.tid == tid,
        _ => false,
    }
}

/// A syscall result as a message shows it: `-12 (Cannot allocate memory)` for an error, a
/// small count in decimal, anything larger (an address) in hex.
fn show_result(r: i64) -> String {
    if syscalls::is_error(r) {
        format!("{r} ({})", errno_text(r))
    } else if r < 0x10000 {
        r.to_string()
    } else {
        format!("{r:#x}")
    }
}

/// The recorded call at byte offset `at` of an event's `records`: "buffered syscall
/// read(0x3, 0x7ffc..., 0x1, ...) = 1 (call 5 of 12 in the event)".
fn describe_call(records: &[u8], at: u64) -> String {
    let heads = match syscallbuf::heads(records) {
        Ok(h) => h,
        Err(e) => return format!("buffered syscalls (their records are damaged: {e:#})"),
    };
    let n = heads.len();
    match heads
        .iter()
        .enumerate()
        .find(|(_, h)| h.offset as u64 >= at)
    {
        Some((i, h)) => format!(
            "buffered syscall {}({:#x}, {:#x}, {:#x}, ...) = {} (call {} of {n} in the event)",
            syscalls::name(h.nr),
            h.args[0],
            h.args[1],
            h.args[2],
            show_result(h.result),
            i + 1
        ),
        None => format!("{n} buffered syscall(s)"),
    }
}

/// The ranges the successful `mmap`s among the records `bytes` map (the library places them at
/// their recorded addresses, see `syscallbuf::abi::PROBE_PLACE`). Records that do not parse map
/// nothing here: the library diverges on them.
fn mapped_by(bytes: &[u8]) -> Vec<(u64, u64)> {
    let Ok(heads) = syscallbuf::heads(bytes) else {
        return Vec::new();
    };
    heads
        .iter()
        .filter(|h| h.nr == libc::SYS_mmap as u64 && !syscalls::is_error(h.result))
        .map(|h| {
            let start = h.result as u64;
            (
                start,
                start.saturating_add(h.args[1].next_multiple_of(4096)),
            )
        })
        .collect()
}
