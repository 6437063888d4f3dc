//! The boot GDT: segment descriptors in the two forms the VMM needs them, the 8-byte entry the guest
//! reads from memory and the `kvm_segment` KVM loads into the hidden segment registers.

use kvm_bindings::kvm_segment;

/// One segment descriptor, as the x86 manuals lay it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Access byte (bits 0-7: type, S, DPL, P) and flags nibble (bits 12-15: AVL, L, D/B, G).
    pub flags: u16,
    /// Segment base.
    pub base: u32,
    /// Segment limit (20 bits; in 4 KiB units when G is set).
    pub limit: u32,
}

impl Descriptor {
    /// A descriptor with the given access/flags word, base and limit.
    pub const fn new(flags: u16, base: u32, limit: u32) -> Self {
        Self { flags, base, limit }
    }

    /// The 8-byte GDT entry.
    pub fn encode(&self) -> u64 {
        let base = u64::from(self.base);
        let limit = u64::from(self.limit);
        ((base & 0xff00_0000) << 32)
            | ((u64::from(self.flags) & 0xf0ff) << 40)
            | ((limit & 0x000f_0000) << 32)
            | ((base & 0x00ff_ffff) << 16)
            | (limit & 0xffff)
    }

    fn bit(&self, n: u16) -> u8 {
        u8::from(self.flags & (1 << n) != 0)
    }

    /// The segment register contents for GDT slot `index`.
    pub fn to_kvm_segment(&self, index: u16) -> kvm_segment {
        let g = self.bit(15);
        let limit = self.limit & 0xf_ffff;
        let present = self.bit(7);
        kvm_segment {
            base: u64::from(self.base),
            limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
            selector: index * 8,
            type_: (self.flags & 0xf) as u8,
            present,
            dpl: ((self.flags >> 5) & 0x3) as u8,
            db: self.bit(14),
            s: self.bit(4),
            l: self.bit(13),
            g,
            avl: self.bit(12),
            padding: 0,
            unusable: u8::from(present == 0),
        }
    }
}

/// The boot GDT for a 64-bit entry (Linux boot protocol, raw payloads): null, code (L=1), data, TSS.
pub const GDT_64BIT: [Descriptor; 4] = [
    Descriptor::new(0, 0, 0),
    Descriptor::new(0xa09b, 0, 0xfffff),
    Descriptor::new(0xc093, 0, 0xfffff),
    Descriptor::new(0x808b, 0, 0xfffff),
];

/// The boot GDT for the PVH entry (32-bit protected mode, flat): null, code, data, TSS.
pub const GDT_PVH: [Descriptor; 4] = [
    Descriptor::new(0, 0, 0),
    Descriptor::new(0xc09b, 0, 0xffff_ffff),
    Descriptor::new(0xc093, 0, 0xffff_ffff),
    Descriptor::new(0x008b, 0, 0x67),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_manual() {
        // Values a 64-bit Linux boot GDT is known to hold.
        assert_eq!(GDT_64BIT[1].encode(), 0x00af_9b00_0000_ffff);
        assert_eq!(GDT_64BIT[2].encode(), 0x00cf_9300_0000_ffff);
        assert_eq!(GDT_64BIT[3].encode(), 0x008f_8b00_0000_ffff);
        assert_eq!(GDT_PVH[1].encode(), 0x00cf_9b00_0000_ffff);
        assert_eq!(GDT_PVH[3].encode(), 0x0000_8b00_0000_0067);
    }

    #[test]
    fn kvm_segments_match_the_entries() {
        let cs = GDT_64BIT[1].to_kvm_segment(1);
        assert_eq!(
            (cs.selector, cs.l, cs.g, cs.present, cs.s, cs.type_),
            (8, 1, 1, 1, 1, 0xb)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let tss = GDT_PVH[3].to_kvm_segment(3);
        assert_eq!((tss.limit, tss.g, tss.s, tss.type_), (0x67, 0, 0, 0xb));
        let null = GDT_64BIT[0].to_kvm_segment(0);
        assert_eq!(null.unusable, 1);
    }
}
