//! Serving a replay to gdb over TCP, and launching gdb connected to it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, GdbStubError, MultiThreadStopReason};
use replayer::{Halt, StartPoint};

use crate::target::{gdb_tid, ReplayTarget};
use crate::tls_packet::{stream_has_input, GdbConnection, Incoming, TlsRequest};

/// gdb's arguments to connect to a server at `addr` and load symbols from `exe`, as `rr`
/// launches gdb (libraries come from this machine's file system), with `extra` arguments
/// before the program.
pub fn gdb_command(addr: &str, exe: &Path, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-l".into(),
        "10000".into(),
        "-ex".into(),
        "set sysroot /".into(),
        "-ex".into(),
        format!("target extended-remote {addr}"),
    ];
    args.extend_from_slice(extra);
    args.push(exe.display().to_string());
    args
}

/// Serves the replay of the trace in `dir`, from `start`, to the first gdb that connects to
/// `listener`; `quiet` keeps the program's output from being echoed. `companion` is the gdb
/// this deja launched: if it ends before connecting, serving ends too. Must run on the tracer
/// thread.
pub fn serve(
    dir: PathBuf,
    start: StartPoint,
    quiet: bool,
    listener: TcpListener,
    companion: Option<libc::pid_t>,
) -> Result<()> {
    let target = ReplayTarget::open(dir, start, quiet)?;
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
        .set_interrupt(Box::new(move || stream_has_input(&probe)));
    let start = GdbStub::new(GdbConnection::new(conn)).run_state_machine(&mut target);
    let Some(mut machine) = or_disconnect(start)? else {
        return Ok(());
    };
    loop {
        let next = match machine {
            GdbStubStateMachine::Idle(mut gdb) => match gdb.borrow_conn().read_incoming() {
                Ok(Incoming::Byte(byte)) => gdb.incoming_data(&mut target, byte),
                Ok(Incoming::GetTlsAddr(req)) => {
                    answer_tls(&mut target, gdb.borrow_conn(), req)?;
                    Ok(GdbStubStateMachine::Idle(gdb))
                }
                // gdb went away.
                Err(_) => return Ok(()),
            },
            GdbStubStateMachine::Running(mut gdb) => {
                let halt = target.run()?;
                if matches!(halt, Halt::Interrupted(_)) && gdb.borrow_conn().has_input() {
                    // gdb's interrupt byte: gdbstub then asks for the stop (CtrlCInterrupt).
                    match gdb.borrow_conn().read_incoming() {
                        Ok(Incoming::Byte(byte)) => gdb.incoming_data(&mut target, byte),
                        // Not expected while running (gdb waits for the stop), but answerable.
                        Ok(Incoming::GetTlsAddr(req)) => {
                            answer_tls(&mut target, gdb.borrow_conn(), req)?;
                            Ok(GdbStubStateMachine::Running(gdb))
                        }
                        Err(_) => return Ok(()),
                    }
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

/// Answers gdb's `qGetTLSAddr` (which gdbstub does not know). Why an address cannot be
/// found goes to deja's terminal: gdb only says the request failed.
fn answer_tls(
    target: &mut ReplayTarget,
    conn: &mut GdbConnection,
    req: Result<TlsRequest>,
) -> Result<()> {
    let address = req.and_then(|req| target.tls_address(&req));
    let address = match address {
        Ok(addr) => Some(addr),
        Err(e) => {
            eprintln!("deja: cannot find a thread-local variable for gdb: {e:#}");
            None
        }
    };
    conn.send_tls_reply(address)
        .context("answering gdb's qGetTLSAddr")
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
