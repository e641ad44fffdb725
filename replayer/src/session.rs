//! The replay loop: drives the tracee from event to event of the trace.

use std::path::Path;

use anyhow::{bail, Context, Result};
use syscalls::Replay;
use trace_format::{
    Event, EventIter, ExitStatus, RdtscEvent, SignalEvent, SignalOrigin, SyscallEvent, TraceReader,
};
use tracee::insn::Trapped;
use tracee::{regs, spawn, SpawnOptions, Stop, Tracee};

use crate::divergence::{Divergence, Incomplete};
use crate::{echo, exec, mmap, sigmask};

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Do not echo what the program wrote to stdout/stderr.
    pub quiet: bool,
}

/// A replay that reached the end of the recording faithfully.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// How the program ended (as recorded, and as replayed).
    pub status: ExitStatus,
    /// Number of events replayed.
    pub events: u64,
}

/// `-ERESTARTSYS` .. `-ERESTART_RESTARTBLOCK`: results that make the kernel restart or fail the
/// syscall when the signal that follows is delivered.
fn is_restart_code(result: i64) -> bool {
    (-516..=-512).contains(&result)
}

/// Replays the trace in `dir` to its end.
pub fn replay(dir: &Path, opts: &ReplayOptions) -> Result<ReplayOutcome> {
    let (dir, opts) = (dir.to_path_buf(), opts.clone());
    tracee::tsc::on_tracer_thread(move || replay_here(&dir, &opts))
}

/// [`replay`], on the tracer thread.
fn replay_here(dir: &Path, opts: &ReplayOptions) -> Result<ReplayOutcome> {
    let reader = TraceReader::open(dir)?;
    warn_if_cpu_differs(&reader);
    let mut events = reader.events()?;
    let first = match events.next() {
        Some(ev) => ev?,
        None => bail!(Incomplete { events: 0 }),
    };
    let Event::Exec(exec_ev) = first else {
        bail!("the trace does not start with the program's exec");
    };
    let meta = reader.meta();
    let program = reader.file_path(&exec_ev.exe)?;
    let bind_over = exec::interpreter_override(&reader, &exec_ev, &program)?;
    let cpu = meta.cpu.map(|c| c as usize).filter(|&c| cpu_allowed(c));
    if let Some(c) = cpu {
        tracee::pin_current_thread(c)?;
    }
    let tracee = spawn(&SpawnOptions {
        program,
        argv: meta.argv.clone(),
        env: meta.env.clone(),
        cpu,
        trap_tsc: true,
        seccomp: true,
        no_core_dump: true,
        signals: tracee::SignalState {
            blocked: exec_ev.sig_blocked,
            ignored: exec_ev.sig_ignored,
        },
        bind_over,
    })?;
    let mut session = Session {
        tracee,
        reader: &reader,
        events,
        next: None,
        index: 0,
        signal_sent: false,
        opts: opts.clone(),
    };
    let result = session.run(&exec_ev);
    if result.is_err() {
        session.tracee.kill_and_reap();
    }
    result
}

fn cpu_allowed(cpu: usize) -> bool {
    // SAFETY: zero is a valid (empty) cpu_set_t, filled in by sched_getaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && cpu < libc::CPU_SETSIZE as usize
            && libc::CPU_ISSET(cpu, &set)
    }
}

/// CPUID cannot be trapped on machines without CPUID faulting; replay then relies on the
/// replaying CPU answering as the recording one did. Say so when it does not.
fn warn_if_cpu_differs(reader: &TraceReader) {
    let recorded = &reader.meta().cpuid;
    if recorded.is_empty() {
        return;
    }
    let here = tracee::cpuid::fingerprint();
    let differs = recorded.iter().any(|r| {
        let now = here
            .iter()
            .find(|(l, s, _)| *l == r.leaf && *s == r.subleaf)
            .map(|(l, _, v)| tracee::cpuid::normalize(*l, *v));
        now != Some(tracee::cpuid::normalize(r.leaf, r.regs))
    });
    if differs {
        eprintln!(
            "deja: warning: this CPU answers CPUID differently from the one that recorded the \
             trace; a program that consults CPUID may diverge"
        );
    }
}

struct Session<'r> {
    tracee: Tracee,
    reader: &'r TraceReader,
    events: EventIter,
    /// The next event, once peeked.
    next: Option<Event>,
    /// Index of the event being replayed.
    index: u64,
    /// The signal of the next event was already sent (see [`sigmask`]).
    signal_sent: bool,
    opts: ReplayOptions,
}

impl Session<'_> {
    fn peek(&mut self) -> Result<Option<&Event>> {
        if self.next.is_none() {
            self.next = self.events.next().transpose()?;
        }
        Ok(self.next.as_ref())
    }

    fn take(&mut self) -> Result<Option<Event>> {
        self.peek()?;
        Ok(self.next.take())
    }

    fn diverged(&self, expected: String, found: String, details: Vec<String>) -> anyhow::Error {
        Divergence {
            event: self.index,
            expected,
            found,
            details,
        }
        .into()
    }

    fn run(&mut self, exec_ev: &trace_format::ExecEvent) -> Result<ReplayOutcome> {
        self.tracee.cont_syscall(0)?;
        match self.tracee.wait()? {
            Stop::Exec => {}
            other => bail!("the recorded program did not start in replay: {other:?}"),
        }
        self.finish_exec(exec_ev)?;
        loop {
            let Some(ev) = self.take()? else {
                if self.events.truncated() || !self.reader.meta().complete {
                    bail!(Incomplete {
                        events: self.index + 1
                    });
                }
                bail!("the trace ends without the program's exit");
            };
            self.index += 1;
            match ev {
                Event::Syscall(e) => self.syscall(&e)?,
                Event::Signal(e) => self.signal(&e)?,
                Event::Rdtsc(e) => self.rdtsc(&e)?,
                Event::Exit(e) => return self.exit(e.status),
                Event::Exec(e) => self.exec(&e)?,
                Event::Cpuid(_) => bail!("trapped CPUID events are not supported by this replayer"),
                Event::Clone(_) | Event::Start(_) => bail!("process trees are not replayed yet"),
            }
        }
    }

    /// At the exec stop: makes the new image the recorded one and runs to the end of `execve`.
    fn finish_exec(&mut self, ev: &trace_format::ExecEvent) -> Result<()> {
        self.tracee.reopen_mem()?;
        exec::restore(&self.tracee, ev)?;
        self.tracee.cont_syscall(0)?;
        match self.tracee.wait()? {
            Stop::SyscallStop => {}
            other => bail!("unexpected stop after exec: {other:?}"),
        }
        self.resume(0)
    }

    /// A successful `execve` of the program: runs it for real, but on the trace's copy of the
    /// executable the recording ran.
    fn exec(&mut self, ev: &trace_format::ExecEvent) -> Result<()> {
        let stop = self.wait_stop(None)?;
        let mut r = self.tracee.regs()?;
        if stop != Stop::SeccompEntry || r.orig_rax != libc::SYS_execve as u64 {
            let found = self.describe_stop(stop);
            return Err(self.diverged(format!("execve of {}", ev.exe.path), found, vec![]));
        }
        let path = self.reader.file_path(&ev.exe)?;
        let mut bytes = path.as_os_str().as_encoded_bytes().to_vec();
        bytes.push(0);
        // Just below the red zone of the old image's stack, which the exec discards anyway.
        let at = (r.rsp - 128 - bytes.len() as u64) & !15;
        self.tracee.write_mem(at, &bytes)?;
        r.rdi = at;
        self.tracee.set_regs(&r)?;
        self.tracee.cont_syscall(0)?;
        match self.tracee.wait()? {
            Stop::Exec => self.finish_exec(ev),
            other => {
                let found = match other {
                    Stop::SyscallStop => {
                        let err = self.tracee.regs()?.rax as i64;
                        format!("execve failing with {}", errno_text(err))
                    }
                    other => self.describe_stop(other),
                };
                Err(self.diverged(format!("execve of {}", ev.exe.path), found, vec![]))
            }
        }
    }

    /// Resumes the tracee after an event, first sending the signal the recording delivered
    /// right at this point, if any.
    fn resume(&mut self, sig: i32) -> Result<()> {
        match self.peek()? {
            Some(Event::Signal(s)) if s.origin == SignalOrigin::Async => {
                let signo = s.signo;
                if !std::mem::take(&mut self.signal_sent) {
                    self.tracee.tgkill(self.tracee.pid(), signo)?;
                }
            }
            Some(Event::Exit(e)) if e.status == ExitStatus::Signaled(libc::SIGKILL) => {
                // SIGKILL never shows as a stop: the recorded process just ended here.
                let _ = nix::sys::signal::kill(self.tracee.pid(), nix::sys::signal::SIGKILL);
                return Ok(());
            }
            _ => {}
        }
        self.tracee.cont(sig)
    }

    /// Waits for the next stop, ignoring signals sent from outside the replay (the replay
    /// produces no asynchronous signals of its own except those it injects).
    fn wait_stop(&mut self, expected_signal: Option<i32>) -> Result<Stop> {
        loop {
            let stop = self.tracee.wait()?;
            if let Stop::Signal(sig) = stop {
                if Some(sig) == expected_signal {
                    return Ok(stop);
                }
                let Ok(info) = self.tracee.siginfo() else {
                    self.tracee.cont(0)?;
                    continue;
                };
                let (_, code) = tracee::tracee::signo_code(&info);
                if code <= 0 {
                    tracing::debug!(sig, "ignoring a signal sent to the replay from outside");
                    self.tracee.cont(0)?;
                    continue;
                }
            }
            return Ok(stop);
        }
    }

    fn describe_stop(&self, stop: Stop) -> String {
        let rip = self.tracee.regs().map(|r| r.rip).unwrap_or(0);
        match stop {
            Stop::SeccompEntry => {
                let nr = self.tracee.regs().map(|r| r.orig_rax).unwrap_or(u64::MAX);
                format!("syscall {} at rip {rip:#x}", syscalls::name(nr))
            }
            Stop::Signal(s) => format!("signal {s} at rip {rip:#x}"),
            Stop::Exited(c) => format!("the program exiting with status {c}"),
            Stop::Killed(s) => format!("the program killed by signal {s}"),
            other => format!("{other:?} at rip {rip:#x}"),
        }
    }

    fn syscall(&mut self, e: &SyscallEvent) -> Result<()> {
        let name = syscalls::name(e.nr);
        let stop = self.wait_stop(None)?;
        if stop != Stop::SeccompEntry {
            let found = self.describe_stop(stop);
            return Err(self.diverged(
                format!("syscall {name} at rip {:#x}", e.rip),
                found,
                vec![],
            ));
        }
        let mut r = self.tracee.regs()?;
        let args = regs::syscall_args(&r);
        if r.orig_rax != e.nr || args != e.args || r.rip != e.rip {
            let show = |nr: u64, a: &[u64; 6], rip: u64| {
                let args: Vec<String> = a.iter().map(|x| format!("{x:#x}")).collect();
                format!(
                    "{}({}) at rip {rip:#x}",
                    syscalls::name(nr),
                    args.join(", ")
                )
            };
            return Err(self.diverged(
                show(e.nr, &e.args, e.rip),
                show(r.orig_rax, &args, r.rip),
                vec![],
            ));
        }
        if regs::digest(&r) != e.regs_digest {
            return Err(self.diverged(
                format!("{name} with the recorded registers"),
                format!("{name} with different registers (rip {:#x})", r.rip),
                vec!["the general registers at syscall entry differ from the recording".into()],
            ));
        }
        let replay = syscalls::lookup(e.nr)
            .map(|d| d.replay)
            .unwrap_or(Replay::Deny(libc::ENOSYS));
        match replay {
            Replay::Execute => {
                self.run_for_real(&name)?;
                self.check_result(e)?;
            }
            Replay::Mmap if !syscalls::is_error(e.result) => {
                let saved = r;
                regs::set_syscall_args(&mut r, &mmap::replacement_args(e));
                self.tracee.set_regs(&r)?;
                self.run_for_real(&name)?;
                let mut after = self.tracee.regs()?;
                if after.rax as i64 != e.result {
                    return Err(self.diverged(
                        format!("mmap to return {:#x}", e.result),
                        format!("{:#x} ({})", after.rax, errno_text(after.rax as i64)),
                        vec![],
                    ));
                }
                mmap::fill_from_file(&self.tracee, self.reader, e)?;
                regs::set_syscall_args(&mut after, &regs::syscall_args(&saved));
                self.tracee.set_regs(&after)?;
            }
            Replay::Exit => {
                self.tracee.cont(0)?;
                return Ok(());
            }
            Replay::Unsupported(reason) => bail!("{name} is not supported: {reason}"),
            Replay::Exec if !syscalls::is_error(e.result) => {
                bail!("the trace records a successful execve as a plain syscall")
            }
            Replay::Emulate | Replay::Deny(_) | Replay::Mmap | Replay::Exec => {
                if !self.opts.quiet {
                    echo::echo(&self.tracee, e).unwrap_or_else(|err| {
                        tracing::warn!("could not echo output: {err:#}");
                    });
                }
                let interrupted = is_restart_code(e.result) || e.result == -(libc::EINTR as i64);
                let signal_next = match self.peek()? {
                    Some(Event::Signal(s)) if s.origin == SignalOrigin::Async => Some(s.signo),
                    _ => None,
                };
                let mask = match signal_next {
                    Some(_) if interrupted => sigmask::temporary_mask(&self.tracee, e)?,
                    _ => None,
                };
                if let (Some((set, size)), Some(signo)) = (mask, signal_next) {
                    let saved = r;
                    r.orig_rax = libc::SYS_rt_sigsuspend as u64;
                    r.rdi = set;
                    r.rsi = size;
                    self.tracee.set_regs(&r)?;
                    self.tracee.tgkill(self.tracee.pid(), signo)?;
                    self.signal_sent = true;
                    self.tracee.cont_syscall(0)?;
                    self.expect_syscall_exit(&name)?;
                    r = self.tracee.regs()?;
                    regs::set_syscall_args(&mut r, &regs::syscall_args(&saved));
                    r.orig_rax = e.nr;
                } else if is_restart_code(e.result) {
                    // The restart logic that runs when the following signal is delivered needs
                    // the syscall to have really happened: run getpid in its place.
                    r.orig_rax = libc::SYS_getpid as u64;
                    self.tracee.set_regs(&r)?;
                    self.tracee.cont_syscall(0)?;
                    self.expect_syscall_exit(&name)?;
                    r = self.tracee.regs()?;
                    r.orig_rax = e.nr;
                } else {
                    r.orig_rax = u64::MAX;
                }
                self.write_memory(e)?;
                r.rax = e.result as u64;
                self.tracee.set_regs(&r)?;
            }
        }
        self.resume(0)
    }

    /// Lets the syscall the tracee is stopped at run, up to its exit stop.
    fn run_for_real(&mut self, name: &str) -> Result<()> {
        self.tracee.cont_syscall(0)?;
        self.expect_syscall_exit(name)
    }

    fn expect_syscall_exit(&mut self, name: &str) -> Result<()> {
        match self.tracee.wait()? {
            Stop::SyscallStop => Ok(()),
            other => {
                let found = self.describe_stop(other);
                Err(self.diverged(format!("{name} to return"), found, vec![]))
            }
        }
    }

    fn check_result(&self, e: &SyscallEvent) -> Result<()> {
        let got = self.tracee.regs()?.rax as i64;
        if got != e.result {
            return Err(self.diverged(
                format!("{} to return {}", syscalls::name(e.nr), e.result),
                format!("{got} ({})", errno_text(got)),
                vec![],
            ));
        }
        Ok(())
    }

    fn write_memory(&self, e: &SyscallEvent) -> Result<()> {
        for w in &e.writes {
            let data = self.reader.read_data(&w.data)?;
            self.tracee
                .write_mem(w.addr, &data)
                .with_context(|| format!("restoring what {} wrote", syscalls::name(e.nr)))?;
        }
        Ok(())
    }

    fn signal(&mut self, e: &SignalEvent) -> Result<()> {
        let stop = self.wait_stop(Some(e.signo))?;
        if stop != Stop::Signal(e.signo) {
            let found = self.describe_stop(stop);
            return Err(self.diverged(
                format!("signal {} at rip {:#x}", e.signo, e.rip),
                found,
                vec![],
            ));
        }
        let rip = self.tracee.regs()?.rip;
        if rip != e.rip {
            return Err(self.diverged(
                format!("signal {} at rip {:#x}", e.signo, e.rip),
                format!("signal {} at rip {rip:#x}", e.signo),
                vec![],
            ));
        }
        if e.origin == SignalOrigin::Async {
            self.tracee.set_siginfo(&e.siginfo)?;
        }
        self.resume(if e.delivered { e.signo } else { 0 })
    }

    fn rdtsc(&mut self, e: &RdtscEvent) -> Result<()> {
        let stop = self.wait_stop(Some(libc::SIGSEGV))?;
        let mut r = self.tracee.regs()?;
        let decoded = self.tracee.trapped_insn_at(r.rip);
        let expected = if e.aux.is_some() {
            Trapped::Rdtscp
        } else {
            Trapped::Rdtsc
        };
        let Some((kind, len)) = decoded.filter(|_| stop == Stop::Signal(libc::SIGSEGV)) else {
            let found = self.describe_stop(stop);
            return Err(self.diverged(format!("rdtsc at rip {:#x}", e.rip), found, vec![]));
        };
        if kind != expected || r.rip != e.rip {
            return Err(self.diverged(
                format!("{expected:?} at rip {:#x}", e.rip),
                format!("{kind:?} at rip {:#x}", r.rip),
                vec![],
            ));
        }
        r.rax = e.tsc & 0xffff_ffff;
        r.rdx = e.tsc >> 32;
        if let Some(aux) = e.aux {
            r.rcx = u64::from(aux);
        }
        r.rip += len as u64;
        self.tracee.set_regs(&r)?;
        self.resume(0)
    }

    fn exit(&mut self, expected: ExitStatus) -> Result<ReplayOutcome> {
        let stop = self.wait_stop(None)?;
        let found = match stop {
            Stop::Exited(c) => ExitStatus::Exited(c),
            Stop::Killed(s) => ExitStatus::Signaled(s),
            other => {
                let found = self.describe_stop(other);
                return Err(self.diverged(
                    format!("the program to end ({expected})"),
                    found,
                    vec![],
                ));
            }
        };
        if found != expected {
            return Err(self.diverged(expected.to_string(), found.to_string(), vec![]));
        }
        Ok(ReplayOutcome {
            status: found,
            events: self.index + 1,
        })
    }
}

fn errno_text(v: i64) -> String {
    if syscalls::is_error(v) {
        std::io::Error::from_raw_os_error(-v as i32).to_string()
    } else {
        "success".into()
    }
}
