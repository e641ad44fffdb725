//! The syscall sites patched in earlier recordings, kept in the trace root's file pool
//! (`sites.json`), so that a recording's first process patches ahead too (see the README,
//! "Patching ahead"): per version of a mapped file (device, inode, size and modification time;
//! not the change time, which every recording's hard link to a system file moves), the file
//! offsets of its patched sites with their numbers, function bounds and function bytes. A site read from it is patched only where the process's file has that
//! version and the function's bytes read from the process are the bytes kept, under the same
//! rules as every patch; a cache that cannot be read is an empty one.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fastpath::KnownSite;

/// A file's version: size and modification time (nanoseconds since the epoch).
pub type FileVersion = (u64, i64);

/// Known sites by file (device as `major:minor`, inode), with the version they were found in.
pub type Cached = HashMap<(String, u64), (FileVersion, Vec<KnownSite>)>;

/// An executable's version: device (`major:minor`), inode, size and modification time (ns).
pub type ExeKey = (String, u64, u64, i64);

/// Per executable, the system files its processes mapped (paths), in earlier recordings.
pub type MappedByExe = HashMap<ExeKey, std::collections::BTreeSet<String>>;

/// The file's form.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    files: Vec<CachedFile>,
    /// (Absent from the caches of recorders before it.)
    #[serde(default)]
    maps: Vec<CachedMaps>,
}

/// The system files the processes of one executable mapped.
#[derive(Serialize, Deserialize)]
struct CachedMaps {
    dev: String,
    inode: u64,
    size: u64,
    mtime: i64,
    paths: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct CachedFile {
    dev: String,
    inode: u64,
    size: u64,
    mtime: i64,
    sites: Vec<CachedSite>,
}

#[derive(Serialize, Deserialize)]
struct CachedSite {
    offset: u64,
    nr: u64,
    before: u64,
    after: u64,
    /// The function's bytes, in hex.
    code: String,
}

/// This form's version.
const VERSION: u32 = 1;

/// The sites and mapped files kept at `path` (none if it cannot be read).
pub fn load(path: &Path) -> (Cached, MappedByExe) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Default::default();
    };
    let Ok(file) = serde_json::from_str::<CacheFile>(&text) else {
        tracing::debug!("the site cache {} does not parse: ignored", path.display());
        return Default::default();
    };
    if file.version != VERSION {
        return Default::default();
    }
    let maps = file
        .maps
        .into_iter()
        .map(|m| {
            (
                (m.dev, m.inode, m.size, m.mtime),
                m.paths.into_iter().collect(),
            )
        })
        .collect();
    let sites = file
        .files
        .into_iter()
        .map(|f| {
            let sites = f
                .sites
                .into_iter()
                .filter_map(|s| {
                    Some(KnownSite {
                        offset: s.offset,
                        nr: s.nr,
                        code: from_hex(&s.code)?,
                        before: s.before,
                        after: s.after,
                    })
                })
                .collect();
            ((f.dev, f.inode), ((f.size, f.mtime), sites))
        })
        .collect();
    (sites, maps)
}

/// Keeps `all` at `path` (written to a new file renamed over the old one; failures are only
/// logged: the cache saves time, nothing depends on it).
pub fn save(path: &Path, all: &Cached, maps: &MappedByExe) {
    let file = CacheFile {
        version: VERSION,
        maps: maps
            .iter()
            .map(|((dev, inode, size, mtime), paths)| CachedMaps {
                dev: dev.clone(),
                inode: *inode,
                size: *size,
                mtime: *mtime,
                paths: paths.iter().cloned().collect(),
            })
            .collect(),
        files: all
            .iter()
            .map(|((dev, inode), (v, sites))| CachedFile {
                dev: dev.clone(),
                inode: *inode,
                size: v.0,
                mtime: v.1,
                sites: sites
                    .iter()
                    .map(|s| CachedSite {
                        offset: s.offset,
                        nr: s.nr,
                        before: s.before,
                        after: s.after,
                        code: to_hex(&s.code),
                    })
                    .collect(),
            })
            .collect(),
    };
    let written = serde_json::to_vec(&file)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        });
    if let Err(e) = written {
        tracing::debug!("keeping the site cache at {}: {e}", path.display());
    }
}

/// The version of process `pid`'s executable, if it can be read.
pub fn exe_of(pid: i32) -> Option<ExeKey> {
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    let dev = format!("{}:{}", libc::major(m.dev()), libc::minor(m.dev()));
    Some((
        dev,
        m.ino(),
        m.size(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
    ))
}

/// The version of the file mapped at `[start, end)` in task `pid`, if it can be read.
pub fn version_of(pid: i32, start: u64, end: u64) -> Option<FileVersion> {
    let m = std::fs::metadata(format!("/proc/{pid}/map_files/{start:x}-{end:x}")).ok()?;
    Some((m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_survive_a_save_and_a_load() {
        let dir = std::env::temp_dir().join(format!("deja-site-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sites.json");
        let mut all = Cached::new();
        let site = KnownSite {
            offset: 0x1234,
            nr: 0,
            code: vec![0x0f, 0x05, 0xc3, 0xab],
            before: 16,
            after: 32,
        };
        all.insert(("fe:00".into(), 42), ((100, 5), vec![site.clone()]));
        let mut maps = MappedByExe::new();
        let exe: ExeKey = ("fe:00".into(), 7, 300, 9);
        maps.entry(exe.clone())
            .or_default()
            .insert("/usr/lib/libz.so.1".into());
        save(&path, &all, &maps);
        let (back, back_maps) = load(&path);
        assert_eq!(back_maps, maps);
        let (v, sites) = back
            .get(&("fe:00".to_string(), 42))
            .expect("the file's sites");
        assert_eq!(*v, (100, 5));
        assert_eq!(sites.len(), 1);
        assert_eq!(
            (
                sites[0].offset,
                sites[0].nr,
                &sites[0].code,
                sites[0].before,
                sites[0].after
            ),
            (0x1234, 0, &site.code, 16, 32)
        );
        // A cache without the mapped files (an older recorder's) still gives its sites.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("maps");
        std::fs::write(&path, v.to_string()).unwrap();
        let (back, back_maps) = load(&path);
        assert_eq!(back.len(), 1);
        assert!(back_maps.is_empty());
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path).0.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
