//! Round trips through a small `newc` reader, determinism, bad input, and GNU cpio reading our output.

use super::*;
use std::os::unix::fs::FileTypeExt;
use std::process::Command;

/// One entry as read back from an archive.
#[derive(Debug, PartialEq)]
struct Parsed {
    name: String,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// Parses a bare `newc` archive strictly: magic, 4-byte alignment of headers and data, a final
/// `TRAILER!!!` followed only by padding.
fn parse(bytes: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        assert_eq!(pos % 4, 0, "header at {pos} not aligned");
        let h = &bytes[pos..pos + 110];
        assert_eq!(&h[..6], NEWC_MAGIC, "bad magic at {pos}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let namesize = field(11) as usize;
        let filesize = field(6) as usize;
        assert_eq!(field(12), 0, "check field must be 0");
        let name_start = pos + 110;
        let name = &bytes[name_start..name_start + namesize];
        assert_eq!(name.last(), Some(&0), "name not NUL-terminated");
        let name = String::from_utf8(name[..namesize - 1].to_vec()).unwrap();
        let data_start = (name_start + namesize).next_multiple_of(4);
        let data = bytes[data_start..data_start + filesize].to_vec();
        pos = (data_start + filesize).next_multiple_of(4);
        if name == TRAILER {
            assert!(bytes[pos.min(bytes.len())..].iter().all(|b| *b == 0));
            assert_eq!(pos, bytes.len(), "trailing bytes after the trailer");
            return out;
        }
        out.push(Parsed {
            name,
            ino: field(0),
            mode: field(1),
            uid: field(2),
            gid: field(3),
            nlink: field(4),
            mtime: field(5),
            rdev: (field(9), field(10)),
            data,
        });
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn sample(host_file: &Path) -> Initramfs {
    let mut fs = Initramfs::new();
    fs.char_dev("/dev/console", 0o600, 5, 1)
        .block_dev("dev/vda", 0o660, 254, 0)
        .dir("/proc", 0o555)
        .file("/init", 0o755, host_file)
        .file_bytes("/etc/motd", 0o644, b"hello".to_vec())
        .file_bytes("/empty", 0o600, Vec::new())
        .symlink("/bin/sh", "busybox")
        .dir("/tmp", 0o1777)
        .chown("/etc/motd", 1000, 100);
    fs
}

#[test]
fn round_trip_keeps_every_kind_and_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("agent");
    fs::write(&host, b"\x7fELF-ish binary").unwrap();
    let parsed = parse(&sample(&host).to_bytes(Compression::None).unwrap());

    let names: Vec<&str> = parsed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/sh",
            "dev",
            "dev/console",
            "dev/vda",
            "empty",
            "etc",
            "etc/motd",
            "init",
            "proc",
            "tmp"
        ]
    );
    let inos: Vec<u32> = parsed.iter().map(|p| p.ino).collect();
    assert_eq!(inos, (1..=11).collect::<Vec<_>>());
    let get = |n: &str| parsed.iter().find(|p| p.name == n).unwrap();

    assert_eq!(get("bin").mode, S_IFDIR | 0o755, "implicit parent");
    assert_eq!(get("bin").nlink, 2);
    assert_eq!(get("bin/sh").mode, S_IFLNK | 0o777);
    assert_eq!(get("bin/sh").data, b"busybox");
    assert_eq!(get("dev/console").mode, S_IFCHR | 0o600);
    assert_eq!(get("dev/console").rdev, (5, 1));
    assert_eq!(get("dev/vda").mode, S_IFBLK | 0o660);
    assert_eq!(get("dev/vda").rdev, (254, 0));
    assert_eq!(get("empty").data, b"");
    assert_eq!(get("etc/motd").data, b"hello");
    assert_eq!((get("etc/motd").uid, get("etc/motd").gid), (1000, 100));
    assert_eq!((get("init").uid, get("init").gid), (0, 0));
    assert_eq!(get("init").mode, S_IFREG | 0o755);
    assert_eq!(get("init").data, b"\x7fELF-ish binary");
    assert_eq!(get("proc").mode, S_IFDIR | 0o555);
    assert_eq!(get("tmp").mode, S_IFDIR | 0o1777);
    assert!(parsed.iter().all(|p| p.mtime == 0));
}

#[test]
fn output_is_deterministic_and_independent_of_insertion_order() {
    let mut a = Initramfs::new();
    a.file_bytes("/x/1", 0o644, b"1".to_vec())
        .symlink("/x/2", "1")
        .dir("/y", 0o700);
    let mut b = Initramfs::new();
    b.dir("/y", 0o700)
        .symlink("x/2", "1")
        .file_bytes("//x/1/", 0o644, b"1".to_vec());
    for c in [Compression::None, Compression::Gzip] {
        assert_eq!(a.to_bytes(c).unwrap(), b.to_bytes(c).unwrap());
        assert_eq!(a.to_bytes(c).unwrap(), a.to_bytes(c).unwrap());
    }
}

#[test]
fn gzip_round_trip_and_mtime() {
    let mut fs = Initramfs::new();
    fs.mtime(1_700_000_000)
        .file_bytes("/a", 0o644, vec![7u8; 100_000]);
    let gz = fs.to_bytes(Compression::Gzip).unwrap();
    assert_eq!(&gz[..2], b"\x1f\x8b");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip header carries no time");
    assert!(gz.len() < 10_000, "compressed: {} bytes", gz.len());
    let parsed = parse(&gunzip(&gz));
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].data, vec![7u8; 100_000]);
    assert_eq!(parsed[0].mtime, 1_700_000_000);
}

#[test]
fn later_entry_replaces_earlier_one() {
    let mut fs = Initramfs::new();
    fs.file_bytes("/a", 0o644, b"old".to_vec())
        .file_bytes("/a", 0o600, b"new".to_vec());
    let parsed = parse(&fs.to_bytes(Compression::None).unwrap());
    assert_eq!(parsed.len(), 1);
    assert_eq!(
        (parsed[0].mode, parsed[0].data.as_slice()),
        (S_IFREG | 0o600, &b"new"[..])
    );
}

#[test]
fn tree_copies_a_host_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("lib/sub")).unwrap();
    fs::write(root.join("lib/sub/m.ko"), b"module").unwrap();
    fs::set_permissions(root.join("lib/sub/m.ko"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("sub/m.ko", root.join("lib/link")).unwrap();
    let mut fs = Initramfs::new();
    fs.tree("/usr", &root).unwrap();
    let parsed = parse(&fs.to_bytes(Compression::None).unwrap());
    let names: Vec<&str> = parsed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "usr",
            "usr/lib",
            "usr/lib/link",
            "usr/lib/sub",
            "usr/lib/sub/m.ko"
        ]
    );
    assert_eq!(parsed[4].mode, S_IFREG | 0o640);
    assert_eq!(parsed[4].data, b"module");
    assert_eq!(parsed[2].data, b"sub/m.ko");
}

#[test]
fn bad_input_is_rejected_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.cpio");
    let cases: Vec<(Initramfs, &str)> = vec![
        (
            {
                let mut f = Initramfs::new();
                f.dir("/a/../b", 0o755);
                f
            },
            "`..`",
        ),
        (
            {
                let mut f = Initramfs::new();
                f.dir("/", 0o755);
                f
            },
            "archive root",
        ),
        (
            {
                let mut f = Initramfs::new();
                f.symlink("/l", "");
                f
            },
            "target is empty",
        ),
        (
            {
                let mut f = Initramfs::new();
                f.file_bytes("/a", 0o644, vec![]).dir("/a/b", 0o755);
                f
            },
            "needs \"a\" to be a directory",
        ),
        (
            {
                let mut f = Initramfs::new();
                f.chown("/nope", 1, 1);
                f
            },
            "no such entry",
        ),
        (
            {
                let mut f = Initramfs::new();
                f.file("/init", 0o755, dir.path().join("missing"));
                f
            },
            "No such file",
        ),
        (
            {
                let mut f = Initramfs::new();
                f.file("/d", 0o755, dir.path());
                f
            },
            "not a regular file",
        ),
    ];
    for (fs, want) in cases {
        let err = fs.write(&out, Compression::Gzip).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn write_publishes_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("initramfs.cpio.gz");
    let mut fs = Initramfs::new();
    fs.file_bytes("/init", 0o755, b"#!/bin/sh\n".to_vec());
    fs.write(&out, Compression::Gzip).unwrap();
    assert_eq!(
        fs::read(&out).unwrap(),
        fs.to_bytes(Compression::Gzip).unwrap()
    );
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("initramfs.cpio.gz")]);
}

/// GNU cpio (Debian's `cpio`) lists and extracts what we write, with the same types, modes,
/// owners, contents and device numbers.
#[test]
fn gnu_cpio_lists_and_extracts_it() {
    if Command::new("cpio").arg("--version").output().is_err() {
        eprintln!("SKIPPED: GNU cpio is not installed (apt-get install cpio)");
        return;
    }
    if fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("SKIPPED: extracting device nodes and owners needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("agent");
    fs::write(&host, b"agent bytes").unwrap();
    let archive = dir.path().join("a.cpio");
    sample(&host).write(&archive, Compression::None).unwrap();

    let list = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    let listed: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(listed.len(), 11, "{listed:?}");
    assert!(listed.contains(&"dev/console".to_string()));

    let dest = dir.path().join("x");
    fs::create_dir(&dest).unwrap();
    let ex = Command::new("cpio")
        .args([
            "-i",
            "--quiet",
            "--make-directories",
            "--no-absolute-filenames",
        ])
        .args(["--preserve-modification-time", "-F"])
        .arg(&archive)
        .current_dir(&dest)
        .output()
        .unwrap();
    assert!(ex.status.success(), "{ex:?}");
    assert_eq!(fs::read(dest.join("init")).unwrap(), b"agent bytes");
    assert_eq!(fs::read(dest.join("etc/motd")).unwrap(), b"hello");
    let meta = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap();
    assert_eq!(meta("init").mode() & 0o7777, 0o755);
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(
        (meta("etc/motd").uid(), meta("etc/motd").gid()),
        (1000, 100)
    );
    assert_eq!(meta("etc/motd").mtime(), 0);
    assert_eq!(
        fs::read_link(dest.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let console = meta("dev/console");
    assert!(console.file_type().is_char_device());
    assert_eq!(console.rdev(), makedev(5, 1));
    let vda = meta("dev/vda");
    assert!(vda.file_type().is_block_device());
    assert_eq!(vda.rdev(), makedev(254, 0));
}

/// Linux's `dev_t` encoding for small major/minor numbers.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
}
