//! The agent's life as PID 1: boot, announce readiness, start services, reap, power off.
//!
//! Signals arrive through a `signalfd` read by the main thread. They are blocked before anything else
//! runs, so every thread started later (the RPC server) inherits the mask and no signal is lost to a
//! thread that does not handle it (PID 1 silently drops unhandled signals).

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::cmdline::Config;
use crate::init::{self, Error};
use crate::power::{self, Reason};
use crate::sys::{Linux, Sys, WaitStatus};

/// The signals the main loop handles: child exits and requests to shut down (SIGINT is what the
/// kernel sends for ctrl-alt-del once it is turned off; SIGPWR is a power event).
const SIGNALS: [libc::c_int; 4] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGPWR];

/// What runs in the guest besides the PID-1 duties (the vsock RPC server: [`crate::services`]).
pub trait Services {
    /// Called once, right after readiness was announced; start threads here (signals stay blocked
    /// in them; children started with `std::process::Command` get an empty mask).
    fn after_ready(&mut self, _cfg: &Config) {}

    /// A process of the guest ended. The agent reaps every orphan in the guest, so this sees exits
    /// of processes it did not start too.
    fn child_exited(&mut self, pid: i32, status: WaitStatus) {
        tracing::debug!("process {pid} ended: {status:?}");
    }
}

/// No services: the PID-1 duties only.
#[derive(Debug, Default)]
pub struct NoServices;

impl Services for NoServices {}

/// Asks the agent to power the VM off, from any thread (the main loop receives it as SIGTERM).
pub fn request_power_off() -> io::Result<()> {
    // SAFETY: kill(2) takes no pointers.
    if unsafe { libc::kill(1, libc::SIGTERM) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The blocked signals, readable from a `signalfd`.
struct Signals {
    fd: OwnedFd,
}

impl Signals {
    fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t for all these calls.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in SIGNALS {
                libc::sigaddset(&mut set, s);
            }
        }
        // SAFETY: `set` is initialised; the old mask is not wanted (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: `set` is initialised; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Blocks until a signal arrives; returns its number.
    fn next(&self) -> io::Result<i32> {
        // SAFETY: signalfd_siginfo is plain data; all-zero is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: `info` is a writable buffer of `size` bytes.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&raw mut info).cast::<libc::c_void>(),
                    size,
                )
            };
            match n {
                n if n == size as isize => return Ok(info.ssi_signo as i32),
                n if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                n if n < 0 => return Err(io::Error::last_os_error()),
                n => {
                    return Err(io::Error::other(format!(
                        "short read of {n} bytes from the signalfd"
                    )));
                }
            }
        }
    }
}

/// Runs the agent as the guest's PID 1. Returns only on a fatal error (which the caller reports before
/// resetting the VM without the power-off byte, so the VMM sees a failed guest).
pub fn run(services: &mut impl Services) -> Result<Infallible, Error> {
    let mut sys = Linux;
    init::require_pid1(&sys)?;
    crate::log::Console::install(tracing::Level::INFO);
    let signals = Signals::block().map_err(|source| Error::Step {
        step: "block signals".into(),
        source,
    })?;
    // ctrl-alt-del becomes SIGINT to PID 1 instead of an immediate reboot.
    // SAFETY: reboot(2) takes no pointers with this command.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) };

    let cfg = init::boot(&mut sys)?;
    init::announce_ready(&mut sys);
    services.after_ready(&cfg);

    if let Some(test) = cfg.selftest {
        init::run_selftest(&mut sys, test)?;
        return Err(refused(power::power_off(&mut sys, Reason::SelfTestDone)));
    }
    loop {
        let signal = signals.next().map_err(|source| Error::Step {
            step: "read the signalfd".into(),
            source,
        })?;
        if signal == libc::SIGCHLD {
            // Not while the RPC server starts a container process (see crate::SPAWN_LOCK).
            let _spawning = crate::spawn_lock();
            power::reap_all(&mut sys, &mut |pid, status| {
                services.child_exited(pid, status)
            });
        } else {
            return Err(refused(power::power_off(&mut sys, Reason::Signal(signal))));
        }
    }
}

fn refused(source: io::Error) -> Error {
    Error::Step {
        step: "reset the VM (reboot(LINUX_REBOOT_CMD_RESTART))".into(),
        source,
    }
}

/// Resets the VM after a fatal error, without the power-off byte: the VMM reports a failed guest.
pub fn fail(error: &Error) -> io::Error {
    tracing::error!("fatal: {error}; resetting the VM");
    let mut sys = Linux;
    sys.sync();
    sys.restart()
}
