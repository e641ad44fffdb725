//! `deja replay` with a debugger: serve the replay over the GDB remote protocol, and launch
//! gdb connected to it (as `rr replay` does).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use replayer::DebugOptions;

/// How to serve a replay to gdb.
#[derive(Debug, Clone)]
pub struct DebugArgs {
    /// The trace.
    pub dir: PathBuf,
    /// Where the replay starts and what it shows.
    pub opts: DebugOptions,
    /// Serve on this port and do not launch gdb.
    pub serve_port: Option<u16>,
    /// With `serve_port`: end after the first client disconnects.
    pub once: bool,
    /// The address to listen on.
    pub host: String,
    /// Extra arguments for the gdb deja launches.
    pub gdb_args: Vec<String>,
    /// The debugger to launch (gdb, or a gdb wrapper such as rust-gdb).
    pub debugger: String,
}

/// Where `deja replay` starts debugging: `-p PID` (at the process's exec, or its fork if it
/// never execs), `-f PID` (at its fork), `-e [PID]` (at its end; the process named there, or
/// the one `-p`/`-f` names, or the initial one), `-g EVENT`.
pub fn options(
    process: Option<i32>,
    fork: Option<i32>,
    exit: Option<Option<i32>>,
    event: Option<u64>,
    quiet: bool,
) -> Result<DebugOptions> {
    let chosen = process.or(fork);
    let process = match exit {
        Some(Some(pid)) if chosen.is_some_and(|c| c != pid) => anyhow::bail!(
            "-e {pid} names another process than the one to debug ({}): give one",
            chosen.unwrap_or(pid)
        ),
        Some(Some(pid)) => Some(pid),
        _ => chosen,
    };
    Ok(DebugOptions {
        process,
        from_fork: fork.is_some(),
        at_exit: exit.is_some(),
        event,
        quiet,
    })
}

/// Serves the replay; launches gdb unless asked to only serve. Returns gdb's exit status.
pub fn debug(args: DebugArgs) -> Result<ExitCode> {
    let start = replayer::start_point(&args.dir, &args.opts)?;
    let port = args.serve_port.unwrap_or(0);
    let listener = TcpListener::bind((args.host.as_str(), port))
        .with_context(|| format!("cannot listen on {}:{port}", args.host))?;
    let addr = listener
        .local_addr()
        .context("reading the server's address")?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "deja: warning: listening on {addr}, which is not a loopback address: the gdb \
             server grants code execution to anyone who can connect"
        );
    }
    let (dir, quiet, exe) = (args.dir.clone(), args.opts.quiet, start.exe.clone());
    let once = args.once;
    let addr = addr.to_string();
    // rr's commands (when, checkpoint, restart N, ...), which gdb loads with `-x`.
    let load = match gdb::install_script() {
        Ok(script) => vec!["-x".to_string(), script.display().to_string()],
        Err(e) => {
            eprintln!("deja: warning: gdb will lack rr's commands (when, checkpoint, ...): {e:#}");
            Vec::new()
        }
    };
    if args.serve_port.is_some() {
        eprintln!(
            "deja: serving the replay of process {} on {addr}{}; connect with:\n  gdb {}",
            start.process,
            if once { " to one gdb" } else { " until Ctrl-C" },
            gdb::gdb_command(&addr, &exe, &load)
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        tracee::tsc::on_tracer_thread(move || gdb::serve(dir, start, quiet, listener, None, once))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = Command::new(&args.debugger);
    let extra: Vec<String> = load.iter().chain(&args.gdb_args).cloned().collect();
    cmd.args(gdb::gdb_command(&addr, &exe, &extra));
    // SAFETY: the closure only calls signal(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    // Ctrl-C is gdb's: it interrupts the replay through the protocol.
    // SAFETY: ignoring SIGINT process-wide; tracees reset their dispositions at spawn.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            anyhow::anyhow!(
                "{} is not installed (install it, or serve only with `deja replay -s PORT` and \
                 connect any gdb)",
                args.debugger
            )
        } else {
            anyhow::Error::new(e).context(format!("starting {}", args.debugger))
        }
    })?;
    let gdb_pid = child.id() as libc::pid_t;
    let served = tracee::tsc::on_tracer_thread(move || {
        gdb::serve(dir, start, quiet, listener, Some(gdb_pid), true)
    });
    let status = match child.wait() {
        Ok(status) => status.code().unwrap_or(1),
        // The tracer reaped gdb (waiting for any of its tasks, or for gdb to connect); how gdb
        // ended is then lost, and the server's outcome tells.
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => 0,
        Err(e) => return Err(e).context("waiting for gdb"),
    };
    served?;
    Ok(crate::cli::exit_code(status))
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_quote(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:=+,".contains(c));
    if plain && !s.is_empty() {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("/tmp/a.out"), "/tmp/a.out");
        assert_eq!(shell_quote("set sysroot /"), "'set sysroot /'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
