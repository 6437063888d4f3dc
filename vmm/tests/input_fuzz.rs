//! Bad input for moat-vmm's guest-facing and operator-facing parsers, as property tests:
//!
//! - the kernel command line ([`loader::build_cmdline`], [`loader::write_cmdline`], with the NUL
//!   check of [`config::validate`]): any extra arguments give a line the kernel reads as meant
//!   (within x86's 2048-byte `COMMAND_LINE_SIZE`, every `virtio_mmio.device=` entry a parameter of
//!   its own) or a clear error;
//! - virtio-blk descriptor chains ([`Block`] over a split queue in guest memory with a hole):
//!   arbitrary descriptor tables (loops, out-of-range and wrapping addresses, zero and huge
//!   lengths, read/write mix-ups, indirect tables) and request headers (any type, any sector)
//!   never panic or hang, write guest memory only inside buffers the guest marked writable (and
//!   the used ring), never grow or change a read-only image, and well-formed requests get exactly
//!   the status and data the virtio spec says.
//!
//! The vsock device and packets have their own property tests next to them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../src/devices/virtio/testing.rs"]
#[allow(dead_code)]
mod testing;

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

use moat_testkit::bounded::{self, Failure};
use moat_vmm::arch::layout;
use moat_vmm::config::{self, DEFAULT_CMDLINE, VmConfig};
use moat_vmm::devices::virtio::block::{Block, request};
use moat_vmm::devices::virtio::{Interrupt, VirtioDevice};
use moat_vmm::loader::{self, MmioSlot};
use moat_vmm::metrics::Metrics;
use proptest::prelude::*;
use testing::{F_NEXT, F_WRITE, TestRing};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Longest one case may take (release build; a hang or a blow-up trips it).
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Most bytes one case may allocate in total.
const ALLOC_LIMIT: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Bounded runs: each case runs on its own thread, with a deadline and its allocations counted.

#[global_allocator]
static GLOBAL: moat_testkit::bounded::Counting = moat_testkit::bounded::Counting;

/// Runs `f` on a fresh thread; fails the test if it panics, takes longer than [`TIME_LIMIT`] or
/// allocates more than [`ALLOC_LIMIT`]. `what` names the case in failures.
fn bounded<T: Send + 'static>(what: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (r, used) = match bounded::run(TIME_LIMIT, f) {
        Ok(v) => v,
        Err(Failure::TimedOut) => panic!("took longer than {TIME_LIMIT:?}: {what}"),
        Err(Failure::Panicked) => panic!("panicked: {what}"),
    };
    assert!(
        used <= ALLOC_LIMIT,
        "allocated {used} bytes (limit {ALLOC_LIMIT}): {what}"
    );
    r
}

/// `cases` cases (`PROPTEST_CASES` overrides), no regression files (this is not a lib crate).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel command line.

/// x86's `COMMAND_LINE_SIZE`: the kernel keeps this many bytes of the line, NUL included.
const KERNEL_COMMAND_LINE_SIZE: usize = 2048;

/// The devices' slots, as `moat-vmm` lays them out.
fn slots(n: usize) -> Vec<MmioSlot> {
    (0..n)
        .map(|i| MmioSlot {
            base: layout::VIRTIO_MMIO_START + i as u64 * layout::VIRTIO_MMIO_SIZE,
            irq: layout::VIRTIO_IRQ_START + i as u32,
        })
        .collect()
}

fn entry(s: &MmioSlot) -> String {
    format!("virtio_mmio.device=4K@0x{:x}:{}", s.base, s.irq)
}

fn kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The kernel's reading of a command line (`parse_args` over `next_arg`, lib/cmdline.c and
/// kernel/params.c): its parameters as `param` or `param=value` with quotes removed as the
/// kernel removes them, and whether a `--` handed the rest to init.
fn kernel_params(line: &[u8]) -> (Vec<String>, bool) {
    let mut i = 0;
    while i < line.len() && kernel_space(line[i]) {
        i += 1;
    }
    let mut params = Vec::new();
    while i < line.len() {
        let mut start = i;
        let mut in_quote = false;
        let mut quoted = false;
        if line[start] == b'"' {
            start += 1;
            in_quote = true;
            quoted = true;
        }
        let mut j = start;
        let mut equals = None;
        while j < line.len() {
            if kernel_space(line[j]) && !in_quote {
                break;
            }
            if equals.is_none() && line[j] == b'=' {
                equals = Some(j);
            }
            if line[j] == b'"' {
                in_quote = !in_quote;
            }
            j += 1;
        }
        let mut tok = &line[start..j];
        if quoted && tok.last() == Some(&b'"') {
            tok = &tok[..tok.len() - 1];
        }
        let text = match equals {
            None => String::from_utf8_lossy(tok).into_owned(),
            Some(e) => {
                let e = e - start;
                let (k, v) = (&tok[..e.min(tok.len())], &tok[(e + 1).min(tok.len())..]);
                let mut v = v;
                if v.first() == Some(&b'"') {
                    v = &v[1..];
                    if v.last() == Some(&b'"') {
                        v = &v[..v.len() - 1];
                    }
                }
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            }
        };
        if equals.is_none() && text == "--" {
            return (params, true);
        }
        params.push(text);
        i = j;
        while i < line.len() && kernel_space(line[i]) {
            i += 1;
        }
    }
    (params, false)
}

/// What `build_cmdline(base, devices)` must give: `Ok` or the words its error must contain.
fn expected(base: &str, n_devices: usize) -> Result<(), &'static str> {
    let t = base.trim();
    if !t.matches('"').count().is_multiple_of(2) {
        return Err("unbalanced double quote");
    }
    // A `--` word (as the kernel splits words) hands the rest to init.
    let mut in_quote = false;
    let mut words: Vec<String> = vec![String::new()];
    for b in t.bytes() {
        if kernel_space(b) && !in_quote {
            words.push(String::new());
            continue;
        }
        if b == b'"' {
            in_quote = !in_quote;
        }
        words.last_mut().unwrap().push(b as char);
    }
    if words.iter().any(|w| {
        let w = w
            .strip_prefix('"')
            .map_or(w.as_str(), |x| x.strip_suffix('"').unwrap_or(x));
        w == "--"
    }) {
        return Err("`--`");
    }
    if !t.chars().all(|c| (' '..='~').contains(&c)) {
        return Err("printable ASCII");
    }
    let mut len = t.len();
    for s in &slots(n_devices) {
        len += usize::from(len > 0) + entry(s).len();
    }
    if len + 1 > KERNEL_COMMAND_LINE_SIZE {
        return Err("limit of 2047 bytes");
    }
    Ok(())
}

/// Extra command-line words: spaces, quotes, `--`, NUL, tabs, non-ASCII, huge.
fn extra_arg() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&[
            "quiet", "init=/bin/sh", "x=\"a b\"", "x=\"a", "\"", "\"\"", "--", "\"--\"", "-- x",
            "a -- b", "-", "---", "x=--", "a\"--\"b", "\0", "a\0b", "\t", "a\tb", "\n", "\u{e9}",
            "\u{1F980}", "\u{3000}", "\x0b--", " ", "", "=", "==", "a=b=c", "\"a=b\"",
            "panic=0", "console=ttyS1", "virtio_mmio.device=4K@0x0:1", "x='a b'", "\\\"",
        ][..]).prop_map(String::from),
        2 => "[ -~]{0,40}",
        1 => any::<String>(),
        1 => (1usize..3000).prop_map(|n| "a".repeat(n)),
        1 => (1usize..600).prop_map(|n| "ab ".repeat(n)),
    ]
}

/// A file to stand in for the kernel in [`config::validate`].
fn kernel_file() -> &'static std::path::Path {
    static K: std::sync::OnceLock<tempfile::NamedTempFile> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"not checked here").unwrap();
        f
    })
    .path()
}

fn check_cmdline(base: String, n_devices: usize) {
    // `config::validate` refuses NUL bytes before anything is created.
    let cfg = VmConfig {
        kernel: Some(kernel_file().to_path_buf()),
        cmdline: base.clone(),
        ..Default::default()
    };
    match config::validate(&cfg) {
        Err(e) => {
            assert!(base.contains('\0'), "validate refused {base:?}: {e}");
            assert!(e.to_string().contains("NUL byte"), "{e}");
        }
        Ok(()) => assert!(!base.contains('\0'), "validate took a NUL byte"),
    }
    let want = expected(&base, n_devices);
    let what = format!(
        "{n_devices} devices, base {:?}",
        base.chars().take(200).collect::<String>()
    );
    let b = base.clone();
    let got = bounded(what.clone(), move || {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        loader::build_cmdline(&b, &slots(n_devices)).map(|c| {
            let s = c.as_cstring().unwrap().into_bytes();
            let n = loader::write_cmdline(&mem, &c).unwrap();
            let mut written = vec![0u8; n];
            mem.read_slice(&mut written, GuestAddress(layout::CMDLINE_START))
                .unwrap();
            (s, n, written)
        })
    });
    match (got, want) {
        (Ok((s, n, written)), Ok(())) => {
            assert!(n <= KERNEL_COMMAND_LINE_SIZE, "{n} bytes: {what}");
            assert_eq!(n, s.len() + 1);
            assert_eq!(&written[..s.len()], &s[..], "written as built");
            assert_eq!(written[s.len()], 0, "NUL terminated");
            assert!(s.iter().all(|b| (b' '..=b'~').contains(b)), "{what}");
            assert!(s.starts_with(base.trim().as_bytes()), "base kept: {what}");
            let (params, to_init) = kernel_params(&s);
            assert!(!to_init, "`--` in {what}");
            for sl in &slots(n_devices) {
                let e = entry(sl);
                assert!(
                    params.contains(&e),
                    "the kernel would not see {e}: {what}\n{params:?}"
                );
            }
        }
        (Err(e), Err(words)) => {
            let m = e.to_string();
            assert!(m.starts_with("kernel command line: "), "{m}");
            assert!(m.contains(words), "want {words:?} in {m:?}: {what}");
        }
        (got, want) => panic!(
            "got {:?}, want {want:?}: {what}",
            got.map(|(s, _, _)| String::from_utf8_lossy(&s).into_owned())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// virtio-blk.

/// Guest memory: two regions with a hole between them, so addresses can miss it in the middle
/// as well as past the end.
const LOW_END: u64 = 0x8_0000;
const HIGH: u64 = 0xc_0000;
const HIGH_END: u64 = 0x10_0000;
const RING: u64 = 0x1000;
const QUEUE: u16 = 16;
/// Data slots: headers and buffers live at `DATA + k * SLOT`.
const DATA: u64 = 0x1_0000;
const SLOT: u64 = 0x1000;
const SLOTS: u64 = (LOW_END - DATA) / SLOT;
const SECTORS: u64 = 8;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), LOW_END as usize),
        (GuestAddress(HIGH), (HIGH_END - HIGH) as usize),
    ])
    .unwrap()
}

fn snapshot(mem: &GuestMemoryMmap) -> Vec<(u64, Vec<u8>)> {
    [(0, LOW_END), (HIGH, HIGH_END)]
        .into_iter()
        .map(|(a, b)| {
            let mut v = vec![0u8; (b - a) as usize];
            mem.read_slice(&mut v, GuestAddress(a)).unwrap();
            (a, v)
        })
        .collect()
}

fn image() -> Vec<u8> {
    (0..SECTORS * 512).map(|i| (i / 512) as u8 ^ 0x5a).collect()
}

struct Rig {
    block: Block,
    ring: TestRing,
    disk: std::fs::File,
    _file: tempfile::NamedTempFile,
}

fn rig(read_only: bool, id: &str) -> Rig {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&image()).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.path())
        .unwrap();
    let disk = file.try_clone().unwrap();
    let mut block = Block::from_file(file, read_only, id, Arc::new(Metrics::default())).unwrap();
    let mem = memory();
    let ring = TestRing::new(mem.clone(), RING, QUEUE, DATA);
    let irq = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
    block.activate(mem, 0, vec![ring.queue()], irq).unwrap();
    Rig {
        block,
        ring,
        disk,
        _file: f,
    }
}

fn disk_bytes(f: &mut std::fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

fn header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}

/// Where the used ring lies: the only memory outside writable buffers the device may write.
fn used_ring() -> (u64, u64) {
    let avail = RING + 16 * u64::from(QUEUE);
    let used = (avail + 6 + 2 * u64::from(QUEUE)).next_multiple_of(4);
    (used, used + 6 + 8 * u64::from(QUEUE))
}

#[derive(Clone, Copy, Debug)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn desc_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0..SLOTS, 0u64..64).prop_map(|(k, off)| DATA + k * SLOT + off),
        1 => Just(LOW_END - 8),           // runs into the hole
        1 => LOW_END..HIGH,               // in the hole
        1 => HIGH..HIGH_END,              // the high region
        1 => Just(HIGH_END - 1),          // runs past the end
        1 => HIGH_END..u64::MAX,          // past the end
        1 => Just(u64::MAX - 4),          // wraps
    ]
}

fn desc_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(16u32),
        2 => Just(1u32),
        1 => Just(0u32),
        2 => (1u32..9).prop_map(|n| n * 512),
        2 => 0u32..1100,
        1 => (1u32..64).prop_map(|n| n * 16), // plausible indirect tables
        1 => any::<u32>(),
        1 => Just(u32::MAX),
    ]
}

fn raw_desc() -> impl Strategy<Value = RawDesc> {
    (
        desc_addr(),
        desc_len(),
        prop_oneof![
            4 => prop::sample::select(&[0u16, F_NEXT, F_WRITE, F_NEXT | F_WRITE][..]),
            1 => Just(4u16), // VIRTQ_DESC_F_INDIRECT
            1 => Just(4u16 | F_NEXT),
            1 => any::<u16>(),
        ],
        prop_oneof![4 => 0u16..QUEUE, 1 => any::<u16>()],
    )
        .prop_map(|(addr, len, flags, next)| RawDesc {
            addr,
            len,
            flags,
            next,
        })
}

fn request_header() -> impl Strategy<Value = [u8; 16]> {
    (
        prop_oneof![
            4 => prop::sample::select(&[0u32, 1, 4, 8][..]),
            1 => any::<u32>(),
        ],
        prop_oneof![
            4 => 0u64..SECTORS + 2,
            1 => Just(u64::MAX / 512),
            1 => any::<u64>(),
        ],
    )
        .prop_map(|(k, s)| header(k, s))
}

/// Byte ranges the guest marked writable in `table` (16-byte descriptors read from `mem`),
/// following indirect descriptors one level down.
fn writable_ranges(
    mem: &GuestMemoryMmap,
    table: u64,
    n: u64,
    out: &mut Vec<(u64, u64)>,
    top: bool,
) {
    for i in 0..n {
        let mut d = [0u8; 16];
        let Some(at) = table.checked_add(16 * i) else {
            break;
        };
        if mem.read_slice(&mut d, GuestAddress(at)).is_err() {
            continue;
        }
        let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
        let len = u32::from_le_bytes(d[8..12].try_into().unwrap());
        let flags = u16::from_le_bytes(d[12..14].try_into().unwrap());
        if flags & 4 != 0 {
            if top {
                // virtio-queue takes at most u16::MAX entries from an indirect table.
                writable_ranges(mem, addr, u64::from(len / 16).min(0xffff), out, false);
            }
            continue;
        }
        if flags & F_WRITE != 0 {
            out.push((addr, addr.saturating_add(u64::from(len))));
        }
    }
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// Any extra arguments after the default command line (as `--append` adds them), with any
    /// number of devices the VMM supports.
    #[test]
    fn cmdline_with_any_extra_args(
        args in proptest::collection::vec(extra_arg(), 0..8),
        n_devices in 0usize..=20,
    ) {
        let mut base = DEFAULT_CMDLINE.to_string();
        for a in &args {
            base.push(' ');
            base.push_str(a);
        }
        check_cmdline(base, n_devices);
    }

    /// Any string at all as the whole command line (`--cmdline`, or `cmdline` in a config file).
    #[test]
    fn cmdline_any_string(
        base in prop_oneof![any::<String>(), "[ -~]{0,3000}", proptest::collection::vec(extra_arg(), 0..40).prop_map(|v| v.join(" "))],
        n_devices in 0usize..=20,
    ) {
        check_cmdline(base, n_devices);
    }

    /// Hostile descriptor tables and avail rings over random request headers: no panic, no hang,
    /// writes only into writable buffers and the used ring, the image neither grown nor (when
    /// read-only) changed, and every used entry names a descriptor and a length the chain holds.
    #[test]
    fn block_hostile_descriptor_chains(
        descs in proptest::collection::vec(raw_desc(), QUEUE as usize),
        heads in proptest::collection::vec(prop_oneof![4 => 0u16..QUEUE, 1 => any::<u16>()], 0..24),
        headers in proptest::collection::vec(request_header(), SLOTS as usize),
        garbage in proptest::collection::vec(any::<u8>(), 0..256),
        read_only in any::<bool>(),
    ) {
        let mut r = rig(read_only, "fuzz-disk");
        for (k, h) in headers.iter().enumerate() {
            let a = DATA + k as u64 * SLOT;
            r.ring.mem.write_slice(h, GuestAddress(a)).unwrap();
            // Garbage after the header: indirect tables and data read from it.
            r.ring.mem.write_slice(&garbage, GuestAddress(a + 16)).unwrap();
        }
        for (i, d) in descs.iter().enumerate() {
            r.ring.write_desc(i as u16, d.addr, d.len, d.flags, d.next);
        }
        for h in &heads {
            r.ring.publish(*h);
        }
        let before = snapshot(&r.ring.mem);
        let mut allowed = vec![used_ring()];
        writable_ranges(&r.ring.mem, RING, u64::from(QUEUE), &mut allowed, true);

        let what = format!("{descs:?} heads {heads:?}");
        let Rig { block, ring, mut disk, _file } = r;
        let (_block, ring) = bounded(what.clone(), move || {
            let mut block = block;
            block.process_queue(0);
            // Again: nothing new, nothing done twice.
            block.process_queue(0);
            (block, ring)
        });

        let after = snapshot(&ring.mem);
        // An indirect table the device wrote into (it lay in a writable buffer of an earlier
        // chain) counts as it was after, too.
        writable_ranges(&ring.mem, RING, u64::from(QUEUE), &mut allowed, true);
        for ((start, a), (_, b)) in before.iter().zip(&after) {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    let addr = start + i as u64;
                    prop_assert!(
                        allowed.iter().any(|(lo, hi)| (*lo..*hi).contains(&addr)),
                        "byte {addr:#x} written outside every writable buffer: {what}"
                    );
                }
            }
        }
        let used = ring.used_idx();
        prop_assert!(usize::from(used) <= heads.len(), "{used} used of {} offered", heads.len());
        for i in 0..used {
            let (id, _len) = ring.used(i);
            prop_assert!(id < u32::from(QUEUE), "used id {id}");
        }
        let now = disk_bytes(&mut disk);
        prop_assert_eq!(now.len() as u64, SECTORS * 512, "image size changed");
        if read_only {
            prop_assert!(now == image(), "read-only image written");
        }
    }

    /// Well-formed chains with random request type and sector, header and data descriptors of
    /// any length and direction, on a read-only or writable disk: the status byte, the used
    /// length, the data read and the image written are exactly what virtio-blk specifies.
    #[test]
    fn block_requests_follow_the_spec(
        hdr in request_header(),
        header_len in prop_oneof![4 => Just(16u32), 1 => 0u32..16, 1 => 17u32..40],
        data in proptest::collection::vec((prop_oneof![3 => (0u32..5).prop_map(|n| n * 512), 1 => 0u32..1100, 1 => Just(20u32)], any::<bool>()), 0..4),
        status_len in prop_oneof![4 => Just(1u32), 1 => Just(0u32), 1 => 2u32..4],
        fill in any::<u8>(),
        read_only in any::<bool>(),
    ) {
        let mut r = rig(read_only, "disk-serial-0123456789abcdef");
        let kind = u32::from_le_bytes(hdr[..4].try_into().unwrap());
        let sector = u64::from_le_bytes(hdr[8..].try_into().unwrap());
        let mut hbuf = hdr.to_vec();
        hbuf.resize(header_len as usize, 0);
        let h = r.ring.alloc(&hbuf);
        let mut bufs = vec![(h, header_len, false)];
        let mut data_addrs = Vec::new();
        for (len, w) in &data {
            let a = r.ring.alloc(&vec![fill; *len as usize]);
            bufs.push((a, *len, *w));
            data_addrs.push(a);
        }
        let st = r.ring.alloc(&vec![0xee; status_len as usize]);
        bufs.push((st, status_len, true));
        r.ring.add_chain(&bufs);

        let what = format!("kind {kind} sector {sector} header {header_len} data {data:?} status {status_len} ro {read_only}");
        let Rig { block, ring, mut disk, _file } = r;
        let (_block, ring) = bounded(what.clone(), move || {
            let mut block = block;
            block.process_queue(0);
            (block, ring)
        });
        prop_assert_eq!(ring.used_idx(), 1, "{}", what);
        let (_, used_len) = ring.used(0);
        let now = disk_bytes(&mut disk);

        // The model. The header is the first 16 readable bytes, wherever they lie; a write's
        // data is every readable byte after them.
        let mut stream = hbuf.clone();
        for (len, w) in &data {
            if !w {
                stream.extend(vec![fill; *len as usize]);
            }
        }
        let writable: u32 = status_len + data.iter().filter(|(_, w)| *w).map(|(l, _)| l).sum::<u32>();
        if writable == 0 {
            prop_assert_eq!(used_len, 0, "no room for a status: {}", what);
            prop_assert!(now == image());
            return Ok(());
        }
        let (kind, sector) = if stream.len() >= 16 {
            (
                u32::from_le_bytes(stream[..4].try_into().unwrap()),
                u64::from_le_bytes(stream[8..16].try_into().unwrap()),
            )
        } else {
            (kind, sector)
        };
        let room = u64::from(writable - 1);
        let in_range = |len: u64| {
            len.is_multiple_of(512)
                && sector
                    .checked_mul(512)
                    .and_then(|o| o.checked_add(len))
                    .is_some_and(|end| end <= SECTORS * 512)
        };
        let out_len = stream.len().saturating_sub(16) as u64;
        let (status, data_len) = if stream.len() < 16 {
            (request::S_IOERR, 0)
        } else {
            match kind {
                0 if in_range(room) => (request::S_OK, room),
                0 => (request::S_IOERR, 0),
                1 if !read_only && in_range(out_len) => (request::S_OK, 0),
                1 => (request::S_IOERR, 0),
                4 => (request::S_OK, 0),
                8 => (request::S_OK, room.min(request::ID_LEN as u64)),
                _ => (request::S_UNSUPP, 0),
            }
        };
        prop_assert_eq!(u64::from(used_len), data_len + 1, "used length: {}", what);
        // The status byte is the chain's last writable byte.
        let status_at = if status_len > 0 {
            st + u64::from(status_len) - 1
        } else {
            let (i, (len, _)) = data.iter().enumerate().rev().find(|(_, (l, w))| *w && *l > 0).unwrap();
            data_addrs[i] + u64::from(*len) - 1
        };
        prop_assert_eq!(ring.read(status_at, 1)[0], status, "status: {}", what);

        // What the guest got back, in its writable buffers (the status byte excluded).
        let mut got = Vec::new();
        for (i, (len, w)) in data.iter().enumerate() {
            if *w {
                got.extend(ring.read(data_addrs[i], *len as usize));
            }
        }
        got.extend(ring.read(st, status_len as usize));
        got.truncate(room as usize);
        let img = image();
        let expect_head: Vec<u8> = match (kind, status) {
            (0, request::S_OK) => img[(sector * 512) as usize..(sector * 512 + room) as usize].to_vec(),
            (8, request::S_OK) => {
                let mut id = b"disk-serial-0123456789abcdef"[..request::ID_LEN].to_vec();
                id.truncate(data_len as usize);
                id
            }
            _ => Vec::new(),
        };
        prop_assert_eq!(&got[..expect_head.len()], &expect_head[..], "data returned: {}", what);
        // Past what the device wrote, the buffers are as the guest left them.
        // (The data buffers held `fill`, the status buffer 0xee.)
        let untouched = got[expect_head.len()..].iter().all(|b| *b == fill || *b == 0xee);
        prop_assert!(untouched, "bytes past the data changed: {}", what);

        // The image: written exactly where a successful write said, nowhere else.
        let mut want = img.clone();
        if kind == 1 && status == request::S_OK {
            let src = &stream[16..];
            let at = (sector * 512) as usize;
            want[at..at + src.len()].copy_from_slice(src);
        }
        prop_assert!(now == want, "image: {}", what);
    }
}

/// A descriptor that points at itself, a ring whose heads all name one chain, and a chain as
/// long as the queue: finite, and nothing outside the chain written.
#[test]
fn block_loops_terminate() {
    let mut r = rig(false, "loop");
    let h = r.ring.alloc(&header(0, 0));
    r.ring.write_desc(0, h, 16, F_NEXT, 1);
    let b = r.ring.alloc(&[0u8; 512]);
    // 1 -> 1 -> 1 ...: a loop of writable 512-byte buffers.
    r.ring.write_desc(1, b, 512, F_WRITE | F_NEXT, 1);
    for _ in 0..QUEUE {
        r.ring.publish(0);
    }
    let Rig { block, ring, .. } = r;
    let (_block, ring) = bounded("loop".into(), move || {
        let mut block = block;
        block.process_queue(0);
        (block, ring)
    });
    assert_eq!(ring.used_idx(), QUEUE);
    for i in 0..QUEUE {
        // The loop is cut at the queue size: 15 buffers of 512 bytes, the last byte the status.
        let (id, len) = ring.used(i);
        assert_eq!(id, 0);
        assert!(len <= 15 * 512, "{len}");
    }
}

/// The limits themselves: the longest line the kernel keeps is taken, one byte more is refused
/// with the limit named, and so are the lines the kernel would misread.
#[test]
fn cmdline_limits_and_misreadings() {
    let one = slots(1);
    let room = KERNEL_COMMAND_LINE_SIZE - 1 - 1 - entry(&one[0]).len();
    let c = loader::build_cmdline(&"a".repeat(room), &one).unwrap();
    assert_eq!(
        c.as_cstring().unwrap().as_bytes_with_nul().len(),
        KERNEL_COMMAND_LINE_SIZE
    );
    let e = loader::build_cmdline(&"a".repeat(room + 1), &one)
        .unwrap_err()
        .to_string();
    assert!(e.contains("limit of 2047 bytes"), "{e}");
    for (bad, words) in [
        ("console=ttyS0 x=\"a b", "unbalanced double quote"),
        ("console=ttyS0 -- init-arg", "`--`"),
        ("console=ttyS0 \"--\"", "`--`"),
        ("console=ttyS0\tquiet", "printable ASCII"),
        ("console=ttyS0 caf\u{e9}", "printable ASCII"),
    ] {
        let e = loader::build_cmdline(bad, &one).unwrap_err().to_string();
        assert!(e.contains(words), "{bad:?}: {e}");
    }
    // Balanced quotes protect spaces, as the kernel reads them.
    let c = loader::build_cmdline("console=ttyS0 x=\"a b\" quiet", &one).unwrap();
    let s = c.as_cstring().unwrap().into_bytes();
    let (params, to_init) = kernel_params(&s);
    assert!(!to_init);
    assert_eq!(params[1], "x=a b");
    assert_eq!(params[3], entry(&one[0]));
}
