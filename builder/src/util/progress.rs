//! One line per pipeline step with its duration, and spinners for long work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `-q`: no progress lines and no spinners (warnings and errors still show).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A progress line on stderr, unless `-q`.
pub fn line(text: impl std::fmt::Display) {
    if !is_quiet() {
        eprintln!("{text}");
    }
}

/// A named pipeline step: shows a spinner while it runs and prints one line
/// with its duration when it ends.
pub struct Step {
    name: String,
    started: Instant,
    bar: ProgressBar,
}

impl Step {
    pub fn start(name: impl Into<String>) -> Self {
        let name = name.into();
        if is_quiet() {
            return Step {
                name,
                started: Instant::now(),
                bar: ProgressBar::hidden(),
            };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("static template"),
        );
        bar.set_message(name.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        Step {
            name,
            started: Instant::now(),
            bar,
        }
    }

    /// Updates the text after the step's name (e.g. the current sub-task).
    pub fn detail(&self, detail: &str) {
        self.bar.set_message(format!("{}: {detail}", self.name));
    }

    /// Ends the step and prints its duration; returns it for reports.
    pub fn finish(self) -> Duration {
        let took = self.started.elapsed();
        self.bar.finish_and_clear();
        line(format!("  {:<44} {:>7.1}s", self.name, took.as_secs_f64()));
        took
    }
}
