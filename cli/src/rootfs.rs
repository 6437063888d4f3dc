//! A copy-on-write root for `moat run`: the container writes to an overlay whose lower layer is the
//! (cached, shared) root file system, which is never modified.
//!
//! The overlay is mounted in a private mount namespace that `moat run` enters first, so the mount is
//! invisible to the host and disappears with the process even if it is killed; the upper and work
//! directories live in the run's state directory and are removed when the run ends.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An overlay error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root file system directory is unusable.
    #[error("rootfs {path}: {why}")]
    BadRootfs {
        /// The directory given.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A `Result` with the overlay [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::BadRootfs {
        path: p.to_path_buf(),
        why: "path contains a NUL byte".into(),
    })
}

/// Moves this process into a new mount namespace whose mounts do not propagate back to the host.
/// Call it while the process has a single thread (before the reaper or any other thread starts).
pub fn enter_private_mount_namespace() -> Result<()> {
    // SAFETY: unshare with a constant flag; affects only this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(
            io_err("unshare(CLONE_NEWNS) for moat run's private mounts")(io::Error::last_os_error()),
        );
    }
    // Host mounts still propagate in; ours never propagate out.
    // SAFETY: remounts "/" recursively as a slave; the strings are static and NUL-terminated.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io_err("making / a slave mount in moat run's namespace")(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A mounted overlay; unmounted and removed on drop.
#[derive(Debug)]
pub struct Overlay {
    dir: PathBuf,
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mounts `lower` (read-only, never written) under a writable layer kept in `dir` (created
    /// here; must not exist). The merged tree is at [`Overlay::merged`].
    pub fn mount(lower: &Path, dir: &Path) -> Result<Self> {
        let lower = std::fs::canonicalize(lower).map_err(|e| Error::BadRootfs {
            path: lower.to_path_buf(),
            why: format!("{e}: give an existing root file system directory"),
        })?;
        if !lower.is_dir() {
            return Err(Error::BadRootfs {
                path: lower,
                why: "not a directory".into(),
            });
        }
        let s = lower.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            return Err(Error::BadRootfs {
                path: lower.clone(),
                why: "overlayfs cannot take a lower directory whose path has ',', ':' or '\\': \
                      move or link it elsewhere"
                    .into(),
            });
        }
        std::fs::create_dir(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut ov = Self {
            dir: dir.to_path_buf(),
            merged: dir.join("merged"),
            mounted: false,
        };
        for sub in ["upper", "work", "merged"] {
            let p = dir.join(sub);
            std::fs::create_dir(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let opts = CString::new(opts).map_err(|_| Error::BadRootfs {
            path: lower.clone(),
            why: "path contains a NUL byte".into(),
        })?;
        let target = cstr(&ov.merged)?;
        // SAFETY: mounts overlayfs with valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(io_err(format!(
                "mounting an overlay over {} (is overlayfs available? see `moat check`)",
                lower.display()
            ))(io::Error::last_os_error()));
        }
        ov.mounted = true;
        Ok(ov)
    }

    /// The merged, writable root.
    pub fn merged(&self) -> &Path {
        &self.merged
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted
            && let Ok(target) = cstr(&self.merged)
        {
            // SAFETY: unmounts our own mount point; a valid NUL-terminated path.
            let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            if rc != 0 {
                tracing::warn!(
                    "unmounting {}: {}",
                    self.merged.display(),
                    io::Error::last_os_error()
                );
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("removing {}: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_is_never_written() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting overlayfs needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        std::fs::write(lower.join("f"), "lower").unwrap();
        let dir = t.path().join("ov");
        // Mount in a child so this test process's mount namespace stays untouched.
        let child = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_FS | CLONE_NEWNS) gives this thread its own mount namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) };
            assert_eq!(rc, 0);
            // SAFETY: as in enter_private_mount_namespace.
            unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            let ov = Overlay::mount(&lower, &dir).unwrap();
            std::fs::write(ov.merged().join("f"), "upper").unwrap();
            std::fs::write(ov.merged().join("new"), "x").unwrap();
            assert_eq!(
                std::fs::read_to_string(ov.merged().join("f")).unwrap(),
                "upper"
            );
            drop(ov);
            assert!(!dir.exists());
            lower
        });
        let lower = child.join().unwrap();
        assert_eq!(std::fs::read_to_string(lower.join("f")).unwrap(), "lower");
        assert!(!lower.join("new").exists());
        let bad = Overlay::mount(&t.path().join("nope"), &t.path().join("ov2")).unwrap_err();
        assert!(bad.to_string().contains("nope"), "{bad}");
    }
}
