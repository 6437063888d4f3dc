//! KVM-level tests with tiny payloads (a few instructions, no Linux): they run directly on the
//! host's `/dev/kvm`, hardware or PVM. They cover the boot path into 64-bit mode, the port-I/O and
//! MMIO exits, the serial console, the boot timer, every way a VM ends, the control API, the
//! per-thread seccomp filters and the jail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Asm, file, kvm_or_skip, run, stderr, stdout, vmm};

#[test]
fn clean_power_off_exits_zero_with_the_console_on_stdout() {
    if !kvm_or_skip("clean_power_off") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = file(
        d.path(),
        "p",
        &Asm::new()
            .print("hello\n")
            .ready()
            .announce_poweroff()
            .reset()
            .0,
    );
    let o = run(&["--payload", p.to_str().unwrap(), "--memory", "8M"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
}

#[test]
fn elf_payload_goes_through_the_kernel_loader() {
    if !kvm_or_skip("elf_payload") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let code = Asm::new().print("elf\n").announce_poweroff().reset().0;
    let p = file(
        d.path(),
        "k",
        &common::elf::elf64(&code, 0x20_0000, 0x20_0000, &[]),
    );
    let log = d.path().join("console");
    let o = run(&[
        "--kernel",
        p.to_str().unwrap(),
        "--memory",
        "8M",
        "--serial",
        log.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(log).unwrap(), "elf\n");
}

#[test]
fn triple_fault_is_a_crash_with_status_3() {
    if !kvm_or_skip("triple_fault") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = file(d.path(), "p", &Asm::new().ud2().0);
    let o = run(&["--payload", p.to_str().unwrap(), "--memory", "8M"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("triple fault"), "{}", stderr(&o));
}

#[test]
fn reset_without_announcement_is_a_failure_unless_the_boot_timer_is_off() {
    if !kvm_or_skip("unannounced_reset") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = file(d.path(), "p", &Asm::new().reset().0);
    let o = run(&["--payload", p.to_str().unwrap(), "--memory", "8M"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("without announcing a power-off"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "--payload",
        p.to_str().unwrap(),
        "--memory",
        "8M",
        "--no-boot-timer",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn panic_on_the_console_makes_the_reset_a_panic() {
    if !kvm_or_skip("panic") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let code = Asm::new()
        .print("Kernel panic - not syncing: VFS: Unable to mount root fs\n")
        .announce_poweroff()
        .reset()
        .0;
    let p = file(d.path(), "p", &code);
    let o = run(&[
        "--payload",
        p.to_str().unwrap(),
        "--memory",
        "8M",
        "--serial",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Unable to mount root fs"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn mmio_reads_reach_the_virtio_transport() {
    if !kvm_or_skip("mmio") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = file(d.path(), "img", &[0u8; 4096]);
    // Magic at +0, version at +4, device id (2 = block) at +8.
    let code = Asm::new()
        .print_u32_at(0xd000_0000)
        .print_u32_at(0xd000_0004)
        .print_u32_at(0xd000_0008)
        .print_u32_at(0xd000_1000) // no device there: reads as zero
        .announce_poweroff()
        .reset()
        .0;
    let p = file(d.path(), "p", &code);
    let spec = format!("{},ro", img.display());
    let o = run(&[
        "--payload",
        p.to_str().unwrap(),
        "--memory",
        "8M",
        "--block",
        &spec,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, b"virt\x02\0\0\0\x02\0\0\0\0\0\0\0");
}

fn ask(s: &mut UnixStream, r: &mut BufReader<UnixStream>, cmd: &str) -> serde_json::Value {
    writeln!(s, "{cmd}").unwrap();
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    serde_json::from_str(&l).unwrap()
}

fn wait_for(path: &std::path::Path) {
    let until = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every thread's `Seccomp:` line and name.
fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        out.push((field("Name:"), field("Seccomp:")));
    }
    out.sort();
    out
}

#[test]
fn api_pause_resume_metrics_stop_with_seccomp_on_every_thread() {
    if !kvm_or_skip("api") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = file(d.path(), "p", &Asm::new().ready().spin().0);
    let api = d.path().join("api.sock");
    let vsock = d.path().join("v.sock");
    let mut child = Command::new(vmm())
        .args([
            "--payload",
            p.to_str().unwrap(),
            "--memory",
            "8M",
            "--vcpus",
            "2",
        ])
        .arg("--api-sock")
        .arg(&api)
        .arg("--vsock")
        .arg(&vsock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&api);
    let mut s = UnixStream::connect(&api).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(ask(&mut s, &mut r, "ping")["ok"], true);

    // main (event loop), two vCPUs, the API thread: all filtered once they run. (KVM may add its
    // own worker thread, `kvm-nx-lpage-recovery`, to the process; it inherits its creator's filter.)
    let until = Instant::now() + Duration::from_secs(20);
    let modes = loop {
        let modes: Vec<(String, String)> = seccomp_modes(child.id())
            .into_iter()
            .filter(|(n, _)| !n.starts_with("kvm-"))
            .collect();
        if modes.len() == 4 && modes.iter().all(|(_, m)| m == "2") || Instant::now() > until {
            break modes;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let names: Vec<&str> = modes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["api", "moat-vmm", "vcpu0", "vcpu1"], "{modes:?}");
    assert!(modes.iter().all(|(_, m)| m == "2"), "{modes:?}");

    let m = ask(&mut s, &mut r, "metrics");
    assert!(m["metrics"]["boot_ready_us"].as_u64().unwrap() > 0, "{m}");
    assert!(
        m["metrics"]["exits"]["io_out"].as_u64().unwrap() >= 1,
        "{m}"
    );
    assert_eq!(ask(&mut s, &mut r, "pause")["ok"], true);
    assert_eq!(ask(&mut s, &mut r, "metrics")["metrics"]["paused"], true);
    assert_eq!(ask(&mut s, &mut r, "resume")["ok"], true);
    assert_eq!(ask(&mut s, &mut r, "metrics")["metrics"]["paused"], false);
    assert_eq!(ask(&mut s, &mut r, "bogus")["ok"], false);
    assert_eq!(ask(&mut s, &mut r, "stop")["ok"], true);
    let o = common::wait_with_deadline(child_take(&mut child), Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !api.exists() && !vsock.exists(),
        "sockets are removed at exit"
    );
}

fn child_take(c: &mut std::process::Child) -> std::process::Child {
    // Move the child out for wait_with_deadline (which consumes it).
    std::mem::replace(c, Command::new("true").spawn().unwrap())
}

#[test]
fn jailed_vmm_runs_without_capabilities_in_its_directory() {
    if !kvm_or_skip("jail") {
        return;
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: jail: needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let jail = d.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let p = file(d.path(), "p", &Asm::new().ready().spin().0);
    let api = jail.join("api.sock");
    let mut child = Command::new(vmm())
        .args(["--payload", p.to_str().unwrap(), "--memory", "8M"])
        .arg("--jail")
        .arg(&jail)
        .arg("--api-sock")
        .arg(&api)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&api);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(cap)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"));
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let its_ns = std::fs::read_link(format!("/proc/{}/ns/mnt", child.id())).unwrap();
    assert_ne!(own_ns, its_ns, "the VMM has its own mount namespace");
    // Its root is the jail: nothing else is visible to it.
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{}/root", child.id()))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(root, vec![std::ffi::OsString::from("api.sock")]);
    let mut s = UnixStream::connect(&api).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(ask(&mut s, &mut r, "stop")["ok"], true);
    let o = common::wait_with_deadline(child_take(&mut child), Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!api.exists());
}

#[test]
fn dry_boot_sets_everything_up_and_exits_zero() {
    if !kvm_or_skip("dry_boot") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = file(d.path(), "p", &Asm::new().ud2().0);
    let o = run(&[
        "--payload",
        p.to_str().unwrap(),
        "--memory",
        "64M",
        "--vcpus",
        "4",
        "--dry-boot",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
