//! Serving a tracer's `ptrace` requests on its tracee (see the parent module).

use anyhow::{Context, Result};
use nix::unistd::Pid;
use trace_format::{Event, PtraceAction, PtraceEvent, PtraceHeld};
use tracee::tracee::SIGINFO_SIZE;
use tracee::Regs;

use super::job_control::PTRACE_LISTEN;
use super::*;
use crate::ptrace_emu::{self as emu, Held, Mode, Relation};
use crate::recording::Session;
use crate::task::State;

impl Session {
    /// Writes `bytes` into the tracer `tid` at `addr`, as the kernel would for its request:
    /// the answer, or `EFAULT` if it cannot be written.
    pub(super) fn answer(
        &mut self,
        tid: i32,
        result: i64,
        addr: u64,
        bytes: Vec<u8>,
    ) -> Result<Served> {
        if self.task(tid)?.tracee.write_mem(addr, &bytes).is_err() {
            return Ok(Served::err(libc::EFAULT));
        }
        Ok(Served::writing(result, addr, bytes))
    }

    /// Records a change the tracer makes to its stopped tracee `target`.
    pub(in crate::recording) fn record_change(
        &mut self,
        target: i32,
        request: i64,
        addr: u64,
        word: u64,
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.writer.push(Event::Ptrace(PtraceEvent {
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
    pub(in crate::recording) fn held_by(&self, target: i32, tracer: i32) -> Option<PtraceHeld> {
        if self.ptrace.get(target)?.tracer != tracer {
            return None;
        }
        match &self.tasks.get(&target)?.state {
            State::Ptraced(Held { at, resume: None }) => Some(*at),
            _ => None,
        }
    }

    /// Serves the `ptrace` call of `tid` (registers `entry`).
    pub(super) fn ptrace_request(&mut self, tid: i32, entry: &Regs) -> Result<Served> {
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
                self.fast_path_off(tid)?;
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
                let group_stopped = self.group_stopped(target);
                self.ptrace.insert(target, rel);
                self.fast_path_off(target)?;
                if group_stopped {
                    // Already stopped by job control: the kernel makes it trap at once, and
                    // its tracer's wait reports that stop (see `job_control`).
                    self.hold_group_stopped(target)?;
                }
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
                let group_stopped = self.group_stopped(target);
                let rel = self.ptrace.get_mut(target).context("a seized tracee")?;
                if group_stopped {
                    // Stopped by job control: a seized tracee reports that group-stop.
                    rel.stop = Some(Self::group_stop_report(true));
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
            7 | 9 | 17 | 24 | 31 => {
                // PTRACE_CONT, PTRACE_SINGLESTEP, PTRACE_DETACH, PTRACE_SYSCALL, PTRACE_SYSEMU
                let mine = self.ptrace.get(target).is_some_and(|r| r.tracer == me);
                let held_in_group_stop = self
                    .ptrace
                    .get(target)
                    .is_some_and(|r| r.group_stop.is_some());
                if req == 17 && mine && held_in_group_stop {
                    return Err(Self::detach_from_group_stop_unsupported(target));
                }
                if req == 17 && mine && self.group_stopped(target) {
                    // Detached, it stays in its group-stop, as in the kernel.
                    self.ptrace.remove(target);
                    return Ok(Served::ok(0));
                }
                self.refuse_group_stopped_tracee(req, target, me)?;
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
                    31 => Mode::Sysemu,
                    _ => Mode::Cont,
                };
                if req == 17 {
                    self.ptrace.remove(target);
                }
                self.let_go(target, sig, mode)?;
                Ok(Served::ok(0))
            }
            PTRACE_LISTEN if self.held_by(target, me).is_some() => {
                self.ptrace_listen(target)?;
                Ok(Served::ok(0))
            }
            PTRACE_LISTEN if self.ptrace.get(target).is_some_and(|r| r.tracer == me) => {
                Err(Self::listen_unsupported(target))
            }
            _ => {
                self.refuse_group_stopped_tracee(req, target, me)?;
                let Some(at) = self.held_by(target, me) else {
                    return Ok(Served::err(libc::ESRCH));
                };
                self.ptrace_inspect(tid, req, target, at, addr, data)
            }
        }
    }

    /// Requests on a tracee held in an emulated stop: reading and changing its memory,
    /// registers and options.
    pub(super) fn ptrace_inspect(
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
            0x420e => self.ptrace_syscall_info(tid, target, at, addr, data),
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
    pub(super) fn ptrace_regset(
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
    pub(in crate::recording) fn send_attach_stop(
        &mut self,
        target: i32,
        pid: i32,
        tracer: i32,
    ) -> Result<()> {
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
    pub(in crate::recording) fn let_go(&mut self, target: i32, sig: i32, mode: Mode) -> Result<()> {
        let t = self.task(target)?;
        if let State::Ptraced(h) = &mut t.state {
            h.resume = Some((sig, mode));
            self.ready.push_back(target);
        }
        Ok(())
    }
}
