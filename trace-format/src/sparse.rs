//! Files with holes: copied and hashed extent by extent (`SEEK_DATA` / `SEEK_HOLE`), so a
//! 1 TiB sparse memfd costs what its data costs, never its size.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Bytes copied or hashed per read.
const STEP: usize = 1 << 20;

/// The data extents `(offset, len)` of `file` of `size` bytes, in order. A file system that
/// does not report holes (or an error) makes the whole file one extent.
pub fn data_extents(file: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        // SAFETY: lseek on a descriptor this function borrows; it only moves the file offset.
        let data = unsafe { libc::lseek(fd, pos as i64, libc::SEEK_DATA) };
        if data < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole up to the end
            }
            return vec![(0, size)];
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            size
        } else {
            (hole as u64).min(size)
        };
        if end > data as u64 {
            out.push((data as u64, end - data as u64));
        }
        pos = end.max(data as u64 + 1);
    }
    out
}

/// Whether `extents` cover a file of `size` bytes without a hole.
fn dense(extents: &[(u64, u64)], size: u64) -> bool {
    size == 0 || extents == [(0, size)]
}

/// Copies `from` (of `size` bytes) into the empty file `to`, leaving its holes as holes.
pub fn copy(from: &File, to: &File, size: u64) -> io::Result<()> {
    copy_extents(from, to, &data_extents(from, size))?;
    to.set_len(size)
}

/// Copies the bytes of `extents` (offset, length) of `from` to the same offsets of `to`.
fn copy_extents(from: &File, to: &File, extents: &[(u64, u64)]) -> io::Result<()> {
    let mut buf = vec![0u8; STEP];
    for &(off, len) in extents {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(STEP as u64) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            let got = from.read_at(chunk, off + done)?;
            if got == 0 {
                break; // the file shrank meanwhile
            }
            to.write_all_at(chunk.get(..got).unwrap_or_default(), off + done)?;
            done += got as u64;
        }
    }
    Ok(())
}

/// Makes the content of `to` that of `from` (of `size` bytes) in place: the gaps between
/// `from`'s data extents become holes in `to` (punched), its data is written over, and the size
/// set last. Unlike truncating `to` and copying, this keeps the private copy-on-write pages of
/// mappings of `to` (a truncation would discard them), as a file changing under a private
/// mapping does.
pub fn overwrite(from: &File, to: &File, size: u64) -> io::Result<()> {
    let extents = data_extents(from, size);
    let old = to.metadata()?.len().min(size);
    let mut pos = 0u64;
    let gaps = extents
        .iter()
        .map(|&(off, len)| {
            let gap = (pos, off);
            pos = off + len;
            gap
        })
        .collect::<Vec<_>>();
    for (start, end) in gaps.into_iter().chain(std::iter::once((pos, size))) {
        let end = end.min(old);
        if end > start {
            punch(to, start, end - start)?;
        }
    }
    copy_extents(from, to, &extents)?;
    to.set_len(size)
}

/// Deallocates `len` bytes of `file` at `offset`, keeping its size: they read as zeros.
fn punch(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor this function borrows; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The hex content hash of `file` (of `size` bytes): BLAKE3 of the bytes for a file without
/// holes; for a file with holes, BLAKE3 of `"deja-sparse-1"`, the size and, for each data
/// extent, its offset, its length and its bytes (all integers little-endian u64), so holes are
/// never read.
pub fn hash(file: &File, size: u64) -> io::Result<String> {
    let extents = data_extents(file, size);
    let mut hasher = blake3::Hasher::new();
    let sparse = !dense(&extents, size);
    if sparse {
        hasher.update(b"deja-sparse-1");
        hasher.update(&size.to_le_bytes());
    }
    let mut buf = vec![0u8; STEP];
    for (off, len) in extents {
        if sparse {
            hasher.update(&off.to_le_bytes());
            hasher.update(&len.to_le_bytes());
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(STEP as u64) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            let got = file.read_at(chunk, off + done)?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was hashed",
                ));
            }
            hasher.update(chunk.get(..got).unwrap_or_default());
            done += got as u64;
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_is_copied_and_hashed_by_its_data_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("src"))
            .unwrap();
        let size = 1u64 << 40; // 1 TiB: reading it would take minutes
        src.set_len(size).unwrap();
        src.write_all_at(b"x", 4096 * 7).unwrap();
        let extents = data_extents(&src, size);
        assert_eq!(extents.len(), 1, "{extents:?}");
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        copy(&src, &dst, size).unwrap();
        assert_eq!(dst.metadata().unwrap().len(), size);
        let mut b = [0u8; 1];
        dst.read_exact_at(&mut b, 4096 * 7).unwrap();
        assert_eq!(&b, b"x");
        assert_eq!(hash(&src, size).unwrap(), hash(&dst, size).unwrap());
    }

    #[test]
    fn overwrite_makes_holes_and_data_of_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join(name))
                .unwrap()
        };
        let (from, to) = (open("from"), open("to"));
        from.set_len(5 * 4096).unwrap();
        from.write_all_at(b"new", 4096).unwrap();
        to.write_all_at(&[7u8; 6 * 4096], 0).unwrap();
        overwrite(&from, &to, 5 * 4096).unwrap();
        let mut got = vec![0u8; 5 * 4096];
        to.read_exact_at(&mut got, 0).unwrap();
        let mut want = vec![0u8; 5 * 4096];
        want[4096..4099].copy_from_slice(b"new");
        assert!(got == want);
        assert_eq!(to.metadata().unwrap().len(), 5 * 4096);
    }

    #[test]
    fn a_dense_file_hashes_to_its_plain_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(
            hash(&f, 5).unwrap(),
            blake3::hash(b"hello").to_hex().to_string()
        );
    }
}
