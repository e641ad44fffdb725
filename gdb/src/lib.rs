//! The GDB remote serial protocol server of deja, built on `gdbstub`: serves a replay to gdb,
//! which debugs it as it would a live process (threads, registers, memory, breakpoints,
//! watchpoints, stepping, thread-local variables), every value as recorded.

mod agent;
pub mod arch;
mod avx512;
mod commands;
mod conditions;
mod hostio;
mod procs;
mod queries;
mod regcache;
pub mod server;
mod stepping;
mod target;
mod tls;
mod tls_packet;
mod xfer;

pub use commands::{install_script, SCRIPT};
pub use server::{gdb_command, serve};
pub use target::ReplayTarget;
