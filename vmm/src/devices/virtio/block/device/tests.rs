use super::*;
use crate::devices::virtio::testing::TestRing;
use std::sync::atomic::Ordering;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

fn setup(
    read_only: bool,
    image: &[u8],
) -> (Block, TestRing, Arc<Metrics>, tempfile::NamedTempFile) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), image).unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut b = Block::open(f.path(), read_only, "disk-one", metrics.clone()).unwrap();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let ring = TestRing::new(mem.clone(), 0x1000, 64, 0x10000);
    let irq = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
    b.activate(mem, 0, vec![ring.queue()], irq).unwrap();
    (b, ring, metrics, f)
}

fn header(kind: u32, sector: u64) -> Vec<u8> {
    let mut h = kind.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&sector.to_le_bytes());
    h
}

fn image() -> Vec<u8> {
    (0..8 * 512).map(|i| (i / 512) as u8).collect()
}

#[test]
fn reads_writes_flushes_and_identifies() {
    let (mut b, mut ring, m, f) = setup(false, &image());
    assert_eq!(b.features() & (1 << F_RO), 0);
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);

    // Read sectors 2-3.
    let h = ring.alloc(&header(0, 2));
    let data = ring.alloc(&[0u8; 1024]);
    let st = ring.alloc(&[0xff]);
    ring.add_chain(&[(h, 16, false), (data, 1024, true), (st, 1, true)]);
    // Write sector 5 from two descriptors.
    let h2 = ring.alloc(&header(1, 5));
    let d1 = ring.alloc(&[0xaa; 256]);
    let d2 = ring.alloc(&[0xbb; 256]);
    let st2 = ring.alloc(&[0xff]);
    ring.add_chain(&[
        (h2, 16, false),
        (d1, 256, false),
        (d2, 256, false),
        (st2, 1, true),
    ]);
    let h3 = ring.alloc(&header(4, 0));
    let st3 = ring.alloc(&[0xff]);
    ring.add_chain(&[(h3, 16, false), (st3, 1, true)]);
    let h4 = ring.alloc(&header(8, 0));
    let id = ring.alloc(&[0u8; 20]);
    let st4 = ring.alloc(&[0xff]);
    ring.add_chain(&[(h4, 16, false), (id, 20, true), (st4, 1, true)]);
    b.process_queue(0);

    assert_eq!(ring.used_idx(), 4);
    assert_eq!(ring.used(0).1, 1025);
    let got = ring.read(data, 1024);
    assert!(got[..512].iter().all(|&x| x == 2) && got[512..].iter().all(|&x| x == 3));
    assert_eq!(ring.read(st, 1), [0]);
    assert_eq!(ring.read(st2, 1), [0]);
    let disk = std::fs::read(f.path()).unwrap();
    assert!(disk[5 * 512..5 * 512 + 256].iter().all(|&x| x == 0xaa));
    assert!(disk[5 * 512 + 256..6 * 512].iter().all(|&x| x == 0xbb));
    assert_eq!(ring.read(st3, 1), [0]);
    assert_eq!(&ring.read(id, 8), b"disk-one");
    assert_eq!(ring.used(3).1, 21);
    assert_eq!(m.block.reads.load(Ordering::Relaxed), 1);
    assert_eq!(m.block.write_bytes.load(Ordering::Relaxed), 512);
}

#[test]
fn read_only_out_of_range_and_unknown_requests_fail_cleanly() {
    let (mut b, mut ring, m, f) = setup(true, &image());
    assert_ne!(b.features() & (1 << F_RO), 0);
    let cases: Vec<(Vec<u8>, u32, u8)> = vec![
        (header(1, 0), 512, request::S_IOERR), // write to a read-only disk
        (header(0, 7), 1024, request::S_IOERR), // read past the end
        (header(0, u64::MAX / 2), 512, request::S_IOERR), // sector overflow
        (header(0, 0), 100, request::S_IOERR), // not a whole sector
        (header(77, 0), 512, request::S_UNSUPP), // unknown type
    ];
    let mut status = vec![];
    for (h, len, _) in &cases {
        let ha = ring.alloc(h);
        let d = ring.alloc(&vec![0u8; *len as usize]);
        let st = ring.alloc(&[0xff]);
        let writable = h[0] != 1;
        ring.add_chain(&[(ha, 16, false), (d, *len, writable), (st, 1, true)]);
        status.push(st);
    }
    // A header shorter than 16 bytes.
    let short = ring.alloc(&[0u8; 4]);
    let st = ring.alloc(&[0xff]);
    ring.add_chain(&[(short, 4, false), (st, 1, true)]);
    b.process_queue(0);
    assert_eq!(ring.used_idx() as usize, cases.len() + 1);
    for ((_, _, want), st) in cases.iter().zip(&status) {
        assert_eq!(ring.read(*st, 1)[0], *want);
    }
    assert_eq!(ring.read(st, 1)[0], request::S_IOERR);
    assert_eq!(
        std::fs::read(f.path()).unwrap(),
        image(),
        "read-only image untouched"
    );
    assert_eq!(m.block.errors.load(Ordering::Relaxed), 6);
}

#[test]
fn chain_without_writable_status_is_returned_unused() {
    let (mut b, mut ring, _, _) = setup(false, &image());
    let h = ring.alloc(&header(0, 0));
    ring.add_chain(&[(h, 16, false)]);
    b.process_queue(0);
    assert_eq!(ring.used_idx(), 1);
    assert_eq!(ring.used(0).1, 0);
}
