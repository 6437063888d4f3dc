//! The system calls a container's init process makes while it sets itself up, behind a trait.
//!
//! The setup code ([`crate::process::init`], [`crate::rootfs`]) decides *what* happens in *which
//! order* and what is skipped; it calls the kernel only through [`Syscall`]. [`LinuxSyscall`] is the
//! real implementation; the unit tests use a recorder that logs every call, so the ordering rules
//! (user namespace first, pivot_root before masking, capabilities after setuid, seccomp last) are
//! tested without root. File-system lookups that need no privilege (lstat, readlink, mkdir inside
//! the rootfs) are made directly.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use seccompiler::sock_filter;

use crate::process::ExecArgs;

mod linux;
#[cfg(test)]
pub(crate) mod record;

pub use linux::LinuxSyscall;
pub(crate) use linux::{cpath, cvt, cvt_long, open_raw};

/// The capability sets `capset(2)` takes, as bit masks (bit N = capability N).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
}

/// The kernel calls a container init (or exec'd process) makes to set itself up.
pub trait Syscall {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `mount_setattr(2)` with `AT_RECURSIVE`: sets and clears `MOUNT_ATTR_*` on a mount tree.
    fn mount_setattr(&self, target: &Path, set: u64, clear: u64) -> io::Result<()>;
    /// Makes `new_root` the root: `pivot_root(".", ".")` inside it, then detaches the old root.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    /// `mknod(2)`.
    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()>;
    /// `lchown(2)`.
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// `symlink(2)`: creates `link` pointing at `target`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// `unshare(2)`.
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// `setdomainname(2)`.
    fn setdomainname(&self, name: &str) -> io::Result<()>;
    /// Writes `value` to an existing file (sysctls, `oom_score_adj`).
    fn write_file(&self, path: &Path, value: &str) -> io::Result<()>;
    /// `setrlimit(2)`.
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()>;
    /// `setsid(2)`.
    fn setsid(&self) -> io::Result<()>;
    /// Joins a new anonymous session keyring, so the container does not share the caller's.
    fn join_session_keyring(&self) -> io::Result<()>;
    /// `personality(2)`.
    fn personality(&self, persona: libc::c_ulong) -> io::Result<()>;
    /// `setgroups(2)`.
    fn setgroups(&self, gids: &[u32]) -> io::Result<()>;
    /// `setresgid(gid, gid, gid)`.
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    /// `setresuid(uid, uid, uid)`.
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    /// `prctl(PR_SET_KEEPCAPS)`.
    fn set_keepcaps(&self, keep: bool) -> io::Result<()>;
    /// `prctl(PR_CAPBSET_DROP)`.
    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()>;
    /// `capset(2)`.
    fn capset(&self, sets: CapSets) -> io::Result<()>;
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)`.
    fn raise_ambient_cap(&self, cap: u32) -> io::Result<()>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// `chdir(2)`.
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// `umask(2)`.
    fn umask(&self, mask: libc::mode_t);
    /// Marks every descriptor from `first` up close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`).
    fn cloexec_from(&self, first: u32) -> io::Result<()>;
    /// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`.
    fn install_seccomp(&self, program: &[sock_filter], flags: u32) -> io::Result<()>;
    /// Opens a new pseudo-terminal pair on `/dev/ptmx`: the master and the slave's path.
    fn open_pty(&self) -> io::Result<(OwnedFd, PathBuf)>;
    /// Makes the slave at `slave` the controlling terminal and fds 0, 1 and 2 (after `setsid`),
    /// with the window size `(rows, cols)` if given.
    fn attach_terminal(&self, slave: &Path, size: Option<(u16, u16)>) -> io::Result<()>;
    /// `execve(2)` with arguments prepared beforehand (no allocation here); returns only on failure.
    fn execve(&self, exec: &ExecArgs) -> io::Error;
}
