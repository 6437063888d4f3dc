//! The virtio-mmio transport (version 2): the register window through which the guest discovers a
//! device, negotiates features, describes its queues and starts it. Every value the guest writes is
//! checked here; a device only ever sees queues that lie inside guest memory.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use crate::devices::bus::BusDevice;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4d4f_4154; // "MOAT"

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_START: u64 = 0x100;
/// Offset of the queue-notify register (where the ioeventfds sit).
pub const QUEUE_NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;

/// What the guest has told us about one queue, before it is handed to the device.
#[derive(Clone, Copy, Debug, Default)]
struct QueueConfig {
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

/// One virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    active: bool,
}

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
#[error("cannot create an eventfd for a virtio device: {0}")]
pub struct Error(std::io::Error);

impl MmioTransport {
    /// Wraps `device`; `irq_evt` raises its interrupt line.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq_evt: EventFd,
    ) -> Result<Self, Error> {
        let n = device.queue_max_sizes().len();
        let queue_evts = (0..n)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(Error))
            .collect::<Result<Vec<_>, _>>()?;
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueConfig {
                size: max,
                ..Default::default()
            })
            .collect();
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irq_evt)),
            queue_evts,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            active: false,
        })
    }

    /// Replaces the backing file of the disk behind this transport and tells the guest (a
    /// configuration-change interrupt, with a new configuration generation). Returns the size.
    pub fn replace_disk(&mut self, file: std::fs::File) -> Result<u64, String> {
        let size = self.device.replace_disk(file)?;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt.signal_config();
        Ok(size)
    }

    /// The eventfds the guest's queue notifications land in (one per queue; datamatch = index).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The device (the event loop's entry point).
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// The device.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// True once the driver started the device.
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn device_features(&self) -> u64 {
        self.device.features() | (1 << VIRTIO_F_VERSION_1)
    }

    fn selected(&mut self) -> Option<&mut QueueConfig> {
        if self.status & STATUS_DRIVER_OK != 0 {
            return None; // queue registers are frozen once the device runs
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt.clear();
        for (q, max) in self.queues.iter_mut().zip(self.device.queue_max_sizes()) {
            *q = QueueConfig {
                size: *max,
                ..Default::default()
            };
        }
    }

    fn build_queues(&self) -> Result<Vec<Queue>, String> {
        let event_idx = self.driver_features & (1 << super::VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut out = Vec::with_capacity(self.queues.len());
        for (i, (c, max)) in self
            .queues
            .iter()
            .zip(self.device.queue_max_sizes())
            .enumerate()
        {
            let mut q = Queue::new(*max).map_err(|e| format!("queue {i}: {e}"))?;
            if c.ready {
                q.try_set_size(c.size)
                    .map_err(|e| format!("queue {i} size {}: {e}", c.size))?;
                q.try_set_desc_table_address(GuestAddress(c.desc))
                    .map_err(|e| format!("queue {i} descriptor table {:#x}: {e}", c.desc))?;
                q.try_set_avail_ring_address(GuestAddress(c.avail))
                    .map_err(|e| format!("queue {i} available ring {:#x}: {e}", c.avail))?;
                q.try_set_used_ring_address(GuestAddress(c.used))
                    .map_err(|e| format!("queue {i} used ring {:#x}: {e}", c.used))?;
                q.set_event_idx(event_idx);
                q.set_ready(true);
                if !q.is_valid(&self.mem) {
                    return Err(format!("queue {i} lies outside guest memory"));
                }
            }
            out.push(q);
        }
        Ok(out)
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // Bits are only ever added, in order; anything else is a confused driver.
        if v & self.status != self.status {
            return;
        }
        let mut v = v;
        let added = v & !self.status;
        if added & STATUS_FEATURES_OK != 0 {
            let unsupported = self.driver_features & !self.device_features();
            let v1 = self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0;
            if unsupported != 0 || !v1 {
                v &= !STATUS_FEATURES_OK;
            }
        }
        if added & STATUS_DRIVER_OK != 0 && !self.active {
            let ready = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
            if v & ready != ready {
                return;
            }
            let result = self.build_queues().and_then(|queues| {
                self.device
                    .activate(
                        self.mem.clone(),
                        self.driver_features,
                        queues,
                        self.interrupt.clone(),
                    )
                    .map_err(|e| e.to_string())
            });
            match result {
                Ok(()) => self.active = true,
                Err(e) => {
                    tracing::warn!("virtio device type {}: {e}", self.device.device_type());
                    v = (v & !STATUS_DRIVER_OK) | STATUS_NEEDS_RESET;
                }
            }
        }
        self.status = v;
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let q = self.queues.get(self.queue_sel as usize);
        match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self
                .device
                .queue_max_sizes()
                .get(self.queue_sel as usize)
                .map_or(0, |m| u32::from(*m)),
            REG_QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            // Features are frozen once the driver said FEATURES_OK.
            REG_DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => set_low(&mut self.driver_features, v),
                    1 => set_high(&mut self.driver_features, v),
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected() {
                    q.size = v.min(u32::from(u16::MAX)) as u16;
                }
            }
            REG_QUEUE_READY => {
                if let Some(q) = self.selected() {
                    q.ready = v == 1;
                }
            }
            REG_QUEUE_NOTIFY => {
                // Normally caught by the ioeventfd; without one, forward the kick ourselves.
                if let Some(e) = self.queue_evts.get(v as usize) {
                    let _ = e.write(1);
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.set_status(v),
            REG_QUEUE_DESC_LOW => self
                .selected()
                .into_iter()
                .for_each(|q| set_low(&mut q.desc, v)),
            REG_QUEUE_DESC_HIGH => self
                .selected()
                .into_iter()
                .for_each(|q| set_high(&mut q.desc, v)),
            REG_QUEUE_DRIVER_LOW => self
                .selected()
                .into_iter()
                .for_each(|q| set_low(&mut q.avail, v)),
            REG_QUEUE_DRIVER_HIGH => self
                .selected()
                .into_iter()
                .for_each(|q| set_high(&mut q.avail, v)),
            REG_QUEUE_DEVICE_LOW => self
                .selected()
                .into_iter()
                .for_each(|q| set_low(&mut q.used, v)),
            REG_QUEUE_DEVICE_HIGH => self
                .selected()
                .into_iter()
                .for_each(|q| set_high(&mut q.used, v)),
            _ => {}
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_START {
            self.device.read_config(offset - CONFIG_START, data);
            return;
        }
        // Registers are 32 bits wide and aligned.
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_START {
            self.device.write_config(offset - CONFIG_START, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset.is_multiple_of(4) {
            self.write_reg(offset, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests;
