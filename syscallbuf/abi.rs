//! The binary interface between deja (recorder and replayer) and the in-process library: fixed
//! addresses, the layout of the library's configuration, of each thread's slot and of the
//! records in a slot's buffer. This one file is compiled into both sides (the host crate with
//! `#[path]`, the `no_std` library likewise), so they cannot disagree.
//!
//! All structures are `#[repr(C)]` and hold only integers: both sides read and write them as
//! plain little-endian words.

/// Where the library's image is loaded in every recorded (and replayed) process. Fixed, so
/// that the seccomp filter, installed before the program's first `execve`, can allow the
/// library's own `syscall` instruction by its address (`seccomp_data.instruction_pointer`).
/// Far from where Linux puts programs (`0x5555_5555_4000`, `0x40_0000`), their heap, and
/// `mmap`s (downwards from below the stack, `0x7fff_f7ff_f000` without randomization).
pub const LIB_BASE: u64 = 0x7000_0000_0000;

/// Most bytes the library's image may span (text, data, bss), from [`LIB_BASE`].
pub const LIB_MAX_SIZE: u64 = 0x10_0000;

/// Where the threads' slots start: one [`SLOT_SIZE`] region per slot, [`MAX_SLOTS`] of them.
pub const SLOTS_BASE: u64 = LIB_BASE + LIB_MAX_SIZE;

/// Slots per process. Slot 0 is never given to a thread as its own: it is permanently
/// [`SLOT_DISABLED`], and threads beyond the others get it (their syscalls take the traced
/// path).
pub const MAX_SLOTS: u64 = 64;

/// Offset in a slot of where the library saves the program's XMM registers (512 bytes, 16-byte
/// aligned; the first 256 are used).
pub const FXSAVE_OFF: u64 = 512;
/// Offset in a slot of the library's stack (grows down from [`STACK_OFF`] + [`STACK_SIZE`]).
pub const STACK_OFF: u64 = 4096;
/// Size of a slot's stack.
pub const STACK_SIZE: u64 = 16384;
/// Offset in a slot of its record buffer.
pub const BUF_OFF: u64 = STACK_OFF + STACK_SIZE;
/// Size of a slot's record buffer.
pub const BUF_SIZE: u64 = 262_144;
/// Size of one slot (a multiple of the page size).
pub const SLOT_SIZE: u64 = BUF_OFF + BUF_SIZE;

/// End of the whole fast-path region (library and slots): `[LIB_BASE, REGION_END)`.
pub const REGION_END: u64 = SLOTS_BASE + MAX_SLOTS * SLOT_SIZE;

/// [`SlotHeader::magic`] of a slot set up by deja.
pub const SLOT_MAGIC: u64 = 0x6675_625f_616a_6564; // "deja_buf"
/// [`Config::magic`] once deja has written the configuration.
pub const CONFIG_MAGIC: u64 = 0x6766_635f_616a_6564; // "deja_cfg"

/// [`Config::mode`]: every syscall takes the traced path.
pub const MODE_OFF: u64 = 0;
/// [`Config::mode`]: recording: buffered syscalls run in the library and are logged.
pub const MODE_RECORD: u64 = 1;
/// [`Config::mode`]: replaying: buffered syscalls are answered from the records deja placed.
pub const MODE_REPLAY: u64 = 2;

/// [`SlotHeader::flags`] bit: this slot's thread takes the traced path for every syscall
/// (slot 0, a thread traced by an emulated tracer).
pub const SLOT_DISABLED: u64 = 1;

/// Syscall numbers [`Config::specs`] covers: `0..MAX_NR`.
pub const MAX_NR: usize = 512;

/// [`Spec::probe`]: not buffered: always the traced path.
pub const PROBE_NONE: u8 = 0;
/// [`Spec::probe`]: cannot block; runs as it is (`fstat`, `clock_gettime`, `getpid`, ...).
pub const PROBE_DIRECT: u8 = 1;
/// [`Spec::probe`]: `read(fd, buf, n)`, run as `preadv2(fd, {buf, n}, 1, -1, RWF_NOWAIT)`.
pub const PROBE_READ: u8 = 2;
/// [`Spec::probe`]: `pread64(fd, buf, n, off)`, run as `preadv2(fd, {buf, n}, 1, off,
/// RWF_NOWAIT)`; a negative `off` takes the traced path.
pub const PROBE_PREAD: u8 = 3;
/// [`Spec::probe`]: `readv(fd, iov, cnt)`, run as `preadv2(fd, iov, cnt, -1, RWF_NOWAIT)`.
pub const PROBE_READV: u8 = 4;
/// [`Spec::probe`]: a call replay runs for real (`rt_sigaction`, `mprotect`, `brk`, ...; the
/// table's `Replay::Execute`). Recording: like [`PROBE_DIRECT`]. Replaying: after the usual
/// check of the number and arguments against the next record, the library makes the call
/// itself with the program's arguments (the kernel writes its outputs, the recorded writes
/// are not applied) and compares its result with the recorded one: a different result sets
/// [`SlotHeader::diverged`] and [`SlotHeader::exec_result`], and the program gets the result
/// the kernel gave.
pub const PROBE_EXEC: u8 = 5;
/// [`Spec::probe`]: `mmap` of private memory, anonymous or of a file, placed where the
/// recording's call placed it. Recording: an anonymous call like [`PROBE_DIRECT`]; a file's
/// only if the descriptor's file (`fstat`: device, inode, size, modification time) is in the
/// [`FileTable`] deja wrote (a version of a file it keeps in the trace), its index then in
/// [`RecordHead::file`]; else the traced path. Replaying: like [`PROBE_EXEC`], but a
/// successful recorded call is made at the recorded address (its result) with
/// `MAP_FIXED_NOREPLACE` (or the program's own `MAP_FIXED`), as the replayer does for a traced
/// `mmap` (the layout of a replay need not make the kernel choose the same place); a file's
/// through a descriptor of the trace's copy, opened once per process from the path the
/// replayer wrote in [`ReplayFiles`] at the record's index. A failed file call is not made:
/// its recorded error is returned.
pub const PROBE_PLACE: u8 = 6;
/// [`Spec::probe`]: refused with `-ENOSYS` without a call, in both modes (`rseq`, the table's
/// `Replay::Deny(ENOSYS)`): recorded with that result; replayed like an emulated call.
pub const PROBE_ENOSYS: u8 = 7;

/// [`Cond::kind`]: unused (holds).
pub const COND_NONE: u8 = 0;
/// [`Cond::kind`]: the argument equals `value`.
pub const COND_EQ: u8 = 1;
/// [`Cond::kind`]: the argument differs from `value`.
pub const COND_NE: u8 = 2;
/// [`Cond::kind`]: the argument is the `value` of one of the spec's [`Spec::cases`] (that case
/// then gives an [`OUT_CASE`] output its size). At most one per spec.
pub const COND_IN: u8 = 3;
/// [`Cond::kind`]: the argument is a pointer to a 64-bit word (a signal set) that is 0 (then
/// the condition holds), or whose bits in `value` are all clear. The library has the kernel
/// read the word once (`process_vm_readv` of its own process: a pointer the program's call
/// would get `EFAULT` for fails the condition instead of faulting in the library), checks
/// that copy, and passes the kernel the copy's address instead of the program's (so that
/// another thread changing the word cannot make the kernel see bits the check did not); the
/// record keeps the program's arguments. At most one per spec.
pub const COND_WORD_CLEAR: u8 = 4;

/// [`Cond::kind`], checked when recording only (it always holds in replay): the argument is
/// NULL, or the 64-bit word it points at (the copy a [`COND_WORD_CLEAR`] earlier in the spec
/// made, else read now) has no bit in common with the signals pending for the thread
/// (`rt_sigpending`). So a call that would unblock a pending signal takes the traced path and
/// the kernel delivers the signal at that syscall's exit, as without the fast path, rather
/// than inside the library, where the recorder would have to single-step the task out before
/// recording the signal. (The replay needs no check: such a call has no record, and a call
/// without one takes the traced path.)
pub const COND_NOT_PENDING: u8 = 5;

/// [`Cond::kind`]: the argument's bits in the high 32 bits of `value` (a mask) equal the
/// low 32 bits of `value` (`mmap`'s flags: private).
pub const COND_MASK_EQ: u8 = 6;

/// Conditions per [`Spec`].
pub const MAX_CONDS: usize = 4;
/// Cases per [`Spec`] (the values a [`COND_IN`] accepts).
pub const MAX_CASES: usize = 4;

/// [`OutSpec::kind`]: unused.
pub const OUT_NONE: u8 = 0;
/// [`OutSpec::kind`]: `size` bytes at the address in argument `arg` (skipped when it is 0).
pub const OUT_FIXED: u8 = 1;
/// [`OutSpec::kind`]: `result` bytes at the address in argument `arg` (when `result` > 0).
/// `count_arg` is the index of the length argument bounding `result` (e.g. 2 for `read`'s
/// `count`): the library reserves that many bytes before making the call.
pub const OUT_RET: u8 = 2;
/// [`OutSpec::kind`]: `result` bytes scattered over the iovec array at argument `arg`, of
/// `count_arg` entries (when `result` > 0).
pub const OUT_IOV: u8 = 3;
/// [`OutSpec::kind`]: the `size` of the [`Case`] the spec's [`COND_IN`] matched, at the address
/// in argument `arg` (skipped when the address or that size is 0).
pub const OUT_CASE: u8 = 4;

/// One memory output of a buffered syscall, written only when the call succeeds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutSpec {
    /// `OUT_*`.
    pub kind: u8,
    /// Argument index (0..=5) holding the address.
    pub arg: u8,
    /// For [`OUT_IOV`]: argument index holding the iovec count. For [`OUT_RET`]: argument
    /// index holding the length that bounds the result (the buffer's size).
    pub count_arg: u8,
    /// Padding.
    pub pad: u8,
    /// For [`OUT_FIXED`]: the size in bytes.
    pub size: u32,
}

/// A condition on one argument of a buffered syscall: a call whose arguments fail any of its
/// spec's conditions takes the traced path (in replay, a call that matches its record but
/// fails a condition is a divergence).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cond {
    /// `COND_*`.
    pub kind: u8,
    /// Argument index (0..=5).
    pub arg: u8,
    /// 4: only the argument's low 32 bits are compared (the kernel takes an `int` or
    /// `unsigned int` there and ignores the rest); anything else (8, or 0 in an unused
    /// entry): all 64 bits.
    pub width: u8,
    /// 0, or 1 + the index of an argument: the condition holds when that argument is 0
    /// (`rt_sigprocmask`'s `how` matters only with a `set`).
    pub unless_zero: u8,
    /// Padding.
    pub pad: u32,
    /// The value compared ([`COND_EQ`], [`COND_NE`]) or the bits that must be clear
    /// ([`COND_WORD_CLEAR`]).
    pub value: u64,
}

/// One value a [`COND_IN`] accepts, and the size of its [`OUT_CASE`] output.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Case {
    /// The accepted value (compared like the condition, by its `width`).
    pub value: u64,
    /// Bytes the call writes at the [`OUT_CASE`] output's address (0: nothing).
    pub size: u32,
    /// [`CASE_USED`] for a case; 0 for an empty entry (all-zero specs stay in `.bss`).
    pub used: u32,
}

/// [`Case::used`] of a case in use.
pub const CASE_USED: u32 = 1;

/// How one syscall number is buffered.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// `PROBE_*`.
    pub probe: u8,
    /// Padding.
    pub pad: [u8; 7],
    /// What it writes on success (unused entries are [`OUT_NONE`]).
    pub outs: [OutSpec; 2],
    /// Conditions on its arguments, all of which must hold (unused entries are
    /// [`COND_NONE`]).
    pub conds: [Cond; MAX_CONDS],
    /// The values a [`COND_IN`] accepts.
    pub cases: [Case; MAX_CASES],
}

impl Default for Spec {
    fn default() -> Self {
        Spec::NONE
    }
}

impl Spec {
    /// Not buffered.
    pub const NONE: Spec = Spec {
        probe: PROBE_NONE,
        pad: [0; 7],
        outs: [OutSpec {
            kind: OUT_NONE,
            arg: 0,
            count_arg: 0,
            pad: 0,
            size: 0,
        }; 2],
        conds: [Cond {
            kind: COND_NONE,
            arg: 0,
            width: 0,
            unless_zero: 0,
            pad: 0,
            value: 0,
        }; MAX_CONDS],
        cases: [Case {
            value: 0,
            size: 0,
            used: 0,
        }; MAX_CASES],
    };
}

/// The library's configuration, at its exported symbol `deja_config`, written by deja when it
/// loads the library (before the program runs any code).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Config {
    /// [`CONFIG_MAGIC`].
    pub magic: u64,
    /// `MODE_*`.
    pub mode: u64,
    /// Per syscall number below [`MAX_NR`].
    pub specs: [Spec; MAX_NR],
}

/// The start of each slot (a thread's `gs` base points at it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotHeader {
    /// The slot's own address: the hook checks `gs:[0]` against it.
    pub self_addr: u64,
    /// [`SLOT_MAGIC`].
    pub magic: u64,
    /// Buffered syscalls this slot's thread completed (both modes): part of a point's state.
    pub seq: u64,
    /// Recording: bytes of records in the buffer. Replaying: bytes of records placed.
    pub used: u64,
    /// Replaying: bytes of records consumed.
    pub pos: u64,
    /// Non-zero while the hook runs in this thread (a nested call takes the traced path).
    pub locked: u64,
    /// Replaying: 0, or 1 + the byte offset of the record the program's call did not match
    /// (the call then took the traced path, where the replayer reports the divergence).
    pub diverged: u64,
    /// The program's `rsp` when the hook switched to the slot's stack: `[saved_rsp]` holds the
    /// program's flags and `[saved_rsp + 8]` the return address into the stub.
    pub saved_rsp: u64,
    /// Top of the slot's stack (16-byte aligned).
    pub stack_top: u64,
    /// `SLOT_*` flags.
    pub flags: u64,
    /// Recording: records in the buffer. Replaying: records consumed.
    pub calls: u64,
    /// Set by the recorder when it interrupted the library's own (untraced) syscall because it
    /// blocked: the library clears it and makes the call again on the traced path.
    pub interrupted: u64,
    /// Replaying: 0, or 1 when `diverged` names a [`PROBE_EXEC`] call that the replay ran and
    /// that returned [`SlotHeader::exec_result`] instead of the recorded result (the program
    /// went on with it), 2 when it names a call that matched its record but failed its
    /// spec's conditions, or 3 ([`DIVERGED_FILE`]).
    pub diverged_how: u64,
    /// Replaying: the result the replay's own run of the call `diverged` names returned.
    pub exec_result: u64,
    /// Recording: set by the recorder (while the thread runs) when the thread's time slice
    /// ran out while another task waits: the library clears it and sends the thread's next
    /// call it would buffer to the traced path instead, where the recorder hands the CPU over
    /// at the call's entry (no point needed).
    pub yield_asked: u64,
}

/// Byte offsets of [`SlotHeader`] fields, for the hook's assembly and the host side.
pub const OFF_SELF: u64 = 0;
/// Offset of [`SlotHeader::seq`].
pub const OFF_SEQ: u64 = 16;
/// Offset of [`SlotHeader::used`].
pub const OFF_USED: u64 = 24;
/// Offset of [`SlotHeader::pos`].
pub const OFF_POS: u64 = 32;
/// Offset of [`SlotHeader::locked`].
pub const OFF_LOCKED: u64 = 40;
/// Offset of [`SlotHeader::diverged`].
pub const OFF_DIVERGED: u64 = 48;
/// Offset of [`SlotHeader::saved_rsp`].
pub const OFF_SAVED_RSP: u64 = 56;
/// Offset of [`SlotHeader::stack_top`].
pub const OFF_STACK_TOP: u64 = 64;
/// Offset of [`SlotHeader::flags`].
pub const OFF_FLAGS: u64 = 72;
/// Offset of [`SlotHeader::calls`].
pub const OFF_CALLS: u64 = 80;

/// Offset of [`SlotHeader::interrupted`].
pub const OFF_INTERRUPTED: u64 = 88;
/// Offset of [`SlotHeader::diverged_how`].
pub const OFF_DIVERGED_HOW: u64 = 96;
/// Offset of [`SlotHeader::exec_result`].
pub const OFF_EXEC_RESULT: u64 = 104;
/// Offset of [`SlotHeader::yield_asked`].
pub const OFF_YIELD_ASKED: u64 = 112;

/// [`SlotHeader::diverged_how`]: the replay's run of a [`PROBE_EXEC`] call returned
/// [`SlotHeader::exec_result`], not the recorded result.
pub const DIVERGED_RESULT: u64 = 1;
/// [`SlotHeader::diverged_how`]: the call matched its record's number and arguments but not
/// its spec's conditions (e.g. a signal set naming `SIGSEGV`).
pub const DIVERGED_COND: u64 = 2;
/// [`SlotHeader::diverged_how`]: the call is an `mmap` of a file ([`PROBE_PLACE`]) whose
/// copy the library could not open (no path in [`ReplayFiles`], or `openat` failed).
pub const DIVERGED_FILE: u64 = 3;

/// The head of one record in a slot's buffer, followed by `nwrites` writes, each an
/// `addr: u64`, a `len: u64` and `len` bytes padded to a multiple of 8. `size` covers it all
/// and is a multiple of 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHead {
    /// Bytes of the whole record.
    pub size: u32,
    /// Syscall number.
    pub nr: u32,
    /// The six argument registers (rdi, rsi, rdx, r10, r8, r9).
    pub args: [u64; 6],
    /// The result (`-errno` on failure).
    pub result: i64,
    /// Number of memory writes that follow.
    pub nwrites: u32,
    /// 0, or for an `mmap` of a file ([`PROBE_PLACE`]): 1 + the index of its file in the
    /// process's [`FileTable`] (recording) and [`ReplayFiles`] (replaying).
    pub file: u32,
}

/// Files per process a buffered `mmap` may map ([`FileTable`], [`ReplayFiles`]).
pub const MAX_FILES: usize = 512;

/// One version of a file, as `fstat` shows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime`.
    pub mtime: i64,
    /// `st_mtime_nsec`.
    pub mtime_nsec: i64,
}

/// Recording: the file versions a buffered `mmap` may map (each one the trace keeps a copy
/// of), at the library's exported symbol `deja_files`; written by the recorder when it loads
/// the library. Entries never change once written (a forked child inherits them).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileTable {
    /// Entries in use.
    pub count: u64,
    /// The versions; index `i` is a record's `file` `i + 1`.
    pub keys: [FileKey; MAX_FILES],
}

/// Longest path (with its terminating NUL) of a [`ReplayFile`].
pub const REPLAY_PATH_SIZE: usize = 256;

/// Replaying: the trace's copy of the file at one index of the recording's [`FileTable`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ReplayFile {
    /// 0, or 1 + the descriptor the library opened `path` as (the library's own field).
    pub fd: u64,
    /// NUL-terminated path, written by the replayer before a record naming the index is
    /// placed.
    pub path: [u8; REPLAY_PATH_SIZE],
}

/// Replaying: the files of the process's buffered `mmap`s, at the library's exported symbol
/// `deja_replay_files`.
pub type ReplayFiles = [ReplayFile; MAX_FILES];

/// Offset of [`ReplayFile::path`].
pub const REPLAY_FILE_PATH_OFF: u64 = 8;
/// Size of [`ReplayFile`].
pub const REPLAY_FILE_SIZE: u64 = 8 + REPLAY_PATH_SIZE as u64;

/// Size of [`RecordHead`].
pub const RECORD_HEAD_SIZE: u64 = 72;
/// Size of the head of one write (`addr`, `len`).
pub const WRITE_HEAD_SIZE: u64 = 16;

/// The address of slot `i`.
pub const fn slot_addr(i: u64) -> u64 {
    SLOTS_BASE + i * SLOT_SIZE
}
