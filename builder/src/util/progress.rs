//! One line per pipeline step with its duration, and spinners for long work.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

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
        eprintln!("  {:<44} {:>7.1}s", self.name, took.as_secs_f64());
        took
    }
}
