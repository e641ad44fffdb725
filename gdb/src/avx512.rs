//! Whether gdb is shown the AVX-512 registers: where both the recording CPU and this one have
//! them (a program recorded without them never used them; a replay here cannot show what
//! this CPU lacks).

use std::path::Path;

use anyhow::Result;
use trace_format::TraceReader;

/// CPUID leaf 7 subleaf 0, EBX bit 16: AVX512F.
const AVX512F: u32 = 1 << 16;

/// Whether the recording in `dir` ran on a CPU with AVX-512 (assumed when the trace does not
/// say) and this machine's tasks have the registers.
pub fn shown(dir: &Path) -> Result<bool> {
    if !tracee::xregs512::available() {
        return Ok(false);
    }
    let reader = TraceReader::open(dir)?;
    let cpuid = &reader.meta().cpuid;
    if cpuid.is_empty() {
        return Ok(true);
    }
    Ok(cpuid
        .iter()
        .any(|r| r.leaf == 7 && r.subleaf == 0 && r.regs[1] & AVX512F != 0))
}
