//! Echoing what the program wrote to stdout and stderr, as the recording saw it.

use std::io::Write;

use anyhow::Result;
use trace_format::SyscallEvent;
use tracee::Tracee;

/// Writes to the replayer's stdout/stderr the bytes the replayed program is writing in `ev`
/// (a `write`, `pwrite64`, `writev` or `pwritev` to an echoed stream), read from its memory.
pub fn echo(tracee: &Tracee, ev: &SyscallEvent) -> Result<()> {
    let Some(stream) = ev.echo else {
        return Ok(());
    };
    let total = usize::try_from(ev.result.max(0)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(total);
    match ev.nr as i64 {
        libc::SYS_write | libc::SYS_pwrite64 => {
            bytes = tracee.read_vec(ev.args[1], total)?;
        }
        libc::SYS_writev | libc::SYS_pwritev => {
            let (iov, cnt) = (ev.args[1], ev.args[2].min(1024));
            for i in 0..cnt {
                if bytes.len() >= total {
                    break;
                }
                let base = tracee.read_u64(iov + i * 16)?;
                let len = tracee.read_u64(iov + i * 16 + 8)? as usize;
                let take = len.min(total - bytes.len());
                bytes.extend(tracee.read_vec(base, take)?);
            }
        }
        _ => return Ok(()),
    }
    if stream == 2 {
        let mut e = std::io::stderr().lock();
        e.write_all(&bytes)?;
        e.flush()?;
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&bytes)?;
        o.flush()?;
    }
    Ok(())
}
