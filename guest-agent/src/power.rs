//! Ending the VM: stop every process, flush, tell the VMM this is on purpose, reset.
//!
//! The guest has no ACPI, so there is no "power off" a VMM could see; the agent resets the machine
//! instead with `reboot(LINUX_REBOOT_CMD_RESTART)`, and the kernel command line's `reboot=k` makes the
//! kernel pulse the i8042 reset line (port 0x64 <- 0xfe). moat-vmm's i8042 ends the VM on it; QEMU
//! `-M microvm` has no i8042 of its own, so the reference boots add `-device i8042` and `-no-reboot`
//! (without the device the kernel falls back to a triple fault after ~1.5 s of retries, which
//! `-no-reboot` also turns into an exit).
//!
//! Right before the reset the agent writes `moat_abi::BOOT_POWEROFF_MAGIC` to the boot-timer port, so a
//! VMM can tell this clean power-off (exit 0) from a kernel panic, which resets the same way
//! (`panic=-1`) without that byte.

use std::time::Duration;

use moat_abi::{BOOT_POWEROFF_MAGIC, BOOT_TIMER_PORT};

use crate::sys::{Sys, WaitStatus};

/// How long processes get between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);

/// How often the grace loop looks for exited processes.
const POLL: Duration = Duration::from_millis(10);

/// Why the VM is going down, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A signal asked for it (SIGTERM, SIGINT from ctrl-alt-del, SIGPWR).
    Signal(i32),
    /// A self-test finished.
    SelfTestDone,
    /// The host asked for it (the RPC server's shutdown request).
    Requested,
}

/// Reaps every exited child, handing each to `on_exit`; returns `false` once no children remain.
pub fn reap_all(sys: &mut impl Sys, on_exit: &mut dyn FnMut(i32, WaitStatus)) -> bool {
    loop {
        match sys.reap_one() {
            Ok(Some((pid, status))) => on_exit(pid, status),
            Ok(None) => return true,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return false,
            Err(e) => {
                tracing::error!("waitpid: {e}");
                return true;
            }
        }
    }
}

/// Stops every process (SIGTERM, up to [`GRACE`], then SIGKILL), syncs, and resets the VM.
///
/// Returns only if the kernel refuses the reset, with its reason.
pub fn power_off(sys: &mut impl Sys, reason: Reason) -> std::io::Error {
    tracing::info!("powering off ({reason:?})");
    let mut on_exit = |pid, status| tracing::debug!("process {pid} ended at power-off: {status:?}");
    if let Err(e) = sys.kill_all(libc::SIGTERM) {
        // ESRCH: there is nobody else.
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!("kill(-1, SIGTERM): {e}");
        }
    }
    let mut waited = Duration::ZERO;
    while reap_all(sys, &mut on_exit) {
        if waited >= GRACE {
            tracing::warn!("processes still running after {GRACE:?}; killing them");
            let _ = sys.kill_all(libc::SIGKILL);
            sys.sleep(POLL);
            reap_all(sys, &mut on_exit);
            break;
        }
        sys.sleep(POLL);
        waited += POLL;
    }
    sys.sync();
    if let Err(e) = sys.outb(BOOT_TIMER_PORT, BOOT_POWEROFF_MAGIC) {
        tracing::warn!("cannot write the power-off byte to port {BOOT_TIMER_PORT:#x}: {e}");
    }
    sys.restart()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::Fake;

    #[test]
    fn quiet_guest_powers_off_at_once() {
        let mut f = Fake::pid1("");
        let e = power_off(&mut f, Reason::SelfTestDone);
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            f.calls,
            [
                format!("kill_all {}", libc::SIGTERM),
                "sync".to_string(),
                format!("outb {BOOT_TIMER_PORT:#x} {BOOT_POWEROFF_MAGIC:#x}"),
                "restart".to_string(),
            ]
        );
    }

    #[test]
    fn waits_then_kills_stragglers() {
        let mut f = Fake::pid1("");
        // One exits at once, then someone stays alive for longer than the grace period.
        f.children.push_back(Some((10, WaitStatus::Exited(0))));
        let polls = (GRACE.as_millis() / POLL.as_millis()) as usize + 1;
        for _ in 0..polls {
            f.children.push_back(None);
        }
        f.children
            .push_back(Some((11, WaitStatus::Signaled(libc::SIGKILL))));
        power_off(&mut f, Reason::Signal(libc::SIGTERM));
        let kill = f.index(&format!("kill_all {}", libc::SIGKILL));
        assert!(kill < f.index("sync"));
        assert!(f.index("sync") < f.index("restart"));
        assert_eq!(
            f.calls.iter().filter(|c| c.starts_with("sleep")).count(),
            polls
        );
    }

    #[test]
    fn reap_all_reports_each_child() {
        let mut f = Fake::pid1("");
        f.children.extend([
            Some((5, WaitStatus::Exited(3))),
            Some((6, WaitStatus::Signaled(9))),
        ]);
        let mut seen = Vec::new();
        assert!(!reap_all(&mut f, &mut |p, s| seen.push((p, s))));
        assert_eq!(
            seen,
            [(5, WaitStatus::Exited(3)), (6, WaitStatus::Signaled(9))]
        );
    }
}
