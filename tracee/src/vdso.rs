//! Making the vDSO's functions real syscalls, so the program keeps its vDSO (programs read its
//! ELF image through `AT_SYSINFO_EHDR`) while every clock and CPU query it makes is a syscall
//! the recorder sees and the replay answers.
//!
//! At an exec stop, each function symbol of the vDSO's `.dynsym` gets an 8-byte stub over its
//! first instructions: `mov eax, NR; syscall; ret` for the calls with a syscall of the same
//! arguments (`clock_gettime`, `gettimeofday`, `time`, `getcpu`, `clock_getres`), and
//! `mov rax, -ENOSYS; ret` for any other (e.g. `__vdso_sgx_enter_enclave`), padded with `int3`
//! to the function's size. The vDSO is mapped
//! `r-x` with `VM_MAYWRITE`, so writing through `/proc/PID/mem` makes the task a private copy
//! of the page, as a debugger's breakpoint does. The recording and the replay patch alike, so
//! the syscalls come from the same addresses in both.

use anyhow::{bail, Context, Result};

use crate::{maps, Tracee};

/// Length of every stub; a function shorter than this is not patched (the vDSO is hidden).
const STUB_LEN: usize = 8;
/// `STT_FUNC`.
const STT_FUNC: u8 = 2;

/// The syscall a vDSO function stands for (with or without its `__vdso_` prefix).
fn syscall_of(name: &str) -> Option<u32> {
    Some(match name.strip_prefix("__vdso_").unwrap_or(name) {
        "clock_gettime" => libc::SYS_clock_gettime as u32,
        "gettimeofday" => libc::SYS_gettimeofday as u32,
        "time" => libc::SYS_time as u32,
        "getcpu" => libc::SYS_getcpu as u32,
        "clock_getres" => libc::SYS_clock_getres as u32,
        _ => return None,
    })
}

/// The stub for the function `name`.
fn stub(name: &str) -> [u8; STUB_LEN] {
    match syscall_of(name) {
        Some(nr) => {
            let n = nr.to_le_bytes();
            [0xb8, n[0], n[1], n[2], n[3], 0x0f, 0x05, 0xc3]
        }
        // mov rax, -38 (ENOSYS, sign-extended imm32); ret
        None => [0x48, 0xc7, 0xc0, 0xda, 0xff, 0xff, 0xff, 0xc3],
    }
}

/// Offset of the `syscall` instruction in a syscall stub (after `mov eax, NR`).
pub const SYSCALL_OFFSET: u64 = 5;

/// The bytes deja writes over the vDSO function `name` of `size` bytes: its stub, then `int3`
/// up to `size`, so the function decodes whole (no tail of an original instruction after the
/// stub) and a syscall-site patch may cover `syscall; ret; int3; int3` ([`crate::patch`]).
pub fn patched_function(name: &str, size: usize) -> Vec<u8> {
    let mut code = stub(name).to_vec();
    code.resize(size.max(STUB_LEN), 0xcc);
    code
}

/// Little-endian field readers over an image.
fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// The function symbols of an ELF64 image: (name, offset, size).
fn functions(image: &[u8]) -> Option<Vec<(String, u64, u64)>> {
    if !image.starts_with(b"\x7fELF\x02") {
        return None;
    }
    let shoff = usize::try_from(u64_at(image, 0x28)?).ok()?;
    let shentsize = usize::from(u16_at(image, 0x3a)?);
    let shnum = usize::from(u16_at(image, 0x3c)?);
    let section = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    // SHT_DYNSYM (11); its sh_link is the string table.
    let dynsym = (0..shnum).find_map(|i| {
        let s = section(i)?;
        (u32_at(image, s + 4)? == 11).then_some(s)
    })?;
    let (symoff, symsize) = (u64_at(image, dynsym + 0x18)?, u64_at(image, dynsym + 0x20)?);
    let entsize = u64_at(image, dynsym + 0x38)?.max(24);
    let strtab = section(usize::try_from(u32_at(image, dynsym + 0x28)?).ok()?)?;
    let stroff = usize::try_from(u64_at(image, strtab + 0x18)?).ok()?;
    let mut out = Vec::new();
    for k in 0..symsize / entsize {
        let s = usize::try_from(symoff + k * entsize).ok()?;
        let (name_off, info) = (u32_at(image, s)?, *image.get(s + 4)?);
        let (value, size) = (u64_at(image, s + 8)?, u64_at(image, s + 16)?);
        if info & 0xf != STT_FUNC || value == 0 {
            continue;
        }
        let start = stroff.checked_add(usize::try_from(name_off).ok()?)?;
        let rest = image.get(start..)?;
        let name = &rest[..rest.iter().position(|&c| c == 0)?];
        out.push((String::from_utf8_lossy(name).into_owned(), value, size));
    }
    Some(out)
}

/// Patches the vDSO of `tracee` (stopped at its exec stop). Returns `Ok(false)` when the task
/// has no vDSO; an error when its image cannot be read or a function is too short for a stub
/// (the caller then hides the vDSO instead).
pub fn patch(tracee: &Tracee) -> Result<bool> {
    patch_in(tracee, &maps::read(tracee.pid())?)
}

/// [`patch`], with the task's memory map (`entries`) read already.
pub fn patch_in(tracee: &Tracee, entries: &[maps::MapEntry]) -> Result<bool> {
    let Some(vdso) = entries.iter().find(|e| e.name == "[vdso]") else {
        return Ok(false);
    };
    let len = usize::try_from(vdso.end - vdso.start).context("the vDSO's size")?;
    let mut image = tracee.read_vec(vdso.start, len)?;
    let funcs = functions(&image).context("the vDSO has no readable .dynsym")?;
    for (name, value, size) in &funcs {
        if *size < STUB_LEN as u64 || value + STUB_LEN as u64 > len as u64 {
            bail!("the vDSO function {name} is too short for a syscall stub");
        }
    }
    for (name, value, size) in &funcs {
        // Padded to the function's size, within the image.
        let size = (*size).min(len as u64 - value) as usize;
        let at = *value as usize;
        image[at..at + size].copy_from_slice(&patched_function(name, size));
    }
    // One write of the whole image, its functions patched.
    tracee
        .write_mem(vdso.start, &image)
        .context("patching the vDSO")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's own vDSO image, found in its memory map.
    fn own_vdso() -> Option<&'static [u8]> {
        let me = nix::unistd::Pid::this();
        let entries = maps::read(me).ok()?;
        let v = entries.iter().find(|e| e.name == "[vdso]")?;
        // SAFETY: the kernel maps the vDSO image readable at this range for the whole life of
        // the process, and nothing writes to it.
        Some(unsafe {
            std::slice::from_raw_parts(v.start as *const u8, (v.end - v.start) as usize)
        })
    }

    #[test]
    fn finds_the_clock_functions_of_the_running_kernels_vdso() {
        let Some(image) = own_vdso() else {
            return;
        };
        let funcs = functions(image).expect("the vDSO's symbols");
        let names: Vec<&str> = funcs.iter().map(|(n, _, _)| n.as_str()).collect();
        assert!(
            names.iter().any(|n| n.ends_with("clock_gettime")),
            "{names:?}"
        );
        assert!(
            funcs
                .iter()
                .all(|(_, v, s)| *v > 0 && *s >= STUB_LEN as u64),
            "{funcs:?}"
        );
    }

    /// The unwind tables' extent of each vDSO function (what the site patcher uses) is its
    /// symbol's, which the stubs are padded to: the patched function decodes whole and a site
    /// patch in it is accepted.
    #[test]
    fn patched_vdso_functions_are_patchable_sites() {
        use crate::functions::tests::{own_maps, read_self};
        let Some(image) = own_vdso() else {
            return;
        };
        let maps = own_maps();
        let start = image.as_ptr() as u64;
        let funcs = functions(image).expect("the vDSO's symbols");
        let stub_page = crate::patch::stub_page_near(&maps, start).expect("a stub page");
        for (name, value, size) in &funcs {
            let Some(nr) = syscall_of(name) else {
                continue;
            };
            let addr = start + value;
            let bounds = crate::functions::function_bounds(None, &read_self, &maps, addr);
            assert_eq!(bounds, Some((addr, addr + size)), "{name}");
            let code = patched_function(name, *size as usize);
            let p = crate::patch::plan(
                addr,
                &code,
                addr + SYSCALL_OFFSET,
                u64::from(nr),
                stub_page,
                stub_page + 0xff8,
            );
            assert!(p.is_ok(), "{name}: {p:?}");
        }
    }

    #[test]
    fn stubs_make_the_syscall_of_the_function_or_fail_with_enosys() {
        assert_eq!(stub("__vdso_time"), [0xb8, 201, 0, 0, 0, 0x0f, 0x05, 0xc3]);
        assert_eq!(stub("gettimeofday")[1], 96);
        assert_eq!(stub("__vdso_sgx_enter_enclave")[..3], [0x48, 0xc7, 0xc0]);
        let f = patched_function("__vdso_time", 12);
        assert_eq!(f[..8], stub("__vdso_time"));
        assert_eq!(f[8..], [0xcc; 4]);
        assert_eq!(f[SYSCALL_OFFSET as usize..][..2], [0x0f, 0x05]);
    }
}
