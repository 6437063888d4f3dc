//! The guest's user space: `moat-agent` built as a static binary, and the initramfs that makes it
//! the guest's `/init`.
//!
//! The agent is built by [`crate::static_bin`]: cargo for the `moat-agent` package alone, for the
//! explicit target `x86_64-unknown-linux-gnu`, with `RUSTFLAGS=-C target-feature=+crt-static`,
//! stripped, into its own target directory (`target/moat-agent-static`, or
//! `$MOAT_AGENT_TARGET_DIR`): the flags reach only that build, and the workspace's own target
//! directory never sees them. `$MOAT_AGENT` names a prebuilt static agent instead (installed
//! setups, where there is no source tree).
//!
//! The initramfs holds `/init` (the agent), `/dev/console` and `/dev/null` (the kernel opens the
//! console for init before init runs), and the empty mount points. It is uncompressed by default:
//! a ~1 MiB archive is copied faster than it is inflated (see [`DEFAULT_COMPRESSION`]). The archive
//! is cached by the agent's hash.
//!
//! ```no_run
//! let g = moat_artifacts::guest::initramfs()?;
//! println!("initrd {} with agent {}", g.initramfs.display(), g.agent.display());
//! # Ok::<(), moat_artifacts::guest::Error>(())
//! ```

use std::path::{Path, PathBuf};

use crate::cache::{self, Cache, Key, KeyBuilder};
use crate::initramfs::{self, Compression, Initramfs};
use crate::static_bin;

/// The Rust target the agent is built for.
pub const AGENT_TARGET: &str = static_bin::TARGET;
/// The cache kind of guest initramfs archives.
pub const CACHE_KIND: &str = "guest-initramfs";
/// The compression [`initramfs`] uses: measured, a plain archive boots faster (see the module docs).
pub const DEFAULT_COMPRESSION: Compression = Compression::None;
/// The file name of the archive inside its cache entry.
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
/// Bump when the archive's layout changes.
const FORMAT: &str = "moat-guest-initramfs-v1";

/// The kernel command line moat-vmm and the reference boots start from (add `virtio_mmio.device=`
/// entries and `moat.*` keys as needed):
/// - `console=ttyS0`: the kernel log and the agent's ready line go to the 8250 UART;
/// - `reboot=k`: the agent's power-off resets through the i8042 (moat-vmm ends the VM; QEMU microvm
///   needs `-device i8042 -no-reboot`);
/// - `panic=-1`: a kernel panic resets at once (a VMM reports it, as no power-off byte came first);
/// - `quiet`: the boot log costs a VM exit per character; warnings and errors are still printed.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";

/// Errors while building the guest's user space.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the agent failed.
    #[error("building moat-agent: {0}")]
    Agent(String),
    /// The agent binary is not a static ELF executable.
    #[error(
        "{path}: {reason}; the guest has no libraries, so moat-agent must be linked statically \
         (-C target-feature=+crt-static); unset MOAT_AGENT to let moat build it"
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the archive failed.
    #[error(transparent)]
    Initramfs(#[from] initramfs::Error),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<static_bin::Error> for Error {
    /// The agent's own messages: its build failing, or its binary (perhaps `$MOAT_AGENT`) not static.
    fn from(e: static_bin::Error) -> Self {
        match e {
            static_bin::Error::Build { reason, .. } => Error::Agent(reason),
            static_bin::Error::NotStatic { path, reason } => Error::NotStatic { path, reason },
        }
    }
}

/// The guest's initramfs and what it was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestInitramfs {
    /// The archive (`newc` cpio), to pass as the initrd.
    pub initramfs: PathBuf,
    /// The static agent binary inside it (`/init`).
    pub agent: PathBuf,
    /// How the archive is compressed.
    pub compression: Compression,
}

/// Where the static agent build puts its output.
pub fn agent_target_dir() -> PathBuf {
    std::env::var_os("MOAT_AGENT_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| static_bin::target_dir("moat-agent"), PathBuf::from)
}

/// Returns a static `moat-agent`: `$MOAT_AGENT` if set, else built from source (cargo decides
/// whether anything needs recompiling; an up-to-date build takes a fraction of a second).
pub fn agent() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOAT_AGENT").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        check_static(&path)?;
        return Ok(path);
    }
    let root = static_bin::workspace_root();
    if !root.join("guest-agent/Cargo.toml").is_file() {
        return Err(Error::Agent(format!(
            "the moat source tree ({}) is not here to build it from; set MOAT_AGENT to a static \
             moat-agent binary",
            root.display()
        )));
    }
    Ok(static_bin::build_in(
        "moat-agent",
        "moat-agent",
        &agent_target_dir(),
    )?)
}

/// Checks that `path` is a 64-bit x86 ELF executable without a program interpreter (a static
/// binary): the guest has no dynamic loader or libraries. [`static_bin::check_static`] with the
/// agent's error message.
pub fn check_static(path: &Path) -> Result<()> {
    Ok(static_bin::check_static(path)?)
}

/// The archive's contents around `agent`.
pub fn layout(agent: &Path) -> Initramfs {
    let mut fs = Initramfs::new();
    fs.file("/init", 0o755, agent)
        .dir("/dev", 0o755)
        .char_dev("/dev/console", 0o600, 5, 1)
        .char_dev("/dev/null", 0o666, 1, 3)
        .dir("/proc", 0o555)
        .dir("/sys", 0o555)
        .dir("/sysroot", 0o755);
    fs
}

/// The cache key of the archive for `agent`.
fn key(agent: &Path, compression: Compression) -> Result<Key> {
    let mut k = KeyBuilder::new(FORMAT);
    k.add_file(agent)?.add_str(&format!("{compression:?}"));
    Ok(k.finish())
}

/// Builds the agent (or takes `$MOAT_AGENT`) and returns the guest initramfs, from the cache when it
/// holds one for this agent.
pub fn initramfs() -> Result<GuestInitramfs> {
    initramfs_with(&Cache::new(CACHE_KIND), &agent()?, DEFAULT_COMPRESSION)
}

/// [`initramfs`] with an explicit cache, agent binary and compression.
pub fn initramfs_with(
    cache: &Cache,
    agent: &Path,
    compression: Compression,
) -> Result<GuestInitramfs> {
    check_static(agent)?;
    let key = key(agent, compression)?;
    let dir = cache.get_or_build(&key, |out| -> Result<()> {
        layout(agent).write(&out.join(INITRAMFS_FILE), compression)?;
        Ok(())
    })?;
    Ok(GuestInitramfs {
        initramfs: dir.join(INITRAMFS_FILE),
        agent: agent.to_path_buf(),
        compression,
    })
}

/// Whether the guest initramfs is built, for `moat check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Built for the current agent binary.
    Built(GuestInitramfs),
    /// Not built (or stale, or damaged), and what to do.
    NotBuilt {
        /// Why, and what to run.
        reason: String,
    },
}

/// Looks for the initramfs of the agent already built (it builds nothing, not even the agent).
pub fn status() -> Status {
    let agent = std::env::var_os("MOAT_AGENT")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || {
                agent_target_dir()
                    .join(AGENT_TARGET)
                    .join("release/moat-agent")
            },
            PathBuf::from,
        );
    let hint = "run `cargo run --release -p moat-artifacts --example build-guest`";
    if !agent.is_file() {
        return Status::NotBuilt {
            reason: format!(
                "moat-agent is not built ({} is missing): {hint}",
                agent.display()
            ),
        };
    }
    let cache = Cache::new(CACHE_KIND);
    let found = key(&agent, DEFAULT_COMPRESSION).and_then(|k| Ok(cache.lookup(&k)?));
    match found {
        Ok(Some(dir)) => Status::Built(GuestInitramfs {
            initramfs: dir.join(INITRAMFS_FILE),
            agent,
            compression: DEFAULT_COMPRESSION,
        }),
        Ok(None) => Status::NotBuilt {
            reason: format!("no initramfs for the agent at {}: {hint}", agent.display()),
        },
        Err(e) => Status::NotBuilt {
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn archive_is_cached_per_agent() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!(
                "SKIPPED: needs a static binary: /bin/busybox (busybox-static) is not installed"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::with_root(dir.path(), CACHE_KIND);
        let a = initramfs_with(&cache, busybox, Compression::None).unwrap();
        let bytes = fs::read(&a.initramfs).unwrap();
        assert!(bytes.starts_with(b"070701"), "not a newc archive");
        for name in [
            "init",
            "dev/console",
            "dev/null",
            "proc",
            "sysroot",
            "TRAILER!!!",
        ] {
            let needle = format!("{name}\0");
            assert!(
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "no {name}"
            );
        }
        let b = initramfs_with(&cache, busybox, Compression::None).unwrap();
        assert_eq!(a, b);
        let gz = initramfs_with(&cache, busybox, Compression::Gzip).unwrap();
        assert_ne!(gz.initramfs, a.initramfs);
        assert_eq!(&fs::read(&gz.initramfs).unwrap()[..2], b"\x1f\x8b");
    }
}
