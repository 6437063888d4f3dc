//! The virtio-vsock device: three queues (rx, tx, event) between the guest driver and the
//! [`Muxer`]. Every tx chain is parsed and checked before the muxer sees it; rx chains are filled
//! only with what the muxer has ready, so nothing waits in the VMM for guest buffers.

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::muxer::Muxer;
use super::packet::{HDR_SIZE, Header, Invalid, check_tx};
use crate::devices::virtio::queue::{Outcome, process};
use crate::devices::virtio::{
    ActivateError, Interrupt, TYPE_VSOCK, VIRTIO_RING_F_EVENT_IDX, VirtioDevice, read_config_bytes,
};
use crate::metrics::Metrics;

const QUEUE_SIZE: u16 = 256;
const RXQ: usize = 0;
const TXQ: usize = 1;

struct Running {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    irq: Arc<Interrupt>,
}

/// The vsock device.
pub struct Vsock {
    cid: u64,
    config: [u8; 8],
    muxer: Muxer,
    metrics: Arc<Metrics>,
    running: Option<Running>,
}

impl Vsock {
    /// A device for guest `cid`, backed by `muxer`.
    pub fn new(cid: u64, muxer: Muxer, metrics: Arc<Metrics>) -> Self {
        Self {
            cid,
            config: cid.to_le_bytes(),
            muxer,
            metrics,
            running: None,
        }
    }

    /// The muxer (tests, socket cleanup).
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    fn process_tx(&mut self) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let (mem, muxer, metrics, cid) = (&r.mem, &mut self.muxer, &self.metrics, self.cid);
        let [_, txq, ..] = r.queues.as_mut_slice() else {
            return;
        };
        process(txq, mem, &r.irq, |chain| {
            if let Err(e) = tx_one(chain, mem, cid, muxer) {
                Metrics::inc(&metrics.vsock.bad_packets);
                tracing::debug!("vsock: dropped a packet from the guest: {e}");
            }
            Outcome::Used(0)
        });
    }

    fn process_rx(&mut self) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        if !self.muxer.has_rx() {
            return;
        }
        let (mem, muxer, metrics) = (&r.mem, &mut self.muxer, &self.metrics);
        process(&mut r.queues[RXQ], mem, &r.irq, |chain| {
            match rx_one(chain, mem, muxer) {
                Ok(Some(n)) => Outcome::Used(n),
                Ok(None) => Outcome::Stop,
                Err(()) => {
                    Metrics::inc(&metrics.vsock.bad_packets);
                    Outcome::Used(0)
                }
            }
        });
    }

    /// Runs the guest-facing side until nothing more can move.
    fn pump(&mut self) {
        self.process_tx();
        self.process_rx();
    }
}

/// Parses and checks one tx chain and hands it to the muxer.
fn tx_one(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    cid: u64,
    muxer: &mut Muxer,
) -> Result<(), Invalid> {
    let mut reader = Reader::new(mem, chain).map_err(|_| Invalid::Short)?;
    let mut hdr = [0u8; HDR_SIZE];
    reader.read_exact(&mut hdr).map_err(|_| Invalid::Short)?;
    let h = Header::from_bytes(&hdr);
    if let Err(e) = check_tx(&h, cid, reader.available_bytes()) {
        // A well-addressed packet of the wrong type or op still deserves an RST (if it is not
        // one), so the guest's socket does not hang.
        if matches!(e, Invalid::Type(_) | Invalid::Op(_)) && h.src_cid == cid {
            muxer.reject(&h);
        }
        return Err(e);
    }
    let mut payload = (&mut reader).take(u64::from(h.len));
    muxer.handle_tx(&h, &mut payload);
    Ok(())
}

/// Fills one rx chain. `Ok(None)`: nothing to send.
fn rx_one(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    muxer: &mut Muxer,
) -> Result<Option<u32>, ()> {
    let mut writer = Writer::new(mem, chain).map_err(|_| ())?;
    let room = writer.available_bytes();
    if room < HDR_SIZE {
        return Err(());
    }
    let mut written = None;
    let mut failed = false;
    let produced = muxer.next_rx(room - HDR_SIZE, &mut |h, payload| {
        let ok = writer.write_all(&h.to_bytes()).is_ok() && writer.write_all(payload).is_ok();
        if ok {
            written = Some((HDR_SIZE + payload.len()) as u32);
        } else {
            failed = true;
        }
    });
    if !produced {
        return Ok(None);
    }
    if failed {
        return Err(());
    }
    Ok(written)
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_RING_F_EVENT_IDX
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        _features: u64,
        queues: Vec<Queue>,
        irq: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        if queues.len() != 3 {
            return Err(ActivateError("virtio-vsock needs three queues".into()));
        }
        self.running = Some(Running { mem, queues, irq });
        self.pump();
        Ok(())
    }

    fn reset(&mut self) {
        self.running = None;
        self.muxer.reset();
    }

    fn process_queue(&mut self, index: usize) {
        match index {
            RXQ | TXQ => self.pump(),
            _ => {} // event queue: the device never sends events
        }
    }

    fn fds(&self) -> Vec<RawFd> {
        vec![self.muxer.epoll_fd()]
    }

    fn process_fd(&mut self, _index: usize) {
        self.muxer.process_events();
        self.pump();
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        self.muxer.next_deadline()
    }

    fn on_deadline(&mut self, now: std::time::Instant) {
        self.muxer.expire(now);
        self.pump();
    }
}

#[cfg(test)]
mod tests;
