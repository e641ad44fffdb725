//! Managing the recorded traces: `deja ls` (name, date, size, status, command) and `deja rm`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use trace_format::{ExitStatus, Stopped, TraceEntry, TraceMeta, TraceRoot};

use crate::runs::signal_name;
use crate::show::shown;

/// `deja ls`: the traces under `root`, oldest first, a table or (`json`) a JSON array.
pub fn list(root: &TraceRoot, json: bool) -> Result<()> {
    let entries = root.list()?;
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<serde_json::Value> = entries.iter().map(json_row).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if entries.is_empty() {
        eprintln!(
            "deja: no traces in {} (`deja rec PROG` records one)",
            root.path().display()
        );
        return Ok(());
    }
    let rows: Vec<[String; 5]> = entries.iter().map(text_row).collect();
    let header = ["NAME", "DATE", "SIZE", "STATUS", "COMMAND"].map(String::from);
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let [name, date, size, status, command] = row;
        writeln!(
            out,
            "{name:<w0$}  {date:<w1$}  {size:>w2$}  {status:<w3$}  {command}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )?;
    }
    Ok(())
}

/// One trace as a row of `deja ls`: name, local date, size, status, command.
fn text_row(e: &TraceEntry) -> [String; 5] {
    let name = shown(&e.name).into_owned();
    let size = human_size(dir_size(&e.path));
    match &e.meta {
        Ok(m) => [
            name,
            local_time(m.start_time_unix).text,
            size,
            short_status(m, &e.path),
            m.argv
                .iter()
                .map(|a| shown(a).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        ],
        Err(err) => [
            name,
            "-".into(),
            size,
            "unreadable".into(),
            shown(err).into_owned(),
        ],
    }
}

/// One trace as an object of `deja ls --json`.
fn json_row(e: &TraceEntry) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": e.name,
        "path": e.path.display().to_string(),
        "size": dir_size(&e.path),
    });
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    match &e.meta {
        Ok(m) => {
            obj.insert("date".into(), local_time(m.start_time_unix).iso.into());
            obj.insert("start_time_unix".into(), m.start_time_unix.into());
            obj.insert("status".into(), short_status(m, &e.path).into());
            let code = m.exit.filter(|_| m.complete).map(ExitStatus::shell_code);
            obj.insert("exit_code".into(), code.into());
            obj.insert("complete".into(), m.complete.into());
            obj.insert("command".into(), m.argv.clone().into());
        }
        Err(err) => {
            obj.insert("status".into(), "unreadable".into());
            obj.insert("error".into(), err.clone().into());
        }
    }
    v
}

/// How the recording ended, in a few words: `exit 3`, `killed by SIGSEGV`, `recording`,
/// `stopped by SIGTERM`, `incomplete`.
pub fn short_status(m: &TraceMeta, dir: &Path) -> String {
    match (m.complete, m.exit) {
        (true, Some(ExitStatus::Exited(c))) => return format!("exit {c}"),
        (true, Some(ExitStatus::Signaled(s))) => return format!("killed by {}", signal_name(s)),
        _ => {}
    }
    if trace_format::recording_in_progress(dir) {
        return "recording".into();
    }
    match &m.stopped {
        Some(Stopped::Signal(s)) => format!("stopped by {}", signal_name(*s)),
        Some(Stopped::Error(_)) | None => "incomplete".into(),
    }
}

/// The bytes of the files in `dir` and below (symlinks not followed; a stored system file,
/// hard-linked, counts although it takes no room of its own).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// `1.2 MB`: a size in bytes for people (powers of 1000).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.95 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A time in the local time zone, as people read it and in ISO 8601.
pub struct LocalTime {
    /// `2026-12-04 21:34:21`.
    pub text: String,
    /// The zone's abbreviation (`UTC`, `CET`), empty if unknown.
    pub zone: String,
    /// `2026-12-04T21:34:21+01:00`.
    pub iso: String,
}

extern "C" {
    /// The C library's `tzset(3)` (which the `libc` crate does not declare).
    fn tzset();
}

/// `unix` (seconds since the epoch) in the local time zone (`TZ`, else the system's).
pub fn local_time(unix: i64) -> LocalTime {
    let t: libc::time_t = unix;
    // SAFETY: an all-zero `tm` is a valid value (its zone pointer null), overwritten below.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: tzset reads `TZ`, which deja never changes; localtime_r writes the `tm` it is
    // given, a local, and reads `t`.
    let ok = unsafe {
        tzset();
        !libc::localtime_r(&t, &mut tm).is_null()
    };
    if !ok {
        return LocalTime {
            text: format!("@{unix}"),
            zone: String::new(),
            iso: format!("@{unix}"),
        };
    }
    let date = format!(
        "{:04}-{:02}-{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday
    );
    let time = format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: localtime_r set tm_zone to a NUL-terminated string of the C library's time
        // zone data, which lives as long as the process (tzset is not called again meanwhile).
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    let iso = format!(
        "{date}T{time}{sign}{:02}:{:02}",
        off.abs() / 3600,
        off.abs() % 3600 / 60
    );
    LocalTime {
        text: format!("{date} {time}"),
        zone,
        iso,
    }
}

/// `deja rm TRACE...`: removes each trace (a name in the root, or a trace directory); one that
/// is not a deja trace of the user's own is refused. Goes on past a refusal, and exits 1 if
/// any was refused.
pub fn remove(root: &TraceRoot, traces: &[String]) -> Result<ExitCode> {
    let mut failed = false;
    for t in traces {
        let removed = root
            .resolve(Some(t))
            .map_err(anyhow::Error::from)
            .and_then(|dir| Ok(root.remove_trace(&dir, None)?));
        if let Err(e) = removed {
            eprintln!("deja: {e:#}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1.0 kB");
        assert_eq!(human_size(1_234_567), "1.2 MB");
        assert_eq!(human_size(999_999), "1.0 MB");
        assert_eq!(human_size(u64::MAX), "18446.7 PB");
    }

    #[test]
    fn dates_in_the_local_zone() {
        let t = local_time(1_796_420_061);
        assert_eq!(t.text.len(), "2026-12-04 21:34:21".len(), "{}", t.text);
        assert_eq!(t.iso[..19], t.text.replace(' ', "T"), "{}", t.iso);
        assert!(matches!(&t.iso[19..20], "+" | "-"), "{}", t.iso);
    }
}
