//! The library's hook saves only xmm0-xmm15 of the program's extended state (see README.md,
//! "The hook's contract"): that is enough only while the library's code touches nothing else.
//! This decodes every instruction of its image and checks it.

use iced_x86::{Decoder, DecoderOptions, InstructionInfoFactory, Mnemonic, Register};

#[test]
fn the_library_touches_no_extended_state_but_xmm_registers() {
    let lib = syscallbuf::loaded().expect("the library loads");
    let mut factory = InstructionInfoFactory::new();
    let mut decoded = 0;
    for seg in lib
        .segments
        .iter()
        .filter(|s| s.prot & syscallbuf::PROT_EXEC != 0)
    {
        let mut decoder = Decoder::with_ip(64, &seg.bytes, seg.addr, DecoderOptions::NONE);
        while decoder.can_decode() {
            let insn = decoder.decode();
            if insn.is_invalid() {
                continue; // padding between functions
            }
            decoded += 1;
            assert!(
                !matches!(
                    insn.mnemonic(),
                    Mnemonic::Ldmxcsr
                        | Mnemonic::Vldmxcsr
                        | Mnemonic::Fxrstor
                        | Mnemonic::Fxrstor64
                        | Mnemonic::Xrstor
                        | Mnemonic::Xrstor64
                        | Mnemonic::Vzeroupper
                        | Mnemonic::Vzeroall
                        | Mnemonic::Emms
                ),
                "{:#x}: {:?} changes extended state",
                insn.ip(),
                insn.mnemonic()
            );
            for used in factory.info(&insn).used_registers() {
                let r = used.register();
                let ok = r.is_gpr()
                    || r.is_xmm()
                    || r.is_segment_register()
                    || r == Register::RIP
                    || r == Register::None;
                assert!(ok, "{:#x}: {:?} uses {r:?}", insn.ip(), insn.mnemonic());
            }
        }
    }
    assert!(decoded > 100, "only {decoded} instructions decoded");
}
