//! deja's in-process syscall buffer (the fast path): the `no_std` library injected into every
//! recorded process, how to load it, and the records it writes (see README.md).

#![warn(missing_docs)]

#[path = "../abi.rs"]
pub mod abi;
pub mod specs;
