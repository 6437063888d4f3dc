//! Guest artifacts for the Linux tests: moat's kernel and agent initramfs (moat-artifacts), and the
//! `probe` initramfs built here from `tests/guest/probe.rs`. Built on the host through moat's cache;
//! inside the rig (read-only source tree, slow CPU) they are only looked up.

use std::path::PathBuf;
use std::process::Command;

use moat_artifacts::cache::{Cache, KeyBuilder};
use moat_artifacts::guest::{self, GuestInitramfs};
use moat_artifacts::initramfs::{Compression, Initramfs};
use moat_artifacts::kernel::{self, KernelArtifacts};

/// The probe's source.
const PROBE_SRC: &str = include_str!("../guest/probe.rs");

/// Kernel and agent initramfs.
pub fn agent_artifacts() -> (KernelArtifacts, GuestInitramfs) {
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

/// The probe initramfs (`/init` = probe).
pub fn probe_initramfs() -> PathBuf {
    let cache = Cache::new("vmm-probe-initramfs");
    let key = KeyBuilder::new("moat-vmm-probe-v1")
        .add_str(PROBE_SRC)
        .finish();
    if moat_rig::harness::inside_rig() {
        let dir = cache
            .lookup(&key)
            .unwrap()
            .expect("inside the rig the probe initramfs must already be built");
        return dir.join("initramfs.cpio");
    }
    let dir = cache
        .get_or_build(&key, |out| -> Result<(), String> {
            let src = out.join("probe.rs");
            std::fs::write(&src, PROBE_SRC).map_err(|e| e.to_string())?;
            let bin = out.join("probe");
            let o = Command::new("rustc")
                .args([
                    "--edition",
                    "2024",
                    "-O",
                    "-C",
                    "target-feature=+crt-static",
                ])
                .args([
                    "-C",
                    "strip=symbols",
                    "-C",
                    "panic=abort",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                ])
                .arg(&src)
                .arg("-o")
                .arg(&bin)
                .output()
                .map_err(|e| format!("cannot run rustc: {e}"))?;
            if !o.status.success() {
                return Err(format!(
                    "rustc probe.rs: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            let mut fs = Initramfs::new();
            fs.file("/init", 0o755, &bin)
                .dir("/dev", 0o755)
                .char_dev("/dev/console", 0o600, 5, 1)
                .dir("/mnt", 0o755);
            fs.write(&out.join("initramfs.cpio"), Compression::None)
                .map_err(|e| e.to_string())?;
            std::fs::remove_file(&src).map_err(|e| e.to_string())
        })
        .unwrap();
    dir.join("initramfs.cpio")
}
