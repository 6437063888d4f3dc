//! Virtio devices over MMIO: the device trait every virtio device implements, the interrupt it
//! raises (an eventfd KVM injects as an irqfd), the MMIO transport, and the devices themselves.

pub mod block;
pub mod mmio;
pub mod queue;
#[cfg(test)]
pub mod testing;
pub mod vsock;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Feature bit: the device follows virtio 1.x (required for MMIO version 2).
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Feature bit: used/avail event indexes suppress notifications and interrupts.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

/// Device type: block.
pub const TYPE_BLOCK: u32 = 2;
/// Device type: vsock.
pub const TYPE_VSOCK: u32 = 19;

/// Interrupt status bit: a used buffer was added.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt: the status bits the guest reads and acknowledges over MMIO, and the
/// eventfd that raises its IRQ line.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    evt: EventFd,
}

impl Interrupt {
    /// An interrupt raised through `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            evt,
        }
    }

    /// The eventfd (registered as an irqfd).
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// Tells the guest that used buffers are ready.
    pub fn signal_used(&self) {
        self.status.fetch_or(INT_VRING, Ordering::AcqRel);
        // Only fails if the counter would overflow, which means the guest ignores interrupts.
        let _ = self.evt.write(1);
    }

    /// Tells the guest that the device's configuration changed (e.g. a disk's capacity).
    pub fn signal_config(&self) {
        self.status.fetch_or(INT_CONFIG, Ordering::AcqRel);
        let _ = self.evt.write(1);
    }

    /// The pending status bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// Clears the bits the guest acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Clears everything (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::Release);
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot activate the virtio device: {0}")]
pub struct ActivateError(pub String);

/// A virtio device behind the MMIO transport.
///
/// The vCPU threads reach it only through the transport's register accesses; the event loop calls
/// `process_queue` when the guest notifies a queue and `process_fd` when one of its own file
/// descriptors is ready.
pub trait VirtioDevice: Send {
    /// Virtio device type.
    fn device_type(&self) -> u32;
    /// Maximum size of each queue (their number is the slice's length).
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers.
    fn features(&self) -> u64;
    /// Reads the device configuration space. Out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space (ignored by default: our devices' configs are read-only).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts the device with the guest's negotiated features and validated queues.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: std::sync::Arc<Interrupt>,
    ) -> Result<(), ActivateError>;
    /// Stops the device and drops its queues (the guest wrote 0 to the status register).
    fn reset(&mut self);
    /// The guest notified queue `index`.
    fn process_queue(&mut self, index: usize);
    /// File descriptors of the device's own the event loop should watch (level-triggered, readable).
    fn fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// The `index`-th of `fds()` is ready.
    fn process_fd(&mut self, _index: usize) {}
    /// Replaces a disk's backing file (block devices only); returns the new size in bytes. The
    /// transport then tells the guest its configuration changed.
    fn replace_disk(&mut self, _file: std::fs::File) -> Result<u64, String> {
        Err("this virtio device is not a disk".into())
    }
    /// The earliest moment the device wants `on_deadline` called.
    fn next_deadline(&self) -> Option<std::time::Instant> {
        None
    }
    /// A deadline passed.
    fn on_deadline(&mut self, _now: std::time::Instant) {}
}

/// Copies `data.len()` bytes of `config` from `offset`, zero past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let mut d = [9u8; 4];
        read_config_bytes(&[1, 2, 3], 1, &mut d);
        assert_eq!(d, [2, 3, 0, 0]);
        read_config_bytes(&[1, 2, 3], u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn interrupt_status_bits() {
        let i = Interrupt::new(EventFd::new(0).unwrap());
        i.signal_used();
        assert_eq!(i.status(), INT_VRING);
        assert_eq!(i.eventfd().read().unwrap(), 1);
        i.ack(INT_VRING);
        assert_eq!(i.status(), 0);
    }
}
