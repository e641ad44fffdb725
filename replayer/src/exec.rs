//! Restoring the recorded program image at the replay's exec stop.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use trace_format::{ExecEvent, TraceReader};
use tracee::{auxv, maps, regs, vdso, Regs, Tracee};

use crate::divergence::Divergence;

/// Makes the freshly exec'd replay tracee identical to the recorded one at its exec stop: checks
/// the memory map, writes the recorded initial stack (argv, environment, auxv, AT_RANDOM bytes,
/// the vDSO kept or hidden as in the recording) and the recorded registers, and patches the
/// vDSO as the recorder did.
pub fn restore(tracee: &Tracee, ev: &ExecEvent, event: u64) -> Result<()> {
    let entries = maps::read(tracee.pid())?;
    let found: Vec<(u64, u64, &str)> = entries
        .iter()
        .filter(|e| e.name != "[stack]")
        .map(|e| (e.start, e.end, e.perms.as_str()))
        .collect();
    let expected: Vec<(u64, u64, &str)> = ev
        .mappings
        .iter()
        .filter(|m| m.name != "[stack]")
        .map(|m| (m.start, m.end, m.perms.as_str()))
        .collect();
    if found != expected {
        let show = |v: &[(u64, u64, &str)]| {
            v.iter()
                .map(|(s, e, p)| format!("{s:#x}-{e:#x} {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Divergence {
            event,
            task: ev.tid,
            expected: format!("the recorded memory map [{}]", show(&expected)),
            found: format!("[{}]", show(&found)),
            details: vec![
                "the program or its dynamic loader differs from the recorded one, or address \
                 randomization could not be disabled"
                    .into(),
            ],
        }
        .into());
    }
    let stack = entries
        .iter()
        .find(|e| e.name == "[stack]")
        .context("the replayed program has no [stack] mapping")?;
    if ev.stack_addr < stack.start || ev.stack_addr + ev.stack.len() as u64 != stack.end {
        return Err(Divergence {
            event,
            task: ev.tid,
            expected: format!(
                "an initial stack at {:#x}-{:#x}",
                ev.stack_addr,
                ev.stack_addr + ev.stack.len() as u64
            ),
            found: format!("a stack mapping at {:#x}-{:#x}", stack.start, stack.end),
            details: vec![],
        }
        .into());
    }
    let signals = tracee::SignalState::of_task(tracee.pid())?;
    if (signals.blocked, signals.ignored) != (ev.sig_blocked, ev.sig_ignored) {
        return Err(Divergence {
            event,
            task: ev.tid,
            expected: format!(
                "blocked signals {:#x} and ignored signals {:#x} at exec",
                ev.sig_blocked, ev.sig_ignored
            ),
            found: format!("{:#x} and {:#x}", signals.blocked, signals.ignored),
            details: vec![],
        }
        .into());
    }
    // The replay's own initial stack may reach lower than the recorded one (its executable
    // path is longer); below the recorded stack pointer the recording had untouched, zeroed
    // stack, and so must the replay, for programs that read uninitialized stack.
    let replay_sp = tracee.regs()?.rsp;
    if replay_sp < ev.stack_addr {
        tracee.write_mem(replay_sp, &vec![0u8; (ev.stack_addr - replay_sp) as usize])?;
    }
    tracee.write_mem(ev.stack_addr, &ev.stack)?;
    // The recording kept the vDSO with its functions made syscalls (unless its auxv hides it):
    // the replay's must be the same code at the same address.
    let keeps_vdso = auxv::entries(&ev.stack)
        .iter()
        .any(|(_, t, _)| *t == auxv::AT_SYSINFO_EHDR);
    if keeps_vdso && !vdso::patch(tracee).context("patching the replay's vDSO")? {
        bail!("the recorded program had a vDSO, the replayed one has none");
    }
    tracee.set_regs(&regs::from_words(&ev.regs))?;
    Ok(())
}

/// Gives the replay's task the recorded name (its own is the name of the trace's copy of the
/// executable), at the exit stop of its `execve`: `prctl(PR_SET_NAME)` injected (a task can
/// only rename itself), with the name written just below the stack pointer, in the zeroed
/// stack the recording had there, and zeroed again.
pub fn set_comm(tracee: &Tracee, ev: &ExecEvent) -> Result<()> {
    let current =
        std::fs::read_to_string(format!("/proc/{}/comm", tracee.pid())).unwrap_or_default();
    if ev.comm.is_empty() || current.trim_end_matches('\n') == ev.comm {
        return Ok(());
    }
    let mut name = ev.comm.as_bytes().to_vec();
    name.push(0);
    let at = (ev.stack_addr - 64) & !15;
    tracee.write_mem(at, &name)?;
    let r = tracee.inject_syscall(libc::SYS_prctl, [libc::PR_SET_NAME as u64, at, 0, 0, 0, 0]);
    tracee.write_mem(at, &vec![0u8; name.len()])?;
    let r = r.context("naming the replayed task")?;
    if r < 0 {
        bail!("naming the replayed task {:?}: error {}", ev.comm, -r);
    }
    Ok(())
}

/// The kernel loads a program's ELF interpreter from the system, not from the trace. When the
/// system's copy differs from the recorded one (a glibc update, a rebuilt loader), returns the
/// trace's copy and the path to bind-mount it over, in the replay's private mount namespace.
pub fn interpreter_override(
    reader: &TraceReader,
    ev: &ExecEvent,
    program: &Path,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let Some(interp) = tracee::elf::interpreter(program)? else {
        return Ok(None);
    };
    // At the exec stop only the executable and its interpreter are mapped.
    let Some(recorded) = ev
        .mappings
        .iter()
        .filter_map(|m| m.file.as_ref())
        .find(|f| f.hash != ev.exe.hash)
    else {
        return Ok(None);
    };
    let current = std::fs::read(&interp)
        .ok()
        .map(|d| blake3::hash(&d).to_hex().to_string());
    if current.as_deref() == Some(recorded.hash.as_str()) {
        return Ok(None);
    }
    if current.is_none() {
        bail!(
            "the program's ELF interpreter {interp} no longer exists; replay needs a file at that \
             path to mount the recorded copy ({}) over",
            reader.file_path(recorded)?.display()
        );
    }
    tracing::info!(%interp, "the ELF interpreter changed since the recording: using the recorded copy");
    Ok(Some((reader.file_path(recorded)?, PathBuf::from(interp))))
}

/// Whether syscall `nr` runs a new program (`execve`, or `execveat`: `fexecve`).
pub fn is_exec(nr: u64) -> bool {
    nr == libc::SYS_execve as u64 || nr == libc::SYS_execveat as u64
}

/// Turns the exec `tracee` is stopped at the entry of (registers `r`) into an `execve` of the
/// trace's copy of the executable the recording ran, `program`, with the program's own argv
/// and environment: an `execveat` of a descriptor (a memfd has no path at all) becomes an
/// `execve` of that copy too.
///
/// The path is written just below the red zone of the old image's stack, which the exec
/// discards, unless the task borrows its parent's address space (`vfork`): returns where and
/// the bytes that were there, for the caller to put back in the parent.
pub fn run_trace_copy(tracee: &Tracee, r: &mut Regs, program: &Path) -> Result<(u64, Vec<u8>)> {
    let mut bytes = program.as_os_str().as_encoded_bytes().to_vec();
    bytes.push(0);
    let at = (r.rsp - 128 - bytes.len() as u64) & !15;
    let old = tracee
        .read_vec(at, bytes.len())
        .context("reading the stack below the exec's red zone")?;
    tracee
        .write_mem(at, &bytes)
        .context("writing the path of the trace's copy of the executable")?;
    if r.orig_rax == libc::SYS_execveat as u64 {
        // execveat(dirfd, path, argv, envp, flags) -> execve(path, argv, envp)
        r.orig_rax = libc::SYS_execve as u64;
        r.rsi = r.rdx;
        r.rdx = r.r10;
    }
    r.rdi = at;
    tracee.set_regs(r)?;
    Ok((at, old))
}
