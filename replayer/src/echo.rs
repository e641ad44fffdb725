//! Echoing what the program wrote to stdout and stderr, after checking that the replayed
//! program writes exactly the bytes the recording saw.

use std::io::Write;

use anyhow::{Context, Result};
use syscalls::{Call, Memory};
use trace_format::{Echoed, SyscallEvent};
use tracee::Tracee;

/// Most bytes of each side a mismatch report quotes.
const QUOTE_MAX: usize = 80;

/// A [`syscalls::Memory`] view of a stopped tracee.
struct TraceeMemory<'a>(&'a Tracee);

impl Memory for TraceeMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.0.read_mem_partial(addr, buf) == buf.len()
    }
}

/// How the replayed program's write differs from the recorded one.
pub struct Mismatch {
    /// What the recording wrote, quoted.
    pub expected: String,
    /// What the replayed program passes to its write, quoted.
    pub found: String,
}

/// Checks the write `ev` (recorded as going to stdout or stderr) against what the replayed
/// program at `tracee` passes to it now. `Some(_)` is a divergence.
pub fn check(tracee: &Tracee, ev: &SyscallEvent) -> Option<Mismatch> {
    let Echoed { stream, bytes } = ev.echo.as_ref()?;
    let call = Call {
        nr: ev.nr,
        args: ev.args,
        result: ev.result,
    };
    let replayed = syscalls::written_bytes(&call, &TraceeMemory(tracee));
    if replayed.as_deref() == Some(bytes.as_slice()) {
        return None;
    }
    Some(Mismatch {
        expected: format!("{} to write {}", stream_name(*stream), quote(bytes)),
        found: match replayed {
            Some(r) => quote(&r),
            None => "a buffer that cannot be read".into(),
        },
    })
}

/// Echoes `bytes`, which the program wrote to `stream` (1 or 2), to the replayer's own stream
/// of that number, out of `progress`'s way.
pub fn write_out(stream: u8, bytes: &[u8], progress: Option<&dyn crate::Progress>) -> Result<()> {
    let what = stream_name(stream);
    let write = || {
        if stream == 2 {
            let mut e = std::io::stderr().lock();
            e.write_all(bytes).and_then(|()| e.flush())
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(bytes).and_then(|()| o.flush())
        }
    };
    let written = match progress {
        Some(p) => {
            let mut written = Ok(());
            p.around_output(&mut || written = write());
            written
        }
        None => write(),
    };
    written.with_context(|| format!("echoing the program's {what}"))
}

fn stream_name(stream: u8) -> &'static str {
    if stream == 2 {
        "stderr"
    } else {
        "stdout"
    }
}

/// `bytes` as a quoted, escaped string of at most [`QUOTE_MAX`] bytes, with its length.
fn quote(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(QUOTE_MAX)];
    let more = if shown.len() < bytes.len() { "..." } else { "" };
    format!("{} bytes \"{}\"{more}", bytes.len(), shown.escape_ascii())
}
