//! Copies of a replay (checkpoints): the replayed processes forked at the position the replay
//! is halted at, with the replay's state copied to go on with it. See the crate README, "Going
//! backwards".

use std::collections::HashMap;
use std::rc::Rc;

use anyhow::Result;
use trace_format::Tid;
use tracee::fork::ThreadCopy;
use tracee::Stop;

use crate::tasks::{RState, Task};

use super::Session;

impl Session {
    /// A copy of this replay at its current position, its processes forked: a replay that
    /// goes on from here independently (or waits, stopped, as a checkpoint). `None` where this
    /// design cannot copy the replay: a task on its way to a recorded point, an emulated
    /// ptrace, a writable shared mapping (the copy would share it), an emulated file the replay
    /// may change, a stop that a fork cannot reproduce.
    pub(crate) fn fork_copy(&mut self) -> Result<Option<Session>> {
        if let Some(why) = self.uncopyable() {
            tracing::debug!(event = self.index, "no copy of the replay here: {why}");
            return Ok(None);
        }
        // Each process is forked by its main thread (any task would do), its other tasks
        // cloned in the copy. (The copies' parents are the originals, not each other's
        // copies: the replay emulates every call that would tell, `wait4` and `kill` among
        // them, and reaps its tasks itself.)
        let mut processes: HashMap<i32, Vec<(Tid, &Task)>> = HashMap::new();
        for (tid, t) in self.tasks.all() {
            processes.entry(t.pid.as_raw()).or_default().push((tid, t));
        }
        let mut pids = HashMap::new();
        let mut by_tid = HashMap::new();
        for (_, mut order) in processes {
            order.sort_by_key(|&(tid, t)| (tid != t.rpid, tid));
            let (_, lead) = order[0];
            let others: Vec<ThreadCopy<'_>> = order[1..]
                .iter()
                .map(|&(_, t)| ThreadCopy {
                    of: &t.tracee,
                    clear_tid_at: t.clear_tid_at,
                })
                .collect();
            let copies = match lead.tracee.fork_process_with(lead.clear_tid_at, &others) {
                Ok(copies) => copies,
                Err(e) => {
                    tracing::debug!("no copy of the replay here: {e:#}");
                    // (The processes copied so far go.)
                    tracee::Tracee::kill_and_reap_all(by_tid.values().map(|(c, _)| c));
                    return Ok(None);
                }
            };
            let new_pid = copies[0].pid();
            for ((tid, task), copy) in order.iter().zip(copies) {
                pids.insert(task.tracee.pid().as_raw(), copy.pid().as_raw());
                by_tid.insert(*tid, (copy, new_pid));
            }
        }
        let Some(tasks) = self.tasks.copy_with(&mut by_tid) else {
            tracee::Tracee::kill_and_reap_all(by_tid.values().map(|(c, _)| c));
            return Ok(None);
        };
        let debug = self.debug.as_ref().map(|d| d.copy());
        Ok(Some(Session {
            tasks,
            reader: Rc::clone(&self.reader),
            events: self.events.try_clone()?,
            ahead: self.ahead.clone(),
            ahead_at: self.ahead_at.clone(),
            read: self.read,
            filter: self.filter.clone(),
            par: None,
            index: self.index,
            opts: self.opts.clone(),
            root: self.root,
            root_status: self.root_status,
            running: self.running,
            toward: None,
            debug,
            emu: self.emu.try_clone(&pids)?,
            segv: self.segv.clone(),
            ptrace_held: self.ptrace_held.clone(),
            segv_blocked: self.segv_blocked.clone(),
            sites: self.sites.clone(),
            ran: self.ran,
            stretches: self.stretches.clone(),
            after_mark: None,
            held_stop: None,
            lanes: self.lanes.clone(),
        }))
    }

    /// Why this replay cannot be copied now, if it cannot.
    fn uncopyable(&self) -> Option<&'static str> {
        if self.toward.is_some() || self.after_mark.is_some() {
            return Some("a task runs toward a point");
        }
        if self.held_stop.is_some() {
            return Some("the debugged process is at its end");
        }
        if self.tasks.stops_waiting() {
            return Some("stops of other tasks wait to be collected");
        }
        if !self.ptrace_held.is_empty() {
            return Some("emulated ptrace");
        }
        if self.running.is_some_and(|r| r.sig != 0) {
            // (Its signal-delivery-stop holds the signal, which a fork would not copy.)
            return Some("a signal is to be delivered");
        }
        if !self.emu.unchangeable() {
            return Some("an emulated file may change");
        }
        self.tasks.all().next()?;
        for (_, task) in self.tasks.all() {
            // (Parked at a signal or an event, the task's next move depends on a stop a
            // copy would not be in.)
            if !matches!(
                task.state,
                RState::Parked(Stop::SeccompEntry) | RState::Resumed | RState::AtPoint
            ) || task.injected.is_some()
                || task.signal_sent
                || task.group_stopped
                || task.borrows_vm_of.is_some()
                || task.clone_entry.is_some()
            {
                return Some("a task is in a state a fork cannot reproduce");
            }
        }
        let processes: std::collections::BTreeSet<i32> =
            self.tasks.all().map(|(_, t)| t.pid.as_raw()).collect();
        for pid in processes {
            match shared_writable(pid) {
                Ok(false) => {}
                Ok(true) => return Some("a writable shared mapping"),
                Err(_) => return Some("its mappings cannot be read"),
            }
        }
        None
    }
}

/// Whether process `pid` has a writable shared mapping.
fn shared_writable(pid: i32) -> Result<bool> {
    let maps = tracee::maps::read(nix::unistd::Pid::from_raw(pid))?;
    Ok(maps
        .iter()
        .any(|m| m.perms.contains('w') && m.perms.ends_with('s')))
}
