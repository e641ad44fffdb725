//! The in-process library (deja's syscall buffer, `../syscallbuf`) in a stopped tracee:
//! loading it into a new program image, giving a thread its slot, reading and resetting a
//! slot's buffer, and patching a syscall site. The recorder and the replayer do each of
//! these at the same moments of the trace, so the replayed process has the same library,
//! slots, stubs and patches at the same addresses.

use anyhow::{bail, ensure, Context, Result};
use syscallbuf::abi::{self, SlotHeader};

use crate::regs::Regs;
use crate::tracee::Tracee;

/// Size of a page of stubs.
pub const STUB_PAGE: u64 = 4096;
/// Offset of the first stub in a stub page (the page starts with the hook's address).
pub const STUB_START: u64 = 16;

/// Whether `rip` lies in the library's image (its code and data), where no point is taken.
pub fn in_library(rip: u64) -> bool {
    syscallbuf::loaded().is_ok_and(|l| (abi::LIB_BASE..l.end).contains(&rip))
}

/// Loads the library into `t`, stopped at its exec stop (before the new program ran), in
/// `mode` (`abi::MODE_RECORD` or `abi::MODE_REPLAY`): maps its image at `abi::LIB_BASE`
/// and the slots after it, writes its configuration, sets up slot 0 (disabled, for threads
/// beyond the slots) and gives `t` slot `slot`.
pub fn load(t: &Tracee, mode: u64, slot: u64) -> Result<()> {
    let lib = syscallbuf::loaded()?;
    let size = page_up(lib.end - abi::LIB_BASE);
    map_fixed(
        t,
        abi::LIB_BASE,
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        0,
    )
    .context("mapping deja's in-process library")?;
    // (The fresh mapping is zero: the zero tails, the .bss and the unused specs, need no
    // writing.)
    for (seg, &len) in lib.segments.iter().zip(nonzero_lengths(lib)) {
        t.write_mem(seg.addr, &seg.bytes[..len])
            .context("writing deja's in-process library")?;
    }
    t.write_mem(lib.config, config(mode)?)
        .context("configuring deja's in-process library")?;
    for seg in &lib.segments {
        if seg.prot != libc::PROT_READ | libc::PROT_WRITE {
            let len = page_up(seg.bytes.len() as u64);
            let r = t.inject_syscall(
                libc::SYS_mprotect,
                [seg.addr, len, seg.prot as u64, 0, 0, 0],
            )?;
            ensure!(r == 0, "mprotect of deja's library failed ({r})");
        }
    }
    map_fixed(
        t,
        abi::SLOTS_BASE,
        abi::MAX_SLOTS * abi::SLOT_SIZE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_NORESERVE,
    )
    .context("mapping the threads' slots of deja's in-process library")?;
    t.write_mem(
        abi::slot_addr(0),
        &syscallbuf::slot_header(abi::slot_addr(0), true),
    )?;
    give_slot(t, slot)
}

/// Writes the recording's [`syscallbuf::abi::FileTable`] (`keys`: the file versions a
/// buffered `mmap` may map) into the library just loaded in the process of task `t`.
pub fn write_file_table(t: &Tracee, keys: &[syscallbuf::abi::FileKey]) -> Result<()> {
    let lib = syscallbuf::loaded()?;
    t.write_mem(lib.files, &syscallbuf::file_table_bytes(keys))
        .context("writing the file table of deja's in-process library")
}

/// The library's configuration in `mode` ([`syscallbuf::config_bytes`]) without its zero
/// tail, derived once per run of deja for each mode (at every exec of a recording, deriving
/// the specs took longer than the rest of the load).
fn config(mode: u64) -> Result<&'static [u8]> {
    type Configs = Result<[Vec<u8>; 2], String>;
    static CONFIGS: std::sync::OnceLock<Configs> = std::sync::OnceLock::new();
    let configs = CONFIGS
        .get_or_init(|| {
            let specs = syscallbuf::specs::specs().map_err(|e| format!("{e:#}"))?;
            let trimmed = |m| {
                let mut c = syscallbuf::config_bytes(m, &specs);
                c.truncate(nonzero_len(&c));
                c
            };
            Ok([trimmed(abi::MODE_RECORD), trimmed(abi::MODE_REPLAY)])
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the library's syscall specs: {e}"))?;
    match mode {
        abi::MODE_RECORD => Ok(&configs[0]),
        abi::MODE_REPLAY => Ok(&configs[1]),
        other => bail!("no configuration of deja's in-process library for mode {other}"),
    }
}

/// How many bytes of each of `lib`'s segments are not its zero tail (computed once).
fn nonzero_lengths(lib: &syscallbuf::Loaded) -> &'static [usize] {
    static LENGTHS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    LENGTHS.get_or_init(|| lib.segments.iter().map(|s| nonzero_len(&s.bytes)).collect())
}

/// Makes `slot` the slot of stopped task `t`: a fresh header (empty buffer) and `t`'s `gs`
/// base pointing at it.
pub fn give_slot(t: &Tracee, slot: u64) -> Result<()> {
    let disabled = slot == abi::slot_addr(0);
    if !disabled {
        t.write_mem(slot, &syscallbuf::slot_header(slot, false))
            .context("setting up a thread's slot of deja's in-process library")?;
    }
    let mut regs = t.regs()?;
    regs.gs_base = slot;
    t.set_regs(&regs)
        .context("pointing a thread's gs base at its slot")
}

/// The header of `slot`, read from stopped task `t`.
pub fn header(t: &Tracee, slot: u64) -> Result<SlotHeader> {
    let mut b = [0u8; std::mem::size_of::<SlotHeader>()];
    t.read_mem(slot, &mut b)
        .context("reading a slot of deja's in-process library")?;
    Ok(header_from(&b))
}

/// A slot header from its bytes.
fn header_from(b: &[u8; std::mem::size_of::<SlotHeader>()]) -> SlotHeader {
    let w = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_le_bytes(x)
    };
    SlotHeader {
        self_addr: w(0),
        magic: w(1),
        seq: w(2),
        used: w(3),
        pos: w(4),
        locked: w(5),
        diverged: w(6),
        saved_rsp: w(7),
        stack_top: w(8),
        flags: w(9),
        calls: w(10),
        interrupted: w(11),
        diverged_how: w(12),
        exec_result: w(13),
        yield_asked: w(14),
    }
}

/// Turns the fast path off in the process of stopped task `t`: every later syscall of its
/// threads takes the traced path (its library's mode becomes `MODE_OFF`).
pub fn turn_off(t: &Tracee) -> Result<()> {
    let config = syscallbuf::loaded()?.config;
    t.write_mem(config + 8, &abi::MODE_OFF.to_le_bytes())
        .context("turning deja's in-process library off")
}

/// Whether a successful `ptrace(request, pid, ..)` made by task `caller` gives a task an
/// (emulated) tracer, and which: the recorder then turns the fast path off in that task's
/// process (see [`turn_off`]), and the replay does the same at the call's event.
pub fn ptrace_turns_off(caller: i32, args: &[u64; 6]) -> Option<i32> {
    match args[0] {
        0 => Some(caller),                   // PTRACE_TRACEME
        16 | 0x4206 => Some(args[1] as i32), // PTRACE_ATTACH, PTRACE_SEIZE
        _ => None,
    }
}

/// Whether syscall `nr(args)` installs a seccomp filter (or strict mode) of the program's own:
/// its filter would see (and could refuse or trap) the library's untraced calls, which the
/// replay does not make, so the caller's process stops using the fast path at that call, in
/// the recording and in the replay, whatever the call returns.
pub fn seccomp_turns_off(nr: u64, args: &[u64; 6]) -> bool {
    nr == libc::SYS_seccomp as u64
        || (nr == libc::SYS_prctl as u64 && args[0] == libc::PR_SET_SECCOMP as u64)
}

/// Writes the header word at `off` of `slot` in `t`.
pub fn set_word(t: &Tracee, slot: u64, off: u64, value: u64) -> Result<()> {
    t.write_mem(slot + off, &value.to_le_bytes())
}

/// Takes the records the library logged in `slot` of stopped task `t` (the bytes of its
/// buffer, checked: see `syscallbuf::heads`) and empties its buffer. Empty when it logged
/// none, and while the task is inside a call of the library (`locked`): the library read the
/// buffer's fill level before its syscall and writes its record and the new level after it,
/// so emptying the buffer then would only make it log the drained records again; they are
/// drained at a later stop. The records are read into `buf` (a recycled buffer: its content
/// does not matter).
pub fn drain(t: &Tracee, slot: u64, mut buf: Vec<u8>) -> Result<(Vec<u8>, Vec<syscallbuf::Head>)> {
    // The header and the buffer's first bytes in one read (most drains find a few records or
    // none), the rest after it if there is more.
    let mut head = [0u8; std::mem::size_of::<SlotHeader>()];
    buf.resize(DRAIN_FIRST, 0);
    t.read_many(&mut [(slot, &mut head), (slot + abi::BUF_OFF, &mut buf)])?;
    let h = header_from(&head);
    if h.used == 0 || h.magic != abi::SLOT_MAGIC || h.locked != 0 {
        buf.clear();
        return Ok((buf, Vec::new()));
    }
    ensure!(
        h.used <= abi::BUF_SIZE,
        "a slot of deja's in-process library claims {} bytes of records",
        h.used
    );
    let used = h.used as usize;
    if used > DRAIN_FIRST {
        // Only the part of `buf` beyond its old length is zeroed (a recycled buffer's stale
        // bytes are all overwritten).
        buf.resize(used, 0);
        t.read_mem(
            slot + abi::BUF_OFF + DRAIN_FIRST as u64,
            &mut buf[DRAIN_FIRST..],
        )?;
    } else {
        buf.truncate(used);
    }
    let heads = syscallbuf::heads(&buf).context("reading the syscalls the library logged")?;
    let zero = 0u64.to_le_bytes();
    t.write_many(&[
        (slot + abi::OFF_USED, &zero[..]),
        (slot + abi::OFF_CALLS, &zero[..]),
    ])?;
    Ok((buf, heads))
}

/// How many buffered calls the thread of `slot` (task `t`, running or stopped) has completed
/// ([`SlotHeader::seq`]).
pub fn buffered_calls(t: &Tracee, slot: u64) -> Result<u64> {
    t.read_u64(slot + abi::OFF_SEQ)
}

/// Asks the library to send the next call it would buffer in the thread of `slot` (task
/// `t`, running or stopped) to the traced path ([`SlotHeader::yield_asked`]).
pub fn ask_yield(t: &Tracee, slot: u64) -> Result<()> {
    t.write_mem(slot + abi::OFF_YIELD_ASKED, &1u64.to_le_bytes())
        .context("asking the in-process library to yield")
}

/// How many bytes of a slot's buffer [`drain`] reads with its header.
const DRAIN_FIRST: usize = 1024;

/// Places `records` in `slot` of stopped task `t` for the library to answer the task's next
/// buffered syscalls with (replay).
pub fn place(t: &Tracee, slot: u64, records: &[u8]) -> Result<()> {
    ensure!(
        records.len() as u64 <= abi::BUF_SIZE,
        "{} bytes of buffered syscalls do not fit a slot",
        records.len()
    );
    t.write_mem(slot + abi::BUF_OFF, records)?;
    set_word(t, slot, abi::OFF_USED, records.len() as u64)?;
    set_word(t, slot, abi::OFF_POS, 0)?;
    set_word(t, slot, abi::OFF_CALLS, 0)?;
    set_word(t, slot, abi::OFF_DIVERGED_HOW, 0)?;
    set_word(t, slot, abi::OFF_DIVERGED, 0)
}

/// A patch of one syscall site (see `crate::patch`), as the trace holds it.
#[derive(Debug, Clone, Copy)]
pub struct SitePatch<'a> {
    /// The syscall number (rax at the site).
    pub nr: u64,
    /// First byte of the window (the `syscall` instruction).
    pub window: u64,
    /// The bytes written over the window.
    pub patch: &'a [u8],
    /// Where the stub goes.
    pub stub_addr: u64,
    /// The stub.
    pub stub: &'a [u8],
    /// A new page of stubs to map first.
    pub new_page: Option<u64>,
}

/// Applies `p` in task `t`, stopped at the seccomp stop of the site's syscall: installs it
/// ([`install`]) and sets the task back onto the `syscall` instruction with the call skipped,
/// so that resumed it makes the call again through the patch.
pub fn apply(t: &Tracee, p: &SitePatch) -> Result<()> {
    install(t, p)?;
    let mut regs: Regs = t.regs()?;
    regs.rip = p.window;
    regs.rax = p.nr;
    regs.orig_rax = u64::MAX;
    t.set_regs(&regs)
}

/// Installs `p` in the process of task `t`, stopped at a syscall's entry (a new stub page is
/// mapped by a syscall injected there): maps the new stub page if needed, writes the stub and
/// the patch. The task stays where it is.
pub fn install(t: &Tracee, p: &SitePatch) -> Result<()> {
    if let Some(page) = p.new_page {
        map_fixed(t, page, STUB_PAGE, libc::PROT_READ | libc::PROT_EXEC, 0)
            .context("mapping a page of syscall stubs")?;
        let hook = syscallbuf::loaded()?.hook;
        t.write_mem(page, &hook.to_le_bytes())?;
    }
    t.write_mem(p.stub_addr, p.stub)
        .context("writing a syscall stub")?;
    t.write_mem(p.window, p.patch)
        .context("patching a syscall site")
}

/// `mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | extra)` in `t`.
fn map_fixed(t: &Tracee, addr: u64, len: u64, prot: i32, extra: i32) -> Result<()> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE | extra;
    let r = t.inject_syscall(
        libc::SYS_mmap,
        [addr, len, prot as u64, flags as u64, u64::MAX, 0],
    )?;
    if r as u64 != addr {
        bail!(
            "mmap of {len} bytes at {addr:#x} failed: {}",
            std::io::Error::from_raw_os_error(-r as i32)
        );
    }
    Ok(())
}

/// The length of `bytes` without its trailing zeros.
fn nonzero_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

fn page_up(n: u64) -> u64 {
    (n + 4095) & !4095
}
