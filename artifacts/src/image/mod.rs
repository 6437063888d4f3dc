//! The offline test image: a busybox root filesystem built from Debian's `busybox-static`, in every
//! form moat's parts consume — a directory (for `moat run` and OCI bundles), an OCI image layout, and
//! an image archive that `ctr images import` accepts as `docker.io/library/busybox:latest` — plus the
//! Kubernetes pause image `registry.k8s.io/pause:3.6` built from the same layer.
//!
//! Nothing is downloaded: the tar layer, the JSON documents and their sha256 digests are written here.
//! The result is cached by the hash of the busybox binary and [`FORMAT`] (see [`crate::cache`]), so
//! only the first call builds (about a second); later calls verify the cache entry and return.
//!
//! ```no_run
//! let img = moat_artifacts::image::busybox()?;
//! println!("rootfs at {}", img.rootfs.display());
//! // ctr -n NS images import <img.archive>; ctr -n NS images import <img.pause_archive>
//! # Ok::<(), moat_artifacts::image::Error>(())
//! ```
//!
//! # The pause image
//! Its entrypoint is busybox `sh` running [`PAUSE_SCRIPT`]: it traps SIGTERM and SIGINT (PID 1
//! ignores signals it has no handler for, so the trap is what makes it stoppable), sleeps in a
//! background child and `wait`s for it. `wait` returns as soon as a trapped signal arrives, the trap
//! kills the sleeper and exits 0. While it waits, the shell also reaps any orphan reparented to it,
//! which is what a pod's PID-namespace holder must do. Choosing the shell over a dedicated static
//! pause binary keeps the image to a single shared layer and needs no compiler for the guest target.

mod bundle;
mod oci;
mod tar;
mod tree;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use bundle::{copy_tree, write_bundle};
pub use tree::USER_ID;

use crate::cache::{self, Cache, KeyBuilder};

/// The name the busybox image is imported under.
pub const BUSYBOX_REF: &str = "docker.io/library/busybox:latest";
/// The name the pause image is imported under (containerd 1.6's default CRI `sandbox_image`).
pub const PAUSE_REF: &str = "registry.k8s.io/pause:3.6";
/// Where Debian's `busybox-static` installs the binary; `$MOAT_BUSYBOX` overrides it.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// The build format: part of the cache key; bump it whenever the build logic changes.
pub const FORMAT: &str = "busybox-image-v1";
/// The cache kind the image lives under (`<cache root>/busybox-image/<key>/`).
pub const CACHE_KIND: &str = "busybox-image";
/// The pause image's shell script (see the module documentation).
pub const PAUSE_SCRIPT: &str =
    "trap 'kill $! 2>/dev/null; exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// Errors while building the test image or a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation or a command failed.
    #[error("image: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The busybox binary is missing or unusable.
    #[error("busybox {path}: {message}")]
    Busybox {
        /// The binary that was tried.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Encoding an image document failed.
    #[error("image: encoding the {what}: {message}")]
    Format {
        /// Which document.
        what: &'static str,
        /// The encoder's message.
        message: String,
    },
    /// A caller-supplied argument was unusable.
    #[error("{0}")]
    BadInput(String),
    /// The build cache failed.
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The cached busybox image in all its forms. Every path is inside one cache entry: treat them as
/// read-only (a modified entry fails verification and is rebuilt by the next [`busybox`] call).
/// A container that writes to its root needs its own copy ([`BusyboxImage::copy_rootfs`]) or a
/// read-only root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusyboxImage {
    /// The root filesystem directory: `/bin/busybox`, a symlink per applet, `/etc/{passwd,group,
    /// hostname,hosts,resolv.conf}`, users root (0), user (1000) and nobody (65534), `/tmp` (1777),
    /// empty `/proc`, `/sys`, `/dev`, `/root`, `/home/user`, `/var`, `/run`.
    pub rootfs: PathBuf,
    /// OCI image layout directory of `docker.io/library/busybox:latest` (ref name `latest`):
    /// `skopeo inspect oci:<oci_layout>`.
    pub oci_layout: PathBuf,
    /// Image archive (OCI layout + Docker `manifest.json` in one tar) of
    /// `docker.io/library/busybox:latest`: `ctr images import <archive>`. Default command `sh`.
    pub archive: PathBuf,
    /// OCI image layout directory of `registry.k8s.io/pause:3.6` (ref name `3.6`).
    pub pause_oci_layout: PathBuf,
    /// Image archive of `registry.k8s.io/pause:3.6`, whose entrypoint blocks until SIGTERM/SIGINT
    /// and then exits 0.
    pub pause_archive: PathBuf,
}

impl BusyboxImage {
    /// Makes a private, writable copy of [`rootfs`](Self::rootfs) at `dst` (which must not exist).
    pub fn copy_rootfs(&self, dst: &Path) -> Result<()> {
        copy_tree(&self.rootfs, dst)
    }
}

/// The busybox binary to build from: `$MOAT_BUSYBOX`, else [`DEFAULT_BUSYBOX`].
pub fn busybox_binary() -> PathBuf {
    std::env::var_os("MOAT_BUSYBOX")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_BUSYBOX), PathBuf::from)
}

/// Returns the busybox test image from moat's cache, building it on first use.
pub fn busybox() -> Result<BusyboxImage> {
    busybox_in(&Cache::new(CACHE_KIND), &busybox_binary())
}

/// Like [`busybox`] with an explicit cache and busybox binary (tests use a temporary cache).
pub fn busybox_in(cache: &Cache, busybox: &Path) -> Result<BusyboxImage> {
    check_static(busybox)?;
    let key = KeyBuilder::new(FORMAT).add_file(busybox)?.finish();
    // A hit needs no lock: entries are published by an atomic rename and verified here. Taking
    // the cache's flock on every call would be risky in multi-threaded test processes: a child
    // forked (not yet exec'd) by another thread inherits the locked file description and keeps
    // the lock for as long as it lives.
    let dir = match cache.lookup(&key)? {
        Some(dir) => dir,
        None => cache.get_or_build(&key, |out| build(busybox, out))?,
    };
    Ok(BusyboxImage {
        rootfs: dir.join("rootfs"),
        oci_layout: dir.join("oci/busybox"),
        archive: dir.join("busybox.tar"),
        pause_oci_layout: dir.join("oci/pause"),
        pause_archive: dir.join("pause.tar"),
    })
}

fn build(busybox: &Path, out: &Path) -> Result<()> {
    let binary = std::fs::read(busybox).map_err(|source| Error::Io {
        op: "read",
        path: busybox.to_path_buf(),
        source,
    })?;
    let applets = tree::applets(busybox)?;
    let entries = tree::entries(binary, &applets);

    let rootfs = out.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|source| Error::Io {
        op: "create",
        path: rootfs.clone(),
        source,
    })?;
    tree::write_dir(&entries, &rootfs)?;

    let layer = oci::layer(&entries)?;
    let images = [
        (
            "busybox",
            oci::ImageSpec {
                name: BUSYBOX_REF,
                entrypoint: None,
                cmd: Some(vec!["sh".into()]),
            },
        ),
        (
            "pause",
            oci::ImageSpec {
                name: PAUSE_REF,
                entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), PAUSE_SCRIPT.into()]),
                cmd: None,
            },
        ),
    ];
    for (name, spec) in &images {
        let image = oci::image(&layer, spec)?;
        oci::write_layout(&image, &out.join("oci").join(name))?;
        oci::write_archive(&image, &out.join(format!("{name}.tar")))?;
    }
    Ok(())
}

/// Refuses a missing, non-ELF or dynamically linked busybox: the rootfs has no libc, so only a
/// static binary can run in it.
fn check_static(busybox: &Path) -> Result<()> {
    let bad = |message: String| Error::Busybox {
        path: busybox.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(busybox).map_err(|e| {
        bad(format!(
            "cannot open it ({e}); install Debian's busybox-static (scripts/deps.sh) or set MOAT_BUSYBOX"
        ))
    })?;
    let mut head = vec![0u8; 64 * 1024];
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(bad(format!("cannot read it: {e}"))),
        }
    }
    head.truncate(len);
    match elf_is_static(&head) {
        Some(true) => Ok(()),
        Some(false) => Err(bad(
            "it is dynamically linked and cannot run in a rootfs without libc; install \
             busybox-static instead of busybox"
                .into(),
        )),
        None => Err(bad("it is not a 64-bit little-endian ELF executable".into())),
    }
}

/// `Some(true)` if the ELF64 image in `head` has no `PT_INTERP` program header, `Some(false)` if it
/// has one, `None` if `head` is not an ELF64 LE file whose program headers lie within it.
fn elf_is_static(head: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(head.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_check() {
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        let sh = std::fs::read("/bin/sh").unwrap();
        assert_eq!(elf_is_static(&sh[..sh.len().min(65536)]), Some(false));
    }

    #[test]
    fn dynamic_busybox_is_refused_with_a_hint() {
        let cache_root = tempfile::tempdir().unwrap();
        let cache = Cache::with_root(cache_root.path(), CACHE_KIND);
        let err = busybox_in(&cache, Path::new("/bin/sh")).unwrap_err();
        assert!(err.to_string().contains("busybox-static"), "{err}");
        let err = busybox_in(&cache, Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(err.to_string().contains("busybox-static"), "{err}");
    }
}
