//! Guest RAM: anonymous, lazily backed host memory (`GuestMemoryMmap`), split around the device hole
//! below 4 GiB. Pages the guest never touches cost the host nothing.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::layout;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host refused the mapping.
    #[error("cannot map {size} MiB of guest memory: {reason}")]
    Map {
        /// Requested size in MiB.
        size: u64,
        /// Why.
        reason: String,
    },
}

/// One contiguous range of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// Guest physical start.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

/// The RAM ranges for `size` bytes of guest memory.
pub fn ram_ranges(size: u64) -> Vec<RamRange> {
    if size <= layout::MMIO_HOLE_START {
        vec![RamRange { start: 0, size }]
    } else {
        vec![
            RamRange {
                start: 0,
                size: layout::MMIO_HOLE_START,
            },
            RamRange {
                start: layout::FIRST_ADDR_PAST_32BITS,
                size: size - layout::MMIO_HOLE_START,
            },
        ]
    }
}

/// Maps the ranges.
pub fn create(ranges: &[RamRange]) -> Result<GuestMemoryMmap, Error> {
    let r: Vec<(GuestAddress, usize)> = ranges
        .iter()
        .map(|r| (GuestAddress(r.start), r.size as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&r).map_err(|e| Error::Map {
        size: ranges.iter().map(|r| r.size).sum::<u64>() >> 20,
        reason: e.to_string(),
    })
}

/// The end of the RAM range that starts at 0 (where the initramfs goes, at its top).
pub fn low_ram_end(ranges: &[RamRange]) -> u64 {
    ranges.first().map_or(0, |r| r.start + r.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(
            ram_ranges(128 << 20),
            vec![RamRange {
                start: 0,
                size: 128 << 20
            }]
        );
    }

    #[test]
    fn large_memory_skips_the_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].size, layout::MMIO_HOLE_START);
        assert_eq!(r[1].start, 1 << 32);
        assert_eq!(r[0].size + r[1].size, 4 << 30);
        assert_eq!(low_ram_end(&r), layout::MMIO_HOLE_START);
    }

    #[test]
    fn creates_lazily_backed_memory() {
        let m = create(&ram_ranges(64 << 20)).unwrap();
        use vm_memory::GuestMemoryBackend;
        assert_eq!(m.num_regions(), 1);
    }
}
