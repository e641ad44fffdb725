//! Command-line interface: parsing and dispatch to the recorder, replayer and trace readers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use recorder::{RecordOptions, TraceDest};
use replayer::{DebugOptions, ReplayOptions};
use trace_format::TraceRoot;

use crate::{debug, show};

/// Record a Linux x86-64 program once, replay the exact same execution as often as needed.
#[derive(Parser, Debug)]
#[command(name = "deja", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run PROG under the recorder and save a trace of its execution.
    #[command(alias = "record")]
    Rec {
        /// Write the trace to this directory instead of a new one under $DEJA_TRACE_DIR.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Record until every process of the program has ended; by default the recording ends
        /// with the initial process, and the processes it left behind are killed.
        #[arg(short = 'w', long = "wait")]
        wait: bool,
        /// Record every syscall at a ptrace stop: no in-process syscall buffer (the fast path,
        /// on by default), like rr's -n.
        #[arg(short = 'n', long = "no-syscall-buffer")]
        no_syscall_buffer: bool,
        /// The program to record.
        program: String,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Replay a trace (the latest one by default).
    Replay {
        /// The trace directory, name or pack file (default: the latest trace).
        trace: Option<String>,
        /// Replay to the end without a debugger.
        #[arg(short = 'a', long = "autopilot")]
        autopilot: bool,
        /// Do not echo what the program wrote to stdout and stderr.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Only serve the replay to gdb on this port (do not launch gdb).
        #[arg(
            short = 's',
            long = "dbgport",
            value_name = "PORT",
            conflicts_with = "autopilot"
        )]
        serve: Option<u16>,
        /// With -s: end after the first gdb disconnects (by default the server waits for the
        /// next one, until Ctrl-C).
        #[arg(long, requires = "serve")]
        once: bool,
        /// Debug this process of the recording (a pid `deja ps` lists), from its first exec.
        #[arg(
            short = 'p',
            long = "onprocess",
            value_name = "PID",
            conflicts_with = "autopilot"
        )]
        process: Option<i32>,
        /// Start debugging after this event (`deja dump` numbers them).
        #[arg(
            short = 'g',
            long = "goto",
            value_name = "EVENT",
            conflicts_with = "autopilot"
        )]
        event: Option<u64>,
        /// Listen on this address instead of 127.0.0.1 (the server grants code execution).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
        host: String,
        /// Accept the trace only if its digest is this one (the digest `deja info` showed
        /// where it was recorded): for a trace sealed by another user or machine.
        #[arg(long, value_name = "HEX")]
        digest: Option<String>,
        /// Accept a trace sealed by another user or machine (or by none) as it is.
        #[arg(long, conflicts_with = "digest")]
        trust: bool,
        /// Arguments for the gdb deja launches (after `--`).
        #[arg(last = true)]
        gdb_args: Vec<String>,
    },
    /// List the recorded traces.
    Ls,
    /// Show what a trace holds.
    Info {
        /// The trace directory, name or pack file (default: the latest trace).
        trace: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print every event of a trace.
    Dump {
        /// The trace directory, name or pack file (default: the latest trace).
        trace: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List the processes of a trace.
    Ps {
        /// The trace directory, name or pack file (default: the latest trace).
        trace: Option<String>,
    },
    /// Pack a trace into one compressed file that replays anywhere (`deja replay FILE`).
    Pack {
        /// The trace directory or name (default: the latest trace).
        trace: Option<String>,
        /// The file to write (default: `<trace name>.deja` in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Unpack a packed trace into a trace directory (default: a new one in the trace root).
    Unpack {
        /// The pack file.
        file: PathBuf,
        /// The directory to create (it may exist if empty).
        dir: Option<PathBuf>,
    },
}

/// A trace directory or name, or a pack file (see `pack::resolve`).
fn resolve(trace: Option<&str>) -> Result<PathBuf> {
    crate::pack::resolve(trace)
}

/// Checks the trace in `dir` against its seal before it is replayed (see trace-format's
/// `seal.rs`): refused unless sealed by the user, of the given digest, or trusted.
fn accept(dir: &std::path::Path, digest: Option<String>, trust: bool) -> Result<()> {
    use trace_format::seal::{Accepted, Key, Policy};
    let reader = trace_format::TraceReader::open(dir)?;
    let policy = Policy {
        key: Key::existing(),
        digest,
        trust,
    };
    let accepted = reader.check_seal(&policy)?;
    tracing::debug!(?accepted, "the trace's seal");
    if accepted == Accepted::Trusted {
        eprintln!("deja: note: the trace is not sealed by you; replaying it as it is (--trust)");
    }
    Ok(())
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Rec {
            output,
            wait,
            no_syscall_buffer,
            program,
            args,
        } => {
            let dest = match output {
                Some(d) => TraceDest::Dir(d),
                None => TraceDest::Root,
            };
            let outcome = recorder::record(&RecordOptions {
                program,
                args,
                dest,
                wait_all: wait,
                syscall_buffer: !no_syscall_buffer,
            })?;
            if let Some(sig) = outcome.stopped_by {
                // Like a program killed by the signal, as a shell reports it.
                eprintln!(
                    "deja: recording stopped by {}; the trace {} keeps {} events",
                    recorder::signal_name(sig),
                    outcome.trace_dir.display(),
                    outcome.events
                );
                return Ok(exit_code(128 + sig));
            }
            if let Some(e) = &outcome.trace_error {
                eprintln!("deja: {e}");
            }
            tracing::info!(trace = %outcome.trace_dir.display(), "recorded");
            Ok(exit_code(outcome.status.shell_code()))
        }
        Command::Replay {
            trace,
            autopilot,
            quiet,
            serve,
            once,
            process,
            event,
            host,
            digest,
            trust,
            gdb_args,
        } => {
            let dir = resolve(trace.as_deref())?;
            accept(&dir, digest, trust).map_err(|e| crate::pack::name_pack(e, trace.as_deref()))?;
            if !autopilot {
                return debug::debug(debug::DebugArgs {
                    dir,
                    opts: DebugOptions {
                        process,
                        event,
                        quiet,
                    },
                    serve_port: serve,
                    once,
                    host,
                    gdb_args,
                });
            }
            let outcome = replayer::replay(&dir, &ReplayOptions { quiet })?;
            tracing::info!(events = outcome.events, status = %outcome.status, "replayed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls => {
            show::list(&TraceRoot::from_env()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { trace, json } => {
            show::info(&resolve(trace.as_deref())?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump { trace, json } => {
            show::dump(&resolve(trace.as_deref())?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ps { trace } => {
            show::ps(&resolve(trace.as_deref())?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack { trace, output } => {
            crate::pack::pack_cmd(trace.as_deref(), output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Unpack { file, dir } => {
            crate::pack::unpack_cmd(&file, dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The process exit code for `code` (its low byte, as a shell sees it).
pub(crate) fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}
