//! Local APIC setup: LINT0 delivers the legacy PIC's interrupts (ExtINT) and LINT1 delivers NMIs,
//! as on a PC, so that the in-kernel PIC and NMI watchdog work before the guest programs the APIC.

use kvm_ioctls::VcpuFd;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Errors configuring the LAPIC.
#[derive(Debug, thiserror::Error)]
#[error("KVM refused the local APIC state ({what}): {source}")]
pub struct Error {
    what: &'static str,
    source: kvm_ioctls::Error,
}

fn get(regs: &[i8], offset: usize) -> u32 {
    let b = |i: usize| regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set(regs: &mut [i8], offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *byte as i8;
    }
}

/// Sets the delivery mode bits (10:8) of an LVT entry.
fn with_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Programs LINT0 as ExtINT and LINT1 as NMI.
pub fn set_lint(vcpu: &VcpuFd) -> Result<(), Error> {
    let mut state = vcpu.get_lapic().map_err(|source| Error {
        what: "get",
        source,
    })?;
    let lvt0 = get(&state.regs, APIC_LVT0);
    set(
        &mut state.regs,
        APIC_LVT0,
        with_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = get(&state.regs, APIC_LVT1);
    set(&mut state.regs, APIC_LVT1, with_mode(lvt1, APIC_MODE_NMI));
    vcpu.set_lapic(&state).map_err(|source| Error {
        what: "set",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode_bits() {
        assert_eq!(with_mode(0x0001_0000, APIC_MODE_EXTINT), 0x0001_0700);
        assert_eq!(with_mode(0x0000_0700, APIC_MODE_NMI), 0x0000_0400);
        let mut regs = [0i8; 1024];
        set(&mut regs, APIC_LVT1, 0xdead_beef);
        assert_eq!(get(&regs, APIC_LVT1), 0xdead_beef);
    }
}
