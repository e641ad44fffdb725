//! What the `clone` family asks of the kernel: flags, and where ids get written.

use crate::Memory;

/// `SYS_clone`, `SYS_fork`, `SYS_vfork`, `SYS_clone3` on x86-64.
const CLONE: u64 = libc::SYS_clone as u64;
const FORK: u64 = libc::SYS_fork as u64;
const VFORK: u64 = libc::SYS_vfork as u64;
const CLONE3: u64 = libc::SYS_clone3 as u64;

/// The parts of a `clone`-family call that the recorder and replayer need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneArgs {
    /// The clone flags (`fork` and `vfork` imply theirs).
    pub flags: u64,
    /// Where the kernel writes the child's id in the parent (`CLONE_PARENT_SETTID`).
    pub parent_tid: Option<u64>,
    /// Where the kernel writes the child's id in the child (`CLONE_CHILD_SETTID`).
    pub child_tid: Option<u64>,
    /// Where the kernel writes the new pidfd in the parent (`CLONE_PIDFD`).
    pub pidfd: Option<u64>,
}

impl CloneArgs {
    /// Whether the new task is a thread of the caller's process.
    pub fn is_thread(&self) -> bool {
        self.flags & libc::CLONE_THREAD as u64 != 0
    }

    /// Regions of the parent's memory the kernel writes while creating the child.
    pub fn parent_regions(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if let Some(a) = self.parent_tid {
            out.push((a, 4));
        }
        if let Some(a) = self.pidfd {
            out.push((a, 4));
        }
        out
    }
}

/// Decodes the clone flags and id pointers of syscall `nr` with arguments `args` (for
/// `clone3`, from its `struct clone_args` in tracee memory). `None` if `nr` is not a clone
/// or its arguments cannot be read.
pub fn clone_args(nr: u64, args: &[u64; 6], mem: &dyn Memory) -> Option<CloneArgs> {
    let has = |flags: u64, f: i32| flags & f as u64 != 0;
    let (flags, pidfd_at, child_at, parent_at) = match nr {
        FORK => {
            return Some(CloneArgs {
                flags: libc::SIGCHLD as u64,
                ..CloneArgs::default()
            })
        }
        VFORK => {
            return Some(CloneArgs {
                flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64,
                ..CloneArgs::default()
            })
        }
        // clone(flags, stack, parent_tid, child_tid, tls); with CLONE_PIDFD the pidfd goes
        // to the parent_tid pointer.
        CLONE => (args[0], args[2], args[3], args[2]),
        CLONE3 => {
            // struct clone_args { flags, pidfd, child_tid, parent_tid, ... }, all u64.
            let base = args[0];
            if args[1] < 32 {
                return None;
            }
            (
                mem.read_u64(base)?,
                mem.read_u64(base + 8)?,
                mem.read_u64(base + 16)?,
                mem.read_u64(base + 24)?,
            )
        }
        _ => return None,
    };
    Some(CloneArgs {
        flags,
        parent_tid: has(flags, libc::CLONE_PARENT_SETTID).then_some(parent_at),
        child_tid: has(flags, libc::CLONE_CHILD_SETTID).then_some(child_at),
        pidfd: has(flags, libc::CLONE_PIDFD).then_some(pidfd_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<u8>, u64);
    impl Memory for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Some(off) = addr.checked_sub(self.1) else {
                return false;
            };
            let off = off as usize;
            match self.0.get(off..off + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn pthread_create_via_clone3() {
        let flags = (libc::CLONE_VM
            | libc::CLONE_THREAD
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let mut raw = Vec::new();
        for w in [flags, 0, 0x5000, 0x6000, 0, 0, 0, 0] {
            raw.extend_from_slice(&u64::to_le_bytes(w));
        }
        let mem = Mem(raw, 0x1000);
        let a = clone_args(CLONE3, &[0x1000, 88, 0, 0, 0, 0], &mem).unwrap();
        assert!(a.is_thread());
        assert_eq!(a.parent_tid, Some(0x6000));
        assert_eq!(a.child_tid, None);
        assert_eq!(a.parent_regions(), vec![(0x6000, 4)]);
        assert_eq!(clone_args(CLONE3, &[0x9000, 88, 0, 0, 0, 0], &mem), None);
    }

    #[test]
    fn glibc_fork_via_clone() {
        let flags = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        let mem = Mem(Vec::new(), 0);
        let a = clone_args(CLONE, &[flags, 0, 0, 0x7000, 0, 0], &mem).unwrap();
        assert!(!a.is_thread());
        assert_eq!(a.child_tid, Some(0x7000));
        assert!(a.parent_regions().is_empty());
        let v = clone_args(VFORK, &[0; 6], &mem).unwrap();
        assert_ne!(v.flags & libc::CLONE_VFORK as u64, 0);
        assert_eq!(clone_args(0, &[0; 6], &mem), None);
    }
}
