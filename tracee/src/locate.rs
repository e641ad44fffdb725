//! Finding a recorded [`Point`] again in a replayed task, at native speed and without a PMU.
//!
//! The instruction(s) at the point's `rip` are patched with a `jmp` to a **trampoline** in a
//! scratch mapping within ±2 GiB. The trampoline compares the general registers, the
//! arithmetic flags and the point's watched words against the recorded values and executes
//! `int3` only when all match; otherwise it runs the relocated original instructions and jumps
//! back. At the `int3` the tracer compares the complete state (FP registers, memory digest):
//! equal means reached (identical state, identical future), different is a *near miss* and the
//! task continues. Interior boundaries of the patched bytes, where the program might branch,
//! are guarded by hardware execute breakpoints. When no trampoline can be built (instructions
//! that cannot be moved, no room for guards, no address nearby), every visit of `rip` stops the
//! task instead (a hardware breakpoint, or an `int3` byte without a free debug register).
//!
//! Typical use (what [`Locator::run`] does): `new`, then `arm` / resume / wait / `disarm` /
//! `on_stop` until `Reached` or `Other`, then `finish`.

use anyhow::{bail, Context, Result};
use iced_x86::{Decoder, DecoderOptions};
use trace_format::{Point, WatchedWord};

use crate::debugregs::hit_slots;
use crate::maps;
use crate::regs::{self, REGS_WORDS};
use crate::state::{comparable, differences, memory_digest};
use crate::stop::Stop;
use crate::tracee::{signo_code, Tracee};

mod trampoline;

pub(crate) use trampoline::unmovable;
use trampoline::{build_trampoline, Check};

/// Index of `rip` in [`regs::to_words`] order.
const RIP: usize = 16;
/// Index of `eflags` in [`regs::to_words`] order.
const EFLAGS: usize = 18;

/// Page size.
const PAGE: u64 = 4096;
/// The scratch mapping: the trampoline's two code pages (a punned jump may enter it anywhere in
/// the first), then its data page (counters, saved registers, and a private stack at its top
/// for `pushfq`: the program's stack has a red zone that must not be touched). Code and data
/// live in different pages so the trampoline's stores never look like self-modifying code to
/// the CPU.
const SCRATCH_SIZE: u64 = 3 * PAGE;
/// Offset of the data page in the scratch mapping.
const DATA_PAGE: u64 = 2 * PAGE;
/// Offsets in the data page.
const DATA_VISITS: u64 = 0;
const DATA_R11: u64 = 8;
const DATA_RSP: u64 = 16;
const DATA_R10: u64 = 24;
const DATA_RCX: u64 = 32;
/// At most this many registers and watched words in the trampoline's quick filter.
const MAX_QUICK: usize = 6;
/// Length of `jmp rel32`, the patch at the point.
const JMP_LEN: usize = 5;

/// Give-up rule: more near misses than this is a divergence (each costs a memory digest; an
/// interpreter's loop may repeat its registers and watched words for hundreds of visits).
const MAX_NEAR_MISSES: usize = 4096;
/// Guard hits after which the trampoline is built again with a punned jump, which needs no
/// guard (each hit is a ptrace stop, some 30 µs).
const REPUN_GUARD_HITS: u64 = 64;
/// Single steps allowed to leave the patched bytes after control entered them from elsewhere.
const MAX_STEP_OUT: usize = 100_000;

/// The resume flag, which the kernel sets after an instruction breakpoint fires.
const EFLAGS_RF: u64 = 1 << 16;

/// `si_code` of a hardware breakpoint's SIGTRAP.
const TRAP_HWBKPT: i32 = 4;

/// What a stop meant to the locator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The task is exactly at the point: `rip` is the point's, its complete state equals the
    /// recorded one. The code is disarmed; call [`Locator::finish`].
    Reached,
    /// A near miss or a guard: the task is prepared; arm and resume it again.
    Continue,
    /// A stop that is not the locator's (a signal, a syscall, the task's end, ...): the
    /// caller's business. The task stays in it.
    Other(Stop),
}

/// How the locator watches the point's `rip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The in-process filter; `guards` debug-register slots watch interior instruction
    /// boundaries of the patched bytes.
    Trampoline {
        /// Guard slots used.
        guards: usize,
    },
    /// A hardware execute breakpoint at `rip`: a ptrace stop per visit.
    HardwareBreakpoint,
    /// An `int3` byte at `rip`: a ptrace stop (and a single step) per visit.
    Int3,
}

/// Runs a task to a recorded [`Point`]. See the module documentation.
#[derive(Debug)]
pub struct Locator {
    point: Point,
    /// The point's `rip`.
    rip: u64,
    /// Watched words the trampoline and the fallback's quick check compare (the readable ones).
    watch: Vec<WatchedWord>,
    mode: Mode,
    /// What `new` was given, for a late fallback or a rebuilt trampoline.
    avoid: Vec<(u64, u64)>,
    free_slots: Vec<usize>,
    reserved: Vec<(u64, u64)>,
    armed: bool,
    /// Whether the trampoline counts every visit, not only those past its quick filter.
    counting: bool,
    /// Visits the trampoline counted when last read.
    trampoline_visits: u64,
    /// Visits seen as ptrace stops (fallback).
    stop_visits: u64,
    guard_hits: u64,
    /// The trampoline's quick filter, to build it again.
    quick: Vec<Check>,
    /// Whether the next `arm` builds the trampoline again with a punned jump (its guards have
    /// stopped the task too often).
    repun: bool,
    /// Visits counted by trampolines built before the current one.
    earlier_visits: u64,
    /// `(comparable registers, memory digest)` of every near miss, for the cycle rule.
    candidates: Vec<([u64; REGS_WORDS], [u8; 16])>,
    /// The differences of the nearest miss (fewest differences).
    nearest: Option<Vec<String>>,
}

#[derive(Debug)]
enum Mode {
    Trampoline(Trampoline),
    Breakpoint { slot: usize },
    Int3 { original: u8 },
}

#[derive(Debug)]
struct Trampoline {
    /// Address of the scratch mapping.
    base: u64,
    /// Whether the patch is a punned jump.
    punned: bool,
    /// Address of the trampoline's first instruction, in its first page.
    entry: u64,
    /// Whether it is mapped and holds `code`.
    mapped: bool,
    /// The trampoline, assembled for `base`.
    code: Vec<u8>,
    /// Where the trampoline's `int3` leaves `rip` (the relocated original instructions follow).
    resume: u64,
    /// The program's bytes under the patch.
    original: Vec<u8>,
    /// `jmp trampoline` and `int3` filler, as long as `original`.
    patch: Vec<u8>,
    /// `(slot, address)`: an execute breakpoint on each covered instruction after the first.
    guards: Vec<(usize, u64)>,
    /// `(trampoline address, original address)` of the relocated instructions and of the jump
    /// back (whose original is the end of the patched bytes).
    relocated: Vec<(u64, u64)>,
}

impl Trampoline {
    /// Whether `addr` is inside the patched bytes, past their first one.
    fn interior(&self, rip: u64, addr: u64) -> bool {
        addr > rip && addr < rip + self.original.len() as u64
    }
}

impl Locator {
    /// Prepares to find `point` in stopped task `t`: chooses a scratch address within ±2 GiB
    /// of the point's `rip` and builds the trampoline (or chooses a fallback). `avoid`: byte
    /// ranges `[start, end)` not to patch (the debugger's breakpoints); `free_slots`: debug
    /// register slots (0–3) it may use (guards / fallback). Both are taken as they are now: a
    /// breakpoint the caller inserts later inside the patched bytes needs a new locator
    /// (disarming writes the bytes seen here back). `reserved`: ranges `[start, end)` the task
    /// will map while it runs toward the point (its buffered `mmap`s, placed at recorded
    /// addresses), which the scratch page must leave free.
    ///
    /// Does not resume the task: the scratch page is mapped (by an injected `mmap`) at the
    /// first [`Locator::arm`]. A task in a signal-delivery-stop whose signal is still to be
    /// delivered must get it first: [`Locator::run`] with that signal does so before arming
    /// (arming resumes the task, which would discard it).
    ///
    /// The trampoline counts only the visits that pass its quick filter (see
    /// [`Locator::visits`]); [`Locator::new_counting`] counts them all.
    pub fn new(
        t: &Tracee,
        point: &Point,
        avoid: &[(u64, u64)],
        free_slots: &[usize],
        reserved: &[(u64, u64)],
    ) -> Result<Locator> {
        Self::build(t, point, avoid, free_slots, reserved, false)
    }

    /// [`Locator::new`], with a trampoline that counts every visit of the point's `rip` (a
    /// memory increment per visit: a few tenths of a nanosecond on a hot loop, for tests and
    /// measurements).
    pub fn new_counting(
        t: &Tracee,
        point: &Point,
        avoid: &[(u64, u64)],
        free_slots: &[usize],
        reserved: &[(u64, u64)],
    ) -> Result<Locator> {
        Self::build(t, point, avoid, free_slots, reserved, true)
    }

    fn build(
        t: &Tracee,
        point: &Point,
        avoid: &[(u64, u64)],
        free_slots: &[usize],
        reserved: &[(u64, u64)],
        counting: bool,
    ) -> Result<Locator> {
        if let Some(&bad) = free_slots.iter().find(|&&s| s >= crate::debugregs::SLOTS) {
            bail!("there is no debug register slot {bad} (0-3)");
        }
        let rip = point.regs[RIP];
        let maps = maps::read(t.pid())?;
        // The trampoline reads the watched words with the program's rights: readable mappings
        // only (the tracer could read more).
        let readable = |a: u64, len: u64| {
            maps.iter()
                .any(|m| a >= m.start && a + len <= m.end && m.perms.starts_with('r'))
        };
        let watch: Vec<WatchedWord> = point
            .watch
            .iter()
            .filter(|w| {
                let ok = matches!(w.size, 1 | 2 | 4 | 8) && readable(w.addr, u64::from(w.size));
                if !ok {
                    tracing::warn!(
                        "watched word {:#x} ({} bytes) is not readable: not filtered on",
                        w.addr,
                        w.size
                    );
                }
                ok
            })
            .cloned()
            .collect();
        let quick = quick_checks(t, point, &watch)?;
        tracing::debug!(
            "point {rip:#x}: quick filter on {}",
            quick
                .iter()
                .map(|c| match c {
                    Check::Reg(i) => regs::WORD_NAMES[*i].to_string(),
                    Check::Word(w) => format!("[{:#x}]", w.addr),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        // A guarded trampoline first (a punned jump makes the CPU decode the bytes after the
        // point two ways, which costs at every visit); a punned one if that cannot be built.
        let planned = with_reserved(&maps, reserved);
        let build = |pun| {
            build_trampoline(
                t, point, &watch, &quick, counting, &planned, avoid, free_slots, pun,
            )
        };
        let mode = match build(false).or_else(|_| build(true)) {
            Ok(tr) => Mode::Trampoline(tr),
            Err(why) => {
                let mode = fallback(t, rip, avoid, free_slots)?;
                tracing::info!("point {rip:#x}: no trampoline ({why:#}); stopping at every visit");
                mode
            }
        };
        Ok(Locator {
            point: point.clone(),
            rip,
            watch,
            mode,
            avoid: avoid.to_vec(),
            free_slots: free_slots.to_vec(),
            reserved: reserved.to_vec(),
            armed: false,
            counting,
            quick,
            repun: false,
            earlier_visits: 0,
            trampoline_visits: 0,
            stop_visits: 0,
            guard_hits: 0,
            candidates: Vec::new(),
            nearest: None,
        })
    }

    /// How visits of the point's `rip` are watched.
    pub fn method(&self) -> Method {
        match &self.mode {
            Mode::Trampoline(tr) => Method::Trampoline {
                guards: tr.guards.len(),
            },
            Mode::Breakpoint { .. } => Method::HardwareBreakpoint,
            Mode::Int3 { .. } => Method::Int3,
        }
    }

    /// Visits of the point's `rip` so far (as of the last stop): every visit of a fallback
    /// and of a counting trampoline ([`Locator::new_counting`]); with a trampoline made by
    /// [`Locator::new`], only those that passed its quick filter (its registers and words
    /// that differed when the locator was made).
    pub fn visits(&self) -> u64 {
        self.earlier_visits + self.trampoline_visits + self.stop_visits
    }

    /// Near misses so far: visits whose registers and watched words matched, not the rest.
    pub fn near_misses(&self) -> usize {
        self.candidates.len()
    }

    /// Full check of the current state of stopped `t` against the point.
    pub fn at_point(&mut self, t: &Tracee) -> Result<bool> {
        let words = regs::to_words(&t.regs()?);
        Ok(self.quick_match(t, &words) && self.full_match(t)?.is_empty())
    }

    /// Installs the patch (or breakpoint) before the task is resumed.
    ///
    /// May run the task itself: it maps the scratch page on first use (an injected `mmap`),
    /// and if the task stands inside the patched bytes (past their first instruction, e.g.
    /// after a stop of the caller's there), it single-steps it out of them. Either discards
    /// the signal of a signal-delivery-stop: deliver a pending signal before arming (as
    /// [`Locator::run`] does). The task is then in a ptrace stop whose resumption delivers
    /// nothing. An error (the task stopped for something else while being stepped out) leaves
    /// the code disarmed.
    pub fn arm(&mut self, t: &Tracee) -> Result<()> {
        if self.armed {
            return Ok(());
        }
        if self.repun {
            self.repun = false;
            self.rebuild_punned(t)?;
        }
        self.ensure_scratch(t)?;
        if let Mode::Trampoline(tr) = &self.mode {
            if tr.interior(self.rip, t.regs()?.rip) {
                if let Some(stop) = self.step_out(t)? {
                    bail!(
                        "task {} stopped ({stop:?}) while being stepped out of the bytes patched \
                         at {:#x}",
                        t.pid(),
                        self.rip
                    );
                }
            }
        }
        match &self.mode {
            Mode::Trampoline(tr) => {
                t.write_mem(self.rip, &tr.patch)
                    .context("patching the point's code")?;
                set_exec_slots(t, &tr.guards)?;
            }
            &Mode::Breakpoint { slot } => set_exec_slots(t, &[(slot, self.rip)])?,
            Mode::Int3 { .. } => t
                .write_mem(self.rip, &[0xcc])
                .context("writing a breakpoint at the point")?,
        }
        self.armed = true;
        Ok(())
    }

    /// Restores the program's code and frees the debug registers, at a stop after arming.
    pub fn disarm(&mut self, t: &Tracee) -> Result<()> {
        if !self.armed {
            return Ok(());
        }
        self.armed = false;
        self.restore_code(t)?;
        match &self.mode {
            Mode::Trampoline(tr) => clear_slots(t, tr.guards.iter().map(|g| g.0)),
            &Mode::Breakpoint { slot } => clear_slots(t, [slot]),
            Mode::Int3 { .. } => Ok(()),
        }
    }

    /// Puts the program's bytes back at the point.
    fn restore_code(&self, t: &Tracee) -> Result<()> {
        let original = match &self.mode {
            Mode::Trampoline(tr) => &tr.original[..],
            Mode::Int3 { original } => std::slice::from_ref(original),
            Mode::Breakpoint { .. } => return Ok(()),
        };
        t.write_mem(self.rip, original)
            .context("restoring the code at the point")
    }

    /// After a stop of the armed-then-disarmed task: [`Verdict::Reached`] (task left exactly
    /// at the point), [`Verdict::Continue`] (a near miss or a guard, task prepared: arm and
    /// resume again), or [`Verdict::Other`] (not the locator's stop). Errors are the give-up
    /// rules (a cycle: a near miss whose state repeats an earlier one's; more than 64 near
    /// misses), to be reported as a divergence.
    ///
    /// A signal stop inside the trampoline's copy of the original instructions (a fault there,
    /// a watchpoint they triggered) is moved to the equivalent address in the original code
    /// (which is back in place), so the caller never sees the trampoline.
    pub fn on_stop(&mut self, t: &Tracee, stop: Stop) -> Result<Verdict> {
        self.read_visits(t);
        let verdict = self.classify(t, stop)?;
        if let (Verdict::Other(Stop::Signal(_)), Mode::Trampoline(tr)) = (verdict, &self.mode) {
            let mut r = t.regs()?;
            if let Some(&(_, original)) = tr.relocated.iter().find(|&&(new, _)| new == r.rip) {
                r.rip = original;
                t.set_regs(&r)?;
            }
        }
        Ok(verdict)
    }

    fn classify(&mut self, t: &Tracee, stop: Stop) -> Result<Verdict> {
        if stop != Stop::Signal(libc::SIGTRAP) {
            return Ok(Verdict::Other(stop));
        }
        let (_, code) = signo_code(&t.siginfo()?);
        let mut r = t.regs()?;
        match &self.mode {
            Mode::Trampoline(tr) => {
                if code == libc::SI_KERNEL && r.rip == tr.resume {
                    let resume = tr.resume;
                    r.rip = self.rip;
                    t.set_regs(&r)?;
                    let verdict = self.candidate(t)?;
                    if verdict == Verdict::Continue {
                        r.rip = resume;
                        t.set_regs(&r)?;
                    }
                    return Ok(verdict);
                }
                if code == TRAP_HWBKPT {
                    let hits: Vec<usize> = hit_slots(t.debug_reg(6)?).collect();
                    let guard = hits
                        .iter()
                        .any(|&s| tr.guards.iter().any(|&(gs, ga)| gs == s && ga == r.rip));
                    let foreign = hits.iter().any(|&s| tr.guards.iter().all(|g| g.0 != s));
                    if guard && !foreign {
                        self.guard_hits += 1;
                        if self.guard_hits == REPUN_GUARD_HITS {
                            // The task stays where the guard stopped it, which is outside the
                            // bytes a punned jump covers.
                            self.repun = true;
                            return Ok(Verdict::Continue);
                        }
                        // The trampoline holds a copy of the instruction there and of the
                        // rest of the patched ones, which jumps back after them: the task goes
                        // on from that copy (one stop per entry instead of a stop and a step).
                        if let Some(&(copy, _)) = tr
                            .relocated
                            .iter()
                            .find(|&&(_, original)| original == r.rip)
                        {
                            if tr.mapped {
                                r.rip = copy;
                                t.set_regs(&r)?;
                                return Ok(Verdict::Continue);
                            }
                        }
                        tracing::debug!("guard hit at {:#x}: stepping out", r.rip);
                        return Ok(match self.step_out(t)? {
                            Some(other) => Verdict::Other(other),
                            None => Verdict::Continue,
                        });
                    }
                }
                Ok(Verdict::Other(stop))
            }
            &Mode::Breakpoint { slot } => {
                let hits: Vec<usize> = if code == TRAP_HWBKPT && r.rip == self.rip {
                    hit_slots(t.debug_reg(6)?).collect()
                } else {
                    Vec::new()
                };
                if !hits.contains(&slot) {
                    return Ok(Verdict::Other(stop));
                }
                // The kernel set RF: resuming executes the instruction without trapping again,
                // so this visit is checked now even if a breakpoint of the caller's fired too.
                let verdict = self.visit(t)?;
                if verdict == Verdict::Continue && hits.iter().any(|&s| s != slot) {
                    return Ok(Verdict::Other(stop));
                }
                if verdict == Verdict::Reached {
                    // Our breakpoint is gone: RF would only hide a caller's breakpoint here.
                    r.eflags &= !EFLAGS_RF;
                    t.set_regs(&r)?;
                }
                Ok(verdict)
            }
            Mode::Int3 { .. } => {
                if code != libc::SI_KERNEL || r.rip != self.rip + 1 {
                    return Ok(Verdict::Other(stop));
                }
                r.rip = self.rip;
                t.set_regs(&r)?;
                let verdict = self.visit(t)?;
                if verdict != Verdict::Continue {
                    return Ok(verdict);
                }
                // Execute the original instruction before the int3 goes back.
                t.step(0)?;
                Ok(match t.wait()? {
                    Stop::Signal(libc::SIGTRAP) => Verdict::Continue,
                    other => Verdict::Other(other),
                })
            }
        }
    }

    /// Convenience: if `sig != 0` it is delivered first (a single step with it: the task stops
    /// at the handler's first instruction, or after one instruction if nothing handles it);
    /// then checks whether the task is already at the point, and arms / resumes / waits /
    /// disarms / [`Locator::on_stop`] until `Reached` or `Other`.
    ///
    /// The signal may come from a [`crate::state::settle_trap`] stop: set its siginfo there and
    /// pass it here. After `Other`, deliver its signal (if any) by calling `run` again with it.
    pub fn run(&mut self, t: &Tracee, sig: i32) -> Result<Verdict> {
        if sig != 0 {
            t.step(sig)?;
            match t.wait()? {
                Stop::Signal(libc::SIGTRAP) => {}
                other => return Ok(Verdict::Other(other)),
            }
        }
        if self.at_point(t)? {
            return Ok(Verdict::Reached);
        }
        loop {
            self.arm(t)?;
            t.cont(0)?;
            let stop = t.wait()?;
            if stop.is_end() {
                // Other threads may still run this code.
                let _ = self.restore_code(t);
                self.armed = false;
                return Ok(Verdict::Other(stop));
            }
            self.disarm(t)?;
            match self.on_stop(t, stop)? {
                Verdict::Continue => {}
                v => return Ok(v),
            }
        }
    }

    /// Restores the code, clears the debug registers it used and unmaps the scratch page (an
    /// injected `munmap`). Always call (also after errors). The task is then in the
    /// syscall-exit-stop of that `munmap` with its registers unchanged: resuming it continues
    /// from where it stood.
    ///
    /// If the task has ended, only the code is put back (its address space may live on in
    /// other threads, which then keep the scratch mapping).
    pub fn finish(mut self, t: &Tracee) -> Result<()> {
        if t.regs().is_err() {
            if self.armed {
                let _ = self.restore_code(t);
            }
            return Ok(());
        }
        self.read_visits(t);
        let disarmed = self.disarm(t);
        if let Mode::Trampoline(tr) = &self.mode {
            if tr.mapped {
                let r = t
                    .inject_syscall(libc::SYS_munmap, [tr.base, SCRATCH_SIZE, 0, 0, 0, 0])
                    .context("unmapping the locator's scratch page")?;
                if r != 0 {
                    bail!(
                        "unmapping the locator's scratch page at {:#x} failed: errno {}",
                        tr.base,
                        -r
                    );
                }
            }
        }
        disarmed
    }

    /// A one-line account for divergence reports: visits, near misses, the nearest miss's
    /// differences.
    pub fn report(&self) -> String {
        let mut visits = "visit(s)";
        let method = match self.method() {
            Method::Trampoline { guards } => {
                if !self.counting {
                    visits = "visit(s) past the quick filter";
                }
                format!("trampoline with {guards} guard(s)")
            }
            Method::HardwareBreakpoint => "hardware breakpoint".to_string(),
            Method::Int3 => "int3".to_string(),
        };
        let nearest = match &self.nearest {
            Some(d) => format!("the nearest differed in {}", d.join(", ")),
            None => "none had the recorded registers and watched words".to_string(),
        };
        format!(
            "point {:#x} ({method}): {} {visits}, {} guard hit(s), {} near miss(es); {nearest}",
            self.rip,
            self.visits(),
            self.guard_hits,
            self.candidates.len()
        )
    }

    /// The range of the scratch page holding the trampoline (mapped at the first `arm`), left
    /// out of memory digests; `None` when the point is watched without a trampoline.
    pub fn scratch_range(&self) -> Option<(u64, u64)> {
        match &self.mode {
            Mode::Trampoline(tr) => Some((tr.base, tr.base + SCRATCH_SIZE)),
            _ => None,
        }
    }

    /// How the task's complete state differs from the point's (empty: identical), the scratch
    /// mapping left out.
    fn full_match(&self, t: &Tracee) -> Result<Vec<String>> {
        let scratch: Vec<(u64, u64)> = self.scratch_range().into_iter().collect();
        differences(t, &self.point, &scratch)
    }

    /// Replaces the guarded trampoline by one with a punned jump, if one can be built: unmaps
    /// the old one (an injected `munmap`; the task is disarmed and outside it), and the next
    /// [`Self::ensure_scratch`] maps the new one.
    fn rebuild_punned(&mut self, t: &Tracee) -> Result<()> {
        let (old_base, old_mapped) = match &self.mode {
            Mode::Trampoline(old) => (old.base, old.mapped),
            _ => return Ok(()),
        };
        let maps = with_reserved(&maps::read(t.pid())?, &self.reserved);
        let new = match build_trampoline(
            t,
            &self.point,
            &self.watch,
            &self.quick,
            self.counting,
            &maps,
            &self.avoid,
            &self.free_slots,
            true,
        ) {
            Ok(new) if new.guards.is_empty() && new.punned => new,
            Ok(_) => return Ok(()),
            Err(why) => {
                tracing::debug!("point {:#x}: no punned jump ({why:#})", self.rip);
                return Ok(());
            }
        };
        if old_mapped {
            self.read_visits(t);
            let r = t
                .inject_syscall(libc::SYS_munmap, [old_base, SCRATCH_SIZE, 0, 0, 0, 0])
                .context("unmapping the locator's guarded trampoline")?;
            if r != 0 {
                bail!(
                    "unmapping the locator's scratch page at {old_base:#x} failed: errno {}",
                    -r
                );
            }
        }
        self.earlier_visits += self.trampoline_visits;
        self.trampoline_visits = 0;
        tracing::debug!(
            "point {:#x}: {} guard hits, a punned jump instead",
            self.rip,
            self.guard_hits
        );
        self.mode = Mode::Trampoline(new);
        Ok(())
    }

    /// Maps the scratch page and writes the trampoline, once. If the mapping fails, falls back
    /// to stopping at every visit.
    fn ensure_scratch(&mut self, t: &Tracee) -> Result<()> {
        let Mode::Trampoline(tr) = &mut self.mode else {
            return Ok(());
        };
        if tr.mapped {
            return Ok(());
        }
        let prot = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        let r = t.inject_syscall(
            libc::SYS_mmap,
            [tr.base, SCRATCH_SIZE, prot, flags, u64::MAX, 0],
        )?;
        if r == tr.base as i64 {
            t.write_mem(tr.entry, &tr.code)
                .context("writing the trampoline")?;
            tr.mapped = true;
            return Ok(());
        }
        if r > 0 {
            // An old kernel took MAP_FIXED_NOREPLACE as a hint and put it elsewhere.
            t.inject_syscall(libc::SYS_munmap, [r as u64, SCRATCH_SIZE, 0, 0, 0, 0])?;
        }
        tracing::info!(
            "point {:#x}: mapping the scratch page at {:#x} failed ({r}); stopping at every visit",
            self.rip,
            tr.base
        );
        self.mode = fallback(t, self.rip, &self.avoid, &self.free_slots)?;
        Ok(())
    }

    /// Single-steps the disarmed task until it is no longer inside the patched bytes; returns
    /// a stop that interrupted that.
    fn step_out(&mut self, t: &Tracee) -> Result<Option<Stop>> {
        let Mode::Trampoline(tr) = &self.mode else {
            return Ok(None);
        };
        for _ in 0..MAX_STEP_OUT {
            if !tr.interior(self.rip, t.regs()?.rip) {
                return Ok(None);
            }
            t.step(0)?;
            match t.wait()? {
                Stop::Signal(libc::SIGTRAP) => {}
                other => return Ok(Some(other)),
            }
        }
        bail!(
            "task {} stayed inside the bytes patched at {:#x} for {MAX_STEP_OUT} steps",
            t.pid(),
            self.rip
        )
    }

    /// A fallback visit of `rip` (a ptrace stop): the quick check, then the full one.
    fn visit(&mut self, t: &Tracee) -> Result<Verdict> {
        self.stop_visits += 1;
        let words = regs::to_words(&t.regs()?);
        if !self.quick_match(t, &words) {
            return Ok(Verdict::Continue);
        }
        self.candidate(t)
    }

    /// The registers and watched words matched at `rip` (which `t` is at now): the full check,
    /// and the give-up rules.
    fn candidate(&mut self, t: &Tracee) -> Result<Verdict> {
        let diffs = self.full_match(t)?;
        if diffs.is_empty() {
            return Ok(Verdict::Reached);
        }
        let words = comparable(&regs::to_words(&t.regs()?));
        let mut excluded = self.point.excluded.clone();
        excluded.extend(self.scratch_range());
        let key = (words, memory_digest(t, &excluded)?);
        tracing::debug!("point {:#x}: near miss ({})", self.rip, diffs.join(", "));
        if self
            .nearest
            .as_ref()
            .map_or(true, |n| diffs.len() < n.len())
        {
            self.nearest = Some(diffs);
        }
        if self.candidates.contains(&key) {
            bail!(
                "the task came back to a state it had already been in without reaching the \
                 point, so it never will (a cycle); {}",
                self.report()
            );
        }
        self.candidates.push(key);
        if self.candidates.len() > MAX_NEAR_MISSES {
            bail!("more than {MAX_NEAR_MISSES} near misses; {}", self.report());
        }
        Ok(Verdict::Continue)
    }

    /// Registers (as compared) and watched words equal the point's.
    fn quick_match(&self, t: &Tracee, words: &[u64; REGS_WORDS]) -> bool {
        comparable(words) == comparable(&self.point.regs)
            && self.watch.iter().all(|w| {
                let mut b = [0u8; 8];
                let n = usize::from(w.size);
                t.read_mem_partial(w.addr, &mut b[..n]) == n
                    && u64::from_le_bytes(b) == w.value & size_mask(w.size)
            })
    }

    /// Reads the trampoline's visit counter, if it is mapped.
    fn read_visits(&mut self, t: &Tracee) {
        if let Mode::Trampoline(tr) = &self.mode {
            if tr.mapped {
                if let Ok(v) = t.read_u64(tr.base + DATA_PAGE + DATA_VISITS) {
                    self.trampoline_visits = v;
                }
            }
        }
    }
}

/// The trampoline's quick filter for `point` in stopped task `t` (at the start of its run
/// toward the point): the watched words, then the general registers, whose values differ now
/// from the point's, at most [`MAX_QUICK`]. What differs between the run's start and the point
/// is what the run changes (a loop's counters and accumulators, the memory it writes): at
/// most visits of the point's `rip` one of these differs too, and the filter leaves the
/// trampoline after a few flag-free instructions. Values equal now (constants, pointers) would
/// pass at nearly every visit, so they are left to the full filter.
fn quick_checks(t: &Tracee, point: &Point, watch: &[WatchedWord]) -> Result<Vec<Check>> {
    let now = regs::to_words(&t.regs()?);
    let mut checks: Vec<Check> = watch
        .iter()
        .filter(|w| {
            let mut b = [0u8; 8];
            let n = usize::from(w.size);
            t.read_mem_partial(w.addr, &mut b[..n]) != n
                || u64::from_le_bytes(b) != w.value & size_mask(w.size)
        })
        .map(|w| Check::Word(w.clone()))
        .collect();
    checks.extend(
        trampoline::QUICK_REGS
            .iter()
            .filter(|&&i| now[i] != point.regs[i])
            .map(|&i| Check::Reg(i)),
    );
    checks.truncate(MAX_QUICK);
    Ok(checks)
}

/// Low `size` bytes.
fn size_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

/// The fallback when no trampoline can be used: a hardware execute breakpoint at `rip` in the
/// first free slot, else an `int3` byte there.
/// `maps` with the `reserved` ranges as mappings of their own (`[reserved]`), for choosing
/// where the scratch page goes.
fn with_reserved(maps: &[maps::MapEntry], reserved: &[(u64, u64)]) -> Vec<maps::MapEntry> {
    let mut all = maps.to_vec();
    all.extend(reserved.iter().map(|&(start, end)| maps::MapEntry {
        start,
        end,
        perms: "---p".into(),
        offset: 0,
        dev: "00:00".into(),
        inode: 0,
        name: "[reserved]".into(),
    }));
    all.sort_by_key(|m| m.start);
    all
}

fn fallback(t: &Tracee, rip: u64, avoid: &[(u64, u64)], free_slots: &[usize]) -> Result<Mode> {
    if let Some(&slot) = free_slots.first() {
        return Ok(Mode::Breakpoint { slot });
    }
    if avoid.iter().any(|&(s, e)| rip >= s && rip < e) {
        bail!(
            "cannot watch the point {rip:#x}: no free debug register and a breakpoint of the \
             debugger there"
        );
    }
    let mut b = [0u8; 1];
    t.read_mem(rip, &mut b)
        .context("reading the code at the point")?;
    Ok(Mode::Int3 { original: b[0] })
}

/// Whether the instructions covering `[rip, rip + 5)` in `t` could be moved into a trampoline
/// (none is a `call`, a syscall, a trap, ...), so a point at `rip` would be found at native speed
/// rather than at a ptrace stop per visit. The recorder steps a little further when not.
pub fn patchable(t: &Tracee, rip: u64) -> bool {
    let mut bytes = [0u8; 32];
    let n = t.read_mem_partial(rip, &mut bytes);
    let mut decoder = Decoder::with_ip(64, &bytes[..n], rip, DecoderOptions::NONE);
    let mut covered = 0usize;
    while covered < JMP_LEN {
        if !decoder.can_decode() {
            return false;
        }
        let insn = decoder.decode();
        if insn.is_invalid() || unmovable(&insn).is_some() {
            return false;
        }
        covered += insn.len();
    }
    true
}

/// DR7 bits of slot `i`: its enable bits and its R/W and LEN fields.
fn slot_bits(i: usize) -> u64 {
    (0b11 << (2 * i)) | (0xf << (16 + 4 * i))
}

/// Sets an instruction breakpoint at each `(slot, address)`, leaving the other slots alone.
fn set_exec_slots(t: &Tracee, slots: &[(usize, u64)]) -> Result<()> {
    if slots.is_empty() {
        return Ok(());
    }
    let mut dr7 = t.debug_reg(7)?;
    for &(i, _) in slots {
        dr7 &= !slot_bits(i);
    }
    t.set_debug_reg(7, dr7)?;
    for &(i, addr) in slots {
        t.set_debug_reg(i, addr)?;
        // Local enable; R/W 00 (execute) and LEN 00 (one byte).
        dr7 |= 1 << (2 * i);
    }
    t.set_debug_reg(7, dr7)
}

/// Disables `slots`, leaving the others alone.
fn clear_slots(t: &Tracee, slots: impl IntoIterator<Item = usize>) -> Result<()> {
    let dr7 = t.debug_reg(7)?;
    let cleared = slots.into_iter().fold(dr7, |v, i| v & !slot_bits(i));
    if cleared != dr7 {
        t.set_debug_reg(7, cleared)?;
    }
    Ok(())
}
