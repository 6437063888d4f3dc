//! The model-specific registers a vCPU starts with: the syscall/sysenter MSRs cleared, the TSC at
//! zero, fast strings on, and write-back as the default memory type (MTRRs enabled).

use kvm_bindings::{Msrs, kvm_msr_entry};
use kvm_ioctls::VcpuFd;

/// Errors setting MSRs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `KVM_SET_MSRS` failed outright.
    #[error("KVM_SET_MSRS failed: {0}")]
    Set(kvm_ioctls::Error),
    /// KVM accepted only some of the MSRs.
    #[error("KVM accepted only {set} of {wanted} boot MSRs (first refused: {first:#x})")]
    Partial {
        /// How many were set.
        set: usize,
        /// How many were asked for.
        wanted: usize,
        /// The first MSR index KVM refused.
        first: u32,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// The boot MSR values, in the order they are written.
pub fn boot_entries() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        // Bit 11: MTRRs enabled; type 6: write-back for everything not covered by a range.
        e(MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
    ]
}

/// Writes the boot MSRs; every one must be accepted.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<()> {
    let entries = boot_entries();
    let msrs = Msrs::from_entries(&entries).map_err(|_| Error::Partial {
        set: 0,
        wanted: entries.len(),
        first: entries[0].index,
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(Error::Set)?;
    if set != entries.len() {
        return Err(Error::Partial {
            set,
            wanted: entries.len(),
            first: entries.get(set).map_or(0, |e| e.index),
        });
    }
    Ok(())
}
