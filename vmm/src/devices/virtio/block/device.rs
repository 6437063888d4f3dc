//! The virtio-blk device: a raw image file, read-only or read-write, with flush and GET_ID. One
//! request queue, served synchronously from the event loop.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::request::{self, Disk, ID_LEN, SECTOR_SIZE};
use crate::devices::virtio::queue::{Outcome, process};
use crate::devices::virtio::{
    ActivateError, Interrupt, TYPE_BLOCK, VIRTIO_RING_F_EVENT_IDX, VirtioDevice, read_config_bytes,
};
use crate::metrics::Metrics;

const QUEUE_SIZE: u16 = 256;
const F_RO: u32 = 5;
const F_FLUSH: u32 = 9;

/// Errors opening an image.
#[derive(Debug, thiserror::Error)]
#[error("cannot open block image {path}: {source}")]
pub struct Error {
    path: String,
    source: std::io::Error,
}

struct Running {
    mem: GuestMemoryMmap,
    queue: Queue,
    irq: Arc<Interrupt>,
}

/// A block device.
pub struct Block {
    disk: Disk,
    config: [u8; 8],
    metrics: Arc<Metrics>,
    running: Option<Running>,
}

impl Block {
    /// Opens `path` (read-write unless `read_only`); `id` is the GET_ID serial.
    pub fn open(
        path: &Path,
        read_only: bool,
        id: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let err = |source| Error {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(err)?;
        Self::from_file(file, read_only, id, metrics).map_err(err)
    }

    /// Serves an already open image.
    pub fn from_file(
        file: File,
        read_only: bool,
        id: &str,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let size = len - len % SECTOR_SIZE;
        let mut ident = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        ident[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Self {
            disk: Disk {
                file,
                size,
                read_only,
                id: ident,
            },
            config: (size / SECTOR_SIZE).to_le_bytes(),
            metrics,
            running: None,
        })
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let ro = if self.disk.read_only { 1 << F_RO } else { 0 };
        ro | (1 << F_FLUSH) | (1 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn replace_disk(&mut self, file: File) -> Result<u64, String> {
        // fstat, not File::metadata (statx): the API thread's filter allows only fstat.
        // SAFETY: an all-zero stat is a valid buffer for fstat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor we own, into a live buffer.
        if unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&file), &mut st) } < 0 {
            return Err(format!(
                "cannot stat the new image: {}",
                std::io::Error::last_os_error()
            ));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG && st.st_mode & libc::S_IFMT != libc::S_IFBLK
        {
            return Err("the new image is neither a regular file nor a block device".into());
        }
        let len = u64::try_from(st.st_size).unwrap_or(0);
        let size = len - len % SECTOR_SIZE;
        self.disk.file = file;
        self.disk.size = size;
        self.config = (size / SECTOR_SIZE).to_le_bytes();
        Ok(size)
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        _features: u64,
        queues: Vec<Queue>,
        irq: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        let queue = queues
            .into_iter()
            .next()
            .ok_or_else(|| ActivateError("virtio-blk needs its request queue".into()))?;
        self.running = Some(Running { mem, queue, irq });
        Ok(())
    }

    fn reset(&mut self) {
        self.running = None;
    }

    fn process_queue(&mut self, _index: usize) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let (disk, metrics) = (&self.disk, &self.metrics);
        let mem = &r.mem;
        process(&mut r.queue, mem, &r.irq, |chain| {
            match request::execute(chain, mem, disk, &metrics.block) {
                Some(n) => Outcome::Used(n),
                // No room for a status byte: return the chain with nothing written.
                None => Outcome::Used(0),
            }
        });
    }
}

#[cfg(test)]
mod tests;
