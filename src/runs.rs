//! `deja rec` and the traces it keeps: one run (`deja rec`), one run kept only if it fails
//! (`--keep-failing`), or runs until one fails (`--until-fail`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use recorder::{RecordOptions, RecordOutcome, TraceDest};
use trace_format::{ExitStatus, TraceRoot};

use crate::cli::exit_code;

/// Which runs' traces `deja rec` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// One run; its trace is kept whatever its end.
    Always,
    /// One run; its trace is deleted if the program exits 0 (`--keep-failing`).
    Failing,
    /// Up to this many runs, until one fails; only the failing run's trace is kept
    /// (`--until-fail`).
    UntilFail(u32),
}

/// How one run ended, for the decision to keep its trace.
enum Verdict {
    /// Exit status 0: the run passed.
    Passed,
    /// A non-zero exit, or killed by a signal.
    Failed,
    /// The recorder was stopped by this signal (`SIGTERM`, `SIGHUP`, a `SIGINT` from a
    /// process): the trace is kept (a hung test stopped by a timeout is a failure worth
    /// keeping), and no more runs start.
    Stopped(i32),
}

fn verdict(outcome: &RecordOutcome) -> Verdict {
    match (outcome.stopped_by, outcome.status.shell_code()) {
        (Some(sig), _) => Verdict::Stopped(sig),
        (None, 0) => Verdict::Passed,
        (None, _) => Verdict::Failed,
    }
}

/// Records as `keep` says. `options(run)` gives the options of run `run` (from 1), built
/// afresh for each run; the trace of each goes to `output`, else a new one under the trace
/// root. Returns the exit code `deja rec` ends with: the program's (the failing run's), 0 when
/// `--until-fail` saw no run fail, 128+N when the recorder was stopped by signal N.
pub fn rec(
    keep: Keep,
    output: Option<&Path>,
    mut options: impl FnMut(u32) -> RecordOptions,
) -> Result<ExitCode> {
    let runs = match keep {
        Keep::UntilFail(n) => n.max(1),
        Keep::Always | Keep::Failing => 1,
    };
    let root = match output {
        Some(_) => None,
        None => Some(TraceRoot::from_env()?),
    };
    for run in 1..=runs {
        let latest_before = root.as_ref().and_then(|r| r.latest().ok());
        let started = Instant::now();
        let outcome = recorder::record(&options(run))?;
        let took = started.elapsed().as_secs_f64();
        tracing::info!(run, trace = %outcome.trace_dir.display(), "recorded");
        let verdict = verdict(&outcome);
        if let Keep::UntilFail(_) = keep {
            eprintln!(
                "deja: run {run} of {runs}: {} ({took:.2} s)",
                status_text(&outcome)
            );
        }
        match verdict {
            Verdict::Passed if keep != Keep::Always => {
                let discarded =
                    discard(root.as_ref(), &outcome.trace_dir, latest_before.as_deref());
                if keep == Keep::Failing {
                    // A passing test stays a pass for the test runner deja wraps.
                    match discarded {
                        Ok(()) => eprintln!(
                            "deja: the program exited 0; its trace is deleted (--keep-failing)"
                        ),
                        Err(e) => eprintln!("deja: warning: {e:#}"),
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                discarded?;
                continue;
            }
            Verdict::Stopped(sig) => {
                // Like a program killed by the signal, as a shell reports it.
                eprintln!(
                    "deja: recording stopped by {}; the trace {} keeps {} events",
                    recorder::signal_name(sig),
                    outcome.trace_dir.display(),
                    outcome.events
                );
                return Ok(exit_code(128 + sig));
            }
            Verdict::Passed | Verdict::Failed => {
                if let Some(e) = &outcome.trace_error {
                    eprintln!("deja: {e}");
                }
                eprintln!("deja: trace saved to {}", outcome.trace_dir.display());
                return Ok(exit_code(outcome.status.shell_code()));
            }
        }
    }
    eprintln!("deja: no run failed in {runs} runs; no trace kept");
    Ok(ExitCode::SUCCESS)
}

/// Deletes a passing run's trace; `latest-trace` goes back to where it pointed before.
fn discard(root: Option<&TraceRoot>, dir: &Path, latest_before: Option<&Path>) -> Result<()> {
    let removed = match root {
        Some(root) => root.remove_trace(dir, latest_before),
        None => trace_format::remove_trace(dir),
    };
    removed
        .map(|_| ())
        .with_context(|| format!("deleting the passing run's trace {}", dir.display()))
}

/// How a run ended, in a few words: `exit 1`, `killed by SIGSEGV`.
fn status_text(outcome: &RecordOutcome) -> String {
    if let Some(sig) = outcome.stopped_by {
        return format!("stopped by {}", recorder::signal_name(sig));
    }
    match outcome.status {
        ExitStatus::Exited(c) => format!("exit {c}"),
        ExitStatus::Signaled(s) => format!("killed by {}", signal_name(s)),
    }
}

/// `SIGSEGV` for 11; `signal N` for a number that names no signal.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// Where `deja rec`'s trace goes: the `-o` directory, else a new one under the root.
pub fn dest(output: Option<&Path>) -> TraceDest {
    match output {
        Some(d) => TraceDest::Dir(d.to_path_buf()),
        None => TraceDest::Root,
    }
}
