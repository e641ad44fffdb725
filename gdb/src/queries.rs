//! What gdb asks about the program rather than its threads: the executable, the auxiliary
//! vector, and deja's own `monitor` commands.

use gdbstub::common::Pid;
use gdbstub::target::ext::auxv::Auxv;
use gdbstub::target::ext::exec_file::ExecFile;
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd};
use gdbstub::target::TargetResult;

use crate::target::ReplayTarget;

/// Copies the part of `whole` gdb asked for; returns its length.
fn copy_part(whole: &[u8], offset: u64, length: usize, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(whole.len());
    let part = &whole[start..];
    let n = part.len().min(length).min(buf.len());
    buf[..n].copy_from_slice(&part[..n]);
    n
}

impl ExecFile for ReplayTarget {
    fn get_exec_file(
        &self,
        _pid: Option<Pid>,
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let path = self.replay_ref().exe().as_os_str().as_encoded_bytes();
        Ok(copy_part(path, offset, length, buf))
    }
}

impl Auxv for ReplayTarget {
    fn get_auxv(&self, offset: u64, length: usize, buf: &mut [u8]) -> TargetResult<usize, Self> {
        Ok(copy_part(self.replay_ref().auxv(), offset, length, buf))
    }
}

/// The monitor commands, for `monitor help`.
const HELP: &str = "deja monitor commands:
  monitor when                 the number of the event the replay is at (`deja dump` lists
                               events), and whether a thread has run since
  monitor when-tid TID         the recorded id of thread TID (as rr's when-tid)
  monitor seek EVENT           go to right after event EVENT (forwards or backwards)
  monitor checkpoint           keep this position under a number (as rr's `checkpoint`)
  monitor checkpoints          list the kept positions
  monitor restart N            go to kept position N
  monitor delete checkpoint N  forget kept position N
  monitor help                 this list
gdb commands (rr's, from the script deja loads): when, when-tid, checkpoint, restart N,
  info checkpoints, delete checkpoint N, run N (restart at event N; plain run: the start)
After seek and restart, gdb shows the new position once its caches are flushed:
  maintenance flush register-cache
  maintenance flush dcache";

impl MonitorCmd for ReplayTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(cmd);
        // (The replay answers, and may move: what gdb changed in a diversion is gone.)
        self.end_diversion();
        match cmd.trim() {
            "when" => {
                let replay = self.replay_ref();
                outputln!(out, "Current event: {}", replay.when());
                match replay.part_way() {
                    Some(tid) => outputln!(
                        out,
                        "Thread {tid} is part-way through its run after that event"
                    ),
                    None => outputln!(out, "No thread has run since that event"),
                }
            }
            "checkpoint" => match self.timeline().save_position() {
                Ok(n) => outputln!(out, "Checkpoint {n} at event {}.", self.replay_ref().when()),
                Err(e) => outputln!(out, "deja: no checkpoint: {e:#}"),
            },
            "checkpoints" | "info checkpoints" => {
                let saved = self.timeline().saved_positions();
                if saved.is_empty() {
                    outputln!(out, "No checkpoints.");
                }
                for (n, event) in saved {
                    outputln!(out, "{n}  after event {event}");
                }
            }
            "help" | "" => outputln!(out, "{HELP}"),
            other if other.starts_with("when-tid") => {
                let arg = other.trim_start_matches("when-tid").trim();
                let replay = self.replay_ref();
                let tid = match arg.parse::<trace_format::Tid>() {
                    Ok(tid) => tid,
                    Err(_) if arg.is_empty() => replay.current_thread(),
                    Err(_) => {
                        outputln!(
                            out,
                            "deja: `monitor when-tid` takes a thread id, not `{arg}`"
                        );
                        return Ok(());
                    }
                };
                if replay.threads().contains(&tid) {
                    outputln!(out, "Current tid: {tid}");
                } else {
                    outputln!(
                        out,
                        "deja: {tid} is not a live thread of the debugged process"
                    );
                }
            }
            other if other.starts_with("seek ") || other.starts_with("restart ") => {
                let (verb, arg) = other.split_once(' ').unwrap_or((other, ""));
                let Ok(n) = arg.trim().parse::<u64>() else {
                    outputln!(out, "deja: `monitor {verb}` takes a number, not `{arg}`");
                    return Ok(());
                };
                let moved = if verb == "seek" {
                    self.timeline().seek(n)
                } else {
                    self.timeline().restore_position(n as usize)
                };
                match moved {
                    Ok(()) => outputln!(
                        out,
                        "At event {}; flush gdb's caches to see where (`monitor help`).",
                        self.replay_ref().when()
                    ),
                    Err(e) => outputln!(out, "deja: {e:#}"),
                }
            }
            other if other.starts_with("delete checkpoint ") => {
                let arg = other.trim_start_matches("delete checkpoint ").trim();
                match arg.parse::<usize>() {
                    Ok(n) if self.timeline().forget_position(n) => {
                        outputln!(out, "Deleted checkpoint {n}.")
                    }
                    _ => outputln!(out, "No checkpoint number {arg}."),
                }
            }
            other => outputln!(out, "deja: unknown monitor command `{other}`\n{HELP}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_clamped() {
        let mut buf = [0u8; 8];
        assert_eq!(copy_part(b"abcdef", 2, 3, &mut buf), 3);
        assert_eq!(&buf[..3], b"cde");
        assert_eq!(copy_part(b"abcdef", 4, 100, &mut buf), 2);
        assert_eq!(copy_part(b"abcdef", 9, 100, &mut buf), 0);
    }
}
