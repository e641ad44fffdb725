//! The syscall sites the replay patched (the fast path's `Patch` events), per process, as a
//! debugger must see them: the program's original instructions in each patched window, and
//! where in its stub each displaced instruction was relocated.
//!
//! A patched window holds `jmp stub` and `int3` padding; the stub calls deja's library, runs
//! the instructions displaced from after the `syscall` (relocated, in the same order) and
//! jumps back to the window's end. A task at the stub's copy of a displaced instruction is in
//! exactly the state it would be at the original instruction (same registers, same memory),
//! so the debugger is shown the original address; resumed, it goes on from the copy.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic};
use syscallbuf::abi;
use trace_format::{PatchEvent, Tid};

/// One patched syscall site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Site {
    /// First byte of the window (the `syscall` instruction).
    pub window: u64,
    /// The window's original bytes.
    pub original: Vec<u8>,
    /// Where the stub is.
    pub stub_addr: u64,
    /// The stub's length.
    pub stub_len: u64,
    /// Each displaced instruction's copy in the stub → its original address; the stub's
    /// final `jmp` back → the window's end.
    pub copies: Vec<(u64, u64)>,
}

impl Site {
    /// Builds the site of a `Patch` event, decoding its stub.
    pub fn new(e: &PatchEvent) -> Site {
        Site {
            window: e.window,
            original: e.original.clone(),
            stub_addr: e.stub_addr,
            stub_len: e.stub.len() as u64,
            copies: copies(e.window, &e.original, e.stub_addr, &e.stub),
        }
    }

    /// One past the window's last byte.
    pub fn end(&self) -> u64 {
        self.window + self.original.len() as u64
    }

    /// Whether `addr` lies in the window.
    pub fn contains(&self, addr: u64) -> bool {
        (self.window..self.end()).contains(&addr)
    }

    /// Whether `addr` lies in the stub.
    pub fn in_stub(&self, addr: u64) -> bool {
        (self.stub_addr..self.stub_addr + self.stub_len).contains(&addr)
    }
}

/// Maps the stub's copies of the displaced instructions to their original addresses. The
/// stub is `lea rsp, [rsp-128]; call [hook]; lea rsp, [rsp+128]`, then the displaced
/// instructions in order (one copy each, maybe longer, e.g. a short branch made near), then
/// `jmp window_end` unless the last displaced one does not fall through.
fn copies(window: u64, original: &[u8], stub_addr: u64, stub: &[u8]) -> Vec<(u64, u64)> {
    let end = window + original.len() as u64;
    let decode = |bytes: &[u8], ip: u64| -> Vec<Instruction> {
        Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE)
            .into_iter()
            .take_while(|i| !i.is_invalid())
            .collect()
    };
    let Some(syscall) = decode(original, window).first().copied() else {
        return Vec::new();
    };
    if syscall.mnemonic() != Mnemonic::Syscall {
        return Vec::new();
    }
    let displaced = decode(&original[syscall.len()..], syscall.next_ip());
    let in_stub = decode(stub, stub_addr);
    let Some(moved) = in_stub.get(3..) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut back = true;
    for (copy, orig) in moved.iter().zip(&displaced) {
        if copy.mnemonic() != orig.mnemonic() || orig.next_ip() > end {
            return out;
        }
        out.push((copy.ip(), orig.ip()));
        if matches!(
            orig.flow_control(),
            FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::IndirectBranch
        ) {
            back = false;
            break;
        }
    }
    if back {
        if let Some(jmp) = moved.get(out.len()) {
            if jmp.mnemonic() == Mnemonic::Jmp && jmp.near_branch_target() == end {
                out.push((jmp.ip(), end));
            }
        }
    }
    out
}

/// The patched sites of each process (recorded pid): a fork's child inherits its parent's, an
/// exec drops them.
#[derive(Default, Clone)]
pub(crate) struct PatchedSites {
    by_process: HashMap<Tid, Rc<BTreeMap<u64, Site>>>,
}

impl PatchedSites {
    /// Notes the patch of event `e`, applied in process `rpid`.
    pub fn add(&mut self, rpid: Tid, e: &PatchEvent) {
        let sites = self.by_process.entry(rpid).or_default();
        Rc::make_mut(sites).insert(e.window, Site::new(e));
    }

    /// A fork: `child` starts with a copy of `parent`'s memory, patches included.
    pub fn fork(&mut self, parent: Tid, child: Tid) {
        match self.by_process.get(&parent).cloned() {
            Some(sites) => self.by_process.insert(child, sites),
            None => self.by_process.remove(&child),
        };
    }

    /// An exec (or the end) of process `rpid`: its patches are gone with its image.
    pub fn exec(&mut self, rpid: Tid) {
        self.by_process.remove(&rpid);
    }

    /// Takes process `rpid`'s sites out, to hand them to another tracer thread with the
    /// process (see `crate::parallel`).
    pub fn take(&mut self, rpid: Tid) -> Option<BTreeMap<u64, Site>> {
        self.by_process
            .remove(&rpid)
            .map(|s| Rc::try_unwrap(s).unwrap_or_else(|shared| (*shared).clone()))
    }

    /// Puts in process `rpid`'s sites, taken by [`PatchedSites::take`].
    pub fn put(&mut self, rpid: Tid, sites: Option<BTreeMap<u64, Site>>) {
        match sites {
            Some(s) => self.by_process.insert(rpid, Rc::new(s)),
            None => self.by_process.remove(&rpid),
        };
    }

    /// Whether process `rpid` has patched sites.
    pub fn any(&self, rpid: Tid) -> bool {
        self.by_process.get(&rpid).is_some_and(|s| !s.is_empty())
    }

    fn sites(&self, rpid: Tid) -> impl Iterator<Item = &Site> {
        self.by_process
            .get(&rpid)
            .into_iter()
            .flat_map(|s| s.values())
    }

    /// The site whose window contains `addr`, in process `rpid`.
    pub fn window_at(&self, rpid: Tid, addr: u64) -> Option<&Site> {
        let sites = self.by_process.get(&rpid)?;
        let (_, site) = sites.range(..=addr).next_back()?;
        site.contains(addr).then_some(site)
    }

    /// Replaces the patched bytes in `buf` (read at `addr` in process `rpid`) with the
    /// program's original ones.
    pub fn show_original(&self, rpid: Tid, addr: u64, buf: &mut [u8]) {
        let Some(sites) = self.by_process.get(&rpid) else {
            return;
        };
        let end = addr.saturating_add(buf.len() as u64);
        // Windows are a few instructions long: one starting 64 bytes before `addr` cannot
        // reach it.
        let from = addr.saturating_sub(64);
        for site in sites.range(from..end).map(|(_, s)| s) {
            for (i, &b) in site.original.iter().enumerate() {
                let at = site.window + i as u64;
                if (addr..end).contains(&at) {
                    buf[(at - addr) as usize] = b;
                }
            }
        }
    }

    /// The original address of the instruction whose copy is at `pc` in a stub of process
    /// `rpid` (the window's end for the stub's final jump back).
    pub fn original_of(&self, rpid: Tid, pc: u64) -> Option<u64> {
        self.sites(rpid)
            .filter(|s| s.in_stub(pc))
            .find_map(|s| s.copies.iter().find(|&&(c, _)| c == pc).map(|&(_, o)| o))
    }

    /// The stub copy of the displaced instruction at `addr`, strictly inside a window of
    /// process `rpid` (`None` if no instruction of the program starts there, or it is dead
    /// code the stub does not hold).
    pub fn copy_of(&self, rpid: Tid, addr: u64) -> Option<u64> {
        let site = self.window_at(rpid, addr)?;
        if addr == site.window {
            return None;
        }
        site.copies
            .iter()
            .find(|&&(_, o)| o == addr && o != site.end())
            .map(|&(c, _)| c)
    }

    /// Whether `pc` is in deja's code in process `rpid`: its in-process library (the whole
    /// fast-path region) or a stub.
    pub fn in_deja_code(&self, rpid: Tid, pc: u64) -> bool {
        (abi::LIB_BASE..abi::REGION_END).contains(&pc) || self.sites(rpid).any(|s| s.in_stub(pc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::code_asm::{eax, rax, CodeAssembler};

    const FUNC: u64 = 0x7f00_0000_1000;
    const STUB: u64 = 0x7f00_1000_0010;
    const HOOK_PTR: u64 = 0x7f00_1000_0000;

    /// glibc's `read` (single-threaded path): `xor eax, eax; syscall; cmp rax, -4096;
    /// ja error; ret`, patched as the recorder patches it. Returns the event and the
    /// function's bytes.
    fn read_patch() -> (PatchEvent, Vec<u8>) {
        let mut a = CodeAssembler::new(64).unwrap();
        let mut error = a.create_label();
        a.xor(eax, eax).unwrap();
        a.syscall().unwrap();
        a.cmp(rax, -4096).unwrap();
        a.ja(error).unwrap();
        a.ret().unwrap();
        a.set_label(&mut error).unwrap();
        a.mov(rax, -1i64).unwrap();
        a.ret().unwrap();
        let code = a.assemble(FUNC).unwrap();
        let plan = tracee::patch::plan(FUNC, &code, FUNC + 2, 0, STUB, HOOK_PTR).unwrap();
        let e = PatchEvent {
            tid: 1,
            nr: 0,
            site: FUNC + 4,
            window: plan.window_start,
            original: plan.original.clone(),
            patch: plan.patch.clone(),
            stub_addr: plan.stub_addr,
            stub: plan.stub.clone(),
            new_page: None,
        };
        (e, code)
    }

    #[test]
    fn maps_displaced_instructions_to_their_copies() {
        let (e, _) = read_patch();
        let site = Site::new(&e);
        // The window: syscall (2) + cmp rax, -4096 (6).
        assert_eq!(site.end(), FUNC + 10);
        let (copy, orig) = site.copies[0];
        assert_eq!(orig, FUNC + 4, "the cmp");
        assert!(site.in_stub(copy) && copy > STUB);
        assert_eq!(site.copies.len(), 2, "the cmp and the jump back");
        assert_eq!(site.copies[1].1, site.end());
        let mut sites = PatchedSites::default();
        sites.add(7, &e);
        assert_eq!(sites.original_of(7, copy), Some(FUNC + 4));
        assert_eq!(sites.original_of(7, site.copies[1].0), Some(FUNC + 10));
        assert_eq!(sites.original_of(7, STUB), None, "the call to the library");
        assert_eq!(sites.copy_of(7, FUNC + 4), Some(copy));
        assert_eq!(
            sites.copy_of(7, FUNC + 2),
            None,
            "the window's start is patched code"
        );
        assert_eq!(sites.copy_of(7, FUNC + 5), None, "inside the cmp");
        assert_eq!(sites.copy_of(8, FUNC + 4), None, "another process");
        assert!(sites.in_deja_code(7, STUB) && sites.in_deja_code(7, abi::LIB_BASE + 5));
        assert!(!sites.in_deja_code(7, FUNC + 4));
    }

    #[test]
    fn shows_the_original_bytes_in_windows() {
        let (e, code) = read_patch();
        let mut sites = PatchedSites::default();
        sites.add(7, &e);
        let mut patched = code.clone();
        patched[2..10].copy_from_slice(&e.patch);
        assert_ne!(patched, code);
        let mut buf = patched.clone();
        sites.show_original(7, FUNC, &mut buf);
        assert_eq!(buf, code);
        // A read starting inside the window.
        let mut buf = patched[5..7].to_vec();
        sites.show_original(7, FUNC + 5, &mut buf);
        assert_eq!(buf, code[5..7]);
        // Other processes, forks and execs.
        let mut buf = patched.clone();
        sites.show_original(8, FUNC, &mut buf);
        assert_eq!(buf, patched);
        sites.fork(7, 8);
        sites.show_original(8, FUNC, &mut buf);
        assert_eq!(buf, code);
        sites.exec(7);
        assert!(sites.window_at(7, FUNC + 2).is_none());
        assert!(sites.window_at(8, FUNC + 9).is_some());
    }
}
