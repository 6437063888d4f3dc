//! What `moat install` copies, and from where: moat's binaries from the directory of the running
//! `moat` (`target/release` after `cargo build --release --workspace`, or a release tree), and the
//! guest kernel and initramfs from `../share/moat` beside them (a release tree, an installer
//! image) or else from moat's build cache.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The CLI itself.
pub const MOAT: &str = "moat";
/// containerd's shim for every handler.
pub const SHIM: &str = "containerd-shim-moat-v2";
/// The microVM monitor (the `vm` handler).
pub const VMM: &str = "moat-vmm";
/// The ptrace supervisor (the `trace` handler).
pub const TRACE: &str = "moat-trace";

/// The guest kernel's name where moat installs it (and in a release tree).
pub const KERNEL_NAME: &str = "vmlinux";
/// The guest initramfs's name where moat installs it (and in a release tree).
pub const INITRAMFS_NAME: &str = "initramfs.cpio";

/// The guest kernel and initramfs to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs (moat-agent as `/init`).
    pub initramfs: PathBuf,
}

/// Where every file `moat install` copies comes from.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The directory holding `moat` and its sibling binaries.
    pub bin_dir: PathBuf,
    /// The guest artifacts, or why there are none.
    pub guest: Result<Guest, String>,
}

impl Sources {
    /// The sources for the running `moat`.
    pub fn for_running_moat() -> anyhow::Result<Sources> {
        let exe = std::env::current_exe().context("cannot find the running moat executable")?;
        let dir = exe
            .parent()
            .with_context(|| format!("{} has no parent directory", exe.display()))?;
        Ok(Sources::from_dir(dir))
    }

    /// The sources for a `moat` in `bin_dir`: guest artifacts from `bin_dir/../share/moat` when
    /// both are there, else from moat's cache.
    pub fn from_dir(bin_dir: &Path) -> Sources {
        let share = bin_dir.join("../share/moat");
        let beside = Guest {
            kernel: share.join(KERNEL_NAME),
            initramfs: share.join(INITRAMFS_NAME),
        };
        let guest = if beside.kernel.is_file() && beside.initramfs.is_file() {
            Ok(beside)
        } else {
            moat_backend::vm::check::built_artifacts()
                .map(|(kernel, initramfs)| Guest { kernel, initramfs })
                .map_err(|e| {
                    format!(
                        "{e} (and there is no {KERNEL_NAME} and {INITRAMFS_NAME} in {})",
                        share.display()
                    )
                })
        };
        Sources {
            bin_dir: bin_dir.to_path_buf(),
            guest,
        }
    }

    /// The path of binary `name` beside moat, or what to do when it is missing.
    pub fn binary(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{name} is not beside moat in {} (`cargo build --release --workspace` builds \
                 all of moat's binaries into target/release)",
                self.bin_dir.display()
            ))
        }
    }
}
