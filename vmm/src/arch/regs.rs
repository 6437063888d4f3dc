//! The boot CPU state: general and segment registers, the boot GDT/IDT and identity page tables in
//! guest memory, and the FPU control words, for the two entry points the VMM supports.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{Descriptor, GDT_64BIT, GDT_PVH};
use super::layout;

/// Errors while setting up boot registers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A KVM register ioctl failed.
    #[error("KVM refused the vCPU's boot {what} registers: {source}")]
    Kvm {
        /// Which register set.
        what: &'static str,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory is too small for the boot structures.
    #[error("cannot write the boot {0} into guest memory (guest memory too small?)")]
    Memory(&'static str),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// How the vCPU enters the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// Xen PVH: 32-bit protected mode, paging off, `%ebx` = start info.
    Pvh,
    /// 64-bit entry: long mode with identity-mapped first GiB; `%rsi` = zero page (Linux boot
    /// protocol) — also used for raw payloads and plain 64-bit ELF files.
    Linux64,
}

/// Where and how the guest starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    /// First instruction.
    pub addr: GuestAddress,
    /// Entry protocol.
    pub protocol: BootProtocol,
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Sets the general registers for `entry`.
pub fn setup_regs(vcpu: &VcpuFd, entry: EntryPoint) -> Result<()> {
    let regs = match entry.protocol {
        BootProtocol::Pvh => kvm_regs {
            rflags: 0x2,
            rip: entry.addr.0,
            rbx: layout::PVH_INFO_START,
            ..Default::default()
        },
        BootProtocol::Linux64 => kvm_regs {
            rflags: 0x2,
            rip: entry.addr.0,
            rsp: layout::BOOT_STACK_POINTER,
            rbp: layout::BOOT_STACK_POINTER,
            rsi: layout::ZERO_PAGE_START,
            ..Default::default()
        },
    };
    vcpu.set_regs(&regs).map_err(|source| Error::Kvm {
        what: "general",
        source,
    })
}

/// Sets the x87/SSE control words to their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<()> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| Error::Kvm {
        what: "FPU",
        source,
    })
}

/// Writes the boot GDT, IDT and (for 64-bit entry) page tables into guest memory. Done once per VM.
pub fn write_boot_tables(mem: &GuestMemoryMmap, protocol: BootProtocol) -> Result<()> {
    let gdt = gdt_for(protocol);
    for (i, d) in gdt.iter().enumerate() {
        mem.write_obj(
            d.encode(),
            GuestAddress(layout::BOOT_GDT_START + 8 * i as u64),
        )
        .map_err(|_| Error::Memory("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))
        .map_err(|_| Error::Memory("IDT"))?;
    if protocol == BootProtocol::Linux64 {
        // PML4[0] -> PDPT, PDPT[g] -> PD g, PD g[i] = 2 MiB page: identity map of the first 4 GiB
        // (so early code reaches the devices below 4 GiB too).
        let err = |_| Error::Memory("page tables");
        mem.write_obj(layout::PDPTE_START | 0x3, GuestAddress(layout::PML4_START))
            .map_err(err)?;
        let mut pdpt = Vec::new();
        let mut pds = Vec::new();
        for g in 0..layout::PDE_COUNT {
            pdpt.extend_from_slice(&((layout::PDE_START + g * 0x1000) | 0x3).to_le_bytes());
            for i in 0..512u64 {
                pds.extend_from_slice(&(((g << 30) | (i << 21)) | 0x83).to_le_bytes());
            }
        }
        mem.write_slice(&pdpt, GuestAddress(layout::PDPTE_START))
            .map_err(err)?;
        mem.write_slice(&pds, GuestAddress(layout::PDE_START))
            .map_err(err)?;
    }
    Ok(())
}

fn gdt_for(protocol: BootProtocol) -> &'static [Descriptor; 4] {
    match protocol {
        BootProtocol::Pvh => &GDT_PVH,
        BootProtocol::Linux64 => &GDT_64BIT,
    }
}

/// Fills `sregs` for `protocol` (segments from the boot GDT, control registers, paging).
pub fn boot_sregs(sregs: &mut kvm_sregs, protocol: BootProtocol) {
    let gdt = gdt_for(protocol);
    let code = gdt[1].to_kvm_segment(1);
    let data = gdt[2].to_kvm_segment(2);
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt[3].to_kvm_segment(3);
    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
        }
        BootProtocol::Linux64 => {
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
}

/// Reads, fills and writes back the special registers for `protocol`.
pub fn setup_sregs(vcpu: &VcpuFd, protocol: BootProtocol) -> Result<()> {
    let mut sregs = vcpu.get_sregs().map_err(|source| Error::Kvm {
        what: "special",
        source,
    })?;
    boot_sregs(&mut sregs, protocol);
    vcpu.set_sregs(&sregs).map_err(|source| Error::Kvm {
        what: "special",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    #[test]
    fn long_mode_tables_identity_map_the_first_4_gib() {
        let m = mem();
        write_boot_tables(&m, BootProtocol::Linux64).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4, layout::PDPTE_START | 3);
        let pd5: u64 = m.read_obj(GuestAddress(layout::PDE_START + 5 * 8)).unwrap();
        assert_eq!(pd5, (5 << 21) | 0x83);
        // 0xd000_0000 (the first virtio device) = GiB 3, entry 128.
        let pdpt3: u64 = m
            .read_obj(GuestAddress(layout::PDPTE_START + 3 * 8))
            .unwrap();
        assert_eq!(pdpt3, (layout::PDE_START + 0x3000) | 3);
        let e: u64 = m
            .read_obj(GuestAddress(layout::PDE_START + 0x3000 + 128 * 8))
            .unwrap();
        assert_eq!(e, 0xd000_0000 | 0x83);
        let mut s = kvm_sregs::default();
        boot_sregs(&mut s, BootProtocol::Linux64);
        assert_eq!(s.cr3, layout::PML4_START);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_eq!(s.cs.l, 1);
    }

    #[test]
    fn pvh_starts_in_flat_protected_mode_without_paging() {
        let m = mem();
        write_boot_tables(&m, BootProtocol::Pvh).unwrap();
        let mut s = kvm_sregs::default();
        boot_sregs(&mut s, BootProtocol::Pvh);
        assert_eq!(s.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.cs.db, 1);
        assert_eq!(s.cs.limit, 0xffff_ffff);
    }

    #[test]
    fn too_small_memory_is_an_error_not_a_panic() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(write_boot_tables(&m, BootProtocol::Linux64).is_err());
    }
}
