//! Shared control of a traced process, used by both the recorder and the replayer.
//!
//! Spawning a program under ptrace with a seccomp filter, waiting for and classifying its stops,
//! reading and writing its registers and memory, and small decoders of what the kernel hands a
//! new process (its memory map, its initial stack and auxiliary vector, its instructions), and
//! the planning of syscall-site patches for the in-process fast path ([`functions`], [`patch`]).

pub mod affinity;
pub mod alarm;
pub mod auxv;
pub mod cpuid;
pub mod debugregs;
pub mod deferred;
pub mod digest;
pub mod elf;
pub mod fastpath;
pub mod forced_segv;
pub mod fork;
pub mod functions;
pub mod gone;
pub mod inject;
pub mod insn;
pub mod locate;
pub mod maps;
pub mod migrate;
pub mod nsinit;
pub mod patch;
pub mod regs;
pub mod seccomp;
pub mod segv_mask;
pub mod spawn;
pub mod state;
pub mod stop;
pub mod tracee;
pub mod tsc;
pub mod vdso;
pub mod xregs;
pub mod xregs512;

pub use regs::Regs;
pub use spawn::{spawn, SignalState, SpawnOptions};
pub use stop::Stop;
pub use tracee::Tracee;
