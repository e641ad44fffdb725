//! The fast path in the recording loop (see the README's "The fast path"): the library
//! loaded at each exec, a slot for each thread, the buffer drained at every stop of a running
//! task, syscall sites patched at their first stop, and points never taken inside deja's own
//! code.

use anyhow::{Context, Result};
use syscallbuf::abi;
use trace_format::{
    BufferedEvent, BufferedMap, BufferedMapsEvent, Event, LibraryLoad, PatchEvent, PatchesEvent,
    WatchedWord,
};
use tracee::fastpath::{SitePatch, STUB_PAGE, STUB_START};
use tracee::{Regs, Stop};

use crate::fastpath::{KnownSite, Site, Space};
use crate::task::{HeldSignal, State};

use super::Session;

/// Most instructions single-stepped to bring a task out of the library and its stubs (a
/// buffered call's whole way through the library is a few hundred, its copies included).
const LEAVE_STEPS: usize = 200_000;

/// Most bytes of stubs per page (a stub is about 40 bytes).
const STUB_ROOM: u64 = 128;

impl Session {
    /// At the exec stop of `tid` (its address space fresh): gives the task slot 1 of the
    /// library, which is loaded at the exec's exit stop (see [`Session::load_pending_library`]).
    /// `None` when the fast path is off.
    pub(super) fn plan_library(&mut self, tid: i32) -> Result<Option<LibraryLoad>> {
        // A traced task's new program runs without it (see `fast_path_off`), and so does one
        // under seccomp filters of its own (see `tracee::fastpath::seccomp_turns_off`).
        if !self.fast.enabled || self.ptrace.is_traced(tid) || tracee::seccomp::has_own_filters(tid)
        {
            self.task(tid)?.slot = None;
            return Ok(None);
        }
        let t = self.task(tid)?;
        let mm = t.mm;
        let mut space = Space::new();
        let slot = space.take_slot();
        t.slot = Some(slot);
        t.library_pending = true;
        self.fast.spaces.insert(mm, space);
        Ok(Some(LibraryLoad {
            image: syscallbuf::image_hash(),
            slot,
        }))
    }

    /// At the exit stop of an exec (the new program has not run yet): loads the library planned
    /// at its exec stop. (The exec stop itself is inside `execve`, where no syscall can be
    /// injected.)
    pub(super) fn load_pending_library(&mut self, tid: i32) -> Result<()> {
        let t = self.task(tid)?;
        if !std::mem::take(&mut t.library_pending) {
            return Ok(());
        }
        let slot = t
            .slot
            .context("a task to load the library into has no slot")?;
        self.store_ahead(tid)?;
        let mm = self.task(tid)?.mm;
        // The file versions its buffered `mmap`s may map: those stored so far.
        let effects = &self.effects;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() as i64, i64::from(d.subsec_nanos())))
            .unwrap_or((0, 0));
        let exe = self.fast.spaces.get(&mm).and_then(|s| s.exe.as_ref());
        let none = std::collections::BTreeSet::new();
        let first = exe
            .and_then(|e| self.fast.mapped_by_exe.get(e))
            .unwrap_or(&none);
        let table = self.files.table_versions(
            |id| effects.may_have_changed(id),
            now,
            first,
            abi::MAX_FILES,
        );
        let keys: Vec<abi::FileKey> = table.iter().map(|(k, ..)| *k).collect();
        // At the exec's exit stop, a signal pending (a child's SIGCHLD) stops the task before
        // each syscall injected there.
        self.with_signals_aside(tid, |s| {
            let t = &s.task(tid)?.tracee;
            tracee::fastpath::load(t, abi::MODE_RECORD, slot)?;
            tracee::fastpath::write_file_table(t, &keys)
        })
        .with_context(|| format!("loading deja's in-process library into task {tid}"))?;
        if let Some(space) = self.fast.spaces.get_mut(&mm) {
            space.files = table.into_iter().map(|(_, id, f)| (id, f)).collect();
        }
        Ok(())
    }

    /// At the exit stop of `tid`'s exec: stores the files that processes of the same
    /// executable mapped in earlier recordings (the site cache's), so that the library's table
    /// has them and this process maps them without a stop too (stored versions cost a
    /// `stat`; a system file from the pool, a hard link). Files gone or unreadable are
    /// skipped.
    fn store_ahead(&mut self, tid: i32) -> Result<()> {
        let exe = crate::site_cache::exe_of(tid);
        let mm = self.task(tid)?.mm;
        if let Some(space) = self.fast.spaces.get_mut(&mm) {
            space.exe.clone_from(&exe);
        }
        let Some(paths) = exe.and_then(|e| self.fast.mapped_by_exe.get(&e)) else {
            return Ok(());
        };
        for path in paths {
            if let Err(e) = self.files.store(&mut self.writer, path, path, false) {
                tracing::debug!(path, "not stored ahead: {e:#}");
            }
        }
        Ok(())
    }

    /// Notes that a process of address space `mm` mapped the file `path` (for the next
    /// recordings' `store_ahead`): a file of the file system (not a device, `/proc` or `/tmp`,
    /// a memfd or a deleted file).
    pub(super) fn note_mapped_by_exe(&mut self, mm: i32, path: &str) {
        let kept = path.starts_with('/')
            && !["/dev/", "/proc/", "/tmp/", "/memfd:"]
                .iter()
                .any(|p| path.starts_with(p))
            && !path.ends_with(" (deleted)");
        let exe = self.fast.spaces.get(&mm).and_then(|s| s.exe.clone());
        if let (true, Some(exe)) = (kept, exe) {
            let paths = self.fast.mapped_by_exe.entry(exe).or_default();
            if !paths.contains(path) {
                paths.insert(path.to_string());
            }
        }
    }

    /// A task gets an emulated tracer: its process stops using the fast path, so that the
    /// tracer sees every syscall (the replay does the same at the same call, see
    /// `tracee::fastpath::ptrace_turns_off`).
    pub(super) fn fast_path_off(&mut self, tid: i32) -> Result<()> {
        let Some(t) = self.tasks.get(&tid) else {
            return Ok(());
        };
        if t.slot.is_some() {
            tracee::fastpath::turn_off(&t.tracee)?;
        }
        Ok(())
    }

    /// The slot a task made by `parent`'s clone gets: its own in the parent's address space
    /// (`CLONE_VM`), or the parent's in the child's copy of it (`fork`).
    pub(super) fn slot_for_child(
        &mut self,
        parent: i32,
        child: i32,
        clone_vm: bool,
    ) -> Option<u64> {
        let p = self.tasks.get(&parent)?;
        let (parent_slot, mm) = (p.slot?, p.mm);
        if clone_vm {
            return Some(self.fast.spaces.get_mut(&mm)?.take_slot());
        }
        let forked = self.fast.spaces.get(&mm)?.forked(parent_slot);
        self.fast.spaces.insert(child, forked);
        Some(parent_slot)
    }

    /// At its first run: points task `tid`'s gs base at its slot, with a fresh header.
    pub(super) fn set_up_slot(&mut self, tid: i32) -> Result<Option<u64>> {
        let t = self.task(tid)?;
        let Some(slot) = t.slot else {
            return Ok(None);
        };
        tracee::fastpath::give_slot(&t.tracee, slot)?;
        Ok(Some(slot))
    }

    /// A task ends or leaves its address space: its slot is free again.
    pub(super) fn release_slot(&mut self, mm: i32, slot: Option<u64>) {
        if let (Some(slot), Some(space)) = (slot, self.fast.spaces.get_mut(&mm)) {
            space.release_slot(slot);
        }
    }

    /// Writes the syscalls task `tid` made through the library since its last stop, if any, as
    /// one `Buffered` event, and empties its buffer.
    pub(super) fn drain(&mut self, tid: i32) -> Result<()> {
        let Some(t) = self.tasks.get(&tid) else {
            return Ok(());
        };
        let Some(slot) = t.slot else {
            return Ok(());
        };
        let spare = self.writer.recycled();
        let (buf, heads) = match tracee::fastpath::drain(&t.tracee, slot, spare) {
            Ok(r) => r,
            Err(e) if tracee::gone::vanished_task(&e).is_some() => return Err(e),
            Err(e) => return Err(e.context(format!("draining the syscall buffer of task {tid}"))),
        };
        if heads.is_empty() {
            self.writer.reuse(buf);
            return Ok(());
        }
        self.fast.counts.buffered += heads.len() as u64;
        // What the recorder follows of traced calls, it follows of buffered ones, in order:
        // which descriptors alias its stdout/stderr.
        let pid = t.pid;
        let echo = self.echo.entry(pid).or_default();
        for h in &heads {
            echo.after_syscall(h.nr, &h.args, h.result);
        }
        if !heads.iter().any(|h| crate::fastpath::changes_maps(h.nr)) {
            self.fast.harmless_events += 1;
        }
        let maps = self.buffered_maps(tid, &heads)?;
        if !maps.is_empty() {
            self.writer
                .push(Event::BufferedMaps(BufferedMapsEvent { tid, maps }))?;
        }
        let records = self.writer.data_vec(buf);
        self.writer.push(Event::Buffered(BufferedEvent {
            tid,
            calls: heads.len() as u32,
            records,
        }))?;
        Ok(())
    }

    /// The files the buffered `mmap`s among `heads` (drained from task `tid`) mapped, from
    /// its address space's table; each is followed as a mapped file from now on.
    fn buffered_maps(&mut self, tid: i32, heads: &[syscallbuf::Head]) -> Result<Vec<BufferedMap>> {
        let mut maps = Vec::new();
        for (call, h) in heads.iter().enumerate() {
            if h.file == 0 || h.nr != libc::SYS_mmap as u64 {
                continue;
            }
            let mm = self.task(tid)?.mm;
            let index = h.file - 1;
            let (file, stored) = self
                .fast
                .spaces
                .get(&mm)
                .and_then(|s| s.files.get(index as usize))
                .cloned()
                .with_context(|| {
                    format!("a buffered mmap of task {tid} names file {index}, not in its table")
                })?;
            self.effects.note_mapped(file);
            self.note_mapped_by_exe(mm, &stored.path);
            maps.push(BufferedMap {
                call: call as u32,
                table_index: index,
                file,
                stored,
            });
        }
        Ok(maps)
    }

    /// At the seccomp stop of a buffered syscall at a site not yet decided: patches the site
    /// if it is safe (see `tracee::patch`) and sends the task through the patch. True when it
    /// did (the stop is handled). The sites that earlier processes patched in the site's
    /// mapped file are patched right after it, ahead of their first call (see
    /// [`Session::patch_ahead`]).
    pub(super) fn try_patch(&mut self, tid: i32, entry: &Regs) -> Result<bool> {
        let nr = entry.orig_rax;
        if !self.fast.enabled {
            return Ok(false);
        }
        // A call the library would not take (its arguments fail the conditions: an
        // `rt_sigaction` of SIGSEGV, an `fcntl(F_DUPFD)`) leaves the site undecided: it is
        // patched at a call the library takes, if one comes.
        match syscalls::buffered(nr) {
            Some(b) if b.may_take(&tracee::regs::syscall_args(entry)) => {}
            _ => return Ok(false),
        }
        let t = self.task(tid)?;
        let (mm, pid) = (t.mm, t.tracee.pid());
        let site = entry.rip.wrapping_sub(2);
        let Some(space) = self.fast.spaces.get(&mm) else {
            return Ok(false);
        };
        if space.sites.contains_key(&site) || space.owns_code(entry.rip) || self.inside(tid, site) {
            return Ok(false);
        }
        let mapping = tracee::maps::entry_at(pid, site)?.filter(|m| m.is_file());
        let target = Target {
            site,
            nr,
            mapping: mapping.as_ref(),
            ahead: None,
        };
        let Some(first) = self.install_site(tid, target)? else {
            return Ok(false);
        };
        let ahead = match &mapping {
            Some(m) => self.patch_ahead(tid, m, site)?,
            None => Vec::new(),
        };
        // A patch in place changes no map: the map stays good for the next site.
        if first.new_page.is_none() && ahead.iter().all(|a| a.new_page.is_none()) {
            self.fast.harmless_events += 1;
        }
        self.writer.push(if ahead.is_empty() {
            Event::Patch(first)
        } else {
            Event::Patches(PatchesEvent { first, ahead })
        })?;
        self.task(tid)?.tracee.cont(0)?;
        Ok(true)
    }

    /// Whether a task of `tid`'s address space other than `tid` is stopped inside the window a
    /// patch of the syscall at `site` may cover: it would come back into the middle of the
    /// jump (the site is decided later, at another call).
    fn inside(&self, tid: i32, site: u64) -> bool {
        let Some(mm) = self.tasks.get(&tid).map(|t| t.mm) else {
            return false;
        };
        let window_end = site + 16;
        self.tasks.iter().any(|(&o, ot)| {
            o != tid && ot.mm == mm && resume_rip(ot).is_some_and(|r| r > site && r < window_end)
        })
    }

    /// Patches, in `tid`'s process, the syscall sites that earlier processes patched in the
    /// file that `m` maps, at the same file offsets and with the same function around them
    /// (the code of a `make`'s programs is the same libc again and again), so that their
    /// first calls go through the library without a stop; returns their patches. `except` is
    /// the site the task is stopped at, patched already.
    fn patch_ahead(
        &mut self,
        tid: i32,
        m: &tracee::maps::MapEntry,
        except: u64,
    ) -> Result<Vec<PatchEvent>> {
        let t = self.task(tid)?;
        let (mm, pid) = (t.mm, t.tracee.pid().as_raw());
        let key = (m.dev.clone(), m.inode);
        // Sites an earlier recording patched in this version of the file join those of this
        // recording, once.
        if let Some((version, sites)) = self.fast.cached.remove(&key) {
            if crate::site_cache::version_of(pid, m.start, m.end) == Some(version) {
                self.fast.versions.insert(key.clone(), version);
                for s in sites {
                    let bounds = Some((s.before, s.after));
                    let offset = s.offset;
                    if self.fast.note_known(&key, s) {
                        self.fast
                            .functions
                            .insert((key.0.clone(), key.1, offset), bounds);
                    }
                }
            }
        }
        let Some(known) = self.fast.known.get(&key) else {
            return Ok(Vec::new());
        };
        let in_map = |off: u64| off >= m.offset && off - m.offset < m.end - m.start;
        let todo: Vec<(u64, u64, Vec<u8>)> = known
            .iter()
            .filter(|k| in_map(k.offset))
            .map(|k| (m.start + k.offset - m.offset, k.nr, k.code.clone()))
            .filter(|&(site, _, _)| site != except)
            .collect();
        let mut done = Vec::new();
        for (site, nr, code) in todo {
            let decided = self
                .fast
                .spaces
                .get(&mm)
                .map_or(true, |s| s.sites.contains_key(&site));
            if decided || self.inside(tid, site) {
                continue;
            }
            let target = Target {
                site,
                nr,
                mapping: Some(m),
                ahead: Some(&code),
            };
            done.extend(self.install_site(tid, target)?);
        }
        Ok(done)
    }

    /// Patches `target`'s site in `tid`'s process if it is safe and returns its patch: the
    /// task, stopped at the entry of the site's syscall, is sent through it (unless the site
    /// is patched ahead, the task left where it was sent). `None` if it was not patched:
    /// refused (the site then stays on the ptrace path in this process), or, ahead, its
    /// function's code is not the code it had where it was patched before (left undecided).
    fn install_site(&mut self, tid: i32, target: Target) -> Result<Option<PatchEvent>> {
        let Target {
            site,
            nr,
            mapping,
            ahead,
        } = target;
        let stamp = self.writer.event_count() - self.fast.harmless_events;
        let Session { tasks, fast, .. } = self;
        let t = tasks.get(&tid).context("patching for an unknown task")?;
        let mm = t.mm;
        let pid = t.tracee.pid();
        let read = |a: u64, b: &mut [u8]| t.tracee.read_mem(a, b).is_ok();
        let space = fast.spaces.get_mut(&mm).context("no fast-path state")?;
        // The whole memory map is read only when needed (a large program's takes a hundred
        // microseconds): the mapping of the site alone names its file.
        let mut maps: Option<Vec<tracee::maps::MapEntry>> = None;
        let mut from_cache = false;
        // The function's bounds from its unwind information, and the padding after it (a
        // `mov eax, N; syscall; ret` function's window reaches into it); none for a function
        // with landing pads, which the unwinder enters without a branch to check.
        let find = |maps: &[tracee::maps::MapEntry]| {
            tracee::functions::function_fde_and_padding(Some(pid), &read, maps, site)
                .filter(|(f, _)| f.lsda.is_none())
                .map(|(f, end)| (f.start, end))
        };
        // A file's functions are the same in every process that maps it (each new program of
        // a `make` maps the same libc): found once per file, kept relative to the site.
        let file_key = mapping.map(|m| (m.dev.clone(), m.inode, site - m.start + m.offset));
        let known = match &file_key {
            Some(key) => fast.functions.get(key).copied(),
            None => space.functions.get(&site).copied(),
        };
        let bounds = match (known, file_key.clone()) {
            (Some(Some((before, after))), Some(_)) => Some((site - before, site + after)),
            (Some(b), None) => b,
            (Some(None), Some(_)) => None,
            (None, key) => {
                // The map read for an earlier site, if nothing since can have changed it.
                let all = match fast.maps.take() {
                    Some((m, s, all)) if m == mm && s == stamp => {
                        from_cache = true;
                        maps.insert(all)
                    }
                    _ => maps.insert(tracee::maps::read(pid)?),
                };
                let found = find(all);
                match key {
                    Some(key) => {
                        fast.functions
                            .insert(key, found.map(|(s, e)| (site - s, e - site)));
                    }
                    None => {
                        space.functions.insert(site, found);
                    }
                }
                found
            }
        };
        let Some((start, end)) = bounds else {
            self.refuse(mm, site, "no function bounds");
            return Ok(None);
        };
        let code = t
            .tracee
            .read_vec(start, (end - start) as usize)
            .context("reading the code around a syscall site")?;
        if ahead.is_some_and(|c| c != code.as_slice()) {
            return Ok(None);
        }
        // A stub page within reach with room, or a new one.
        let reach = |p: u64| p.abs_diff(site) < (1 << 31) - 2 * STUB_PAGE;
        let (stub_addr, new_page) = match space
            .stub_pages
            .iter()
            .find(|&&(p, used)| reach(p) && used + STUB_ROOM <= STUB_PAGE)
        {
            Some(&(p, used)) => (p + used, None),
            // Free room for a new page is looked for in a map read now.
            None => match tracee::patch::stub_page_near_in(
                pid.as_raw(),
                match &maps {
                    Some(m) if !from_cache => m,
                    _ => maps.insert(tracee::maps::read(pid)?),
                },
                site,
            ) {
                Some(p) => (p + STUB_START, Some(p)),
                None => {
                    self.refuse(mm, site, "no room for stubs in reach");
                    return Ok(None);
                }
            },
        };
        let page = new_page.unwrap_or(stub_addr & !(STUB_PAGE - 1));
        let inputs = (start, code, site, nr, stub_addr, page);
        let planned = match self.fast.plans.get(&inputs) {
            Some(p) => p.clone(),
            None => {
                let (start, code, site, nr, stub_addr, page) = &inputs;
                let p = tracee::patch::plan(*start, code, *site, *nr, *stub_addr, *page);
                self.fast.plans.insert(inputs.clone(), p.clone());
                p
            }
        };
        let plan = match planned {
            Ok(plan) => plan,
            Err(why) => {
                tracing::debug!(site, %why, "syscall site not patched");
                self.refuse(mm, site, "unsafe");
                return Ok(None);
            }
        };
        let p = SitePatch {
            nr,
            window: plan.window_start,
            patch: &plan.patch,
            stub_addr,
            stub: &plan.stub,
            new_page,
        };
        // The second stub page mapped at one stop (sites patched ahead) is mapped from the
        // first's exit stop, where a pending signal stops the task first.
        self.with_signals_aside(tid, |s| {
            let t = &s.task(tid)?.tracee;
            if ahead.is_some() {
                tracee::fastpath::install(t, &p)
            } else {
                tracee::fastpath::apply(t, &p)
            }
        })
        .with_context(|| format!("patching the syscall site {site:#x}"))?;
        let space = self
            .fast
            .spaces
            .get_mut(&mm)
            .context("no fast-path state")?;
        match space.stub_pages.iter_mut().find(|(pg, _)| *pg == page) {
            Some((_, used)) => *used += plan.stub.len().next_multiple_of(16) as u64,
            None => space.stub_pages.push((
                page,
                STUB_START + plan.stub.len().next_multiple_of(16) as u64,
            )),
        }
        space.sites.insert(site, Site::Patched);
        self.fast.counts.sites_patched += 1;
        if let (None, Some((dev, inode, offset)), Some(m)) = (ahead, file_key, mapping) {
            let (_, code, ..) = inputs;
            let key = (dev, inode);
            if !self.fast.versions.contains_key(&key) {
                if let Some(v) = crate::site_cache::version_of(pid.as_raw(), m.start, m.end) {
                    self.fast.versions.insert(key.clone(), v);
                }
            }
            self.fast.note_known(
                &key,
                KnownSite {
                    offset,
                    nr,
                    code,
                    before: site - start,
                    after: end - site,
                },
            );
        }
        if let Some(all) = maps {
            self.fast.maps = Some((mm, stamp, all));
        }
        tracing::debug!(
            tid,
            site,
            nr,
            ahead = ahead.is_some(),
            "syscall site patched"
        );
        Ok(Some(PatchEvent {
            tid,
            nr,
            site: site + 2,
            window: plan.window_start,
            original: plan.original,
            patch: plan.patch,
            stub_addr,
            stub: plan.stub,
            new_page,
        }))
    }

    /// Leaves `site` of address space `mm` on the ptrace path (counted), for the reason `why`.
    fn refuse(&mut self, mm: i32, site: u64, why: &str) {
        tracing::debug!(site, why, "syscall site left on the ptrace path");
        if let Some(space) = self.fast.spaces.get_mut(&mm) {
            space.sites.insert(site, Site::Refused);
        }
        self.fast.counts.sites_refused += 1;
    }

    /// Whether running task `tid`, stopped at `rip`, is inside deja's own code (the library or
    /// a stub).
    pub(super) fn in_own_code(&self, tid: i32, rip: u64) -> bool {
        self.tasks
            .get(&tid)
            .is_some_and(|t| self.fast.owns_code(t.mm, rip))
    }

    /// Brings running task `tid`, stopped inside the library or a stub, back into the
    /// program's code by single steps, where a point can be taken. A library syscall
    /// interrupted by the stop is made again on the traced path. True when the task is out;
    /// false when another stop came first (a traced syscall, a signal, its end), which is then
    /// handled like any stop, after `resend` is sent again.
    pub(super) fn leave_own_code(&mut self, tid: i32, resend: Option<HeldSignal>) -> Result<bool> {
        let untraced_end = syscallbuf::loaded()?.untraced_end;
        let traced = syscallbuf::loaded()?.traced_end - 2;
        let mut aside = Vec::new();
        let mut resend = resend;
        for _ in 0..LEAVE_STEPS {
            let t = self.task(tid)?;
            let mut regs = t.tracee.regs()?;
            tracing::trace!(
                tid,
                rip = regs.rip,
                eflags = regs.eflags,
                "leaving deja's code"
            );
            if !self.in_own_code(tid, regs.rip) {
                return self.send_again(tid, aside).map(|()| true);
            }
            let t = self.task(tid)?;
            if regs.rip == untraced_end && crate::signals::restart_pending(&regs) {
                // The library's own syscall was interrupted (it blocked): the library makes
                // it again on the traced path.
                let slot = t.slot.context("a task in the library has no slot")?;
                tracee::fastpath::set_word(&t.tracee, slot, abi::OFF_INTERRUPTED, 1)?;
                regs.rax = (-libc::EINTR) as u64;
                t.tracee.set_regs(&regs)?;
            }
            let stop = if regs.rip == traced {
                t.tracee.cont(0)?;
                t.tracee.wait()?
            } else {
                let Some(stop) = tracee::state::step_one(&t.tracee)? else {
                    continue;
                };
                if tracee::state::is_step_trap(&t.tracee, stop)? {
                    continue;
                }
                stop
            };
            if let Stop::Signal(sig) = stop {
                if stop != Stop::Signal(libc::SIGTRAP) {
                    self.put_aside(tid, sig, &mut aside)?;
                    continue;
                }
            }
            aside.extend(resend.take());
            self.send_again(tid, aside)?;
            self.dispatch(tid, stop)?;
            return Ok(false);
        }
        anyhow::bail!("task {tid} did not leave deja's in-process library in {LEAVE_STEPS} steps")
    }

    /// Whether `regs` show the library's own (untraced) syscall interrupted: not a boundary
    /// of any event, the task is in the middle of its user code.
    pub(super) fn untraced_call_interrupted(&self, regs: &Regs) -> bool {
        self.fast.enabled
            && syscallbuf::loaded().is_ok_and(|l| regs.rip == l.untraced_end)
            && crate::signals::restart_pending(regs)
    }

    /// What a point of `tid` must also compare: the count of its buffered syscalls (the
    /// library's progress, which the memory digest leaves out with the rest of deja's memory).
    pub(super) fn seq_watch(&self, tid: i32) -> Result<Option<WatchedWord>> {
        let Some(t) = self.tasks.get(&tid) else {
            return Ok(None);
        };
        let Some(slot) = t.slot else {
            return Ok(None);
        };
        let h = tracee::fastpath::header(&t.tracee, slot)?;
        Ok(Some(WatchedWord {
            addr: slot + abi::OFF_SEQ,
            size: 8,
            value: h.seq,
        }))
    }
}

/// A syscall site to patch.
struct Target<'a> {
    /// Its `syscall` instruction.
    site: u64,
    /// The syscall number fixed there.
    nr: u64,
    /// The file mapping the site is in, if it is in one.
    mapping: Option<&'a tracee::maps::MapEntry>,
    /// Patched ahead of its first call: the code its function had where it was patched before.
    ahead: Option<&'a [u8]>,
}

/// Where a task will resume in user code, if known without stopping it: the end of the
/// syscall it is in, or its registers if it is stopped.
fn resume_rip(t: &crate::task::Task) -> Option<u64> {
    match &t.state {
        State::InSyscall(e) | State::Restarting(e) | State::ReadyAfter(e) => Some(e.ev.rip),
        State::Running => None,
        _ => t.tracee.regs().ok().map(|r| r.rip),
    }
}
