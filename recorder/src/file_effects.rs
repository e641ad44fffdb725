//! Files the program maps, and what syscalls do to them: an `mmap` of a file stores the file
//! and names it by its identity ([`FileEffect::Map`]); a later `write`, `ftruncate` or
//! `fallocate` to a mapped file is recorded as a [`FileEffect`] the replay applies to its own
//! copy of the file, so the replayed mappings change as the recorded ones did.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use anyhow::{bail, Context, Result};
use syscalls::Call;
use trace_format::{FileEffect, FileId, SyscallEvent, TraceWriter};
use tracee::Tracee;

use crate::mapped_files::MappedFiles;

/// `/dev/zero`'s device number (major 1, minor 5): a mapping of it is anonymous memory.
const DEV_ZERO: u64 = libc::makedev(1, 5);

/// The files mapped so far, each with whether it may have changed since it was last stored
/// (a writable shared mapping of it, or a recorded effect on it).
#[derive(Default)]
pub struct FileEffects {
    mapped: HashMap<FileId, bool>,
    /// The mapped files whose content changed at any time (see
    /// `TraceMeta::changing_files`).
    ever_changed: std::collections::HashSet<FileId>,
    /// System V segments by the address they were attached at, with their sizes.
    shm_attached: HashMap<u64, u64>,
    /// Devices seen under written descriptors, and whether each is a procfs instance.
    procfs: HashMap<u64, bool>,
}

/// The identity and metadata of what the `/proc` path `link` names.
fn identity(link: &str) -> Option<(FileId, std::fs::Metadata)> {
    let m = std::fs::metadata(link).ok()?;
    Some((
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        },
        m,
    ))
}

/// The task whose memory descriptor `fd` of process `pid` is (`/proc/PID/mem`,
/// `/proc/PID/task/TID/mem`), if it is one.
fn proc_mem_task(pid: i32, fd: u64) -> Option<i32> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let target = target.to_str()?;
    let rest = target.strip_prefix("/proc/")?.strip_suffix("/mem")?;
    let task = rest.rsplit('/').next()?;
    task.parse().ok()
}

/// The file offset of descriptor `fd` of process `pid` (`/proc/PID/fdinfo/FD`).
fn fd_pos(pid: i32, fd: u64) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("pos:"))
        .and_then(|v| v.trim().parse().ok())
}

impl FileEffects {
    /// Whether device `dev`, the file system of what `link` names, is a procfs instance
    /// (asked of the kernel once per device: `statfs`).
    fn is_procfs(&mut self, dev: u64, link: &str) -> bool {
        *self.procfs.entry(dev).or_insert_with(|| {
            let Ok(path) = std::ffi::CString::new(link) else {
                return false;
            };
            // SAFETY: an all-zero statfs is a valid value of this plain C struct.
            let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: `path` is NUL-terminated and `fs` is writable; both outlive the call.
            let r = unsafe { libc::statfs(path.as_ptr(), &mut fs) };
            r == 0 && fs.f_type == libc::PROC_SUPER_MAGIC
        })
    }

    /// At the exit stop of any syscall `call` of task `tracee`, with its event `ev`: stores a
    /// mapped file or System V segment and records the effects on mapped files (see the
    /// methods below). Returns the path of a file mapped shared that a process outside the
    /// recording could change unrecorded (writable, or under `/dev/shm`), to warn about.
    pub(crate) fn after_syscall(
        &mut self,
        files: &mut MappedFiles,
        writer: &mut TraceWriter,
        tracee: &Tracee,
        call: &Call,
        ev: &mut SyscallEvent,
    ) -> Result<Option<String>> {
        let pid = tracee.pid().as_raw();
        let args = call.args;
        let ok = !syscalls::is_error(call.result);
        match call.nr as i64 {
            libc::SYS_mmap if ok && args[3] & libc::MAP_ANONYMOUS as u64 == 0 => {
                self.on_mmap(files, writer, pid, ev)?;
                let shared = args[3] & libc::MAP_SHARED as u64 != 0;
                Ok(ev.mapped_file.as_ref().and_then(|f| {
                    let writable = args[2] & libc::PROT_WRITE as u64 != 0;
                    (shared && (writable || f.path.starts_with("/dev/shm/")))
                        .then(|| f.path.clone())
                }))
            }
            libc::SYS_shmat | libc::SYS_shmdt if ok => {
                self.on_shm(files, writer, tracee, ev)?;
                Ok(None)
            }
            _ => {
                ev.file_effect = self.effect(pid, call);
                Ok(None)
            }
        }
    }

    /// At the exit of a successful `mmap` of descriptor `args[4]` by process `pid`: stores the
    /// file (afresh when it may have changed since its last copy) and sets the event's
    /// `mapped_file` and `file_effect`. A `/dev/zero` mapping gets neither: replay maps
    /// anonymous memory with the same flags.
    fn on_mmap(
        &mut self,
        files: &mut MappedFiles,
        writer: &mut TraceWriter,
        pid: i32,
        ev: &mut SyscallEvent,
    ) -> Result<()> {
        let args = ev.args;
        let link = format!("/proc/{pid}/fd/{}", args[4]);
        let Some((id, meta)) = identity(&link) else {
            bail!(
                "mapping descriptor {} of process {pid}: it is gone",
                args[4]
            );
        };
        if meta.file_type().is_char_device() && meta.rdev() == DEV_ZERO {
            return Ok(());
        }
        let fresh = self.mapped.get(&id).copied().unwrap_or(false);
        let f = files.store_link(writer, &link, Some(&meta), fresh)?;
        let shared_writable =
            args[3] & libc::MAP_SHARED as u64 != 0 && args[2] & libc::PROT_WRITE as u64 != 0;
        let changed = self.mapped.entry(id).or_insert(false);
        *changed |= shared_writable;
        if shared_writable {
            self.ever_changed.insert(id);
        }
        ev.mapped_file = Some(f);
        ev.file_effect = Some(FileEffect::Map(id));
        Ok(())
    }

    /// At the exit of a successful `shmat` or `shmdt` of task `tracee`: a `shmat` stores the
    /// segment's bytes as they are now, as the content of the emulated segment the replay
    /// maps ([`FileEffect::ShmAttach`]); a `shmdt` records the size to unmap.
    fn on_shm(
        &mut self,
        files: &mut MappedFiles,
        writer: &mut TraceWriter,
        tracee: &Tracee,
        ev: &mut SyscallEvent,
    ) -> Result<()> {
        if ev.nr == libc::SYS_shmdt as u64 {
            let Some(&size) = self.shm_attached.get(&ev.args[0]) else {
                bail!(
                    "shmdt({:#x}): no System V segment was attached there in the recording",
                    ev.args[0]
                );
            };
            ev.file_effect = Some(FileEffect::ShmDetach { size });
            return Ok(());
        }
        let shmid = ev.args[0] as i32;
        // SAFETY: an all-zero shmid_ds is a valid value of this plain C struct.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one shmid_ds into `ds`, which outlives the call.
        if unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("reading the size of System V segment {shmid}"));
        }
        let size = ds.shm_segsz as u64;
        let addr = ev.result as u64;
        let mut bytes = vec![0u8; size as usize];
        tracee
            .read_mem(addr, &mut bytes)
            .with_context(|| format!("reading System V segment {shmid} at {addr:#x}"))?;
        let copy = memfd_with(&bytes)?;
        let source = format!("/proc/self/fd/{}", copy.as_raw_fd());
        let f = files.store(writer, &source, &format!("SYSV shm {shmid}"), true)?;
        self.shm_attached.insert(addr, size);
        ev.mapped_file = Some(f);
        let file = FileId {
            dev: 0,
            ino: shmid as u64,
        };
        self.ever_changed.insert(file);
        ev.file_effect = Some(FileEffect::ShmAttach { file, size });
        Ok(())
    }

    /// At the exit of any other syscall of process `pid`: the effect it had on a mapped file
    /// (`write`, `pwrite64`, `writev`, `pwritev`, `pwritev2`, `ftruncate`, `fallocate`), if any.
    fn effect(&mut self, pid: i32, call: &Call) -> Option<FileEffect> {
        if call.result < 0 {
            return None;
        }
        let fd_file = |fd: u64| identity(&format!("/proc/{pid}/fd/{fd}")).map(|(id, _)| id);
        let nr = call.nr as i64;
        let effect = match nr {
            libc::SYS_write
            | libc::SYS_writev
            | libc::SYS_pwrite64
            | libc::SYS_pwritev
            | libc::SYS_pwritev2
                if call.result > 0 =>
            {
                let explicit = match nr {
                    libc::SYS_pwrite64 => Some(call.arg(3)),
                    libc::SYS_pwritev => Some(call.arg(3)),
                    libc::SYS_pwritev2 if call.arg(3) as i64 != -1 => Some(call.arg(3)),
                    _ => None,
                };
                let offset = || match explicit {
                    Some(o) => Some(o),
                    // The descriptor's offset moved past the bytes written.
                    None => fd_pos(pid, call.arg(0))?.checked_sub(call.ret()),
                };
                // One stat per write: the file's identity, and whether it lives in procfs
                // (only then is the link read, for /proc/PID/mem).
                let file = fd_file(call.arg(0))?;
                if self.is_procfs(file.dev, &format!("/proc/{pid}/fd/{}", call.arg(0))) {
                    let tid = proc_mem_task(pid, call.arg(0))?;
                    return Some(FileEffect::ProcMem {
                        tid,
                        addr: offset()?,
                    });
                }
                if !self.mapped.contains_key(&file) {
                    return None;
                }
                FileEffect::Write {
                    file,
                    offset: offset()?,
                }
            }
            _ if self.mapped.is_empty() => return None,
            libc::SYS_ftruncate => FileEffect::Resize {
                file: fd_file(call.arg(0))?,
                size: call.arg(1),
            },
            libc::SYS_fallocate => FileEffect::Fallocate {
                file: fd_file(call.arg(0))?,
                mode: call.arg(1) as i32,
                offset: call.arg(2),
                len: call.arg(3),
            },
            _ => return None,
        };
        let file = match &effect {
            FileEffect::Write { file, .. }
            | FileEffect::Resize { file, .. }
            | FileEffect::Fallocate { file, .. } => *file,
            _ => return None,
        };
        let changed = self.mapped.get_mut(&file)?;
        *changed = true;
        self.ever_changed.insert(file);
        Some(effect)
    }

    /// Whether file `id` may have changed since it was stored (a writable shared mapping of
    /// it, a recorded effect on it, at any time).
    pub fn may_have_changed(&self, id: &FileId) -> bool {
        self.ever_changed.contains(id) || self.mapped.get(id).copied().unwrap_or(false)
    }

    /// File `id` was mapped by a buffered `mmap` (of a version stored before): later writes
    /// to it are followed as for a traced one.
    pub fn note_mapped(&mut self, id: FileId) {
        self.mapped.entry(id).or_insert(false);
    }

    /// The mapped files whose content changed during the recording, `files` being the
    /// recording's stored files (a file stored with two contents changed too).
    pub fn changing_files(&self, files: &MappedFiles) -> Vec<FileId> {
        let mut all = self.ever_changed.clone();
        all.extend(files.with_several_contents());
        let mut all: Vec<FileId> = all.into_iter().collect();
        all.sort_by_key(|f| (f.dev, f.ino));
        all
    }
}

/// A new memfd holding `bytes`.
fn memfd_with(bytes: &[u8]) -> Result<File> {
    let name = c"deja-shm";
    // SAFETY: memfd_create with a NUL-terminated name that outlives the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("creating a memfd");
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let f = unsafe { File::from_raw_fd(fd) };
    std::io::Write::write_all(&mut &f, bytes).context("copying a System V segment")?;
    Ok(f)
}
