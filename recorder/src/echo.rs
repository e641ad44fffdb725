//! Which descriptors of the program write to the recorder's stdout or stderr, so the replay
//! can echo exactly what the program printed there (and check it printed the same).
//!
//! The kernel answers exactly: `kcmp(KCMP_FILE)` tells whether a task's descriptor is the same
//! open file description as the recorder's own stdout or stderr, however the task got it
//! (`dup`, inherited, passed over a socket, `pidfd_getfd`, a thread's `unshare(CLONE_FILES)`
//! table). [`EchoFds`], which follows `dup`/`close` per process, is the fallback for a kernel
//! without `kcmp`.

use std::collections::HashMap;

/// `KCMP_FILE` of `<linux/kcmp.h>`.
const KCMP_FILE: libc::c_int = 0;

/// The stream (1 stdout, 2 stderr) that descriptor `fd` of task `tid` writes to, if any:
/// asked of the kernel, else of `fallback` (the task's process's alias table). When stdout
/// and stderr are one file, a write to descriptor 2 counts as stderr, any other as stdout.
pub fn stream_of(tid: i32, fd: u64, fallback: Option<&EchoFds>) -> Option<u8> {
    let order: [u8; 2] = if fd == 2 { [2, 1] } else { [1, 2] };
    let me = std::process::id() as libc::pid_t;
    let mut asked = false;
    for stream in order {
        // SAFETY: kcmp only compares kernel objects named by its integer arguments; it reads
        // and writes no memory of this process.
        let r = unsafe {
            libc::syscall(
                libc::SYS_kcmp,
                tid as libc::pid_t,
                me,
                KCMP_FILE,
                fd,
                libc::c_ulong::from(stream),
            )
        };
        match r {
            0 => return Some(stream),
            r if r > 0 => asked = true,
            // EBADF: the task has no such descriptor, or the recorder closed its own stream.
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF) => {
                asked = true
            }
            _ => {}
        }
    }
    if asked {
        None
    } else {
        fallback.and_then(|f| f.stream(fd))
    }
}

/// Descriptor → stream (1 or 2) it aliases, for one process's descriptor table.
#[derive(Clone)]
pub struct EchoFds {
    aliases: HashMap<u64, u8>,
}

impl Default for EchoFds {
    fn default() -> Self {
        EchoFds {
            aliases: HashMap::from([(1, 1), (2, 2)]),
        }
    }
}

impl EchoFds {
    /// The stream a write to `fd` reaches, if any.
    pub fn stream(&self, fd: u64) -> Option<u8> {
        self.aliases.get(&fd).copied()
    }

    /// Updates the aliases after a successful syscall `nr(args) = result`.
    pub fn after_syscall(&mut self, nr: u64, args: &[u64; 6], result: i64) {
        if result < 0 {
            return;
        }
        let new = result as u64;
        match nr as i64 {
            libc::SYS_close => {
                self.aliases.remove(&args[0]);
            }
            libc::SYS_dup => self.copy(args[0], new),
            libc::SYS_dup2 | libc::SYS_dup3 => self.copy(args[0], args[1]),
            libc::SYS_fcntl if matches!(args[1] as i32, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) => {
                self.copy(args[0], new)
            }
            // With CLOSE_RANGE_CLOEXEC nothing is closed now.
            libc::SYS_close_range if args[2] & libc::CLOSE_RANGE_CLOEXEC as u64 == 0 => {
                let (lo, hi) = (args[0], args[1]);
                self.aliases.retain(|fd, _| *fd < lo || *fd > hi);
            }
            // Any call that creates a descriptor gets a fresh number, which a close freed.
            _ => {}
        }
    }

    fn copy(&mut self, from: u64, to: u64) {
        if from == to {
            return;
        }
        match self.aliases.get(&from).copied() {
            Some(s) => {
                self.aliases.insert(to, s);
            }
            None => {
                self.aliases.remove(&to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_dup_and_close() {
        let mut e = EchoFds::default();
        e.after_syscall(libc::SYS_dup as u64, &[1, 0, 0, 0, 0, 0], 5);
        assert_eq!(e.stream(5), Some(1));
        e.after_syscall(libc::SYS_dup2 as u64, &[7, 1, 0, 0, 0, 0], 1);
        assert_eq!(e.stream(1), None);
        e.after_syscall(libc::SYS_close as u64, &[5, 0, 0, 0, 0, 0], 0);
        assert_eq!(e.stream(5), None);
        assert_eq!(e.stream(2), Some(2));
    }

    #[test]
    fn close_range_closes_unless_it_only_marks_close_on_exec() {
        let mut e = EchoFds::default();
        let cloexec = libc::CLOSE_RANGE_CLOEXEC as u64;
        e.after_syscall(libc::SYS_close_range as u64, &[0, 10, cloexec, 0, 0, 0], 0);
        assert_eq!(e.stream(1), Some(1));
        e.after_syscall(libc::SYS_close_range as u64, &[2, 10, 0, 0, 0, 0], 0);
        assert_eq!(e.stream(1), Some(1));
        assert_eq!(e.stream(2), None);
    }
}
