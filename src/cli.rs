//! Command-line interface: parsing and dispatch to the recorder, replayer and trace readers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use recorder::RecordOptions;
use replayer::ReplayOptions;
use trace_format::TraceRoot;

use crate::{debug, progress, runs, show, traces};

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
        /// Chaos scheduling: random scheduling decisions (which task runs, time slices, where
        /// a preemption lands) drawn from SEED (a random one if none), to make races show.
        /// The seed is printed and kept in the trace (`deja info`).
        #[arg(long, value_name = "SEED", num_args = 0..=1, require_equals = true)]
        chaos: Option<Option<u64>>,
        /// Record one task at a time on one CPU. By default processes that share no memory
        /// with others (a program a process exec'd, with its children) are recorded in
        /// parallel on two CPUs: `make -j2` records at about 1.8x native instead of 2.5x.
        #[arg(long)]
        serial: bool,
        /// Processes in parallel (the default; kept for scripts that name it).
        #[arg(long, hide = true, conflicts_with = "serial")]
        parallel: bool,
        /// Delete the trace when the program exits 0: keep only failing runs (as a test
        /// runner's wrapper, e.g. cargo's CARGO_TARGET_<TRIPLE>_RUNNER). The exit status is
        /// still the program's.
        #[arg(long, conflicts_with = "until_fail")]
        keep_failing: bool,
        /// Record the program again and again until a run fails (a non-zero exit or a
        /// signal); keep only that run's trace, delete each passing one. Exits with the
        /// failing run's status, or 0 when no run failed.
        #[arg(long)]
        until_fail: bool,
        /// With --until-fail: stop after this many runs.
        #[arg(long, value_name = "N", default_value_t = 100, requires = "until_fail",
              value_parser = clap::value_parser!(u32).range(1..))]
        max_runs: u32,
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
        /// With -a: replay one task at a time, also the processes the recording ran in
        /// parallel (by default they replay in parallel too).
        #[arg(long, requires = "autopilot")]
        serial: bool,
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
        /// Debug this process of the recording (a pid `deja ps` lists), from its first exec (or
        /// its fork, if it never execs).
        #[arg(
            short = 'p',
            long = "onprocess",
            value_name = "PID",
            conflicts_with = "autopilot"
        )]
        process: Option<i32>,
        /// Debug this process from its fork (its first instruction, in its parent's program),
        /// even if it execs later.
        #[arg(
            short = 'f',
            long = "onfork",
            value_name = "PID",
            conflicts_with_all = ["autopilot", "process"]
        )]
        fork: Option<i32>,
        /// Start at the end of a process (the debugged one by default, or PID): at the
        /// syscall that ends it, from where gdb can go backwards. (Name the trace before
        /// `-e`: a value after it is taken as the PID.)
        #[arg(
            short = 'e',
            long = "onexit",
            value_name = "PID",
            num_args = 0..=1,
            conflicts_with = "autopilot"
        )]
        exit: Option<Option<i32>>,
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
        /// With -a: after a faithful replay, exit with the recorded program's status (128+N
        /// if a signal N killed it) instead of 0. deja's own errors still exit 1.
        #[arg(long, requires = "autopilot")]
        exit_status: bool,
        /// The debugger to launch (gdb, or a wrapper of it such as rust-gdb).
        #[arg(
            short = 'd',
            long = "debugger",
            value_name = "DEBUGGER",
            default_value = "gdb",
            conflicts_with_all = ["autopilot", "serve"]
        )]
        debugger: String,
        /// Arguments for the gdb deja launches (after `--`).
        #[arg(last = true)]
        gdb_args: Vec<String>,
    },
    /// List the recorded traces: name, date, size, exit status, command.
    Ls {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Delete traces (names `deja ls` shows, or trace directories).
    Rm {
        /// The traces.
        #[arg(required = true)]
        traces: Vec<String>,
    },
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

/// A seed for chaos scheduling from the kernel's random numbers (the time, should they fail).
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        return u64::from_le_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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
            chaos,
            serial,
            parallel: _,
            keep_failing,
            until_fail,
            max_runs,
            program,
            args,
        } => {
            let keep = match (until_fail, keep_failing) {
                (true, _) => runs::Keep::UntilFail(max_runs),
                (false, true) => runs::Keep::Failing,
                (false, false) => runs::Keep::Always,
            };
            // Each run records with options of its own (`run` counts from 1).
            runs::rec(keep, output.as_deref(), |run| RecordOptions {
                program: program.clone(),
                args: args.clone(),
                dest: runs::dest(output.as_deref()),
                wait_all: wait,
                syscall_buffer: !no_syscall_buffer,
                // A new seed for each run: the one given for the first, then the next ones
                // (`--chaos=S --until-fail` draws the same runs again), else a random one.
                chaos: chaos.map(|seed| {
                    let seed = match seed {
                        Some(s) => s.wrapping_add(u64::from(run - 1)),
                        None => random_seed(),
                    };
                    eprintln!("deja: chaos scheduling with seed {seed}");
                    seed
                }),
                parallel: !serial,
            })
        }
        Command::Replay {
            trace,
            autopilot,
            quiet,
            serial,
            serve,
            once,
            process,
            fork,
            exit,
            event,
            host,
            digest,
            trust,
            exit_status,
            debugger,
            gdb_args,
        } => {
            let dir = resolve(trace.as_deref())?;
            accept(&dir, digest, trust).map_err(|e| crate::pack::name_pack(e, trace.as_deref()))?;
            if !autopilot {
                return debug::debug(debug::DebugArgs {
                    dir,
                    opts: debug::options(process, fork, exit, event, quiet)?,
                    serve_port: serve,
                    once,
                    host,
                    gdb_args,
                    debugger,
                });
            }
            let outcome = progress::replay(
                &dir,
                ReplayOptions {
                    quiet,
                    serial,
                    ..Default::default()
                },
            )?;
            tracing::info!(events = outcome.events, status = %outcome.status, "replayed");
            if exit_status {
                return Ok(exit_code(outcome.status.shell_code()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { json } => {
            traces::list(&TraceRoot::from_env()?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rm { traces } => traces::remove(&TraceRoot::from_env()?, &traces),
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
