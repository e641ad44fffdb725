//! Conditional breakpoints evaluated by the server: gdb sends a breakpoint's condition as an
//! agent expression with the breakpoint (`Z0,addr,kind;Xlen,bytes…`) once the server
//! announces `ConditionalBreakpoints+`, and the replay then halts there only when one of the
//! conditions holds, without a round trip to gdb for each hit where none does.
//!
//! gdbstub 0.7.10 parses these packets but drops the conditions (its `BytecodeBreakpoint` is
//! not plumbed to targets) and does not announce the feature. So the connection
//! ([`crate::tls_packet::GdbConnection`]) takes the conditions out of `Z0`/`Z1` packets and
//! hands gdbstub the plain packet, and adds `;ConditionalBreakpoints+` to gdbstub's reply to
//! `qSupported` (as `crate::xfer` adds siginfo); the server keeps the conditions here, and the replay asks [`Conditions::holds`]
//! at each breakpoint hit (see `replayer::DebugReplay::set_breakpoint_filter`). gdb evaluates
//! a condition again where the server reports a hit, so reporting one too many (an error in
//! the expression, a breakpoint the server cannot map to its address) costs time, never a
//! wrong stop.

use std::collections::HashMap;

use replayer::DebugReplay;
use trace_format::Tid;

use crate::agent::{self, AxError, Machine};
use crate::arch::{RegId, Registers};

/// What the server announces in its `qSupported` reply for conditions.
const FEATURE: &[u8] = b";ConditionalBreakpoints+";

/// A breakpoint packet's conditions, taken out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakpointConditions {
    /// The breakpoint's address.
    pub addr: u64,
    /// Its conditions' bytecode (it is hit when any holds); none: it always is. An error if
    /// they could not be parsed (the breakpoint is then unconditional here).
    pub conds: Result<Vec<Vec<u8>>, String>,
}

/// A `Z0` or `Z1` packet's body split: its conditions, and the body without them (for
/// gdbstub); `None` for any other packet.
pub fn split_breakpoint(body: &[u8]) -> Option<(BreakpointConditions, Vec<u8>)> {
    if !(body.starts_with(b"Z0,") || body.starts_with(b"Z1,")) {
        return None;
    }
    let (plain, rest) = match body.iter().position(|&b| b == b';') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let addr = std::str::from_utf8(&plain[3..])
        .ok()?
        .split(',')
        .next()
        .and_then(|a| u64::from_str_radix(a, 16).ok())?;
    let conds = match rest {
        None => Ok(Vec::new()),
        Some(rest) => parse_cond_list(rest),
    };
    Some((BreakpointConditions { addr, conds }, plain.to_vec()))
}

/// Parses `Xlen,hex…` conditions, one after the other with nothing between (as gdb's
/// `remote_add_target_side_condition` writes them), up to an optional `;cmds:…` part, which
/// is ignored (the server does not announce breakpoint commands).
fn parse_cond_list(mut rest: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut conds = Vec::new();
    while let Some(after) = rest.strip_prefix(b"X") {
        let comma = after
            .iter()
            .position(|&b| b == b',')
            .ok_or("a condition without a length")?;
        let len = std::str::from_utf8(&after[..comma])
            .ok()
            .and_then(|l| usize::from_str_radix(l, 16).ok())
            .ok_or("a condition's length is not hex")?;
        let hex = after
            .get(comma + 1..comma + 1 + 2 * len)
            .ok_or("a condition shorter than its length")?;
        let code = hex
            .chunks(2)
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or("a condition's bytecode is not hex")?;
        conds.push(code);
        rest = &after[comma + 1 + 2 * len..];
    }
    if !(rest.is_empty() || rest.starts_with(b";cmds") || rest.starts_with(b"cmds")) {
        return Err(format!(
            "unexpected `{}` after the conditions",
            String::from_utf8_lossy(rest)
        ));
    }
    Ok(conds)
}

/// `reply` with `;ConditionalBreakpoints+` at the end of its body if it is gdbstub's reply to
/// `qSupported` (a framed packet `$PacketSize=…#cs`, the only reply that starts so); `None`
/// for any other.
pub fn announce_in_supported(reply: &[u8]) -> Option<Vec<u8>> {
    let inner = reply.strip_prefix(b"$")?;
    if !inner.starts_with(b"PacketSize=") {
        return None;
    }
    let hash = inner.len().checked_sub(3)?;
    if inner.get(hash) != Some(&b'#') {
        return None;
    }
    let mut body = inner[..hash].to_vec();
    body.extend_from_slice(FEATURE);
    Some(crate::tls_packet::frame(&body))
}

/// The conditions of the breakpoints gdb set, by address.
#[derive(Default)]
pub struct Conditions {
    at: HashMap<u64, Vec<Vec<u8>>>,
}

impl Conditions {
    /// Sets (or, with none, clears) the conditions of the breakpoint at `c.addr`, as gdb
    /// sent them with it (gdb sends a breakpoint again when its conditions change).
    pub fn set(&mut self, c: BreakpointConditions) {
        match c.conds {
            Ok(conds) if !conds.is_empty() => {
                self.at.insert(c.addr, conds);
            }
            Ok(_) => {
                self.at.remove(&c.addr);
            }
            Err(why) => {
                eprintln!(
                    "deja: the condition gdb sent for the breakpoint at {:#x} cannot be read \
                     ({why}); gdb evaluates it instead",
                    c.addr
                );
                self.at.remove(&c.addr);
            }
        }
    }

    /// Forgets the conditions of the breakpoint at `addr` (gdb removed it).
    pub fn remove(&mut self, addr: u64) {
        self.at.remove(&addr);
    }

    /// Forgets every condition.
    pub fn clear(&mut self) {
        self.at.clear();
    }

    /// Whether task `tid` of `replay`, halted at a breakpoint, should stop there: it has no
    /// condition, or one of them holds, or one cannot be evaluated (gdb then decides).
    pub fn holds(&self, replay: &DebugReplay, tid: Tid) -> bool {
        if self.at.is_empty() {
            return true;
        }
        let Ok(regs) = replay.regs(tid) else {
            return true;
        };
        let Some(conds) = self.at.get(&regs.rip) else {
            return true;
        };
        let mut m = ReplayMachine {
            replay,
            tid,
            gpr: regs,
            all: None,
        };
        conds.iter().any(|code| match agent::eval(code, &mut m) {
            Ok(v) => v != 0,
            Err(e) => {
                tracing::debug!(addr = regs.rip, "a breakpoint condition failed: {e}");
                true
            }
        })
    }
}

/// A halted task of a replay, as an agent expression sees it.
struct ReplayMachine<'a> {
    replay: &'a DebugReplay,
    tid: Tid,
    /// Its general registers.
    gpr: tracee::Regs,
    /// All its registers, read when an expression first asks for one that is not general.
    all: Option<Registers>,
}

impl Machine for ReplayMachine<'_> {
    fn reg(&mut self, n: u16) -> Result<u64, AxError> {
        let id = RegId::from_gdb_number(usize::from(n)).ok_or(AxError::Register(n))?;
        let regs = match (&self.all, id) {
            (Some(all), _) => *all,
            (None, RegId::Gpr(_) | RegId::Rip | RegId::Eflags | RegId::Segment(_)) => Registers {
                gpr: self.gpr,
                ..Registers::default()
            },
            (None, _) => {
                let fp = self
                    .replay
                    .thread(self.tid)
                    .and_then(|t| t.fp_regs())
                    .map_err(|_| AxError::Register(n))?;
                let all = Registers {
                    gpr: self.gpr,
                    fp,
                    ..Registers::default()
                };
                self.all = Some(all);
                all
            }
        };
        let mut buf = [0u8; 64];
        let size = regs.read_reg(id, &mut buf).ok_or(AxError::Register(n))?;
        let mut low = [0u8; 8];
        let k = size.min(8);
        low[..k].copy_from_slice(&buf[..k]);
        Ok(u64::from_le_bytes(low))
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), AxError> {
        if self.replay.read_mem(addr, buf) == buf.len() {
            Ok(())
        } else {
            Err(AxError::Memory(addr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_conditions_out_of_breakpoint_packets() {
        // `i == 7` with i at rbp-20, as gdb sends it (two conditions, then commands).
        let body = b"Z0,401136,1;X3,260006X2,2227;cmds:0,X1,27";
        let (c, plain) = split_breakpoint(body).expect("a breakpoint packet");
        assert_eq!(plain, b"Z0,401136,1");
        assert_eq!(c.addr, 0x401136);
        assert_eq!(c.conds, Ok(vec![vec![0x26, 0x00, 0x06], vec![0x22, 0x27]]));
        let (c, plain) = split_breakpoint(b"Z1,7f00,1").expect("a hw breakpoint packet");
        assert_eq!((c.addr, plain.as_slice()), (0x7f00, &b"Z1,7f00,1"[..]));
        assert_eq!(c.conds, Ok(vec![]));
        assert!(split_breakpoint(b"Z2,7f00,4").is_none());
        assert!(split_breakpoint(b"z0,7f00,1").is_none());
        assert!(split_breakpoint(b"Z0,zz,1").is_none());
    }

    #[test]
    fn damaged_conditions_are_errors() {
        for bad in [
            &b"Z0,10,1;X3,2600"[..],
            b"Z0,10,1;Xq,26",
            b"Z0,10,1;X1,zz",
            b"Z0,10,1;X1",
            b"Z0,10,1;X1,27junk",
        ] {
            let (c, plain) = split_breakpoint(bad).expect("still a breakpoint packet");
            assert!(c.conds.is_err(), "{}", String::from_utf8_lossy(bad));
            assert_eq!(plain, b"Z0,10,1");
        }
    }

    #[test]
    fn announces_conditional_breakpoints() {
        let reply = crate::tls_packet::frame(b"PacketSize=1000;vContSupported+");
        let amended = announce_in_supported(&reply).expect("a framed reply");
        assert_eq!(
            amended,
            crate::tls_packet::frame(b"PacketSize=1000;vContSupported+;ConditionalBreakpoints+")
        );
        assert!(announce_in_supported(b"+").is_none());
        assert!(announce_in_supported(b"$OK").is_none());
        assert!(announce_in_supported(&crate::tls_packet::frame(b"OK")).is_none());
    }

    #[test]
    fn a_table_sets_replaces_and_clears() {
        let mut t = Conditions::default();
        t.set(BreakpointConditions {
            addr: 0x10,
            conds: Ok(vec![vec![0x27]]),
        });
        assert_eq!(t.at.get(&0x10).map(Vec::len), Some(1));
        t.set(BreakpointConditions {
            addr: 0x10,
            conds: Ok(vec![]),
        });
        assert!(t.at.is_empty());
        t.set(BreakpointConditions {
            addr: 0x20,
            conds: Ok(vec![vec![0x27]]),
        });
        t.remove(0x20);
        assert!(t.at.is_empty());
    }
}
