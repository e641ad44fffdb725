//! `ioctl`: which memory each request writes, and what becomes of requests the table does not
//! know (see "ioctl requests" in the README).

use crate::size::*;
use crate::{push, Call, Memory, Region};

/// How the recorder handles an ioctl request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoctlModel {
    /// The table knows what it writes.
    Known,
    /// Unknown, encoded `_IOR`/`_IOWR`: the size its number encodes is recorded (a regular
    /// driver writes exactly that struct); the recorder warns once.
    EncodedSize,
    /// Unknown, encoded `_IO`/`_IOW` of a type that follows the encoding: it writes nothing.
    WritesNothing,
    /// Unknown, of a type whose numbers predate the encoding (tty, socket, console, block, ...):
    /// its number says nothing about what it writes, so it is refused with `ENOTTY` at record
    /// time (and the recorder warns once) rather than run with unrecorded effects.
    Refused,
}

/// `_IOC_READ`: the kernel writes the argument.
const IOC_READ: u32 = 2;

/// ioctl types (`_IOC_TYPE`) whose requests predate the `_IOC` encoding: an unknown request of
/// these types encoded as `_IO` may still write memory (e.g. `VT_OPENQRY` is 0x5600).
const LEGACY_TYPES: &[u8] = &[
    0x00, // FIBMAP, FIGETBSZ
    0x03, // HDIO_*
    0x12, // BLK*
    0x22, // SG_*
    0x46, // FBIO*
    0x4B, // KD*
    0x4C, // LOOP_*
    0x53, // CDROM*
    0x54, // TC*, TIO*
    0x56, // VT_*
    0x89, // SIOC*
    0x8B, // SIOCGIW* (wireless)
];

/// How the recorder handles `request` (the kernel compares requests as 32-bit values).
pub fn ioctl_model(request: u64) -> IoctlModel {
    let req = request as u32;
    if out_len(req).is_some() || special(req) {
        return IoctlModel::Known;
    }
    let (dir, ty) = (req >> 30, (req >> 8) as u8);
    if dir & IOC_READ != 0 {
        IoctlModel::EncodedSize
    } else if dir == 0 && LEGACY_TYPES.contains(&ty) {
        IoctlModel::Refused
    } else {
        IoctlModel::WritesNothing
    }
}

/// `SIOCGIFCONF`.
const SIOCGIFCONF: u32 = 0x8912;
/// `SIOCGIFBR`: the old bridge ioctl, an `unsigned long[3..]` of op and arguments.
const SIOCGIFBR: u32 = 0x8940;
/// `FS_IOC_FIEMAP`: a `struct fiemap` followed by `fm_extent_count` extents.
const FS_IOC_FIEMAP: u32 = 0xC020_660B;
/// `SG_IO`: a `sg_io_hdr` with pointers to the data and sense buffers.
const SG_IO: u32 = 0x2285;

/// Requests whose writes depend on the memory they point to (handled in [`ioctl`]).
fn special(req: u32) -> bool {
    matches!(req, SIOCGIFCONF | SIOCGIFBR | FS_IOC_FIEMAP | SG_IO)
}

/// Bytes written at `ioctl`'s third argument for a known fixed-size request (`Some(0)`: none).
fn out_len(req: u32) -> Option<u64> {
    Some(match req {
        0x5401 => TERMIOS,         // TCGETS
        0x5456 => 36,              // TIOCGLCKTRMIOS (struct termios of the kernel ABI)
        0x5405 => 18,              // TCGETA (struct termio)
        0x802C_542A => TERMIOS2,   // TCGETS2
        0x5413 => WINSIZE,         // TIOCGWINSZ
        0x541C => 1,               // TIOCLINUX (its subcode byte)
        0x541B                     // FIONREAD / TIOCINQ
        | 0x5411                   // TIOCOUTQ
        | 0x540F                   // TIOCGPGRP
        | 0x5429                   // TIOCGSID
        | 0x5415                   // TIOCMGET
        | 0x5418                   // TIOCMSET (reads its int; covered as rr does)
        | 0x5424                   // TIOCGETD
        | 0x5459                   // TIOCSERGETLSR
        | 0x894B                   // SIOCOUTQNSD
        | 0x5600                   // VT_OPENQRY
        | 0x4B44                   // KDGKBMODE
        | 0x8004_5430              // TIOCGPTN
        | 0x8004_5438              // TIOCGPKT
        | 0x8004_5439              // TIOCGPTLCK
        | 0x8004_5440              // TIOCGEXCL
        | 0x8008_6601              // FS_IOC_GETFLAGS (the kernel writes an int)
        | 0x0002                   // FIGETBSZ
        | 0x0001                   // FIBMAP (in/out int)
        | 0x1268 | 0x127A          // BLKSSZGET BLKALIGNOFF
        | 0x125E | 0x1278 | 0x1279 | 0x127B | 0x127C // BLKROGET BLKIOMIN BLKIOOPT BLKPBSZGET BLKDISCARDZEROES
        | 0x2203 | 0x2272 | 0x227F | 0x2282 // SG_EMULATED_HOST SG_GET_RESERVED_SIZE SG_GET_SG_TABLESIZE SG_GET_VERSION_NUM
        | 0x8004_5200              // RNDGETENTCNT
        | 0x8004_54CF              // TUNGETFEATURES
        | 0x8004_54D3              // TUNGETSNDBUF
        | 0x8004_54D7 => 4,        // TUNGETVNETHDRSZ
        0x4004_54CA                // TUNSETIFF (writes the interface name back)
        | 0x8004_54D2 => IFREQ,    // TUNGETIFF (encoded as an int, writes a struct ifreq)
        0x8010_54DB => 16,         // TUNGETFILTER: struct sock_fprog
        0x1267 | 0x127E => 2,      // BLKSECTGET BLKROTATIONAL
        0x5603 => 6,               // VT_GETSTATE (struct vt_stat)
        0x5601 => 8,               // VT_GETMODE (struct vt_mode)
        0x4B33 => 1,               // KDGKBTYPE
        0x5419 | 0x4B3B => 4,      // TIOCGSOFTCAR KDGETMODE
        0x542E | 0x542F => 32,     // TIOCGRS485 TIOCSRS485 (the kernel writes the result back)
        0x4C05 => 232,             // LOOP_GET_STATUS64 (struct loop_info64)
        0x4601 => 160,             // FBIOPUT_VSCREENINFO (the kernel writes the result back)
        0x8935 | 0x8970 | 0x8947 | 0x8948 => IFREQ, // SIOCGIFPFLAGS SIOCGIFMAP SIOCGMIIPHY SIOCGMIIREG
        0x8B01 | 0x8B05 | 0x8B07 | 0x8B09 | 0x8B21 => 32, // SIOCGIW{NAME,FREQ,MODE,SENS,RATE} (struct iwreq)
        0x5305 => 2,               // CDROMREADTOCHDR
        0x5306 => 12,              // CDROMREADTOCENTRY
        0x0301 => 16,              // HDIO_GETGEO
        0x545D => 80,              // TIOCGICOUNT (struct serial_icounter_struct)
        0x541E => 72,              // TIOCGSERIAL (struct serial_struct)
        0x4600 => 160,             // FBIOGET_VSCREENINFO
        0x4602 => 80,              // FBIOGET_FSCREENINFO
        0x8906 => TIMEVAL,         // SIOCGSTAMP
        0x8907 => TIMESPEC,        // SIOCGSTAMPNS
        0x5460                     // FIOQSIZE
        | 0x1260 | 0x1263 | 0x1265 // BLKGETSIZE BLKRAGET BLKFRAGET (longs)
        | 0x8008_1272 => 8,        // BLKGETSIZE64
        0x8910 | 0x8913 | 0x8915 | 0x8917 | 0x8919 | 0x891B | 0x891D | 0x8921 | 0x8927
        | 0x8933 | 0x8942 => IFREQ, // SIOCGIF{NAME,FLAGS,ADDR,DSTADDR,BRDADDR,NETMASK,METRIC,MTU,HWADDR,INDEX,TXQLEN}
        0x5421 | 0x5450 | 0x5451 | 0x5452 // FIONBIO FIONCLEX FIOCLEX FIOASYNC
        | 0x5402 | 0x5403 | 0x5404 // TCSETS TCSETSW TCSETSF
        | 0x5406 | 0x5407 | 0x5408 // TCSETA TCSETAW TCSETAF
        | 0x5457                   // TIOCSLCKTRMIOS
        | 0x402C_542B | 0x402C_542C | 0x402C_542D // TCSETS2 TCSETSW2 TCSETSF2
        | 0x5409 | 0x540A | 0x540B | 0x5425 // TCSBRK TCXONC TCFLSH TCSBRKP
        | 0x540C | 0x540D | 0x540E | 0x5422 // TIOCEXCL TIOCNXCL TIOCSCTTY TIOCNOTTY
        | 0x5410 | 0x5412 | 0x5414 // TIOCSPGRP TIOCSTI TIOCSWINSZ
        | 0x5416 | 0x5417          // TIOCMBIS TIOCMBIC
        | 0x541D | 0x541F          // TIOCCONS TIOCSSERIAL
        | 0x5420 | 0x5423 | 0x5427 | 0x5428 // TIOCPKT TIOCSETD TIOCSBRK TIOCCBRK
        | 0x4004_5431 | 0x5441     // TIOCSPTLCK TIOCGPTPEER
        | 0x8941                   // SIOCSIFBR (reads only)
        // Privileged socket requests that only read: interface, bridge, route settings.
        | 0x8914 | 0x8916 | 0x8918 | 0x891A | 0x891C | 0x891E // SIOCSIF{FLAGS,ADDR,DSTADDR,BRDADDR,NETMASK,METRIC}
        | 0x8922 | 0x8923 | 0x8924 | 0x8934 | 0x8937 | 0x8943 | 0x8971 // SIOCSIF{MTU,NAME,HWADDR,PFLAGS,HWBROADCAST,TXQLEN,MAP}
        | 0x8931 | 0x8932 | 0x890B | 0x890C // SIOCADDMULTI SIOCDELMULTI SIOCADDRT SIOCDELRT
        | 0x89A0 | 0x89A1 | 0x89A2 | 0x89A3 // SIOCBRADDBR SIOCBRDELBR SIOCBRADDIF SIOCBRDELIF
        | 0x541A | 0x5437 | 0x545C // TIOCSSOFTCAR TIOCVHANGUP TIOCMIWAIT
        | 0x4B3A | 0x4B45          // KDSETMODE KDSKBMODE
        | 0x5602 | 0x5605 | 0x5606 | 0x5607 // VT_SETMODE VT_RELDISP VT_ACTIVATE VT_WAITACTIVE
        | 0x4C00 | 0x4C01 | 0x4C04 | 0x4C0A // LOOP_SET_FD LOOP_CLR_FD LOOP_SET_STATUS64 LOOP_CONFIGURE
        | 0x4C80 | 0x4C81 | 0x4C82 // LOOP_CTL_ADD LOOP_CTL_REMOVE LOOP_CTL_GET_FREE
        | 0x125D | 0x125F | 0x1261 // BLKROSET BLKRRPART BLKFLSBUF
        | 0x1277 | 0x127D | 0x127F // BLKDISCARD BLKSECDISCARD BLKZEROOUT
        | 0x5309 | 0x5326 | 0x5331 // CDROMEJECT CDROM_DRIVE_STATUS CDROM_GET_CAPABILITY
        | 0x2201 | 0x2202 | 0x2275 // SG_SET_TIMEOUT SG_GET_TIMEOUT SG_SET_RESERVED_SIZE
        | 0x4008_6602              // FS_IOC_SETFLAGS
        | 0x4010_54D6 => 0,        // TUNDETACHFILTER
        _ => return None,
    })
}

/// ioctl's `Custom` output: known requests by table or by the memory they point to; unknown
/// `_IOR`/`_IOWR` requests get their encoded size; anything else covers nothing.
pub(crate) fn ioctl(c: &Call, mem: &dyn Memory, out: &mut Vec<Region>) {
    let req = c.arg(1) as u32;
    let argp = c.arg(2);
    if let Some(len) = out_len(req) {
        push(out, argp, len);
        return;
    }
    match req {
        SIOCGIFCONF => {
            // struct ifconf { int ifc_len; char *ifc_buf; }: ifc_len is now the bytes written.
            push(out, argp, IFCONF);
            if let (Some(n), Some(buf)) = (mem.read_u32(argp), mem.read_u64(argp.wrapping_add(8))) {
                push(out, buf, u64::from(n));
            }
        }
        SIOCGIFBR => {
            // BRCTL_GET_BRIDGES (1): args[2] ints at args[1]; the other ops write nothing.
            let word = |i: u64| mem.read_u64(argp.wrapping_add(8 * i));
            if let (Some(1), Some(buf), Some(n)) = (word(0), word(1), word(2)) {
                push(out, buf, n.saturating_mul(4));
            }
        }
        FS_IOC_FIEMAP => {
            // struct fiemap (32 bytes, fm_extent_count at 24) and its extents (56 bytes each).
            let extents = mem.read_u32(argp.wrapping_add(24)).unwrap_or(0);
            push(out, argp, 32 + 56 * u64::from(extents));
        }
        SG_IO => {
            // struct sg_io_hdr (88 bytes): the data buffer (unless it is an iovec list) and the
            // sense buffer are written too.
            push(out, argp, 88);
            let iovec_count = mem.read_u32(argp.wrapping_add(8)).map(|w| w >> 16);
            let dxfer_len = mem.read_u32(argp.wrapping_add(12));
            let dxferp = mem.read_u64(argp.wrapping_add(16));
            if let (Some(0), Some(len), Some(buf)) = (iovec_count, dxfer_len, dxferp) {
                push(out, buf, u64::from(len));
            }
            let mx_sb_len = mem.read_u32(argp.wrapping_add(8)).map(|w| (w >> 8) & 0xFF);
            if let (Some(len), Some(sbp)) = (mx_sb_len, mem.read_u64(argp.wrapping_add(32))) {
                push(out, sbp, u64::from(len));
            }
        }
        _ if ioctl_model(c.arg(1)) == IoctlModel::EncodedSize => {
            push(out, argp, u64::from((req >> 16) & 0x3FFF));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_requests_are_handled_by_what_their_number_proves() {
        // Known, legacy-numbered: VT_OPENQRY writes an int; SIOCSIFADDR only reads.
        assert_eq!(ioctl_model(0x5600), IoctlModel::Known);
        assert_eq!(out_len(0x5600), Some(4));
        assert_eq!(ioctl_model(0x8916), IoctlModel::Known);
        assert_eq!(out_len(0x8916), Some(0));
        // Unknown, legacy type, no direction: refused.
        assert_eq!(ioctl_model(0x56ff), IoctlModel::Refused);
        assert_eq!(ioctl_model(0x89ff), IoctlModel::Refused);
        // Unknown _IOR: its encoded size; unknown _IO/_IOW of an encoded type: nothing.
        assert_eq!(
            ioctl_model((2 << 30) | (24 << 16) | 0x7801),
            IoctlModel::EncodedSize
        );
        assert_eq!(ioctl_model(0x2400), IoctlModel::WritesNothing); // PERF_EVENT_IOC_ENABLE
        assert_eq!(
            ioctl_model((1 << 30) | (8 << 16) | 0x7801),
            IoctlModel::WritesNothing
        );
        // The kernel compares requests as 32-bit values.
        assert_eq!(ioctl_model(0xffff_ffff_0000_5600), IoctlModel::Known);
    }
}
