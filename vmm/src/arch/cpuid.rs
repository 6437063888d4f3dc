//! The guest's CPUID: what KVM supports on this host (`KVM_GET_SUPPORTED_CPUID`), with the topology
//! leaves rewritten for this VM's vCPU count and each vCPU's APIC ID, the hypervisor bit set, and
//! any overrides the configuration asks for.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2};
use kvm_ioctls::Kvm;

use crate::config::CpuidOverride;

/// Errors building the CPUID.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    Supported(kvm_ioctls::Error),
    /// An override names a leaf that is not in the table and cannot be added.
    #[error("cannot add CPUID leaf {0:#x}: the table is full")]
    Full(u32),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Leaf 1 ECX bit 31: "running under a hypervisor".
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 6 ECX bit 3: performance-energy bias hint (an MSR KVM does not provide).
const LEAF6_ECX_EPB: u32 = 1 << 3;

/// Reads the host's supported CPUID once.
pub fn supported(kvm: &Kvm) -> Result<CpuId> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::Supported)
}

/// The number of bits needed to number `n` items (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Rewrites one entry for vCPU `id` of `count`.
fn normalize(e: &mut kvm_cpuid_entry2, id: u32, count: u32) {
    let count_u8 = count.min(255);
    match e.function {
        0x1 => {
            // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package,
            // EBX[15:8] CLFLUSH line size in qwords (keep the host's).
            e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | (count_u8 << 16);
            e.ecx |= LEAF1_ECX_HYPERVISOR;
            if count > 1 {
                e.edx |= LEAF1_EDX_HTT;
            } else {
                e.edx &= !LEAF1_EDX_HTT;
            }
        }
        0x4 => {
            // Deterministic cache parameters: EAX[31:26] = cores per package - 1. One core per
            // vCPU, no SMT.
            e.eax = (e.eax & 0x03ff_ffff) | ((count.saturating_sub(1).min(63)) << 26);
            // EAX[25:14]: logical processors sharing this cache - 1 (all of them for L3).
            let level = (e.eax >> 5) & 0x7;
            let sharing = if level >= 3 {
                count.saturating_sub(1)
            } else {
                0
            };
            e.eax = (e.eax & !(0xfff << 14)) | ((sharing.min(0xfff)) << 14);
        }
        0x6 => e.ecx &= !LEAF6_ECX_EPB,
        0xb | 0x1f => {
            // Extended topology: level 0 = SMT (1 thread per core), level 1 = core (count cores).
            e.edx = id;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (1 << 8) | e.index;
                }
                1 => {
                    e.eax = bits_for(count);
                    e.ebx = count;
                    e.ecx = (2 << 8) | e.index;
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
            }
        }
        0x8000_001e => {
            // AMD: extended APIC ID; one thread per core, core id = vCPU id.
            e.eax = id;
            e.ebx = (e.ebx & !0xff) | (id & 0xff);
        }
        _ => {}
    }
}

fn apply(entries: &mut Vec<kvm_cpuid_entry2>, o: &CpuidOverride) {
    let found = entries
        .iter_mut()
        .find(|e| e.function == o.leaf && e.index == o.subleaf);
    let e = match found {
        Some(e) => e,
        None => {
            entries.push(kvm_cpuid_entry2 {
                function: o.leaf,
                index: o.subleaf,
                ..Default::default()
            });
            let Some(last) = entries.last_mut() else {
                return;
            };
            last
        }
    };
    if let Some(v) = o.eax {
        e.eax = v;
    }
    if let Some(v) = o.ebx {
        e.ebx = v;
    }
    if let Some(v) = o.ecx {
        e.ecx = v;
    }
    if let Some(v) = o.edx {
        e.edx = v;
    }
}

/// The CPUID for vCPU `id` of `count`, from the host's `supported` table and the overrides.
pub fn for_vcpu(
    supported: &CpuId,
    id: u32,
    count: u32,
    overrides: &[CpuidOverride],
) -> Result<CpuId> {
    let mut entries: Vec<kvm_cpuid_entry2> = supported.as_slice().to_vec();
    for e in &mut entries {
        normalize(e, id, count);
    }
    for o in overrides {
        apply(&mut entries, o);
    }
    let leaf = overrides.last().map_or(0, |o| o.leaf);
    CpuId::from_entries(&entries).map_err(|_| Error::Full(leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CpuId {
        let e = |function, index| kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0008_0800,
            ..Default::default()
        };
        CpuId::from_entries(&[e(0x1, 0), e(0xb, 0), e(0xb, 1), e(0x8000_001e, 0)]).unwrap()
    }

    fn find(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn apic_ids_and_topology_follow_the_vcpu() {
        let c = for_vcpu(&table(), 3, 4, &[]).unwrap();
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(find(&c, 0xb, 0).edx, 3);
        assert_eq!(find(&c, 0xb, 1).ebx, 4);
        assert_eq!(find(&c, 0xb, 1).eax, 2);
        assert_eq!(find(&c, 0x8000_001e, 0).eax, 3);
    }

    #[test]
    fn overrides_replace_or_add_registers() {
        let o = [
            CpuidOverride {
                leaf: 0x8000_0008,
                subleaf: 0,
                eax: Some(0x2830),
                ebx: None,
                ecx: None,
                edx: None,
            },
            CpuidOverride {
                leaf: 1,
                subleaf: 0,
                eax: None,
                ebx: None,
                ecx: Some(7),
                edx: None,
            },
        ];
        let c = for_vcpu(&table(), 0, 1, &o).unwrap();
        assert_eq!(find(&c, 0x8000_0008, 0).eax, 0x2830);
        assert_eq!(find(&c, 1, 0).ecx, 7);
        assert_eq!(find(&c, 1, 0).edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn bits_for_counts() {
        assert_eq!([1, 2, 3, 4, 5, 64].map(bits_for), [0, 1, 2, 2, 3, 6]);
    }
}
