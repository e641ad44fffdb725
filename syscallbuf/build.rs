//! Builds the in-process library (`lib/lib.rs`, `no_std`) into `$OUT_DIR/libdeja_syscallbuf.so`
//! with `$RUSTC` directly (it is not a cargo target: it must import nothing and be loadable at a
//! fixed address without a dynamic linker), then checks the result.

use std::path::PathBuf;
use std::process::Command;

#[path = "src/elf.rs"]
#[allow(dead_code)]
mod elf;

/// The labels of the hook's assembly kept alive through `--gc-sections`.
const ROOTS: &[&str] = &["deja_syscall_hook"];

fn main() {
    for f in [
        "lib/lib.rs",
        "lib/mem.rs",
        "lib/files.rs",
        "abi.rs",
        "src/elf.rs",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("libdeja_syscallbuf.so");
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "--edition",
        "2021",
        "--crate-type",
        "cdylib",
        "--crate-name",
        "deja_syscallbuf",
        "--target",
        "x86_64-unknown-linux-gnu",
        "-C",
        "panic=abort",
        "-C",
        "opt-level=2",
        "-C",
        "codegen-units=1",
        "-C",
        "debuginfo=0",
        "-C",
        "strip=none",
        "-C",
        "relocation-model=pic",
        "-C",
        "link-arg=-nostdlib",
        "-C",
        "link-arg=-Wl,-Bsymbolic",
        "-C",
        "link-arg=-Wl,--no-undefined",
        "-C",
        "link-arg=-Wl,-z,max-page-size=4096",
    ]);
    for root in ROOTS {
        cmd.arg("-C").arg(format!("link-arg=-Wl,-u,{root}"));
    }
    cmd.arg("-o").arg(&out).arg("lib/lib.rs");
    // Flags meant for the host crates (coverage, sanitizers, ...) must not reach the library.
    cmd.env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc} to build the syscallbuf library: {e}"));
    assert!(
        status.success(),
        "building the syscallbuf library failed: {cmd:?}"
    );

    let image = std::fs::read(&out).unwrap_or_else(|e| panic!("cannot read {out:?}: {e}"));
    let elf = elf::Elf::parse(&image).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    if let Err(e) = elf.check_standalone() {
        panic!("{out:?} is not loadable without a dynamic linker: {e}");
    }
    for sym in [
        "deja_config",
        "deja_files",
        "deja_replay_files",
        "deja_syscall_hook",
        "deja_traced_syscall",
        "deja_traced_syscall_end",
        "deja_untraced_syscall_end",
    ] {
        assert!(
            elf.symbols.contains_key(sym),
            "{out:?} lacks the symbol {sym}"
        );
    }
}
