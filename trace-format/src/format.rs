//! Byte-level encoding shared by the writer and the reader: chunk and blob headers, checksums,
//! event encoding. See `README.md` for the layout.

use std::collections::VecDeque;
use std::io::Read;

use bincode::Options;

use crate::event::Event;
use crate::writer::CHUNK_TARGET_BYTES;

/// File name of the index inside a trace directory.
pub(crate) const INDEX_FILE: &str = "index.sqlite";
/// File name of the event stream inside a trace directory.
pub(crate) const EVENTS_FILE: &str = "events";
/// File name of the blob file inside a trace directory.
pub(crate) const BLOBS_FILE: &str = "blobs";
/// Directory name of the file store inside a trace directory.
pub(crate) const FILES_DIR: &str = "files";

/// Magic of an events chunk.
pub(crate) const CHUNK_MAGIC: [u8; 4] = *b"DJCK";
/// Size of an events chunk header.
pub(crate) const CHUNK_HEADER_LEN: usize = 24;
/// Magic of a blob record.
pub(crate) const BLOB_MAGIC: [u8; 4] = *b"DJBL";
/// Size of a blob record header.
pub(crate) const BLOB_HEADER_LEN: usize = 24;
/// zstd level for chunks and blobs: fast, and most of the ratio.
pub(crate) const ZSTD_LEVEL: i32 = 1;

/// The most bytes one event's encoding (bincode, without its length prefix) may take. The
/// writer moves every payload of a larger event to the blob file, which leaves a few bytes
/// per payload; the reader refuses larger events as corrupt.
pub(crate) const MAX_EVENT_BYTES: usize = 8 << 20;
/// The most bytes a chunk's events may take decompressed: the writer closes a chunk once it
/// holds [`CHUNK_TARGET_BYTES`], so its last event takes it at most one event over.
pub(crate) const MAX_CHUNK_RAW_BYTES: usize = CHUNK_TARGET_BYTES + 4 + MAX_EVENT_BYTES;
/// The most bytes one zstd block decompresses to.
const ZSTD_BLOCK_MAX: u64 = 128 << 10;

/// The most bytes a zstd frame of `compressed` bytes can decompress to, whatever it holds:
/// every block takes at least 4 bytes (a 3-byte header and an RLE byte) for at most
/// [`ZSTD_BLOCK_MAX`] bytes out.
pub(crate) fn max_decompressed(compressed: u64) -> u64 {
    (compressed / 4 + 1).saturating_mul(ZSTD_BLOCK_MAX)
}

/// The decompressed size a zstd frame declares in its header, if it does; an error if the
/// header is not a zstd frame's.
fn declared_size(frame: &[u8]) -> Result<Option<u64>, String> {
    zstd::zstd_safe::get_frame_content_size(frame).map_err(|_| "is not a zstd frame".to_string())
}

/// The first four bytes of the BLAKE3 hash of `bytes`, little-endian.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    let h = blake3::hash(bytes);
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The header in front of every events chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    /// Length of the zstd frame that follows.
    pub compressed_len: u32,
    /// Number of events in the chunk.
    pub events: u32,
    /// Index of the chunk's first event in the whole trace.
    pub first_event: u64,
    /// [`checksum`] of the zstd frame.
    pub checksum: u32,
}

impl ChunkHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        h[0..4].copy_from_slice(&CHUNK_MAGIC);
        h[4..8].copy_from_slice(&self.compressed_len.to_le_bytes());
        h[8..12].copy_from_slice(&self.events.to_le_bytes());
        h[12..20].copy_from_slice(&self.first_event.to_le_bytes());
        h[20..24].copy_from_slice(&self.checksum.to_le_bytes());
        h
    }

    /// Parses a header; `None` when the magic is wrong.
    pub fn decode(h: &[u8; CHUNK_HEADER_LEN]) -> Option<Self> {
        if h[0..4] != CHUNK_MAGIC {
            return None;
        }
        Some(ChunkHeader {
            compressed_len: le_u32(h, 4),
            events: le_u32(h, 8),
            first_event: le_u64(h, 12),
            checksum: le_u32(h, 20),
        })
    }
}

/// The header in front of every blob record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobHeader {
    /// Length of the zstd frame that follows.
    pub compressed_len: u64,
    /// Length of the blob once decompressed.
    pub raw_len: u64,
    /// [`checksum`] of the zstd frame.
    pub checksum: u32,
}

impl BlobHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; BLOB_HEADER_LEN] {
        let mut h = [0u8; BLOB_HEADER_LEN];
        h[0..4].copy_from_slice(&BLOB_MAGIC);
        h[4..12].copy_from_slice(&self.compressed_len.to_le_bytes());
        h[12..20].copy_from_slice(&self.raw_len.to_le_bytes());
        h[20..24].copy_from_slice(&self.checksum.to_le_bytes());
        h
    }

    /// Parses a header; `None` when the magic is wrong.
    pub fn decode(h: &[u8; BLOB_HEADER_LEN]) -> Option<Self> {
        if h[0..4] != BLOB_MAGIC {
            return None;
        }
        Some(BlobHeader {
            compressed_len: le_u64(h, 4),
            raw_len: le_u64(h, 12),
            checksum: le_u32(h, 20),
        })
    }
}

/// bincode settings of the format: varint integers, little-endian, no trailing bytes.
fn bincode_options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Appends `ev` to `out` as a u32 LE length and its bincode bytes; an error, leaving `out`
/// as it was, if it takes more than [`MAX_EVENT_BYTES`].
pub(crate) fn encode_event(ev: &Event, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    let res = bincode_options()
        .serialize_into(&mut *out, ev)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let len = out.len() - start - 4;
            if len > MAX_EVENT_BYTES {
                return Err(format!(
                    "a {} event of {len} bytes is larger than the format's {} MiB",
                    ev.kind(),
                    MAX_EVENT_BYTES >> 20
                ));
            }
            u32::try_from(len).map_err(|_| "event is larger than 4 GiB".to_string())
        });
    match res {
        Ok(len) => {
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Decodes one event's bincode bytes (all of them). bincode's limit keeps every length
/// inside them (of a vector, a string) within the bytes there are.
fn decode_event(bytes: &[u8]) -> Result<Event, String> {
    bincode_options()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| e.to_string())
}

/// Decompresses a chunk's zstd frame and decodes its `count` events.
///
/// Memory stays within a fixed bound whatever the frame claims: it may decompress to at most
/// [`MAX_CHUNK_RAW_BYTES`] (and to the size its header declares, if it declares one), so a
/// forged frame that would expand to gigabytes stops there; each event within it is decoded
/// from at most [`MAX_EVENT_BYTES`].
pub(crate) fn decode_chunk(frame: &[u8], count: u32) -> Result<VecDeque<Event>, String> {
    let declared = declared_size(frame)?;
    let limit = MAX_CHUNK_RAW_BYTES as u64;
    if let Some(size) = declared {
        if size > limit {
            return Err(format!(
                "declares {size} bytes of events, more than a chunk holds ({limit})"
            ));
        }
    }
    let capacity = declared
        .unwrap_or(limit)
        .min(max_decompressed(frame.len() as u64)) as usize;
    let raw = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress(frame, capacity))
        .map_err(|e| {
            if capacity as u64 == limit {
                format!("decompresses to more than a chunk holds ({limit} bytes) or fails: {e}")
            } else {
                format!("does not decompress to its {capacity} bytes: {e}")
            }
        })?;
    if let Some(size) = declared {
        if raw.len() as u64 != size {
            return Err(format!(
                "decompresses to {} bytes instead of the {size} it declares",
                raw.len()
            ));
        }
    }
    // Every event takes at least its length prefix and a byte.
    if u64::from(count) > raw.len() as u64 / 5 {
        return Err(format!(
            "claims {count} events in {} bytes, which cannot hold them",
            raw.len()
        ));
    }
    let mut events = VecDeque::with_capacity(count as usize);
    let mut rest = &raw[..];
    for i in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!("event {i} of {count} is cut short"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_EVENT_BYTES {
            return Err(format!(
                "event {i} of {count} claims {len} bytes, more than an event may take \
                 ({MAX_EVENT_BYTES})"
            ));
        }
        let Some(bytes) = tail.get(..len) else {
            return Err(format!("event {i} of {count} is cut short"));
        };
        let ev = decode_event(bytes).map_err(|e| format!("event {i} of {count}: {e}"))?;
        events.push_back(ev);
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(format!("has bytes after its {count} events"));
    }
    Ok(events)
}

/// Decompresses a blob frame that must hold exactly `raw_len` bytes. Memory follows the
/// bytes the frame really holds, never `raw_len` alone: a length the frame cannot hold
/// ([`max_decompressed`]) or other than the size it declares is refused before decompressing.
pub(crate) fn decode_blob(frame: &[u8], raw_len: u64) -> Result<Vec<u8>, String> {
    if raw_len > max_decompressed(frame.len() as u64) {
        return Err(format!(
            "claims {raw_len} bytes, more than its {} compressed bytes can hold",
            frame.len()
        ));
    }
    if let Some(size) = declared_size(frame)? {
        if size != raw_len {
            return Err(format!(
                "declares {size} bytes once decompressed instead of {raw_len}"
            ));
        }
    }
    let dec = zstd::stream::read::Decoder::with_buffer(frame)
        .map_err(|e| format!("cannot start decompressing: {e}"))?;
    let mut out = Vec::with_capacity(raw_len.min(1 << 20) as usize);
    dec.take(raw_len.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 != raw_len {
        return Err(format!(
            "decompresses to {} bytes instead of {raw_len}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExitEvent, ExitStatus, RdtscEvent, SignalEvent, SignalOrigin};

    fn sample() -> Vec<Event> {
        vec![
            Event::Signal(SignalEvent {
                tid: 7,
                signo: 11,
                siginfo: vec![3; 128],
                origin: SignalOrigin::Fault,
                rip: 0x1234,
                delivered: true,
                point: None,
            }),
            Event::Rdtsc(RdtscEvent {
                tid: 7,
                rip: 0x1240,
                tsc: 99,
                aux: Some(1),
            }),
            Event::Exit(ExitEvent {
                tid: 7,
                status: ExitStatus::Exited(0),
            }),
        ]
    }

    #[test]
    fn headers_round_trip() {
        let h = ChunkHeader {
            compressed_len: 5,
            events: 6,
            first_event: 7,
            checksum: 8,
        };
        assert_eq!(ChunkHeader::decode(&h.encode()), Some(h));
        let b = BlobHeader {
            compressed_len: 1,
            raw_len: 2,
            checksum: 3,
        };
        assert_eq!(BlobHeader::decode(&b.encode()), Some(b));
        assert_eq!(ChunkHeader::decode(&[0; CHUNK_HEADER_LEN]), None);
    }

    /// Damaged event bytes behind a valid frame (what a checksum collision would let
    /// through) are errors, never panics or huge allocations.
    #[test]
    fn garbled_event_bytes_are_errors() {
        let events = sample();
        let mut raw = Vec::new();
        for ev in &events {
            encode_event(ev, &mut raw).unwrap();
        }
        let frame = zstd::bulk::compress(&raw, ZSTD_LEVEL).unwrap();
        assert_eq!(decode_chunk(&frame, 3).unwrap(), events);
        assert!(decode_chunk(&frame, 2).is_err());
        assert!(decode_chunk(&frame, 4).is_err());
        for pos in 0..raw.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = raw.clone();
                bad[pos] ^= mask;
                let frame = zstd::bulk::compress(&bad, ZSTD_LEVEL).unwrap();
                let _ = decode_chunk(&frame, 3);
            }
        }
        for cut in 0..raw.len() {
            let frame = zstd::bulk::compress(&raw[..cut], ZSTD_LEVEL).unwrap();
            assert!(decode_chunk(&frame, 3).is_err());
        }
        for cut in 0..frame.len() {
            assert!(decode_chunk(&frame[..cut], 3).is_err());
        }
        // A length prefix claiming 4 GiB, and a vector length claiming 2^60 elements.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[1, 2, 3]);
        let frame = zstd::bulk::compress(&huge, ZSTD_LEVEL).unwrap();
        assert!(decode_chunk(&frame, 1).is_err());
        let mut body = vec![2u8, 7]; // Event::Signal, tid 7 (varint zigzag 14 would be 7)
        body.extend_from_slice(&[0xff; 9]);
        let mut rec = (body.len() as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&body);
        let frame = zstd::bulk::compress(&rec, ZSTD_LEVEL).unwrap();
        assert!(decode_chunk(&frame, 1).is_err());
    }

    #[test]
    fn blob_lengths_are_checked() {
        let frame = zstd::bulk::compress(b"0123456789", ZSTD_LEVEL).unwrap();
        assert_eq!(decode_blob(&frame, 10).unwrap(), b"0123456789");
        assert!(decode_blob(&frame, 9).is_err());
        assert!(decode_blob(&frame, 11).is_err());
        assert!(decode_blob(&frame[..frame.len() - 1], 10).is_err());
    }
}
