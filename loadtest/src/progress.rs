//! The live display: the phase, a bar of its progress, and the current rate and percentiles of
//! the operation being measured. On a terminal it redraws in place (`indicatif`); elsewhere (CI
//! logs) each phase is one line, and the figures one line every ten seconds.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::Summary;

#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    /// Plain lines instead of the bar (not a terminal, not quiet).
    lines: bool,
    last_line: Instant,
}

impl Progress {
    /// `quiet`: nothing at all.
    pub fn new(quiet: bool) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let target = if terminal && !quiet {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12.bold} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Self {
            bar,
            lines: !terminal && !quiet,
            last_line: Instant::now(),
        }
    }

    /// A new phase of `total` steps (0 when open-ended).
    pub fn phase(&mut self, name: &str, total: u64) {
        self.bar.set_prefix(name.to_owned());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message("");
        if self.lines {
            eprintln!("{name}: {total} steps");
        }
    }

    pub fn step(&self) {
        self.bar.inc(1);
    }

    /// Shows the figures so far of the operation being measured.
    pub fn figures(&mut self, operation: &str, summary: &Summary, elapsed: Duration) {
        let rate = summary.count as f64 / elapsed.as_secs_f64().max(1e-3);
        let line = format!(
            "{operation}: {rate:.1}/s p50 {} p99 {} errors {}",
            millis(summary.p50_us),
            millis(summary.p99_us),
            summary.error_count()
        );
        self.bar.set_message(line.clone());
        if self.lines && self.last_line.elapsed() > Duration::from_secs(10) {
            eprintln!("  {line}");
            self.last_line = Instant::now();
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Microseconds as milliseconds, for people.
pub fn millis(micros: u64) -> String {
    format!("{:.1}ms", micros as f64 / 1000.0)
}
