//! Confinement: the VMM pivots into a per-VM directory in a private mount namespace, sets tight
//! resource limits, optionally becomes an unprivileged user, and drops every capability. Done on
//! the main thread before any other thread exists (mount namespaces and capabilities are
//! per-thread), after every file the VM needs is open.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::config::JailConfig;

/// Errors entering the jail.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot jail the VMM in {dir}: {step} failed: {source} (jailing needs root: CAP_SYS_ADMIN)"
)]
pub struct Error {
    dir: PathBuf,
    step: &'static str,
    source: std::io::Error,
}

/// Most open files the jailed VMM may have (vsock connections, images, eventfds).
pub const MAX_FILES: u64 = 4096;

fn check(dir: &Path, step: &'static str, rc: libc::c_long) -> Result<(), Error> {
    if rc < 0 {
        Err(Error {
            dir: dir.to_path_buf(),
            step,
            source: std::io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
}

fn cstr(dir: &Path, p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Error {
        dir: dir.to_path_buf(),
        step: "path conversion",
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

/// The path a socket at host path `p` has inside the jail rooted at `dir`.
pub fn inside(dir: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix(dir) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => p.to_path_buf(),
    }
}

/// Enters the jail described by `cfg`.
pub fn enter(cfg: &JailConfig) -> Result<(), Error> {
    let dir = cfg.dir.as_path();
    let c_dir = cstr(dir, dir)?;
    let dot = c".";
    let root = c"/";
    // SAFETY: plain syscalls with valid NUL-terminated paths and null pointers where the kernel
    // accepts them; results are checked.
    unsafe {
        check(
            dir,
            "unshare(CLONE_NEWNS)",
            libc::unshare(libc::CLONE_NEWNS).into(),
        )?;
        check(
            dir,
            "making mounts private",
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
            .into(),
        )?;
        check(
            dir,
            "bind-mounting the jail directory",
            libc::mount(
                c_dir.as_ptr(),
                c_dir.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
            .into(),
        )?;
        check(dir, "chdir", libc::chdir(c_dir.as_ptr()).into())?;
        check(
            dir,
            "pivot_root",
            libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()),
        )?;
        check(
            dir,
            "detaching the old root",
            libc::umount2(dot.as_ptr(), libc::MNT_DETACH).into(),
        )?;
        check(dir, "chdir /", libc::chdir(root.as_ptr()).into())?;
    }
    set_rlimits(dir)?;
    if let Some(gid) = cfg.gid {
        // SAFETY: setgroups with an empty list and setgid; results checked.
        unsafe {
            check(
                dir,
                "setgroups",
                libc::setgroups(0, std::ptr::null()).into(),
            )?;
            check(dir, "setgid", libc::setgid(gid).into())?;
        }
    }
    if let Some(uid) = cfg.uid {
        // SAFETY: setuid; result checked.
        unsafe { check(dir, "setuid", libc::setuid(uid).into())? };
    }
    drop_capabilities(dir)
}

fn set_rlimits(dir: &Path) -> Result<(), Error> {
    let limits = [(libc::RLIMIT_NOFILE, MAX_FILES), (libc::RLIMIT_CORE, 0)];
    for (res, max) in limits {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid rlimit struct; results checked.
        unsafe {
            check(dir, "getrlimit", libc::getrlimit(res, &mut cur).into())?;
            let new = libc::rlimit {
                rlim_cur: cur.rlim_cur.min(max),
                rlim_max: cur.rlim_max.min(max),
            };
            check(dir, "setrlimit", libc::setrlimit(res, &new).into())?;
        }
    }
    Ok(())
}

/// Empties the bounding, ambient, inheritable, permitted and effective capability sets.
fn drop_capabilities(dir: &Path) -> Result<(), Error> {
    // SAFETY: prctl and capset with valid arguments; results checked. PR_CAPBSET_DROP fails with
    // EINVAL past the last capability, which ends the loop.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) < 0 {
                break;
            }
            check(
                dir,
                "dropping the capability bounding set",
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0).into(),
            )?;
        }
        check(
            dir,
            "clearing ambient capabilities",
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
            .into(),
        )?;
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let d = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check(
            dir,
            "capset",
            libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()),
        )?;
        check(
            dir,
            "no_new_privs",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_rewritten_relative_to_the_jail() {
        let d = Path::new("/run/moat/vm1");
        assert_eq!(
            inside(d, Path::new("/run/moat/vm1/v.sock")),
            PathBuf::from("/v.sock")
        );
        assert_eq!(
            inside(d, Path::new("/elsewhere")),
            PathBuf::from("/elsewhere")
        );
    }
}
