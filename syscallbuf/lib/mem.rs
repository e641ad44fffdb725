//! Memory copying without libc: `rep movsb` / `rep stosb`, and the `mem*` symbols the compiler
//! may call, defined here so that the shared object imports nothing.

use core::arch::asm;

/// Copies `n` bytes from `src` to `dst` (forwards).
///
/// # Safety
/// Both ranges valid; `dst` not overlapping `src` after it.
#[inline(always)]
pub unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract; DF is clear (the hook runs `cld`, SysV guarantees it).
    asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
         options(nostack, preserves_flags));
}

/// Sets `n` bytes at `dst` to `byte`.
///
/// # Safety
/// The range is valid for writes.
#[inline(always)]
pub unsafe fn fill(dst: *mut u8, byte: u8, n: usize) {
    // SAFETY: the caller's contract; DF is clear.
    asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") byte,
         options(nostack, preserves_flags));
}

/// `memcpy`.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    copy(dst, src, n);
    dst
}

/// `memmove`.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        copy(dst, src, n);
    } else if n > 0 {
        // Overlapping with dst after src: copy backwards.
        // SAFETY: the caller's contract; DF is set only for this instruction.
        asm!("std", "rep movsb", "cld", inout("rcx") n => _,
             inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dst
}

/// `memset`.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    fill(dst, c as u8, n);
    dst
}

/// `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller's contract.
        let (x, y) = (
            core::ptr::read_volatile(a.add(i)),
            core::ptr::read_volatile(b.add(i)),
        );
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// `bcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    memcmp(a, b, n)
}
