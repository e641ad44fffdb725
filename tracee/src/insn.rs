//! Decoding the instruction a tracee faulted on, to emulate the few that deja traps.

use iced_x86::{Code, Decoder, DecoderOptions};

/// An instruction deja traps and emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trapped {
    /// `rdtsc`.
    Rdtsc,
    /// `rdtscp`.
    Rdtscp,
    /// `cpuid`.
    Cpuid,
}

/// Decodes the instruction in `bytes` (read at `rip`); returns it if it is one deja traps, with
/// its length.
pub fn decode_trapped(bytes: &[u8], rip: u64) -> Option<(Trapped, usize)> {
    let mut d = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    let insn = d.decode();
    let kind = match insn.code() {
        Code::Rdtsc => Trapped::Rdtsc,
        Code::Rdtscp => Trapped::Rdtscp,
        Code::Cpuid => Trapped::Cpuid,
        _ => return None,
    };
    Some((kind, insn.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rdtsc_family() {
        assert_eq!(
            decode_trapped(&[0x0f, 0x31, 0x90], 0),
            Some((Trapped::Rdtsc, 2))
        );
        assert_eq!(
            decode_trapped(&[0x0f, 0x01, 0xf9], 0),
            Some((Trapped::Rdtscp, 3))
        );
        assert_eq!(decode_trapped(&[0x0f, 0xa2], 0), Some((Trapped::Cpuid, 2)));
        assert_eq!(decode_trapped(&[0x90, 0x0f, 0x31], 0), None);
        assert_eq!(decode_trapped(&[], 0), None);
    }
}
