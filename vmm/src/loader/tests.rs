use super::*;

#[path = "../../tests/common/elf.rs"]
#[allow(dead_code)]
mod elf;

use elf::{Note, elf64};

fn ram(mib: u64) -> (GuestMemoryMmap, u64) {
    let bytes = mib << 20;
    (
        crate::memory::create(&crate::memory::ram_ranges(bytes)).unwrap(),
        bytes,
    )
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn tells_kernels_from_other_files() {
    let d = tempfile::tempdir().unwrap();
    let plain = file(d.path(), "plain", &elf64(&[0xf4], 0x100000, 0x100000, &[]));
    assert_eq!(
        detect(&plain).unwrap(),
        KernelKind::Elf {
            pvh: false,
            linux: false
        }
    );
    let pvh_note = Note {
        name: "Xen",
        kind: 18,
        desc: &0x100000u32.to_le_bytes(),
    };
    let pvh = file(
        d.path(),
        "pvh",
        &elf64(&[0xf4], 0x100000, 0x100000, &[pvh_note]),
    );
    assert_eq!(
        detect(&pvh).unwrap(),
        KernelKind::Elf {
            pvh: true,
            linux: true
        }
    );
    let lin = Note {
        name: "Linux",
        kind: 0x100,
        desc: &[1, 2, 3, 4],
    };
    let linux = file(
        d.path(),
        "linux",
        &elf64(&[0xf4], 0x100000, 0x100000, &[lin]),
    );
    assert!(detect(&linux).unwrap().is_linux());

    let mut bz = vec![0u8; 0x400];
    bz[0x1fe] = 0x55;
    bz[0x1ff] = 0xaa;
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let bz = file(d.path(), "bz", &bz);
    assert_eq!(detect(&bz).unwrap(), KernelKind::BzImage);

    let text = file(d.path(), "text", b"#!/bin/sh\necho not a kernel\n");
    assert!(matches!(detect(&text), Err(Error::NotAKernel(_))));
    let empty = file(d.path(), "empty", b"");
    assert!(matches!(detect(&empty), Err(Error::NotAKernel(_))));
    assert!(matches!(
        detect(&d.path().join("missing")),
        Err(Error::Read { .. })
    ));
}

#[test]
fn loads_elf_at_its_physical_address_with_the_right_entry() {
    let d = tempfile::tempdir().unwrap();
    let code = [0x90, 0x90, 0xf4];
    let (mem, bytes) = ram(16);
    let p = file(d.path(), "k", &elf64(&code, 0x200000, 0x200001, &[]));
    let l = load_kernel(&mem, bytes, &p, detect(&p).unwrap()).unwrap();
    assert_eq!(l.entry.protocol, BootProtocol::Linux64);
    assert_eq!(l.entry.addr, GuestAddress(0x200001));
    assert_eq!(l.end, 0x200003);
    let mut back = [0u8; 3];
    mem.read_slice(&mut back, GuestAddress(0x200000)).unwrap();
    assert_eq!(back, code);

    let note = Note {
        name: "Xen",
        kind: 18,
        desc: &0x200002u32.to_le_bytes(),
    };
    let p = file(d.path(), "pvh", &elf64(&code, 0x200000, 0x200000, &[note]));
    let l = load_kernel(&mem, bytes, &p, detect(&p).unwrap()).unwrap();
    assert_eq!(l.entry.protocol, BootProtocol::Pvh);
    assert_eq!(l.entry.addr, GuestAddress(0x200002));
}

#[test]
fn kernel_beyond_memory_is_too_small_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let (mem, bytes) = ram(4);
    let p = file(d.path(), "k", &elf64(&[0xf4; 64], 0x800000, 0x800000, &[]));
    let e = load_kernel(&mem, bytes, &p, detect(&p).unwrap()).unwrap_err();
    assert!(matches!(e, Error::TooSmall { .. }), "{e}");
    assert!(e.to_string().contains("too small"), "{e}");
}

#[test]
fn initrd_goes_to_the_top_of_low_memory_or_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (mem, bytes) = ram(16);
    let rd = file(d.path(), "rd", &vec![7u8; 5000]);
    let i = load_initrd(&mem, bytes, bytes, 0x200000, &rd).unwrap();
    assert_eq!(i.size, 5000);
    assert_eq!(i.addr % 4096, 0);
    assert!(i.addr + i.size <= bytes);
    let mut b = [0u8; 1];
    mem.read_slice(&mut b, GuestAddress(i.addr + 4999)).unwrap();
    assert_eq!(b[0], 7);
    let big = file(d.path(), "big", &vec![0u8; 15 << 20]);
    let e = load_initrd(&mem, bytes, bytes, 0x200000, &big).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
}

#[test]
fn payload_is_loaded_at_one_mib() {
    let d = tempfile::tempdir().unwrap();
    let (mem, bytes) = ram(4);
    let p = file(d.path(), "p", &[0xf4]);
    let l = load_payload(&mem, bytes, &p).unwrap();
    assert_eq!(l.entry.addr, GuestAddress(layout::HIMEM_START));
    let p = file(d.path(), "huge", &vec![0u8; 4 << 20]);
    assert!(load_payload(&mem, bytes, &p).is_err());
}

#[test]
fn cmdline_gets_virtio_entries_and_has_a_limit() {
    let c = build_cmdline(
        "console=ttyS0",
        &[
            MmioSlot {
                base: 0xd000_0000,
                irq: 5,
            },
            MmioSlot {
                base: 0xd000_1000,
                irq: 6,
            },
        ],
    )
    .unwrap();
    let s = c.as_cstring().unwrap().into_string().unwrap();
    assert_eq!(
        s,
        "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
    );
    let long = "a".repeat(layout::CMDLINE_MAX_SIZE + 1);
    assert!(build_cmdline(&long, &[]).is_err());
    let (mem, _) = ram(4);
    let n = write_cmdline(&mem, &c).unwrap();
    assert_eq!(n, s.len() + 1);
}
