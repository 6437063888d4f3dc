//! A [`Syscall`] that records every call instead of making it (unit tests of the ordering).

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use seccompiler::sock_filter;

use super::{CapSets, Syscall};
use crate::process::ExecArgs;

/// Records calls as short strings, e.g. `mount proc /r/proc proc 0xe`.
#[derive(Default)]
pub struct Recorder {
    /// The calls so far.
    pub calls: RefCell<Vec<String>>,
    /// Calls whose string starts with this fail with EPERM.
    pub fail: Option<String>,
}

impl Recorder {
    fn log(&self, s: String) -> io::Result<()> {
        let fail = self.fail.as_deref().is_some_and(|f| s.starts_with(f));
        self.calls.borrow_mut().push(s);
        if fail {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else {
            Ok(())
        }
    }

    /// The index of the first call starting with `prefix`.
    pub fn pos(&self, prefix: &str) -> usize {
        self.calls
            .borrow()
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {:#?}", self.calls.borrow()))
    }

    /// Whether some call starts with `prefix`.
    pub fn has(&self, prefix: &str) -> bool {
        self.calls.borrow().iter().any(|c| c.starts_with(prefix))
    }
}

fn d(p: Option<&Path>) -> String {
    p.map_or("-".into(), |p| p.display().to_string())
}

impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.log(format!(
            "mount {} {} {} {flags:#x} {}",
            d(source),
            target.display(),
            fstype.unwrap_or("-"),
            data.unwrap_or("-")
        ))
    }
    fn mount_setattr(&self, target: &Path, set: u64, clear: u64) -> io::Result<()> {
        self.log(format!(
            "mount_setattr {} {set:#x} {clear:#x}",
            target.display()
        ))
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        self.log(format!("pivot_root {}", new_root.display()))
    }
    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        self.log(format!("mknod {} {mode:o} {dev:#x}", path.display()))
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.log(format!("chown {} {uid} {gid}", path.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.log(format!("symlink {} {}", target.display(), link.display()))
    }
    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        self.log(format!("unshare {flags:#x}"))
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.log(format!("sethostname {name}"))
    }
    fn setdomainname(&self, name: &str) -> io::Result<()> {
        self.log(format!("setdomainname {name}"))
    }
    fn write_file(&self, path: &Path, value: &str) -> io::Result<()> {
        self.log(format!("write {} {value}", path.display()))
    }
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()> {
        self.log(format!("setrlimit {resource} {soft} {hard}"))
    }
    fn setsid(&self) -> io::Result<()> {
        self.log("setsid".into())
    }
    fn join_session_keyring(&self) -> io::Result<()> {
        self.log("keyring".into())
    }
    fn personality(&self, persona: libc::c_ulong) -> io::Result<()> {
        self.log(format!("personality {persona}"))
    }
    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        self.log(format!("setgroups {gids:?}"))
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        self.log(format!("setresgid {gid}"))
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        self.log(format!("setresuid {uid}"))
    }
    fn set_keepcaps(&self, keep: bool) -> io::Result<()> {
        self.log(format!("keepcaps {keep}"))
    }
    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
        self.log(format!("capbset_drop {cap}"))
    }
    fn capset(&self, s: CapSets) -> io::Result<()> {
        self.log(format!(
            "capset {:#x} {:#x} {:#x}",
            s.effective, s.permitted, s.inheritable
        ))
    }
    fn raise_ambient_cap(&self, cap: u32) -> io::Result<()> {
        self.log(format!("ambient {cap}"))
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.log("no_new_privs".into())
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.log(format!("chdir {}", path.display()))
    }
    fn umask(&self, mask: libc::mode_t) {
        let _ = self.log(format!("umask {mask:o}"));
    }
    fn cloexec_from(&self, first: u32) -> io::Result<()> {
        self.log(format!("cloexec_from {first}"))
    }
    fn install_seccomp(&self, program: &[sock_filter], flags: u32) -> io::Result<()> {
        self.log(format!("seccomp {} {flags}", program.len()))
    }
    fn open_pty(&self) -> io::Result<(OwnedFd, PathBuf)> {
        self.log("open_pty".into())?;
        Ok((
            std::fs::File::open("/dev/null")?.into(),
            PathBuf::from("/dev/pts/7"),
        ))
    }
    fn attach_terminal(&self, slave: &Path, size: Option<(u16, u16)>) -> io::Result<()> {
        self.log(format!("attach_terminal {} {size:?}", slave.display()))
    }
    fn execve(&self, exec: &ExecArgs) -> io::Error {
        let _ = self.log(format!("execve {:?}", exec.path));
        io::Error::from_raw_os_error(libc::ENOENT)
    }
}
