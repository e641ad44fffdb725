//! A progress bar on stderr for `deja replay -a`: only when stderr is a terminal, and only
//! once the replay has taken [`SHOW_AFTER`] (a short replay draws nothing).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use replayer::{Progress, ReplayOptions, ReplayOutcome};

/// How long a replay runs before its bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// The replay's side of the bar: the event reached, and the bar once shown.
#[derive(Debug, Default)]
struct Shared {
    event: AtomicU64,
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Shared {
    fn event(&self, index: u64) {
        // (Lanes replayed at once report their events each: the bar shows the furthest.)
        self.event.fetch_max(index, Ordering::Relaxed);
    }

    fn around_output(&self, write: &mut dyn FnMut()) {
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match bar.as_ref() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// `replayer::replay`, with a progress bar on stderr when it is a terminal.
pub fn replay(dir: &Path, mut opts: ReplayOptions) -> Result<ReplayOutcome> {
    if !std::io::stderr().is_terminal() {
        return replayer::replay(dir, &opts);
    }
    // The number of events, when the trace is complete (else the bar counts up only).
    let total = trace_format::TraceReader::open(dir)
        .ok()
        .map(|r| r.meta().clone())
        .filter(|m| m.complete)
        .map(|m| m.event_count);
    let shared = Arc::new(Shared::default());
    opts.progress = Some(shared.clone());
    let (done, finished) = mpsc::channel::<()>();
    let drawer = {
        let shared = shared.clone();
        std::thread::spawn(move || draw(&shared, total, &finished))
    };
    let result = replayer::replay(dir, &opts);
    drop(done);
    let _ = drawer.join();
    result
}

/// Shows the bar after [`SHOW_AFTER`] and moves it every [`TICK`] until `finished` hangs up;
/// then clears it.
fn draw(shared: &Shared, total: Option<u64>, finished: &mpsc::Receiver<()>) {
    if finished.recv_timeout(SHOW_AFTER) != Err(mpsc::RecvTimeoutError::Timeout) {
        return;
    }
    let bar =
        ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr()).with_elapsed(SHOW_AFTER);
    let template = match total {
        Some(_) => "deja: replaying {wide_bar} event {pos} of {len}, {elapsed}",
        None => "deja: replaying {spinner} event {pos}, {elapsed}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(shared.event.load(Ordering::Relaxed));
    *shared.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
    while finished.recv_timeout(TICK) == Err(mpsc::RecvTimeoutError::Timeout) {
        bar.set_position(shared.event.load(Ordering::Relaxed));
    }
    let taken = shared.bar.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(bar) = taken {
        bar.finish_and_clear();
    }
}
