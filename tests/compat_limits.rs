//! Resource limits: a limit the program sets on itself changes where it faults, so the replay
//! applies it for real, while what the program reads back stays the recorded value.

mod common;

use common::*;

/// A child lowers its stack limit and overflows its stack: the replay must fault at the same
/// depth (it would go much deeper under the replaying shell's default limit).
#[test]
fn stack_limit_set_by_the_program_holds_in_replay() {
    let r = assert_replays_exactly(program("stack_limit"), &[]);
    let out = stdout_str(&r.rec);
    assert!(
        out.contains("child killed by signal 11; depth above 1000"),
        "{}",
        describe("rec", &r.rec)
    );
}
