//! The register layout and target description, checked (with the real gdb where it is
//! installed).

use super::*;
use gdbstub::arch::{Arch, RegId as _, Registers as _};

/// Registers with a distinct value in every byte gdb sees.
fn sample() -> Registers {
    let mut r = Registers::default();
    let mut k = 1u8;
    for id in (0..NUM_REGS).filter_map(RegId::from_gdb_number) {
        let v: Vec<u8> = (0..id.size())
            .map(|_| {
                k = k.wrapping_add(37);
                k
            })
            .collect();
        r.write_reg(id, &v).unwrap();
    }
    r
}

fn serialize(r: &Registers) -> Vec<u8> {
    let mut out = Vec::new();
    r.gdb_serialize(|b| out.push(b.expect("every register is available")));
    out
}

#[test]
fn numbers_and_sizes() {
    let sizes: Vec<usize> = (0..NUM_REGS)
        .map(|n| {
            let id = RegId::from_gdb_number(n).unwrap();
            assert_eq!(id.gdb_number(), n);
            assert!(id.is_valid());
            assert_eq!(id.to_raw_id(), Some(n));
            let (id2, size) = RegId::from_raw_id(n).unwrap();
            assert_eq!(id2, id);
            assert_eq!(size.map(NonZeroUsize::get), Some(id.size()));
            id.size()
        })
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), G_PACKET_SIZE);
    let avx512: usize = (NUM_REGS..NUM_REGS_AVX512)
        .map(|n| {
            let id = RegId::from_gdb_number(n).unwrap();
            assert_eq!(id.gdb_number(), n);
            id.size()
        })
        .sum();
    assert_eq!(G_PACKET_SIZE + avx512, G_PACKET_SIZE_AVX512);
    assert_eq!(RegId::from_gdb_number(NUM_REGS_AVX512), None);
    assert_eq!(RegId::from_gdb_number(116), Some(RegId::Zmmh(0)));
    assert_eq!(RegId::from_gdb_number(147), Some(RegId::Zmmh(31)));
    assert!(!RegId::Gpr(16).is_valid());
    assert!(!RegId::Ymmh(16).is_valid());
    assert_eq!(RegId::from_gdb_number(57), Some(RegId::OrigRax));
    assert_eq!(RegId::from_gdb_number(58), Some(RegId::FsBase));
    assert_eq!(RegId::from_gdb_number(60), Some(RegId::Ymmh(0)));
}

#[test]
fn serialize_round_trip() {
    let r = sample();
    let bytes = serialize(&r);
    assert_eq!(bytes.len(), G_PACKET_SIZE);
    let mut back = Registers::default();
    back.gdb_deserialize(&bytes).unwrap();
    assert_eq!(back, r);
    assert_eq!(serialize(&back), bytes);

    let before = back;
    assert!(back.gdb_deserialize(&bytes[..G_PACKET_SIZE - 1]).is_err());
    let mut long = bytes.clone();
    long.push(0);
    assert!(back.gdb_deserialize(&long).is_err());
    assert!(back.gdb_deserialize(&[]).is_err());
    assert_eq!(back, before);
}

#[test]
fn layout_puts_each_register_where_gdb_expects() {
    let mut r = Registers::default();
    r.gpr.rax = 0x1122_3344_5566_7788;
    r.gpr.rbx = 2;
    r.gpr.rsp = 7;
    r.gpr.r15 = 15;
    r.gpr.rip = 0x40_1000;
    r.gpr.eflags = 0x246;
    r.gpr.cs = 0x33;
    r.gpr.gs = 0x1234;
    r.gpr.orig_rax = u64::MAX;
    r.gpr.fs_base = 0x7fff_0000_1000;
    r.gpr.gs_base = 0x5a5a;
    r.fp.st[0][9] = 0x3f;
    r.fp.fctrl = 0x37f;
    r.fp.fop = 0x7ff;
    r.fp.xmm[0][0] = 0xee;
    r.fp.xmm[15][15] = 0xef;
    r.fp.mxcsr = 0x1f80;
    r.fp.ymmh[0][0] = 0xaa;
    r.fp.ymmh[15][15] = 0xab;
    assert_eq!(r.pc(), 0x40_1000);
    let b = serialize(&r);
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    assert_eq!(u64_at(0), 0x1122_3344_5566_7788);
    assert_eq!(u64_at(8), 2);
    assert_eq!(u64_at(56), 7);
    assert_eq!(u64_at(120), 15);
    assert_eq!(u64_at(128), 0x40_1000);
    assert_eq!(u32_at(136), 0x246);
    assert_eq!(u32_at(140), 0x33);
    assert_eq!(u32_at(160), 0x1234);
    assert_eq!(b[164 + 9], 0x3f);
    assert_eq!(u32_at(244), 0x37f);
    assert_eq!(u32_at(272), 0x7ff);
    assert_eq!(b[276], 0xee);
    assert_eq!(b[276 + 16 * 16 - 1], 0xef);
    assert_eq!(u32_at(532), 0x1f80);
    assert_eq!(u64_at(536), u64::MAX);
    assert_eq!(u64_at(544), 0x7fff_0000_1000);
    assert_eq!(u64_at(552), 0x5a5a);
    assert_eq!(b[560], 0xaa);
    assert_eq!(b[815], 0xab);
}

#[test]
fn single_registers_match_the_g_packet() {
    let r = sample();
    let g = serialize(&r);
    let mut offset = 0;
    for n in 0..NUM_REGS {
        let id = RegId::from_gdb_number(n).unwrap();
        let mut buf = [0u8; 16];
        let len = r.read_reg(id, &mut buf).unwrap();
        assert_eq!(&buf[..len], &g[offset..offset + len], "register {n}");
        // Writing one register changes exactly its bytes of the g packet.
        let mut w = r;
        let new = vec![0x5au8; len];
        w.write_reg(id, &new).unwrap();
        let g2 = serialize(&w);
        assert_eq!(&g2[offset..offset + len], &new[..]);
        assert_eq!(&g2[..offset], &g[..offset]);
        assert_eq!(&g2[offset + len..], &g[offset + len..]);
        assert!(w.write_reg(id, &new[1..]).is_err());
        assert_eq!(r.read_reg(id, &mut buf[..len - 1]), None);
        offset += len;
    }
    assert_eq!(offset, G_PACKET_SIZE);
    let mut w = r;
    assert!(w.write_reg(RegId::Xmm(16), &[0; 16]).is_err());
    assert_eq!(r.read_reg(RegId::Segment(6), &mut [0; 16]), None);
}

#[test]
fn write_zero_extends_32_bit_views() {
    let mut r = Registers::default();
    r.gpr.eflags = u64::MAX;
    r.write_reg(RegId::Eflags, &0x202u32.to_le_bytes()).unwrap();
    assert_eq!(r.gpr.eflags, 0x202);
    r.write_reg(RegId::Segment(0), &0x33u32.to_le_bytes())
        .unwrap();
    assert_eq!(r.gpr.cs, 0x33);
}

/// Every tag of `xml`, in order: (name, is closing, is self-closing).
fn tags(xml: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unterminated tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let closing = tag.starts_with('/');
        let self_closing = tag.ends_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap()
            .to_string();
        out.push((name, closing, self_closing));
    }
    out
}

/// The value of attribute `attr` in the tag text `tag`.
fn attr<'a>(tag: &'a str, attr: &str) -> Option<&'a str> {
    let key = format!(" {attr}=\"");
    let start = tag.find(&key)? + key.len();
    Some(&tag[start..start + tag[start..].find('"')?])
}

#[test]
fn description_is_well_formed_and_matches_the_layout() {
    let xml = X86_64Linux::target_description_xml().unwrap();
    assert!(!xml.contains("xi:include"));
    assert!(xml.contains("<architecture>i386:x86-64</architecture>"));
    assert!(xml.contains("<osabi>GNU/Linux</osabi>"));
    let mut stack = Vec::new();
    for (name, closing, self_closing) in tags(xml) {
        if closing {
            assert_eq!(stack.pop(), Some(name));
        } else if !self_closing {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");

    let regs: Vec<&str> = xml
        .split("<reg ")
        .skip(1)
        .map(|s| &s[..s.find("/>").unwrap()])
        .collect();
    assert_eq!(regs.len(), NUM_REGS);
    for (n, tag) in regs.iter().enumerate() {
        let id = RegId::from_gdb_number(n).unwrap();
        let tag = format!(" {tag}");
        assert_eq!(attr(&tag, "regnum"), Some(n.to_string().as_str()));
        assert_eq!(
            attr(&tag, "bitsize"),
            Some((id.size() * 8).to_string().as_str())
        );
        assert_eq!(attr(&tag, "name"), Some(id.describe().0.as_str()));
    }
    for name in [
        "orig_rax", "fs_base", "gs_base", "ymm0h", "ymm15h", "st7", "mxcsr",
    ] {
        assert!(xml.contains(&format!("name=\"{name}\"")), "{name}");
    }
    for ty in ["vec128", "i387_ext", "i386_eflags", "i386_mxcsr"] {
        assert!(xml.contains(&format!("type=\"{ty}\"")), "{ty}");
    }
}

/// gdb itself reads the description: it must accept it, number the registers as we do and
/// put each at the `g` packet offset `gdb_serialize` uses.
#[test]
fn gdb_agrees_with_the_layout() {
    gdb_layout(false);
}

/// The same with the AVX-512 registers.
#[test]
fn gdb_agrees_with_the_avx512_layout() {
    gdb_layout(true);
}

fn gdb_layout(with_avx512: bool) {
    let (n_regs, g_size) = if with_avx512 {
        (NUM_REGS_AVX512, G_PACKET_SIZE_AVX512)
    } else {
        (NUM_REGS, G_PACKET_SIZE)
    };
    let dir = std::env::temp_dir().join(format!(
        "deja-gdb-arch-{}-{with_avx512}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("target.xml");
    std::fs::write(&file, description(with_avx512)).unwrap();
    let out = std::process::Command::new("gdb")
        .args(["-nx", "-batch", "-ex"])
        .arg(format!("set tdesc filename {}", file.display()))
        .args(["-ex", "maint print remote-registers"])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            println!("note: skipping, cannot run gdb: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gdb failed: {stderr}");
    let complaint = stderr.to_lowercase();
    assert!(
        !complaint.contains("error") && !complaint.contains("warning"),
        "gdb complained: {stderr}"
    );

    // Columns: Name Nr Rel Offset Size Type Rmt-Nr g/G-Offset; the last two are present
    // for registers the remote side transfers.
    let mut seen = vec![None; n_regs];
    for line in stdout.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(size), Ok(rmt), Ok(goff)) = (
            f[4].parse::<usize>(),
            f[f.len() - 2].parse::<usize>(),
            f[f.len() - 1].parse::<usize>(),
        ) else {
            continue;
        };
        assert!(rmt < n_regs, "gdb expects remote register {rmt}: {line}");
        seen[rmt] = Some((f[0].to_string(), size, goff));
    }
    let mut offset = 0;
    for (n, s) in seen.iter().enumerate() {
        let id = RegId::from_gdb_number(n).unwrap();
        let (name, size, goff) = s
            .clone()
            .unwrap_or_else(|| panic!("gdb does not transfer register {n}:\n{stdout}"));
        assert_eq!(name, id.describe().0, "register {n}");
        assert_eq!(size, id.size(), "size of {name}");
        assert_eq!(goff, offset, "g packet offset of {name}");
        offset += size;
    }
    assert_eq!(offset, g_size);
}
