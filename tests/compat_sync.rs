//! Synchronisation between threads whose effects the recorder must order exactly: memory a
//! syscall writes that another thread reads as soon as it is woken.

mod common;

use common::*;

/// `FUTEX_WAKE_OP` sets a flag as it wakes the waiting main thread, which reads the flag at
/// once: in the recording it is always 1, and the replay must see the same.
#[test]
fn futex_wake_op_flag_is_seen_by_the_woken_thread() {
    let prog = threaded("futex_wake_op");
    let r = assert_replays_exactly(&prog, &[]);
    let out = stdout_str(&r.rec);
    assert_eq!(
        out.matches("flag=1").count(),
        5,
        "{}",
        describe("rec", &r.rec)
    );
}

/// `semctl(GETALL)` writes as many values as the set has semaphores: all of them replayed.
#[test]
fn semctl_getall_values_replay() {
    let r = assert_replays_exactly(program("sem_getall"), &[]);
    assert!(
        stdout_str(&r.rec).starts_with("getall=0 values=1 2 "),
        "{}",
        describe("rec", &r.rec)
    );
}
