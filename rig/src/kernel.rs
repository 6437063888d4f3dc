//! L1's kernel: Debian's stock kernel package for this release, fetched once and cached.
//!
//! The package is the one `linux-image-amd64` depends on (or `$MOAT_RIG_KERNEL_PACKAGE`). It is
//! fetched with `apt-get download`, unpacked with `dpkg-deb -x`, and reduced to what the rig boots:
//! the uncompressed `vmlinux` (taken out of the bzImage's xz payload, so QEMU can enter it through
//! PVH, ~3 s faster than the bzImage's real-mode path) and the modules the rig loads, with their
//! dependencies. The cache entry is keyed by package name, version and the archive's SHA-256, so a
//! second run downloads nothing.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use moat_artifacts::cache::{Cache, KeyBuilder};

use crate::modules::{self, Tree};

/// The environment variable naming another kernel package (e.g. `linux-image-6.1.0-56-amd64`).
pub const PACKAGE_ENV: &str = "MOAT_RIG_KERNEL_PACKAGE";

/// Modules L1 always loads, in this order (each after its own dependencies): the transports to the
/// host first, so that a failing `kvm_amd` can still be reported, then KVM.
pub const CORE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "kvm_amd",
];

/// Modules a run may ask for (`--module`), for what VM tests may use in L2; each costs ~0.05 s to load
/// under TCG, so they are not loaded unless asked for.
pub const EXTRA_MODULES: &[&str] = &["vhost_vsock", "vhost_net", "tun", "overlay"];

/// Bump when what an entry holds changes.
const FORMAT: &str = "moat-rig-kernel-v2";

/// Errors while getting L1's kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool the rig needs is not installed.
    #[error("{tool} not found ({source}): the rig fetches its L1 kernel with Debian's apt; {hint}")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// What to do.
        hint: &'static str,
        /// The spawn error.
        source: std::io::Error,
    },
    /// The kernel package cannot be found or fetched.
    #[error(
        "the L1 kernel package {package} is not available: {detail}\n\
         (run `apt-get update`, or set {PACKAGE_ENV} to an available linux-image-*-amd64 package)"
    )]
    PackageUnavailable {
        /// The package.
        package: String,
        /// What apt said.
        detail: String,
    },
    /// The package does not look like a Debian kernel package.
    #[error("the kernel package {package} is unusable: {detail}")]
    BadPackage {
        /// The package.
        package: String,
        /// What is wrong.
        detail: String,
    },
    /// Module resolution failed.
    #[error(transparent)]
    Modules(#[from] modules::Error),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] moat_artifacts::cache::Error),
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A kernel ready to boot as L1, in its cache entry.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The cache entry.
    pub dir: PathBuf,
    /// The Debian package it came from.
    pub package: String,
    /// The package version.
    pub version: String,
    /// The kernel release (`uname -r` inside L1).
    pub release: String,
    /// The cache key of the entry (other artifacts built from it key on it).
    pub key: String,
}

impl Kernel {
    /// The image QEMU boots: `vmlinux` (PVH entry) where it could be extracted, else `bzImage`.
    pub fn image(&self) -> PathBuf {
        let vmlinux = self.dir.join("vmlinux");
        if vmlinux.is_file() {
            vmlinux
        } else {
            self.dir.join("bzImage")
        }
    }

    /// Every module file in the entry (core, extra and their dependencies), by name.
    pub fn modules(&self) -> Result<Vec<(String, PathBuf)>> {
        Ok(self
            .deps()?
            .into_keys()
            .map(|name| {
                let path = self.dir.join("modules").join(format!("{name}.ko"));
                (name, path)
            })
            .collect())
    }

    /// `modules.dep` of the entry: each module's dependencies.
    fn deps(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let path = self.dir.join("modules.dep");
        let text =
            fs::read_to_string(&path).map_err(|e| self.bad(format!("{}: {e}", path.display())))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(name, deps)| {
                let deps = deps.split_whitespace().map(String::from).collect();
                (name.to_string(), deps)
            })
            .collect())
    }

    /// The modules to load for `wanted`, dependencies first; a module outside the entry is an error
    /// naming the ones there are.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>> {
        let deps = self.deps()?;
        let order = modules::closure(wanted, &mut |name, needed_by| {
            deps.get(name)
                .cloned()
                .map(Some)
                .ok_or_else(|| modules::Error::Missing {
                    name: name.to_string(),
                    needed_by: format!("{needed_by}; the rig offers {}", EXTRA_MODULES.join(", ")),
                })
        })?;
        Ok(order)
    }

    fn bad(&self, detail: String) -> Error {
        Error::BadPackage {
            package: self.package.clone(),
            detail,
        }
    }
}

fn tool(name: &'static str, hint: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::MissingTool {
        tool: name,
        hint,
        source,
    }
}

const APT_HINT: &str = "run on Debian or Ubuntu, or install apt";

/// Runs a command, returning its stdout, or its stderr as the error.
fn output(cmd: &mut Command, name: &'static str) -> Result<std::result::Result<String, String>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(tool(name, APT_HINT))?;
    if out.status.success() {
        Ok(Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
    } else {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = format!("{name} exited with {}", out.status);
        }
        Ok(Err(msg))
    }
}

/// The package `linux-image-amd64` depends on, or `$MOAT_RIG_KERNEL_PACKAGE`.
pub fn package_name() -> Result<String> {
    if let Some(p) = std::env::var(PACKAGE_ENV).ok().filter(|p| !p.is_empty()) {
        return Ok(p);
    }
    let meta = "linux-image-amd64";
    let deps = output(
        Command::new("apt-cache").args(["depends", meta]),
        "apt-cache",
    )?;
    let unavailable = |detail: String| Error::PackageUnavailable {
        package: meta.to_string(),
        detail,
    };
    let deps = deps.map_err(unavailable)?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('|').to_string())
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| {
            unavailable(format!(
                "apt-cache depends {meta} names no linux-image package"
            ))
        })
}

/// Version and SHA-256 of the candidate of `package`, from the local apt lists.
fn candidate(package: &str) -> Result<(String, String)> {
    let show = output(
        Command::new("apt-cache").args(["show", "--no-all-versions", package]),
        "apt-cache",
    )?;
    let unavailable = |detail: String| Error::PackageUnavailable {
        package: package.to_string(),
        detail,
    };
    let show = show.map_err(unavailable)?;
    let field = |name: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let version =
        field("Version:").ok_or_else(|| unavailable("apt knows no version of it".into()))?;
    Ok((version, field("SHA256:").unwrap_or_default()))
}

/// A hash of the state of apt's package lists (names, sizes, mtimes) and of [`PACKAGE_ENV`].
fn apt_lists_stamp() -> Option<String> {
    let mut files: Vec<_> = fs::read_dir("/var/lib/apt/lists")
        .ok()?
        .filter_map(|e| e.ok())
        .collect();
    files.sort_by_key(|e| e.file_name());
    let mut key = KeyBuilder::new("moat-rig-apt-lists-v1");
    key.add_str(&std::env::var(PACKAGE_ENV).unwrap_or_default());
    for f in files {
        let Ok(meta) = f.metadata() else { continue };
        if meta.is_file() {
            let mtime = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            key.add_str(&f.file_name().to_string_lossy())
                .add_str(&format!("{} {}", meta.len(), mtime.as_nanos()));
        }
    }
    Some(key.finish().to_string())
}

/// Package, version and SHA-256 of L1's kernel. What apt said is remembered for as long as its package
/// lists stay the same: each `apt-cache` call costs ~1.5 s where apt keeps no binary cache (as in
/// Debian's container images), and a run should not pay that.
fn resolve() -> Result<(String, String, String)> {
    let stamp = apt_lists_stamp();
    let memo = moat_artifacts::cache::root().join("rig-kernel/.apt-resolution");
    if let (Some(stamp), Ok(text)) = (&stamp, fs::read_to_string(&memo))
        && let [s, package, version, sha256] = text.lines().collect::<Vec<_>>()[..]
        && s == stamp
    {
        return Ok((package.into(), version.into(), sha256.into()));
    }
    let package = package_name()?;
    let (version, sha256) = candidate(&package)?;
    if let (Some(stamp), Some(dir)) = (stamp, memo.parent()) {
        let tmp = memo.with_extension(format!("tmp-{}", std::process::id()));
        let text = format!("{stamp}\n{package}\n{version}\n{sha256}\n");
        let saved = fs::create_dir_all(dir)
            .and_then(|()| fs::write(&tmp, text))
            .and_then(|()| fs::rename(&tmp, &memo));
        if let Err(e) = saved {
            let _ = fs::remove_file(&tmp);
            tracing::debug!("cannot remember apt's answer at {}: {e}", memo.display());
        }
    }
    Ok((package, version, sha256))
}

/// Returns L1's kernel, fetching and caching it on first use.
pub fn prepare() -> Result<Kernel> {
    let (package, version, sha256) = resolve()?;
    let key = KeyBuilder::new(FORMAT)
        .add_str(&package)
        .add_str(&version)
        .add_str(&sha256)
        .add_str(&CORE_MODULES.join(","))
        .add_str(&EXTRA_MODULES.join(","))
        .finish();
    let cache = Cache::new("rig-kernel");
    let dir = match cache.lookup(&key)? {
        Some(dir) => dir,
        None => cache.get_or_build(&key, |out| build(&package, &version, out))?,
    };
    let release = fs::read_to_string(dir.join("release"))
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    Ok(Kernel {
        dir,
        package,
        version,
        release,
        key: key.to_string(),
    })
}

/// Fills a cache entry: downloads and unpacks the package, extracts `vmlinux`, copies the modules.
fn build(package: &str, version: &str, out: &Path) -> Result<()> {
    let bad = |detail: String| Error::BadPackage {
        package: package.to_string(),
        detail,
    };
    let work = tempfile::Builder::new()
        .prefix("moat-rig-kernel-")
        .tempdir()
        .map_err(|e| bad(format!("creating a temporary directory: {e}")))?;
    eprintln!("moat-rig: fetching the L1 kernel {package} {version} (once; it is cached)");
    let spec = format!("{package}={version}");
    output(
        Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(work.path()),
        "apt-get",
    )?
    .map_err(|detail| Error::PackageUnavailable {
        package: package.to_string(),
        detail,
    })?;
    let deb = fs::read_dir(work.path())
        .map_err(|e| bad(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| bad("apt-get download left no .deb".into()))?;
    let root = work.path().join("root");
    output(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb",
    )?
    .map_err(|e| bad(format!("dpkg-deb -x: {e}")))?;

    let modules_root = root.join("lib/modules");
    let release = fs::read_dir(&modules_root)
        .map_err(|e| bad(format!("{}: {e}", modules_root.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| bad("no lib/modules/<release> directory".into()))?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    let bzimage = fs::read(&vmlinuz).map_err(|e| bad(format!("{}: {e}", vmlinuz.display())))?;
    match extract_vmlinux(&bzimage) {
        Ok(elf) => fs::write(out.join("vmlinux"), elf),
        Err(why) => {
            tracing::warn!("booting the bzImage (slower): cannot extract vmlinux: {why}");
            fs::write(out.join("bzImage"), &bzimage)
        }
    }
    .map_err(|e| bad(format!("writing the kernel image: {e}")))?;

    let tree = Tree::open(&modules_root.join(&release))?;
    let mut dep_lines = String::new();
    let wanted: Vec<&str> = CORE_MODULES.iter().chain(EXTRA_MODULES).copied().collect();
    let order = modules::closure(&wanted, &mut |name, needed_by| {
        let deps = tree.deps(name, needed_by, &mut read_module)?;
        if let Some(d) = &deps {
            dep_lines.push_str(&format!("{name}: {}\n", d.join(" ")));
        }
        Ok(deps)
    })?;
    let mod_dir = out.join("modules");
    fs::create_dir_all(&mod_dir).map_err(|e| bad(e.to_string()))?;
    for name in &order {
        let src = tree
            .file(name)
            .ok_or_else(|| bad(format!("module {name} vanished")))?;
        fs::write(mod_dir.join(format!("{name}.ko")), read_module(&src)?)
            .map_err(|e| bad(format!("writing module {name}: {e}")))?;
    }
    fs::write(out.join("modules.dep"), dep_lines).map_err(|e| bad(e.to_string()))?;
    fs::write(out.join("release"), format!("{release}\n")).map_err(|e| bad(e.to_string()))?;
    fs::write(out.join("package"), format!("{package} {version}\n")).map_err(|e| bad(e.to_string()))
}

/// Reads a module file, decompressing `.ko.xz` / `.ko.zst` with `xz` / `zstd`.
fn read_module(path: &Path) -> modules::Result<Vec<u8>> {
    let io = |source| modules::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let data = fs::read(path).map_err(io)?;
    let prog = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        _ => return Ok(data),
    };
    decompress(prog, &[], &data).map_err(|e| io(std::io::Error::other(e)))
}

/// Pipes `data` through `prog -dc ARGS`.
fn decompress(prog: &str, args: &[&str], data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut child = Command::new(prog)
        .arg("-dc")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{prog}: {e}"))?;
    let fed = feeder
        .join()
        .map_err(|_| format!("{prog}: feeder thread panicked"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} -dc: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    fed.map_err(|e| format!("{prog}: writing its input: {e}"))?;
    Ok(out.stdout)
}

/// The ELF kernel inside a bzImage: its payload (boot protocol >= 2.08 gives offset and length)
/// is xz-compressed in Debian's kernels, followed by a 4-byte size that `--single-stream` ignores.
pub fn extract_vmlinux(bzimage: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let u32_at = |off: usize| {
        bzimage
            .get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS header)".into());
    }
    let protocol = bzimage
        .get(0x206..0x208)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    if protocol < 0x208 {
        return Err(format!(
            "boot protocol {protocol:#x} predates payload fields"
        ));
    }
    let setup_sects = match bzimage.get(0x1f1) {
        Some(0) | None => 4,
        Some(n) => usize::from(*n),
    };
    let (Some(off), Some(len)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err("truncated header".into());
    };
    let start = (setup_sects + 1) * 512 + off as usize;
    let payload = bzimage
        .get(start..start + len as usize)
        .ok_or("payload out of bounds")?;
    if !payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err("payload is not xz-compressed".into());
    }
    let elf = decompress("xz", &["--single-stream"], payload)?;
    if !elf.starts_with(b"\x7fELF") {
        return Err("payload did not decompress to an ELF image".into());
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_rejects_non_bzimages() {
        assert!(extract_vmlinux(b"hello").unwrap_err().contains("HdrS"));
        let mut img = vec![0u8; 0x300];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(extract_vmlinux(&img).unwrap_err().contains("out of bounds"));
    }

    #[test]
    fn extract_finds_an_xz_payload() {
        if Command::new("xz").arg("--version").output().is_err() {
            eprintln!("SKIPPED: xz is not installed");
            return;
        }
        let elf = b"\x7fELF and then the kernel".to_vec();
        let mut xz = Command::new("xz")
            .args(["-c", "--check=crc32"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        xz.stdin.take().unwrap().write_all(&elf).unwrap();
        let mut payload = xz.wait_with_output().unwrap().stdout;
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let mut img = vec![0u8; 5 * 512];
        img[0x1f1] = 4;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&[0u8; 16]);
        img.extend_from_slice(&payload);
        assert_eq!(extract_vmlinux(&img).unwrap(), elf);
    }
}
