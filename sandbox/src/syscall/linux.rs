//! [`Syscall`] on the real kernel.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use seccompiler::sock_filter;

use super::{CapSets, Syscall};
use crate::process::ExecArgs;

/// The real system calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxSyscall;

/// Turns a `-1` return into the `errno` error.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Turns a `-1` return of `libc::syscall` into the `errno` error.
pub(crate) fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path as a C string.
pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

fn opt_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    cvt(unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) })
        .map(drop)
}

/// `open(2)` with `O_CLOEXEC`.
pub(crate) fn open_raw(path: &CStr, flags: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: `path` is a valid NUL-terminated string.
    cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cpath).transpose()?;
        let target = cpath(target)?;
        let fstype = fstype.map(cstr).transpose()?;
        let data = data.map(cstr).transpose()?;
        // SAFETY: every pointer is a valid NUL-terminated string or NULL, as mount(2) allows.
        cvt(unsafe {
            libc::mount(
                opt_ptr(&source),
                target.as_ptr(),
                opt_ptr(&fstype),
                flags,
                data.as_ref()
                    .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
            )
        })
        .map(drop)
    }

    fn mount_setattr(&self, target: &Path, set: u64, clear: u64) -> io::Result<()> {
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: set,
            attr_clr: clear,
            propagation: 0,
            userns_fd: 0,
        };
        let target = cpath(target)?;
        // SAFETY: `target` is a valid string and `attr` a valid `struct mount_attr` of the size given.
        cvt_long(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        })
        .map(drop)
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        // runc's way: pivot_root(".", ".") stacks the old root on top of the new one, so no
        // put_old directory is needed inside the rootfs; then detach the old root.
        let old = open_raw(c"/", libc::O_DIRECTORY | libc::O_RDONLY)?;
        let new = match open_raw(&cpath(new_root)?, libc::O_DIRECTORY | libc::O_RDONLY) {
            Ok(fd) => fd,
            Err(e) => {
                // SAFETY: closing a descriptor this function opened.
                unsafe { libc::close(old) };
                return Err(e);
            }
        };
        let result = (|| {
            // SAFETY: plain syscalls on descriptors opened above and static strings.
            unsafe {
                cvt(libc::fchdir(new))?;
                cvt_long(libc::syscall(
                    libc::SYS_pivot_root,
                    c".".as_ptr(),
                    c".".as_ptr(),
                ))?;
                cvt(libc::fchdir(old))?;
                cvt(libc::mount(
                    std::ptr::null(),
                    c".".as_ptr(),
                    std::ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                cvt(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
                cvt(libc::chdir(c"/".as_ptr()))?;
            }
            Ok(())
        })();
        // SAFETY: closing descriptors this function opened.
        unsafe {
            libc::close(old);
            libc::close(new);
        }
        result
    }

    fn mknod(&self, path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        let path = cpath(path)?;
        // SAFETY: valid string.
        cvt(unsafe { libc::mknod(path.as_ptr(), mode, dev) }).map(drop)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let path = cpath(path)?;
        // SAFETY: valid string.
        cvt(unsafe { libc::lchown(path.as_ptr(), uid, gid) }).map(drop)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let (target, link) = (cpath(target)?, cpath(link)?);
        // SAFETY: valid strings.
        cvt(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
    }

    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: unshare with integer flags.
        cvt(unsafe { libc::unshare(flags) }).map(drop)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        // SAFETY: pointer and length of a live byte slice.
        cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
    }

    fn setdomainname(&self, name: &str) -> io::Result<()> {
        // SAFETY: pointer and length of a live byte slice.
        cvt(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) }).map(drop)
    }

    fn write_file(&self, path: &Path, value: &str) -> io::Result<()> {
        let fd = open_raw(&cpath(path)?, libc::O_WRONLY)?;
        // SAFETY: pointer and length of a live byte slice; fd opened above.
        let n = unsafe { libc::write(fd, value.as_ptr().cast(), value.len()) };
        let err = io::Error::last_os_error();
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
        match n {
            -1 => Err(err),
            n if n as usize != value.len() => {
                Err(io::Error::new(io::ErrorKind::WriteZero, "short write"))
            }
            _ => Ok(()),
        }
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit; prlimit(0) targets the calling process.
        cvt(unsafe { libc::prlimit(0, resource, &lim, std::ptr::null_mut()) }).map(drop)
    }

    fn setsid(&self) -> io::Result<()> {
        // SAFETY: no arguments.
        cvt(unsafe { libc::setsid() }).map(drop)
    }

    fn join_session_keyring(&self) -> io::Result<()> {
        const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
        // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a NULL name joins a new anonymous keyring.
        match cvt_long(unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<libc::c_char>(),
            )
        }) {
            // Kernels without keyrings: nothing to isolate.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(()),
            r => r.map(drop),
        }
    }

    fn personality(&self, persona: libc::c_ulong) -> io::Result<()> {
        // SAFETY: integer argument only.
        cvt(unsafe { libc::personality(persona) }).map(drop)
    }

    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        // SAFETY: pointer and length of a live slice of gid_t.
        cvt(unsafe { libc::setgroups(gids.len(), gids.as_ptr()) }).map(drop)
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        // Raw syscall: glibc's wrapper would try to sync every thread's ids (there is one thread).
        // SAFETY: integer arguments only.
        cvt_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        // SAFETY: integer arguments only.
        cvt_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
    }

    fn set_keepcaps(&self, keep: bool) -> io::Result<()> {
        prctl(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong, 0)
    }

    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
        prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0)
    }

    fn capset(&self, sets: CapSets) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let split = |v: u64| (v as u32, (v >> 32) as u32);
        let (e0, e1) = split(sets.effective);
        let (p0, p1) = split(sets.permitted);
        let (i0, i1) = split(sets.inheritable);
        let data = [
            Data {
                effective: e0,
                permitted: p0,
                inheritable: i0,
            },
            Data {
                effective: e1,
                permitted: p1,
                inheritable: i1,
            },
        ];
        // SAFETY: header and the two-element data array are the v3 layout capset(2) reads.
        cvt_long(unsafe {
            libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr())
        })
        .map(drop)
    }

    fn raise_ambient_cap(&self, cap: u32) -> io::Result<()> {
        // SAFETY: integer arguments only.
        cvt(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        })
        .map(drop)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        let path = cpath(path)?;
        // SAFETY: valid string.
        cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
    }

    fn umask(&self, mask: libc::mode_t) {
        // SAFETY: integer argument only; umask cannot fail.
        unsafe { libc::umask(mask) };
    }

    fn cloexec_from(&self, first: u32) -> io::Result<()> {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: integer arguments only.
        cvt_long(unsafe {
            libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC)
        })
        .map(drop)
    }

    fn install_seccomp(&self, program: &[sock_filter], flags: u32) -> io::Result<()> {
        #[repr(C)]
        struct SockFprog {
            len: libc::c_ushort,
            filter: *const sock_filter,
        }
        let len = libc::c_ushort::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
        let prog = SockFprog {
            len,
            filter: program.as_ptr(),
        };
        // SAFETY: `prog` points at `len` live instructions with the kernel's sock_filter layout.
        cvt_long(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const SockFprog,
            )
        })
        .map(drop)
    }

    fn open_pty(&self) -> io::Result<(OwnedFd, PathBuf)> {
        let fd = open_raw(c"/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY)?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut unlock: libc::c_int = 0;
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int; both point at locals.
        unsafe {
            cvt(libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCSPTLCK,
                &mut unlock,
            ))?;
            cvt(libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n))?;
        }
        Ok((master, PathBuf::from(format!("/dev/pts/{n}"))))
    }

    fn attach_terminal(&self, slave: &Path, size: Option<(u16, u16)>) -> io::Result<()> {
        let fd = open_raw(&cpath(slave)?, libc::O_RDWR | libc::O_NOCTTY)?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let slave = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Some((rows, cols)) = size {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads a winsize from a local.
            cvt(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
        }
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `slave` stays open.
            cvt(unsafe { libc::dup2(slave.as_raw_fd(), target) })?;
        }
        // SAFETY: TIOCSCTTY with argument 0 on our own new session.
        cvt(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) }).map(drop)
    }

    fn execve(&self, exec: &ExecArgs) -> io::Error {
        // SAFETY: the pointer arrays were built from live CStrings owned by `exec` and end in NULL.
        unsafe { libc::execve(exec.path.as_ptr(), exec.argv_ptrs(), exec.envp_ptrs()) };
        io::Error::last_os_error()
    }
}
