//! Where things live in the guest's physical address space (x86_64).
//!
//! Low memory holds the boot structures the VMM writes before the first instruction runs; the kernel
//! goes at 1 MiB; the initramfs at the top of low RAM; devices sit in a hole below 4 GiB, and RAM
//! that does not fit below the hole continues above 4 GiB.

/// The boot GDT (four 8-byte entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// The boot IDT (one null entry: any exception before the kernel sets its own IDT triple-faults).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux boot protocol zero page (`boot_params`); PVH uses the same page for its memory map.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit Linux entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables for the first 4 GiB (RAM and the device hole): PML4, PDPT, 4 PDs of
/// 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// The four page directories (0xb000..0xf000).
pub const PDE_START: u64 = 0xb000;
/// Number of page directories (GiB identity-mapped).
pub const PDE_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line the VMM writes (including the NUL): x86's `COMMAND_LINE_SIZE`. The kernel
/// cuts a longer one short without a word, dropping the `virtio_mmio.device=` entries at its end.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// The MP table: the last KiB of the 640 KiB of conventional memory.
pub const MPTABLE_START: u64 = 0x9fc00;
/// Start of the reserved area below 1 MiB (EBDA, VGA hole, BIOS).
pub const SYSTEM_MEM_START: u64 = 0x9fc00;
/// End of the reserved area below 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the device hole below 4 GiB. RAM above this continues at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xd000_0000;
/// First address past 32 bits.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Virtio-mmio devices: one 4 KiB window each, from the start of the hole.
pub const VIRTIO_MMIO_START: u64 = MMIO_HOLE_START;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The IOAPIC's MMIO window.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APIC's MMIO window.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// Where KVM puts the 3-page TSS region it needs on Intel.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// The serial port's IRQ (COM1).
pub const SERIAL_IRQ: u32 = 4;
/// First IRQ (GSI) for virtio devices; legacy ISA IRQs 0-4 are taken.
pub const VIRTIO_IRQ_START: u32 = 5;
/// Last IRQ the in-kernel IOAPIC routes (24 pins).
pub const IRQ_MAX: u32 = 23;

/// Smallest guest memory the VMM accepts: boot structures, a kernel and an initramfs need more,
/// but anything below this cannot even hold the boot structures.
pub const MIN_MEMORY: u64 = 2 << 20;
