//! GDB remote serial protocol support for deja, built on `gdbstub`.
//!
//! For now only the architecture: the registers of an x86-64 Linux task as gdb numbers and
//! lays them out ([`arch::X86_64Linux`]).

pub mod arch;
