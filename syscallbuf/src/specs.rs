//! The library's per-syscall configuration ([`abi::Spec`]), derived from the one syscall
//! table (`syscalls`): which calls are buffered (`syscalls::buffered`) and what they write
//! (`syscalls::TABLE`'s outputs), so the fast path and the ptrace path record the same bytes.

use anyhow::{bail, Result};
use syscalls::{Len, Out, Probe};

use crate::abi::{self, OutSpec, Spec};

/// The spec of every syscall number below [`abi::MAX_NR`].
pub fn specs() -> Result<Box<[Spec; abi::MAX_NR]>> {
    let mut all = Box::new([Spec::default(); abi::MAX_NR]);
    for (nr, spec) in all.iter_mut().enumerate() {
        if let Some(s) = spec_of(nr as u64)? {
            *spec = s;
        }
    }
    Ok(all)
}

/// The spec of syscall `nr`, `None` if it is not buffered.
pub fn spec_of(nr: u64) -> Result<Option<Spec>> {
    let Some((probe, bound)) = syscalls::buffered(nr) else {
        return Ok(None);
    };
    let Some(def) = syscalls::lookup(nr) else {
        bail!("buffered syscall {nr} is not in the syscall table");
    };
    let mut spec = Spec {
        probe: match probe {
            Probe::Direct => abi::PROBE_DIRECT,
            Probe::Read => abi::PROBE_READ,
            Probe::Pread => abi::PROBE_PREAD,
            Probe::Readv => abi::PROBE_READV,
        },
        ..Spec::default()
    };
    if def.outs.len() > spec.outs.len() || def.outs_on_error {
        bail!("{}: its outputs cannot be buffered", def.name);
    }
    for (out, slot) in def.outs.iter().zip(spec.outs.iter_mut()) {
        *slot = match *out {
            Out::Buf {
                ptr,
                len: Len::Fixed(n),
            } => OutSpec {
                kind: abi::OUT_FIXED,
                arg: ptr as u8,
                size: n as u32,
                ..OutSpec::default()
            },
            // `min(arg, result)` bytes: the library caps `result` bytes at the bound.
            Out::Buf {
                ptr,
                len: Len::MinArgRet(a),
            } if bound == Some(a) => OutSpec {
                kind: abi::OUT_RET,
                arg: ptr as u8,
                count_arg: a as u8,
                ..OutSpec::default()
            },
            Out::Buf { ptr, len: Len::Ret } => {
                let Some(bound) = bound else {
                    bail!("{}: no argument bounds its result", def.name);
                };
                OutSpec {
                    kind: abi::OUT_RET,
                    arg: ptr as u8,
                    count_arg: bound as u8,
                    ..OutSpec::default()
                }
            }
            Out::Iov {
                iov,
                cnt,
                len: Len::Ret,
            } => OutSpec {
                kind: abi::OUT_IOV,
                arg: iov as u8,
                count_arg: cnt as u8,
                ..OutSpec::default()
            },
            ref other => bail!("{}: output {other:?} cannot be buffered", def.name),
        };
    }
    Ok(Some(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buffered_syscall_has_a_spec() {
        let all = specs().expect("every buffered syscall converts");
        let read = all[libc::SYS_read as usize];
        assert_eq!(read.probe, abi::PROBE_READ);
        assert_eq!(
            (read.outs[0].kind, read.outs[0].arg, read.outs[0].count_arg),
            (abi::OUT_RET, 1, 2)
        );
        let cg = all[libc::SYS_clock_gettime as usize];
        assert_eq!(
            (cg.probe, cg.outs[0].kind, cg.outs[0].size),
            (abi::PROBE_DIRECT, abi::OUT_FIXED, 16)
        );
        assert_eq!(all[libc::SYS_openat as usize].probe, abi::PROBE_DIRECT);
        assert_eq!(all[libc::SYS_mmap as usize].probe, abi::PROBE_NONE);
        assert_eq!(all[libc::SYS_write as usize].probe, abi::PROBE_NONE);
    }
}
