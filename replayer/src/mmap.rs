//! Replaying `mmap` and the files the program maps.
//!
//! A mapping is really created, at the recorded address. Anonymous memory (and `/dev/zero`)
//! is mapped anonymous with the recorded flags. A file is mapped from an **emulated file**: the
//! replay keeps one file per recorded file identity ([`FileId`]), in a private temporary
//! directory, sets its content to the trace's copy of the file when the recording mapped it,
//! and maps that file with the
//! recorded flags, so every mapping of one file aliases as in the recording (`MAP_SHARED`
//! mappings see each other's writes), a mapping past the end of the file raises `SIGBUS`,
//! `mremap` grows a mapping with the file's bytes, and `madvise(MADV_DONTNEED)` re-reads them.
//! Syscalls that changed a mapped file in the recording (`write`, `ftruncate`, `fallocate`,
//! recorded as [`FileEffect`]s) are applied to it, since the replay emulates them.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use trace_format::{FileEffect, FileId, FileRef, SyscallEvent, TraceReader};
use tracee::Tracee;

/// The arguments to run in place of a recorded `mmap` that maps no emulated file: anonymous
/// memory (or `/dev/zero`, which is anonymous memory) with the recorded flags, at the recorded
/// address.
pub fn replacement_args(ev: &SyscallEvent) -> [u64; 6] {
    let [_, len, prot, flags, _, _] = ev.args;
    let addr = ev.result as u64;
    let flags = placed(flags) | libc::MAP_ANONYMOUS;
    [addr, len, prot, flags as u64, u64::MAX, 0]
}

/// The recorded `flags` made to place the mapping at the recorded address (`MAP_FIXED` if the
/// program asked for it, else `MAP_FIXED_NOREPLACE`), without the flags an emulated file
/// refuses.
fn placed(flags: u64) -> i32 {
    let mut flags = flags as i32;
    let fixed = if flags & libc::MAP_FIXED != 0 {
        libc::MAP_FIXED
    } else {
        libc::MAP_FIXED_NOREPLACE
    };
    flags &= !(libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE | libc::MAP_SYNC);
    if flags & 0x3 == libc::MAP_SHARED_VALIDATE {
        flags = (flags & !0x3) | libc::MAP_SHARED;
    }
    flags | fixed
}

/// One emulated file.
struct Emu {
    /// The file holding the emulated file's content.
    file: File,
    /// Its path, which the tracee opens.
    path: PathBuf,
    /// The stored copy its content was last set from.
    loaded: Option<String>,
    /// Whether the content may differ from `loaded` (an applied effect, a writable shared
    /// mapping).
    changed: bool,
    /// `file` is the trace's own copy, opened read-only: the recording never changed this
    /// file (see [`EmuFiles::with_changing`]).
    direct: bool,
}

/// The replay's emulated files, by recorded identity. They live in a private directory
/// (mode 0700) under the temporary directory, removed when this is dropped.
#[derive(Default)]
pub struct EmuFiles {
    files: HashMap<FileId, Emu>,
    /// The files the recording changed, when the trace says (`TraceMeta::changing_files`).
    changing: Option<std::collections::HashSet<FileId>>,
    /// The directory of the emulated files, once made (shared with copies of the replay).
    dir: Option<std::rc::Rc<EmuDir>>,
    /// The descriptor of an emulated file each task's process holds, by task and file.
    tracee_fds: HashMap<(i32, FileId), u64>,
    /// The path the recording knew each file the replay maps by, by the (absolute) path of
    /// the file the replay maps instead: for the debugger's `/proc/PID/maps`.
    names: HashMap<PathBuf, String>,
}

/// The directory of a replay's emulated files, removed when the last copy of the replay
/// using it ends.
#[derive(Debug)]
struct EmuDir(PathBuf);

impl Drop for EmuDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("removing {}: {e}", self.0.display());
        }
    }
}

impl EmuFiles {
    /// The emulated files of a replay of a trace whose metadata lists the mapped files that
    /// changed during the recording (`None`: unknown). A file that never changed is mapped
    /// from the trace's copy itself: nothing can tell it from a copy of it (one content, the
    /// same size, every mapping of it aliasing one file), and a replay then copies nothing
    /// (a `make` maps some 50 MB of programs and libraries).
    pub fn with_changing(changing: Option<&[FileId]>) -> Self {
        EmuFiles {
            changing: changing.map(|c| c.iter().copied().collect()),
            ..Default::default()
        }
    }

    /// Notes that the replay maps `real` where the recording mapped `recorded`.
    pub fn note_name(&mut self, real: &std::path::Path, recorded: &str) {
        let real = std::fs::canonicalize(real).unwrap_or_else(|_| real.to_path_buf());
        self.names.insert(real, recorded.to_string());
    }

    /// The path the recording knew the file the replay maps from `real` by.
    pub fn recorded_name(&self, real: &std::path::Path) -> Option<&str> {
        self.names.get(real).map(String::as_str)
    }

    /// The file the replay maps where the recording mapped `recorded`.
    pub fn replay_file(&self, recorded: &str) -> Option<&std::path::Path> {
        self.names
            .iter()
            .find(|(_, r)| r.as_str() == recorded)
            .map(|(real, _)| real.as_path())
    }

    /// Whether file `id` is known never to change in the recording.
    fn unchanging(&self, id: FileId) -> bool {
        self.changing.as_ref().is_some_and(|c| !c.contains(&id))
    }

    /// Whether `ev` (a successful `mmap`, `shmat` or `shmdt`) is replayed with an emulated
    /// file.
    pub fn maps_file(ev: &SyscallEvent) -> bool {
        match ev.file_effect {
            Some(FileEffect::Map(_) | FileEffect::ShmAttach { .. }) => ev.mapped_file.is_some(),
            Some(FileEffect::ShmDetach { .. }) => true,
            _ => false,
        }
    }

    /// Replays the `mmap` of a file, `shmat` or `shmdt` event `ev` ([`Self::maps_file`]): `t`
    /// is stopped at the call's entry. Sets the emulated file's content to the recorded copy
    /// if needed, then makes the task map it with the recorded flags at the recorded address,
    /// through a descriptor of it the process keeps (injected syscalls); a `shmdt` unmaps the
    /// segment. Returns the result to compare with the recorded one; the task is left at the
    /// exit stop of the last injected call, its registers to be set by the caller.
    pub fn map(&mut self, t: &Tracee, reader: &TraceReader, ev: &SyscallEvent) -> Result<i64> {
        let stored = ev.mapped_file.as_ref();
        match (&ev.file_effect, stored) {
            (Some(FileEffect::Map(id)), Some(stored)) => {
                let [_, len, prot, flags, _, off] = ev.args;
                let args = [ev.result as u64, len, prot, placed(flags) as u64, 0, off];
                self.map_emu(t, reader, *id, stored, args)
            }
            (Some(FileEffect::ShmAttach { file, size }), Some(stored)) => {
                let shmflg = ev.args[2] as i32;
                let mut prot = libc::PROT_READ;
                if shmflg & libc::SHM_RDONLY == 0 {
                    prot |= libc::PROT_WRITE;
                }
                if shmflg & libc::SHM_EXEC != 0 {
                    prot |= libc::PROT_EXEC;
                }
                let fixed = if shmflg & libc::SHM_REMAP != 0 {
                    libc::MAP_FIXED
                } else {
                    libc::MAP_FIXED_NOREPLACE
                };
                let flags = (libc::MAP_SHARED | fixed) as u64;
                let args = [ev.result as u64, *size, prot as u64, flags, 0, 0];
                self.map_emu(t, reader, *file, stored, args)?;
                Ok(ev.result)
            }
            (Some(FileEffect::ShmDetach { size }), _) => {
                let r = t.inject_syscall(libc::SYS_munmap, [ev.args[0], *size, 0, 0, 0, 0])?;
                Ok(if r == 0 { ev.result } else { r })
            }
            _ => bail!("the {} event names no mapped file", syscalls::name(ev.nr)),
        }
    }

    /// Maps emulated file `id` (content `stored`) with `mmap(args)`, the descriptor argument
    /// replaced by the tracee's own descriptor of the emulated file.
    fn map_emu(
        &mut self,
        t: &Tracee,
        reader: &TraceReader,
        id: FileId,
        stored: &FileRef,
        mut args: [u64; 6],
    ) -> Result<i64> {
        let emu = self.load(id, reader, stored)?;
        if args[3] & libc::MAP_SHARED as u64 != 0 && args[2] & libc::PROT_WRITE as u64 != 0 {
            if emu.direct {
                bail!(
                    "the trace lists {} as never changed, yet the recording mapped it shared \
                     and writable",
                    stored.path
                );
            }
            emu.changed = true;
        }
        args[4] = self.tracee_fd(t, id)?;
        t.inject_syscall(libc::SYS_mmap, args)
            .context("mapping the emulated file in the tracee")
    }

    /// The path of emulated file `id`, its content set to the stored copy `stored` (for the
    /// in-process library to open and map: a buffered `mmap`).
    pub fn path_of(
        &mut self,
        id: FileId,
        reader: &TraceReader,
        stored: &FileRef,
    ) -> Result<PathBuf> {
        Ok(self.load(id, reader, stored)?.path.clone())
    }

    /// A descriptor of emulated file `id` in the process of task `t`, opened (injected) once
    /// and kept: mappings of one file made through one open file are one `struct file` to the
    /// kernel, which merges adjacent mappings of it as in the recording (a later `mremap`
    /// across them depends on that). A descriptor a forked child inherited is found by its
    /// inode.
    fn tracee_fd(&mut self, t: &Tracee, id: FileId) -> Result<u64> {
        let emu = self
            .files
            .get(&id)
            .context("an emulated file that was never loaded")?;
        let meta = emu.file.metadata()?;
        let want = (meta.dev(), meta.ino());
        let pid = t.pid().as_raw();
        let holds = |fd: u64| {
            std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
                .is_ok_and(|m| (m.dev(), m.ino()) == want)
        };
        // This process's own descriptor first; else one a parent had (a forked child holds
        // its parent's descriptors), each number tried once.
        let own = self.tracee_fds.get(&(pid, id)).copied();
        let mut tried = std::collections::HashSet::new();
        let known = own
            .into_iter()
            .chain(
                self.tracee_fds
                    .iter()
                    .filter(|((_, f), _)| *f == id)
                    .map(|(_, fd)| *fd),
            )
            .filter(|fd| tried.insert(*fd))
            .find(|fd| holds(*fd));
        let fd = match known {
            Some(fd) => fd,
            // By its path; or, where the task sees another /tmp (a mount namespace), through
            // the replayer's descriptor (which a task in another user namespace may not open).
            None => {
                let write = !emu.direct;
                open_in(t, &emu.path.to_string_lossy(), write).or_else(|by_path| {
                    let proc = format!("/proc/{}/fd/{}", std::process::id(), emu.file.as_raw_fd());
                    open_in(t, &proc, write).map_err(|by_proc| by_path.context(by_proc))
                })?
            }
        };
        self.tracee_fds.insert((pid, id), fd);
        Ok(fd)
    }

    /// The directory of the emulated files, made on first use.
    fn dir(&mut self) -> Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.0.clone());
        }
        // One directory per replay session of this process (a debugger restarts replays).
        static SESSIONS: AtomicU64 = AtomicU64::new(0);
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("deja-replay-{}-{n}", std::process::id()));
        // A directory left by a killed replayer that had this process id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        self.dir = Some(std::rc::Rc::new(EmuDir(dir.clone())));
        Ok(dir)
    }

    /// Whether no emulated file can change: each is the trace's own copy, which the
    /// recording never changed (a copy of the replay forked now sees the same files later).
    pub fn unchangeable(&self) -> bool {
        self.files.values().all(|e| e.direct)
    }

    /// A copy for a copy of the replay whose processes are forked from these (`pids`: process
    /// id here → its copy's), sharing the files.
    pub fn try_clone(&self, pids: &HashMap<i32, i32>) -> Result<EmuFiles> {
        let mut files = HashMap::new();
        for (&id, e) in &self.files {
            let file = e.file.try_clone().context("sharing an emulated file")?;
            files.insert(
                id,
                Emu {
                    file,
                    path: e.path.clone(),
                    loaded: e.loaded.clone(),
                    changed: e.changed,
                    direct: e.direct,
                },
            );
        }
        Ok(EmuFiles {
            files,
            names: self.names.clone(),
            changing: self.changing.clone(),
            dir: self.dir.clone(),
            tracee_fds: self
                .tracee_fds
                .iter()
                .filter_map(|(&(pid, id), &fd)| Some(((*pids.get(&pid)?, id), fd)))
                .collect(),
        })
    }

    /// The emulated file `id`, its content set to the stored copy `stored` unless it already
    /// holds exactly that.
    fn load(&mut self, id: FileId, reader: &TraceReader, stored: &FileRef) -> Result<&mut Emu> {
        if !self.files.contains_key(&id) {
            let emu = if self.unchanging(id) {
                // Verified, and opened without following a symlink.
                let (file, path) = reader.open_file(stored)?;
                Emu {
                    file,
                    path,
                    loaded: Some(stored.hash.clone()),
                    changed: false,
                    direct: true,
                }
            } else {
                // Named once for all copies of this replay, which share the directory.
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let path = self.dir()?.join(n.to_string());
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating the emulated copy of {}", stored.path))?;
                Emu {
                    file,
                    path,
                    loaded: None,
                    changed: false,
                    direct: false,
                }
            };
            self.note_name(&emu.path, &stored.path);
            self.files.insert(id, emu);
        }
        let emu = self
            .files
            .get_mut(&id)
            .context("an emulated file just made")?;
        if emu.changed || emu.loaded.as_deref() != Some(stored.hash.as_str()) {
            if emu.direct {
                bail!(
                    "the trace lists {} as never changed, yet it stored two contents of it",
                    stored.path
                );
            }
            let (from, _) = reader.open_file(stored)?;
            trace_format::sparse::overwrite(&from, &emu.file, stored.size)
                .with_context(|| format!("loading the trace's copy of {}", stored.path))?;
            emu.loaded = Some(stored.hash.clone());
            emu.changed = false;
        }
        Ok(emu)
    }

    /// Applies the event's effect on a mapped file (`write`, `ftruncate`, `fallocate`) to the
    /// emulated file; `t` is stopped at the call's entry, its buffers as the recording's were.
    pub fn apply(&mut self, t: &Tracee, ev: &SyscallEvent) -> Result<()> {
        let file = match &ev.file_effect {
            Some(
                FileEffect::Write { file, .. }
                | FileEffect::Resize { file, .. }
                | FileEffect::Fallocate { file, .. },
            ) => file,
            _ => return Ok(()),
        };
        // A file the replay never mapped needs no copy: nothing shows its content.
        let Some(emu) = self.files.get_mut(file) else {
            return Ok(());
        };
        if emu.direct {
            bail!("the trace lists a file as never changed, yet the recording changed it");
        }
        emu.changed = true;
        match ev.file_effect {
            Some(FileEffect::Write { offset, .. }) => {
                let data = written_bytes(t, ev)?;
                emu.file
                    .write_all_at(&data, offset)
                    .context("applying a recorded write to an emulated file")?;
            }
            Some(FileEffect::Resize { size, .. }) => emu
                .file
                .set_len(size)
                .context("applying a recorded ftruncate to an emulated file")?,
            Some(FileEffect::Fallocate {
                mode, offset, len, ..
            }) => {
                // SAFETY: fallocate on a descriptor `emu.file` owns; no memory is passed.
                let r = unsafe {
                    libc::fallocate(emu.file.as_raw_fd(), mode, offset as i64, len as i64)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error())
                        .context("applying a recorded fallocate to an emulated file");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Makes the task (at a syscall entry) open `path` (read-write if `write`, else read-only) and
/// returns the descriptor. The path is written below the stack's red zone and the bytes there
/// restored afterwards.
fn open_in(t: &Tracee, path: &str, write: bool) -> Result<u64> {
    let rsp = t.regs()?.rsp;
    let at = (rsp - 128 - 256) & !15;
    let mut saved = [0u8; 256];
    t.read_mem(at, &mut saved)
        .context("reading the stack below the red zone")?;
    let mut bytes = path.as_bytes().to_vec();
    bytes.push(0);
    t.write_mem(at, &bytes)?;
    let fd = t.inject_syscall(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            at,
            (if write { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    );
    t.write_mem(at, &saved)
        .context("restoring the stack below the red zone")?;
    let fd = fd.context("opening the emulated file in the tracee")?;
    if fd < 0 {
        bail!(
            "the tracee could not open its emulated file {path}: {}",
            std::io::Error::from_raw_os_error(-fd as i32)
        );
    }
    Ok(fd as u64)
}

/// The `result` bytes a write-family call of `ev` took from its buffers.
pub fn written_bytes(t: &Tracee, ev: &SyscallEvent) -> Result<Vec<u8>> {
    let total = ev.result.max(0) as usize;
    let mut data = vec![0u8; total];
    match ev.nr as i64 {
        libc::SYS_write | libc::SYS_pwrite64 => t.read_mem(ev.args[1], &mut data)?,
        _ => {
            // An iovec array: base, length pairs.
            let mut done = 0;
            for i in 0..ev.args[2].min(1024) {
                if done == total {
                    break;
                }
                let mut e = [0u8; 16];
                t.read_mem(ev.args[1] + i * 16, &mut e)?;
                let base = u64::from_le_bytes(e[..8].try_into()?);
                let len = u64::from_le_bytes(e[8..].try_into()?) as usize;
                let n = len.min(total - done);
                if let Some(chunk) = data.get_mut(done..done + n) {
                    t.read_mem(base, chunk)?;
                }
                done += n;
            }
        }
    }
    Ok(data)
}
