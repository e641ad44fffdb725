//! `deja`: record a Linux x86-64 program, then replay the exact same execution.

mod cli;
mod debug;
mod pack;
mod progress;
mod runs;
mod show;
mod traces;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    init_logging();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        // A closed pipe (`deja dump | head`) is the reader's choice, not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deja: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes on one line (multi-line reports such as divergences keep their
/// own lines).
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

/// Logs go to stderr through `tracing`, enabled with `DEJA_LOG=debug` (any `EnvFilter` syntax).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEJA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Asked-for logs carry the time since start (where the time goes); the warnings shown
    // by default do not.
    if std::env::var_os("DEJA_LOG").is_some() {
        builder
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .init();
    } else {
        builder.without_time().init();
    }
}
