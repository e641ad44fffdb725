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
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the recording is incomplete (its recorder was killed or stopped with an error): \
             replayed all {} recorded events faithfully, then the trace ends before the program \
             did",
            self.events
        )
    }
}

impl std::error::Error for Incomplete {}
