//! Serving a replay to gdb over TCP, and launching gdb connected to it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, GdbStubError, MultiThreadStopReason};
use replayer::{Halt, StartPoint};
use tracee::debugregs::MAX_WATCH_LEN;

use crate::target::{gdb_tid, ReplayTarget};
use crate::tls_packet::{GdbConnection, Incoming, TlsRequest, PACKET_SIZE};

/// gdb's arguments to connect to a server at `addr` and load symbols from `exe`, as `rr`
/// launches gdb (libraries come from this machine's file system), with `extra` arguments
/// before the program.
pub fn gdb_command(addr: &str, exe: &Path, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-l".into(),
        "10000".into(),
        "-ex".into(),
        "set sysroot /".into(),
        // Longer watched ranges need more than the four debug registers: gdb watches them
        // in software instead of asking the server, which refuses them.
        "-ex".into(),
        format!("set remote hardware-watchpoint-length-limit {MAX_WATCH_LEN}"),
        "-ex".into(),
        format!("target extended-remote {addr}"),
    ];
    args.extend_from_slice(extra);
    args.push(exe.display().to_string());
    args
}

/// Serves the replay of the trace in `dir`, from `start`, to gdb connecting to `listener`;
/// `quiet` keeps the program's output from being echoed. `companion` is the gdb this deja
/// launched: if it ends before connecting, serving ends too, and serving ends with its
/// connection. Otherwise serving goes on after a client disconnects, for the next one (each
/// finds the replay at its start), until the process is stopped, or after the first one with
/// `once`. A client speaking nonsense loses its connection, not the server. Must run on the
/// tracer thread.
pub fn serve(
    dir: PathBuf,
    start: StartPoint,
    quiet: bool,
    listener: TcpListener,
    companion: Option<libc::pid_t>,
    once: bool,
) -> Result<()> {
    let mut target = ReplayTarget::open(dir, start, quiet)?;
    let once = once || companion.is_some();
    // Whether a client moved the replay (or set breakpoints) since it last started.
    let mut dirty = false;
    loop {
        let conn = accept(&listener, companion)?;
        if dirty {
            target
                .start_over()
                .context("starting the replay over for the next gdb")?;
            dirty = false;
        }
        // The replay keeps a handle on the connection (to see gdb's interrupt byte): the
        // client sees the end only once the socket is shut down.
        let closer = conn.try_clone().context("cloning the gdb connection")?;
        let session = serve_connection(&mut target, conn);
        closer.shutdown(std::net::Shutdown::Both).ok();
        let session = session?;
        dirty |= session.used;
        if let Some(e) = session.protocol_error {
            if once {
                return Err(e);
            }
            eprintln!("deja: closed a gdb connection: {e:#}");
        }
        if once {
            return Ok(());
        }
        if session.used {
            let addr = listener
                .local_addr()
                .map_or_else(|_| "its address".to_string(), |a| a.to_string());
            eprintln!("deja: gdb disconnected; still serving on {addr} (Ctrl-C ends)");
        }
    }
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

/// How a connection ended.
struct Session {
    /// Whether the client sent anything (the replay then needs a fresh start for the next).
    used: bool,
    /// What the client sent that gdbstub could not take, which ended the connection.
    protocol_error: Option<anyhow::Error>,
}

/// Serves one connection until it ends. Errors of the replay (a divergence) are errors;
/// nonsense from the client ends the connection with [`Session::protocol_error`].
fn serve_connection(target: &mut ReplayTarget, conn: TcpStream) -> Result<Session> {
    let mut session = Session {
        used: false,
        protocol_error: None,
    };
    let conn = GdbConnection::new(conn);
    let probe = conn.input_probe().context("cloning the gdb connection")?;
    target.timeline().set_interrupt(probe);
    let stub = GdbStub::builder(conn)
        .packet_buffer_size(PACKET_SIZE)
        .build()
        .map_err(|e| anyhow::anyhow!("setting up the gdb protocol: {e}"))?;
    let start = stub.run_state_machine(target);
    let Some(mut machine) = step(start, &mut session)? else {
        return Ok(session);
    };
    loop {
        let next = match machine {
            GdbStubStateMachine::Idle(mut gdb) => {
                let process = target.replay_ref().process() as u64;
                gdb.borrow_conn().procs.set_debugged(process);
                let incoming = gdb.borrow_conn().read_incoming();
                session.used |= incoming.is_ok();
                match incoming {
                    Ok(Incoming::Byte(byte)) => gdb.incoming_data(target, byte),
                    Ok(Incoming::GetTlsAddr(req)) => {
                        answer_tls(target, gdb.borrow_conn(), req)?;
                        Ok(GdbStubStateMachine::Idle(gdb))
                    }
                    Ok(Incoming::Conditions(c)) => {
                        target.set_conditions(c);
                        Ok(GdbStubStateMachine::Idle(gdb))
                    }
                    Ok(Incoming::SigInfo { thread, range }) => {
                        answer_siginfo(target, gdb.borrow_conn(), thread, range)?;
                        Ok(GdbStubStateMachine::Idle(gdb))
                    }
                    Ok(Incoming::Skipped) => Ok(GdbStubStateMachine::Idle(gdb)),
                    Ok(Incoming::FollowChild { child, reply }) => {
                        crate::procs::follow_child(target, gdb.borrow_conn(), child, reply)?;
                        Ok(GdbStubStateMachine::Idle(gdb))
                    }
                    // gdb went away.
                    Err(_) => return Ok(session),
                }
            }
            GdbStubStateMachine::Running(gdb) if target.stops_at_resume() => {
                match target.take_stop_at_resume() {
                    Some(reason) => gdb.report_stop(target, reason),
                    None => Ok(GdbStubStateMachine::Running(gdb)),
                }
            }
            GdbStubStateMachine::Running(mut gdb) => {
                let events = gdb.borrow_conn().procs.events();
                target.timeline().set_proc_events(events);
                let halt = target.run()?;
                if matches!(halt, Halt::Interrupted(_)) && gdb.borrow_conn().has_input() {
                    // gdb's interrupt byte: gdbstub then asks for the stop (CtrlCInterrupt).
                    match gdb.borrow_conn().read_incoming() {
                        Ok(Incoming::Byte(byte)) => gdb.incoming_data(target, byte),
                        // Not expected while running (gdb waits for the stop), but answerable.
                        Ok(Incoming::GetTlsAddr(req)) => {
                            answer_tls(target, gdb.borrow_conn(), req)?;
                            Ok(GdbStubStateMachine::Running(gdb))
                        }
                        Ok(Incoming::SigInfo { thread, range }) => {
                            answer_siginfo(target, gdb.borrow_conn(), thread, range)?;
                            Ok(GdbStubStateMachine::Running(gdb))
                        }
                        Ok(Incoming::Conditions(c)) => {
                            target.set_conditions(c);
                            Ok(GdbStubStateMachine::Running(gdb))
                        }
                        // Noise: the replay runs on.
                        Ok(Incoming::Skipped) => Ok(GdbStubStateMachine::Running(gdb)),
                        // (Not while running: gdb waits for the stop.)
                        Ok(Incoming::FollowChild { .. }) => Ok(GdbStubStateMachine::Running(gdb)),
                        Err(_) => return Ok(session),
                    }
                } else {
                    crate::procs::before_stop(target, gdb.borrow_conn(), halt)
                        .context("telling gdb about a process event")?;
                    let reason = target.stop_reason(halt);
                    // The halting thread's general registers go with the stop: gdb then
                    // needs no `g` round trip to go on stepping.
                    let regs = target.expedited_registers(&halt);
                    let mut regs = regs.iter().map(|(id, v)| (*id, v.as_slice()));
                    gdb.report_stop_with_regs(target, reason, &mut regs)
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(gdb) => {
                let tid = target.stop_thread();
                let reason = MultiThreadStopReason::SignalWithThread {
                    tid: gdb_tid(tid),
                    signal: Signal::SIGINT,
                };
                gdb.interrupt_handled(target, Some(reason))
            }
            GdbStubStateMachine::Disconnected(gdb) => match gdb.get_reason() {
                // The program ended, the session goes on: gdb may look around or `run` again.
                DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_) => {
                    Ok(gdb.return_to_idle())
                }
                DisconnectReason::Disconnect | DisconnectReason::Kill => return Ok(session),
            },
        };
        match step(next, &mut session)? {
            Some(m) => machine = m,
            None => return Ok(session),
        }
    }
}

/// A step of the protocol: `None` when the connection ended (gdb went away, which ends the
/// session normally, or sent what gdbstub cannot take, noted in `session`); the replay's own
/// errors (a divergence) as they are.
fn step<T>(
    step: Result<T, GdbStubError<anyhow::Error, std::io::Error>>,
    session: &mut Session,
) -> Result<Option<T>> {
    match step {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_connection_error() => Ok(None),
        Err(e) if e.is_target_error() => Err(match e.into_target_error() {
            Some(e) => e,
            None => anyhow::anyhow!("the replay failed"),
        }),
        Err(e) => {
            session.protocol_error = Some(anyhow::anyhow!("gdb protocol error: {e}"));
            Ok(None)
        }
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

/// Answers gdb's `qXfer:siginfo:read` (which gdbstub does not know) for `thread` (the halted
/// one if gdb named none): the recorded `siginfo_t` of its last signal, or an error (gdb
/// then says it cannot read siginfo) if it had none.
fn answer_siginfo(
    target: &mut ReplayTarget,
    conn: &mut GdbConnection,
    thread: Option<u64>,
    range: Result<(u64, usize)>,
) -> Result<()> {
    let tid = thread.map_or_else(|| target.stop_thread(), |t| t as trace_format::Tid);
    let info = target.siginfo(tid);
    let (info, offset, length) = match range {
        Ok((offset, length)) => (info, offset, length),
        Err(e) => {
            eprintln!("deja: a siginfo request made no sense: {e:#}");
            (None, 0, 0)
        }
    };
    conn.send_xfer_reply(info, offset, length)
        .context("answering gdb's qXfer:siginfo:read")
}
