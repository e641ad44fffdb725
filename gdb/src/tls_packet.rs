//! gdb's `qGetTLSAddr` packet, which gdbstub does not know: a connection that takes these
//! packets out of the byte stream before gdbstub sees them, so that the server can answer
//! them, and passes everything else through unchanged.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use anyhow::{bail, Context};

use crate::conditions::{announce_in_supported, split_breakpoint, BreakpointConditions};
use crate::procs::Filtered;

/// The packet gdb sends for the address of a thread-local variable.
const TLS_PACKET: &[u8] = b"qGetTLSAddr:";

/// The packet after which gdb and gdbstub stop acknowledging packets.
const NO_ACK_PACKET: &[u8] = b"QStartNoAckMode";

/// What gdb asks with `qGetTLSAddr:thread-id,offset,lm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsRequest {
    /// The thread whose copy of the variable gdb wants.
    pub thread: u64,
    /// The variable's offset in its module's TLS block.
    pub offset: u64,
    /// The address of the module's `struct link_map`.
    pub lm: u64,
}

/// The size of gdbstub's packet buffer, which it tells gdb as `PacketSize`: the longest
/// packet (`$`, body, `#`, checksum) the server takes. rr's size: gdb then reads and writes
/// memory in pieces this large (fewer round trips), and a `g` packet with the AVX-512
/// registers fits.
pub const PACKET_SIZE: usize = 100_000;

/// The most bytes one memory read (`m`) returns: its reply, two hex digits a byte, fits a
/// packet, and gdbstub reads it in one piece of its buffer.
pub const MAX_MEM_READ: u64 = 49_152;

/// gdb's interrupt byte (Ctrl-C).
const INTERRUPT: u8 = 0x03;

/// The error answer to a packet the server cannot take (`E16`: EINVAL, numbered as gdbstub
/// numbers errors).
const TOO_LONG: &[u8] = b"E16";

/// What comes from gdb next.
#[derive(Debug)]
pub enum Incoming {
    /// A byte for gdbstub.
    Byte(u8),
    /// A `qGetTLSAddr` packet (already acknowledged): answer it with
    /// [`GdbConnection::send_tls_reply`]. An error if its arguments make no sense.
    GetTlsAddr(anyhow::Result<TlsRequest>),
    /// The conditions of a breakpoint packet (`Z0`/`Z1`, see [`crate::conditions`]), for the
    /// server to keep before gdbstub reads the packet without them, which comes next.
    Conditions(BreakpointConditions),
    /// gdb follows a fork's child (`follow-fork-mode child`): switch to the child, then
    /// answer (`reply`: the packet, a detach of the parent, was acknowledged) or let gdbstub
    /// read the packet (a `Hg` naming the child after a vfork), which comes next.
    FollowChild {
        /// The child.
        child: u64,
        /// Whether the server answers the packet.
        reply: bool,
    },
    /// A `qXfer:siginfo:read` packet (already acknowledged) for the thread gdb last selected
    /// with `Hg` (`None`: any thread), reading `length` bytes at `offset`: answer it with
    /// [`GdbConnection::send_xfer_reply`]. An error if its arguments make no sense.
    SigInfo {
        thread: Option<u64>,
        range: anyhow::Result<(u64, usize)>,
    },
    /// Something gdb never sends (noise between packets, a damaged or oversized packet),
    /// dropped or already answered: nothing for gdbstub.
    Skipped,
}

/// The connection to gdb: gdbstub's [`Connection`](gdbstub::conn::Connection), except that
/// `qGetTLSAddr` packets are taken out of what gdbstub reads (see
/// [`GdbConnection::read_incoming`]).
///
/// It does not implement gdbstub's `ConnectionExt`: a byte-wise `read` has no way to hand the
/// taken packets to whoever answers them.
pub struct GdbConnection {
    stream: TcpStream,
    /// The rest of a packet read ahead, which gdbstub reads next.
    ahead: VecDeque<u8>,
    /// Whether `QStartNoAckMode` went to gdbstub: neither side acknowledges packets any more
    /// (deja's target keeps gdbstub's default of accepting it).
    no_ack: bool,
    /// The part of the protocol about processes (see `crate::procs`).
    pub procs: crate::procs::ProcFilter,
    /// The thread gdb last selected with `Hg` (`None`: any), which `qXfer:siginfo` reads.
    general_thread: Option<u64>,
    /// The packet gdbstub is writing, sent whole when it flushes (one write, not one a
    /// byte; and the `qSupported` reply gets deja's own features).
    out: Vec<u8>,
    /// Bytes read from gdb and not yet looked at (read as many as arrived at once, not one
    /// system call per byte), from `in_start` to `in_end`.
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Whether `inbuf` holds bytes, for [`GdbConnection::input_probe`].
    buffered: Rc<Cell<bool>>,
}

impl GdbConnection {
    /// Wraps gdb's connection.
    pub fn new(stream: TcpStream) -> Self {
        GdbConnection {
            stream,
            ahead: VecDeque::new(),
            no_ack: false,
            procs: Default::default(),
            general_thread: None,
            out: Vec::new(),
            inbuf: vec![0; PACKET_SIZE],
            in_start: 0,
            in_end: 0,
            buffered: Rc::new(Cell::new(false)),
        }
    }

    /// Reads what comes next from gdb, waiting for it. A packet is read whole when its `$`
    /// arrives: gdbstub then gets its bytes one by one, unless it is `qGetTLSAddr`, which
    /// this acknowledges (in ack mode) and returns for the server to answer. Acks, `-` and
    /// the interrupt byte go through as they come; gdb's ack of a `qGetTLSAddr` reply reaches
    /// gdbstub, which ignores acks (a `+` is `Packet::Ack`, handled as nothing to do).
    ///
    /// What gdb never sends is kept from gdbstub, whose parser would end the session on it,
    /// and never costs more than [`PACKET_SIZE`] bytes of memory: a byte between packets
    /// that starts none is dropped, a packet with a wrong checksum is refused with `-` (gdb
    /// sends it again), a packet longer than [`PACKET_SIZE`] (the size gdbstub tells gdb in
    /// `qSupported`) is read to its end without being kept and answered with an error, and a
    /// memory read (`m`) of more than [`MAX_MEM_READ`] bytes is cut to that length (the
    /// protocol lets a reply hold fewer bytes than asked). These come back as
    /// [`Incoming::Skipped`].
    pub fn read_incoming(&mut self) -> std::io::Result<Incoming> {
        if let Some(byte) = self.ahead.pop_front() {
            return Ok(Incoming::Byte(byte));
        }
        let first = self.read_byte()?;
        match first {
            b'$' => {}
            b'+' | b'-' | INTERRUPT => return Ok(Incoming::Byte(first)),
            _ => return Ok(Incoming::Skipped),
        }
        let (mut packet, whole) = self.read_packet()?;
        if !whole {
            // Not kept: answered here, where a client that ignores the packet size ends up.
            if !self.no_ack {
                self.write_bytes(b"+")?;
            }
            self.write_bytes(&frame(TOO_LONG))?;
            return Ok(Incoming::Skipped);
        }
        let Some(body) = packet_body(&packet) else {
            // A wrong or malformed checksum: line noise, which gdb repairs by sending again.
            if self.no_ack {
                self.write_bytes(&frame(TOO_LONG))?;
            } else {
                self.write_bytes(b"-")?;
            }
            return Ok(Incoming::Skipped);
        };
        if body.starts_with(TLS_PACKET) {
            if !self.no_ack {
                self.write_bytes(b"+")?;
            }
            return Ok(Incoming::GetTlsAddr(parse_tls_request(body)));
        }
        if let Some(range) = crate::xfer::siginfo_request(body) {
            if !self.no_ack {
                self.write_bytes(b"+")?;
            }
            return Ok(Incoming::SigInfo {
                thread: self.general_thread,
                range,
            });
        }
        if let Some(thread) = crate::xfer::general_thread(body) {
            self.general_thread = thread;
        }
        match self.procs.incoming(body) {
            Filtered::Pass => {}
            Filtered::Answer(reply) => {
                if !self.no_ack {
                    self.write_bytes(b"+")?;
                }
                self.write_bytes(&frame(&reply))?;
                return Ok(Incoming::Skipped);
            }
            Filtered::FollowChild(child) => {
                if !self.no_ack {
                    self.write_bytes(b"+")?;
                }
                return Ok(Incoming::FollowChild { child, reply: true });
            }
            Filtered::FollowChildThenPass(child) => {
                self.ahead.extend(&packet);
                return Ok(Incoming::FollowChild {
                    child,
                    reply: false,
                });
            }
        }
        if body == NO_ACK_PACKET {
            self.no_ack = true;
        }
        if let Some((conds, plain)) = split_breakpoint(body) {
            self.ahead.extend(frame(&plain));
            return Ok(Incoming::Conditions(conds));
        }
        if let Some(clamped) = clamped_mem_read(body) {
            packet = frame(&clamped);
        }
        self.ahead.extend(&packet[1..]);
        Ok(Incoming::Byte(first))
    }

    /// Reads the rest of a packet whose `$` was read: `$`, body, `#` and two checksum
    /// characters, and whether all of it was kept (at most [`PACKET_SIZE`] bytes are; the rest
    /// of a longer packet is read and dropped).
    fn read_packet(&mut self) -> std::io::Result<(Vec<u8>, bool)> {
        let mut packet = Vec::with_capacity(64);
        packet.push(b'$');
        let mut whole = true;
        let mut keep = |packet: &mut Vec<u8>, byte: u8| {
            if packet.len() < PACKET_SIZE {
                packet.push(byte);
            } else {
                whole = false;
            }
        };
        loop {
            let byte = self.read_byte()?;
            keep(&mut packet, byte);
            if byte == b'#' {
                break;
            }
        }
        for _ in 0..2 {
            let byte = self.read_byte()?;
            keep(&mut packet, byte);
        }
        Ok((packet, whole))
    }

    /// Answers a `qGetTLSAddr` packet: the address, or an error.
    pub fn send_tls_reply(&mut self, address: Option<u64>) -> std::io::Result<()> {
        let body = match address {
            Some(addr) => format!("{addr:x}"),
            None => "E01".to_string(),
        };
        self.write_bytes(&frame(body.as_bytes()))
    }

    /// Answers a packet the server took (see [`Incoming::FollowChild`]) with `body`.
    pub fn send_reply(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.write_bytes(&frame(body))
    }

    /// Writes `text` on gdb's console: an `O` packet, which gdb takes while it waits for a
    /// stop reply (send it right before one).
    pub fn send_console(&mut self, text: &str) -> std::io::Result<()> {
        let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
        self.write_bytes(&frame(format!("O{hex}").as_bytes()))
    }

    /// Answers a `qXfer` read of `length` bytes at `offset` of `whole` (an error if `None`).
    pub fn send_xfer_reply(
        &mut self,
        whole: Option<&[u8]>,
        offset: u64,
        length: usize,
    ) -> std::io::Result<()> {
        let body = match whole {
            Some(whole) => crate::xfer::xfer_reply(whole, offset, length),
            None => b"E01".to_vec(),
        };
        self.write_bytes(&frame(&body))
    }

    /// Whether something from gdb (its interrupt byte) waits to be read.
    pub fn has_input(&self) -> bool {
        !self.ahead.is_empty() || self.in_start < self.in_end || stream_has_input(&self.stream)
    }

    /// A check of whether something from gdb waits to be read, for the replay to poll while
    /// it runs (see [`GdbConnection::has_input`]).
    pub fn input_probe(&self) -> std::io::Result<Box<dyn FnMut() -> bool>> {
        let stream = self.stream.try_clone()?;
        let buffered = self.buffered.clone();
        Ok(Box::new(move || {
            buffered.get() || stream_has_input(&stream)
        }))
    }

    fn read_byte(&mut self) -> std::io::Result<u8> {
        if self.in_start == self.in_end {
            let n = loop {
                match self.stream.read(&mut self.inbuf) {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            (self.in_start, self.in_end) = (0, n);
        }
        let byte = self.inbuf[self.in_start];
        self.in_start += 1;
        self.buffered.set(self.in_start < self.in_end);
        Ok(byte)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // (gdbstub flushes after each reply: nothing of it waits here, but keep the order.)
        if !self.out.is_empty() {
            gdbstub::conn::Connection::flush(self)?;
        }
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }
}

impl gdbstub::conn::Connection for GdbConnection {
    type Error = std::io::Error;

    /// Acknowledgements go out at once (gdb may wait for one before anything else); a
    /// packet is kept until gdbstub flushes it.
    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.write_all(&[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        match buf.first() {
            Some(b'+' | b'-') if self.out.is_empty() => Write::write_all(&mut self.stream, buf),
            _ => {
                self.out.extend_from_slice(buf);
                Ok(())
            }
        }
    }

    /// Sends what gdbstub wrote since the last flush (gdbstub flushes after every reply).
    fn flush(&mut self) -> Result<(), Self::Error> {
        let out = std::mem::take(&mut self.out);
        if matches!(out.get(..2), Some(b"$T" | b"$S")) {
            // gdb takes a stop reply's thread as the stub's selected one from then on.
            self.general_thread = None;
        }
        let out = crate::xfer::with_siginfo_feature(&out).unwrap_or(out);
        let out = announce_in_supported(&out).unwrap_or(out);
        let out = self.procs.outgoing(out);
        Write::write_all(&mut self.stream, &out)?;
        Write::flush(&mut self.stream)
    }

    fn on_session_start(&mut self) -> Result<(), Self::Error> {
        self.stream.set_nodelay(true)
    }
}

/// Whether gdb sent something on `stream` that no one consumed yet.
pub fn stream_has_input(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a non-blocking peek of at most one byte into a local.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 1
}

/// The body of `$body#cs` if its checksum is right.
fn packet_body(packet: &[u8]) -> Option<&[u8]> {
    let inner = packet.strip_prefix(b"$")?;
    let (body, rest) = inner.split_at(inner.len().checked_sub(3)?);
    let sum = rest.strip_prefix(b"#")?;
    let sum = std::str::from_utf8(sum).ok()?;
    (u8::from_str_radix(sum, 16).ok()? == checksum(body)).then_some(body)
}

/// The checksum of a packet body: the sum of its bytes modulo 256.
fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

/// The packet `$body#cs`.
pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(body.len() + 4);
    packet.push(b'$');
    packet.extend_from_slice(body);
    packet.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    packet
}

/// The body of memory read `body` (`m<addr>,<len>`) asking for more than [`MAX_MEM_READ`]
/// bytes, with that length instead; `None` for any other packet.
fn clamped_mem_read(body: &[u8]) -> Option<Vec<u8>> {
    let args = std::str::from_utf8(body.strip_prefix(b"m")?).ok()?;
    let (addr, len) = args.split_once(',')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(addr) || !hex(len) {
        return None;
    }
    // More digits than a u64 holds is a length over the limit too.
    let len = u64::from_str_radix(len, 16).unwrap_or(u64::MAX);
    if len <= MAX_MEM_READ {
        return None;
    }
    Some(format!("m{addr},{MAX_MEM_READ:x}").into_bytes())
}

/// Parses the body of `qGetTLSAddr:thread-id,offset,lm`; the thread id is `p<pid>.<tid>`
/// or `<tid>`, every number in hex.
fn parse_tls_request(body: &[u8]) -> anyhow::Result<TlsRequest> {
    let args = body
        .strip_prefix(TLS_PACKET)
        .context("not a qGetTLSAddr packet")?;
    let args = std::str::from_utf8(args).context("qGetTLSAddr arguments are not text")?;
    let fields: Vec<&str> = args.split(',').collect();
    let [thread, offset, lm] = fields[..] else {
        bail!("qGetTLSAddr takes three arguments, not `{args}`");
    };
    let thread = match thread.strip_prefix('p') {
        Some(ptid) => {
            let (_pid, tid) = ptid
                .split_once('.')
                .with_context(|| format!("thread id `{thread}` names no thread"))?;
            tid
        }
        None => thread,
    };
    let hex = |what: &str, s: &str| {
        u64::from_str_radix(s, 16).with_context(|| format!("qGetTLSAddr {what} `{s}` is not hex"))
    };
    Ok(TlsRequest {
        thread: hex("thread id", thread)?,
        offset: hex("offset", offset)?,
        lm: hex("link map", lm)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_checksum() {
        assert_eq!(frame(b"OK"), b"$OK#9a");
        assert_eq!(frame(b"E01"), b"$E01#a6");
        assert_eq!(frame(b""), b"$#00");
        assert_eq!(
            frame(b"7ffff7d8a6b8"),
            format!("$7ffff7d8a6b8#{:02x}", checksum(b"7ffff7d8a6b8")).as_bytes()
        );
    }

    #[test]
    fn bodies_need_a_right_checksum() {
        assert_eq!(packet_body(b"$QStartNoAckMode#b0"), Some(NO_ACK_PACKET));
        assert_eq!(packet_body(b"$OK#9a"), Some(&b"OK"[..]));
        assert_eq!(packet_body(b"$OK#9b"), None);
        assert_eq!(packet_body(b"$#00"), Some(&b""[..]));
        assert_eq!(packet_body(b"+"), None);
    }

    #[test]
    fn parses_tls_requests() {
        let req = parse_tls_request(b"qGetTLSAddr:p451a.451b,fffffffffffffff8,7ffff7fc1000")
            .expect("a multiprocess request");
        assert_eq!(
            req,
            TlsRequest {
                thread: 0x451b,
                offset: 0xffff_ffff_ffff_fff8,
                lm: 0x7fff_f7fc_1000,
            }
        );
        let req = parse_tls_request(b"qGetTLSAddr:2a,10,4000").expect("a plain request");
        assert_eq!(
            req,
            TlsRequest {
                thread: 0x2a,
                offset: 0x10,
                lm: 0x4000,
            }
        );
        assert!(parse_tls_request(b"qGetTLSAddr:p2a,10,4000").is_err());
        assert!(parse_tls_request(b"qGetTLSAddr:2a,10").is_err());
        assert!(parse_tls_request(b"qGetTLSAddr:2a,xyz,4000").is_err());
    }

    /// A connection to a fake gdb: the server side and gdb's side.
    fn pair() -> (GdbConnection, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listening");
        let addr = listener.local_addr().expect("an address");
        let gdb = TcpStream::connect(addr).expect("connecting");
        let (server, _) = listener.accept().expect("accepting");
        (GdbConnection::new(server), gdb)
    }

    /// Everything gdbstub reads until a TLS request comes.
    fn bytes_until_request(conn: &mut GdbConnection) -> (Vec<u8>, anyhow::Result<TlsRequest>) {
        let mut passed = Vec::new();
        loop {
            match conn.read_incoming().expect("reading") {
                Incoming::Byte(b) => passed.push(b),
                Incoming::GetTlsAddr(req) => return (passed, req),
                Incoming::Conditions(_) => panic!("no breakpoint was sent"),
                Incoming::Skipped => panic!("nothing to skip was sent"),
                Incoming::FollowChild { .. } => panic!("no fork was reported"),
                Incoming::SigInfo { .. } => panic!("no siginfo request was sent"),
            }
        }
    }

    fn read_exactly(gdb: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        gdb.read_exact(&mut buf).expect("reading the reply");
        buf
    }

    #[test]
    fn takes_tls_packets_out_and_acks_them_in_ack_mode() {
        let (mut conn, mut gdb) = pair();
        let tls = frame(b"qGetTLSAddr:p1.2,8,1000");
        let mut sent = b"+$g#67\x03".to_vec();
        sent.extend_from_slice(&tls);
        gdb.write_all(&sent).expect("sending");
        let (passed, req) = bytes_until_request(&mut conn);
        assert_eq!(passed, b"+$g#67\x03");
        let req = req.expect("a request");
        assert_eq!((req.thread, req.offset, req.lm), (2, 8, 0x1000));
        conn.send_tls_reply(Some(0x7f00_0000_1234))
            .expect("replying");
        assert_eq!(read_exactly(&mut gdb, 1), b"+");
        let reply = frame(b"7f0000001234");
        assert_eq!(read_exactly(&mut gdb, reply.len()), reply);
    }

    /// Everything gdbstub gets until gdb's side closes.
    fn all_passed(conn: &mut GdbConnection) -> Vec<u8> {
        let mut passed = Vec::new();
        while let Ok(incoming) = conn.read_incoming() {
            match incoming {
                Incoming::Byte(b) => passed.push(b),
                Incoming::GetTlsAddr(_) => panic!("no TLS request was sent"),
                Incoming::Conditions(_) => panic!("no breakpoint was sent"),
                Incoming::SigInfo { .. } => panic!("no siginfo request was sent"),
                Incoming::Skipped => {}
                Incoming::FollowChild { .. } => panic!("no fork was reported"),
            }
        }
        passed
    }

    #[test]
    fn noise_damaged_and_oversized_packets_never_reach_gdbstub() {
        let (mut conn, mut gdb) = pair();
        let mut sent = b"xyz\x00\xff".to_vec();
        sent.extend_from_slice(b"$g#00"); // wrong checksum
        sent.extend_from_slice(b"$g#zz"); // not a checksum
        sent.push(b'$');
        sent.extend(std::iter::repeat(b'a').take(3 * PACKET_SIZE));
        sent.extend_from_slice(b"#00");
        sent.extend_from_slice(&frame(b"?"));
        gdb.write_all(&sent).expect("sending");
        gdb.shutdown(std::net::Shutdown::Write).expect("closing");
        assert_eq!(all_passed(&mut conn), frame(b"?"));
        drop(conn);
        // Refusals: two nacks, and the oversized packet acknowledged and answered.
        let mut replies = Vec::new();
        gdb.read_to_end(&mut replies).expect("reading the replies");
        let mut want = b"--+".to_vec();
        want.extend_from_slice(&frame(TOO_LONG));
        assert_eq!(replies, want);
    }

    #[test]
    fn memory_reads_are_clamped() {
        let (mut conn, mut gdb) = pair();
        let mut sent = frame(b"m401000,ffffffffffffffffffff");
        sent.extend_from_slice(&frame(b"m401000,10"));
        sent.extend_from_slice(&frame(b"m401000,c001"));
        gdb.write_all(&sent).expect("sending");
        gdb.shutdown(std::net::Shutdown::Write).expect("closing");
        let mut want = frame(b"m401000,c000");
        want.extend_from_slice(&frame(b"m401000,10"));
        want.extend_from_slice(&frame(b"m401000,c000"));
        assert_eq!(all_passed(&mut conn), want);
        assert_eq!(clamped_mem_read(b"m401000,zz"), None);
        assert_eq!(clamped_mem_read(b"mo,ffffff"), None);
        assert_eq!(clamped_mem_read(b"M401000,ffffff:00"), None);
    }

    #[test]
    fn breakpoint_conditions_are_taken_out_and_the_plain_packet_passed_on() {
        let (mut conn, mut gdb) = pair();
        let mut sent = frame(b"Z0,401136,1;X3,260006");
        sent.extend_from_slice(&frame(b"z0,401136,1"));
        gdb.write_all(&sent).expect("sending");
        gdb.shutdown(std::net::Shutdown::Write).expect("closing");
        match conn.read_incoming().expect("reading") {
            Incoming::Conditions(c) => {
                assert_eq!(c.addr, 0x401136);
                assert_eq!(c.conds, Ok(vec![vec![0x26, 0x00, 0x06]]));
            }
            other => panic!("expected the conditions first, got {other:?}"),
        }
        let mut want = frame(b"Z0,401136,1");
        want.extend_from_slice(&frame(b"z0,401136,1"));
        assert_eq!(all_passed(&mut conn), want);
    }

    #[test]
    fn replies_go_in_one_piece_and_qsupported_announces_conditions() {
        let (mut conn, mut gdb) = pair();
        // gdbstub's ack goes at once; its reply, written byte by byte, at the flush.
        gdbstub::conn::Connection::write(&mut conn, b'+').expect("acking");
        assert_eq!(read_exactly(&mut gdb, 1), b"+");
        for &b in frame(b"PacketSize=1000").iter() {
            gdbstub::conn::Connection::write(&mut conn, b).expect("writing");
        }
        assert!(!stream_has_input(&gdb), "nothing before the flush");
        gdbstub::conn::Connection::flush(&mut conn).expect("flushing");
        let want = frame(b"PacketSize=1000;qXfer:siginfo:read+;ConditionalBreakpoints+");
        assert_eq!(read_exactly(&mut gdb, want.len()), want);
        // Only that reply is amended.
        gdbstub::conn::Connection::write_all(&mut conn, &frame(b"OK")).expect("writing");
        gdbstub::conn::Connection::flush(&mut conn).expect("flushing");
        assert_eq!(read_exactly(&mut gdb, 6), frame(b"OK"));
    }

    #[test]
    fn no_ack_after_qstartnoackmode() {
        let (mut conn, mut gdb) = pair();
        let mut sent = frame(b"QStartNoAckMode");
        sent.extend_from_slice(b"+");
        sent.extend_from_slice(&frame(b"qGetTLSAddr:3,0,2000"));
        gdb.write_all(&sent).expect("sending");
        let (passed, req) = bytes_until_request(&mut conn);
        assert_eq!(passed, b"$QStartNoAckMode#b0+");
        assert_eq!(req.expect("a request").thread, 3);
        conn.send_tls_reply(None).expect("replying");
        assert_eq!(read_exactly(&mut gdb, 7), b"$E01#a6");
    }
}
