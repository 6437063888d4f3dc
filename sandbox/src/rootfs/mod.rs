//! The container's file system view: propagation, the spec's mounts, `/dev`, `pivot_root`,
//! read-only and masked paths. Runs in the container's init, in its new mount namespace, through
//! [`Syscall`] (so the order is unit-tested) — runc's `prepareRootfs`/`finalizeRootfs`.

use std::path::{Path, PathBuf};

use crate::syscall::Syscall;

pub mod options;
pub mod paths;
#[cfg(test)]
mod tests;

use options::MountOptions;
use paths::{locked_flags, mkdir_all, secure_join, touch};

/// What a spec mount is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount (`bind`/`rbind` option or type).
    Bind,
    /// `cgroup` or `cgroup2`: the container's cgroups.
    Cgroup,
    /// Any other file system (proc, sysfs, tmpfs, devpts, mqueue, ...).
    Other,
}

/// One entry of `mounts`, checked and parsed.
#[derive(Clone, Debug)]
pub struct MountPlan {
    /// Destination inside the container (absolute).
    pub dest: PathBuf,
    /// What it is.
    pub kind: MountKind,
    /// Source: a host path for bind mounts (absolute), the device name otherwise.
    pub source: Option<PathBuf>,
    /// File-system type.
    pub fstype: Option<String>,
    /// Parsed options.
    pub opts: MountOptions,
}

/// A device node to make in `/dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Path inside the container.
    pub path: PathBuf,
    /// `S_IFCHR`/`S_IFBLK`/`S_IFIFO` and the permission bits.
    pub mode: libc::mode_t,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The devices every container gets (runc's defaults).
pub fn default_devices() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Device {
        path: Path::new("/dev").join(name),
        mode: libc::S_IFCHR | 0o666,
        major,
        minor,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// A cgroup hierarchy as seen from inside the container.
#[derive(Clone, Debug)]
pub struct CgroupSubmount {
    /// Directory name under the cgroup mount (`cpu,cpuacct`, `systemd`, `unified`); empty on v2.
    pub name: String,
    /// `cgroup` or `cgroup2`.
    pub fstype: &'static str,
    /// Mount data (`cpu,cpuacct`, `name=systemd`).
    pub data: String,
    /// The container's cgroup directory on the host (bound in when there is no cgroup namespace).
    pub host_dir: PathBuf,
}

/// How `cgroup` mounts are made.
#[derive(Clone, Debug, Default)]
pub struct CgroupView {
    /// The container has its own cgroup namespace (mount the hierarchies; else bind its dirs).
    pub new_ns: bool,
    /// One entry (v2) or one per hierarchy (v1, under a tmpfs).
    pub submounts: Vec<CgroupSubmount>,
    /// The host is cgroup v2.
    pub v2: bool,
}

/// Everything the init needs to build the container's file system.
#[derive(Clone, Debug, Default)]
pub struct RootfsPlan {
    /// The rootfs on the host (absolute).
    pub rootfs: PathBuf,
    /// `root.readonly`.
    pub readonly: bool,
    /// `linux.rootfsPropagation` (default `MS_SLAVE | MS_REC`).
    pub propagation: libc::c_ulong,
    /// The spec's mounts, in order.
    pub mounts: Vec<MountPlan>,
    /// Create `/dev` nodes and symlinks (false when `/dev` is bind-mounted from somewhere).
    pub setup_dev: bool,
    /// Default devices, then `linux.devices`.
    pub devices: Vec<Device>,
    /// In a user namespace: bind-mount device nodes from the host instead of `mknod`.
    pub bind_devices: bool,
    /// Add `/dev/core -> /proc/kcore` (the host has `/proc/kcore`, as runc does).
    pub dev_core: bool,
    /// `linux.maskedPaths`.
    pub masked: Vec<PathBuf>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<PathBuf>,
    /// How to mount cgroups.
    pub cgroup: CgroupView,
}

/// A failed step, described for the caller of `create`.
pub type StepResult = std::result::Result<(), String>;

fn step(r: std::io::Result<()>, what: impl FnOnce() -> String) -> StepResult {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Mounts everything and pivots into the rootfs.
pub fn prepare<S: Syscall>(sys: &S, plan: &RootfsPlan) -> StepResult {
    let root = plan.rootfs.as_path();
    step(
        sys.mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | plan.propagation,
            None,
        ),
        || "setting the propagation of / (linux.rootfsPropagation)".into(),
    )?;
    step(
        sys.mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None),
        || format!("bind-mounting the rootfs {} onto itself", root.display()),
    )?;
    for (i, m) in plan.mounts.iter().enumerate() {
        mount_one(sys, plan, m).map_err(|e| format!("mounts[{i}] ({}): {e}", m.dest.display()))?;
    }
    if plan.setup_dev {
        setup_dev(sys, plan)?;
    }
    let shared = plan.propagation & libc::MS_SHARED != 0;
    if shared {
        // pivot_root refuses shared mounts around it: make the old root and the rootfs private
        // for the switch, and share the new root again after it.
        for p in [Path::new("/"), root] {
            step(sys.mount(None, p, None, libc::MS_PRIVATE, None), || {
                format!("making {} private for pivot_root", p.display())
            })?;
        }
    }
    step(sys.pivot_root(root), || {
        format!("pivot_root into {}", root.display())
    })?;
    if shared {
        step(
            sys.mount(
                None,
                Path::new("/"),
                None,
                libc::MS_REC | plan.propagation,
                None,
            ),
            || "setting the propagation of the new root".into(),
        )?;
    }
    Ok(())
}

fn resolve(root: &Path, dest: &Path) -> std::result::Result<PathBuf, String> {
    secure_join(root, dest).map_err(|e| format!("resolving {} in the rootfs: {e}", dest.display()))
}

fn mount_one<S: Syscall>(sys: &S, plan: &RootfsPlan, m: &MountPlan) -> StepResult {
    let target = resolve(&plan.rootfs, &m.dest)?;
    let flags = m.opts.flags;
    let data = Some(m.opts.data.as_str()).filter(|d| !d.is_empty());
    match m.kind {
        MountKind::Bind => {
            let source = m.source.as_deref().ok_or("a bind mount needs a source")?;
            if source.is_dir() {
                step(mkdir_all(&target), || {
                    format!("creating {}", target.display())
                })?;
            } else {
                step(touch(&target), || format!("creating {}", target.display()))?;
            }
            bind(sys, source, &target, flags)?;
        }
        MountKind::Cgroup => mount_cgroup(sys, plan, &target, flags)?,
        MountKind::Other => {
            step(mkdir_all(&target), || {
                format!("creating {}", target.display())
            })?;
            let fstype = m.fstype.as_deref();
            let source = m.source.as_deref().or(fstype.map(Path::new));
            let r = sys.mount(source, &target, fstype, flags, data);
            match (r, fstype) {
                // Without owning the net/ipc namespace (a user namespace joining the host's),
                // sysfs and mqueue cannot be mounted: bind the host's, as runc does.
                (Err(e), Some(t @ ("sysfs" | "mqueue")))
                    if e.raw_os_error() == Some(libc::EPERM) =>
                {
                    let host = if t == "sysfs" { "/sys" } else { "/dev/mqueue" };
                    bind(sys, Path::new(host), &target, flags | libc::MS_REC)?;
                }
                (r, _) => step(r, || {
                    format!("mounting {} on {}", fstype.unwrap_or("?"), target.display())
                })?,
            }
        }
    }
    if m.opts.rec_set != 0 || m.opts.rec_clear != 0 {
        step(
            sys.mount_setattr(&target, m.opts.rec_set, m.opts.rec_clear),
            || "applying recursive mount attributes".into(),
        )?;
    }
    for p in &m.opts.propagation {
        step(sys.mount(None, &target, None, *p, None), || {
            "setting propagation".into()
        })?;
    }
    Ok(())
}

/// Bind-mounts `source` on `target`, then remounts with the other flags (a bind mount ignores
/// them at first), keeping the flags locked on the source mount.
fn bind<S: Syscall>(sys: &S, source: &Path, target: &Path, flags: libc::c_ulong) -> StepResult {
    step(
        sys.mount(
            Some(source),
            target,
            None,
            libc::MS_BIND | (flags & libc::MS_REC),
            None,
        ),
        || format!("bind-mounting {} on {}", source.display(), target.display()),
    )?;
    let extra = flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
    if extra != 0 {
        remount(sys, target, extra)?;
    }
    Ok(())
}

fn remount<S: Syscall>(sys: &S, target: &Path, flags: libc::c_ulong) -> StepResult {
    let f = flags | libc::MS_BIND | libc::MS_REMOUNT;
    match sys.mount(None, target, None, f, None) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => step(
            sys.mount(None, target, None, f | locked_flags(target), None),
            || format!("remounting {}", target.display()),
        ),
        r => step(r, || format!("remounting {}", target.display())),
    }
}

fn mount_cgroup<S: Syscall>(
    sys: &S,
    plan: &RootfsPlan,
    target: &Path,
    flags: libc::c_ulong,
) -> StepResult {
    let view = &plan.cgroup;
    step(mkdir_all(target), || {
        format!("creating {}", target.display())
    })?;
    if view.v2 {
        let Some(sub) = view.submounts.first() else {
            return Ok(());
        };
        if view.new_ns {
            return step(
                sys.mount(
                    Some(Path::new("cgroup2")),
                    target,
                    Some("cgroup2"),
                    flags,
                    None,
                ),
                || "mounting cgroup2".into(),
            );
        }
        return bind(sys, &sub.host_dir, target, flags | libc::MS_REC);
    }
    step(
        sys.mount(
            Some(Path::new("tmpfs")),
            target,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("mode=755"),
        ),
        || "mounting the tmpfs for cgroup v1 hierarchies".into(),
    )?;
    for sub in &view.submounts {
        let dir = target.join(&sub.name);
        step(mkdir_all(&dir), || format!("creating {}", dir.display()))?;
        if view.new_ns {
            let data = Some(sub.data.as_str()).filter(|d| !d.is_empty());
            step(
                sys.mount(
                    Some(Path::new("cgroup")),
                    &dir,
                    Some(sub.fstype),
                    flags,
                    data,
                ),
                || format!("mounting cgroup {}", sub.name),
            )?;
        } else {
            bind(sys, &sub.host_dir, &dir, flags | libc::MS_REC)?;
        }
        if sub.name.contains(',') {
            for part in sub.name.split(',') {
                let link = target.join(part);
                match sys.symlink(Path::new(&sub.name), &link) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                        return Err(format!("linking {}: {e}", link.display()));
                    }
                    _ => {}
                }
            }
        }
    }
    if flags & libc::MS_RDONLY != 0 {
        remount(
            sys,
            target,
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        )?;
    }
    Ok(())
}

fn setup_dev<S: Syscall>(sys: &S, plan: &RootfsPlan) -> StepResult {
    let root = &plan.rootfs;
    for d in &plan.devices {
        let target = resolve(root, &d.path)?;
        if plan.bind_devices {
            step(touch(&target), || format!("creating {}", target.display()))?;
            step(
                sys.mount(Some(&d.path), &target, None, libc::MS_BIND, None),
                || format!("bind-mounting device {}", d.path.display()),
            )?;
            continue;
        }
        if let Some(parent) = target.parent() {
            step(mkdir_all(parent), || {
                format!("creating {}", parent.display())
            })?;
        }
        let _ = std::fs::remove_file(&target);
        step(
            sys.mknod(&target, d.mode, libc::makedev(d.major, d.minor)),
            || format!("creating device {}", d.path.display()),
        )?;
        step(sys.chown(&target, d.uid, d.gid), || {
            format!("chown {}", d.path.display())
        })?;
    }
    let dev = resolve(root, Path::new("/dev"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if plan.dev_core {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match sys.symlink(Path::new(target), &dev.join(name)) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                return Err(format!("linking /dev/{name}: {e}"));
            }
            _ => {}
        }
    }
    let ptmx = dev.join("ptmx");
    let _ = std::fs::remove_file(&ptmx);
    step(sys.symlink(Path::new("pts/ptmx"), &ptmx), || {
        "linking /dev/ptmx".into()
    })
}

/// After the console exists: `/dev` read-only if its mount asked, then the root.
pub fn finalize<S: Syscall>(sys: &S, plan: &RootfsPlan) -> StepResult {
    for m in &plan.mounts {
        if m.dest == Path::new("/dev")
            && m.opts.flags & libc::MS_RDONLY != 0
            && m.kind == MountKind::Other
        {
            remount(
                sys,
                Path::new("/dev"),
                libc::MS_RDONLY | (m.opts.flags & !libc::MS_REMOUNT),
            )?;
        }
    }
    if plan.readonly {
        remount(sys, Path::new("/"), libc::MS_RDONLY)?;
    }
    Ok(())
}

/// `linux.readonlyPaths`, then `linux.maskedPaths` (after sysctls, which write below /proc/sys).
pub fn restrict_paths<S: Syscall>(sys: &S, plan: &RootfsPlan) -> StepResult {
    for p in &plan.readonly_paths {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        step(
            sys.mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None),
            || format!("linux.readonlyPaths: bind-mounting {}", p.display()),
        )?;
        let f = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | locked_flags(p);
        step(sys.mount(None, p, None, f, None), || {
            format!("linux.readonlyPaths: remounting {} read-only", p.display())
        })?;
    }
    for p in &plan.masked {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        let r = if meta.is_dir() {
            sys.mount(
                Some(Path::new("tmpfs")),
                p,
                Some("tmpfs"),
                libc::MS_RDONLY,
                None,
            )
        } else {
            sys.mount(Some(Path::new("/dev/null")), p, None, libc::MS_BIND, None)
        };
        step(r, || format!("linux.maskedPaths: masking {}", p.display()))?;
    }
    Ok(())
}
