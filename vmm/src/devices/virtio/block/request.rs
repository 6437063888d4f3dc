//! One virtio-blk request: the header the guest wrote, checked against the disk, then carried out
//! against the image file. Nothing the guest wrote is trusted: lengths, sectors and the chain's
//! layout are all checked, and a bad request gets an error status, never a panic.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap};

use crate::metrics::Metrics;

/// Sector size.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

/// Status: success.
pub const S_OK: u8 = 0;
/// Status: I/O error (also: out of range, read-only).
pub const S_IOERR: u8 = 1;
/// Status: unsupported request type.
pub const S_UNSUPP: u8 = 2;

/// Copy granularity between guest memory and the file.
const CHUNK: usize = 64 << 10;

/// The request header (`struct virtio_blk_outhdr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Header {
    kind: u32,
    _reserved: u32,
    sector: u64,
}

// SAFETY: plain old data: two u32 and a u64, no padding, any bit pattern is valid.
unsafe impl ByteValued for Header {}

/// The disk a device serves.
pub struct Disk {
    /// The image.
    pub file: File,
    /// Its size in bytes (a whole number of sectors).
    pub size: u64,
    /// Writes refused.
    pub read_only: bool,
    /// GET_ID answer, NUL padded.
    pub id: [u8; ID_LEN],
}

fn in_range(disk: &Disk, sector: u64, len: u64) -> bool {
    len.is_multiple_of(SECTOR_SIZE)
        && sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|o| o.checked_add(len))
            .is_some_and(|end| end <= disk.size)
}

fn read_into(disk: &Disk, w: &mut Writer<'_>, offset: u64, len: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(CHUNK);
        disk.file
            .read_exact_at(&mut buf[..n], offset + done as u64)?;
        w.write_all(&buf[..n])?;
        done += n;
    }
    Ok(())
}

fn write_from(disk: &Disk, r: &mut Reader<'_>, offset: u64, len: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(CHUNK);
        r.read_exact(&mut buf[..n])?;
        disk.file.write_all_at(&buf[..n], offset + done as u64)?;
        done += n;
    }
    Ok(())
}

/// Carries out the request in `chain`. Returns the number of bytes written into the chain
/// (data + status), or `None` when the chain has no room even for a status byte.
pub fn execute(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    disk: &Disk,
    metrics: &crate::metrics::Block,
) -> Option<u32> {
    let mut reader = Reader::new(mem, chain.clone()).ok()?;
    let mut writer = Writer::new(mem, chain).ok()?;
    let writable = writer.available_bytes();
    if writable == 0 {
        Metrics::inc(&metrics.errors);
        return None;
    }
    // The status byte is the last writable byte; everything before it is data.
    let mut status_w = writer.split_at(writable - 1).ok()?;
    let data_room = writable - 1;
    let (status, data_written) = match reader.read_obj::<Header>() {
        Err(_) => (S_IOERR, 0),
        Ok(h) => match h.kind {
            T_IN => {
                Metrics::inc(&metrics.reads);
                if !in_range(disk, h.sector, data_room as u64) {
                    (S_IOERR, 0)
                } else {
                    match read_into(disk, &mut writer, h.sector * SECTOR_SIZE, data_room) {
                        Ok(()) => {
                            Metrics::add(&metrics.read_bytes, data_room as u64);
                            (S_OK, data_room)
                        }
                        Err(_) => (S_IOERR, 0),
                    }
                }
            }
            T_OUT => {
                Metrics::inc(&metrics.writes);
                let len = reader.available_bytes();
                if disk.read_only || !in_range(disk, h.sector, len as u64) {
                    (S_IOERR, 0)
                } else {
                    match write_from(disk, &mut reader, h.sector * SECTOR_SIZE, len) {
                        Ok(()) => {
                            Metrics::add(&metrics.write_bytes, len as u64);
                            (S_OK, 0)
                        }
                        Err(_) => (S_IOERR, 0),
                    }
                }
            }
            T_FLUSH => {
                Metrics::inc(&metrics.flushes);
                if disk.read_only || disk.file.sync_data().is_ok() {
                    (S_OK, 0)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_GET_ID => {
                Metrics::inc(&metrics.get_id);
                let n = data_room.min(ID_LEN);
                match writer.write_all(&disk.id[..n]) {
                    Ok(()) => (S_OK, n),
                    Err(_) => (S_IOERR, 0),
                }
            }
            _ => (S_UNSUPP, 0),
        },
    };
    if status != S_OK {
        Metrics::inc(&metrics.errors);
    }
    status_w.write_all(&[status]).ok()?;
    Some((data_written + 1) as u32)
}
