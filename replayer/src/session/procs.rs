//! The debugger leaving one process of the tree for another (gdb following a fork's child).

use tracee::debugregs::DebugRegs;

use super::Session;

impl Session {
    /// Takes the debugger's breakpoints and debug registers out of the debugged process
    /// before the debugger leaves it: it replays on as recorded, with nothing of the
    /// debugger's in it. A task that is not in a stop now (in a syscall the replay let run)
    /// has had none written since the last halt, so it keeps the registers it has; they are
    /// rewritten if it is ever debugged again.
    pub(crate) fn leave_process(&mut self) -> anyhow::Result<()> {
        let Some(d) = self.debug.as_mut() else {
            return Ok(());
        };
        let process = d.process;
        let breakpoints = std::mem::take(&mut d.breakpoints);
        let lifted = d.lifted.take();
        d.in_windows.clear();
        d.pending_breakpoints.clear();
        d.regs = DebugRegs::new();
        d.hw = Default::default();
        d.hw_generation += 1;
        if let Some(t) = self.process_tracee() {
            for (addr, orig) in breakpoints {
                if Some(addr) != lifted {
                    t.write_mem(addr, &[orig])?;
                }
            }
        }
        let clear = DebugRegs::new();
        for (tid, task) in self.tasks.in_process(process) {
            if task.hw_generation != 0 {
                if let Err(e) = task.tracee.set_debug_regs(&clear) {
                    tracing::debug!(tid, "clearing the debug registers of a task left: {e:#}");
                }
            }
        }
        Ok(())
    }
}
