//! The SQLite index: schema, metadata and row access shared by the writer and the reader.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{sql_err, Result, TraceError};
use crate::meta::TraceMeta;
use crate::{FORMAT_VERSION, OLDEST_READABLE_VERSION};

/// How long a connection waits for the other side's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the schema in a fresh, empty database.
pub(crate) fn create_schema(db: &Connection, path: &Path) -> Result<()> {
    db.busy_timeout(BUSY_TIMEOUT).map_err(sql_err(path))?;
    // The writer commits once per chunk; without fsync a crash of the *process* loses
    // nothing (the kernel has the data); see README.md, "The writing thread". The rollback
    // journal is kept between transactions (its header zeroed, which makes it no hot journal)
    // rather than deleted: deleting it frees its blocks, a synchronous discard on a file system
    // mounted with `discard` and no journal (up to milliseconds under load, at every commit).
    db.execute_batch(&format!(
        "PRAGMA journal_mode = PERSIST;
         PRAGMA synchronous = OFF;
         BEGIN;
         CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE chunks(seq INTEGER PRIMARY KEY, offset INTEGER NOT NULL,
                             len INTEGER NOT NULL, first_event INTEGER NOT NULL,
                             events INTEGER NOT NULL, raw_len INTEGER NOT NULL);
         CREATE TABLE files(hash TEXT PRIMARY KEY, path TEXT NOT NULL,
                            size INTEGER NOT NULL, how TEXT NOT NULL);
         PRAGMA user_version = {FORMAT_VERSION};
         COMMIT;"
    ))
    .map_err(sql_err(path))
}

/// `meta` as the JSON the index stores.
pub(crate) fn meta_json(meta: &TraceMeta) -> Result<String> {
    serde_json::to_string(meta).map_err(|e| TraceError::Encode {
        what: "trace metadata",
        message: e.to_string(),
    })
}

/// Stores the metadata `json` and the trace's `seal` (see `seal.rs`) in one transaction.
pub(crate) fn write_sealed(
    db: &mut Connection,
    path: &Path,
    json: &str,
    seal: &crate::seal::Seal,
) -> Result<()> {
    let seal = serde_json::to_string(seal).map_err(|e| TraceError::Encode {
        what: "the trace's seal",
        message: e.to_string(),
    })?;
    let tx = db.transaction().map_err(sql_err(path))?;
    for (key, value) in [("meta", json), ("seal", seal.as_str())] {
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)",
            [key, value],
        )
        .map_err(sql_err(path))?;
    }
    tx.commit().map_err(sql_err(path))
}

/// Replaces the trace's seal.
pub(crate) fn write_seal(db: &Connection, path: &Path, seal: &crate::seal::Seal) -> Result<()> {
    let seal = serde_json::to_string(seal).map_err(|e| TraceError::Encode {
        what: "the trace's seal",
        message: e.to_string(),
    })?;
    db.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES('seal', ?1)",
        [seal],
    )
    .map_err(sql_err(path))?;
    Ok(())
}

/// The metadata JSON as stored, and the seal, if any.
pub(crate) fn read_sealed(
    db: &Connection,
    path: &Path,
) -> Result<(String, Option<crate::seal::Seal>)> {
    let get = |key: &str| -> Result<Option<String>> {
        db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| read_err(path, e))
    };
    let json =
        get("meta")?.ok_or_else(|| TraceError::corrupt(path, "the index holds no metadata"))?;
    let seal = match get("seal")? {
        None => None,
        Some(s) => Some(
            serde_json::from_str(&s)
                .map_err(|e| TraceError::corrupt(path, format!("the seal is malformed: {e}")))?,
        ),
    };
    Ok((json, seal))
}

/// Stores `meta` as JSON under the key `meta`.
pub(crate) fn write_meta(db: &Connection, path: &Path, meta: &TraceMeta) -> Result<()> {
    let json = meta_json(meta)?;
    db.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES('meta', ?1)",
        [json],
    )
    .map_err(sql_err(path))?;
    Ok(())
}

/// Opens an existing index for reading, checks its version and reads the metadata.
pub(crate) fn open(path: &Path) -> Result<(Connection, TraceMeta)> {
    use rusqlite::OpenFlags;
    // Read-write when possible, so SQLite can roll back a transaction the recorder left
    // behind when it was killed; read-only otherwise.
    // SQLite's NOFOLLOW refuses a symlink anywhere in the path: the directory is resolved
    // first (a trace is often reached through `latest-trace`), so that it refuses only an
    // index that is itself a symlink.
    let real = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    let base = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let db = Connection::open_with_flags(&real, base | OpenFlags::SQLITE_OPEN_READ_WRITE)
        .or_else(|_| Connection::open_with_flags(&real, base | OpenFlags::SQLITE_OPEN_READ_ONLY))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen) if is_symlink(path) => {
                TraceError::corrupt(path, "the index is a symlink")
            }
            _ => sql_err(path)(e),
        })?;
    db.busy_timeout(BUSY_TIMEOUT).map_err(sql_err(path))?;
    let version: u32 = match db.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)) {
        Ok(v) => u32::try_from(v).unwrap_or(u32::MAX),
        Err(e) => return Err(read_err(path, e)),
    };
    if version == 0 {
        return Err(TraceError::corrupt(
            path,
            "the index has no format version (the recorder died while creating it?)",
        ));
    }
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(TraceError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let json: Option<String> = db
        .query_row("SELECT value FROM meta WHERE key = 'meta'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| read_err(path, e))?;
    let Some(json) = json else {
        return Err(TraceError::corrupt(path, "the index holds no metadata"));
    };
    let meta = parse_meta(&json, path)?;
    Ok((db, meta))
}

/// Parses the metadata JSON, checking its version before its shape.
fn parse_meta(json: &str, path: &Path) -> Result<TraceMeta> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| TraceError::corrupt(path, format!("the metadata is not JSON: {e}")))?;
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| TraceError::corrupt(path, "the metadata has no format_version"))?;
    if !(u64::from(OLDEST_READABLE_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version) {
        return Err(TraceError::UnsupportedVersion {
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_value(value)
        .map_err(|e| TraceError::corrupt(path, format!("the metadata is malformed: {e}")))
}

/// An error reading the index at `path`: a file that is not an SQLite database is a corrupt
/// trace.
fn read_err(path: &Path, e: rusqlite::Error) -> TraceError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            TraceError::corrupt(path, "the index is not an SQLite database")
        }
        e => sql_err(path)(e),
    }
}

/// Whether `path` is a symlink.
fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}
