//! Processes recorded in parallel: a task whose address space no other task shares and that
//! has no shared mapping runs its user code *detached*, without the CPU, alongside the others.
//! Its stops are held ([`State::Held`]) until it gets the CPU, and handled then as if it had
//! held the CPU all along; so its events still come one task at a time, in the order the
//! recorder handles them. See the crate README, "Processes recorded in parallel".

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use trace_format::{DetachEvent, Event, SYSTEM_PREFIXES};

use super::Session;

/// What the recorder knows of address spaces to let their tasks run detached, and which CPU
/// each detached process runs on.
#[derive(Debug)]
pub(crate) struct Detaching {
    /// Tasks may run detached at all (`deja rec --serial` says no).
    on: bool,
    /// Address spaces (by process id) that have or had a shared mapping since their program
    /// began: other processes may write into them at any moment.
    shared: HashSet<i32>,
    /// The recording's CPU: the tracer's, and that of every task holding the CPU.
    pub(crate) main_cpu: u32,
    /// The CPUs the recorder may use.
    cpus: Vec<u32>,
    /// The CPU of each process that ran detached (for its life: a program sees one CPU).
    placed: HashMap<i32, u32>,
}

impl Detaching {
    /// Detaching allowed (`on`) or not; `main_cpu`: the recording's CPU.
    pub(crate) fn new(on: bool, main_cpu: u32) -> Detaching {
        Detaching {
            on,
            shared: HashSet::new(),
            main_cpu,
            // (The process's main thread: the tracer thread is pinned to `main_cpu`.)
            cpus: tracee::affinity::allowed(std::process::id() as i32),
            placed: HashMap::new(),
        }
    }

    /// The CPU detached process `pid` runs on: placed once, on the CPU with the fewest
    /// processes placed (other than the recording's CPU, on a tie).
    fn cpu_of(&mut self, pid: i32) -> u32 {
        if let Some(&c) = self.placed.get(&pid) {
            return c;
        }
        let load = |c: u32| self.placed.values().filter(|&&p| p == c).count();
        let main = self.main_cpu;
        let cpu = self
            .cpus
            .iter()
            .copied()
            .min_by_key(|&c| (load(c), c == main))
            .unwrap_or(main);
        self.placed.insert(pid, cpu);
        cpu
    }

    /// A fork: the child has the parent's shared mappings.
    pub(crate) fn fork(&mut self, parent_mm: i32, child: i32) {
        if self.shared.contains(&parent_mm) {
            self.shared.insert(child);
        }
    }

    /// An exec: the process has a new address space, with nothing shared.
    pub(crate) fn exec(&mut self, pid: i32) {
        self.shared.remove(&pid);
    }

    /// A process ended (its id may come back).
    pub(crate) fn forget(&mut self, pid: i32) {
        self.shared.remove(&pid);
        self.placed.remove(&pid);
    }

    /// After a successful syscall of task `tid` in address space `mm`: a shared mapping
    /// (`mmap` with `MAP_SHARED`, `shmat`) marks the space for good, unless it is a read-only
    /// mapping, through a read-only descriptor, of a system file (`mapped`: the file's path,
    /// under `trace_format::SYSTEM_PREFIXES`, which deja takes as unchanging everywhere; glibc
    /// maps its `gconv-modules.cache` this way in every program that converts characters).
    pub(crate) fn after_syscall(
        &mut self,
        tid: i32,
        mm: i32,
        call: (u64, &[u64; 6], i64),
        mapped: Option<&str>,
    ) {
        let (nr, args, result) = call;
        if syscalls::is_error(result) {
            return;
        }
        if nr == libc::SYS_shmat as u64 {
            self.shared.insert(mm);
            return;
        }
        // The mapping type (`MAP_TYPE`, the low four bits): `MAP_SHARED_VALIDATE` is 3.
        let kind = args[3] & 0xf;
        if nr != libc::SYS_mmap as u64
            || (kind != libc::MAP_SHARED as u64 && kind != libc::MAP_SHARED_VALIDATE as u64)
        {
            return;
        }
        let read_only = args[2] & libc::PROT_WRITE as u64 == 0;
        let system = mapped.is_some_and(|p| SYSTEM_PREFIXES.iter().any(|s| p.starts_with(s)));
        if !(read_only && system && fd_read_only(tid, args[4])) {
            self.shared.insert(mm);
        }
    }
}

/// Whether descriptor `fd` of task `tid` was opened read-only (so no `mprotect` can make a
/// mapping of it writable): the permissions of its link in `/proc/TID/fd` are its access
/// mode (proc(5)).
fn fd_read_only(tid: i32, fd: u64) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(format!("/proc/{tid}/fd/{}", fd as i32))
        .is_ok_and(|m| m.permissions().mode() & 0o200 == 0)
}

impl Session {
    /// Whether `tid`, about to run user code right after its event, may run detached: alone in
    /// its address space (no other thread, no `vfork` child borrowing it), which has no shared
    /// mapping; with nothing of the recorder's pending on it (a preemption `SIGSTOP` on its way,
    /// a signal sent again, a handler being entered); and no emulated ptrace in the recording,
    /// whose tracers and tracees hand the CPU over to each other.
    pub(super) fn may_detach(&self, tid: i32) -> bool {
        if !self.detach.on || !self.ptrace.is_empty() || self.stop_at_syscalls {
            return false;
        }
        let Some(t) = self.tasks.get(&tid) else {
            return false;
        };
        if t.mm != t.pid
            || self.detach.shared.contains(&t.mm)
            || t.stop_sent
            || t.held_signal.is_some()
            || !t.resent.is_empty()
            || t.entering_handler
            || self.continued.contains(&t.pid)
        {
            return false;
        }
        !self
            .tasks
            .values()
            .any(|o| o.tid() != tid && (o.pid == t.pid || o.mm == t.pid))
    }

    /// Sets how `tid` runs from now on: detached on its process's CPU, or holding the CPU on
    /// the recording's; writes a [`DetachEvent`] if that changes.
    pub(super) fn set_detached(&mut self, tid: i32, detached: bool) -> Result<()> {
        let Some(t) = self.tasks.get(&tid) else {
            return Ok(());
        };
        let cpu = if detached {
            self.detach.cpu_of(t.pid)
        } else {
            self.detach.main_cpu
        };
        if t.detached == detached && t.cpu == cpu {
            return Ok(());
        }
        tracee::affinity::pin(tid, cpu)?;
        let t = self.task(tid)?;
        t.detached = detached;
        t.cpu = cpu;
        self.writer.push(Event::Detach(DetachEvent {
            tid,
            detached,
            cpu: Some(cpu),
        }))?;
        Ok(())
    }
}
