//! Signal state the kernel changes behind the program's back because of deja's own traps.

mod common;

use common::*;

/// deja's `rdtsc` trap raises `SIGSEGV`, and the kernel resets a blocked `SIGSEGV`'s handler
/// when it does: the handler and the mask must be as the program left them, in the recording
/// (as natively) and in the replay.
#[test]
fn rdtsc_with_sigsegv_blocked_keeps_the_handler() {
    let prog = program("rdtsc_segv_blocked");
    let native = native_expect(&prog, &[], 0);
    let expected = "SIGSEGV still blocked after rdtsc: 1\nhandler kept: 1\n\
                    recovered from the fault in the handler\n";
    assert_eq!(stdout_str(&native), expected);
    let r = assert_replays_exactly(&prog, &[]);
    assert_eq!(stdout_str(&r.rec), expected, "{}", describe("rec", &r.rec));
}
