//! Serving a replay to gdb over TCP, and launching gdb connected to it.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, GdbStubError, MultiThreadStopReason};
use replayer::{DebugOptions, Halt};

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
    let Some(mut machine) = or_disconnect(GdbStub::new(conn).run_state_machine(&mut target))?
    else {
        return Ok(());
    };
    loop {
        let next = match machine {
            GdbStubStateMachine::Idle(mut gdb) => {
                let byte = match gdb.borrow_conn().read() {
                    Ok(b) => b,
                    // gdb went away.
                    Err(_) => return Ok(()),
                };
                gdb.incoming_data(&mut target, byte)
            }
            GdbStubStateMachine::Running(mut gdb) => {
                let halt = target.run()?;
                if matches!(halt, Halt::Interrupted(_)) && has_input(gdb.borrow_conn()) {
                    // gdb's interrupt byte: gdbstub then asks for the stop (CtrlCInterrupt).
                    let byte = match gdb.borrow_conn().read() {
                        Ok(b) => b,
                        Err(_) => return Ok(()),
                    };
                    gdb.incoming_data(&mut target, byte)
                } else {
                    let reason = target.stop_reason(halt);
                    gdb.report_stop(&mut target, reason)
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(gdb) => {
                let tid = target.replay_ref().current_thread();
                let reason = MultiThreadStopReason::SignalWithThread {
                    tid: gdb_tid(tid),
                    signal: Signal::SIGINT,
                };
                gdb.interrupt_handled(&mut target, Some(reason))
            }
            GdbStubStateMachine::Disconnected(gdb) => match gdb.get_reason() {
                // The program ended, the session goes on: gdb may look around or `run` again.
                DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_) => {
                    Ok(gdb.return_to_idle())
                }
                DisconnectReason::Disconnect | DisconnectReason::Kill => return Ok(()),
            },
        };
        match or_disconnect(next)? {
            Some(m) => machine = m,
            None => return Ok(()),
        }
    }
}

/// A step of the protocol: `None` when gdb went away (a closed connection ends the session
/// normally), the replay's own errors (a divergence) as they are.
fn or_disconnect<T>(
    step: Result<T, GdbStubError<anyhow::Error, std::io::Error>>,
) -> Result<Option<T>> {
    match step {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_connection_error() => Ok(None),
        Err(e) => Err(protocol_error(e)),
    }
}

/// A gdbstub error as deja reports it: the replay's own errors (a divergence) as they are.
fn protocol_error(e: GdbStubError<anyhow::Error, std::io::Error>) -> anyhow::Error {
    if e.is_target_error() {
        if let Some(e) = e.into_target_error() {
            return e;
        }
        return anyhow::anyhow!("the replay failed");
    }
    anyhow::anyhow!("gdb protocol error: {e}")
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
