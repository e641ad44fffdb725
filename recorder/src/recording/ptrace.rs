//! Emulated ptrace in the recording loop (see the crate README, "ptrace inside a recording"):
//! a recorded task's `ptrace` calls on another recorded task are served by the recorder, which
//! is that task's real tracer; the tracee's real stops its tracer asked for become emulated
//! stops in which it stays until the tracer resumes it; the tracer's `wait4`/`waitid` report
//! them. Everything is written as events the replay performs identically.

use anyhow::{Context, Result};
use nix::unistd::Pid;
use trace_format::{
    Event, ExitStatus, MemWrite, PtraceAction, PtraceEvent, PtraceHeld, SignalEvent, SignalOrigin,
    SyscallEvent,
};
use tracee::tracee::{signo_code, SIGINFO_SIZE};
use tracee::{regs, Regs};

use super::{Session, RIP};
use crate::ptrace_emu::{self as emu, Held, Mode, Relation, Report, Selector};
use crate::signals::is_fault;
use crate::task::{Entry, State};

/// `PTRACE_EVENT_STOP`: the stop of a seized task (its first, or `PTRACE_INTERRUPT`'s).
const PTRACE_EVENT_STOP: i32 = 128;
/// `arch_prctl` codes (`asm/prctl.h`).
const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;
/// Size of `struct user_regs_struct`.
const REGS_SIZE: usize = 27 * 8;
/// Size of `struct user_fpregs_struct`.
const FPREGS_SIZE: usize = 512;
/// Size of `struct rusage`.
const RUSAGE_SIZE: usize = 144;
/// `waitid`'s `WNOWAIT`: report, but leave the stop reportable.
const WNOWAIT: u64 = 0x0100_0000;
/// `NT_PRSTATUS`: the general registers' register set.
const NT_PRSTATUS: u64 = 1;
/// End of `orig_rax` in `struct user_regs_struct` (word 15).
const ORIG_RAX_END: usize = 16 * 8;
/// A [`Served`] result meaning the syscall is not answered yet (its task waits).
const PARKED: i64 = i64::MIN;
/// Largest register set `PTRACE_GETREGSET` copies (the XSAVE area of this CPU is smaller).
const MAX_REGSET: usize = 1 << 16;

/// What an emulated syscall of a tracer returns and writes into its memory.
#[derive(Default)]
struct Served {
    result: i64,
    writes: Vec<(u64, Vec<u8>)>,
}

/// What a tracer's `wait` reports.
enum Found {
    /// The emulated stop of this tracee.
    Stop(i32),
    /// The end of the tracee `zombies[i]`.
    End(usize),
}

/// Which tasks a `wait4`/`waitid` selects (`None` for other syscalls).
fn wait_selector(nr: u64, args: &[u64; 6]) -> Option<Selector> {
    if nr == libc::SYS_wait4 as u64 {
        Some(Selector::of_wait4(args[0] as i64))
    } else if nr == libc::SYS_waitid as u64 {
        Some(Selector::of_waitid(args[0], args[1]))
    } else {
        None
    }
}

impl Served {
    /// The caller was parked (no event now).
    fn parked() -> Served {
        Served::ok(PARKED)
    }

    fn ok(result: i64) -> Served {
        Served {
            result,
            writes: Vec::new(),
        }
    }

    fn err(errno: i32) -> Served {
        Served::ok(-(errno as i64))
    }

    fn writing(result: i64, addr: u64, bytes: Vec<u8>) -> Served {
        Served {
            result,
            writes: vec![(addr, bytes)],
        }
    }
}

/// `ptrace(req, pid, addr, data)` as a raw syscall (a `PEEK*` stores its word at `data`).
fn raw_ptrace(req: i64, pid: i32, addr: u64, data: u64) -> std::result::Result<i64, i32> {
    // SAFETY: every caller passes in `data` either a plain word or the address of a live
    // buffer of this process at least as large as the request writes or reads.
    let r = unsafe { libc::syscall(libc::SYS_ptrace, req, pid, addr, data) };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}

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

/// Whether thread `tid` blocks `SIGCHLD` (`SigBlk` of `/proc/TID/status`; true if unknown).
fn sigchld_blocked(tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .map_or(true, |mask| mask & (1 << (libc::SIGCHLD - 1)) != 0)
}

/// The recorder's user id (the tracees').
fn rel_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Whether `e` says a task no longer exists (`ESRCH`): it was killed, its death not reported.
fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<nix::errno::Errno>() == Some(&nix::errno::Errno::ESRCH)
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error())
                == Some(libc::ESRCH)
    })
}

/// The parent process of task `tid` (`PPid` of `/proc/TID/status`).
fn parent_of(tid: i32) -> Result<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .with_context(|| format!("reading the status of task {tid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no parent in the status of task {tid}"))
}

impl Session {
    /// At the entry of a syscall of the running task `tid` (registers `entry`): an emulated
    /// syscall-entry stop, an emulated `ptrace` request, or a `wait` an emulated stop answers.
    /// True if handled here.
    pub(super) fn ptrace_entry(&mut self, tid: i32, entry: &Regs) -> Result<bool> {
        if let Some(rel) = self.ptrace.get(tid) {
            if rel.mode == Mode::Syscall && !rel.in_syscall {
                let status = rel.syscall_status();
                self.ptrace_stop(
                    tid,
                    PtraceHeld::SyscallEntry,
                    status,
                    emu::trap_siginfo(status),
                )?;
                return Ok(true);
            }
        }
        let nr = entry.orig_rax;
        let exits = nr == libc::SYS_exit as u64 || nr == libc::SYS_exit_group as u64;
        if let Some(rel) = self.ptrace.get_mut(tid).filter(|_| exits) {
            if rel.has(libc::PTRACE_O_TRACEEXIT) && !rel.exit_reported {
                // PTRACE_EVENT_EXIT, before the exit; the message is the exit status.
                rel.exit_reported = true;
                rel.event_msg = (entry.rdi & 0xff) << 8;
                let status = emu::event_status(libc::PTRACE_EVENT_EXIT);
                self.ptrace_stop(
                    tid,
                    PtraceHeld::SyscallEntry,
                    status,
                    emu::trap_siginfo(status),
                )?;
                return Ok(true);
            }
        }
        if nr == libc::SYS_ptrace as u64 {
            let served = self.ptrace_request(tid, entry)?;
            self.finish_emulated(tid, entry, served)?;
            return Ok(true);
        }
        if let Some(served) = self.ptrace_wait(tid, entry)? {
            if served.result != PARKED {
                self.finish_emulated(tid, entry, served)?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes the event of a syscall the recorder answered itself (its memory writes done),
    /// skips the syscall and resumes the task with the result.
    fn finish_emulated(&mut self, tid: i32, entry: &Regs, served: Served) -> Result<()> {
        let mut writes = Vec::new();
        for (addr, bytes) in &served.writes {
            writes.push(MemWrite {
                addr: *addr,
                data: self.writer.data(bytes)?,
            });
        }
        self.writer.push(&Event::Syscall(SyscallEvent {
            tid,
            nr: entry.orig_rax,
            args: regs::syscall_args(entry),
            rip: entry.rip,
            regs_digest: regs::digest(entry),
            result: served.result,
            writes,
            mapped_file: None,
            echo: None,
        }))?;
        let mut r = *entry;
        r.orig_rax = u64::MAX;
        r.rax = served.result as u64;
        self.task(tid)?.tracee.set_regs(&r)?;
        self.resume(tid, r)
    }

    /// Writes `bytes` into the tracer `tid` at `addr`, as the kernel would for its request:
    /// the answer, or `EFAULT` if it cannot be written.
    fn answer(&mut self, tid: i32, result: i64, addr: u64, bytes: Vec<u8>) -> Result<Served> {
        if self.task(tid)?.tracee.write_mem(addr, &bytes).is_err() {
            return Ok(Served::err(libc::EFAULT));
        }
        Ok(Served::writing(result, addr, bytes))
    }

    /// Records a change the tracer makes to its stopped tracee `target`.
    fn record_change(
        &mut self,
        target: i32,
        request: i64,
        addr: u64,
        word: u64,
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.writer.push(&Event::Ptrace(PtraceEvent {
            tid: target,
            action: PtraceAction::Change {
                request,
                addr,
                word,
                bytes,
            },
        }))?;
        Ok(())
    }

    /// Where the tracee `target` of process `tracer` is held, if it is in an emulated stop its
    /// tracer has not resumed yet.
    fn held_by(&self, target: i32, tracer: i32) -> Option<PtraceHeld> {
        if self.ptrace.get(target)?.tracer != tracer {
            return None;
        }
        match &self.tasks.get(&target)?.state {
            State::Ptraced(Held { at, resume: None }) => Some(*at),
            _ => None,
        }
    }

    /// Serves the `ptrace` call of `tid` (registers `entry`).
    fn ptrace_request(&mut self, tid: i32, entry: &Regs) -> Result<Served> {
        let args = regs::syscall_args(entry);
        let (req, target, addr, data) = (args[0] as i64, args[1] as i32, args[2], args[3]);
        let me = self.task(tid)?.pid;
        tracing::debug!(tid, request = %emu::request_name(req), target, "emulated ptrace");
        let known = |s: &Session| s.tasks.get(&target).map(|t| t.pid);
        match req {
            0 => {
                // PTRACE_TRACEME
                if self.ptrace.is_traced(tid) {
                    return Ok(Served::err(libc::EPERM));
                }
                let parent = parent_of(tid)?;
                let mut rel = Relation::new(parent, 0);
                rel.real_parent = Some(parent);
                self.ptrace.insert(tid, rel);
                Ok(Served::ok(0))
            }
            16 | 0x4206 => {
                // PTRACE_ATTACH, PTRACE_SEIZE
                let Some(pid) = known(self) else {
                    return Ok(Served::err(libc::ESRCH));
                };
                if pid == me || self.ptrace.is_traced(target) {
                    return Ok(Served::err(libc::EPERM));
                }
                let seize = req == 0x4206;
                let options = if seize { data } else { 0 };
                let mut rel = Relation::new(me, options);
                rel.seized = seize;
                rel.real_parent = if target == pid {
                    parent_of(target).ok()
                } else {
                    None
                };
                let group_stopped = self
                    .tasks
                    .get(&target)
                    .is_some_and(|t| matches!(t.state, State::GroupStopped(_)));
                if !seize && group_stopped {
                    // Already stopped by job control: its tracer's wait reports that stop (a
                    // SIGSTOP would not reach it). Resuming it from there is not emulated.
                    rel.stop = Some(Report {
                        status: emu::stopped_status(libc::SIGSTOP),
                        siginfo: [0u8; SIGINFO_SIZE],
                        reported: false,
                    });
                }
                self.ptrace.insert(target, rel);
                if !seize && !group_stopped {
                    self.send_attach_stop(target, pid, me)?;
                }
                Ok(Served::ok(0))
            }
            0x4207 => {
                // PTRACE_INTERRUPT: a seized tracee stops (at once if it is held already)
                let held = self.held_by(target, me).is_some();
                let Some(rel) = self.ptrace.get_mut(target).filter(|r| r.tracer == me) else {
                    return Ok(Served::err(libc::ESRCH));
                };
                if !rel.seized {
                    return Ok(Served::err(libc::EIO));
                }
                if held {
                    return Ok(Served::ok(0));
                }
                let group_stopped = self
                    .tasks
                    .get(&target)
                    .is_some_and(|t| matches!(t.state, State::GroupStopped(_)));
                let rel = self.ptrace.get_mut(target).context("a seized tracee")?;
                if group_stopped {
                    // Stopped by job control: a seized tracee reports that group-stop.
                    rel.stop = Some(Report {
                        status: emu::event_status(PTRACE_EVENT_STOP) | (libc::SIGSTOP << 8),
                        siginfo: [0u8; SIGINFO_SIZE],
                        reported: false,
                    });
                    return Ok(Served::ok(0));
                }
                rel.interrupt = true;
                let pid = known(self).unwrap_or(target);
                self.send_attach_stop(target, pid, me)?;
                Ok(Served::ok(0))
            }
            8 => {
                // PTRACE_KILL
                match known(self) {
                    Some(pid) if self.ptrace.get(target).is_some_and(|r| r.tracer == me) => {
                        let t = self.task(target)?;
                        if let Err(e) = t.tracee.tgkill(Pid::from_raw(pid), libc::SIGKILL) {
                            tracing::debug!(target, "PTRACE_KILL: {e:#}");
                        }
                        Ok(Served::ok(0))
                    }
                    _ => Ok(Served::err(libc::ESRCH)),
                }
            }
            7 | 9 | 17 | 24 => {
                // PTRACE_CONT, PTRACE_SINGLESTEP, PTRACE_DETACH, PTRACE_SYSCALL
                if self.held_by(target, me).is_none() {
                    return Ok(Served::err(libc::ESRCH));
                }
                let sig = data as i32;
                if !(0..=64).contains(&sig) {
                    return Ok(Served::err(libc::EIO));
                }
                let mode = match req {
                    9 => Mode::Step,
                    24 => Mode::Syscall,
                    _ => Mode::Cont,
                };
                if req == 17 {
                    self.ptrace.remove(target);
                }
                self.let_go(target, sig, mode)?;
                Ok(Served::ok(0))
            }
            _ => {
                let Some(at) = self.held_by(target, me) else {
                    return Ok(Served::err(libc::ESRCH));
                };
                self.ptrace_inspect(tid, req, target, at, addr, data)
            }
        }
    }

    /// Requests on a tracee held in an emulated stop: reading and changing its memory,
    /// registers and options.
    fn ptrace_inspect(
        &mut self,
        tid: i32,
        req: i64,
        target: i32,
        at: PtraceHeld,
        addr: u64,
        data: u64,
    ) -> Result<Served> {
        match req {
            1 | 2 => {
                // PTRACE_PEEKTEXT, PTRACE_PEEKDATA: the raw call stores the word at `data`.
                let mut word = [0u8; 8];
                if self.task(target)?.tracee.read_mem_partial(addr, &mut word) != 8 {
                    return Ok(Served::err(libc::EIO));
                }
                self.answer(tid, 0, data, word.to_vec())
            }
            3 => {
                // PTRACE_PEEKUSER
                let mut word = 0u64;
                match raw_ptrace(req, target, addr, &mut word as *mut u64 as u64) {
                    Ok(_) => self.answer(tid, 0, data, word.to_le_bytes().to_vec()),
                    Err(e) => Ok(Served::err(e)),
                }
            }
            4 | 5 => {
                // PTRACE_POKETEXT, PTRACE_POKEDATA
                if self
                    .task(target)?
                    .tracee
                    .write_mem(addr, &data.to_le_bytes())
                    .is_err()
                {
                    return Ok(Served::err(libc::EIO));
                }
                self.record_change(target, req, addr, data, Vec::new())?;
                Ok(Served::ok(0))
            }
            6 if at == PtraceHeld::AfterEvent && addr == ORIG_RAX_END as u64 - 8 => {
                // orig_rax past a syscall: the replay's bookkeeping there stays (see SETREGS).
                Ok(Served::ok(0))
            }
            6 => {
                // PTRACE_POKEUSER
                match raw_ptrace(req, target, addr, data) {
                    Ok(_) => {
                        self.record_change(target, req, addr, data, Vec::new())?;
                        Ok(Served::ok(0))
                    }
                    Err(e) => Ok(Served::err(e)),
                }
            }
            12 => {
                // PTRACE_GETREGS
                let r = self.task(target)?.tracee.regs()?;
                let bytes: Vec<u8> = regs::to_words(&r)
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                self.answer(tid, 0, data, bytes)
            }
            13 => {
                // PTRACE_SETREGS
                let Ok(bytes) = self.task(tid)?.tracee.read_vec(data, REGS_SIZE) else {
                    return Ok(Served::err(libc::EFAULT));
                };
                let mut words = [0u64; 27];
                for (w, c) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                    *w = u64::from_le_bytes(c.try_into().context("a register word")?);
                }
                let mut r = regs::from_words(&words);
                let t = &self.task(target)?.tracee;
                if at == PtraceHeld::AfterEvent {
                    // Past its syscall: the replay's own bookkeeping there stays.
                    r.orig_rax = t.regs()?.orig_rax;
                }
                if t.set_regs(&r).is_err() {
                    return Ok(Served::err(libc::EIO));
                }
                self.record_change(target, req, 0, 0, bytes)?;
                Ok(Served::ok(0))
            }
            14 => {
                // PTRACE_GETFPREGS
                let mut buf = vec![0u8; FPREGS_SIZE];
                match raw_ptrace(req, target, 0, buf.as_mut_ptr() as u64) {
                    Ok(_) => self.answer(tid, 0, data, buf),
                    Err(e) => Ok(Served::err(e)),
                }
            }
            15 => {
                // PTRACE_SETFPREGS
                let Ok(mut buf) = self.task(tid)?.tracee.read_vec(data, FPREGS_SIZE) else {
                    return Ok(Served::err(libc::EFAULT));
                };
                match raw_ptrace(req, target, 0, buf.as_mut_ptr() as u64) {
                    Ok(_) => {
                        self.record_change(target, req, 0, 0, buf)?;
                        Ok(Served::ok(0))
                    }
                    Err(e) => Ok(Served::err(e)),
                }
            }
            0x4204 | 0x4205 => self.ptrace_regset(tid, req, target, at, addr, data),
            30 => {
                // PTRACE_ARCH_PRCTL(addr, code): get into the tracer's `addr`, or set to `addr`.
                match data {
                    ARCH_GET_FS | ARCH_GET_GS => {
                        let mut word = 0u64;
                        match raw_ptrace(req, target, &mut word as *mut u64 as u64, data) {
                            Ok(_) => self.answer(tid, 0, addr, word.to_le_bytes().to_vec()),
                            Err(e) => Ok(Served::err(e)),
                        }
                    }
                    ARCH_SET_FS | ARCH_SET_GS => match raw_ptrace(req, target, addr, data) {
                        Ok(_) => {
                            self.record_change(target, req, addr, data, Vec::new())?;
                            Ok(Served::ok(0))
                        }
                        Err(e) => Ok(Served::err(e)),
                    },
                    _ => Ok(Served::err(libc::EINVAL)),
                }
            }
            0x4200 => {
                // PTRACE_SETOPTIONS
                if let Some(rel) = self.ptrace.get_mut(target) {
                    rel.options = data;
                }
                Ok(Served::ok(0))
            }
            0x4201 => {
                // PTRACE_GETEVENTMSG
                let msg = self.ptrace.get(target).map_or(0, |r| r.event_msg);
                self.answer(tid, 0, data, msg.to_le_bytes().to_vec())
            }
            0x4202 => {
                // PTRACE_GETSIGINFO
                let info = self
                    .ptrace
                    .get(target)
                    .and_then(|r| r.stop.as_ref())
                    .map_or([0u8; SIGINFO_SIZE], |s| s.siginfo);
                self.answer(tid, 0, data, info.to_vec())
            }
            _ => {
                self.warn_once((2 << 32) | (req as u64 & 0xffff_ffff), || {
                    format!(
                        "{} is not emulated inside a recording; the program gets EIO for it",
                        emu::request_name(req)
                    )
                });
                Ok(Served::err(libc::EIO))
            }
        }
    }

    /// `PTRACE_GETREGSET` / `PTRACE_SETREGSET` with the tracer's `struct iovec` at `iov`.
    fn ptrace_regset(
        &mut self,
        tid: i32,
        req: i64,
        target: i32,
        at: PtraceHeld,
        kind: u64,
        iov: u64,
    ) -> Result<Served> {
        let t = &self.task(tid)?.tracee;
        let (Ok(base), Ok(len)) = (t.read_u64(iov), t.read_u64(iov + 8)) else {
            return Ok(Served::err(libc::EFAULT));
        };
        let len = (len as usize).min(MAX_REGSET);
        let mut buf = if req == 0x4205 {
            match t.read_vec(base, len) {
                Ok(b) => b,
                Err(_) => return Ok(Served::err(libc::EFAULT)),
            }
        } else {
            vec![0u8; len]
        };
        if req == 0x4205
            && at == PtraceHeld::AfterEvent
            && kind == NT_PRSTATUS
            && buf.len() >= ORIG_RAX_END
        {
            // As for PTRACE_SETREGS.
            let orig = self.task(target)?.tracee.regs()?.orig_rax;
            buf[ORIG_RAX_END - 8..ORIG_RAX_END].copy_from_slice(&orig.to_le_bytes());
        }
        let mut local = [buf.as_mut_ptr() as u64, len as u64];
        if let Err(e) = raw_ptrace(req, target, kind, local.as_mut_ptr() as u64) {
            return Ok(Served::err(e));
        }
        let done = (local[1] as usize).min(len);
        buf.truncate(done);
        if req == 0x4205 {
            self.record_change(target, req, kind, 0, buf)?;
            return Ok(Served::ok(0));
        }
        let mut served = self.answer(tid, 0, base, buf)?;
        if served.result == 0 {
            let more = self.answer(tid, 0, iov + 8, (done as u64).to_le_bytes().to_vec())?;
            served.writes.extend(more.writes);
        }
        Ok(served)
    }

    /// `PTRACE_ATTACH`'s `SIGSTOP` to `target` (of process `pid`), as sent by the tracer
    /// process `tracer` (`SI_QUEUE`: the recorder may not fake a kernel `si_code`, and its own
    /// `SI_TKILL` `SIGSTOP` is its preemption).
    fn send_attach_stop(&mut self, target: i32, pid: i32, tracer: i32) -> Result<()> {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        info.si_signo = libc::SIGSTOP;
        info.si_code = libc::SI_QUEUE;
        // SAFETY: the sender's pid and uid sit at bytes 16 and 20 of siginfo_t for SI_QUEUE,
        // inside the struct.
        unsafe {
            let p = (&mut info as *mut libc::siginfo_t).cast::<u8>();
            std::ptr::copy_nonoverlapping(tracer.to_le_bytes().as_ptr(), p.add(16), 4);
            std::ptr::copy_nonoverlapping(libc::getuid().to_le_bytes().as_ptr(), p.add(20), 4);
        }
        // SAFETY: rt_tgsigqueueinfo reads the siginfo_t it is given, which lives on our stack.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                pid,
                target,
                libc::SIGSTOP,
                &info as *const libc::siginfo_t,
            )
        };
        if r < 0 {
            tracing::debug!(target, "the attach SIGSTOP could not be sent");
        }
        Ok(())
    }

    /// The tracer resumed its held tracee `target`: it waits for the CPU.
    fn let_go(&mut self, target: i32, sig: i32, mode: Mode) -> Result<()> {
        let t = self.task(target)?;
        if let State::Ptraced(h) = &mut t.state {
            h.resume = Some((sig, mode));
            self.ready.push_back(target);
        }
        Ok(())
    }

    /// The emulated stop or end of a tracee of process `pid` that a `wait4`/`waitid` with
    /// these arguments would report now, if any.
    fn reportable(&self, pid: i32, nr: u64, args: &[u64; 6]) -> Option<Found> {
        let selector = wait_selector(nr, args)?;
        if let Some(i) = self
            .ptrace
            .zombies
            .iter()
            .position(|z| z.tracer == pid && selector.selects(z.tid, z.pid))
        {
            return Some(Found::End(i));
        }
        self.ptrace
            .tracees_of(pid)
            .into_iter()
            .find(|&t| {
                let stopped = self
                    .ptrace
                    .get(t)
                    .and_then(|r| r.stop.as_ref())
                    .is_some_and(|s| !s.reported);
                stopped && selector.selects(t, self.tasks.get(&t).map_or(t, |k| k.pid))
            })
            .map(Found::Stop)
    }

    /// Whether a `wait` of process `pid` with these arguments can only be answered by tracees
    /// that are not its children (the kernel would fail it with `ECHILD`, or block on other
    /// children): the recorder answers it when one of them stops or ends.
    fn waits_for_non_children(&self, pid: i32, nr: u64, args: &[u64; 6]) -> bool {
        let Some(selector) = wait_selector(nr, args) else {
            return false;
        };
        let tracees = self.ptrace.tracees_of(pid);
        let foreign = |t: &i32| {
            self.ptrace
                .get(*t)
                .is_some_and(|r| r.real_parent != Some(pid))
        };
        match selector {
            Selector::Id(id) => tracees.iter().any(|t| *t == id && foreign(t)),
            Selector::Any => {
                tracees.iter().any(foreign)
                    && !self
                        .tasks
                        .values()
                        .any(|t| t.is_leader() && parent_of(t.tid()).ok() == Some(pid))
            }
            Selector::Unknown => false,
        }
    }

    /// Whether the restarted `wait` of `tid` (its event so far `ev`) now has an emulated stop
    /// to report.
    pub(super) fn ptrace_wait_served(&self, tid: i32, ev: &SyscallEvent) -> Result<bool> {
        if self.ptrace.is_empty() && self.ptrace.zombies.is_empty() {
            return Ok(false);
        }
        let pid = self.tasks.get(&tid).map_or(tid, |t| t.pid);
        Ok(self.reportable(pid, ev.nr, &ev.args).is_some())
    }

    /// Serves a `wait4`/`waitid` of `tid` that an emulated stop answers, if one does.
    fn ptrace_wait(&mut self, tid: i32, entry: &Regs) -> Result<Option<Served>> {
        let (nr, args) = (entry.orig_rax, regs::syscall_args(entry));
        if self.ptrace.is_empty() && self.ptrace.zombies.is_empty() {
            return Ok(None);
        }
        let pid = self.task(tid)?.pid;
        let waitid = nr == libc::SYS_waitid as u64;
        let options = if waitid { args[3] } else { args[2] };
        let keep = waitid && options & WNOWAIT != 0;
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let (tracee, status, info) = match self.reportable(pid, nr, &args) {
            Some(Found::Stop(tracee)) => {
                let rel = self.ptrace.get_mut(tracee).context("a reportable tracee")?;
                let report = rel.stop.as_mut().context("a reportable stop")?;
                report.reported |= !keep;
                let status = report.status;
                (tracee, status, emu::waitid_siginfo(tracee, uid, status))
            }
            Some(Found::End(i)) => {
                let z = self.ptrace.zombies[i];
                if !keep {
                    self.ptrace.zombies.remove(i);
                }
                let status = emu::end_status(z.status);
                (z.tid, status, emu::end_siginfo(z.tid, uid, z.status))
            }
            None if self.waits_for_non_children(pid, nr, &args) => {
                if options & libc::WNOHANG as u64 != 0 {
                    return Ok(Some(Served::ok(0)));
                }
                tracing::debug!(tid, "a tracer waits for tracees that are not its children");
                self.task(tid)?.state = State::WaitsForTracee;
                self.current = None;
                self.ptrace.gave_up_cpu = true;
                return Ok(Some(Served::parked()));
            }
            None => return Ok(None),
        };
        let mut served = Served::ok(if waitid { 0 } else { tracee as i64 });
        let (info_at, rusage_at) = if waitid {
            (args[2], args[4])
        } else {
            (args[1], args[3])
        };
        if info_at != 0 {
            let bytes = if waitid {
                info.to_vec()
            } else {
                status.to_le_bytes().to_vec()
            };
            let a = self.answer(tid, served.result, info_at, bytes)?;
            served.writes.extend(a.writes);
        }
        if rusage_at != 0 {
            let a = self.answer(tid, served.result, rusage_at, vec![0u8; RUSAGE_SIZE])?;
            served.writes.extend(a.writes);
        }
        tracing::debug!(tid, tracee, status, "emulated wait");
        Ok(Some(served))
    }

    /// A signal `sig` (with `info`, registers `regs`) stopped the traced task `tid`: recorded
    /// undelivered, and the task is held for its tracer (which decides what is delivered).
    pub(super) fn ptrace_signal(
        &mut self,
        tid: i32,
        sig: i32,
        info: [u8; SIGINFO_SIZE],
        regs: &Regs,
        at_boundary: bool,
    ) -> Result<()> {
        let (signo, code) = signo_code(&info);
        let mut aside = Vec::new();
        let (origin, point) = if is_fault(signo, code) {
            (SignalOrigin::Fault, None)
        } else if at_boundary {
            (SignalOrigin::Async, None)
        } else {
            let Some(point) = self.reach_point(tid, &mut aside)? else {
                return Ok(());
            };
            (SignalOrigin::Async, Some(Box::new(point)))
        };
        let rip = point.as_ref().map_or(regs.rip, |p| p.regs[RIP]);
        self.writer.push(&Event::Signal(SignalEvent {
            tid,
            signo: sig,
            siginfo: info.to_vec(),
            origin,
            rip,
            delivered: false,
            point,
        }))?;
        let interrupted = sig == libc::SIGSTOP
            && self
                .ptrace
                .get_mut(tid)
                .is_some_and(|r| std::mem::take(&mut r.interrupt));
        let status = if interrupted {
            emu::event_status(PTRACE_EVENT_STOP)
        } else {
            emu::stopped_status(sig)
        };
        self.ptrace_stop(tid, PtraceHeld::Signal(sig), status, info)?;
        self.send_again(tid, aside)
    }

    /// Holds `tid` in an emulated stop (`at`, reported with wait status `status` and `info`)
    /// and wakes its tracer's threads blocked in `wait`, so they can see it.
    fn ptrace_stop(
        &mut self,
        tid: i32,
        at: PtraceHeld,
        status: i32,
        info: [u8; SIGINFO_SIZE],
    ) -> Result<()> {
        tracing::debug!(tid, ?at, status, "emulated ptrace stop");
        self.writer.push(&Event::Ptrace(PtraceEvent {
            tid,
            action: PtraceAction::Stop(at),
        }))?;
        self.ptrace.gave_up_cpu = true;
        let t = self.task(tid)?;
        t.state = State::Ptraced(Held { at, resume: None });
        t.boundary = None;
        if self.current == Some(tid) {
            self.current = None;
        }
        let rel = self
            .ptrace
            .get_mut(tid)
            .context("a stop of an untraced task")?;
        rel.stop = Some(Report {
            status,
            siginfo: info,
            reported: false,
        });
        let tracer = rel.tracer;
        let woken = self.send_sigchld(tracer, tid, status);
        self.wake_waiters(tracer, woken);
        Ok(())
    }

    /// Sends the tracer process `tracer` the `SIGCHLD` of its tracee `tid`'s stop (status
    /// `status`). The recorder may not send a kernel `si_code` (`CLD_TRAPPED`) itself, so it
    /// sends `SI_QUEUE` and gives the signal its real `siginfo_t` at the tracer's stop.
    fn send_sigchld(&mut self, tracer: i32, tid: i32, status: i32) -> Option<i32> {
        self.queue_sigchld(tracer, emu::waitid_siginfo(tid, rel_uid(), status))
    }

    /// Sends process `tracer` a `SIGCHLD` that gets `real` as its `siginfo_t` at its stop.
    /// Returns the thread it went to if that thread does not block it: a `wait` of that thread
    /// is interrupted by it (and restarted as a new entry, which sees the emulated stop).
    fn queue_sigchld(&mut self, tracer: i32, real: [u8; SIGINFO_SIZE]) -> Option<i32> {
        let uid = rel_uid();
        self.ptrace.push_sigchld(tracer, real);
        let mut info = [0u8; SIGINFO_SIZE];
        info[0..4].copy_from_slice(&libc::SIGCHLD.to_le_bytes());
        info[8..12].copy_from_slice(&libc::SI_QUEUE.to_le_bytes());
        info[16..20].copy_from_slice(&self.me.to_le_bytes());
        info[20..24].copy_from_slice(&uid.to_le_bytes());
        let to = self.sigchld_thread(tracer);
        // SAFETY: rt_tgsigqueueinfo reads the 128-byte siginfo_t it is given, on our stack.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                tracer,
                to,
                libc::SIGCHLD,
                info.as_ptr(),
            )
        };
        if r < 0 {
            tracing::debug!(tracer, "the tracer's SIGCHLD could not be sent");
            self.ptrace.pop_sigchld(tracer);
            return None;
        }
        (!sigchld_blocked(to)).then_some(to)
    }

    /// At the exit of `tid`'s write (`write`, `pwrite64`, `writev`, `pwritev`, `pwritev2`;
    /// its event so far `ev`): a write into a recorded task's memory through `/proc/PID/mem`
    /// (how debuggers plant breakpoints) is a change the replay must make too, since it does
    /// not run the write: recorded as a `POKEDATA` change carrying the bytes.
    pub(super) fn mem_file_write(&mut self, tid: i32, ev: &SyscallEvent) -> Result<()> {
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

    /// The thread of process `tracer` that gets its tracees' `SIGCHLD`: one waiting for a
    /// child, else one not blocked in a syscall, else the main thread. The kernel sends it to
    /// the process, and may then interrupt any thread's blocking syscall with it; a thread of
    /// the recorder's choosing keeps that choice out of the recording.
    fn sigchld_thread(&self, tracer: i32) -> i32 {
        let mut threads: Vec<&crate::task::Task> =
            self.tasks.values().filter(|t| t.pid == tracer).collect();
        threads.sort_by_key(|t| t.tid());
        let waiting = |t: &&crate::task::Task| match &t.state {
            State::InSyscall(e) => {
                e.ev.nr == libc::SYS_wait4 as u64 || e.ev.nr == libc::SYS_waitid as u64
            }
            State::WaitsForTracee | State::AtEntry => true,
            _ => false,
        };
        let free =
            |t: &&crate::task::Task| !matches!(t.state, State::InSyscall(_) | State::Restarting(_));
        threads
            .iter()
            .copied()
            .find(waiting)
            .or_else(|| threads.iter().copied().find(free))
            .map_or(tracer, |t| t.tid())
    }

    /// At a `SIGCHLD` stop of `tid` with `info`: if it is one the recorder sent for an
    /// emulated stop, the `siginfo_t` the kernel would have given it, which the task gets.
    pub(super) fn ptrace_sigchld_info(
        &mut self,
        tid: i32,
        info: &[u8; SIGINFO_SIZE],
    ) -> Result<Option<[u8; SIGINFO_SIZE]>> {
        let (_, code) = signo_code(info);
        let sender = i32::from_le_bytes([info[16], info[17], info[18], info[19]]);
        if code != libc::SI_QUEUE || sender != self.me {
            return Ok(None);
        }
        let pid = self.task(tid)?.pid;
        let Some(real) = self.ptrace.pop_sigchld(pid) else {
            return Ok(None);
        };
        self.task(tid)?.tracee.set_siginfo(&real)?;
        Ok(Some(real))
    }

    /// Interrupts the threads of process `tracer` blocked in `wait4`/`waitid` in the kernel
    /// (with the preemption `SIGSTOP`): the kernel restarts the call, and the restart is
    /// answered by the emulated stop (see `on_restart_stop`).
    /// `woken`: a thread the tracee's `SIGCHLD` interrupts anyway.
    fn wake_waiters(&mut self, tracer: i32, woken: Option<i32>) {
        for t in self.tasks.values_mut() {
            if Some(t.tid()) == woken && matches!(t.state, State::InSyscall(_)) {
                continue;
            }
            if t.pid == tracer && matches!(t.state, State::WaitsForTracee) {
                t.state = State::AtEntry;
                self.ready.push_back(t.tid());
                continue;
            }
            let State::InSyscall(e) = &t.state else {
                continue;
            };
            let waits = e.ev.nr == libc::SYS_wait4 as u64 || e.ev.nr == libc::SYS_waitid as u64;
            if t.pid != tracer || !waits || t.stop_sent {
                continue;
            }
            match t.tracee.tgkill(Pid::from_raw(t.pid), libc::SIGSTOP) {
                Ok(()) => t.stop_sent = true,
                Err(e) => tracing::debug!(tid = t.tid(), "no wake-up: {e:#}"),
            }
        }
    }

    /// Right after an event of `tid`, before it runs on: whether an emulated stop comes here
    /// (the exit of a syscall under `PTRACE_SYSCALL`, an `execve`); it is then held.
    pub(super) fn ptrace_stops_after_event(&mut self, tid: i32) -> Result<bool> {
        let Some(rel) = self.ptrace.get_mut(tid) else {
            return Ok(false);
        };
        let status = if std::mem::take(&mut rel.start_pending) {
            if rel.seized {
                emu::event_status(PTRACE_EVENT_STOP)
            } else {
                emu::stopped_status(libc::SIGSTOP)
            }
        } else if std::mem::take(&mut rel.exec_pending) {
            if rel.has(libc::PTRACE_O_TRACEEXEC) {
                emu::event_status(libc::PTRACE_EVENT_EXEC)
            } else {
                // A tracee without PTRACE_O_TRACEEXEC gets a SIGTRAP after execve.
                emu::stopped_status(libc::SIGTRAP)
            }
        } else if let Some(child) = rel.vfork_done.take() {
            rel.event_msg = child as u64;
            emu::event_status(libc::PTRACE_EVENT_VFORK_DONE)
        } else if std::mem::take(&mut rel.in_syscall) && rel.mode == Mode::Syscall {
            rel.syscall_status()
        } else {
            return Ok(false);
        };
        self.ptrace_stop(
            tid,
            PtraceHeld::AfterEvent,
            status,
            emu::trap_siginfo(status),
        )?;
        Ok(true)
    }

    /// The held task `tid`, resumed by its tracer, gets the CPU: writes its resumption and
    /// lets it run on as asked.
    pub(super) fn ptrace_resume(&mut self, tid: i32, held: Held) -> Result<()> {
        let (sig, mode) = held
            .resume
            .context("resuming a task its tracer did not resume")?;
        let mut info = None;
        if let Some(rel) = self.ptrace.get_mut(tid) {
            rel.mode = mode;
            info = rel.stop.take().map(|s| s.siginfo);
            rel.in_syscall |= held.at == PtraceHeld::SyscallEntry;
        }
        let step = mode == Mode::Step;
        self.writer.push(&Event::Ptrace(PtraceEvent {
            tid,
            action: PtraceAction::Resume { sig, step },
        }))?;
        self.current = Some(tid);
        match self.ptrace_run_on(tid, held.at, sig, step, info) {
            Err(e) if is_gone(&e) => {
                // Killed while held (its tracer's PTRACE_KILL or kill): its death comes next.
                tracing::debug!(tid, "a held task is gone: {e:#}");
                self.task(tid)?.state = State::Exiting;
                Ok(())
            }
            other => other,
        }
    }

    /// The held task `tid` runs on from `at` as its tracer asked (signal `sig`, one step).
    fn ptrace_run_on(
        &mut self,
        tid: i32,
        at: PtraceHeld,
        sig: i32,
        step: bool,
        info: Option<[u8; SIGINFO_SIZE]>,
    ) -> Result<()> {
        match at {
            PtraceHeld::SyscallEntry => {
                self.task(tid)?.state = State::Running;
                self.on_syscall_entry(tid)
            }
            PtraceHeld::Signal(stopped) => {
                if sig != 0 {
                    self.stop_signal_delivered(tid, sig);
                }
                let t = self.task(tid)?;
                t.state = State::Running;
                t.boundary = Some(t.tracee.regs()?);
                if sig != 0 && sig == stopped {
                    if let Some(info) = info {
                        t.tracee.set_siginfo(&info)?;
                    }
                }
                if step {
                    t.tracee.step(sig)
                } else {
                    t.tracee.cont(sig)
                }
            }
            PtraceHeld::CloneEvent => {
                let entry = self
                    .ptrace
                    .get_mut(tid)
                    .and_then(|r| r.clone_entry.take())
                    .context("a task held at a clone event without its syscall")?;
                self.current = None;
                self.ptrace.gave_up_cpu = true;
                let t = self.task(tid)?;
                t.state = State::InSyscall(entry);
                t.tracee.cont_syscall(0)
            }
            PtraceHeld::AfterEvent => {
                if self.ptrace_stops_after_event(tid)? {
                    return Ok(());
                }
                let r = self.task(tid)?.tracee.regs()?;
                self.run_on(tid, r, step)
            }
        }
    }

    /// At the clone event of `tid` (its syscall `entry`, new task `child`, clone `flags`):
    /// if its tracer asked for this event (`PTRACE_O_TRACECLONE`, `TRACEFORK`, `TRACEVFORK`),
    /// the new task is traced too and `tid` is held at the event (`None`); else `entry` back.
    pub(super) fn ptrace_on_clone(
        &mut self,
        tid: i32,
        child: i32,
        flags: u64,
        entry: Box<Entry>,
    ) -> Result<Option<Box<Entry>>> {
        let nr = entry.ev.nr;
        let vfork = nr == libc::SYS_vfork as u64 || flags & libc::CLONE_VFORK as u64 != 0;
        let Some(rel) = self.ptrace.get_mut(tid) else {
            return Ok(Some(entry));
        };
        if vfork && rel.has(libc::PTRACE_O_TRACEVFORKDONE) {
            rel.vfork_done = Some(child);
        }
        let (event, option) = if vfork {
            (libc::PTRACE_EVENT_VFORK, libc::PTRACE_O_TRACEVFORK)
        } else if nr == libc::SYS_fork as u64 || flags & 0xff == libc::SIGCHLD as u64 {
            (libc::PTRACE_EVENT_FORK, libc::PTRACE_O_TRACEFORK)
        } else {
            (libc::PTRACE_EVENT_CLONE, libc::PTRACE_O_TRACECLONE)
        };
        if !rel.has(option) || flags & libc::CLONE_UNTRACED as u64 != 0 {
            return Ok(Some(entry));
        }
        let mut traced = Relation::new(rel.tracer, rel.options);
        traced.seized = rel.seized;
        traced.start_pending = true;
        let thread = flags & libc::CLONE_THREAD as u64 != 0;
        traced.real_parent = (!thread).then(|| self.tasks.get(&tid).map_or(tid, |t| t.pid));
        if self.tasks.contains_key(&child) {
            self.ptrace.insert(child, traced);
        }
        let rel = self.ptrace.get_mut(tid).context("a traced parent")?;
        rel.event_msg = child as u64;
        rel.clone_entry = Some(entry);
        let status = emu::event_status(event);
        self.ptrace_stop(
            tid,
            PtraceHeld::CloneEvent,
            status,
            emu::trap_siginfo(status),
        )?;
        Ok(None)
    }

    /// Task `tid` of process `pid` died: its relation ends, and if its process has no task
    /// left, its tracees are detached (a held one runs on).
    pub(super) fn ptrace_on_death(&mut self, tid: i32, pid: i32, status: ExitStatus) -> Result<()> {
        if let Some(rel) = self.ptrace.remove(tid) {
            let alive = self.tasks.values().any(|t| t.pid == rel.tracer);
            if rel.real_parent != Some(rel.tracer) && alive {
                // The kernel tells only its parent: the recorder tells its tracer.
                self.ptrace.zombies.push(emu::Zombie {
                    tracer: rel.tracer,
                    tid,
                    pid,
                    status,
                });
                let uid = rel_uid();
                let woken = self.queue_sigchld(rel.tracer, emu::end_siginfo(tid, uid, status));
                self.wake_waiters(rel.tracer, woken);
            }
        }
        self.ptrace
            .zombies
            .retain(|z| z.tracer != pid || self.tasks.values().any(|t| t.pid == pid));
        if self.tasks.values().any(|t| t.pid == pid) {
            return Ok(());
        }
        for tracee in self.ptrace.tracees_of(pid) {
            self.ptrace.remove(tracee);
            let held = self
                .tasks
                .get(&tracee)
                .is_some_and(|t| matches!(t.state, State::Ptraced(Held { resume: None, .. })));
            if held {
                self.let_go(tracee, 0, Mode::Cont)?;
            }
        }
        Ok(())
    }
}
