//! The recorder's side of the fast path (the in-process library, see `../syscallbuf` and the
//! README's "The fast path"): which slot each thread has, which syscall sites are patched and
//! where their stubs are, per address space; and the counts `deja info` reports.

use std::collections::HashMap;

use syscallbuf::abi;
use trace_format::SyscallCounts;
use tracee::patch::{Refusal, SitePlan};

/// What became of a syscall site of a buffered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Patched: calls there go through the library.
    Patched,
    /// Not safe to patch: calls there stay on the ptrace path.
    Refused,
}

/// One address space's fast-path state.
#[derive(Debug, Clone, Default)]
pub struct Space {
    /// Slots in use (bit `i` for slot `i`; slot 0 is never a thread's own).
    slots: u64,
    /// Pages of stubs: (address, bytes used).
    pub stub_pages: Vec<(u64, u64)>,
    /// Syscall sites decided, by the address of their `syscall` instruction.
    pub sites: HashMap<u64, Site>,
    /// Function bounds found, by syscall site.
    pub functions: HashMap<u64, Option<(u64, u64)>>,
    /// The files of the library's `FileTable` in this address space, by index: what its
    /// buffered `mmap`s may map.
    pub files: Vec<(trace_format::FileId, trace_format::FileRef)>,
    /// The version of the executable the address space runs (from its exec).
    pub exe: Option<crate::site_cache::ExeKey>,
}

impl Space {
    /// A fresh address space whose first thread has slot 1.
    pub fn new() -> Space {
        Space {
            slots: 0b11,
            ..Space::default()
        }
    }

    /// Takes a free slot for a new thread; slot 0 (disabled) when none is left.
    pub fn take_slot(&mut self) -> u64 {
        match (1..abi::MAX_SLOTS).find(|i| self.slots & (1 << i) == 0) {
            Some(i) => {
                self.slots |= 1 << i;
                abi::slot_addr(i)
            }
            None => abi::slot_addr(0),
        }
    }

    /// Gives a thread's slot back.
    pub fn release_slot(&mut self, slot: u64) {
        let i = (slot.wrapping_sub(abi::SLOTS_BASE)) / abi::SLOT_SIZE;
        if i > 0 && i < abi::MAX_SLOTS {
            self.slots &= !(1 << i);
        }
    }

    /// The copy a `fork` child gets: the same stubs and patches; only the forking thread's
    /// slot is in use.
    pub fn forked(&self, slot: u64) -> Space {
        let mut child = Space {
            slots: 1,
            ..self.clone()
        };
        let i = (slot.wrapping_sub(abi::SLOTS_BASE)) / abi::SLOT_SIZE;
        if i < abi::MAX_SLOTS {
            child.slots |= 1 << i;
        }
        child
    }

    /// Whether `rip` is in the library or one of this space's stubs: code of deja's, where no
    /// point is taken.
    pub fn owns_code(&self, rip: u64) -> bool {
        tracee::fastpath::in_library(rip)
            || self
                .stub_pages
                .iter()
                .any(|&(p, _)| (p..p + tracee::fastpath::STUB_PAGE).contains(&rip))
    }
}

/// The recorder's fast-path state.
#[derive(Debug, Default)]
pub struct FastPath {
    /// The fast path is on (`deja rec` without `-n`).
    pub enabled: bool,
    /// Per address space (keyed like `Task::mm`).
    pub spaces: HashMap<i32, Space>,
    /// What `deja info` reports.
    pub counts: SyscallCounts,
    /// Function bounds around syscall sites in mapped files, by (device, inode, file offset of
    /// the site), as (bytes before the site, bytes after it); `None`: no usable bounds.
    pub functions: HashMap<(String, u64, u64), Option<(u64, u64)>>,
    /// Plans made so far, by their inputs: `tracee::patch::plan` is a pure function of the
    /// function's start and bytes, the site, the number, the stub's address and the hook
    /// pointer's, and the programs a `make` runs patch the same libc sites at the same
    /// addresses again and again.
    pub plans: HashMap<PlanInputs, Result<SitePlan, Refusal>>,
    /// The memory map last read for finding a function around a syscall site: the address
    /// space, the stamp then (the trace's event count less [`Self::harmless_events`]), and
    /// the map. Used again for another site while the stamp is the same: the stamp moves with
    /// every event that may go with a change of a memory map (any traced syscall, exec, clone,
    /// signal, a buffered `munmap`, `mprotect` or `brk`, a new stub page), and no task changes
    /// a map without one (the recorder runs one task at a time and drains every task's
    /// buffered calls at its stops). A new stub page's room is looked for in a map read anew.
    pub maps: Option<(i32, u64, Vec<tracee::maps::MapEntry>)>,
    /// Events pushed that cannot have changed any memory map: [`Patch`] events that mapped no
    /// new stub page, and `Buffered` events of no call that maps, unmaps or changes memory
    /// (see [`changes_maps`]).
    ///
    /// [`Patch`]: trace_format::Event::Patch
    pub harmless_events: u64,
    /// The syscall sites patched so far in each mapped file, by (device, inode), to patch
    /// ahead in the next processes that map the file (see `Session::patch_ahead`).
    pub known: HashMap<(String, u64), Vec<KnownSite>>,
    /// The version of each file in `known` (for the site cache).
    pub versions: HashMap<(String, u64), crate::site_cache::FileVersion>,
    /// Per executable, the system files its processes mapped, in earlier recordings and in
    /// this one (kept in the site cache; see `Session::store_ahead`).
    pub mapped_by_exe: crate::site_cache::MappedByExe,
    /// Sites patched in earlier recordings, not taken into `known` yet (see `site_cache`).
    pub cached: crate::site_cache::Cached,
}

/// A syscall site patched in a mapped file.
#[derive(Debug, Clone)]
pub struct KnownSite {
    /// The file offset of its `syscall` instruction.
    pub offset: u64,
    /// The syscall number fixed there.
    pub nr: u64,
    /// The bytes of the function around it when it was patched.
    pub code: Vec<u8>,
    /// The function's bounds: bytes before the site, and after it.
    pub before: u64,
    /// (See `before`.)
    pub after: u64,
}

/// Whether a call of syscall `nr` may change a memory map (the calls the library buffers that
/// do are `munmap`, `mprotect` and `brk`; the others are listed in case it ever buffers them).
pub fn changes_maps(nr: u64) -> bool {
    [
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_pkey_mprotect,
        libc::SYS_brk,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_remap_file_pages,
        libc::SYS_shmat,
        libc::SYS_shmdt,
        libc::SYS_execve,
        libc::SYS_execveat,
    ]
    .contains(&(nr as i64))
}

/// The inputs of one `tracee::patch::plan` call.
pub type PlanInputs = (u64, Vec<u8>, u64, u64, u64, u64);

impl FastPath {
    /// The state of a recording with the fast path on or off.
    pub fn new(enabled: bool) -> FastPath {
        FastPath {
            enabled,
            counts: SyscallCounts {
                fast_path: enabled,
                ..SyscallCounts::default()
            },
            ..FastPath::default()
        }
    }

    /// Adds `site` to the sites known in file `key` (device, inode), unless one at its offset
    /// is known already; true if it was added.
    pub fn note_known(&mut self, key: &(String, u64), site: KnownSite) -> bool {
        let known = self.known.entry(key.clone()).or_default();
        if known.iter().any(|k| k.offset == site.offset) {
            return false;
        }
        known.push(site);
        true
    }

    /// Whether `rip` of a task in address space `mm` is in deja's own code.
    pub fn owns_code(&self, mm: i32, rip: u64) -> bool {
        self.spaces.get(&mm).is_some_and(|s| s.owns_code(rip))
    }
}
