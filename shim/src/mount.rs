//! The container's root filesystem: containerd hands the shim the snapshot as mounts
//! (`CreateTaskRequest.rootfs`, usually one overlay), and the shim mounts them at `<bundle>/rootfs`
//! before the backend sees the bundle, and unmounts them when the container is deleted — as runc's
//! shim does. Options are parsed the way containerd's `mount_linux.go` does.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// One mount from containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type (`overlay`, `bind`, ...).
    pub kind: String,
    /// Source.
    pub source: String,
    /// Options (`ro`, `lowerdir=...`, ...).
    pub options: Vec<String>,
}

/// Mount flags and the filesystem data string, split from an option list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `MS_*` flags for the first mount call.
    pub flags: libc::c_ulong,
    /// `MS_*` propagation flags, applied by a second call.
    pub propagation: libc::c_ulong,
    /// Filesystem-specific options, comma-joined.
    pub data: String,
}

/// Splits options into flags and data, as containerd does.
pub fn parse_options(options: &[String]) -> Parsed {
    let mut p = Parsed::default();
    for o in options {
        let (clear, flag): (bool, libc::c_ulong) = match o.as_str() {
            "async" => (true, libc::MS_SYNCHRONOUS),
            "atime" => (true, libc::MS_NOATIME),
            "bind" => (false, libc::MS_BIND),
            "defaults" => (false, 0),
            "dev" => (true, libc::MS_NODEV),
            "diratime" => (true, libc::MS_NODIRATIME),
            "dirsync" => (false, libc::MS_DIRSYNC),
            "exec" => (true, libc::MS_NOEXEC),
            "mand" => (false, libc::MS_MANDLOCK),
            "noatime" => (false, libc::MS_NOATIME),
            "nodev" => (false, libc::MS_NODEV),
            "nodiratime" => (false, libc::MS_NODIRATIME),
            "noexec" => (false, libc::MS_NOEXEC),
            "nomand" => (true, libc::MS_MANDLOCK),
            "norelatime" => (true, libc::MS_RELATIME),
            "nostrictatime" => (true, libc::MS_STRICTATIME),
            "nosuid" => (false, libc::MS_NOSUID),
            "rbind" => (false, libc::MS_BIND | libc::MS_REC),
            "relatime" => (false, libc::MS_RELATIME),
            "remount" => (false, libc::MS_REMOUNT),
            "ro" => (false, libc::MS_RDONLY),
            "rw" => (true, libc::MS_RDONLY),
            "strictatime" => (false, libc::MS_STRICTATIME),
            "suid" => (true, libc::MS_NOSUID),
            "sync" => (false, libc::MS_SYNCHRONOUS),
            "private" => {
                p.propagation = libc::MS_PRIVATE;
                continue;
            }
            "rprivate" => {
                p.propagation = libc::MS_PRIVATE | libc::MS_REC;
                continue;
            }
            "shared" => {
                p.propagation = libc::MS_SHARED;
                continue;
            }
            "rshared" => {
                p.propagation = libc::MS_SHARED | libc::MS_REC;
                continue;
            }
            "slave" => {
                p.propagation = libc::MS_SLAVE;
                continue;
            }
            "rslave" => {
                p.propagation = libc::MS_SLAVE | libc::MS_REC;
                continue;
            }
            "unbindable" => {
                p.propagation = libc::MS_UNBINDABLE;
                continue;
            }
            "runbindable" => {
                p.propagation = libc::MS_UNBINDABLE | libc::MS_REC;
                continue;
            }
            data => {
                if !p.data.is_empty() {
                    p.data.push(',');
                }
                p.data.push_str(data);
                continue;
            }
        };
        if clear {
            p.flags &= !flag;
        } else {
            p.flags |= flag;
        }
    }
    p
}

fn cstr(s: &[u8], what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte")))
}

fn sys_mount(
    src: Option<&CString>,
    target: &CString,
    kind: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> std::io::Result<()> {
    let p = |c: Option<&CString>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            p(src),
            target.as_ptr(),
            p(kind),
            flags,
            p(data).cast::<libc::c_void>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Page size bound on the data string the kernel accepts.
const MAX_DATA: usize = 4095;

/// Mounts `mounts` on `target` in order. On failure, whatever was mounted is unmounted again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    let t = cstr(target.as_os_str().as_bytes(), "rootfs path")?;
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, &t, target) {
            if i > 0 {
                let _ = unmount_all(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, t: &CString, target: &Path) -> Result<()> {
    let p = parse_options(&m.options);
    if p.data.len() > MAX_DATA {
        return Err(Error::InvalidArgument(format!(
            "{} mount options are {} bytes, more than the kernel's {MAX_DATA}: the image has too \
             many layers for one mount",
            m.kind,
            p.data.len()
        )));
    }
    let src = cstr(m.source.as_bytes(), "mount source")?;
    let kind = cstr(m.kind.as_bytes(), "mount type")?;
    let data = (!p.data.is_empty())
        .then(|| cstr(p.data.as_bytes(), "mount options"))
        .transpose()?;
    let ctx = || format!("mounting {} {} on {}", m.kind, m.source, target.display());
    sys_mount(Some(&src), t, Some(&kind), p.flags, data.as_ref())
        .map_err(|e| Error::io(ctx(), e))?;
    let ro_bind = libc::MS_BIND | libc::MS_RDONLY;
    if p.flags & ro_bind == ro_bind {
        let fl = p.flags | libc::MS_REMOUNT;
        if let Err(e) = sys_mount(None, t, None, fl, None) {
            let _ = unmount_all(target);
            return Err(Error::io(format!("{}: read-only remount", ctx()), e));
        }
    }
    if p.propagation != 0
        && let Err(e) = sys_mount(None, t, None, p.propagation, None)
    {
        let _ = unmount_all(target);
        return Err(Error::io(format!("{}: propagation", ctx()), e));
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (lazily, so a busy mount cannot fail the delete).
/// Nothing mounted is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    let t = cstr(target.as_os_str().as_bytes(), "rootfs path")?;
    for _ in 0..64 {
        // SAFETY: `t` is a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(Error::io(format!("unmounting {}", target.display()), e)),
            };
        }
    }
    Err(Error::FailedPrecondition(format!(
        "{} still has mounts after 64 unmounts",
        target.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_like_containerd() {
        let p = parse_options(&s(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l1:/l2",
            "nosuid",
            "ro",
            "rw",
            "rprivate",
        ]));
        assert_eq!(p.flags, libc::MS_NOSUID);
        assert_eq!(p.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(p.data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2");
        let b = parse_options(&s(&["rbind", "ro"]));
        assert_eq!(b.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert!(b.data.is_empty());
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn bind_mount_and_unmount_a_directory() {
        if !root() {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("marker"), b"x").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let m = Mount {
            kind: "bind".into(),
            source: src.path().display().to_string(),
            options: s(&["rbind", "ro"]),
        };
        mount_all(&[m], dst.path()).unwrap();
        assert!(dst.path().join("marker").exists());
        let e = std::fs::write(dst.path().join("new"), b"y").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        unmount_all(dst.path()).unwrap();
        assert!(!dst.path().join("marker").exists());
        unmount_all(dst.path()).unwrap();
    }

    #[test]
    fn a_failed_mount_leaves_nothing() {
        if !root() {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let dst = tempfile::tempdir().unwrap();
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: s(&["lowerdir=/nonexistent/moat-test"]),
        };
        let e = mount_all(&[m], dst.path()).unwrap_err().to_string();
        assert!(e.contains("mounting overlay"), "{e}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&dst.path().display().to_string()));
        let huge = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!("lowerdir={}", "/l".repeat(3000))],
        };
        let e = mount_all(&[huge], dst.path()).unwrap_err().to_string();
        assert!(e.contains("too many layers"), "{e}");
    }
}
