//! moat's guest kernel: Linux 6.12 from Debian's `linux-source-6.12`, built by `kernel-config/build.sh`
//! and cached.
//!
//! The config fragment (`kernel-config/moat.config`) and the build script are compiled into this
//! library, so a moat binary builds the same kernel wherever it runs. The cache key is a hash of the
//! source tarball's identity (Debian package version, size, modification time), the fragment and the
//! script: changing any of them builds anew, anything else reuses the entry (a hit takes well under
//! a second: the entry's files are checked against their recorded hashes, and a damaged entry is
//! rebuilt).
//!
//! ```no_run
//! let k = moat_artifacts::kernel::build()?; // minutes the first time, then instant
//! println!("{} {}", k.version, k.vmlinux.display());
//! # Ok::<(), moat_artifacts::kernel::Error>(())
//! ```
//!
//! From a shell, without moat: `kernel-config/build.sh OUTDIR` (see its `--help`).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{self, Cache, Key, KeyBuilder};

/// The Debian package that provides the kernel source.
pub const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// Where that package puts the source tarball.
pub const DEFAULT_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// The config fragment merged over `tinyconfig`.
pub const FRAGMENT: &str = include_str!("../../kernel-config/moat.config");
/// The build script.
pub const BUILD_SCRIPT: &str = include_str!("../../kernel-config/build.sh");
/// The cache kind of kernel builds.
pub const CACHE_KIND: &str = "kernel";
/// Bump when the way this module drives the build changes.
const FORMAT: &str = "moat-kernel-v1";

/// Errors of the kernel build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel source tarball is not there.
    #[error(
        "the Linux source tarball {0} is missing: install it with 'apt-get install linux-source-6.12' \
         (or run scripts/deps.sh), or set MOAT_LINUX_TARBALL to a linux-6.12 tarball"
    )]
    MissingSource(PathBuf),
    /// The build script failed (its own message, with the failing step, is on stderr above this).
    #[error("the guest kernel build failed: {0}")]
    Build(String),
    /// A built entry lacks a file it must have.
    #[error("kernel cache entry {dir}: {what} (delete the directory to rebuild)")]
    BadEntry {
        /// The entry.
        dir: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

/// A `Result` with the kernel build's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A built guest kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// The cache entry holding everything below.
    pub dir: PathBuf,
    /// Uncompressed ELF kernel with the PVH entry point (`CONFIG_PVH`): for direct boot by a VMM.
    pub vmlinux: PathBuf,
    /// Compressed `bzImage` (Linux boot protocol).
    pub bz_image: PathBuf,
    /// The final `.config`.
    pub config: PathBuf,
    /// The kernel release, as `uname -r` prints it in the guest (e.g. `6.12.117`).
    pub version: String,
}

impl KernelArtifacts {
    /// Reads an entry produced by `build.sh`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let bad = |what: String| Error::BadEntry {
            dir: dir.to_path_buf(),
            what,
        };
        let file = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(bad(format!("{name} is missing")))
            }
        };
        let version_file = file("version")?;
        let version = fs::read_to_string(&version_file)
            .map_err(|e| bad(format!("reading version: {e}")))?
            .trim()
            .to_string();
        Ok(Self {
            dir: dir.to_path_buf(),
            vmlinux: file("vmlinux")?,
            bz_image: file("bzImage")?,
            config: file("config")?,
            version,
        })
    }
}

/// What to build, and where to cache it.
#[derive(Clone, Debug)]
pub struct Options {
    /// The source tarball (`$MOAT_LINUX_TARBALL`, else [`DEFAULT_TARBALL`]).
    pub tarball: PathBuf,
    /// The config fragments, as (file name, contents); default: [`FRAGMENT`].
    pub fragments: Vec<(String, String)>,
    /// The cache to use.
    pub cache: Cache,
}

impl Default for Options {
    fn default() -> Self {
        let tarball = std::env::var_os("MOAT_LINUX_TARBALL")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_TARBALL), PathBuf::from);
        Self {
            tarball,
            fragments: vec![("moat.config".into(), FRAGMENT.into())],
            cache: Cache::new(CACHE_KIND),
        }
    }
}

impl Options {
    /// The cache key: source identity, fragments, build script.
    pub fn key(&self) -> Result<Key> {
        let meta =
            fs::metadata(&self.tarball).map_err(|_| Error::MissingSource(self.tarball.clone()))?;
        let mut k = KeyBuilder::new(FORMAT);
        k.add_str(&package_version().unwrap_or_default())
            .add_str(&meta.len().to_string())
            .add_str(&format!("{}.{}", meta.mtime(), meta.mtime_nsec()));
        for (name, text) in &self.fragments {
            k.add_str(name).add_str(text);
        }
        k.add_str(BUILD_SCRIPT);
        Ok(k.finish())
    }
}

/// The installed version of [`SOURCE_PACKAGE`], if dpkg knows it.
pub fn package_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", SOURCE_PACKAGE])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Builds the guest kernel with the default [`Options`], or returns the cached build.
pub fn build() -> Result<KernelArtifacts> {
    build_with(&Options::default())
}

/// Builds the guest kernel, or returns the cached build. The build prints its progress on stderr.
pub fn build_with(opts: &Options) -> Result<KernelArtifacts> {
    let key = opts.key()?;
    if let Some(dir) = opts.cache.lookup(&key)? {
        return KernelArtifacts::from_dir(&dir);
    }
    tracing::info!(tarball = %opts.tarball.display(), "building the guest kernel (a few minutes, once)");
    let dir = opts.cache.get_or_build(&key, |out| run_script(opts, out))?;
    KernelArtifacts::from_dir(&dir)
}

/// Runs `build.sh` into `out` (an empty directory), with the fragments and script written to a
/// private scratch directory; then records the fragments beside the output.
fn run_script(opts: &Options, out: &Path) -> Result<()> {
    let scratch = out.with_extension("inputs");
    let result = (|| {
        let io =
            |what: &str, e: io::Error| Error::Build(format!("{what} {}: {e}", scratch.display()));
        fs::create_dir_all(&scratch).map_err(|e| io("create", e))?;
        let script = scratch.join("build.sh");
        fs::write(&script, BUILD_SCRIPT).map_err(|e| io("write to", e))?;
        let mut cmd = Command::new("bash");
        cmd.arg(&script);
        for (name, text) in &opts.fragments {
            let path = scratch.join(name);
            fs::write(&path, text).map_err(|e| io("write to", e))?;
            cmd.arg("--fragment").arg(path);
        }
        cmd.arg(out).env("MOAT_LINUX_TARBALL", &opts.tarball);
        let status = cmd
            .status()
            .map_err(|e| Error::Build(format!("cannot run bash: {e}")))?;
        if !status.success() {
            return Err(Error::Build(format!(
                "kernel-config/build.sh exited with {status} (its messages are above)"
            )));
        }
        for (name, _) in &opts.fragments {
            fs::copy(scratch.join(name), out.join(name)).map_err(|e| io("copy from", e))?;
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Whether the guest kernel is built, for `moat check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Built and intact.
    Built(KernelArtifacts),
    /// Not built (or damaged): where it would go, and how to build it.
    NotBuilt {
        /// The cache entry it would be.
        expected: PathBuf,
        /// Why it is not usable, and what to run.
        reason: String,
    },
}

/// Looks up the guest kernel in the cache without building it.
pub fn status() -> Status {
    status_with(&Options::default())
}

/// [`status`] with explicit options.
pub fn status_with(opts: &Options) -> Status {
    let not_built = |expected: PathBuf, reason: String| Status::NotBuilt { expected, reason };
    let key = match opts.key() {
        Ok(k) => k,
        Err(e) => {
            return not_built(
                opts.cache.path(&KeyBuilder::new(FORMAT).finish()),
                e.to_string(),
            );
        }
    };
    let expected = opts.cache.path(&key);
    match opts.cache.lookup(&key) {
        Ok(Some(dir)) => match KernelArtifacts::from_dir(&dir) {
            Ok(k) => Status::Built(k),
            Err(e) => not_built(expected, e.to_string()),
        },
        Ok(None) => not_built(
            expected,
            "not built yet: run scripts/build-artifacts.sh (or any test that boots a guest)".into(),
        ),
        Err(e) => not_built(expected, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(root: &Path, tarball: &Path) -> Options {
        Options {
            tarball: tarball.to_path_buf(),
            fragments: vec![("moat.config".into(), FRAGMENT.into())],
            cache: Cache::with_root(root, CACHE_KIND),
        }
    }

    #[test]
    fn fragment_asks_for_what_the_guest_needs() {
        for opt in [
            "CONFIG_PVH=y",
            "CONFIG_KVM_GUEST=y",
            "CONFIG_SERIAL_8250_CONSOLE=y",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
            "CONFIG_VIRTIO_VSOCKETS=y",
            "CONFIG_EROFS_FS=y",
            "CONFIG_EXT4_FS=y",
            "CONFIG_OVERLAY_FS=y",
            "CONFIG_IPC_NS=y",
            "CONFIG_SYSVIPC=y",
            "CONFIG_MEMCG=y",
            "CONFIG_SECCOMP_FILTER=y",
            "CONFIG_X86_IOPL_IOPERM=y",
            "# CONFIG_PCI is not set",
            "# CONFIG_ACPI is not set",
            "# CONFIG_MODULES is not set",
            "# CONFIG_RTC_CLASS is not set",
        ] {
            assert!(FRAGMENT.lines().any(|l| l == opt), "fragment lacks {opt}");
        }
    }

    #[test]
    fn key_follows_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("linux.tar.xz");
        fs::write(&tarball, b"not really").unwrap();
        let a = opts(dir.path(), &tarball);
        let mut b = a.clone();
        b.fragments[0].1.push_str("CONFIG_IPV6=y\n");
        let before = a.key().unwrap();
        assert_eq!(before, a.key().unwrap());
        assert_ne!(before, b.key().unwrap());
        fs::write(&tarball, b"a different size").unwrap();
        assert_ne!(before, a.key().unwrap());
    }

    #[test]
    fn missing_source_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path(), &dir.path().join("nope.tar.xz"));
        let e = build_with(&o).unwrap_err();
        assert!(matches!(e, Error::MissingSource(_)));
        assert!(
            e.to_string().contains("apt-get install linux-source-6.12"),
            "{e}"
        );
        match status_with(&o) {
            Status::NotBuilt { reason, .. } => {
                assert!(reason.contains("linux-source-6.12"), "{reason}")
            }
            s => panic!("{s:?}"),
        }
        assert!(
            !dir.path().join(CACHE_KIND).exists(),
            "left something behind"
        );
    }

    #[test]
    fn entry_without_files_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("version"), "6.12.1\n").unwrap();
        let e = KernelArtifacts::from_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("vmlinux is missing"), "{e}");
    }
}
