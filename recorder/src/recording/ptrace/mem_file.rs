//! Writes into a recorded task's memory through `/proc/PID/mem` (see the parent module).

use anyhow::Result;
use trace_format::SyscallEvent;

use crate::recording::Session;

/// The task whose memory descriptor `fd` of task `tid` is (`/proc/PID/mem`,
/// `/proc/PID/task/TID/mem`), if it is one.
fn mem_file_target(tid: i32, fd: u64) -> Option<i32> {
    let path = std::fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok()?;
    let path = path
        .to_str()?
        .strip_prefix("/proc/")?
        .strip_suffix("/mem")?;
    path.rsplit('/').next()?.parse().ok()
}

/// The file position of descriptor `fd` of task `tid` (`pos:` of its fdinfo).
fn fd_position(tid: i32, fd: u64) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("pos:"))
        .and_then(|v| v.trim().parse().ok())
}

impl Session {
    /// At the exit of `tid`'s write (`write`, `pwrite64`, `writev`, `pwritev`, `pwritev2`;
    /// its event so far `ev`): a write into a recorded task's memory through `/proc/PID/mem`
    /// (how debuggers plant breakpoints) is a change the replay must make too, since it does
    /// not run the write: recorded as a `POKEDATA` change carrying the bytes.
    pub(in crate::recording) fn mem_file_write(
        &mut self,
        tid: i32,
        ev: &SyscallEvent,
    ) -> Result<()> {
        let nr = ev.nr as i64;
        let vectored = matches!(
            nr,
            libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2
        );
        let positioned = matches!(
            nr,
            libc::SYS_pwrite64 | libc::SYS_pwritev | libc::SYS_pwritev2
        );
        if !vectored && !positioned && nr != libc::SYS_write {
            return Ok(());
        }
        let t = self.task(tid)?;
        let written = t.tracee.regs()?.rax as i64;
        if written <= 0 {
            return Ok(());
        }
        let fd = ev.args[0];
        let Some(target) = mem_file_target(tid, fd) else {
            return Ok(());
        };
        if !self.tasks.contains_key(&target) {
            return Ok(());
        }
        let t = &self.task(tid)?.tracee;
        let n = written as usize;
        let bytes = if vectored {
            let mut out = Vec::with_capacity(n);
            for i in 0..ev.args[2] {
                let (Ok(base), Ok(len)) = (
                    t.read_u64(ev.args[1] + 16 * i),
                    t.read_u64(ev.args[1] + 16 * i + 8),
                ) else {
                    return Ok(());
                };
                let take = (len as usize).min(n - out.len());
                let Ok(part) = t.read_vec(base, take) else {
                    return Ok(());
                };
                out.extend(part);
                if out.len() == n {
                    break;
                }
            }
            out
        } else {
            match t.read_vec(ev.args[1], n) {
                Ok(b) => b,
                Err(_) => return Ok(()),
            }
        };
        let at = if positioned {
            ev.args[3]
        } else {
            // The file position after the write, less what it wrote.
            let Some(pos) = fd_position(tid, fd) else {
                return Ok(());
            };
            pos.wrapping_sub(n as u64)
        };
        tracing::debug!(tid, target, len = n, "a write through /proc/PID/mem");
        self.record_change(target, 5, at, 0, bytes)
    }
}
