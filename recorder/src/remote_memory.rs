//! Syscalls that write another process's memory: `process_vm_writev` is recorded as a write
//! into the caller's own memory, so one aimed at another process is refused.

/// The recording error for syscall `nr(args)` of process `tgid`, if it must be refused:
/// `process_vm_writev` into a process other than the caller's own.
pub fn refusal(tgid: i32, nr: u64, args: &[u64; 6]) -> Option<String> {
    if nr != libc::SYS_process_vm_writev as u64 {
        return None;
    }
    let target = args[0] as i32;
    let own =
        target == tgid || std::path::Path::new(&format!("/proc/{tgid}/task/{target}")).exists();
    (!own).then(|| {
        format!(
            "process_vm_writev into another process ({target}) is not supported yet; only \
             into the caller's own memory"
        )
    })
}
