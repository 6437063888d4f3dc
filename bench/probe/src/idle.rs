//! An idle workload (for memory and density measurements): `ready`, then nothing until told to
//! stop.
//!
//! It often runs as PID 1 of a pid namespace, where the kernel drops signals whose disposition is
//! the default, so SIGTERM and SIGINT get real handlers. EOF on stdin also stops it, but only when
//! stdin is a pipe or a socket: `/dev/null` reads as EOF at once, and a terminal is not a stop
//! channel, so with those it just waits for a signal.

use crate::process::{self, SIGINT, SIGTERM};
use crate::{out, sys};

/// The SIGTERM/SIGINT handler: exit 0 at once.
extern "C" fn stop(_sig: i32) {
    process::exit_now(0);
}

/// Prints `ready` and waits; exits 0 when stopped.
pub fn run() -> ! {
    for sig in [SIGTERM, SIGINT] {
        if let Err(e) = process::on_signal(sig, stop) {
            eprintln!("moat-bench-probe: sigaction({sig}): {e}");
            std::process::exit(1);
        }
    }
    out::line("ready");
    let stdin_closes = matches!(
        sys::file_kind(0),
        Ok(sys::FileKind::Fifo | sys::FileKind::Socket)
    );
    if stdin_closes {
        let mut buf = [0u8; 4096];
        loop {
            match sys::read(0, &mut buf) {
                Ok(0) => process::exit_now(0),
                Ok(_) => {}
                Err(e) if e == sys::EINTR => {}
                // Unreadable after all: fall back to signals only.
                Err(_) => break,
            }
        }
    }
    process::pause_forever()
}
