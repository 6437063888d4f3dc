//! The shim's own log, written to the `log` FIFO containerd opens in the bundle: containerd copies
//! every line to its stderr, so `journalctl -u containerd` shows what the shim did.
//!
//! The FIFO is opened write-only and non-blocking: while containerd is down (restarting) the writes
//! fail and the lines are dropped instead of stalling the shim; once containerd reopens the FIFO the
//! same descriptor reaches it again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// A writer that never blocks and never fails the caller: lines that cannot be written are lost.
struct Sink(Mutex<Option<File>>);

struct SinkWriter<'a>(&'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = g.as_mut() {
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

/// Opens `<bundle>/log` for the long-lived shim. Falls back to read-write (which never fails on a
/// FIFO) when containerd has no reader open yet.
pub fn open_log_fifo(bundle: &Path) -> Option<File> {
    let path = bundle.join("log");
    let nonblock = libc::O_NONBLOCK | libc::O_CLOEXEC;
    OpenOptions::new()
        .write(true)
        .custom_flags(nonblock)
        .open(&path)
        .or_else(|_| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nonblock)
                .open(&path)
        })
        .ok()
}

/// Installs the global `tracing` subscriber writing to `out` (`None`: logs are discarded). Level:
/// `debug` with `-debug`, else `info`; `MOAT_SHIM_LOG` (an `EnvFilter`) overrides.
pub fn init(out: Option<File>, debug: bool) {
    let filter = std::env::var("MOAT_SHIM_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(if debug { "debug" } else { "info" }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Sink(Mutex::new(out)))
        .try_init();
}

/// Installs a subscriber writing to stderr (the `start` and `delete` subcommands: containerd shows
/// their stderr when they fail). Only warnings and errors, so a successful `start` prints nothing
/// but the address.
pub fn init_stderr(debug: bool) {
    let filter = EnvFilter::new(if debug { "debug" } else { "warn" });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(io::stderr)
        .try_init();
}
