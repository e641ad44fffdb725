//! rr's commands in gdb: `when`, `when-tid`, `checkpoint`, `restart N`, `delete checkpoint N`,
//! `info checkpoints` (a small gdb Python script deja writes out and gdb loads, each command
//! calling a `monitor` command), and `run N` / `run cN` (gdb's own `run`, whose argument
//! reaches the server in `vRun`: [`RunTo`]).
//!
//! gdb's built-in `checkpoint`, `restart`, `info checkpoints` and `delete checkpoint` work by
//! forking the inferior, which a replay cannot do ("can't checkpoint multiple threads"): the
//! script's commands replace them, as rr's do.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The script: rr's commands with rr's output, on top of deja's `monitor` commands.
pub const SCRIPT: &str = r##"# deja's gdb commands (rr's): when, when-tid, checkpoint, restart N, delete checkpoint N,
# info checkpoints; `run N` restarts the replay at event N, plain `run` at its start.
import re
import gdb

_deja_where = {}


def _deja_monitor(cmd):
    return gdb.execute("monitor " + cmd, to_string=True)


def _deja_number(text, pattern):
    m = re.search(pattern, text)
    if not m:
        raise gdb.GdbError(text.strip())
    return int(m.group(1))


class _DejaWhen(gdb.Command):
    """Print the number of the last completely replayed event (`deja dump` numbers them)."""

    def __init__(self):
        gdb.Command.__init__(self, "when", gdb.COMMAND_RUNNING, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        n = _deja_number(_deja_monitor("when"), r"Current event: (\d+)")
        gdb.write("Completed event: %d\n" % n)


class _DejaWhenTid(gdb.Command):
    """Print the recorded tid of the current thread."""

    def __init__(self):
        gdb.Command.__init__(self, "when-tid", gdb.COMMAND_RUNNING, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        t = gdb.selected_thread()
        if t is None:
            raise gdb.GdbError("No thread selected.")
        gdb.write(_deja_monitor("when-tid %d" % t.ptid[1]))


def _deja_frame():
    try:
        text = gdb.execute("frame 0", to_string=True)
    except gdb.error:
        return "???"
    m = re.match(r"#0\s*(.*)", text)
    return m.group(1).strip() if m else "???"


class _DejaCheckpoint(gdb.Command):
    """Create a checkpoint representing a point in the execution.
Use the 'restart' command to return to the checkpoint."""

    def __init__(self):
        gdb.Command.__init__(self, "checkpoint", gdb.COMMAND_RUNNING, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        where = _deja_frame()
        n = _deja_number(_deja_monitor("checkpoint"), r"Checkpoint (\d+) ")
        _deja_where[n] = where
        gdb.write("Checkpoint %d at %s\n" % (n, where))


class _DejaRestart(gdb.Command):
    """Restart at checkpoint N (checkpoints are created with the 'checkpoint' command);
without N, at the checkpoint restarted last."""

    last = None

    def __init__(self):
        gdb.Command.__init__(self, "restart", gdb.COMMAND_RUNNING, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        arg = arg.strip() or (_DejaRestart.last or "")
        if not arg.isdigit():
            raise gdb.GdbError("'restart' takes the number of a checkpoint")
        saved = re.findall(r"^(\d+)\s+after event", _deja_monitor("checkpoints"), re.M)
        if arg not in saved:
            raise gdb.GdbError("Checkpoint %s not found." % arg)
        _DejaRestart.last = arg
        confirm = gdb.parameter("confirm")
        gdb.execute("set confirm off")
        try:
            gdb.execute("run c" + arg, from_tty)
        finally:
            gdb.execute("set confirm " + ("on" if confirm else "off"))


class _DejaDeleteCheckpoint(gdb.Command):
    """Remove a checkpoint created with the 'checkpoint' command."""

    def __init__(self):
        gdb.Command.__init__(self, "delete checkpoint", gdb.COMMAND_RUNNING, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        if not arg:
            raise gdb.GdbError("'delete checkpoint' requires an argument")
        if not arg.isdigit():
            raise gdb.GdbError("Invalid checkpoint number %s." % arg)
        gdb.write(_deja_monitor("delete checkpoint " + arg))
        _deja_where.pop(int(arg), None)


class _DejaInfoCheckpoints(gdb.Command):
    """List all checkpoints created with the 'checkpoint' command."""

    def __init__(self):
        gdb.Command.__init__(self, "info checkpoints", gdb.COMMAND_STATUS, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        rows = re.findall(r"^(\d+)\s+after event (\d+)", _deja_monitor("checkpoints"), re.M)
        if not rows:
            gdb.write("No checkpoints.\n")
            return
        gdb.write("ID\tWhen\tWhere\n")
        for n, event in rows:
            gdb.write("%s\t%s\t%s\n" % (n, event, _deja_where.get(int(n), "???")))


_DejaWhen()
_DejaWhenTid()
_DejaCheckpoint()
_DejaRestart()
_DejaDeleteCheckpoint()
_DejaInfoCheckpoints()
# `run N` leaves N as the program's arguments: a later plain `run` starts at the start.
gdb.execute("define hookpost-run\nset args\nend")
"##;

/// Writes [`SCRIPT`] where gdb can load it (`-x FILE`): `$XDG_CACHE_HOME/deja` or
/// `~/.cache/deja`, else a directory of this user's own (mode 0700) in the system's temporary
/// directory; replaced atomically, so that a gdb reading it meanwhile sees a whole script.
/// Returns its path.
pub fn install_script() -> Result<PathBuf> {
    let cache = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(cache), _) if !cache.is_empty() => Some(PathBuf::from(cache).join("deja")),
        (_, Some(home)) if !home.is_empty() => Some(PathBuf::from(home).join(".cache/deja")),
        _ => None,
    };
    let in_cache = cache.map(|dir| {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .and_then(|()| write_script(&dir))
    });
    match in_cache {
        Some(Ok(path)) => Ok(path),
        Some(Err(e)) => private_temp_dir()
            .and_then(|dir| write_script(&dir))
            .map_err(|e2| e.context(e2)),
        None => write_script(&private_temp_dir()?),
    }
}

/// `deja-UID` in the temporary directory: made with mode 0700, or found as this user's own
/// directory that no one else can write.
fn private_temp_dir() -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("deja-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        bail!("{} is not a private directory of this user", dir.display());
    }
    Ok(dir)
}

/// Writes the script into `dir` (through a private name, renamed into place).
fn write_script(dir: &std::path::Path) -> Result<PathBuf> {
    let path = dir.join("gdb-commands.py");
    let tmp = dir.join(format!(".gdb-commands.py.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(SCRIPT.as_bytes())?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("writing deja's gdb commands to {}", path.display()))?;
    Ok(path)
}

/// Where gdb's `run ARG` restarts the replay (rr's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTo {
    /// Plain `run`: the start.
    Start,
    /// `run N`: right after event N.
    Event(u64),
    /// `run cN` (`restart N`): checkpoint N.
    Checkpoint(usize),
}

impl RunTo {
    /// What gdb's `run` arguments ask for (only the first counts).
    pub fn parse(arg: Option<&[u8]>) -> Result<RunTo> {
        let Some(arg) = arg else {
            return Ok(RunTo::Start);
        };
        let text = std::str::from_utf8(arg).context("`run`'s argument is not text")?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(RunTo::Start);
        }
        if let Some(n) = text.strip_prefix('c') {
            if let Ok(n) = n.parse() {
                return Ok(RunTo::Checkpoint(n));
            }
        } else if let Ok(n) = text.parse() {
            return Ok(RunTo::Event(n));
        }
        bail!(
            "`run {text}`: a replay runs from its start (`run`), from an event (`run N`) or from \
             a checkpoint (`restart N`)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_arguments() {
        assert_eq!(RunTo::parse(None).expect("plain"), RunTo::Start);
        assert_eq!(RunTo::parse(Some(b"")).expect("empty"), RunTo::Start);
        assert_eq!(RunTo::parse(Some(b"42")).expect("event"), RunTo::Event(42));
        assert_eq!(
            RunTo::parse(Some(b"c3")).expect("checkpoint"),
            RunTo::Checkpoint(3)
        );
        assert!(RunTo::parse(Some(b"x")).is_err());
        assert!(RunTo::parse(Some(b"cx")).is_err());
    }
}
