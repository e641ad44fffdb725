//! What a debugger inspects beyond registers and memory: the recorded `siginfo` of a task's
//! last signal (gdb's `$_siginfo`), and the `/proc` files of the debugged process
//! (`info proc`, `info proc mappings`) as the recording knew them.
//!
//! The `/proc` files are the replayed process's own (its tasks are real processes with the
//! recorded memory layout), with what the replay changed put back: a file the replay maps
//! from the trace (or from an emulated copy) shows under the path the recording mapped it
//! by, and the executable is the recorded one, not the trace's copy.

use std::path::Path;

use anyhow::{Context, Result};
use trace_format::Tid;

use crate::debugger::DebugReplay;

/// The files of `/proc/PID/` a debugger may read ([`DebugReplay::proc_file`]).
pub const PROC_FILES: [&str; 7] = ["maps", "smaps", "cmdline", "comm", "auxv", "status", "stat"];

/// The links of `/proc/PID/` a debugger may read ([`DebugReplay::proc_link`]).
pub const PROC_LINKS: [&str; 2] = ["exe", "cwd"];

impl DebugReplay {
    /// The recorded `siginfo_t` (128 bytes) of the last signal delivered to thread `tid` of
    /// the debugged process, if it had one.
    pub fn siginfo(&self, tid: Tid) -> Option<&[u8]> {
        self.session
            .debug
            .as_ref()?
            .siginfo
            .get(&tid)
            .map(Vec::as_slice)
    }

    /// The real id of task `tid` of the debugged process (the recorded process id names its
    /// first live thread when its main thread is gone).
    fn real_id(&self, tid: Tid) -> Result<i32> {
        if let Ok(t) = self.thread(tid) {
            return Ok(t.pid().as_raw());
        }
        if tid == self.process() {
            if let Some(t) = self.session.process_tracee() {
                return Ok(t.pid().as_raw());
            }
        }
        anyhow::bail!(
            "{tid} is not a live task of the debugged process {}",
            self.process()
        )
    }

    /// The content of `/proc/PID/NAME` for recorded task `pid` of the debugged process, as
    /// the recording would show it (`NAME` one of [`PROC_FILES`]).
    pub fn proc_file(&self, pid: Tid, name: &str) -> Result<Vec<u8>> {
        let real = self.real_id(pid)?;
        let path = format!("/proc/{real}/{name}");
        match name {
            "maps" | "smaps" => {
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                Ok(self.recorded_maps(&text).into_bytes())
            }
            "comm" => {
                let mut name = self.thread_name(pid).unwrap_or_default();
                name.push('\n');
                Ok(name.into_bytes())
            }
            "auxv" => Ok(self.auxv().to_vec()),
            "status" | "stat" => {
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                let comm = self.thread_name(pid).unwrap_or_default();
                let ids = |real: &str| self.recorded_id(real);
                Ok(if name == "stat" {
                    recorded_stat(&text, &comm, ids)
                } else {
                    recorded_status(&text, &comm, ids)
                }
                .into_bytes())
            }
            "cmdline" => Ok(self
                .session
                .debug
                .as_ref()
                .map(|d| d.cmdline.clone())
                .unwrap_or_default()),
            other => anyhow::bail!("/proc/PID/{other} is not served"),
        }
    }

    /// Where link `/proc/PID/NAME` points for recorded task `pid` (`NAME` one of
    /// [`PROC_LINKS`]): the recorded executable, the replayed process's working directory.
    pub fn proc_link(&self, pid: Tid, name: &str) -> Result<String> {
        let real = self.real_id(pid)?;
        let path = format!("/proc/{real}/{name}");
        let target = std::fs::read_link(&path).with_context(|| format!("reading {path}"))?;
        match name {
            "exe" => Ok(self
                .session
                .emu
                .recorded_name(&target)
                .map_or_else(|| target.display().to_string(), str::to_string)),
            "cwd" => Ok(target.display().to_string()),
            other => anyhow::bail!("/proc/PID/{other} is not served"),
        }
    }

    /// The recorded id of the replay's task (or process) `real`, if it is one of the
    /// replay's; `real` itself otherwise.
    fn recorded_id(&self, real: &str) -> String {
        let Ok(n) = real.parse::<i32>() else {
            return real.to_string();
        };
        let tasks = &self.session.tasks;
        if let Some((tid, _)) = tasks.all().find(|(_, t)| t.tracee.pid().as_raw() == n) {
            return tid.to_string();
        }
        real.to_string()
    }

    /// The file the replay maps where the recording mapped the file at `recorded` (the
    /// trace's copy, or the replay's emulated copy), if it mapped one there.
    pub fn mapped_file(&self, recorded: &str) -> Option<&Path> {
        self.session.emu.replay_file(recorded)
    }

    /// `/proc/PID/maps` (or `smaps`) text of the replay, with the recorded path of each file
    /// the replay maps in place of the recorded one.
    fn recorded_maps(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            match map_path(line) {
                Some((at, path)) => {
                    let (file, deleted) = match path.strip_suffix(" (deleted)") {
                        Some(f) => (f, " (deleted)"),
                        None => (path, ""),
                    };
                    match self.session.emu.recorded_name(Path::new(file)) {
                        Some(name) => {
                            out.push_str(&line[..at]);
                            out.push_str(name);
                            out.push_str(deleted);
                            if line.ends_with('\n') {
                                out.push('\n');
                            }
                        }
                        None => out.push_str(line),
                    }
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

/// `/proc/PID/status` with the recorded name and ids (`ids` maps one).
fn recorded_status(text: &str, comm: &str, ids: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let (key, value) = line.split_once(':').unwrap_or((line, ""));
        match key {
            "Name" => out.push_str(&format!("Name:\t{comm}")),
            "Tgid" | "Pid" | "PPid" | "NStgid" | "NSpid" => {
                let mapped: Vec<String> = value.split_whitespace().map(&ids).collect();
                out.push_str(&format!("{key}:\t{}", mapped.join("\t")));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `/proc/PID/stat` with the recorded name and ids: pid, ppid, process group, session and
/// the terminal's process group (fields 1, 4, 5, 6, 8).
fn recorded_stat(text: &str, comm: &str, ids: impl Fn(&str) -> String) -> String {
    let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
        return text.to_string();
    };
    let pid = ids(text[..open].trim());
    let mut fields: Vec<String> = text[close + 1..]
        .split_whitespace()
        .map(String::from)
        .collect();
    // After the name: state (3), ppid (4), pgrp (5), session (6), tty (7), tpgid (8).
    for i in [1, 2, 3, 5] {
        if let Some(f) = fields.get_mut(i) {
            *f = ids(f);
        }
    }
    format!("{pid} ({comm}) {}\n", fields.join(" "))
}

/// Where the path of a maps line starts and the path (without the newline): after five
/// fields (range, permissions, offset, device, inode) and the spaces that pad them. `None`
/// for a line without a path (anonymous memory, or an smaps detail line).
fn map_path(line: &str) -> Option<(usize, &str)> {
    let body = line.trim_end_matches('\n');
    let mut rest = body;
    for _ in 0..5 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        rest = &rest[end..];
    }
    let path = rest.trim_start_matches(' ');
    if !path.starts_with('/') {
        return None;
    }
    Some((body.len() - path.len(), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat_show_recorded_ids() {
        let ids = |real: &str| match real {
            "500" => "42".to_string(),
            "499" => "41".to_string(),
            other => other.to_string(),
        };
        let status = "Name:\tab12cd\nUmask:\t0022\nTgid:\t500\nPid:\t500\nPPid:\t499\n\
                      TracerPid:\t498\nNSpid:\t500\n";
        assert_eq!(
            recorded_status(status, "prog", ids),
            "Name:\tprog\nUmask:\t0022\nTgid:\t42\nPid:\t42\nPPid:\t41\n\
             TracerPid:\t498\nNSpid:\t42\n"
        );
        let stat = "500 (ab 12) t 499 500 499 0 -1 4194560 100\n";
        assert_eq!(
            recorded_stat(stat, "prog", ids),
            "42 (prog) t 41 42 41 0 -1 4194560 100\n"
        );
    }

    #[test]
    fn finds_the_path_of_a_maps_line() {
        let line = "7f0000-7f1000 r-xp 00001000 08:01 1234         /usr/lib/libc.so.6\n";
        let (at, path) = map_path(line).expect("a path");
        assert_eq!(path, "/usr/lib/libc.so.6");
        assert_eq!(
            &line[..at],
            "7f0000-7f1000 r-xp 00001000 08:01 1234         "
        );
        assert_eq!(map_path("7f0000-7f1000 rw-p 00000000 00:00 0 \n"), None);
        assert_eq!(
            map_path("7ffd0000-7ffd1000 rw-p 00000000 00:00 0      [stack]\n"),
            None
        );
        assert_eq!(map_path("Rss:                   4 kB\n"), None);
    }
}
