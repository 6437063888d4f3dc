//! The boot-timer port (`moat_abi::BOOT_TIMER_PORT`): the guest agent writes
//! `moat_abi::BOOT_READY_MAGIC` once it is ready, and the VMM records the time since its own
//! process started; right before a deliberate power-off it writes `moat_abi::BOOT_POWEROFF_MAGIC`,
//! which tells the VMM that the reset that follows is a clean power-off, not a panic.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::devices::bus::BusDevice;
use crate::metrics::Metrics;
use crate::vstate::control::Control;

/// One port.
pub const BOOT_TIMER_LEN: u64 = 1;

/// Records the first ready write.
pub struct BootTimer {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
}

impl BootTimer {
    /// A timer reporting into `metrics`. With it on the bus, a reset not announced through it is
    /// treated as a guest failure.
    pub fn new(control: Arc<Control>, metrics: Arc<Metrics>) -> Self {
        control.expect_poweroff_byte();
        Self { control, metrics }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 {
            return;
        }
        if data.first() == Some(&moat_abi::BOOT_POWEROFF_MAGIC) {
            self.control.arm_poweroff();
            return;
        }
        if data.first() != Some(&moat_abi::BOOT_READY_MAGIC) {
            return;
        }
        let us = self.control.started().elapsed().as_micros() as u64;
        let first = self
            .metrics
            .boot_ready_us
            .compare_exchange(0, us.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if first {
            tracing::info!(
                "guest ready {:.1} ms after the VMM started",
                us as f64 / 1000.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn records_only_the_magic_and_only_once() {
        let c = Arc::new(Control::new(Instant::now()).unwrap());
        let m = Arc::new(Metrics::default());
        let mut t = BootTimer::new(c, m.clone());
        t.write(0, &[0x11]);
        assert_eq!(m.boot_ready_us.load(Ordering::Relaxed), 0);
        t.write(0, &[moat_abi::BOOT_READY_MAGIC]);
        let first = m.boot_ready_us.load(Ordering::Relaxed);
        assert!(first > 0);
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.write(0, &[moat_abi::BOOT_READY_MAGIC]);
        assert_eq!(m.boot_ready_us.load(Ordering::Relaxed), first);
    }

    #[test]
    fn poweroff_byte_makes_the_reset_clean() {
        use crate::vstate::control::ExitReason;
        let c = Arc::new(Control::new(Instant::now()).unwrap());
        let mut t = BootTimer::new(c.clone(), Arc::new(Metrics::default()));
        t.write(0, &[moat_abi::BOOT_POWEROFF_MAGIC]);
        c.request_exit(ExitReason::PowerOff);
        assert_eq!(c.exit_reason(), Some(ExitReason::PowerOff));
    }
}
