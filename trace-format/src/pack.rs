//! One-file traces: `deja pack` writes a trace as a zstd-compressed tar archive holding real
//! copies of everything it uses (its index, events, blobs and every stored file, hard-linked
//! system files included), and `unpack` turns such an archive back into a trace directory,
//! trusting none of its bytes (see the README's "Packed traces").

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{sparse, TraceReader, TraceRoot};

/// The name of the archive's first entry, the [`Manifest`].
const MANIFEST: &str = "deja-pack.json";
/// The version of the pack layout this build writes and reads.
const PACK_VERSION: u32 = 1;
/// The largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Trailing bytes tolerated after the archive's end (tar's zero padding).
const MAX_TRAILING_BYTES: u64 = 1 << 16;
/// The first bytes of a zstd frame, which every pack starts with.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The first entry of a pack: what it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The pack layout's version ([`PACK_VERSION`]).
    pub deja_pack: u32,
    /// The packed trace's directory name (e.g. `prog-3`).
    pub name: String,
    /// The trace's digest, as its seal names it (`None` for a trace without a seal).
    pub digest: Option<String>,
    /// Stored files with holes, by hash: their entry holds only their data extents.
    #[serde(default)]
    pub sparse: BTreeMap<String, SparseFile>,
}

/// A stored file with holes: its size and data extents `(offset, len)`, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SparseFile {
    /// The file's size.
    pub size: u64,
    /// Its data extents; the rest are holes.
    pub extents: Vec<(u64, u64)>,
}

/// What [`pack`] wrote.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The manifest (name, digest).
    pub manifest: Manifest,
    /// The size of the pack file.
    pub bytes: u64,
    /// The number of stored files in it.
    pub files: usize,
    /// The bytes of trace data it holds, before compression.
    pub raw_bytes: u64,
}

/// Whether `path` is a regular file that starts as a pack does (a zstd frame).
pub fn is_pack(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 4];
    f.metadata().is_ok_and(|m| m.is_file())
        && f.read_exact(&mut magic).is_ok()
        && magic == ZSTD_MAGIC
}

/// Opens `path` read-only without following a symlink; it must be a regular file.
fn open_regular(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !f.metadata()?.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(f)
}

/// Reads the data extents of a file one after the other.
struct Extents<'a> {
    file: &'a File,
    extents: &'a [(u64, u64)],
    done: u64,
}

impl Read for Extents<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(off, len)) = self.extents.first() {
            if self.done == len {
                self.extents = self.extents.get(1..).unwrap_or_default();
                self.done = 0;
                continue;
            }
            let n = (len - self.done).min(buf.len() as u64) as usize;
            let got = self
                .file
                .read_at(buf.get_mut(..n).unwrap_or_default(), off + self.done)?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a stored file shrank while it was packed",
                ));
            }
            self.done += got as u64;
            return Ok(got);
        }
        Ok(0)
    }
}

/// A reader that reports how many bytes it read.
struct Counted<'a, R>(R, &'a mut dyn FnMut(u64));

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        (self.1)(n as u64);
        Ok(n)
    }
}

/// Appends `size` bytes from `data` to `tar` as regular file `name` with `mode`.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    mode: u32,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data.take(size))
        .with_context(|| format!("writing {name} to the pack"))
}

/// Packs the trace in `dir` into the new file `out` (written beside it under a temporary name,
/// then renamed, mode 0600). The trace is checked first: its digest must be its seal's, and
/// every stored file must match its hash, so that a pack holds only what the recording wrote.
/// `progress` is called as the archive is written, with the bytes of trace data written so far
/// and their total.
pub fn pack(dir: &Path, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Packed> {
    if crate::recording_in_progress(dir) {
        bail!(
            "{} is still being recorded: pack it when its recording ends",
            dir.display()
        );
    }
    let reader = TraceReader::open(dir)?;
    let digest = match reader.seal()? {
        Some(seal) => {
            reader.check_seal(&crate::seal::Policy {
                key: None,
                digest: Some(seal.digest.clone()),
                trust: false,
            })?;
            Some(seal.digest)
        }
        None => None,
    };
    let stored = reader.stored_files()?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "trace".into());
    let mut manifest = Manifest {
        deja_pack: PACK_VERSION,
        name,
        digest,
        sparse: BTreeMap::new(),
    };
    // Every stored file, verified (a hard-linked system file included: its content is the
    // recorded one or the pack is refused), with its extents.
    let mut files = Vec::with_capacity(stored.len());
    for (file_ref, _how) in &stored {
        let (file, path) = reader.open_file(file_ref)?;
        let mode = file.metadata()?.permissions().mode() & 0o700;
        let extents = sparse::data_extents(&file, file_ref.size);
        if file_ref.size != 0 && extents != [(0, file_ref.size)] {
            manifest.sparse.insert(
                file_ref.hash.clone(),
                SparseFile {
                    size: file_ref.size,
                    extents: extents.clone(),
                },
            );
        }
        // Closed until it is written: a trace may store more files than may be open at once.
        drop((file, path));
        files.push((file_ref, mode, extents));
    }

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .with_context(|| format!("{} is not a file name", out.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<u64> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut enc = zstd::Encoder::new(io::BufWriter::new(f), 3)?;
        enc.include_checksum(true)?;
        let mut tar = tar::Builder::new(enc);
        let mut total = 0;
        for name in ["index.sqlite", "events", "blobs"] {
            total += open_regular(&dir.join(name))?.metadata()?.len();
        }
        total += files
            .iter()
            .flat_map(|f| f.2.iter().map(|e| e.1))
            .sum::<u64>();
        let mut done = 0;
        let mut counted = |n: u64| {
            done += n;
            progress(done, total);
        };
        let json = serde_json::to_vec_pretty(&manifest)?;
        append(&mut tar, MANIFEST, 0o600, json.len() as u64, &json[..])?;
        let mut raw = 0;
        for name in ["index.sqlite", "events", "blobs"] {
            let f = open_regular(&dir.join(name))?;
            let len = f.metadata()?.len();
            append(&mut tar, name, 0o600, len, Counted(&f, &mut counted))?;
            raw += len;
        }
        for (file_ref, mode, extents) in &files {
            // Verified again (its identity, remembered by the reader, costs a `statx`).
            let (file, _) = reader.open_file(file_ref)?;
            let hash = &file_ref.hash;
            let len = extents.iter().map(|e| e.1).sum();
            let data = Extents {
                file: &file,
                extents,
                done: 0,
            };
            let data = Counted(data, &mut counted);
            append(&mut tar, &format!("files/{hash}"), *mode | 0o600, len, data)?;
            raw += len;
        }
        let enc = tar.into_inner().context("finishing the pack")?;
        let w = enc.finish().context("finishing the pack")?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, out).with_context(|| format!("renaming the pack to {}", out.display()))?;
        Ok(raw)
    })();
    let raw_bytes = match result {
        Ok(raw) => raw,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    Ok(Packed {
        manifest,
        bytes: fs::metadata(out)?.len(),
        files: files.len(),
        raw_bytes,
    })
}

/// Free bytes for an unprivileged user on the file system of `dir`.
fn free_space(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error()).context(format!("statvfs {}", dir.display()));
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether `name` is one an entry of a pack may have: the manifest, the index, events, blobs
/// or `files/<64 lowercase hex digits>`. Nothing else (no `..`, no absolute path, no other
/// directory) is ever written.
fn allowed_entry(name: &str) -> bool {
    matches!(name, MANIFEST | "index.sqlite" | "events" | "blobs")
        || name.strip_prefix("files/").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Unpacks the pack `file` into `dest`, an empty private directory, checking every entry:
/// only the names a trace has, only regular files, each at most once, their total bounded by
/// the free space of `dest`'s file system; the zstd frame's checksum; and that the result
/// opens as a trace whose every stored file is there with its recorded size (their contents
/// are verified against their hashes at use, as in any trace). Any failure is a one-line
/// error naming the pack; `dest` is left partly filled (the caller removes it).
pub fn unpack(file: &Path, dest: &Path) -> Result<Manifest> {
    let damaged = |what: String| anyhow::anyhow!("damaged pack {}: {what}", file.display());
    let f = open_regular(file)?;
    if !is_pack(file) {
        bail!(
            "{} is not a deja pack (not zstd-compressed)",
            file.display()
        );
    }
    let mut room = free_space(dest)?;
    let decoder = zstd::Decoder::new(f).map_err(|e| damaged(e.to_string()))?;
    let mut archive = tar::Archive::new(decoder);
    let mut manifest: Option<Manifest> = None;
    let mut seen = HashSet::new();
    let entries = archive.entries().map_err(|e| damaged(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !allowed_entry(&raw_name) {
            return Err(damaged(format!(
                "entry {raw_name:?} is not a file of a trace (refused)"
            )));
        }
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(damaged(format!(
                "entry {raw_name:?} is a {kind:?}, not a regular file (refused)"
            )));
        }
        if !seen.insert(raw_name.clone()) {
            return Err(damaged(format!("entry {raw_name:?} appears twice")));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| damaged(e.to_string()))?;
        if raw_name == MANIFEST {
            if size > MAX_MANIFEST_BYTES || manifest.is_some() || seen.len() != 1 {
                return Err(damaged("its manifest is misplaced or too large".into()));
            }
            let mut json = Vec::new();
            entry
                .by_ref()
                .take(MAX_MANIFEST_BYTES)
                .read_to_end(&mut json)
                .map_err(|e| damaged(e.to_string()))?;
            let m: Manifest = serde_json::from_slice(&json)
                .map_err(|e| damaged(format!("its manifest does not parse: {e}")))?;
            if m.deja_pack != PACK_VERSION {
                bail!(
                    "{}: pack version {} is not supported (this deja reads version {PACK_VERSION})",
                    file.display(),
                    m.deja_pack
                );
            }
            manifest = Some(m);
            continue;
        }
        let Some(m) = &manifest else {
            return Err(damaged("it does not start with its manifest".into()));
        };
        if size > room {
            bail!(
                "unpacking {}: not enough free space in {} for {raw_name} ({size} bytes)",
                file.display(),
                dest.display()
            );
        }
        room -= size;
        let path = dest.join(&raw_name);
        if let Some(parent) = path.parent() {
            if parent != dest && !parent.is_dir() {
                crate::writer::create_private_dir(parent, false)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        let exec =
            entry.header().mode().unwrap_or(0) & 0o100 != 0 && raw_name.starts_with("files/");
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(if exec { 0o700 } else { 0o600 })
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let sparse = raw_name
            .strip_prefix("files/")
            .and_then(|h| m.sparse.get(h));
        match sparse {
            None => {
                let n = io::copy(&mut entry, &mut io::BufWriter::new(&out))
                    .map_err(|e| damaged(format!("{raw_name}: {e}")))?;
                if n != size {
                    return Err(damaged(format!("{raw_name} is cut short")));
                }
            }
            Some(sp) => write_sparse(&mut entry, &out, sp, size)
                .map_err(|e| damaged(format!("{raw_name}: {e}")))?,
        }
    }
    let manifest = manifest.ok_or_else(|| damaged("it holds no manifest".into()))?;
    // The rest of the stream: tar's padding, and the end of the zstd frame with its checksum.
    let mut rest = archive.into_inner();
    let trailing = io::copy(
        &mut (&mut rest).take(MAX_TRAILING_BYTES + 1),
        &mut io::sink(),
    )
    .map_err(|e| damaged(e.to_string()))?;
    if trailing > MAX_TRAILING_BYTES {
        return Err(damaged("data follows the end of its archive".into()));
    }
    for name in ["index.sqlite", "events", "blobs"] {
        if !seen.contains(name) {
            return Err(damaged(format!("it holds no {name}")));
        }
    }
    let reader = TraceReader::open(dest).map_err(|e| damaged(e.to_string()))?;
    for (file_ref, _) in reader.stored_files()? {
        let got = fs::symlink_metadata(dest.join("files").join(&file_ref.hash)).map(|m| m.len());
        if got.ok() != Some(file_ref.size) {
            return Err(damaged(format!(
                "the stored copy of {} is missing or of another size",
                file_ref.path
            )));
        }
    }
    Ok(manifest)
}

/// Writes the concatenated data extents `entry` holds (`size` bytes) at their offsets of `out`,
/// leaving holes between them, and sets its size.
fn write_sparse(entry: &mut impl Read, out: &File, sp: &SparseFile, size: u64) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut end = 0u64;
    let mut total = 0u64;
    for &(off, len) in &sp.extents {
        let stop = off
            .checked_add(len)
            .ok_or_else(|| bad("an extent overflows"))?;
        if off < end || stop > sp.size {
            return Err(bad("its extents overlap or pass its end"));
        }
        end = stop;
        total += len;
    }
    if total != size {
        return Err(bad("its extents do not add up to its entry"));
    }
    let mut buf = vec![0u8; 1 << 20];
    for &(off, len) in &sp.extents {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            entry.read_exact(chunk)?;
            out.write_all_at(chunk, off + done)?;
            done += n as u64;
        }
    }
    out.set_len(sp.size)
}

/// The trace a pack holds, unpacked once into the user's cache, `<trace root>/.pool/unpacked/
/// <first 32 hex digits of the pack file's BLAKE3>`: later uses of the same pack (by content)
/// reuse it. A pack is unpacked into a temporary directory beside it, renamed into place when
/// complete, so a cached trace is always whole.
pub fn unpack_cached(file: &Path, root: &TraceRoot) -> Result<PathBuf> {
    let mut hasher = blake3::Hasher::new();
    let mut f = open_regular(file)?;
    io::copy(&mut f, &mut hasher).with_context(|| format!("reading {}", file.display()))?;
    let key = hasher.finalize().to_hex();
    let key = key.get(..32).unwrap_or_default();
    let pool = root.path().join(".pool");
    let cache = pool.join("unpacked");
    crate::writer::create_private_dir(&cache, true)
        .with_context(|| format!("creating {}", cache.display()))?;
    crate::check_private_dir(&pool, "the trace root's pool")?;
    crate::check_private_dir(&cache, "the cache of unpacked traces")?;
    let dir = cache.join(key);
    if dir.join("index.sqlite").is_file() {
        return Ok(dir);
    }
    remove_stale(&cache);
    let tmp = cache.join(format!(".tmp-{key}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    crate::writer::create_private_dir(&tmp, false)
        .with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = unpack(file, &tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        let _ = fs::remove_dir_all(&tmp);
        // Another deja unpacked the same pack meanwhile: use its copy.
        if !dir.join("index.sqlite").is_file() {
            return Err(e).with_context(|| format!("renaming into {}", dir.display()));
        }
    }
    Ok(dir)
}

/// Removes the temporary directories of unpacks whose process is gone (killed mid-unpack).
fn remove_stale(cache: &Path) {
    for entry in fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(".tmp-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
