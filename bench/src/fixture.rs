//! The one rootfs every sandbox of a run uses — moat's busybox test image plus the static
//! `moat-bench-probe` — and the OCI bundles around it, one per command. Every runtime gets the same
//! bundle (containerd's default spec, as `ctr run` would make it), so the rows differ only in the
//! wall.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, Mount, MountBuilder, Process, Spec};

use crate::{Error, Result};

/// The probe's path inside the rootfs.
pub const PROBE: &str = "/bin/moat-bench-probe";
/// A file every policy allows and `syscall.openat_close` opens.
pub const ALLOWED_FILE: &str = "/etc/moat-bench-allowed";

/// A temporary directory holding the rootfs and the bundles; removed when dropped.
pub struct Fixture {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    bundles: std::cell::Cell<usize>,
}

/// Limits and mounts of one bundle.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// cgroup memory limit, MiB.
    pub memory_mib: Option<u64>,
    /// cgroup pids limit.
    pub pids: Option<i64>,
    /// A tmpfs of this many MiB at `/tmp` (for the tmpfs I/O rows).
    pub tmpfs_mib: Option<u64>,
}

impl Fixture {
    /// Builds the rootfs from moat's busybox image (cached) and the probe (`probe`: a static
    /// binary, see `moat_artifacts::static_bin`).
    pub fn new(probe: &Path) -> Result<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("moat-bench-")
            .tempdir()
            .map_err(|e| Error::Io("creating a temp dir for the bench rootfs".into(), e))?;
        let rootfs = dir.path().join("rootfs");
        let image = moat_artifacts::image::busybox()
            .map_err(|e| Error::Setup(format!("the busybox test image: {e}")))?;
        image
            .copy_rootfs(&rootfs)
            .map_err(|e| Error::Setup(format!("copying the busybox rootfs: {e}")))?;
        let inside = |p: &str| rootfs.join(p.trim_start_matches('/'));
        std::fs::copy(probe, inside(PROBE))
            .map_err(|e| Error::Io(format!("copying {} into the rootfs", probe.display()), e))?;
        std::fs::write(inside(ALLOWED_FILE), "moat bench\n")
            .map_err(|e| Error::Io(format!("writing {ALLOWED_FILE}"), e))?;
        Ok(Fixture {
            dir,
            rootfs,
            bundles: std::cell::Cell::new(0),
        })
    }

    /// The rootfs directory (shared, read-only in every bundle except where noted).
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// The fixture's directory (for state roots and scratch files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a bundle running `args` with `limits`; returns its directory.
    pub fn bundle(&self, args: &[&str], limits: &Limits) -> Result<PathBuf> {
        let n = self.bundles.get();
        self.bundles.set(n + 1);
        let dir = self.dir.path().join(format!("bundle-{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("creating {}", dir.display()), e))?;
        let spec = spec(&self.rootfs, args, limits)?;
        let path = dir.join("config.json");
        spec.save(&path)
            .map_err(|e| Error::Setup(format!("writing {}: {e}", path.display())))?;
        Ok(dir)
    }
}

/// containerd's default spec with `args`, the given limits, and a writable root (the rootfs I/O
/// rows write into it; a per-bundle file name keeps runs apart).
fn spec(rootfs: &Path, args: &[&str], limits: &Limits) -> Result<Spec> {
    let mut spec = moat_sandbox::defaults::spec(&rootfs.display().to_string());
    let mut process: Process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    spec.set_hostname(Some("moat-bench".into()));
    if let Some(root) = spec.root().clone() {
        let mut root = root;
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
    }
    if let Some(mib) = limits.tmpfs_mib {
        let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
        mounts.push(
            MountBuilder::default()
                .destination("/tmp")
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    format!("size={mib}m"),
                ])
                .build()
                .map_err(|e| Error::Setup(format!("the /tmp mount: {e}")))?,
        );
        spec.set_mounts(Some(mounts));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    if let Some(mib) = limits.memory_mib {
        let bytes = i64::try_from(mib * 1024 * 1024).unwrap_or(i64::MAX);
        resources.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()
                .map_err(|e| Error::Setup(format!("the memory limit: {e}")))?,
        ));
    }
    if let Some(p) = limits.pids {
        resources.set_pids(Some(
            LinuxPidsBuilder::default()
                .limit(p)
                .build()
                .map_err(|e| Error::Setup(format!("the pids limit: {e}")))?,
        ));
    }
    let mut linux = linux;
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(spec)
}
