//! Reference boots of moat's guest: QEMU `-M microvm` boots the guest kernel and the initramfs with
//! `moat-agent` as `/init`, the agent reports ready and the guest's own `uname -r`, then powers off.
//!
//! - TCG, on this host (no KVM needed).
//! - KVM: directly where `/dev/kvm` is hardware KVM, else inside the KVM rig (moat_rig::harness).
//!
//! The kernel and initramfs come through moat's build cache (the first run builds the kernel: minutes).
//! `MOAT_BOOT_RUNS=N` boots N times and prints the median of process start -> agent ready.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use moat_artifacts::guest::{self, GuestInitramfs};
use moat_artifacts::kernel::{self, KernelArtifacts};
use moat_artifacts::reference_boot::{Accel, QemuBoot, median, qemu_binary};

fn have_qemu() -> bool {
    std::process::Command::new(qemu_binary())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The artifacts: built (or found) through the cache here; only looked up inside the rig, where the
/// source tree is read-only and the host already built them.
fn artifacts() -> (KernelArtifacts, GuestInitramfs) {
    if moat_rig::harness::inside_rig() {
        let k = match kernel::status() {
            kernel::Status::Built(k) => k,
            s => panic!("inside the rig the kernel must already be built: {s:?}"),
        };
        let g = match guest::status() {
            guest::Status::Built(g) => g,
            s => panic!("inside the rig the initramfs must already be built: {s:?}"),
        };
        return (k, g);
    }
    (kernel::build().unwrap(), guest::initramfs().unwrap())
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

/// Boots `runs` times; checks each boot; prints the median time to ready.
fn boot_and_check(accel: Accel, k: &KernelArtifacts, g: &GuestInitramfs, label: &str) {
    let runs: usize = std::env::var("MOAT_BOOT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut boot = QemuBoot::new(accel);
    boot.timeout = Duration::from_secs(300);
    let mut ready = Vec::new();
    for _ in 0..runs {
        let r = boot.run(&k.vmlinux, &g.initramfs).unwrap();
        assert!(
            r.ready.is_some(),
            "no ready line from the agent; console:\n{}\nqemu: {}",
            r.console,
            r.qemu_stderr
        );
        let uname = r.uname.clone().expect("the agent did not report uname -r");
        assert_eq!(uname, k.version, "the guest runs another kernel");
        assert_ne!(
            uname,
            host_release(),
            "the guest reported the host's kernel"
        );
        assert!(
            r.status.is_some_and(|s| s.success()),
            "QEMU did not exit cleanly ({:?}); console:\n{}\nqemu: {}",
            r.status,
            r.console,
            r.qemu_stderr
        );
        assert!(r.console.contains("powering off"), "{}", r.console);
        ready.push(r.ready.unwrap());
    }
    let m = median(ready.clone()).unwrap();
    eprintln!(
        "{label}: process start -> agent ready, median of {runs}: {:.0} ms (all: {:?})",
        m.as_secs_f64() * 1000.0,
        ready.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
}

#[test]
fn tcg_boot_reaches_the_agent_and_reports_the_guest_kernel() {
    if !have_qemu() {
        eprintln!(
            "SKIPPED: {} is not installed (scripts/deps.sh)",
            qemu_binary().display()
        );
        return;
    }
    if moat_rig::harness::inside_rig() {
        // This test is the host's; inside the rig only the KVM one runs.
        return;
    }
    let (k, g) = artifacts();
    boot_and_check(Accel::Tcg, &k, &g, "QEMU microvm TCG (host)");
}

#[test]
fn kvm_boot_reaches_the_agent_here_or_in_the_rig() {
    if !have_qemu() {
        eprintln!(
            "SKIPPED: {} is not installed (scripts/deps.sh)",
            qemu_binary().display()
        );
        return;
    }
    // Build on the host first, so the rig finds everything in the shared cache.
    let (k, g) = artifacts();
    moat_rig::harness::run_here_or_in_rig(|| {
        boot_and_check(Accel::Kvm, &k, &g, "QEMU microvm KVM (rig or hardware)");
    });
}
