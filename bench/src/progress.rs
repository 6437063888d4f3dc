//! The progress bar on stderr: `[######----] 12/40 start.oci ns`, redrawn in place on a
//! terminal, one line per step otherwise (logs stay readable).

use std::io::{IsTerminal, Write};

/// Counts steps and draws the bar.
pub struct Progress {
    done: usize,
    total: usize,
    tty: bool,
    quiet: bool,
}

impl Progress {
    /// A bar for `total` steps (more may be added with [`Progress::add`]); `quiet` draws nothing.
    pub fn new(total: usize, quiet: bool) -> Progress {
        Progress {
            done: 0,
            total,
            tty: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Adds `n` steps to the total.
    pub fn add(&mut self, n: usize) {
        self.total += n;
    }

    /// Marks one step done and shows what it was.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        self.total = self.total.max(self.done);
        if self.quiet {
            return;
        }
        let width = 24;
        let filled = width * self.done / self.total.max(1);
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K[{bar}] {}/{} {what}", self.done, self.total);
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "[{bar}] {}/{} {what}", self.done, self.total);
        }
    }

    /// Prints a note on its own line (the bar is redrawn at the next step).
    pub fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{msg}");
    }

    /// Ends the bar's line.
    pub fn finish(&self) {
        if self.tty && !self.quiet {
            let _ = writeln!(std::io::stderr());
        }
    }
}
