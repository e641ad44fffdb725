//! The bytes a write-family syscall hands to the kernel, for echoing and checking a
//! program's output.

use crate::{Call, Memory};

/// Most iovecs a vectored write may pass (`UIO_MAXIOV`).
const IOV_MAX: u64 = 1024;

/// Whether `nr` writes a buffer to the descriptor in its first argument: `write`, `pwrite64`,
/// `writev`, `pwritev`, `pwritev2`.
pub fn writes_to_fd(nr: u64) -> bool {
    matches!(
        nr as i64,
        libc::SYS_write
            | libc::SYS_pwrite64
            | libc::SYS_writev
            | libc::SYS_pwritev
            | libc::SYS_pwritev2
    )
}

/// The first `call.result` bytes the write-family `call` passed to the kernel (its buffer, or
/// its iovecs in order), read from `mem`; `None` for another syscall, a failed one, or
/// memory that cannot be read.
pub fn written_bytes(call: &Call, mem: &dyn Memory) -> Option<Vec<u8>> {
    if !writes_to_fd(call.nr) || call.result < 0 {
        return None;
    }
    let total = usize::try_from(call.result).ok()?;
    let mut bytes = vec![0u8; total];
    match call.nr as i64 {
        libc::SYS_write | libc::SYS_pwrite64 => mem.read(call.arg(1), &mut bytes).then_some(bytes),
        _ => {
            let (iov, cnt) = (call.arg(1), call.arg(2).min(IOV_MAX));
            let mut at = 0;
            for i in 0..cnt {
                if at == total {
                    break;
                }
                let base = mem.read_u64(iov.wrapping_add(i * 16))?;
                let len = mem.read_u64(iov.wrapping_add(i * 16 + 8))?;
                let take = usize::try_from(len).unwrap_or(usize::MAX).min(total - at);
                if !mem.read(base, &mut bytes[at..at + take]) {
                    return None;
                }
                at += take;
            }
            (at == total).then_some(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory made of a few (address, bytes) ranges.
    struct Mem(Vec<(u64, Vec<u8>)>);

    impl Memory for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (start, data) in &self.0 {
                if addr >= *start && addr + buf.len() as u64 <= start + data.len() as u64 {
                    let off = (addr - start) as usize;
                    buf.copy_from_slice(&data[off..off + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    fn call(nr: i64, args: [u64; 6], result: i64) -> Call {
        Call {
            nr: nr as u64,
            args,
            result,
        }
    }

    #[test]
    fn write_gives_the_result_bytes_of_its_buffer() {
        let mem = Mem(vec![(0x1000, b"hello world".to_vec())]);
        let c = call(libc::SYS_write, [1, 0x1006, 5, 0, 0, 0], 3);
        assert_eq!(written_bytes(&c, &mem).as_deref(), Some(&b"wor"[..]));
        let failed = call(libc::SYS_write, [1, 0x1006, 5, 0, 0, 0], -9);
        assert_eq!(written_bytes(&failed, &mem), None);
        let unreadable = call(libc::SYS_write, [1, 0x9000, 5, 0, 0, 0], 5);
        assert_eq!(written_bytes(&unreadable, &mem), None);
    }

    #[test]
    fn writev_gathers_its_iovecs_up_to_the_result() {
        let mut iovs = Vec::new();
        for (base, len) in [(0x1000u64, 2u64), (0x1006, 5)] {
            iovs.extend(base.to_le_bytes());
            iovs.extend(len.to_le_bytes());
        }
        let mem = Mem(vec![(0x1000, b"hello world".to_vec()), (0x2000, iovs)]);
        let c = call(libc::SYS_writev, [1, 0x2000, 2, 0, 0, 0], 6);
        assert_eq!(written_bytes(&c, &mem).as_deref(), Some(&b"heworl"[..]));
        let short = call(libc::SYS_writev, [1, 0x2000, 1, 0, 0, 0], 6);
        assert_eq!(written_bytes(&short, &mem), None);
    }
}
