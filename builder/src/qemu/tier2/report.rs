//! The tier-2 report: every line goes to stderr as it happens and into
//! `tier2.txt`; a failed check marks the run failed without stopping it.

use std::time::Duration;

use super::facts::Verdict;

pub(crate) struct Report {
    pub lines: Vec<String>,
    pub failed: bool,
}

impl Report {
    pub fn new() -> Report {
        Report {
            lines: Vec::new(),
            failed: false,
        }
    }

    pub fn line(&mut self, s: String) {
        eprintln!("{s}");
        self.lines.push(s);
    }
    pub fn verdicts(&mut self, vs: &[Verdict]) {
        for v in vs {
            self.check(v.ok, v.what.clone());
        }
    }
    pub fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.failed = true;
        }
        self.line(format!("  [{}] {what}", if ok { "ok" } else { "FAIL" }));
    }
    pub fn timed(&mut self, ok: bool, what: &str, took: Duration, window: u64, basis: &str) {
        self.check(
            ok,
            format!(
                "{what}: took {:.1}s, window {window}s ({basis})",
                took.as_secs_f64()
            ),
        );
    }
}
