//! The progress display on stderr (indicatif): a spinner for setup phases, a bar while
//! measuring, with the rates in and out ([`tick_progress`]). Hidden with `--json` or when
//! stderr is not a terminal, so scripts and CI logs get only the result.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::{Clock, Window};
use crate::units::group;

#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A display on stderr, unless `quiet` or stderr is not a terminal.
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        };
        let p = Self { bar };
        p.phase("starting");
        p
    }

    /// A setup phase with no known length.
    pub fn phase(&self, msg: impl Into<String>) {
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
            self.bar.set_style(style);
        }
        self.bar.set_length(0);
        self.bar.set_position(0);
        self.bar.set_message(msg.into());
    }

    /// A phase of `len` steps.
    pub fn steps(&self, len: u64, msg: impl Into<String>) {
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
        {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.set_message(msg.into());
    }

    /// A timed phase of `secs` seconds.
    pub fn timed(&self, secs: u64, msg: impl Into<String>) {
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}/{len} s  {msg}")
        {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_length(secs);
        self.bar.set_position(0);
        self.bar.set_message(msg.into());
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// Removes the display (before the result is printed).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Updates the display every 500 ms with the phase and the rates in and out, until aborted.
pub async fn tick_progress(
    progress: Progress,
    clock: Clock,
    t0: u64,
    window: Window,
    sent: Vec<Arc<AtomicU64>>,
    seen: Arc<AtomicU64>,
) {
    let total_ms = (window.end - t0) / 1_000_000;
    progress.timed(total_ms.div_ceil(1000), "warm-up");
    let mut last = (clock.now_ns(), 0u64, seen.load(Ordering::Relaxed));
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = clock.now_ns();
        let s: u64 = sent.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let r = seen.load(Ordering::Relaxed);
        let dt = (now - last.0) as f64 / 1e9;
        let phase = if now < window.start {
            "warm-up"
        } else {
            "measuring"
        };
        progress.set_position(now.saturating_sub(t0) / 1_000_000_000);
        progress.set_message(format!(
            "{phase}: in {} msgs/s, out {} msgs/s",
            group(((s - last.1.min(s)) as f64 / dt) as u64),
            group(((r - last.2.min(r)) as f64 / dt) as u64)
        ));
        last = (now, s, r);
    }
}
