//! Progress on stderr for runs that take a while: one status line, rewritten in place, on a
//! terminal only; nothing at all when stderr is a file or a pipe.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ondemand::Progress;

/// A status line on stderr, cleared when the run ends (or this is dropped).
pub struct StderrProgress {
    enabled: bool,
    shown: AtomicBool,
}

impl StderrProgress {
    /// Shows progress only when stderr is a terminal.
    pub fn new() -> Self {
        StderrProgress {
            enabled: std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        }
    }

    fn show(&self, line: &str) {
        if self.enabled {
            self.shown.store(true, Ordering::Relaxed);
            // Carriage return and "erase line", so the next status replaces this one.
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        }
    }

    /// Removes the status line so that the result starts on a clean line.
    pub fn finish(&self) {
        if self.enabled && self.shown.swap(false, Ordering::Relaxed) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Progress for StderrProgress {
    fn step(&self, what: &str) {
        self.show(&format!("{what}…"));
    }

    fn account_done(&self, done: usize, total: usize, account: &str) {
        self.show(&format!("account {done}/{total} done ({account})"));
    }
}

impl Drop for StderrProgress {
    fn drop(&mut self) {
        self.finish();
    }
}
