//! Processes under gdb: the fork, vfork and exec events gdb asks for (`catch fork`, `catch
//! vfork`, `catch exec`, and following an exec to its new program), and what gdb does with a
//! fork's child, which deja does not debug (it debugs one process at a time).
//!
//! gdbstub knows fork and vfork stop replies but names the child with the parent's pid, knows
//! no exec event, and ends the session at any `D` (detach) packet, whose pid it ignores. So
//! the connection does this part of the protocol itself ([`ProcFilter`]):
//!
//! - It notes which events gdb offers in `qSupported` and adds `exec-events+` to the reply
//!   (gdbstub announces `fork-events+`, `vfork-events+` and `vforkdone-events+`).
//! - A fork stop names the child `p<child>.<child>`; an exec stop carries the new program's
//!   path (the trace's copy, so that gdb loads its symbols): the server hands the reply to
//!   [`ProcFilter::replace_next_reply`] and gdbstub's own stop reply is swapped for it.
//! - Packets for another process than the debugged one (after `Hg p<pid>.<tid>`: gdb
//!   removing its breakpoints from a fork's child before it detaches it) are answered here:
//!   the child has none of gdb's breakpoints (deja puts the program's bytes back in it), so
//!   breakpoint changes succeed; until the child is detached, register and memory reads show
//!   the parent's state with `rax` 0 (the child's at its fork); anything else fails.
//! - `D;<child>` (`detach-on-fork on`, following the parent) and `vKill` of another process
//!   are answered OK here: the child goes on replaying as recorded. `D;<parent>` right after a
//!   fork (`follow-fork-mode child`), or `Hg` of the child right after a vfork, goes to the
//!   server, which makes the child the debugged process. gdb resuming without detaching the
//!   child (`detach-on-fork off`) is noted: the server tells gdb's console that deja cannot
//!   keep it (see [`ProcFilter::kept_child`]); detaching the debugged process while gdb still
//!   counts such children is answered here too, so that the session lasts until gdb has
//!   detached them all.

use replayer::ProcEvents;

/// What the connection does with a packet from gdb.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// It goes to gdbstub.
    Pass,
    /// It is answered with this body.
    Answer(Vec<u8>),
    /// gdb detaches the parent after a fork to follow the child (`follow-fork-mode child`):
    /// the server answers once it switched (or refused to).
    FollowChild(u64),
    /// gdb turns to the child after a vfork to follow it: the server switches, and the
    /// packet (`Hg`) then goes to gdbstub.
    FollowChildThenPass(u64),
}

/// A change to make to the next packet gdbstub sends.
#[derive(Debug)]
enum Rewrite {
    /// Replace its body.
    Replace(Vec<u8>),
    /// Add this to its body.
    Append(Vec<u8>),
    /// It is a register read (`g`): make its first register (`rax`) zero.
    ZeroRax,
}

/// The connection's part of following processes (see the module's documentation).
#[derive(Debug, Default)]
pub struct ProcFilter {
    /// The debugged process (recorded pid), as the server last said.
    debugged: u64,
    /// The events gdb offered in `qSupported`.
    offered: ProcEvents,
    /// gdb offered `multiprocess+` (thread ids are `p<pid>.<tid>`).
    multiprocess: bool,
    /// gdb's general thread (`Hg`) is in another process than the debugged one (a fork's
    /// child).
    foreign: bool,
    /// The child of the fork reported last, until gdb detaches it or resumes.
    reported_child: Option<u64>,
    /// The children gdb was told about and has not detached: it still counts them as its
    /// inferiors (`detach-on-fork off`), and detaches them after the debugged process.
    known: std::collections::BTreeSet<u64>,
    /// That fork was a `vfork`.
    reported_vfork: bool,
    /// A child gdb resumed without detaching (`detach-on-fork off`), to tell it about.
    kept: Option<u64>,
    /// The change to make to the next packet sent.
    rewrite: Option<Rewrite>,
}

impl ProcFilter {
    /// Notes the debugged process.
    pub fn set_debugged(&mut self, pid: u64) {
        self.debugged = pid;
    }

    /// The process events gdb asked for.
    pub fn events(&self) -> ProcEvents {
        self.offered
    }

    /// Notes that the fork (or `vfork`) making `child` is reported.
    pub fn fork_reported(&mut self, child: u64, vfork: bool) {
        self.reported_child = Some(child);
        self.reported_vfork = vfork;
        self.known.insert(child);
    }

    /// The child gdb kept attached though deja cannot debug it (`detach-on-fork off`), once.
    pub fn kept_child(&mut self) -> Option<u64> {
        self.kept.take()
    }

    /// Makes the next packet gdbstub sends (its stop reply) `body` instead.
    pub fn replace_next_reply(&mut self, body: Vec<u8>) {
        self.rewrite = Some(Rewrite::Replace(body));
    }

    /// What to do with packet `body` from gdb.
    pub fn incoming(&mut self, body: &[u8]) -> Filtered {
        if let Some(features) = body.strip_prefix(b"qSupported") {
            let offers = |f: &[u8]| features.split(|&b| b == b';' || b == b':').any(|x| x == f);
            self.offered = ProcEvents {
                fork: offers(b"fork-events+"),
                vfork: offers(b"vfork-events+"),
                exec: offers(b"exec-events+"),
            };
            self.multiprocess = offers(b"multiprocess+");
            if self.offered.exec {
                self.rewrite = Some(Rewrite::Append(b";exec-events+".to_vec()));
            }
            return Filtered::Pass;
        }
        if let Some(thread) = body.strip_prefix(b"Hg") {
            let pid = thread_pid(thread);
            if self.reported_vfork && pid.is_some() && pid == self.reported_child {
                // After a vfork, gdb turns to the child only to follow it (it detaches the
                // parent once the child exec'd or ended).
                self.reported_child = None;
                let child = pid.unwrap_or_default();
                self.known.remove(&child);
                return Filtered::FollowChildThenPass(child);
            }
            self.foreign = match pid {
                Some(pid) => pid != self.debugged,
                None => false,
            };
            return if self.foreign {
                Filtered::Answer(b"OK".to_vec())
            } else {
                Filtered::Pass
            };
        }
        if let Some(pid) = body.strip_prefix(b"D;").and_then(hex) {
            if pid == self.debugged {
                // (gdb follows a vfork's child without detaching the parent first.)
                return match self.reported_child.take() {
                    Some(child) if !self.reported_vfork => {
                        self.known.remove(&child);
                        Filtered::FollowChild(child)
                    }
                    // gdb detaches the children it kept next: the session goes on until
                    // it has (gdbstub would end it now).
                    _ if !self.known.is_empty() => Filtered::Answer(b"OK".to_vec()),
                    _ => Filtered::Pass,
                };
            }
            if self.reported_child == Some(pid) {
                self.reported_child = None;
            }
            self.known.remove(&pid);
            return Filtered::Answer(b"OK".to_vec());
        }
        if let Some(pid) = body.strip_prefix(b"vKill;").and_then(hex) {
            if pid != self.debugged {
                return Filtered::Answer(b"OK".to_vec());
            }
        }
        if is_resume(body) {
            self.foreign = false;
            if let Some(child) = self.reported_child.take() {
                self.kept = Some(child);
            }
            return Filtered::Pass;
        }
        if self.foreign {
            // Right after the fork (the child not detached), the child is its parent at the
            // fork with the call's result 0, as it has not run yet: what gdb reads of it is
            // the parent's. gdb keeping it (`detach-on-fork off`) inserts its breakpoints
            // there: accepted, never hit (the child is not debugged; deja says so).
            let at_fork = self.reported_child.is_some();
            return match body.first() {
                // Breakpoints in the child: none of gdb's are there to remove, and one
                // inserted would never be hit (the child is not debugged).
                Some(b'z' | b'Z') => Filtered::Answer(b"OK".to_vec()),
                Some(b'g') if at_fork => {
                    self.rewrite = Some(Rewrite::ZeroRax);
                    Filtered::Pass
                }
                Some(b'm') if at_fork => Filtered::Pass,
                Some(b'm' | b'M' | b'X' | b'g' | b'G' | b'p' | b'P') => {
                    Filtered::Answer(b"E01".to_vec())
                }
                _ => Filtered::Pass,
            };
        }
        Filtered::Pass
    }

    /// The packet gdbstub sends (`$body#cs`, whole), changed as asked.
    pub fn outgoing(&mut self, packet: Vec<u8>) -> Vec<u8> {
        let n = packet.len();
        if self.rewrite.is_none() || n < 4 || packet[0] != b'$' || packet[n - 3] != b'#' {
            return packet;
        }
        let body = &packet[1..n - 3];
        let body = match self.rewrite.take() {
            Some(Rewrite::Replace(new)) => new,
            Some(Rewrite::Append(more)) => [body, &more[..]].concat(),
            Some(Rewrite::ZeroRax) => {
                let mut regs = run_length_decoded(body);
                if regs.len() >= 16 && regs[..16].iter().all(u8::is_ascii_hexdigit) {
                    regs[..16].fill(b'0');
                }
                regs
            }
            None => return packet,
        };
        crate::tls_packet::frame(&body)
    }

    /// The stop reply for `halt` if it is a process event: gdb's `fork`, `vfork` or `exec`
    /// stop (the server reports it through [`Self::replace_next_reply`]).
    pub fn stop_reply(
        &self,
        halt: replayer::Halt,
        pid: u64,
        exe: &std::path::Path,
    ) -> Option<Vec<u8>> {
        let thread = |pid: u64, tid: u64| {
            if self.multiprocess {
                format!("p{pid:x}.{tid:x}")
            } else {
                format!("{tid:x}")
            }
        };
        let reply = match halt {
            replayer::Halt::Fork { tid, child, vfork } => format!(
                "T05thread:{};{}:{};",
                thread(pid, tid as u64),
                if vfork { "vfork" } else { "fork" },
                thread(child as u64, child as u64)
            ),
            replayer::Halt::Exec(tid) => {
                let path: String = exe
                    .as_os_str()
                    .as_encoded_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("T05thread:{};exec:{path};", thread(pid, tid as u64))
            }
            _ => return None,
        };
        Some(reply.into_bytes())
    }
}

/// The pid of thread id `p<pid>.<tid>` (hex); `None` for a plain thread id, or for all or any
/// process (`-1`, `0`).
fn thread_pid(thread: &[u8]) -> Option<u64> {
    let rest = thread.strip_prefix(b"p")?;
    let pid = rest.split(|&b| b == b'.').next()?;
    hex(pid).filter(|&p| p != 0)
}

/// A packet body without its run-length encoding (`c*n`: `c` and `n - 29` more of it).
fn run_length_decoded(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter().copied();
    while let Some(b) = bytes.next() {
        match (b, out.last().copied()) {
            (b'*', Some(prev)) => {
                let n = bytes.next().map_or(0, |c| c.saturating_sub(29));
                out.extend(std::iter::repeat(prev).take(n as usize));
            }
            _ => out.push(b),
        }
    }
    out
}

/// A hex number.
fn hex(s: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// Whether packet `body` resumes the program.
fn is_resume(body: &[u8]) -> bool {
    body.starts_with(b"vCont;")
        || matches!(body.first(), Some(b'c' | b's' | b'C' | b'S'))
        || body == b"bc"
        || body == b"bs"
}

/// gdb's message when it kept a fork's child (`detach-on-fork off`).
pub fn kept_child_message(child: u64) -> String {
    format!(
        "deja: cannot keep process {child} under gdb (detach-on-fork off): deja debugs one \
         process at a time, and {child} replays on as recorded, not stopped; use `set \
         follow-fork-mode child` to follow it instead, or debug it alone with `deja replay -p \
         {child}` (or -f {child}, from its fork)\n"
    )
}

/// The server's part: before a stop is reported, what the connection must know and say.
pub(crate) fn before_stop(
    target: &crate::target::ReplayTarget,
    conn: &mut crate::tls_packet::GdbConnection,
    halt: replayer::Halt,
) -> std::io::Result<()> {
    if let Some(child) = conn.procs.kept_child() {
        conn.send_console(&kept_child_message(child))?;
    }
    let replay = target.replay_ref();
    let pid = replay.process() as u64;
    if let Some(reply) = conn.procs.stop_reply(halt, pid, replay.exe()) {
        if let replayer::Halt::Fork { child, vfork, .. } = halt {
            conn.procs.fork_reported(child as u64, vfork);
        }
        conn.procs.replace_next_reply(reply);
    }
    Ok(())
}

/// gdb follows the child of the fork reported last (`follow-fork-mode child`): it detached
/// the parent (after a fork) or turned to the child (after a vfork). The child becomes the
/// debugged process, at its first instruction (see `Timeline::switch_to`), and gdb hears OK;
/// if that fails, gdb hears an error and deja's terminal why.
/// With `reply` false, the packet that asked goes on to gdbstub, which answers it.
pub(crate) fn follow_child(
    target: &mut crate::target::ReplayTarget,
    conn: &mut crate::tls_packet::GdbConnection,
    child: u64,
    reply: bool,
) -> anyhow::Result<()> {
    let answer: &[u8] = match target.timeline().switch_to(child as trace_format::Tid) {
        Ok(()) => {
            conn.procs.set_debugged(child);
            b"OK"
        }
        Err(e) => {
            eprintln!("deja: cannot follow process {child}: {e:#}");
            b"E01"
        }
    };
    if reply {
        conn.send_reply(answer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detaching_the_child_is_answered_here() {
        let mut f = ProcFilter::default();
        f.set_debugged(0x10);
        f.fork_reported(0x11, false);
        assert_eq!(f.incoming(b"Hgp11.11"), Filtered::Answer(b"OK".to_vec()));
        assert_eq!(f.incoming(b"z0,401000,1"), Filtered::Answer(b"OK".to_vec()));
        // At its fork the child is its parent (gdbstub answers with the parent's state).
        assert_eq!(f.incoming(b"m401000,4"), Filtered::Pass);
        assert_eq!(f.incoming(b"D;11"), Filtered::Answer(b"OK".to_vec()));
        // Detached, it is not there to look at any more.
        assert_eq!(f.incoming(b"m401000,4"), Filtered::Answer(b"E01".to_vec()));
        assert_eq!(f.incoming(b"Hgp10.10"), Filtered::Pass);
        assert_eq!(f.incoming(b"z0,401000,1"), Filtered::Pass);
        assert_eq!(f.incoming(b"vCont;c"), Filtered::Pass);
        assert_eq!(f.kept_child(), None);
    }

    #[test]
    fn following_the_child_and_keeping_it_are_noted() {
        let mut f = ProcFilter::default();
        f.set_debugged(0x10);
        f.fork_reported(0x11, false);
        assert_eq!(f.incoming(b"D;10"), Filtered::FollowChild(0x11));
        assert_eq!(f.incoming(b"D;10"), Filtered::Pass, "a plain detach");
        f.fork_reported(0x12, false);
        assert_eq!(f.incoming(b"vCont;c:p10.-1"), Filtered::Pass);
        assert_eq!(f.kept_child(), Some(0x12));
        f.fork_reported(0x13, true);
        assert_eq!(f.incoming(b"Hgp13.13"), Filtered::FollowChildThenPass(0x13));
    }

    #[test]
    fn exec_events_are_announced_when_offered() {
        let mut f = ProcFilter::default();
        assert_eq!(
            f.incoming(b"qSupported:multiprocess+;fork-events+;exec-events+"),
            Filtered::Pass
        );
        assert!(f.events().fork && f.events().exec && !f.events().vfork);
        let sent = f.outgoing(b"$PacketSize=1000;fork-events+#00".to_vec());
        let body = b"PacketSize=1000;fork-events+;exec-events+";
        assert_eq!(sent, crate::tls_packet::frame(body));
        // Once only.
        assert_eq!(f.outgoing(b"$OK#9a".to_vec()), b"$OK#9a");
        let reply = f
            .stop_reply(
                replayer::Halt::Fork {
                    tid: 16,
                    child: 17,
                    vfork: false,
                },
                16,
                std::path::Path::new("/x"),
            )
            .unwrap();
        assert_eq!(reply, b"T05thread:p10.10;fork:p11.11;");
    }

    #[test]
    fn a_register_read_of_the_child_at_its_fork_shows_the_call_returning_zero() {
        let mut f = ProcFilter::default();
        f.set_debugged(0x10);
        f.fork_reported(0x11, false);
        assert_eq!(f.incoming(b"Hgp11.11"), Filtered::Answer(b"OK".to_vec()));
        assert_eq!(f.incoming(b"g"), Filtered::Pass);
        // rax = 0x11 (the parent's fork result), then `0*"` (0 and 5 more) and a register.
        let sent = f.outgoing(b"$1100000000000000*\"ab#00".to_vec());
        assert_eq!(sent, crate::tls_packet::frame(b"000000000000000000000ab"));
    }
}
