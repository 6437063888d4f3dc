use super::*;
use crate::devices::virtio::testing::{F_NEXT, F_WRITE, TestRing};
use crate::devices::virtio::vsock::packet::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const GUEST: u64 = 3;
const MEM: usize = 16 << 20;

struct Rig {
    _dir: tempfile::TempDir,
    sock: std::path::PathBuf,
    dev: Vsock,
    rx: TestRing,
    tx: TestRing,
    rx_bufs: HashMap<u32, u64>,
    seen: u16,
    offered: u64,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("v.sock");
    let metrics = Arc::new(Metrics::default());
    let muxer = Muxer::new(&sock, GUEST, metrics.clone()).unwrap();
    let mut dev = Vsock::new(GUEST, muxer, metrics);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let rx = TestRing::new(mem.clone(), 0x1000, 16, 0x10_0000);
    let tx = TestRing::new(mem.clone(), 0x3000, 16, 0x20_0000);
    let ev = TestRing::new(mem.clone(), 0x5000, 16, 0x30_0000);
    let irq = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
    dev.activate(mem, 0, vec![rx.queue(), tx.queue(), ev.queue()], irq)
        .unwrap();
    Rig {
        _dir: dir,
        sock,
        dev,
        rx,
        tx,
        rx_bufs: HashMap::new(),
        seen: 0,
        offered: 0,
    }
}

impl Rig {
    /// Offers an rx buffer of `len` bytes.
    fn offer_rx(&mut self, len: u32) {
        self.rx.data = 0x80_0000 + (self.offered % 64) * 0x1_0000;
        self.offered += 1;
        let a = self.rx.alloc(&vec![0u8; len as usize]);
        let head = self.rx.add_chain(&[(a, len, true)]);
        self.rx_bufs.insert(u32::from(head), a);
        self.dev.process_queue(RXQ);
    }

    /// Sends a packet from the guest (header and payload in separate descriptors).
    fn send(&mut self, h: Header, payload: &[u8]) {
        self.tx.data = 0x20_0000;
        let ha = self.tx.alloc(&h.to_bytes());
        if payload.is_empty() {
            self.tx.add_chain(&[(ha, HDR_SIZE as u32, false)]);
        } else {
            let pa = self.tx.alloc(payload);
            self.tx.add_chain(&[
                (ha, HDR_SIZE as u32, false),
                (pa, payload.len() as u32, false),
            ]);
        }
        self.dev.process_queue(TXQ);
    }

    /// The next packet the device wrote into an rx buffer.
    fn recv(&mut self) -> (Header, Vec<u8>) {
        let until = Instant::now() + Duration::from_secs(5);
        while self.rx.used_idx() == self.seen {
            assert!(Instant::now() < until, "no packet from the device");
            self.dev.process_fd(0);
            std::thread::sleep(Duration::from_millis(2));
        }
        let (id, len) = self.rx.used(self.seen);
        self.seen = self.seen.wrapping_add(1);
        let bytes = self.rx.read(self.rx_bufs[&id], len as usize);
        let h = Header::from_bytes(bytes[..HDR_SIZE].try_into().unwrap());
        (h, bytes[HDR_SIZE..].to_vec())
    }
}

fn guest(op: u16, src_port: u32, dst_port: u32, len: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: GUEST,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        kind: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 << 10,
        fwd_cnt,
    }
}

#[test]
fn host_connect_and_stream_both_ways_through_the_rings() {
    let mut r = rig();
    assert_eq!(r.dev.device_type(), TYPE_VSOCK);
    let mut cfg = [0u8; 8];
    r.dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), GUEST);

    let mut host = UnixStream::connect(&r.sock).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    r.offer_rx(4096);
    let (req, _) = r.recv();
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, 1024));
    let hp = req.src_port;
    r.send(guest(OP_RESPONSE, 1024, hp, 0, 0), &[]);
    let mut line = String::new();
    BufReader::new(&host).read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {hp}\n"));

    // 1 MiB host -> guest through 4 KiB buffers, the guest acknowledging as it reads.
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let writer = {
        let mut h = host.try_clone().unwrap();
        let d = data.clone();
        std::thread::spawn(move || h.write_all(&d).unwrap())
    };
    let mut got = Vec::new();
    while got.len() < data.len() {
        r.offer_rx(4096);
        let (h, p) = r.recv();
        match h.op {
            OP_RW => {
                got.extend_from_slice(&p);
                r.send(guest(OP_CREDIT_UPDATE, 1024, hp, 0, got.len() as u32), &[]);
            }
            OP_CREDIT_REQUEST => {
                r.send(guest(OP_CREDIT_UPDATE, 1024, hp, 0, got.len() as u32), &[])
            }
            op => panic!("unexpected op {op}"),
        }
    }
    writer.join().unwrap();
    assert!(got == data, "host -> guest bytes differ");

    // Guest -> host.
    r.send(guest(OP_RW, 1024, hp, 5, got.len() as u32), b"hello");
    let mut b = [0u8; 5];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
}

#[test]
fn malformed_packets_are_counted_and_answered_with_rst() {
    let mut r = rig();
    // Wrong type on an unknown connection: an RST back.
    let mut h = guest(OP_RW, 5, 6, 0, 0);
    h.kind = 2;
    r.send(h, &[]);
    r.offer_rx(4096);
    let (rst, _) = r.recv();
    assert_eq!((rst.op, rst.dst_port), (OP_RST, 5));
    // A header cut short, a wrong CID, a length beyond the chain: dropped, no answer.
    let ha = r.tx.alloc(&[0u8; 20]);
    r.tx.add_chain(&[(ha, 20, false)]);
    let mut wrong = guest(OP_REQUEST, 5, 6, 0, 0);
    wrong.src_cid = 99;
    let wa = r.tx.alloc(&wrong.to_bytes());
    r.tx.add_chain(&[(wa, HDR_SIZE as u32, false)]);
    let long = guest(OP_RW, 5, 6, 1000, 0);
    let la = r.tx.alloc(&long.to_bytes());
    r.tx.add_chain(&[(la, HDR_SIZE as u32, false)]);
    r.dev.process_queue(TXQ);
    assert_eq!(r.tx.used_idx(), 4, "every chain is returned");
    assert_eq!(
        r.dev
            .metrics
            .vsock
            .bad_packets
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    r.offer_rx(4096);
    r.dev.process_fd(0);
    assert_eq!(r.rx.used_idx(), 1, "nothing more was sent");
}

#[test]
fn rx_buffers_too_small_for_a_header_are_returned_empty() {
    let mut r = rig();
    let mut host = UnixStream::connect(&r.sock).unwrap();
    host.write_all(b"CONNECT 1\n").unwrap();
    r.offer_rx(10);
    r.dev.process_fd(0);
    let until = Instant::now() + Duration::from_secs(5);
    while r.rx.used_idx() == 0 && Instant::now() < until {
        r.dev.process_fd(0);
    }
    assert_eq!(r.rx.used(0).1, 0);
    // The request is still owed and goes into the next proper buffer.
    r.seen = 1;
    r.offer_rx(4096);
    let (h, _) = r.recv();
    assert_eq!(h.op, OP_REQUEST);
}

/// One raw descriptor, as a hostile driver might write it.
#[derive(Clone, Debug)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn raw_desc() -> impl Strategy<Value = RawDesc> {
    let addr = prop_oneof![
        0x40_0000u64..0x40_1000, // fine
        Just(MEM as u64 - 8),    // straddles the end
        any::<u64>(),            // anywhere
    ];
    let len = prop_oneof![0u32..200, Just(HDR_SIZE as u32), any::<u32>()];
    let flags = prop_oneof![
        Just(0u16),
        Just(F_NEXT),
        Just(F_WRITE),
        Just(F_NEXT | F_WRITE),
        any::<u16>()
    ];
    (addr, len, flags, 0u16..20).prop_map(|(addr, len, flags, next)| RawDesc {
        addr,
        len,
        flags,
        next,
    })
}

/// A 44-byte header that is mostly plausible, with any field possibly wild.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(GUEST), any::<u64>()],
        prop_oneof![Just(HOST_CID), any::<u64>()],
        0u32..4,
        0u32..4,
        prop_oneof![0u32..64, any::<u32>()],
        prop_oneof![Just(TYPE_STREAM), any::<u16>()],
        0u16..9,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(s, d, sp, dp, len, kind, op, flags, ba, fc)| {
            Header {
                src_cid: s,
                dst_cid: d,
                src_port: sp,
                dst_port: dp,
                len,
                kind,
                op,
                flags,
                buf_alloc: ba,
                fwd_cnt: fc,
            }
            .to_bytes()
            .to_vec()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random descriptor tables and avail rings never panic the device, and everything it
    /// returns names a real descriptor.
    #[test]
    fn hostile_descriptor_chains(
        descs in proptest::collection::vec(raw_desc(), 16),
        heads in proptest::collection::vec(any::<u16>(), 0..24),
        header in header_bytes(),
    ) {
        let mut r = rig();
        r.tx.mem.write_slice(&header, GuestAddress(0x40_0000)).unwrap();
        for (i, d) in descs.iter().enumerate() {
            r.tx.write_desc(i as u16, d.addr, d.len, d.flags, d.next);
            r.rx.write_desc(i as u16, d.addr, d.len, d.flags, d.next);
        }
        for h in &heads {
            r.tx.publish(*h);
            r.rx.publish(*h);
        }
        r.dev.process_queue(TXQ);
        r.dev.process_queue(RXQ);
        r.dev.process_fd(0);
        prop_assert!(r.tx.used_idx() as usize <= heads.len());
        for i in 0..r.tx.used_idx() {
            prop_assert!(r.tx.used(i).0 < 16);
        }
        for i in 0..r.rx.used_idx() {
            let (id, len) = r.rx.used(i);
            prop_assert!(id < 16);
            prop_assert!(len as usize <= HDR_SIZE + MAX_PAYLOAD as usize);
        }
    }

    /// Well-formed chains carrying random packets (any op, ports, lengths, credit) never panic,
    /// and the device never sends the guest more than one packet per buffer it offered.
    #[test]
    fn random_packets(packets in proptest::collection::vec((header_bytes(), proptest::collection::vec(any::<u8>(), 0..64)), 1..12)) {
        let mut r = rig();
        let _listener = std::os::unix::net::UnixListener::bind(format!("{}_1", r.sock.display())).unwrap();
        for (h, payload) in &packets {
            r.tx.data = 0x20_0000;
            let ha = r.tx.alloc(h);
            let pa = r.tx.alloc(payload);
            r.tx.add_chain(&[(ha, HDR_SIZE as u32, false), (pa, payload.len() as u32, false)]);
        }
        r.dev.process_queue(TXQ);
        prop_assert_eq!(r.tx.used_idx() as usize, packets.len());
        for _ in 0..4 {
            r.offer_rx(4096);
        }
        r.dev.process_fd(0);
        prop_assert!(r.rx.used_idx() <= 4);
    }
}
