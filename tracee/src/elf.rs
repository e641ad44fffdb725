//! Checking that a file is a program deja can run, before starting it.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What kind of executable a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecKind {
    /// A 64-bit x86 ELF file.
    Elf64,
    /// A `#!` script (its interpreter is checked by the kernel at exec).
    Script,
}

/// Checks that `path` exists, is executable, and is a 64-bit x86-64 ELF file or a script.
pub fn check_executable(path: &Path) -> Result<ExecKind> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("{shown}: No such file or directory"),
        _ => anyhow::Error::new(e).context(format!("{shown}: cannot be read")),
    })?;
    if meta.is_dir() {
        bail!("{shown}: is a directory");
    }
    // SAFETY: access only reads the NUL-terminated path we pass.
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("path contains a NUL byte")?;
    if unsafe { libc::access(cpath.as_ptr(), libc::X_OK) } != 0 {
        bail!("{shown}: Permission denied (not executable)");
    }
    let mut head = [0u8; 20];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("{shown}: cannot be read"))?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        return Ok(ExecKind::Script);
    }
    if !head.starts_with(b"\x7fELF") {
        bail!("{shown}: not an ELF executable or a #! script");
    }
    match head.get(4) {
        Some(2) => {}
        Some(1) => bail!("{shown}: 32-bit programs are not supported (deja records x86-64 only)"),
        _ => bail!("{shown}: malformed ELF header"),
    }
    // e_machine at offset 18, little-endian.
    let machine = head.get(18..20).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if machine != Some(62) {
        bail!("{shown}: not an x86-64 program (ELF machine {machine:?})");
    }
    Ok(ExecKind::Elf64)
}

/// Finds `name` the way a shell does: as a path if it contains `/`, else along `PATH`.
pub fn resolve_program(name: &str) -> Result<std::path::PathBuf> {
    if name.contains('/') {
        return Ok(std::path::PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{name}: command not found (No such file in PATH)")
}

/// The ELF interpreter (`PT_INTERP`) an executable asks for, if any.
pub fn interpreter(path: &Path) -> Result<Option<String>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{}: truncated ELF header", path.display());
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        let p_type = data
            .get(ph..ph + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if p_type != Some(3) {
            continue;
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            bail!("{}: truncated program header", path.display());
        };
        let bytes = data
            .get(off as usize..(off + size) as usize)
            .with_context(|| format!("{}: PT_INTERP out of the file", path.display()))?;
        let s = bytes.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(s).into_owned()));
    }
    Ok(None)
}
