//! What the recorder says (and does) about an ioctl request the syscall table does not know.

use syscalls::IoctlModel;

/// For an ioctl `request` the table does not know: whether the recorder refuses it (the
/// program gets `ENOTTY`), and the warning to print once for it. `None` for a known request
/// or one whose encoding says it writes nothing.
pub fn ioctl_warning(request: u64) -> Option<(bool, String)> {
    let req = request & 0xffff_ffff;
    match syscalls::ioctl_model(request) {
        IoctlModel::Known | IoctlModel::WritesNothing => None,
        IoctlModel::EncodedSize => Some((
            false,
            format!(
                "ioctl request {req:#x} is not modelled: only the {} bytes its number encodes \
                 are recorded, so the replay may differ if it wrote elsewhere",
                (req >> 16) & 0x3fff
            ),
        )),
        IoctlModel::Refused => Some((
            true,
            format!(
                "ioctl request {req:#x} is not modelled and its number does not say what it \
                 writes: the program gets ENOTTY for it"
            ),
        )),
    }
}
