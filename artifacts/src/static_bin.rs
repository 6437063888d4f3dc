//! Static binaries built from this source tree: programs that run where there are no libraries
//! (a microVM guest's initramfs, a bare busybox rootfs).
//!
//! [`build`] runs cargo for one package alone, for the explicit target [`TARGET`], with
//! `RUSTFLAGS=-C target-feature=+crt-static`, stripped, size-optimised with LTO, into a target
//! directory of its own (`target/<package>-static`): the flags reach only that build, and the
//! workspace's own target directory never sees them. Cargo decides whether anything needs
//! recompiling; an up-to-date build takes a fraction of a second.
//!
//! Two binaries are built this way: `moat-agent` (see [`crate::guest::agent`], which keeps its
//! own `$MOAT_AGENT` and `$MOAT_AGENT_TARGET_DIR` overrides) and `moat-bench-probe`, the program
//! `moat bench` runs in every sandbox ([`probe`]; `$MOAT_BENCH_PROBE` names a prebuilt one instead).
//!
//! ```no_run
//! let probe = moat_artifacts::static_bin::probe()?;
//! println!("copy {} into the rootfs", probe.display());
//! # Ok::<(), moat_artifacts::static_bin::Error>(())
//! ```

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target static binaries are built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The benchmark probe's package (and binary) name.
pub const PROBE: &str = "moat-bench-probe";

/// Errors while building or checking a static binary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the package failed (or could not start).
    #[error("building {package}: {reason}")]
    Build {
        /// The package.
        package: String,
        /// What went wrong, with cargo's output.
        reason: String,
    },
    /// The binary is not a static ELF executable.
    #[error(
        "{path}: {reason}; it runs where there are no libraries, so it must be linked statically \
         (-C target-feature=+crt-static)"
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The source tree this library was compiled from (where the packages' sources are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where [`build`] puts `package`'s static build: `<workspace>/target/<package>-static`.
pub fn target_dir(package: &str) -> PathBuf {
    workspace_root().join(format!("target/{package}-static"))
}

/// Where binary `bin` lands in a static build in `target_dir`.
pub fn output(target_dir: &Path, bin: &str) -> PathBuf {
    target_dir.join(TARGET).join("release").join(bin)
}

/// Builds `package` statically into [`target_dir`] and returns its binary `bin`, checked static.
pub fn build(package: &str, bin: &str) -> Result<PathBuf> {
    build_in(package, bin, &target_dir(package))
}

/// [`build`] into an explicit target directory.
pub fn build_in(package: &str, bin: &str, target_dir: &Path) -> Result<PathBuf> {
    let failed = |reason: String| Error::Build {
        package: package.to_string(),
        reason,
    };
    let root = workspace_root();
    if !root.join("Cargo.toml").is_file() {
        return Err(failed(format!(
            "the moat source tree ({}) is not here to build it from",
            root.display()
        )));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // The static flag for this build only: RUSTFLAGS with an explicit --target reaches the
        // target's crates, not build scripts or proc macros, and nothing else of the workspace.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        // Small: the agent's initramfs is copied and unpacked at every boot, and the probe is
        // copied into every rootfs; the probe's hot loops are system calls, which size-optimised
        // code makes just as fast.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .output()
        .map_err(|e| failed(format!("cannot run {}: {e}", cargo.to_string_lossy())))?;
    if !out.status.success() {
        return Err(failed(format!(
            "cargo build -p {package} exited with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let path = output(target_dir, bin);
    check_static(&path)?;
    Ok(path)
}

/// Returns a static `moat-bench-probe`: `$MOAT_BENCH_PROBE` if set, else built from source into
/// `target/moat-bench-probe-static` (its own directory, so it never waits for the agent's build).
pub fn probe() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOAT_BENCH_PROBE").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        check_static(&path)?;
        return Ok(path);
    }
    let root = workspace_root();
    if !root.join("bench/probe/Cargo.toml").is_file() {
        return Err(Error::Build {
            package: PROBE.to_string(),
            reason: format!(
                "the moat source tree ({}) is not here to build it from; set MOAT_BENCH_PROBE to a \
                 static moat-bench-probe binary",
                root.display()
            ),
        });
    }
    build(PROBE, PROBE)
}

/// Checks that `path` is a 64-bit x86 ELF executable without a program interpreter (a static
/// binary): where it runs there is no dynamic loader or library.
pub fn check_static(path: &Path) -> Result<()> {
    let not = |reason: &str| Error::NotStatic {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut head = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| not(&format!("cannot read it: {e}")))?;
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        head.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF magic, 64-bit class, little-endian, x86-64 machine.
    if head.get(..6) != Some(b"\x7fELF\x02\x01") || u16_at(18) != Some(62) {
        return Err(not("it is not a 64-bit x86 ELF file"));
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Err(not("its ELF header is truncated"));
    };
    for i in 0..usize::from(phnum) {
        let off = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        let Some(kind) = head.get(off..off + 4) else {
            return Err(not("its program headers are out of reach"));
        };
        const PT_INTERP: [u8; 4] = 3u32.to_le_bytes();
        if kind == PT_INTERP {
            return Err(not(
                "it is dynamically linked (it has a program interpreter)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let dir = target_dir("moat-agent");
        assert!(
            dir.ends_with("target/moat-agent-static"),
            "{}",
            dir.display()
        );
        assert!(output(&dir, "x").ends_with("x86_64-unknown-linux-gnu/release/x"));
    }

    #[test]
    fn static_check() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        fs::write(&text, "#!/bin/sh\n").unwrap();
        let e = check_static(&text).unwrap_err();
        assert!(e.to_string().contains("not a 64-bit x86 ELF"), "{e}");
        // Any dynamically linked system binary.
        let e = check_static(Path::new("/bin/sh")).unwrap_err();
        assert!(e.to_string().contains("dynamically linked"), "{e}");
        if Path::new("/bin/busybox").exists() {
            check_static(Path::new("/bin/busybox")).unwrap();
        } else {
            eprintln!(
                "SKIPPED: static positive case: /bin/busybox (busybox-static) is not installed"
            );
        }
    }
}
