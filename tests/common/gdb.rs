//! Scripting the real gdb on a replay, in batch mode.

use std::path::Path;
use std::process::Output;

use super::*;

/// Runs gdb in batch mode on the replay of `trace` with `commands`; returns its output (gdb's
/// and the replayed program's, which deja echoes).
pub fn gdb_batch(ctx: &Ctx, trace: &Path, deja_args: &[&str], commands: &[&str]) -> Output {
    let mut cmd = ctx.deja();
    cmd.arg("replay").arg(trace).args(deja_args);
    cmd.args(["--", "-batch", "-nx"]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let out = run_with_timeout(&mut cmd, TIMEOUT);
    assert_no_panic("deja replay with gdb", &out);
    out
}

/// All a run printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!("{}{}", stdout_str(out), stderr_str(out))
}

/// Asserts that gdb's session `all` shows `needle`.
pub fn assert_has(all: &str, needle: &str) {
    assert!(
        all.contains(needle),
        "expected {needle:?} in gdb's session:\n{all}"
    );
}

/// The values gdb printed (`$N = VALUE`), in order.
pub fn printed(all: &str) -> Vec<String> {
    all.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('$')?;
            let (n, value) = rest.split_once(" = ")?;
            n.parse::<u32>().ok()?;
            Some(value.trim().to_string())
        })
        .collect()
}

/// The line (from 1) of test program `tests/programs/<program>` that holds `code`.
pub fn line_of(program: &str, code: &str) -> usize {
    let src = programs_src_dir().join(program);
    let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("reading {program}: {e}"));
    text.lines()
        .position(|l| l.contains(code))
        .unwrap_or_else(|| panic!("no {code:?} in {program}"))
        + 1
}
