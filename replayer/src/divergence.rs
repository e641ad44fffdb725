//! What the replayer reports when the replay stops matching the recording.

use std::fmt;

/// The replayed program did something other than what the recording says it did.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// Index of the event that did not match (0 is the exec).
    pub event: u64,
    /// The recorded id of the task the event belongs to.
    pub task: i32,
    /// What the recording expected there.
    pub expected: String,
    /// What the replay found instead.
    pub found: String,
    /// Further details (differing registers, ...).
    pub details: Vec<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay diverged from the recording at event {} (task {}): expected {}, found {}",
            self.event, self.task, self.expected, self.found
        )?;
        for d in &self.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Divergence {}

/// The trace ends before the program did: the recording was cut off (e.g. the recorder was
/// killed). Everything up to the end of the trace replayed faithfully.
#[derive(Debug, Clone)]
pub struct Incomplete {
    /// Number of events replayed.
    pub events: u64,
    /// Why the recording stopped, as the trace says (`None`: it does not say; the recorder
    /// was killed).
    pub stopped: Option<trace_format::Stopped>,
}

impl Incomplete {
    /// The trace ended after `events` events; `meta` says why, if it knows.
    pub fn of(events: u64, meta: &trace_format::TraceMeta) -> Self {
        Incomplete {
            events,
            stopped: meta.stopped.clone(),
        }
    }
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match &self.stopped {
            Some(trace_format::Stopped::Signal(sig)) => {
                format!("its recorder was stopped by {}", signal_name(*sig))
            }
            Some(trace_format::Stopped::Error(e)) => format!("the recording stopped: {e}"),
            None => "its recorder was killed".to_string(),
        };
        write!(
            f,
            "the recording is incomplete ({why}): replayed all {} recorded events faithfully, \
             then the trace ends before the program did",
            self.events
        )
    }
}

/// `SIGTERM` for 15, and so on; `signal N` for a number without a name here.
fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        n => format!("signal {n}"),
    }
}

impl std::error::Error for Incomplete {}
