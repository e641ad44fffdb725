//! gdb's `qXfer:siginfo:read`, which gdbstub does not know: recognising the request, the
//! thread gdb means (its last `Hg`), the `qSupported` feature that makes gdb ask, and the
//! binary reply.

use anyhow::{bail, Context};

/// The packet gdb sends to read a thread's `siginfo_t` (`$_siginfo`).
const SIGINFO_PACKET: &[u8] = b"qXfer:siginfo:read::";

/// What deja adds to gdbstub's `qSupported` reply: without it gdb never asks for siginfo.
const SIGINFO_FEATURE: &[u8] = b";qXfer:siginfo:read+";

/// What `qXfer:siginfo:read::OFFSET,LENGTH` asks: `None` if `body` is another packet, an
/// error if its arguments make no sense.
pub fn siginfo_request(body: &[u8]) -> Option<anyhow::Result<(u64, usize)>> {
    let args = body.strip_prefix(SIGINFO_PACKET)?;
    Some(parse_range(args))
}

fn parse_range(args: &[u8]) -> anyhow::Result<(u64, usize)> {
    let args = std::str::from_utf8(args).context("qXfer arguments are not text")?;
    let Some((offset, length)) = args.split_once(',') else {
        bail!("qXfer takes OFFSET,LENGTH, not `{args}`");
    };
    let offset = u64::from_str_radix(offset, 16).context("a qXfer offset is not hex")?;
    let length = usize::from_str_radix(length, 16).context("a qXfer length is not hex")?;
    Ok((offset, length))
}

/// The thread an `Hg` packet selects for what follows: `Some(None)` for "any thread"
/// (`0`, `-1`), `None` if `body` is another packet.
pub fn general_thread(body: &[u8]) -> Option<Option<u64>> {
    let id = std::str::from_utf8(body.strip_prefix(b"Hg")?).ok()?;
    let tid = match id.strip_prefix('p') {
        Some(ptid) => ptid.split_once('.').map_or("-1", |(_, tid)| tid),
        None => id,
    };
    Some(match tid {
        "-1" | "0" => None,
        tid => u64::from_str_radix(tid, 16).ok(),
    })
}

/// The reply to a `qXfer` read of `length` bytes at `offset` of `whole`: `m` and the bytes
/// if more follow, `l` and the bytes if they are the last, binary data escaped as the
/// protocol wants (`#`, `$`, `}` and `*` as `}` and the byte xor 0x20).
pub fn xfer_reply(whole: &[u8], offset: u64, length: usize) -> Vec<u8> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(whole.len());
    let end = start.saturating_add(length).min(whole.len());
    let mut body = vec![if end < whole.len() { b'm' } else { b'l' }];
    for &b in &whole[start..end] {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            body.push(b'}');
            body.push(b ^ 0x20);
        } else {
            body.push(b);
        }
    }
    body
}

/// `packet` (`$body#cs`, as gdbstub wrote it) with the siginfo feature added if it is the
/// reply to `qSupported` (the only reply that starts with `PacketSize=`); `None` otherwise.
pub fn with_siginfo_feature(packet: &[u8]) -> Option<Vec<u8>> {
    let inner = packet.strip_prefix(b"$")?;
    if !inner.starts_with(b"PacketSize=") {
        return None;
    }
    let hash = inner.iter().rposition(|&b| b == b'#')?;
    let mut body = inner[..hash].to_vec();
    body.extend_from_slice(SIGINFO_FEATURE);
    Some(crate::tls_packet::frame(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_siginfo_requests() {
        let (offset, length) = siginfo_request(b"qXfer:siginfo:read::0,ffb")
            .expect("a siginfo request")
            .expect("valid");
        assert_eq!((offset, length), (0, 0xffb));
        assert!(siginfo_request(b"qXfer:auxv:read::0,ffb").is_none());
        assert!(siginfo_request(b"qXfer:siginfo:read::zz,1")
            .expect("a siginfo request")
            .is_err());
    }

    #[test]
    fn reads_hg_threads() {
        assert_eq!(general_thread(b"Hgp1a.1b"), Some(Some(0x1b)));
        assert_eq!(general_thread(b"Hg2a"), Some(Some(0x2a)));
        assert_eq!(general_thread(b"Hg0"), Some(None));
        assert_eq!(general_thread(b"Hgp1a.-1"), Some(None));
        assert_eq!(general_thread(b"Hc2a"), None);
    }

    #[test]
    fn replies_escape_and_mark_the_end() {
        assert_eq!(xfer_reply(b"ab#c", 0, 2), b"mab");
        assert_eq!(xfer_reply(b"ab#c", 1, 100), b"lb}\x03c");
        assert_eq!(xfer_reply(b"ab", 5, 1), b"l");
    }

    #[test]
    fn adds_the_feature_to_qsupported_only() {
        let reply = crate::tls_packet::frame(b"PacketSize=186a0;vContSupported+");
        let want =
            crate::tls_packet::frame(b"PacketSize=186a0;vContSupported+;qXfer:siginfo:read+");
        assert_eq!(with_siginfo_feature(&reply), Some(want));
        assert_eq!(with_siginfo_feature(&crate::tls_packet::frame(b"OK")), None);
    }
}
