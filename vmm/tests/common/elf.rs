//! Builds minimal ELF64 executables around a few bytes of code: what the loader and KVM tests boot
//! instead of a Linux kernel. Shared by the crate's unit tests and its integration tests.

/// A note to put in a PT_NOTE segment.
pub struct Note<'a> {
    /// Note name ("Xen", "Linux", ...).
    pub name: &'a str,
    /// Note type.
    pub kind: u32,
    /// Descriptor bytes.
    pub desc: &'a [u8],
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

/// An ELF64 executable whose single PT_LOAD puts `code` at physical `paddr`, entry `entry`, with
/// optional notes.
pub fn elf64(code: &[u8], paddr: u64, entry: u64, notes: &[Note<'_>]) -> Vec<u8> {
    let mut note_bytes = Vec::new();
    for n in notes {
        note_bytes.extend_from_slice(&(n.name.len() as u32 + 1).to_le_bytes());
        note_bytes.extend_from_slice(&(n.desc.len() as u32).to_le_bytes());
        note_bytes.extend_from_slice(&n.kind.to_le_bytes());
        note_bytes.extend_from_slice(n.name.as_bytes());
        note_bytes.push(0);
        pad4(&mut note_bytes);
        note_bytes.extend_from_slice(n.desc);
        pad4(&mut note_bytes);
    }
    let phnum: u16 = if notes.is_empty() { 1 } else { 2 };
    let headers = 64 + 56 * u64::from(phnum);
    let code_off = headers.next_multiple_of(16);
    let note_off = code_off + code.len() as u64;

    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV ABI
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&phnum.to_le_bytes());
    f.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let mut phdr = |kind: u32, off: u64, addr: u64, size: u64| {
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&5u32.to_le_bytes()); // R+X
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&addr.to_le_bytes());
        f.extend_from_slice(&addr.to_le_bytes());
        f.extend_from_slice(&size.to_le_bytes());
        f.extend_from_slice(&size.to_le_bytes());
        f.extend_from_slice(&4u64.to_le_bytes());
    };
    phdr(1, code_off, paddr, code.len() as u64);
    if !notes.is_empty() {
        phdr(4, note_off, 0, note_bytes.len() as u64);
    }
    f.resize(code_off as usize, 0);
    f.extend_from_slice(code);
    f.extend_from_slice(&note_bytes);
    f
}
