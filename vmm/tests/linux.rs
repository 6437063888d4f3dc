//! Tests that boot Linux: moat's kernel with moat-agent, and with the `probe` test init (vsock both
//! ways, guest-initiated connections, a file from a virtio-blk image). They run directly where
//! `/dev/kvm` is hardware KVM and inside the KVM rig elsewhere (`moat_rig::harness`). The kernel is
//! built through moat's cache on first use (minutes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::guest;

/// The command line the reference boots use, plus the agent's uname self-test.
fn agent_cmdline() -> String {
    format!(
        "{} {}={}",
        moat_artifacts::guest::BASE_CMDLINE,
        moat_abi::cmdline::SELFTEST,
        moat_abi::selftest::UNAME
    )
}

fn boot_agent(kernel: &Path, initramfs: &Path, release: &str) {
    let started = Instant::now();
    let child = Command::new(common::vmm())
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initramfs)
        .args([
            "--memory",
            "256M",
            "--vcpus",
            "2",
            "--cmdline",
            &agent_cmdline(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = common::wait_with_deadline(child, Duration::from_secs(300));
    let console = common::stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "console:\n{console}\nstderr: {}",
        common::stderr(&o)
    );
    assert!(console.contains(moat_abi::READY_LINE), "{console}");
    let uname = format!("{}{release}", moat_abi::selftest::UNAME_LINE_PREFIX);
    assert!(console.contains(&uname), "{console}");
    eprintln!(
        "{} booted to ready and powered off in {:.2} s",
        kernel.display(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn agent_boots_to_ready_and_powers_off_from_vmlinux_and_bzimage() {
    let (k, g) = guest::agent_artifacts();
    moat_rig::harness::run_here_or_in_rig(|| {
        boot_agent(&k.vmlinux, &g.initramfs, &k.version);
        boot_agent(&k.bz_image, &g.initramfs, &k.version);
    });
}

/// Waits until the console file contains `needle`.
fn wait_console(path: &Path, needle: &str, child: &mut std::process::Child) -> String {
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("moat-vmm exited ({status}) before '{needle}'; console:\n{text}");
        }
        if text.contains("probe: FAILED") || Instant::now() > until {
            let _ = child.kill();
            panic!("no '{needle}' on the console:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A deterministic byte stream.
fn pattern(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8 ^ (i as u8)
}

const STREAM: u64 = 64 << 20;

#[test]
fn vsock_streams_64_mib_both_ways_guest_connects_and_reads_a_blk_file() {
    let (k, _) = guest::agent_artifacts();
    let probe = guest::probe_initramfs();
    moat_rig::harness::run_here_or_in_rig(|| {
        let d = tempfile::tempdir().unwrap();
        // An ext4 image with one file.
        let tree = d.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("hello.txt"), "moat blk test\n").unwrap();
        let img = d.path().join("disk.img");
        let mk = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("8M")
            .output()
            .unwrap();
        assert!(
            mk.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&mk.stderr)
        );

        let sock = d.path().join("v.sock");
        let api = d.path().join("api.sock");
        let console = d.path().join("console.log");
        let host_listener = UnixListener::bind(d.path().join("v.sock_2000")).unwrap();
        let mut child = Command::new(common::vmm())
            .arg("--kernel")
            .arg(&k.vmlinux)
            .arg("--initramfs")
            .arg(&probe)
            .args(["--memory", "256M", "--vcpus", "2"])
            .args(["--cmdline", "console=ttyS0 reboot=k panic=-1 quiet"])
            .arg("--block")
            .arg(format!("{},ro", img.display()))
            .arg("--vsock")
            .arg(&sock)
            .arg("--api-sock")
            .arg(&api)
            .arg("--serial")
            .arg(&console)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let text = wait_console(&console, "probe: listening", &mut child);
        assert!(text.contains("probe: file: moat blk test"), "{text}");

        // Every thread of the running VMM is under its seccomp filter.
        for t in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
            let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
            assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
        }

        // Host -> guest CONNECT 1024, then 64 MiB each way (the guest echoes).
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(b"CONNECT 1024\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut ok = String::new();
        r.read_line(&mut ok).unwrap();
        assert!(ok.starts_with("OK ") && ok.ends_with('\n'), "{ok:?}");
        let started = Instant::now();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut off = 0u64;
            while off < STREAM {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = pattern(off + i as u64);
                }
                w.write_all(&buf).unwrap();
                off += buf.len() as u64;
            }
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    *b,
                    pattern(got + i as u64),
                    "byte {} differs",
                    got + i as u64
                );
            }
            got += n as u64;
        }
        writer.join().unwrap();
        assert_eq!(got, STREAM, "echo stream length");
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "vsock: 64 MiB each way in {secs:.1} s ({:.1} MiB/s each way)",
            64.0 / secs
        );

        // Guest -> host: the guest connects to host port 2000 (<socket>_2000).
        let (mut peer, _) = host_listener.accept().unwrap();
        let mut hello = String::new();
        BufReader::new(peer.try_clone().unwrap())
            .read_line(&mut hello)
            .unwrap();
        assert_eq!(hello, "hello from the guest\n");
        peer.write_all(b"hello from the host\n").unwrap();
        drop(peer);

        let o = common::wait_with_deadline(child, Duration::from_secs(120));
        let text = std::fs::read_to_string(&console).unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "console:\n{text}\nstderr: {}",
            common::stderr(&o)
        );
        assert!(
            text.contains(&format!("probe: echoed {STREAM} bytes")),
            "{text}"
        );
        assert!(
            text.contains("probe: host said: hello from the host"),
            "{text}"
        );
        assert!(!sock.exists() && !api.exists(), "sockets removed");
    });
}
