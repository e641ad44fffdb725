//! gdb's `qGetTLSAddr` packet, which gdbstub does not know: a connection that takes these
//! packets out of the byte stream before gdbstub sees them, so that the server can answer
//! them, and passes everything else through unchanged.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context};

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

/// What comes from gdb next.
#[derive(Debug)]
pub enum Incoming {
    /// A byte for gdbstub.
    Byte(u8),
    /// A `qGetTLSAddr` packet (already acknowledged): answer it with
    /// [`GdbConnection::send_tls_reply`]. An error if its arguments make no sense.
    GetTlsAddr(anyhow::Result<TlsRequest>),
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
}

impl GdbConnection {
    /// Wraps gdb's connection.
    pub fn new(stream: TcpStream) -> Self {
        GdbConnection {
            stream,
            ahead: VecDeque::new(),
            no_ack: false,
        }
    }

    /// Reads what comes next from gdb, waiting for it. A packet is read whole when its `$`
    /// arrives: gdbstub then gets its bytes one by one, unless it is `qGetTLSAddr`, which
    /// this acknowledges (in ack mode) and returns for the server to answer. Acks, `-` and
    /// the interrupt byte go through as they come; gdb's ack of a `qGetTLSAddr` reply reaches
    /// gdbstub, which ignores acks (a `+` is `Packet::Ack`, handled as nothing to do).
    pub fn read_incoming(&mut self) -> std::io::Result<Incoming> {
        if let Some(byte) = self.ahead.pop_front() {
            return Ok(Incoming::Byte(byte));
        }
        let first = self.read_byte()?;
        if first != b'$' {
            return Ok(Incoming::Byte(first));
        }
        let mut packet = vec![first];
        loop {
            let byte = self.read_byte()?;
            packet.push(byte);
            if byte == b'#' {
                break;
            }
        }
        packet.push(self.read_byte()?);
        packet.push(self.read_byte()?);
        match packet_body(&packet) {
            Some(body) if body.starts_with(TLS_PACKET) => {
                if !self.no_ack {
                    self.write_bytes(b"+")?;
                }
                return Ok(Incoming::GetTlsAddr(parse_tls_request(body)));
            }
            Some(NO_ACK_PACKET) => self.no_ack = true,
            _ => {}
        }
        self.ahead.extend(&packet[1..]);
        Ok(Incoming::Byte(first))
    }

    /// Answers a `qGetTLSAddr` packet: the address, or an error.
    pub fn send_tls_reply(&mut self, address: Option<u64>) -> std::io::Result<()> {
        let body = match address {
            Some(addr) => format!("{addr:x}"),
            None => "E01".to_string(),
        };
        self.write_bytes(&frame(body.as_bytes()))
    }

    /// Whether something from gdb (its interrupt byte) waits to be read.
    pub fn has_input(&self) -> bool {
        !self.ahead.is_empty() || stream_has_input(&self.stream)
    }

    fn read_byte(&mut self) -> std::io::Result<u8> {
        let mut byte = [0u8];
        self.stream.read_exact(&mut byte)?;
        Ok(byte[0])
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }
}

impl gdbstub::conn::Connection for GdbConnection {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        Write::write_all(&mut self.stream, &[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        Write::write_all(&mut self.stream, buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
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
fn frame(body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(body.len() + 4);
    packet.push(b'$');
    packet.extend_from_slice(body);
    packet.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    packet
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
