//! Serving a replay to gdb over TCP, and launching gdb connected to it.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::common::Signal;
use gdbstub::target::Target;
use replayer::DebugOptions;

use crate::target::{gdb_tid, ReplayTarget};

/// The gdb commands that connect to a server at `addr` and load symbols from `exe`, as `rr`
/// launches gdb: libraries come from this machine's file system.
pub fn gdb_command(addr: &str, exe: &Path) -> Vec<String> {
    vec![
        "-l".into(),
        "10000".into(),
        "-ex".into(),
        "set sysroot /".into(),
        "-ex".into(),
        format!("target extended-remote {addr}"),
        exe.display().to_string(),
    ]
}

/// Serves the replay of the trace in `dir` to the first gdb that connects to `listener`.
/// `companion` is the gdb this deja launched: if it ends before connecting, serving ends too.
/// Must run on the tracer thread.
pub fn serve(
    dir: PathBuf,
    opts: DebugOptions,
    listener: TcpListener,
    companion: Option<libc::pid_t>,
) -> Result<()> {
    let target = ReplayTarget::open(dir, opts)?;
    let conn = accept(&listener, companion)?;
    serve_connection(target, conn)
}

/// Waits for gdb to connect, giving up if the gdb deja launched ends first.
fn accept(listener: &TcpListener, companion: Option<libc::pid_t>) -> Result<TcpStream> {
    listener
        .set_nonblocking(true)
        .context("setting up the gdb listener")?;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)
                    .context("setting up the gdb connection")?;
                conn.set_nodelay(true).ok();
                return Ok(conn);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("accepting gdb's connection"),
        }
        if let Some(pid) = companion {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG on our own child only writes `status`.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                bail!("gdb ended without connecting to the replay");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve_connection(mut target: ReplayTarget, conn: TcpStream) -> Result<()> {
    let probe = conn.try_clone().context("cloning the gdb connection")?;
    target
        .replay()
        .set_interrupt(Box::new(move || has_input(&probe)));
    let stub = GdbStub::new(conn);
    match stub.run_blocking::<ReplayLoop>(&mut target) {
        Ok(DisconnectReason::Disconnect | DisconnectReason::Kill) => Ok(()),
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => Ok(()),
        Err(e) if e.is_target_error() => {
            let e = e.into_target_error().map(|e| format!("{e:#}")).unwrap_or_default();
            bail!("{e}")
        }
        Err(e) if e.is_connection_error() => Ok(()),
        Err(e) => bail!("gdb protocol error: {e}"),
    }
}

/// Whether gdb sent something (its interrupt) without consuming it.
fn has_input(conn: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a non-blocking peek of at most one byte into a local.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 1
}

/// gdbstub's event loop: runs the replay, and hands gdb's interrupt to gdbstub.
enum ReplayLoop {}

impl BlockingEventLoop for ReplayLoop {
    type Target = ReplayTarget;
    type Connection = TcpStream;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut ReplayTarget,
        conn: &mut TcpStream,
    ) -> Result<
        Event<Self::StopReason>,
        WaitForStopReasonError<<ReplayTarget as Target>::Error, std::io::Error>,
    > {
        let halt = target.run().map_err(WaitForStopReasonError::Target)?;
        if matches!(halt, replayer::Halt::Interrupted(_)) && has_input(conn) {
            // Let gdbstub see gdb's interrupt byte; it then asks `on_interrupt` for the stop.
            let byte = conn.read().map_err(WaitForStopReasonError::Connection)?;
            return Ok(Event::IncomingData(byte));
        }
        Ok(Event::TargetStopped(target.stop_reason(halt)))
    }

    fn on_interrupt(target: &mut ReplayTarget) -> Result<Option<Self::StopReason>, anyhow::Error> {
        let tid = target.replay_ref().current_thread();
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: gdb_tid(tid),
            signal: Signal::SIGINT,
        }))
    }
}
