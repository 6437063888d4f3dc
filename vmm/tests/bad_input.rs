//! Bad input: each case gets one clear line on stderr, exit status 1, and leaves nothing behind
//! (no socket files; someone else's files untouched).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Asm, file, kvm_or_skip, run, stderr};

/// Runs moat-vmm with `args` plus vsock and API sockets in `dir`, expects failure with `needle`
/// in its one-line message, and checks that `dir` holds only `keep` afterwards.
fn refuses(dir: &Path, args: &[&str], needle: &str, keep: &[&str]) {
    let vsock = dir.join("v.sock");
    let api = dir.join("api.sock");
    let mut all: Vec<&str> = args.to_vec();
    let (v, a) = (vsock.to_str().unwrap(), api.to_str().unwrap());
    all.extend(["--vsock", v, "--api-sock", a]);
    let o = run(&all);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("moat-vmm: "), "{err}");
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    keep.sort();
    assert_eq!(left, keep, "{args:?} left files behind");
}

fn payload(dir: &Path) -> String {
    file(dir, "p", &Asm::new().announce_poweroff().reset().0)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn missing_or_non_kernel_images() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("vmlinux");
    refuses(
        d.path(),
        &["--kernel", missing.to_str().unwrap()],
        "does not exist",
        &[],
    );
    let text = file(d.path(), "notes.txt", b"this is not a kernel\n");
    refuses(
        d.path(),
        &["--kernel", text.to_str().unwrap()],
        "is not a kernel image",
        &["notes.txt"],
    );
    refuses(d.path(), &[], "no kernel given", &["notes.txt"]);
    let rd = d.path().join("initrd");
    refuses(
        d.path(),
        &[
            "--kernel",
            text.to_str().unwrap(),
            "--initramfs",
            rd.to_str().unwrap(),
        ],
        "initramfs",
        &["notes.txt"],
    );
}

#[test]
fn memory_too_small() {
    let d = tempfile::tempdir().unwrap();
    let p = payload(d.path());
    refuses(
        d.path(),
        &["--payload", &p, "--memory", "1M"],
        "too small",
        &["p"],
    );
    refuses(
        d.path(),
        &["--payload", &p, "--memory", "lots"],
        "not a size",
        &["p"],
    );
    if !kvm_or_skip("memory_too_small (initramfs)") {
        return;
    }
    // An initramfs that does not fit next to the payload.
    let big = file(d.path(), "big", &vec![0u8; 6 << 20]);
    refuses(
        d.path(),
        &[
            "--payload",
            &p,
            "--memory",
            "4M",
            "--initramfs",
            big.to_str().unwrap(),
        ],
        "too small",
        &["p", "big"],
    );
}

#[test]
fn socket_path_already_taken_is_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let p = payload(d.path());
    file(d.path(), "v.sock", b"someone else's");
    refuses(
        d.path(),
        &["--payload", &p],
        "already taken",
        &["p", "v.sock"],
    );
    assert_eq!(
        std::fs::read(d.path().join("v.sock")).unwrap(),
        b"someone else's"
    );
}

#[test]
fn kvm_device_missing_or_not_writable() {
    let d = tempfile::tempdir().unwrap();
    let p = payload(d.path());
    let nokvm = d.path().join("kvm");
    refuses(
        d.path(),
        &["--payload", &p, "--kvm-device", nokvm.to_str().unwrap()],
        "does not exist",
        &["p"],
    );
    // Not writable: run as an unprivileged user (needs root to switch, and setpriv).
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !root || !setpriv || !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: not-writable /dev/kvm case needs root, setpriv and /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = file(dir.path(), "p", &Asm::new().reset().0);
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(common::vmm())
        .args(["--payload", p.to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr(&o);
    if o.status.code() == Some(0) {
        eprintln!("SKIPPED: /dev/kvm is writable by nobody here");
        return;
    }
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not writable by this user"), "{err}");
}

#[test]
fn cpuid_the_host_rejects() {
    if !kvm_or_skip("cpuid_rejected") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = payload(d.path());
    // KVM only accepts 48- or 57-bit virtual addresses (CPUID 0x80000008 EAX[15:8]).
    refuses(
        d.path(),
        &["--payload", &p, "--cpuid", "0x80000008:eax=0x2828"],
        "KVM rejected the CPUID",
        &["p"],
    );
    refuses(
        d.path(),
        &["--payload", &p, "--cpuid", "0x1:esp=1"],
        "malformed",
        &["p"],
    );
}

#[test]
fn linux_guest_on_a_pvm_host_points_at_the_rig() {
    if moat_host::kvm::probe().flavour != moat_host::kvm::Flavour::Pvm {
        eprintln!("SKIPPED: /dev/kvm is not PVM here");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let pvh = common::elf::Note {
        name: "Xen",
        kind: 18,
        desc: &0x100000u32.to_le_bytes(),
    };
    let k = file(
        d.path(),
        "vmlinux",
        &common::elf::elf64(&[0xf4], 0x100000, 0x100000, &[pvh]),
    );
    refuses(
        d.path(),
        &["--kernel", k.to_str().unwrap()],
        "moat-rig run",
        &["vmlinux"],
    );
    // The floor benchmark still works there.
    let o = run(&["--kernel", k.to_str().unwrap(), "--dry-boot"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn bad_config_files() {
    let d = tempfile::tempdir().unwrap();
    let c = file(d.path(), "vm.json", br#"{"kernal": "/boot/vmlinuz"}"#);
    refuses(
        d.path(),
        &["--config", c.to_str().unwrap()],
        "kernal",
        &["vm.json"],
    );
    let missing = d.path().join("none.toml");
    refuses(
        d.path(),
        &["--config", missing.to_str().unwrap()],
        "cannot read config file",
        &["vm.json"],
    );
}
