//! Forwarding the signals `moat run` receives (Ctrl-C, `kill`, terminal hangup, ...) to the
//! container's init, as `docker run` and `runc run` do.
//!
//! The handler only writes the signal number to a pipe (async-signal-safe); a thread reads it and
//! calls [`Instance::kill`]. Handlers are restored when the [`Forwarder`] is dropped.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use moat_backend::Instance;

/// The signals passed on.
const FORWARDED: [i32; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Write end of the pipe, for the handler (-1 when none).
static PIPE_W: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_W.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a local.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// Forwards signals while alive.
#[derive(Debug)]
pub struct Forwarder {
    old: Vec<(i32, libc::sigaction)>,
    write: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    /// Installs the handlers and starts the forwarding thread.
    pub fn start(instance: Arc<dyn Instance>) -> std::io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        PIPE_W.store(write.as_raw_fd(), Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name("moat-signals".into())
            .spawn(move || {
                let mut f = std::fs::File::from(read);
                let mut b = [0u8; 1];
                while let Ok(1) = f.read(&mut b) {
                    let sig = i32::from(b[0]);
                    if let Err(e) = instance.kill(None, sig, false) {
                        tracing::debug!("forwarding signal {sig}: {e}");
                    }
                }
            })?;
        let mut old = Vec::new();
        for sig in FORWARDED {
            // SAFETY: a zeroed sigaction is a valid starting value; we fill handler and flags.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            // SAFETY: an empty mask for the handler.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            // SAFETY: zeroed storage for the previous action.
            let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: installs a handler that only calls write(2).
            if unsafe { libc::sigaction(sig, &sa, &mut prev) } == 0 {
                old.push((sig, prev));
            }
        }
        Ok(Self {
            old,
            write: Some(write),
            thread: Some(thread),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restores the action saved when we installed ours.
            unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
        }
        PIPE_W.store(-1, Ordering::Relaxed);
        drop(self.write.take()); // EOF ends the thread
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
