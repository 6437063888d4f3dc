//! How the VM ends and pauses: the first exit reason wins and wakes the event loop; pausing parks
//! every vCPU thread outside `KVM_RUN` until resumed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

/// Why the VM stopped, and the process exit status that goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine through the keyboard controller (its power-off path).
    PowerOff,
    /// A vCPU halted with nothing that could wake it (no in-kernel irqchip).
    Halted,
    /// The control API asked to stop.
    Stopped,
    /// `--dry-boot`: everything was set up and the guest was not run.
    DryBoot,
    /// The guest kernel panicked; the console line that said so.
    GuestPanic(String),
    /// Triple fault, failed VM entry or KVM internal error.
    GuestCrash(String),
    /// The VMM itself failed.
    VmmError(String),
}

/// Process exit status for a clean end.
pub const EXIT_OK: i32 = 0;
/// Process exit status for bad input or a VMM failure.
pub const EXIT_ERROR: i32 = 1;
/// Process exit status for a guest kernel panic.
pub const EXIT_GUEST_PANIC: i32 = 2;
/// Process exit status for a guest crash (triple fault, KVM internal error).
pub const EXIT_GUEST_CRASH: i32 = 3;

impl ExitReason {
    /// The exit status.
    pub fn code(&self) -> i32 {
        match self {
            ExitReason::PowerOff
            | ExitReason::Halted
            | ExitReason::Stopped
            | ExitReason::DryBoot => EXIT_OK,
            ExitReason::GuestPanic(_) => EXIT_GUEST_PANIC,
            ExitReason::GuestCrash(_) => EXIT_GUEST_CRASH,
            ExitReason::VmmError(_) => EXIT_ERROR,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::PowerOff => f.write_str("guest powered off"),
            ExitReason::Halted => f.write_str("guest halted"),
            ExitReason::Stopped => f.write_str("stopped through the API"),
            ExitReason::DryBoot => f.write_str("dry boot: VM set up, guest not run"),
            ExitReason::GuestPanic(l) => write!(f, "guest kernel panic: {l}"),
            ExitReason::GuestCrash(r) => write!(f, "guest crashed: {r}"),
            ExitReason::VmmError(e) => write!(f, "VMM error: {e}"),
        }
    }
}

/// Shared between the vCPU threads, the event loop and the API thread.
pub struct Control {
    exit_evt: EventFd,
    reason: Mutex<Option<ExitReason>>,
    panic_line: Mutex<Option<String>>,
    poweroff_byte_expected: AtomicBool,
    poweroff_armed: AtomicBool,
    paused: Mutex<bool>,
    resumed: Condvar,
    pause_requested: AtomicBool,
    parked: AtomicUsize,
    parked_changed: Condvar,
    parked_lock: Mutex<()>,
    started: Instant,
}

/// Errors of control operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exit eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// vCPUs did not park in time.
    #[error("vCPUs did not pause within {0:?}")]
    PauseTimeout(Duration),
}

impl Control {
    /// A fresh control block; `started` is the process start (for boot timing).
    pub fn new(started: Instant) -> Result<Self, Error> {
        Ok(Self {
            exit_evt: EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?,
            reason: Mutex::new(None),
            panic_line: Mutex::new(None),
            poweroff_byte_expected: AtomicBool::new(false),
            poweroff_armed: AtomicBool::new(false),
            paused: Mutex::new(false),
            resumed: Condvar::new(),
            pause_requested: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            parked_changed: Condvar::new(),
            parked_lock: Mutex::new(()),
            started,
        })
    }

    /// When the process started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The eventfd that becomes readable once an exit reason is set.
    pub fn exit_evt(&self) -> &EventFd {
        &self.exit_evt
    }

    /// Records a kernel panic line seen on the console (the first one counts).
    pub fn note_panic(&self, line: String) {
        if let Ok(mut p) = self.panic_line.lock() {
            p.get_or_insert(line);
        }
    }

    /// Says that the guest announces a deliberate power-off on the boot-timer port
    /// (`moat_abi::BOOT_POWEROFF_MAGIC`), so a reset without that byte is a failure.
    pub fn expect_poweroff_byte(&self) {
        self.poweroff_byte_expected.store(true, Ordering::Release);
    }

    /// The guest wrote the power-off byte: its next reset is a clean power-off.
    pub fn arm_poweroff(&self) {
        self.poweroff_armed.store(true, Ordering::Release);
    }

    /// Asks the VM to end. The first reason wins. A reset (`PowerOff`) after a kernel panic line is
    /// that panic; without the power-off byte (when one is expected) it is a failure too.
    pub fn request_exit(&self, reason: ExitReason) {
        let reason = match reason {
            ExitReason::PowerOff | ExitReason::Halted => {
                let panic = self.panic_line.lock().ok().and_then(|p| p.clone());
                let unannounced = reason == ExitReason::PowerOff
                    && self.poweroff_byte_expected.load(Ordering::Acquire)
                    && !self.poweroff_armed.load(Ordering::Acquire);
                match panic {
                    Some(line) => ExitReason::GuestPanic(line),
                    None if unannounced => ExitReason::GuestPanic(
                        "the guest reset the VM without announcing a power-off                          (a kernel panic with the console off, or a reboot)"
                            .into(),
                    ),
                    None => reason,
                }
            }
            r => r,
        };
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some(reason);
        }
        // Wake parked vCPUs so they notice, and the event loop.
        self.resume();
        let _ = self.exit_evt.write(1);
    }

    /// The exit reason, once set.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// True once an exit was requested.
    pub fn exiting(&self) -> bool {
        self.exit_reason().is_some()
    }

    /// True while a pause is requested.
    pub fn pause_requested(&self) -> bool {
        self.pause_requested.load(Ordering::Acquire)
    }

    /// Called by a vCPU thread that saw a pause request: blocks until resumed or exiting.
    pub fn park(&self) {
        {
            let _g = self.parked_lock.lock();
            self.parked.fetch_add(1, Ordering::AcqRel);
            self.parked_changed.notify_all();
        }
        if let Ok(mut paused) = self.paused.lock() {
            while *paused && !self.exiting() {
                paused = match self.resumed.wait(paused) {
                    Ok(p) => p,
                    Err(_) => break,
                };
            }
        }
        let _g = self.parked_lock.lock();
        self.parked.fetch_sub(1, Ordering::AcqRel);
        self.parked_changed.notify_all();
    }

    /// Requests a pause; `kick` interrupts the vCPUs (a signal). Waits until `vcpus` are parked.
    pub fn pause(&self, vcpus: usize, kick: impl Fn(), timeout: Duration) -> Result<(), Error> {
        if let Ok(mut p) = self.paused.lock() {
            *p = true;
        }
        self.pause_requested.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut g = self
            .parked_lock
            .lock()
            .map_err(|_| Error::PauseTimeout(timeout))?;
        while self.parked.load(Ordering::Acquire) < vcpus {
            // A signal that lands just before KVM_RUN is lost; kick again until every vCPU parked.
            kick();
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::PauseTimeout(timeout));
            }
            let wait = (deadline - now).min(Duration::from_millis(5));
            g = self
                .parked_changed
                .wait_timeout(g, wait)
                .map_err(|_| Error::PauseTimeout(timeout))?
                .0;
        }
        Ok(())
    }

    /// Ends a pause.
    pub fn resume(&self) {
        self.pause_requested.store(false, Ordering::Release);
        if let Ok(mut p) = self.paused.lock() {
            *p = false;
        }
        self.resumed.notify_all();
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.paused.lock().map(|p| *p).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_panic_turns_power_off_into_a_panic() {
        let c = Control::new(Instant::now()).unwrap();
        c.note_panic("Kernel panic - not syncing: test".into());
        c.request_exit(ExitReason::PowerOff);
        c.request_exit(ExitReason::Stopped);
        let r = c.exit_reason().unwrap();
        assert_eq!(
            r,
            ExitReason::GuestPanic("Kernel panic - not syncing: test".into())
        );
        assert_eq!(r.code(), EXIT_GUEST_PANIC);
        assert_eq!(c.exit_evt().read().unwrap(), 2);
    }

    #[test]
    fn reset_needs_the_poweroff_byte_when_one_is_expected() {
        let c = Control::new(Instant::now()).unwrap();
        c.expect_poweroff_byte();
        c.request_exit(ExitReason::PowerOff);
        assert_eq!(c.exit_reason().unwrap().code(), EXIT_GUEST_PANIC);
        let c = Control::new(Instant::now()).unwrap();
        c.expect_poweroff_byte();
        c.arm_poweroff();
        c.request_exit(ExitReason::PowerOff);
        assert_eq!(c.exit_reason(), Some(ExitReason::PowerOff));
        let c = Control::new(Instant::now()).unwrap();
        c.request_exit(ExitReason::PowerOff);
        assert_eq!(
            c.exit_reason(),
            Some(ExitReason::PowerOff),
            "no boot timer: plain reset"
        );
    }

    #[test]
    fn pause_waits_for_every_vcpu_and_resume_releases_them() {
        let c = Arc::new(Control::new(Instant::now()).unwrap());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    while !c.exiting() {
                        if c.pause_requested() {
                            c.park();
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        c.pause(3, || {}, Duration::from_secs(10)).unwrap();
        assert!(c.is_paused());
        c.resume();
        c.request_exit(ExitReason::Stopped);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.exit_reason().unwrap().code(), EXIT_OK);
    }
}
