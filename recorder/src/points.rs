//! What a point leaves out of its memory digest: the memory the kernel may write for other
//! tasks' syscalls whose events come later in the trace (see the crate README).

use syscalls::{Call, Memory, Region, MAX_REGION_LEN};

/// Size of a `struct mmsghdr` (a `struct msghdr` and the received length).
const MMSGHDR: u64 = 64;
/// Size of a `struct iovec`.
const IOVEC: u64 = 16;
/// Most iovecs or messages the kernel takes in one call (`UIO_MAXIOV`).
const MAX_VEC: u64 = 1024;
/// Size of a `struct sockaddr_storage`, the most a received address takes.
const SOCKADDR_STORAGE: u64 = 128;
/// Syscall numbers the `libc` crate does not name on x86-64.
const SYS_LISTMOUNT: i64 = 458;
const SYS_LSM_LIST_MODULES: i64 = 461;

/// The memory a syscall still in progress may write before it returns: its out-regions with
/// the largest result it can return (a pending `read` may fill its whole buffer).
pub fn pending_regions(nr: u64, args: [u64; 6], mem: &dyn Memory) -> Vec<Region> {
    if nr == libc::SYS_recvmmsg as u64 {
        return recvmmsg_bound(args, mem);
    }
    let call = Call {
        nr,
        args,
        result: result_bound(nr, &args, mem),
    };
    syscalls::out_regions(&call, mem)
}

/// The largest result syscall `nr` can return, for the calls whose written length grows with
/// it: the buffer size (or record count) it was given. Any other call gets a large result,
/// which the table bounds itself (iovec lengths, `min(size, result)`) or does not use.
fn result_bound(nr: u64, args: &[u64; 6], mem: &dyn Memory) -> i64 {
    let arg = |i: usize| args[i].min(MAX_REGION_LEN) as i64;
    match nr as i64 {
        // (fd, buf, count) and the like: at most `count` bytes or records.
        libc::SYS_read
        | libc::SYS_pread64
        | libc::SYS_recvfrom
        | libc::SYS_msgrcv
        | libc::SYS_getdents
        | libc::SYS_readlink
        | libc::SYS_getdents64
        | libc::SYS_mq_timedreceive
        | libc::SYS_epoll_wait
        | libc::SYS_epoll_pwait
        | libc::SYS_epoll_pwait2
        | libc::SYS_sendmmsg
        | SYS_LISTMOUNT => arg(2),
        // (buf, size) and sched_getaffinity(pid, size, mask).
        libc::SYS_getcwd | libc::SYS_getrandom | libc::SYS_sched_getaffinity => arg(1),
        libc::SYS_readlinkat => arg(3),
        // lsm_list_modules(ids, size*, flags): at most `*size / 8` ids.
        SYS_LSM_LIST_MODULES => mem.read_u32(args[1]).map_or(0, |size| i64::from(size / 8)),
        _ => MAX_REGION_LEN as i64,
    }
}

/// A pending `recvmmsg(fd, vec, vlen, ..)`: every one of the `vlen` messages may be filled
/// (header, address, every iovec, control data), and the timeout is written back.
fn recvmmsg_bound(args: [u64; 6], mem: &dyn Memory) -> Vec<Region> {
    let mut out = Vec::new();
    let mut push = |addr: u64, len: u64| {
        if addr != 0 && len != 0 {
            out.push(Region {
                addr,
                len: len.min(MAX_REGION_LEN),
            });
        }
    };
    let (vec, vlen) = (args[1], args[2].min(MAX_VEC));
    for i in 0..vlen {
        let m = vec.wrapping_add(i * MMSGHDR);
        push(m, MMSGHDR);
        let rd = |off: u64| mem.read_u64(m.wrapping_add(off));
        if let (Some(name), Some(namelen)) = (rd(0), mem.read_u32(m.wrapping_add(8))) {
            push(name, u64::from(namelen).min(SOCKADDR_STORAGE));
        }
        if let (Some(iov), Some(iovlen)) = (rd(16), rd(24)) {
            for j in 0..iovlen.min(MAX_VEC) {
                let e = iov.wrapping_add(j * IOVEC);
                if let (Some(base), Some(len)) = (mem.read_u64(e), mem.read_u64(e + 8)) {
                    push(base, len);
                }
            }
        }
        if let (Some(control), Some(controllen)) = (rd(32), rd(40)) {
            push(control, controllen);
        }
    }
    push(args[4], 16); // struct timespec *timeout
    out
}

/// `[start, end)` of a region (clipped at the top of the address space).
pub fn range(r: &Region) -> (u64, u64) {
    (r.addr, r.addr.saturating_add(r.len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory in which every u64 and u32 reads as 64: pointers to 64, lengths of 64.
    struct Sixty;

    impl Memory for Sixty {
        fn read(&self, _addr: u64, buf: &mut [u8]) -> bool {
            buf.fill(0);
            buf[0] = 64;
            true
        }
    }

    fn covered(inner: &[Region], outer: &[(u64, u64)]) -> bool {
        inner.iter().all(|r| {
            let (s, e) = range(r);
            outer.iter().any(|&(os, oe)| os <= s && e <= oe)
        })
    }

    #[test]
    fn a_pending_read_may_fill_its_whole_buffer_and_no_more() {
        let args = [3, 0x1000, 100, 0, 0, 0];
        let regions = pending_regions(libc::SYS_read as u64, args, &Sixty);
        assert_eq!(
            regions,
            vec![Region {
                addr: 0x1000,
                len: 100
            }]
        );
        let at = [0x2000, 50, 0, 0, 0, 0];
        let regions = pending_regions(libc::SYS_getcwd as u64, at, &Sixty);
        assert_eq!(
            regions,
            vec![Region {
                addr: 0x2000,
                len: 50
            }]
        );
    }

    /// For every syscall of the table, with arguments of 64 (as addresses and as sizes): the
    /// bound covers what the call writes with any result it can return for such arguments, and
    /// stays of the order of the arguments (a missing bound would exclude a gigabyte).
    #[test]
    fn bounds_cover_every_result_and_stay_small() {
        let args = [64; 6];
        for sys in syscalls::TABLE {
            let ranges: Vec<_> = pending_regions(sys.nr, args, &Sixty)
                .iter()
                .map(range)
                .collect();
            let bound = tracee::state::merge_ranges(&ranges);
            for &(s, e) in &bound {
                assert!(
                    e - s <= 64 * 1024,
                    "{}: pending bound {:#x}..{:#x} is too large",
                    sys.name,
                    s,
                    e
                );
            }
            // lsm_list_modules returns at most *size / 8 = 8 ids here.
            for result in [0, 1, 8] {
                let call = Call {
                    nr: sys.nr,
                    args,
                    result,
                };
                let exact = syscalls::out_regions(&call, &Sixty);
                assert!(
                    covered(&exact, &bound),
                    "{} with result {result}: {exact:?} is not within {bound:?}",
                    sys.name
                );
            }
        }
    }
}
