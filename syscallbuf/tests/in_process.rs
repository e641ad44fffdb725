//! Runs the real library in this test process, without ptrace: its segments mapped at
//! `LIB_BASE`, a slot as this thread's `gs` base, and a stub like the recorder's calling the
//! hook. In-process the traced path is just a real syscall.

use std::arch::asm;
use std::ptr::{read_volatile, write_volatile};
use syscallbuf::abi::{self, Case, Cond, OutSpec, SlotHeader, Spec};
use syscallbuf::{config_bytes, encode_records, loaded, parse_records, slot_header, Record};

/// What the harness loads before calling the stub and stores after (offsets used in the asm).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Regs {
    rax: u64,            // 0
    rdi: u64,            // 8
    rsi: u64,            // 16
    rdx: u64,            // 24
    r10: u64,            // 32
    r8: u64,             // 40
    r9: u64,             // 48
    rbx: u64,            // 56
    rbp: u64,            // 64
    r12: u64,            // 72
    r13: u64,            // 80
    r14: u64,            // 88
    r15: u64,            // 96
    rcx: u64,            // 104
    r11: u64,            // 112
    flags_before: u64,   // 120
    flags_after: u64,    // 128
    rsp_before: u64,     // 136
    rsp_after: u64,      // 144
    stub: u64,           // 152
    xmm: [[u64; 2]; 16], // 160
}

/// Calls the stub at `stub` with `nr` and `args` in the syscall registers, known values in every
/// other register (and CF, DF set), and returns the registers it came back with.
fn call(stub: u64, nr: u64, args: [u64; 6]) -> Regs {
    let mut r = Regs {
        rax: nr,
        rdi: args[0],
        rsi: args[1],
        rdx: args[2],
        r10: args[3],
        r8: args[4],
        r9: args[5],
        rbx: 0x1111_2222_3333_4444,
        rbp: 0x5555_6666_7777_8888,
        r12: 0x1212_1212_1212_1212,
        r13: 0x1313_1313_1313_1313,
        r14: 0x1414_1414_1414_1414,
        r15: 0x1515_1515_1515_1515,
        stub,
        ..Regs::default()
    };
    for (i, x) in r.xmm.iter_mut().enumerate() {
        *x = [
            0xa0a0_0000_0000_0000 | i as u64,
            0x0b0b_0000_0000_0000 | (i as u64) << 8,
        ];
    }
    let p: *mut Regs = &mut r;
    // SAFETY: the asm saves and restores every callee-saved register it uses (rbx, rbp,
    // r12-r15), declares the others clobbered, leaves DF clear and rsp as it found it; the stub
    // and the hook preserve the stack below the red zone they skip.
    unsafe {
        asm!(
            "push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
            "mov [rdi + 136], rsp",
            "push rdi",
            "pushfq", "pop rax", "or rax, 0x401", "mov [rdi + 120], rax", "push rax", "popfq",
            "movdqu xmm0, [rdi + 160]", "movdqu xmm1, [rdi + 176]",
            "movdqu xmm2, [rdi + 192]", "movdqu xmm3, [rdi + 208]",
            "movdqu xmm4, [rdi + 224]", "movdqu xmm5, [rdi + 240]",
            "movdqu xmm6, [rdi + 256]", "movdqu xmm7, [rdi + 272]",
            "movdqu xmm8, [rdi + 288]", "movdqu xmm9, [rdi + 304]",
            "movdqu xmm10, [rdi + 320]", "movdqu xmm11, [rdi + 336]",
            "movdqu xmm12, [rdi + 352]", "movdqu xmm13, [rdi + 368]",
            "movdqu xmm14, [rdi + 384]", "movdqu xmm15, [rdi + 400]",
            "mov rax, [rdi]", "mov rsi, [rdi + 16]", "mov rdx, [rdi + 24]",
            "mov r10, [rdi + 32]", "mov r8, [rdi + 40]", "mov r9, [rdi + 48]",
            "mov rbx, [rdi + 56]", "mov rbp, [rdi + 64]", "mov r12, [rdi + 72]",
            "mov r13, [rdi + 80]", "mov r14, [rdi + 88]", "mov r15, [rdi + 96]",
            "mov rcx, [rdi + 152]", "mov rdi, [rdi + 8]",
            "call rcx",
            "pushfq",
            "xchg rdi, [rsp + 8]",
            "pop qword ptr [rdi + 128]",
            "pop qword ptr [rdi + 8]",
            "mov [rdi + 144], rsp",
            "mov [rdi], rax", "mov [rdi + 16], rsi", "mov [rdi + 24], rdx",
            "mov [rdi + 32], r10", "mov [rdi + 40], r8", "mov [rdi + 48], r9",
            "mov [rdi + 56], rbx", "mov [rdi + 64], rbp", "mov [rdi + 72], r12",
            "mov [rdi + 80], r13", "mov [rdi + 88], r14", "mov [rdi + 96], r15",
            "mov [rdi + 104], rcx", "mov [rdi + 112], r11",
            "movdqu [rdi + 160], xmm0", "movdqu [rdi + 176], xmm1",
            "movdqu [rdi + 192], xmm2", "movdqu [rdi + 208], xmm3",
            "movdqu [rdi + 224], xmm4", "movdqu [rdi + 240], xmm5",
            "movdqu [rdi + 256], xmm6", "movdqu [rdi + 272], xmm7",
            "movdqu [rdi + 288], xmm8", "movdqu [rdi + 304], xmm9",
            "movdqu [rdi + 320], xmm10", "movdqu [rdi + 336], xmm11",
            "movdqu [rdi + 352], xmm12", "movdqu [rdi + 368], xmm13",
            "movdqu [rdi + 384], xmm14", "movdqu [rdi + 400], xmm15",
            "cld",
            "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
            inout("rdi") p => _,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
    }
    // Everything but rax, rcx and r11 comes back as it went in.
    let mut expect = r;
    let back = unsafe { p.read() };
    expect.rax = back.rax;
    expect.rcx = stub + 11; // the return address into the stub
    expect.r11 = back.flags_before;
    expect.flags_after = back.flags_before;
    expect.rsp_after = back.rsp_before;
    expect.flags_before = back.flags_before;
    expect.rsp_before = back.rsp_before;
    assert_eq!(
        back, expect,
        "registers not preserved by the hook (nr {nr})"
    );
    back
}

/// Maps `len` bytes at exactly `addr`, read-write.
fn map_at(addr: u64, len: usize) -> *mut u8 {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(
        p as u64,
        addr,
        "cannot map {len} bytes at {addr:#x}: {}",
        std::io::Error::last_os_error()
    );
    p as *mut u8
}

fn spec(probe: u8, outs: [OutSpec; 2]) -> Spec {
    Spec {
        probe,
        outs,
        ..Spec::NONE
    }
}

fn out(kind: u8, arg: u8, count_arg: u8, size: u32) -> OutSpec {
    OutSpec {
        kind,
        arg,
        count_arg,
        pad: 0,
        size,
    }
}

struct Slot(*mut SlotHeader);

impl Slot {
    fn get(&self) -> SlotHeader {
        // SAFETY: the slot is mapped for the whole test; only this thread runs the hook.
        unsafe { read_volatile(self.0) }
    }
    fn set(&self, f: impl FnOnce(&mut SlotHeader)) {
        let mut h = self.get();
        f(&mut h);
        // SAFETY: as in `get`.
        unsafe { write_volatile(self.0, h) }
    }
    fn buf(&self) -> *mut u8 {
        // SAFETY: the buffer lies inside the slot's mapping.
        unsafe { (self.0 as *mut u8).add(abi::BUF_OFF as usize) }
    }
    fn records(&self) -> Vec<Record> {
        let used = self.get().used as usize;
        // SAFETY: `used` <= BUF_SIZE bytes of the mapped buffer.
        let b = unsafe { std::slice::from_raw_parts(self.buf(), used) };
        parse_records(b).expect("the library's records parse")
    }
}

fn pipe(nonblock: bool) -> (i32, i32) {
    let mut fds = [0i32; 2];
    let flags = if nonblock { libc::O_NONBLOCK } else { 0 };
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) }, 0);
    (fds[0], fds[1])
}

fn monotonic() -> [u8; 16] {
    let mut ts = [0u8; 16];
    // SAFETY: ts is a timespec-sized buffer.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr() as *mut _) },
        0
    );
    ts
}

fn ns(ts: &[u8; 16]) -> u128 {
    let s = u64::from_le_bytes(ts[..8].try_into().unwrap()) as u128;
    let n = u64::from_le_bytes(ts[8..].try_into().unwrap()) as u128;
    s * 1_000_000_000 + n
}

const EAGAIN: i64 = -(libc::EAGAIN as i64);

#[test]
fn hook_records_and_replays_in_process() {
    let lib = loaded().expect("library loads");
    for s in &lib.segments {
        let p = map_at(s.addr, s.bytes.len());
        // SAFETY: p maps s.bytes.len() writable bytes; then the segment gets its protection.
        unsafe {
            std::ptr::copy_nonoverlapping(s.bytes.as_ptr(), p, s.bytes.len());
            assert_eq!(libc::mprotect(p as *mut _, s.bytes.len(), s.prot), 0);
        }
    }
    let mut specs = [Spec::default(); abi::MAX_NR];
    let none = out(abi::OUT_NONE, 0, 0, 0);
    specs[libc::SYS_getpid as usize] = spec(abi::PROBE_DIRECT, [none, none]);
    specs[libc::SYS_clock_gettime as usize] =
        spec(abi::PROBE_DIRECT, [out(abi::OUT_FIXED, 1, 0, 16), none]);
    specs[libc::SYS_read as usize] = spec(abi::PROBE_READ, [out(abi::OUT_RET, 1, 2, 0), none]);
    specs[libc::SYS_readv as usize] = spec(abi::PROBE_READV, [out(abi::OUT_IOV, 1, 2, 0), none]);
    // The conditional and executed calls, as `syscallbuf::specs` makes them.
    for nr in [
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_fcntl,
        libc::SYS_ioctl,
        libc::SYS_brk,
    ] {
        specs[nr as usize] = syscallbuf::specs::spec_of(nr as u64)
            .expect("spec converts")
            .expect("buffered");
    }
    // A test-only spec: getppid only when its (ignored) first argument is 7, writing the
    // matched case's bytes at its second.
    let mut conds = Spec::NONE.conds;
    conds[0] = Cond {
        kind: abi::COND_IN,
        arg: 0,
        width: 4,
        ..Spec::NONE.conds[0]
    };
    let mut cases = Spec::NONE.cases;
    cases[0] = Case {
        value: 7,
        size: 0,
        used: abi::CASE_USED,
    };
    cases[1] = Case {
        value: 9,
        size: 0,
        used: abi::CASE_USED,
    };
    specs[libc::SYS_getppid as usize] = Spec {
        probe: abi::PROBE_DIRECT,
        outs: [out(abi::OUT_CASE, 1, 0, 0), none],
        conds,
        cases,
        ..Spec::NONE
    };
    let cfg = config_bytes(abi::MODE_RECORD, &specs);
    // SAFETY: the config symbol lies in the library's writable bss, mapped above.
    unsafe { std::ptr::copy_nonoverlapping(cfg.as_ptr(), lib.config as *mut u8, cfg.len()) };
    let set_mode = |mode: u64| unsafe { write_volatile((lib.config + 8) as *mut u64, mode) };

    let slot_addr = abi::slot_addr(1);
    let slot_ptr = map_at(slot_addr, abi::SLOT_SIZE as usize);
    let h = slot_header(slot_addr, false);
    // SAFETY: the slot is mapped and larger than its header.
    unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), slot_ptr, h.len()) };

    // The stub, as the recorder writes it, without displaced instructions.
    // SAFETY: a fresh anonymous mapping.
    let stub_ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(stub_ptr, libc::MAP_FAILED);
    let mut code = vec![0x48, 0x8d, 0x64, 0x24, 0x80]; // lea rsp, [rsp-128]
    code.extend([0xff, 0x15]); // call [rip + disp32]
    code.extend(13i32.to_le_bytes()); // HOOKPTR at 24, the call ends at 11
    code.extend([0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0]); // lea rsp, [rsp+128]
    code.push(0xc3); // ret
    code.resize(24, 0xcc);
    code.extend(lib.hook.to_le_bytes());
    // SAFETY: the page is writable and 4096 bytes long.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), stub_ptr as *mut u8, code.len()) };
    let stub = stub_ptr as u64;
    let slot_u = slot_addr;

    std::thread::spawn(move || {
        // SAFETY: this thread's gs base is unused by Rust and glibc (they use fs).
        let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1001, slot_u) };
        assert_eq!(
            rc,
            0,
            "arch_prctl(ARCH_SET_GS): {}",
            std::io::Error::last_os_error()
        );
        let slot = Slot(slot_u as *mut SlotHeader);
        let pid = unsafe { libc::getpid() } as i64;

        // RECORD: getpid, buffered.
        let a = [0x10, 0x20, 0x30, 0x40, 0x50, 0x60];
        let r = call(stub, libc::SYS_getpid as u64, a);
        assert_eq!(r.rax as i64, pid);
        let h = slot.get();
        assert_eq!(
            (h.seq, h.calls, h.used, h.locked),
            (1, 1, abi::RECORD_HEAD_SIZE, 0)
        );

        // clock_gettime, buffered with its 16 bytes.
        let mut ts = [0u8; 16];
        let before = monotonic();
        let ta = [
            libc::CLOCK_MONOTONIC as u64,
            ts.as_mut_ptr() as u64,
            7,
            8,
            9,
            10,
        ];
        let r = call(stub, libc::SYS_clock_gettime as u64, ta);
        let after = monotonic();
        assert_eq!(r.rax, 0);
        let ts = unsafe { read_volatile(&ts) };
        assert!(ns(&before) <= ns(&ts) && ns(&ts) <= ns(&after));

        // read from a pipe with data: buffered (preadv2 with RWF_NOWAIT).
        let (rd, wr) = pipe(true);
        assert_eq!(
            unsafe { libc::write(wr, b"hello world".as_ptr() as *const _, 11) },
            11
        );
        let mut buf = [0u8; 64];
        let ra = [rd as u64, buf.as_mut_ptr() as u64, 64, 0, 0, 0];
        let r = call(stub, libc::SYS_read as u64, ra);
        assert_eq!(r.rax, 11);
        let buf = unsafe { read_volatile(&buf) };
        assert_eq!(&buf[..11], b"hello world");

        // readv: 10 bytes over iovecs of 4, 0 and 8 bytes: two writes.
        assert_eq!(
            unsafe { libc::write(wr, b"abcdefghij".as_ptr() as *const _, 10) },
            10
        );
        let (mut v0, mut v2) = ([0u8; 4], [0u8; 8]);
        let iov = [
            libc::iovec {
                iov_base: v0.as_mut_ptr() as *mut _,
                iov_len: 4,
            },
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            libc::iovec {
                iov_base: v2.as_mut_ptr() as *mut _,
                iov_len: 8,
            },
        ];
        let va = [rd as u64, iov.as_ptr() as u64, 3, 0, 0, 0];
        let r = call(stub, libc::SYS_readv as u64, va);
        assert_eq!(r.rax, 10);
        let (v0, v2) = unsafe { (read_volatile(&v0), read_volatile(&v2)) };
        assert_eq!((&v0, &v2[..6]), (b"abcd", &b"efghij"[..]));

        let h = slot.get();
        assert_eq!((h.seq, h.calls), (4, 4));

        // read from the now empty pipe: the probe fails, the traced path returns EAGAIN.
        let mut buf2 = [0u8; 8];
        let ea = [rd as u64, buf2.as_mut_ptr() as u64, 8, 0, 0, 0];
        let r = call(stub, libc::SYS_read as u64, ea);
        assert_eq!(r.rax as i64, EAGAIN);
        assert_eq!(slot.get(), h, "a traced call changed the slot");

        // Not buffered (no spec): traced, no record.
        let r = call(stub, libc::SYS_getuid as u64, [0; 6]);
        assert_eq!(r.rax as u32, unsafe { libc::getuid() });
        assert_eq!(slot.get(), h);

        // Locked, disabled, or mode off: traced.
        for f in [
            (|h: &mut SlotHeader| h.locked = 1) as fn(&mut SlotHeader),
            |h| h.flags = abi::SLOT_DISABLED,
        ] {
            let saved = slot.get();
            slot.set(f);
            let r = call(stub, libc::SYS_getpid as u64, a);
            assert_eq!(r.rax as i64, pid);
            let mut expect = saved;
            f(&mut expect);
            assert_eq!(slot.get(), expect);
            slot.set(|h| *h = saved);
        }
        set_mode(abi::MODE_OFF);
        call(stub, libc::SYS_getpid as u64, a);
        assert_eq!(slot.get(), h);
        set_mode(abi::MODE_RECORD);

        let recs = slot.records();
        assert_eq!(
            recs,
            vec![
                Record {
                    nr: libc::SYS_getpid as u64,
                    args: a,
                    result: pid,
                    writes: vec![]
                },
                Record {
                    nr: libc::SYS_clock_gettime as u64,
                    args: ta,
                    result: 0,
                    writes: vec![(ta[1], ts.to_vec())],
                },
                Record {
                    nr: libc::SYS_read as u64,
                    args: ra,
                    result: 11,
                    writes: vec![(ra[1], b"hello world".to_vec())],
                },
                Record {
                    nr: libc::SYS_readv as u64,
                    args: va,
                    result: 10,
                    writes: vec![
                        (iov[0].iov_base as u64, b"abcd".to_vec()),
                        (iov[2].iov_base as u64, b"efghij".to_vec()),
                    ],
                },
            ]
        );
        assert_eq!(
            h.used,
            72 + (72 + 16 + 16) + (72 + 16 + 16) + (72 + 16 + 8 + 16 + 8)
        );

        // REPLAY: the results and memory come from the records placed.
        let mut ts2 = [0u8; 16];
        let mut buf3 = [0u8; 32];
        let ta2 = [
            libc::CLOCK_MONOTONIC as u64,
            ts2.as_mut_ptr() as u64,
            0,
            0,
            0,
            0,
        ];
        let ra2 = [rd as u64, buf3.as_mut_ptr() as u64, 32, 0, 0, 0];
        let fake_ts: Vec<u8> = (1..=16).collect();
        let placed = vec![
            Record {
                nr: libc::SYS_getpid as u64,
                args: a,
                result: 4242,
                writes: vec![],
            },
            Record {
                nr: libc::SYS_clock_gettime as u64,
                args: ta2,
                result: 0,
                writes: vec![(ta2[1], fake_ts.clone())],
            },
            Record {
                nr: libc::SYS_read as u64,
                args: ra2,
                result: 5,
                writes: vec![(ra2[1], b"fake!".to_vec())],
            },
            Record {
                nr: libc::SYS_getpid as u64,
                args: a,
                result: 1,
                writes: vec![],
            },
        ];
        let bytes = encode_records(&placed);
        let last = encode_records(&placed[..3]).len() as u64;
        // SAFETY: the records fit in the mapped buffer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.buf(), bytes.len()) };
        slot.set(|h| {
            h.used = bytes.len() as u64;
            h.pos = 0;
            h.seq = 0;
            h.calls = 0;
        });
        set_mode(abi::MODE_REPLAY);
        assert_eq!(call(stub, libc::SYS_getpid as u64, a).rax, 4242);
        assert_eq!(call(stub, libc::SYS_clock_gettime as u64, ta2).rax, 0);
        assert_eq!(unsafe { read_volatile(&ts2) }.to_vec(), fake_ts);
        // The pipe is empty: only the record can supply these bytes.
        assert_eq!(call(stub, libc::SYS_read as u64, ra2).rax, 5);
        assert_eq!(&unsafe { read_volatile(&buf3) }[..6], b"fake!\0");
        let h = slot.get();
        assert_eq!((h.pos, h.calls, h.seq, h.diverged), (last, 3, 3, 0));

        // A call that does not match the next record: diverged, traced (the real getpid).
        let b = [0x11, 0x20, 0x30, 0x40, 0x50, 0x60];
        assert_eq!(call(stub, libc::SYS_getpid as u64, b).rax as i64, pid);
        let h2 = slot.get();
        assert_eq!(
            (h2.pos, h2.calls, h2.seq, h2.diverged),
            (last, 3, 3, last + 1)
        );

        // The matching call still replays; then the buffer is exhausted: traced.
        slot.set(|h| h.diverged = 0);
        assert_eq!(call(stub, libc::SYS_getpid as u64, a).rax, 1);
        assert_eq!(call(stub, libc::SYS_getpid as u64, a).rax as i64, pid);
        let h3 = slot.get();
        assert_eq!((h3.pos, h3.calls, h3.diverged), (bytes.len() as u64, 4, 0));

        conditions_and_executed_calls(stub, &slot, &set_mode);

        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
    })
    .join()
    .expect("the hook thread passed");
}

/// SIGUSR1s handled.
static USR1: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// `rt_sigaction` of `sig` to `handler` through the stub; the old action at `old`.
fn sigaction_args(sig: i32, act: &[u64; 4], old: &mut [u64; 4]) -> [u64; 6] {
    [
        sig as u64,
        act.as_ptr() as u64,
        old.as_mut_ptr() as u64,
        8,
        0,
        0,
    ]
}

/// The action of `sig` as the kernel has it (handler word).
fn handler_of(sig: i32) -> u64 {
    let mut old = [0u64; 4];
    // SAFETY: a query (act NULL) writing one kernel sigaction into `old`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<u8>(),
            old.as_mut_ptr(),
            8,
        )
    };
    assert_eq!(r, 0);
    old[0]
}

/// The current signal mask of this thread.
fn mask() -> u64 {
    let mut m = 0u64;
    // SAFETY: a query writing one 8-byte kernel sigset.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u8>(),
            &mut m as *mut u64,
            8,
        )
    };
    assert_eq!(r, 0);
    m
}

/// Argument conditions (a failing one takes the traced path, without a record), `PROBE_EXEC`
/// calls recorded like direct ones, and in replay run for real with their result checked.
fn conditions_and_executed_calls(stub: u64, slot: &Slot, set_mode: &dyn Fn(u64)) {
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    let segv = 1u64 << (libc::SIGSEGV - 1);
    set_mode(abi::MODE_RECORD);
    slot.set(|h| {
        h.used = 0;
        h.pos = 0;
        h.calls = 0;
        h.diverged = 0;
    });
    let before = slot.get();
    let sig_ign = [libc::SIG_IGN as u64, 0, 0, 0];

    // rt_sigaction(SIGSEGV): its condition fails: traced, no record.
    let mut old = [0u64; 4];
    let segv_query = [libc::SIGSEGV as u64, 0, old.as_mut_ptr() as u64, 8, 0, 0];
    assert_eq!(call(stub, libc::SYS_rt_sigaction as u64, segv_query).rax, 0);
    // ... nor with high bits the kernel ignores.
    let segv_high = [(1 << 32) | libc::SIGSEGV as u64, 0, 0, 8, 0, 0];
    assert_eq!(call(stub, libc::SYS_rt_sigaction as u64, segv_high).rax, 0);
    let after = slot.get();
    assert_eq!(
        (after.used, after.calls, after.seq),
        (before.used, before.calls, before.seq),
        "a traced call made a record"
    );

    // rt_sigaction(SIGUSR2, SIG_IGN): executed and recorded with the old action.
    let mut old = [7u64; 4];
    let ign = sigaction_args(libc::SIGUSR2, &sig_ign, &mut old);
    assert_eq!(call(stub, libc::SYS_rt_sigaction as u64, ign).rax, 0);
    assert_eq!(handler_of(libc::SIGUSR2), libc::SIG_IGN as u64);
    let old_recorded = unsafe { read_volatile(&old) };

    // rt_sigprocmask: a query; SIG_BLOCK of SIGUSR1; not SIG_SETMASK; not a set with SIGSEGV.
    let mut oldset = 0u64;
    let q = [0, 0, &mut oldset as *mut u64 as u64, 8, 0, 0];
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, q).rax, 0);
    let set = usr1;
    let block = [
        libc::SIG_BLOCK as u64,
        &set as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, block).rax, 0);
    assert_ne!(mask() & usr1, 0);
    let n = slot.get().calls;
    assert_eq!(n, 3);
    let segv_set = segv | usr1;
    let block_segv = [
        libc::SIG_BLOCK as u64,
        &segv_set as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    assert_eq!(
        call(stub, libc::SYS_rt_sigprocmask as u64, block_segv).rax,
        0
    );
    let setmask = [
        libc::SIG_SETMASK as u64,
        &set as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, setmask).rax, 0);
    // A set the program cannot read: the library's check fails without faulting (the kernel
    // reads it), and the traced call gets EFAULT.
    let bad = [libc::SIG_BLOCK as u64, 16, 0, 8, 0, 0];
    assert_eq!(
        call(stub, libc::SYS_rt_sigprocmask as u64, bad).rax as i64,
        -(libc::EFAULT as i64)
    );
    assert_eq!(
        slot.get().calls,
        n,
        "SIGSEGV's bit, SIG_SETMASK or a bad set was buffered"
    );
    let unblock = [
        libc::SIG_UNBLOCK as u64,
        &segv_set as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    // (Traced too: its set names SIGSEGV.)
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, unblock).rax, 0);
    assert_eq!(mask() & (usr1 | segv), 0);
    // An unblock that makes a pending signal deliverable is traced (the handler runs at the
    // traced call's exit); without a pending one it is buffered.
    // SAFETY: a handler that only stores to an atomic; SIGUSR1 is this test's.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
    let usr1_only = usr1;
    let block1 = [
        libc::SIG_BLOCK as u64,
        &usr1_only as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    let unblock1 = [
        libc::SIG_UNBLOCK as u64,
        &usr1_only as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, block1).rax, 0);
    // SAFETY: a signal to this very thread, blocked: it stays pending.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::syscall(libc::SYS_gettid),
            libc::SIGUSR1,
        )
    };
    let c = slot.get().calls;
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, unblock1).rax, 0);
    assert_eq!(
        slot.get().calls,
        c,
        "an unblock of a pending signal was buffered"
    );
    assert_eq!(USR1.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, block1).rax, 0);
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, unblock1).rax, 0);
    assert_eq!(slot.get().calls, c + 2);
    // SAFETY: back to the default action; nothing raises SIGUSR1 any more.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_DFL) };

    // fcntl F_GETFD buffered, F_DUPFD traced; ioctl TCGETS on a pipe: ENOTTY, buffered
    // without writes; an unknown request traced.
    let (rd, wr) = pipe(false);
    let getfd = [rd as u64, libc::F_GETFD as u64, 0, 0, 0, 0];
    assert_eq!(call(stub, libc::SYS_fcntl as u64, getfd).rax, 0);
    let dup = [rd as u64, libc::F_DUPFD as u64, 100, 0, 0, 0];
    let dupped = call(stub, libc::SYS_fcntl as u64, dup).rax as i32;
    assert!(dupped >= 100);
    let mut termios = [0u8; 64];
    let tcgets = [
        rd as u64,
        libc::TCGETS,
        termios.as_mut_ptr() as u64,
        0,
        0,
        0,
    ];
    assert_eq!(
        call(stub, libc::SYS_ioctl as u64, tcgets).rax as i64,
        -(libc::ENOTTY as i64)
    );
    let other = [
        rd as u64,
        libc::FIONREAD,
        termios.as_mut_ptr() as u64,
        0,
        0,
        0,
    ];
    assert_eq!(call(stub, libc::SYS_ioctl as u64, other).rax, 0);
    // The test spec: 7 and 9 (low 32 bits) pass, 8 does not.
    let ppid = unsafe { libc::getppid() } as u64;
    for (a0, buffered) in [(7u64, true), (8, false), ((1 << 40) | 9, true)] {
        let c = slot.get().calls;
        assert_eq!(
            call(stub, libc::SYS_getppid as u64, [a0, 0, 0, 0, 0, 0]).rax,
            ppid
        );
        assert_eq!(
            slot.get().calls - c,
            u64::from(buffered),
            "getppid({a0:#x})"
        );
    }
    // brk(0): executed.
    let brk = call(stub, libc::SYS_brk as u64, [0; 6]).rax;
    let recs = slot.records();
    let names: Vec<u64> = recs.iter().map(|r| r.nr).collect();
    assert_eq!(
        names,
        [
            libc::SYS_rt_sigaction,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigprocmask,
            libc::SYS_fcntl,
            libc::SYS_ioctl,
            libc::SYS_getppid,
            libc::SYS_getppid,
            libc::SYS_brk,
        ]
        .map(|n| n as u64)
    );
    assert_eq!(
        recs[0].writes,
        vec![(
            ign[2],
            old_recorded.iter().flat_map(|w| w.to_le_bytes()).collect()
        )]
    );
    assert_eq!(recs[1].writes, vec![(q[2], oldset.to_le_bytes().to_vec())]);
    assert!(recs[7].writes.is_empty(), "a failed ioctl wrote");
    assert_eq!(recs[10].result as u64, brk);

    // REPLAY: the rt_sigaction runs for real (SIGUSR2 goes back from SIG_DFL to SIG_IGN),
    // brk runs and matches; a brk whose recorded result differs is a divergence, the program
    // gets the real result.
    // SAFETY: SIG_DFL for SIGUSR2, process-wide, in a test that raises no SIGUSR2.
    unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) };
    let mut old2 = [9u64; 4];
    let ign2 = sigaction_args(libc::SIGUSR2, &sig_ign, &mut old2);
    let placed = vec![
        Record {
            nr: libc::SYS_rt_sigaction as u64,
            args: ign2,
            result: 0,
            // Not applied: the kernel writes the old action itself.
            writes: vec![(ign2[2], vec![0xee; 32])],
        },
        Record {
            nr: libc::SYS_brk as u64,
            args: [0; 6],
            result: brk as i64,
            writes: vec![],
        },
        Record {
            nr: libc::SYS_brk as u64,
            args: [0; 6],
            result: brk as i64 + 4096,
            writes: vec![],
        },
        Record {
            nr: libc::SYS_getppid as u64,
            args: [7, 0, 0, 0, 0, 0],
            result: 5,
            writes: vec![],
        },
    ];
    let bytes = encode_records(&placed);
    let third = encode_records(&placed[..2]).len() as u64;
    // SAFETY: the records fit in the mapped buffer.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.buf(), bytes.len()) };
    slot.set(|h| {
        h.used = bytes.len() as u64;
        h.pos = 0;
        h.seq = 0;
        h.calls = 0;
        h.diverged = 0;
        h.diverged_how = 0;
    });
    set_mode(abi::MODE_REPLAY);
    assert_eq!(call(stub, libc::SYS_rt_sigaction as u64, ign2).rax, 0);
    assert_eq!(handler_of(libc::SIGUSR2), libc::SIG_IGN as u64);
    let old2 = unsafe { read_volatile(&old2) };
    assert_eq!(old2, [libc::SIG_DFL as u64, old2[1], old2[2], old2[3]]);
    assert_eq!(call(stub, libc::SYS_brk as u64, [0; 6]).rax, brk);
    assert_eq!(call(stub, libc::SYS_brk as u64, [0; 6]).rax, brk);
    let h = slot.get();
    assert_eq!(
        (h.pos, h.calls, h.diverged, h.diverged_how, h.exec_result),
        (third, 2, third + 1, abi::DIVERGED_RESULT, brk)
    );
    // Diverged: the next call takes the traced path although its record is there.
    let real_ppid = unsafe { libc::getppid() } as u64;
    assert_eq!(
        call(stub, libc::SYS_getppid as u64, [7, 0, 0, 0, 0, 0]).rax,
        real_ppid
    );
    assert_eq!(slot.get().pos, third);

    // A set whose SIGSEGV bit appears only in replay: matched but failing its condition.
    let seg = segv;
    let block_r = [
        libc::SIG_BLOCK as u64,
        &seg as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    let placed = vec![Record {
        nr: libc::SYS_rt_sigprocmask as u64,
        args: block_r,
        result: 0,
        writes: vec![],
    }];
    let bytes = encode_records(&placed);
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.buf(), bytes.len()) };
    slot.set(|h| {
        h.used = bytes.len() as u64;
        h.pos = 0;
        h.calls = 0;
        h.diverged = 0;
        h.diverged_how = 0;
    });
    assert_eq!(call(stub, libc::SYS_rt_sigprocmask as u64, block_r).rax, 0);
    let h = slot.get();
    assert_eq!(
        (h.pos, h.diverged, h.diverged_how),
        (0, 1, abi::DIVERGED_COND)
    );
    // (The traced path blocked it: unblock for the rest of the test.)
    let unblock_segv = [
        libc::SIG_UNBLOCK as u64,
        &seg as *const u64 as u64,
        0,
        8,
        0,
        0,
    ];
    set_mode(abi::MODE_OFF);
    call(stub, libc::SYS_rt_sigprocmask as u64, unblock_segv);
    unsafe {
        libc::signal(libc::SIGUSR2, libc::SIG_DFL);
        libc::close(rd);
        libc::close(wr);
        libc::close(dupped);
    }
    set_mode(abi::MODE_RECORD);
}
