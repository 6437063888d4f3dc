//! A container's root file system in the guest: its read-only image disk mounted at
//! `<run>/images/<id>/lower`, and at `<run>/bundles/<id>/rootfs` either an overlay of it with a
//! writable upper layer on a tmpfs of its own (`<run>/images/<id>/rw`) or, for a read-only root, a
//! read-only bind mount of it. Nothing is written to the disk (it is the host's image file) and
//! everything is undone, in reverse, when the container goes or its creation fails.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::failure::{Failure, Outcome};

/// The file systems a rootfs image may have.
pub const FSTYPES: [&str; 2] = ["erofs", "ext4"];

/// Where the agent keeps its things in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Where the disks are (`/dev`).
    pub dev: PathBuf,
    /// The agent's directory (`/run/moat`, on the guest's `/run` tmpfs): `images/`, `bundles/`
    /// and the containers' `state/`.
    pub run: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            dev: PathBuf::from("/dev"),
            run: PathBuf::from("/run/moat"),
        }
    }
}

impl Paths {
    /// `moat-sandbox`'s state root.
    pub fn state(&self) -> PathBuf {
        self.run.join("state")
    }

    /// Where container `id`'s image and writable layer are mounted.
    pub fn image(&self, id: &str) -> PathBuf {
        self.run.join("images").join(id)
    }

    /// Container `id`'s bundle directory.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.run.join("bundles").join(id)
    }

    /// Container `id`'s root file system (`root.path` of its spec).
    pub fn rootfs(&self, id: &str) -> PathBuf {
        self.bundle(id).join("rootfs")
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))
}

fn mount(source: &Path, target: &Path, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    let (source, target) = (cpath(source)?, cpath(target)?);
    let fstype = CString::new(fstype)?;
    let data = CString::new(data)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cpath(target)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What was mounted and made for one container; [`Mounted::undo`] takes it down.
#[derive(Debug, Default)]
pub struct Mounted {
    /// Mount points, in the order mounted.
    mounts: Vec<PathBuf>,
    /// Directories made, in the order made.
    dirs: Vec<PathBuf>,
}

impl Mounted {
    fn mkdir(&mut self, dir: PathBuf) -> Outcome<()> {
        std::fs::create_dir(&dir).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Failure::new(
                    moat_agent_proto::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists already: a container of this id is (or was) in the guest",
                        dir.display()
                    ),
                )
            } else {
                Failure::internal(&format!("creating {}", dir.display()), e)
            }
        })?;
        self.dirs.push(dir);
        Ok(())
    }

    fn mount(
        &mut self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: u64,
        data: &str,
        hint: &str,
    ) -> Outcome<()> {
        mount(source, target, fstype, flags, data).map_err(|e| {
            Failure::internal(
                &format!(
                    "mounting {} ({fstype}) on {}{hint}",
                    source.display(),
                    target.display()
                ),
                e,
            )
        })?;
        self.mounts.push(target.to_path_buf());
        Ok(())
    }

    /// Unmounts everything (last first) and removes the directories made. Goes on past errors and
    /// reports them all.
    pub fn undo(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        while let Some(m) = self.mounts.pop() {
            let r = umount(&m, 0).or_else(|e| {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    return Err(e);
                }
                tracing::warn!("{} is busy; detaching it", m.display());
                umount(&m, libc::MNT_DETACH)
            });
            if let Err(e) = r {
                errors.push(format!("unmounting {}: {e}", m.display()));
            }
        }
        while let Some(d) = self.dirs.pop() {
            if let Err(e) = std::fs::remove_dir(&d)
                && e.kind() != io::ErrorKind::NotFound
            {
                errors.push(format!("removing {}: {e}", d.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Checks a rootfs's device name and file system type, and that the disk is there.
pub fn check(paths: &Paths, device: &str, fstype: &str) -> Outcome<PathBuf> {
    moat_agent_proto::validate_device(device).map_err(Failure::invalid)?;
    if !FSTYPES.contains(&fstype) {
        return Err(Failure::invalid(format!(
            "rootfs fstype {fstype:?} is not supported: build the image as erofs or ext4"
        )));
    }
    let disk = paths.dev.join(device);
    match std::fs::metadata(&disk) {
        Ok(m) if m.file_type().is_block_device() => {
            wait_for_medium(&disk)?;
            Ok(disk)
        }
        Ok(_) => Err(Failure::precondition(format!(
            "{} is not a block device",
            disk.display()
        ))),
        Err(e) => Err(Failure::precondition(format!(
            "no disk {} in the guest ({e}): the host must attach the image before it creates \
             the container",
            disk.display()
        ))),
    }
}

/// How long a spare disk may take to show the image the host just put in it.
const MEDIUM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until `disk` has a non-zero size. A pod's VM boots with empty spare disks; the host fills
/// one (moat-vmm's `disk N`) right before it creates a container from it, and the guest kernel
/// learns the new capacity from a configuration-change interrupt, asynchronously.
fn wait_for_medium(disk: &Path) -> Outcome<()> {
    use std::os::fd::AsRawFd;
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let f = std::fs::File::open(disk)
        .map_err(|e| Failure::precondition(format!("cannot open {}: {e}", disk.display())))?;
    let deadline = std::time::Instant::now() + MEDIUM_TIMEOUT;
    loop {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 into `size`, a live local.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size) };
        if rc < 0 {
            return Err(Failure::precondition(format!(
                "cannot read the size of {}: {}",
                disk.display(),
                io::Error::last_os_error()
            )));
        }
        if size > 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Failure::precondition(format!(
                "{} is still empty after {MEDIUM_TIMEOUT:?}: the host did not attach an image to it",
                disk.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Mounts container `id`'s root file system from `disk` ([`check`]ed), at [`Paths::rootfs`].
/// On failure nothing is left behind.
pub fn mount_rootfs(
    paths: &Paths,
    id: &str,
    disk: &Path,
    fstype: &str,
    readonly: bool,
) -> Outcome<Mounted> {
    let mut m = Mounted::default();
    match mount_into(&mut m, paths, id, disk, fstype, readonly) {
        Ok(()) => Ok(m),
        Err(e) => {
            if let Err(undo) = m.undo() {
                tracing::error!("cleaning up after a failed rootfs mount of {id}: {undo}");
            }
            Err(e)
        }
    }
}

fn mount_into(
    m: &mut Mounted,
    paths: &Paths,
    id: &str,
    disk: &Path,
    fstype: &str,
    readonly: bool,
) -> Outcome<()> {
    for parent in [paths.run.join("images"), paths.run.join("bundles")] {
        std::fs::create_dir_all(&parent)
            .map_err(|e| Failure::internal(&format!("creating {}", parent.display()), e))?;
    }
    let image = paths.image(id);
    let lower = image.join("lower");
    m.mkdir(image.clone())?;
    m.mkdir(lower.clone())?;
    // ext4: `noload` skips journal replay, so the image is never written to.
    let data = if fstype == "ext4" { "noload" } else { "" };
    m.mount(
        disk,
        &lower,
        fstype,
        libc::MS_RDONLY,
        data,
        &format!(" read-only (is the image really {fstype}?)"),
    )?;
    let rootfs = paths.rootfs(id);
    m.mkdir(paths.bundle(id))?;
    m.mkdir(rootfs.clone())?;
    if readonly {
        m.mount(&lower, &rootfs, "", libc::MS_BIND, "", "")?;
        mount(
            Path::new(""),
            &rootfs,
            "",
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            "",
        )
        .map_err(|e| Failure::internal(&format!("making {} read-only", rootfs.display()), e))?;
        return Ok(());
    }
    let rw = image.join("rw");
    m.mkdir(rw.clone())?;
    m.mount(Path::new("tmpfs"), &rw, "tmpfs", 0, "mode=0755", "")?;
    let (upper, work) = (rw.join("upper"), rw.join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir(d)
            .map_err(|e| Failure::internal(&format!("creating {}", d.display()), e))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    m.mount(Path::new("overlay"), &rootfs, "overlay", 0, &data, "")
}
