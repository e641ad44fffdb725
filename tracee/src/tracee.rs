//! A task under ptrace: registers, memory, signals, and resuming it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::gone::PtraceContext;
use crate::regs::Regs;
use crate::stop::{wait_for, Stop};

/// Size of the kernel's `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;

/// `si_signo` and `si_code` of raw `siginfo_t` bytes.
pub fn signo_code(info: &[u8; SIGINFO_SIZE]) -> (i32, i32) {
    let word = |o: usize| i32::from_le_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
    (word(0), word(8))
}

/// A traced task. All methods other than the resume ones require the task to be in a ptrace
/// stop; the kernel refuses them otherwise and the error says so.
#[derive(Debug)]
pub struct Tracee {
    pid: Pid,
    /// `/proc/PID/mem`, which reads and writes through page protections (as ptrace may).
    mem: File,
    /// After [`Tracee::set_signals_aside`]: the signals that stopped the task before
    /// a syscall injected into it ran, with their `siginfo`, in order.
    pub(crate) aside: Mutex<Option<Vec<SignalAside>>>,
}

/// A signal taken from a task (its number and raw `siginfo_t`), to be sent again or dropped.
pub type SignalAside = (i32, [u8; SIGINFO_SIZE]);

impl Tracee {
    /// Takes control of an already traced task `pid`.
    pub fn attach_traced(pid: Pid) -> Result<Self> {
        let mem = open_mem(pid)?;
        Ok(Tracee {
            pid,
            mem,
            aside: Mutex::new(None),
        })
    }

    /// The task id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Reopens `/proc/PID/mem`: needed after `execve`, which replaces the address space the old
    /// handle refers to.
    pub fn reopen_mem(&mut self) -> Result<()> {
        self.mem = open_mem(self.pid)?;
        Ok(())
    }

    /// The general registers.
    pub fn regs(&self) -> Result<Regs> {
        ptrace::getregs(self.pid).ptrace_context(self.pid, || {
            format!("reading registers of task {}", self.pid)
        })
    }

    /// Sets the general registers.
    pub fn set_regs(&self, regs: &Regs) -> Result<()> {
        ptrace::setregs(self.pid, *regs).ptrace_context(self.pid, || {
            format!("writing registers of task {}", self.pid)
        })
    }

    /// Reads up to `buf.len()` bytes at `addr`; returns how many were readable.
    pub fn read_mem_partial(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            match self.mem.read_at(&mut buf[done..], addr + done as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        done
    }

    /// Reads several places of the task's memory in one request (`process_vm_readv`): each
    /// `(addr, buf)` gets `buf.len()` bytes at `addr`. Fails unless every byte was read (the
    /// pages must be readable: this does not reach through the protections `/proc/PID/mem`
    /// does).
    pub fn read_many(&self, parts: &mut [(u64, &mut [u8])]) -> Result<()> {
        let remote: Vec<(u64, usize)> = parts.iter().map(|(a, b)| (*a, b.len())).collect();
        let local: Vec<libc::iovec> = parts
            .iter_mut()
            .map(|(_, b)| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        self.transfer(false, &remote, &local)
    }

    /// Writes several places of the task's memory in one request (`process_vm_writev`): each
    /// `(addr, bytes)`. The pages must be writable (unlike [`Tracee::write_mem`], which
    /// writes through `/proc/PID/mem`).
    pub fn write_many(&self, parts: &[(u64, &[u8])]) -> Result<()> {
        let remote: Vec<(u64, usize)> = parts.iter().map(|(a, b)| (*a, b.len())).collect();
        let local: Vec<libc::iovec> = parts
            .iter()
            .map(|(_, b)| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        self.transfer(true, &remote, &local)
    }

    /// `process_vm_writev` (`write`) or `process_vm_readv` between the `local` buffers and the
    /// task's `remote` places (address, length); fails unless every byte moved.
    fn transfer(&self, write: bool, remote: &[(u64, usize)], local: &[libc::iovec]) -> Result<()> {
        let want: usize = remote.iter().map(|&(_, len)| len).sum();
        let remote: Vec<libc::iovec> = remote
            .iter()
            .map(|&(addr, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        let call = if write {
            libc::process_vm_writev
        } else {
            libc::process_vm_readv
        };
        // SAFETY: the local iovecs describe buffers the caller borrows for the call (mutably
        // for a read); the kernel checks the remote ones against the task's address space.
        let n = unsafe {
            call(
                self.pid.as_raw(),
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 || n as usize != want {
            self.check_stopped()?;
            bail!(
                "cannot {} {want} bytes in {} places of task {} memory ({n} moved)",
                if write { "write" } else { "read" },
                remote.len(),
                self.pid
            );
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.read_mem_partial(addr, buf);
        if n != buf.len() {
            self.check_stopped()?;
            bail!(
                "cannot read {} bytes of task {} memory at {:#x} (only {} readable)",
                buf.len(),
                self.pid,
                addr,
                n
            );
        }
        Ok(())
    }

    /// Fails with a [`crate::gone::Vanished`] error if the task is no longer in a ptrace stop
    /// (it was killed): a memory access that failed may have failed for that reason.
    pub fn check_stopped(&self) -> Result<()> {
        self.event_msg().map(|_| ())
    }

    /// Reads `len` bytes at `addr` into a new vector.
    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.read_mem(addr, &mut v)?;
        Ok(v)
    }

    /// Reads a little-endian u64 at `addr`.
    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0; 8];
        self.read_mem(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes `data` at `addr`, even into read-only pages (as a debugger may).
    pub fn write_mem(&self, addr: u64, data: &[u8]) -> Result<()> {
        let mut done = 0;
        while done < data.len() {
            let n = match self.mem.write_at(&data[done..], addr + done as u64) {
                Ok(n) => n,
                Err(e) => {
                    self.check_stopped()?;
                    return Err(e).with_context(|| {
                        format!(
                            "writing {} bytes of task {} memory at {:#x}",
                            data.len(),
                            self.pid,
                            addr + done as u64
                        )
                    });
                }
            };
            if n == 0 {
                self.check_stopped()?;
                bail!("task {} memory at {:#x} is not writable", self.pid, addr);
            }
            done += n;
        }
        Ok(())
    }

    /// One of the task's signal sets as `/proc/TID/status` shows it (see [`signal_set`]).
    pub fn signal_set(&self, field: &str) -> Result<u64> {
        signal_set(self.pid, field)
    }

    /// The `siginfo_t` of the signal the task is stopped for, as raw bytes.
    pub fn siginfo(&self) -> Result<[u8; SIGINFO_SIZE]> {
        let mut buf = [0u8; SIGINFO_SIZE];
        // SAFETY: PTRACE_GETSIGINFO writes exactly one siginfo_t (128 bytes) to `data`, which
        // points at a buffer of that size owned by this frame.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_GETSIGINFO,
                self.pid.as_raw(),
                0usize,
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .ptrace_context(self.pid, || format!("reading siginfo of task {}", self.pid));
        }
        Ok(buf)
    }

    /// Replaces the `siginfo_t` of the signal the task is stopped for.
    pub fn set_siginfo(&self, info: &[u8]) -> Result<()> {
        let mut buf = [0u8; SIGINFO_SIZE];
        let n = info.len().min(SIGINFO_SIZE);
        buf[..n].copy_from_slice(&info[..n]);
        // SAFETY: PTRACE_SETSIGINFO reads one siginfo_t (128 bytes) from `data`, a buffer of
        // that size owned by this frame.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_SETSIGINFO,
                self.pid.as_raw(),
                0usize,
                buf.as_ptr(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .ptrace_context(self.pid, || format!("writing siginfo of task {}", self.pid));
        }
        Ok(())
    }

    /// Resumes until the next stop, delivering `sig` if the task is in a signal-delivery-stop.
    pub fn cont(&self, sig: i32) -> Result<()> {
        self.resume(libc::PTRACE_CONT, sig, "resuming")
    }

    /// Resumes until the next syscall-stop (or other stop).
    pub fn cont_syscall(&self, sig: i32) -> Result<()> {
        self.resume(libc::PTRACE_SYSCALL, sig, "resuming to the syscall exit")
    }

    /// Executes one instruction (or stops earlier at a syscall, signal or event stop),
    /// delivering `sig` if the task is in a signal-delivery-stop.
    pub fn step(&self, sig: i32) -> Result<()> {
        self.resume(libc::PTRACE_SINGLESTEP, sig, "single-stepping")
    }

    fn resume(&self, request: libc::c_uint, sig: i32, what: &str) -> Result<()> {
        if crate::deferred::hold(self.pid, request, sig) {
            return Ok(());
        }
        // SAFETY: a resume request on our tracee takes only integers.
        let r = unsafe { libc::ptrace(request, self.pid.as_raw(), 0usize, sig as usize) };
        if r < 0 {
            return Err(std::io::Error::last_os_error())
                .ptrace_context(self.pid, || format!("{what} task {}", self.pid));
        }
        Ok(())
    }

    /// The `rdtsc`/`rdtscp`/`cpuid` instruction at `rip`, with its length, if that is what is
    /// there.
    pub fn trapped_insn_at(&self, rip: u64) -> Option<(crate::insn::Trapped, usize)> {
        let mut bytes = [0u8; 16];
        let n = self.read_mem_partial(rip, &mut bytes);
        crate::insn::decode_trapped(&bytes[..n], rip)
    }

    /// The message of the ptrace event this task is stopped at (`PTRACE_GETEVENTMSG`): the new
    /// task's id at a clone, fork or vfork event, the former thread id at an exec event.
    pub fn event_msg(&self) -> Result<u64> {
        let mut msg: libc::c_ulong = 0;
        // SAFETY: PTRACE_GETEVENTMSG stores one unsigned long at `data`, a local of that type.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_GETEVENTMSG,
                self.pid.as_raw(),
                0usize,
                &mut msg as *mut libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).ptrace_context(self.pid, || {
                format!("reading the ptrace event of task {}", self.pid)
            });
        }
        Ok(msg)
    }

    /// Waits for the next stop or end of this task.
    pub fn wait(&self) -> Result<Stop> {
        wait_for(self.pid)
    }

    /// Sends `sig` to this thread (the tracee will stop for it at its next return to user mode).
    pub fn tgkill(&self, tgid: Pid, sig: i32) -> Result<()> {
        // SAFETY: tgkill takes only integers.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, tgid.as_raw(), self.pid.as_raw(), sig) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).ptrace_context(self.pid, || {
                format!("sending signal {sig} to task {}", self.pid)
            });
        }
        Ok(())
    }

    /// Kills all `tracees` at once, then reaps them in whatever order the kernel reports their
    /// ends: a thread group's leader is reported only after its other threads, and a vfork
    /// parent only after its child, so reaping one by one could wait forever. Only these
    /// tasks are waited for (each polled in turn): a wait for any task would take, and lose,
    /// the stops of other traced tasks still in use (a replay's fresh fork child's first
    /// stop, when a copy of that replay is dropped). Errors are ignored: a task may already
    /// be gone.
    pub fn kill_and_reap_all<'a>(tracees: impl IntoIterator<Item = &'a Tracee>) {
        let mut alive: std::collections::HashSet<Pid> =
            tracees.into_iter().map(|t| t.pid).collect();
        for &pid in &alive {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        while !alive.is_empty() {
            let mut reported = false;
            alive.retain(|&pid| match crate::stop::poll(pid) {
                Ok(None) => true,
                Ok(Some(stop)) => {
                    reported = true;
                    !stop.is_end()
                }
                // Not a child any more: reaped before (its end is not reported again).
                Err(_) => false,
            });
            if !reported {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }

    /// Kills the task and reaps it. Errors are ignored: the task may already be gone.
    pub fn kill_and_reap(&self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        loop {
            match wait_for(self.pid) {
                Ok(s) if s.is_end() => break,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
}

fn open_mem(pid: Pid) -> Result<File> {
    let path = format!("/proc/{pid}/mem");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {path}"))
}

/// One of task `tid`'s signal sets as `/proc/TID/status` shows it (`field` is e.g. `"SigBlk"`,
/// `"SigCgt"`, `"SigIgn"`, `"SigPnd"`): bit `n - 1` stands for signal `n`.
pub fn signal_set(tid: Pid, field: &str) -> Result<u64> {
    let path = format!("/proc/{tid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .with_context(|| format!("no {field} in {path}"))
}
