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

/// Builds the instruction decoder's and encoder's tables (iced-x86 builds them at their first
/// use, about 0.2 ms), by decoding an instruction and planning a patch of a small function,
/// results unused. Called on another thread at the start of a recording, so that the tracer's
/// first trapped instruction or patch does not wait for it.
pub fn warm_up() {
    let _ = decode_trapped(&[0x0f, 0x31], 0);
    // The encoder's table (the stubs' `jmp`s and relocated instructions).
    if let Ok(jmp) = iced_x86::Instruction::with_branch(Code::Jmp_rel32_64, 0x10_0000) {
        let _ = iced_x86::Encoder::new(64).encode(&jmp, 0x20_0000);
    }
    // `mov eax, 39; syscall; ret`, as glibc's getpid.
    let code = [0xb8, 0x27, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xc3];
    let _ = crate::patch::plan(0x10_0000, &code, 0x10_0005, 39, 0x20_0000, 0x20_0ff8);
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
