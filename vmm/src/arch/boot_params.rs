//! What the kernel is told at entry: the memory map, command line and initramfs, either as the Linux
//! boot protocol's zero page (`boot_params`, for the 64-bit entry) or as PVH `hvm_start_info`.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout;
use super::regs::BootProtocol;
use crate::memory::RamRange;

/// Errors writing boot parameters.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the {protocol} boot parameters into guest memory: {source}")]
pub struct Error {
    protocol: &'static str,
    source: linux_loader::configurator::Error,
}

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;

/// One entry of the guest's memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type (1 = RAM, 2 = reserved).
    pub kind: u32,
}

/// The memory map: conventional memory below the EBDA, a reserved hole to 1 MiB, then RAM.
pub fn memory_map(ram: &[RamRange]) -> Vec<MapEntry> {
    let mut map = vec![
        MapEntry {
            addr: 0,
            size: layout::SYSTEM_MEM_START,
            kind: E820_RAM,
        },
        MapEntry {
            addr: layout::SYSTEM_MEM_START,
            size: layout::HIMEM_START - layout::SYSTEM_MEM_START,
            kind: E820_RESERVED,
        },
    ];
    for r in ram {
        let start = r.start.max(layout::HIMEM_START);
        let end = r.start + r.size;
        if end > start {
            map.push(MapEntry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// Where the initramfs was put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Initrd {
    /// Guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Everything the boot parameters need.
pub struct BootInfo<'a> {
    /// RAM ranges.
    pub ram: &'a [RamRange],
    /// Length of the command line including its NUL.
    pub cmdline_len: usize,
    /// The initramfs, if any.
    pub initrd: Option<Initrd>,
    /// The bzImage's setup header, when booting one.
    pub setup_header: Option<setup_header>,
}

/// Writes the boot parameters for `protocol`.
pub fn write(
    mem: &GuestMemoryMmap,
    protocol: BootProtocol,
    info: &BootInfo<'_>,
) -> Result<(), Error> {
    match protocol {
        BootProtocol::Pvh => write_pvh(mem, info),
        BootProtocol::Linux64 => write_zero_page(mem, info),
    }
}

fn write_pvh(mem: &GuestMemoryMmap, info: &BootInfo<'_>) -> Result<(), Error> {
    let map: Vec<hvm_memmap_table_entry> = memory_map(info.ram)
        .into_iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = info
        .initrd
        .iter()
        .map(|i| hvm_modlist_entry {
            paddr: i.addr,
            size: i.size,
            ..Default::default()
        })
        .collect();
    let start = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: modules.len() as u32,
        modlist_paddr: layout::PVH_MODLIST_START,
        cmdline_paddr: layout::CMDLINE_START,
        memmap_paddr: layout::PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&start, GuestAddress(layout::PVH_INFO_START));
    params.set_sections(&map, GuestAddress(layout::PVH_MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(layout::PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(|source| Error {
        protocol: "PVH",
        source,
    })
}

fn write_zero_page(mem: &GuestMemoryMmap, info: &BootInfo<'_>) -> Result<(), Error> {
    let mut p = boot_params::default();
    if let Some(hdr) = info.setup_header {
        p.hdr = hdr;
    }
    p.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    p.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    p.hdr.header = KERNEL_HDR_MAGIC;
    p.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    p.hdr.cmdline_size = info.cmdline_len as u32;
    p.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    if let Some(i) = info.initrd {
        p.hdr.ramdisk_image = i.addr as u32;
        p.hdr.ramdisk_size = i.size as u32;
    }
    let map = memory_map(info.ram);
    for (slot, e) in p.e820_table.iter_mut().zip(map.iter()) {
        slot.addr = e.addr;
        slot.size = e.size;
        slot.r#type = e.kind;
    }
    p.e820_entries = map.len().min(p.e820_table.len()) as u8;
    let params = BootParams::new(&p, GuestAddress(layout::ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&params, mem).map_err(|source| Error {
        protocol: "Linux",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn ram(size: u64) -> Vec<RamRange> {
        crate::memory::ram_ranges(size)
    }

    #[test]
    fn map_skips_the_low_hole_and_the_mmio_hole() {
        let m = memory_map(&ram(4 << 30));
        assert_eq!(
            m[0],
            MapEntry {
                addr: 0,
                size: 0x9fc00,
                kind: 1
            }
        );
        assert_eq!(m[1].kind, 2);
        assert_eq!(m[2].addr, layout::HIMEM_START);
        assert_eq!(m[2].addr + m[2].size, layout::MMIO_HOLE_START);
        assert_eq!(m[3].addr, 1 << 32);
        let total: u64 = m.iter().filter(|e| e.kind == 1).map(|e| e.size).sum();
        assert_eq!(
            total,
            (4 << 30) - (layout::HIMEM_START - layout::SYSTEM_MEM_START)
        );
    }

    #[test]
    fn zero_page_has_the_magic_cmdline_and_initrd() {
        let r = ram(64 << 20);
        let mem = crate::memory::create(&r).unwrap();
        let info = BootInfo {
            ram: &r,
            cmdline_len: 10,
            initrd: Some(Initrd {
                addr: 0x300_0000,
                size: 0x1234,
            }),
            setup_header: None,
        };
        write(&mem, BootProtocol::Linux64, &info).unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        let (flag, magic, cmd, rd) = (
            p.hdr.boot_flag,
            p.hdr.header,
            p.hdr.cmd_line_ptr,
            p.hdr.ramdisk_image,
        );
        assert_eq!(
            (flag, magic, cmd, rd),
            (
                0xaa55,
                KERNEL_HDR_MAGIC,
                layout::CMDLINE_START as u32,
                0x300_0000
            )
        );
        assert_eq!(p.e820_entries, 3);
    }

    #[test]
    fn pvh_start_info_points_at_the_map_and_module() {
        let r = ram(64 << 20);
        let mem = crate::memory::create(&r).unwrap();
        let info = BootInfo {
            ram: &r,
            cmdline_len: 10,
            initrd: Some(Initrd {
                addr: 0x300_0000,
                size: 0x1234,
            }),
            setup_header: None,
        };
        write(&mem, BootProtocol::Pvh, &info).unwrap();
        let s: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(
            (s.magic, s.nr_modules, s.memmap_entries),
            (XEN_HVM_START_MAGIC, 1, 3)
        );
        let m: hvm_modlist_entry = mem
            .read_obj(GuestAddress(layout::PVH_MODLIST_START))
            .unwrap();
        assert_eq!((m.paddr, m.size), (0x300_0000, 0x1234));
    }
}
