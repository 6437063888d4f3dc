//! The keyboard controller at ports 0x60-0x64, only for its CPU-reset command (0xfe to port 0x64):
//! with `reboot=k` it is how a Linux guest without ACPI powers the machine off, so it ends the VM.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use crate::devices::bus::BusDevice;
use crate::vstate::control::{Control, ExitReason};

/// First port.
pub const I8042_BASE: u64 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_LEN: u64 = 5;

/// Ends the VM when the guest resets the CPU.
pub struct ResetTrigger(pub Arc<Control>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_exit(ExitReason::PowerOff);
        Ok(())
    }
}

/// The controller on the I/O bus.
pub struct I8042(I8042Device<ResetTrigger>);

impl I8042 {
    /// A controller that ends the VM through `control`.
    pub fn new(control: Arc<Control>) -> Self {
        Self(I8042Device::new(ResetTrigger(control)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Status and data read 0: no input, never busy (the guest's reset path polls this).
        let v = self.0.read(offset as u8);
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 {
            let _ = self.0.write(offset as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn reset_command_ends_the_vm_cleanly() {
        let c = Arc::new(Control::new(Instant::now()).unwrap());
        let mut k = I8042::new(c.clone());
        k.write(4, &[0x01]);
        assert!(!c.exiting());
        k.write(0, &[0xfe]);
        assert!(!c.exiting(), "0xfe to the data port is not a reset");
        k.write(4, &[0xfe]);
        assert_eq!(c.exit_reason(), Some(ExitReason::PowerOff));
    }
}
