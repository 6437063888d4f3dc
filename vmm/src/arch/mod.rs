//! x86_64 machine setup: address layout, boot tables and registers, CPUID, MSRs, LAPIC, MP table
//! and the kernel's boot parameters. moat-vmm supports x86_64 only.

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
