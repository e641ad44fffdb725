//! Robust futexes at a task's death. When a thread dies, the kernel walks its robust list
//! (`set_robust_list`) and marks every futex word that still names the thread as its owner
//! with `FUTEX_OWNER_DIED`, so the next locker of a robust mutex gets `EOWNERDEAD`. In replay
//! the words name the *recorded* thread ids (the program only ever saw those), which differ
//! from the replay's real ones, so the kernel marks nothing: the replayer does what the
//! kernel did in the recording, just before the task's end runs (its `exit`/`exit_group`,
//! its kill), while its memory is still there. The wake-ups the kernel also did concern
//! futex waits, which the replay emulates.

use anyhow::Result;
use trace_format::Tid;

use super::Session;

/// `FUTEX_OWNER_DIED`: the owner of the futex died holding it.
const OWNER_DIED: u32 = 0x4000_0000;
/// `FUTEX_WAITERS`: some task waits on the futex.
const WAITERS: u32 = 0x8000_0000;
/// The owner's thread id in a futex word.
const TID_MASK: u32 = 0x3fff_ffff;
/// Most entries the kernel follows in a robust list (`ROBUST_LIST_LIMIT`).
const LIST_LIMIT: usize = 2048;

impl Session {
    /// Marks the robust futexes recorded task `tid` still owns as its death does. Best effort:
    /// a list the kernel cannot report or memory that cannot be read marks nothing, as the
    /// kernel would skip it.
    pub(super) fn robust_futexes_die(&mut self, tid: Tid) -> Result<()> {
        let t = self.tracee(tid)?;
        let Some(head) = robust_list_head(t.pid().as_raw()) else {
            return Ok(());
        };
        let read = |addr: u64| t.read_u64(addr).ok();
        // struct robust_list_head { next, futex_offset, list_op_pending }
        let (Some(mut entry), Some(offset), Some(pending)) =
            (read(head), read(head + 8), read(head + 16))
        else {
            return Ok(());
        };
        let mut words = Vec::new();
        for _ in 0..LIST_LIMIT {
            if entry == head || entry == 0 {
                break;
            }
            // The low bit of an entry marks a PI futex; the word is at the entry plus offset.
            words.push((entry & !1).wrapping_add(offset));
            match read(entry & !1) {
                Some(next) => entry = next,
                None => break,
            }
        }
        if pending != 0 {
            words.push((pending & !1).wrapping_add(offset));
        }
        for addr in words {
            let mut b = [0u8; 4];
            if t.read_mem(addr, &mut b).is_err() {
                continue;
            }
            let word = u32::from_le_bytes(b);
            if word & TID_MASK == tid as u32 {
                let marked = (word & WAITERS) | OWNER_DIED;
                tracing::debug!(tid, addr, "a robust futex's owner dies: FUTEX_OWNER_DIED");
                t.write_mem(addr, &marked.to_le_bytes())?;
            }
        }
        Ok(())
    }
}

/// The head of the robust list task `real` (a replay task id) registered, if any.
fn robust_list_head(real: i32) -> Option<u64> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list stores one pointer at `head` and one size at `len`, locals of
    // those sizes that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            real,
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    };
    (r == 0 && head != 0).then_some(head)
}
