//! L1's initramfs: busybox-static, the init script (`init.sh`) and the kernel's modules.
//!
//! Written with moat's own `newc` writer ([`moat_artifacts::initramfs`]) and cached, keyed by the
//! kernel entry, the init script and the busybox binary, so a run only checks the cache.

use std::fs;
use std::path::{Path, PathBuf};

use moat_artifacts::cache::{Cache, KeyBuilder};
use moat_artifacts::initramfs::{Compression, Initramfs};

use crate::kernel::{self, Kernel};

/// L1's PID 1.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Where busybox comes from: `$MOAT_RIG_BUSYBOX`, else Debian's busybox-static at `/bin/busybox`.
pub fn busybox_path() -> PathBuf {
    std::env::var_os("MOAT_RIG_BUSYBOX")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/bin/busybox"), PathBuf::from)
}

/// Errors while building the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// busybox is missing or not statically linked.
    #[error("busybox at {path}: {reason} (install busybox-static, or set MOAT_RIG_BUSYBOX)")]
    Busybox {
        /// Where it was looked for.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The kernel entry is unusable.
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    /// Writing the archive failed.
    #[error(transparent)]
    Initramfs(#[from] moat_artifacts::initramfs::Error),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] moat_artifacts::cache::Error),
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// True when an ELF file asks for a program interpreter (a dynamic loader): it has a `PT_INTERP`
/// program header.
fn is_dynamic(elf: &[u8]) -> Option<bool> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != [0x7f, b'E', b'L', b'F', 2, 1] {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    const PT_INTERP: u32 = 3;
    let mut dynamic = false;
    for i in 0..phnum {
        dynamic |= u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP;
    }
    Some(dynamic)
}

/// Returns the initramfs for `kernel`, building it on first use.
pub fn prepare(kernel: &Kernel) -> Result<PathBuf> {
    let busybox = busybox_path();
    let bad = |reason: String| Error::Busybox {
        path: busybox.clone(),
        reason,
    };
    let bytes = fs::read(&busybox).map_err(|e| bad(e.to_string()))?;
    match is_dynamic(&bytes) {
        None => return Err(bad("is not an x86-64 ELF executable".into())),
        Some(true) => return Err(bad("is dynamically linked; L1 has no libraries".into())),
        Some(false) => {}
    }
    let key = KeyBuilder::new("moat-rig-initramfs-v1")
        .add_str(&kernel.key)
        .add_str(INIT_SCRIPT)
        .add_bytes(&bytes)
        .finish();
    let cache = Cache::new("rig-initramfs");
    let entry = cache.get_or_build(&key, |out| write(kernel, &busybox, out))?;
    Ok(entry.join("initramfs.cpio"))
}

fn write(kernel: &Kernel, busybox: &Path, out: &Path) -> Result<()> {
    let mut fs = Initramfs::new();
    for dir in ["/dev", "/proc", "/sys", "/tmp", "/scratch", "/mnt/root"] {
        fs.dir(dir, 0o755);
    }
    fs.char_dev("/dev/console", 0o600, 5, 1)
        .char_dev("/dev/null", 0o666, 1, 3)
        .file("/bin/busybox", 0o755, busybox)
        .symlink("/bin/sh", "busybox")
        .file_bytes("/init", 0o755, INIT_SCRIPT.as_bytes().to_vec());
    for (name, path) in kernel.modules()? {
        fs.file(&format!("/lib/modules/{name}.ko"), 0o644, path);
    }
    let mut load = kernel.load_order(kernel::CORE_MODULES)?.join("\n");
    load.push('\n');
    fs.file_bytes("/lib/modules/load", 0o644, load.into_bytes());
    // Uncompressed: QEMU loads it in one read, and the kernel skips a decompression under TCG.
    fs.write(&out.join("initramfs.cpio"), Compression::None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            is_dynamic(&me),
            Some(true),
            "test binaries are dynamically linked"
        );
        assert_eq!(is_dynamic(b"#!/bin/sh\n"), None);
        let busybox = busybox_path();
        match fs::read(&busybox) {
            Ok(b) => assert_eq!(
                is_dynamic(&b),
                Some(false),
                "{} should be busybox-static",
                busybox.display()
            ),
            Err(e) => eprintln!(
                "SKIPPED: {}: {e} (install busybox-static)",
                busybox.display()
            ),
        }
    }

    #[test]
    fn init_script_is_valid_sh() {
        let out = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", INIT_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
