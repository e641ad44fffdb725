//! gdb's host I/O (`vFile:*`), with which it reads the debugged process's `/proc` files
//! (`info proc`, `info proc mappings`) and, with a `target:` sysroot, the program's files.
//!
//! Everything is read-only: an open for writing is refused (`EACCES`). `/proc/PID/...` (and
//! `/proc/PID/task/TID/...`) of a task of the debugged process, named by its recorded id, is
//! the replayed process's file as the recording would show it (see
//! `replayer::DebugReplay::proc_file`); any other `/proc` or `/sys` path is refused. A file the
//! recording mapped is the replay's copy of it (its recorded content); any other path is the
//! regular file of this machine at that path, read-only, as gdb reads it itself with a
//! local sysroot.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use gdbstub::target::ext::host_io::{
    FsKind, HostIo, HostIoClose, HostIoCloseOps, HostIoErrno, HostIoError, HostIoFstat,
    HostIoFstatOps, HostIoOpen, HostIoOpenFlags, HostIoOpenMode, HostIoOpenOps, HostIoPread,
    HostIoPreadOps, HostIoReadlink, HostIoReadlinkOps, HostIoResult, HostIoSetfs, HostIoSetfsOps,
    HostIoStat,
};
use trace_format::Tid;

use crate::target::ReplayTarget;

/// The most files gdb may have open at once.
const MAX_OPEN: usize = 64;

/// A file gdb opened.
enum Open {
    /// A `/proc` file, read whole at the open (as the kernel's `seq_file`s are consistent
    /// per read).
    Bytes(Vec<u8>),
    /// A file of the trace or of this machine.
    File(File),
}

/// The files gdb has open, by the descriptor numbers it was given.
#[derive(Default)]
pub struct OpenFiles {
    files: HashMap<u32, Open>,
    next: u32,
}

impl OpenFiles {
    fn add(&mut self, open: Open) -> HostIoResult<u32, ReplayTarget> {
        if self.files.len() >= MAX_OPEN {
            return Err(HostIoError::Errno(HostIoErrno::EMFILE));
        }
        while self.files.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        let fd = self.next;
        self.next = self.next.wrapping_add(1);
        self.files.insert(fd, open);
        Ok(fd)
    }
}

/// A path of `/proc`: the task it names (`/proc/ID/...` or `/proc/ID/task/TID/...`, the
/// thread if both) and the file under it. `None` for a path outside `/proc/<number>/`.
fn proc_path(path: &str) -> Option<(Tid, &str)> {
    let rest = path.strip_prefix("/proc/")?;
    let (id, file) = rest.split_once('/')?;
    let id: Tid = id.parse().ok()?;
    if let Some(task) = file.strip_prefix("task/") {
        let (tid, file) = task.split_once('/')?;
        return Some((tid.parse().ok()?, file));
    }
    Some((id, file))
}

fn errno<T>(e: HostIoErrno) -> HostIoResult<T, ReplayTarget> {
    Err(HostIoError::Errno(e))
}

/// Why a `/proc` request failed, on deja's terminal (gdb only shows an error number).
fn proc_error<T>(path: &str, e: anyhow::Error) -> HostIoResult<T, ReplayTarget> {
    eprintln!("deja: cannot serve {path} to gdb: {e:#}");
    errno(HostIoErrno::ENOENT)
}

/// Whether gdb may not read `path` of this machine: a kernel file other than the served
/// `/proc` ones.
fn forbidden(path: &str) -> bool {
    path.starts_with("/proc") || path.starts_with("/sys") || path.starts_with("/dev")
}

impl HostIo for ReplayTarget {
    fn support_open(&mut self) -> Option<HostIoOpenOps<'_, Self>> {
        Some(self)
    }

    fn support_close(&mut self) -> Option<HostIoCloseOps<'_, Self>> {
        Some(self)
    }

    fn support_pread(&mut self) -> Option<HostIoPreadOps<'_, Self>> {
        Some(self)
    }

    fn support_fstat(&mut self) -> Option<HostIoFstatOps<'_, Self>> {
        Some(self)
    }

    fn support_readlink(&mut self) -> Option<HostIoReadlinkOps<'_, Self>> {
        Some(self)
    }

    fn support_setfs(&mut self) -> Option<HostIoSetfsOps<'_, Self>> {
        Some(self)
    }
}

impl HostIoOpen for ReplayTarget {
    fn open(
        &mut self,
        filename: &[u8],
        flags: HostIoOpenFlags,
        _mode: HostIoOpenMode,
    ) -> HostIoResult<u32, Self> {
        let writes = HostIoOpenFlags::O_WRONLY
            | HostIoOpenFlags::O_RDWR
            | HostIoOpenFlags::O_APPEND
            | HostIoOpenFlags::O_CREAT
            | HostIoOpenFlags::O_TRUNC
            | HostIoOpenFlags::O_EXCL;
        if flags.intersects(writes) {
            return errno(HostIoErrno::EACCES);
        }
        let Ok(path) = std::str::from_utf8(filename) else {
            return errno(HostIoErrno::ENOENT);
        };
        if let Some((id, file)) = proc_path(path) {
            if !replayer::PROC_FILES.contains(&file) {
                return errno(HostIoErrno::EACCES);
            }
            let bytes = match self.replay_ref().proc_file(id, file) {
                Ok(b) => b,
                Err(e) => return proc_error(path, e),
            };
            return self.files.add(Open::Bytes(bytes));
        }
        if forbidden(path) {
            return errno(HostIoErrno::EACCES);
        }
        let real = self
            .replay_ref()
            .mapped_file(path)
            .map_or_else(|| std::path::PathBuf::from(path), |p| p.to_path_buf());
        let file = File::open(&real)?;
        if !file.metadata()?.is_file() {
            return errno(HostIoErrno::EACCES);
        }
        self.files.add(Open::File(file))
    }
}

impl HostIoClose for ReplayTarget {
    fn close(&mut self, fd: u32) -> HostIoResult<(), Self> {
        match self.files.files.remove(&fd) {
            Some(_) => Ok(()),
            None => errno(HostIoErrno::EBADF),
        }
    }
}

impl HostIoPread for ReplayTarget {
    fn pread(
        &mut self,
        fd: u32,
        count: usize,
        offset: u64,
        buf: &mut [u8],
    ) -> HostIoResult<usize, Self> {
        let count = count.min(buf.len());
        match self.files.files.get(&fd) {
            Some(Open::Bytes(bytes)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let n = (bytes.len() - start).min(count);
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                Ok(n)
            }
            Some(Open::File(f)) => Ok(f.read_at(&mut buf[..count], offset)?),
            None => errno(HostIoErrno::EBADF),
        }
    }
}

impl HostIoFstat for ReplayTarget {
    fn fstat(&mut self, fd: u32) -> HostIoResult<HostIoStat, Self> {
        let regular = HostIoOpenMode::S_IFREG | HostIoOpenMode::S_IRUSR;
        let stat = match self.files.files.get(&fd) {
            Some(Open::Bytes(bytes)) => HostIoStat {
                st_dev: 0,
                st_ino: 0,
                st_mode: regular,
                st_nlink: 1,
                st_uid: 0,
                st_gid: 0,
                st_rdev: 0,
                st_size: bytes.len() as u64,
                st_blksize: 4096,
                st_blocks: 0,
                st_atime: 0,
                st_mtime: 0,
                st_ctime: 0,
            },
            Some(Open::File(f)) => {
                let m = f.metadata()?;
                HostIoStat {
                    st_dev: m.dev() as u32,
                    st_ino: m.ino() as u32,
                    st_mode: HostIoOpenMode::from_bits_truncate(m.mode()),
                    st_nlink: m.nlink() as u32,
                    st_uid: m.uid(),
                    st_gid: m.gid(),
                    st_rdev: m.rdev() as u32,
                    st_size: m.size(),
                    st_blksize: m.blksize(),
                    st_blocks: m.blocks(),
                    st_atime: m.atime() as u32,
                    st_mtime: m.mtime() as u32,
                    st_ctime: m.ctime() as u32,
                }
            }
            None => return errno(HostIoErrno::EBADF),
        };
        Ok(stat)
    }
}

impl HostIoReadlink for ReplayTarget {
    fn readlink(&mut self, filename: &[u8], buf: &mut [u8]) -> HostIoResult<usize, Self> {
        let Ok(path) = std::str::from_utf8(filename) else {
            return errno(HostIoErrno::ENOENT);
        };
        let target = match proc_path(path) {
            Some((id, link)) if replayer::PROC_LINKS.contains(&link) => {
                match self.replay_ref().proc_link(id, link) {
                    Ok(t) => t,
                    Err(e) => return proc_error(path, e),
                }
            }
            Some(_) => return errno(HostIoErrno::EACCES),
            None if forbidden(path) => return errno(HostIoErrno::EACCES),
            None => std::fs::read_link(path)?.display().to_string(),
        };
        let bytes = target.as_bytes();
        if bytes.len() > buf.len() {
            return errno(HostIoErrno::ENAMETOOLONG);
        }
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(bytes.len())
    }
}

impl HostIoSetfs for ReplayTarget {
    /// Every process of a replay sees this machine's file system (with the recorded
    /// `/proc` files): any choice is fine.
    fn setfs(&mut self, _fs: FsKind) -> HostIoResult<(), Self> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_name_a_task_and_a_file() {
        assert_eq!(proc_path("/proc/123/maps"), Some((123, "maps")));
        assert_eq!(proc_path("/proc/123/task/124/maps"), Some((124, "maps")));
        assert_eq!(proc_path("/proc/self/maps"), None);
        assert_eq!(proc_path("/proc/123"), None);
        assert_eq!(proc_path("/usr/lib/libc.so.6"), None);
        assert!(forbidden("/proc/self/maps"));
        assert!(forbidden("/sys/kernel/notes"));
        assert!(!forbidden("/usr/lib/libc.so.6"));
    }
}
