//! The system calls PID 1 makes, behind a trait.
//!
//! [`Linux`] is the real thing, used in the guest. The trait exists so that the boot sequence in
//! [`crate::init`] can be unit-tested as an ordinary process (with a recorder in place of the kernel),
//! youki-style; the real path is exercised by the reference boots (QEMU TCG on the host, QEMU + KVM in
//! the rig), which run this binary as the guest's PID 1.

use std::ffi::CString;
use std::io;
use std::time::Duration;

/// Mount flags the agent uses (a subset of `MS_*`).
pub mod flags {
    /// `MS_NOSUID`.
    pub const NOSUID: u64 = libc::MS_NOSUID;
    /// `MS_NODEV`.
    pub const NODEV: u64 = libc::MS_NODEV;
    /// `MS_NOEXEC`.
    pub const NOEXEC: u64 = libc::MS_NOEXEC;
    /// `MS_RELATIME`.
    pub const RELATIME: u64 = libc::MS_RELATIME;
}

/// What the agent asks of the kernel.
pub trait Sys {
    /// This process's id.
    fn pid(&self) -> u32;
    /// Creates a directory and its parents (`mkdir -p`).
    fn mkdir_all(&mut self, path: &str, mode: u32) -> io::Result<()>;
    /// `mount(2)`.
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()>;
    /// Makes the (already mounted) directory `new_root` the root: `MS_MOVE` it onto `/`, then chroot.
    fn switch_root(&mut self, new_root: &str) -> io::Result<()>;
    /// Whether `/` is the initramfs (`rootfs`, which `pivot_root(2)` cannot leave).
    fn root_is_initramfs(&mut self) -> io::Result<bool>;
    /// Reads a whole (small) file.
    fn read_file(&mut self, path: &str) -> io::Result<String>;
    /// Writes a whole file (opens it write-only, without creating or truncating: sysfs, cgroupfs).
    fn write_file(&mut self, path: &str, contents: &str) -> io::Result<()>;
    /// Creates a symbolic link.
    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()>;
    /// `sethostname(2)`.
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    /// `clock_settime(CLOCK_REALTIME)`.
    fn set_clock(&mut self, secs: i64, nanos: u32) -> io::Result<()>;
    /// The running kernel's release (`uname -r`).
    fn kernel_release(&mut self) -> io::Result<String>;
    /// Writes one line to the console (fd 1, which the kernel opened on `/dev/console`).
    fn console(&mut self, line: &str) -> io::Result<()>;
    /// Writes one byte to an x86 I/O port (`ioperm` + `outb`).
    fn outb(&mut self, port: u16, value: u8) -> io::Result<()>;
    /// Sends `signal` to every process except this one (`kill(-1, signal)`).
    fn kill_all(&mut self, signal: i32) -> io::Result<()>;
    /// Reaps one exited child without blocking: `Ok(Some((pid, status)))` for one that exited,
    /// `Ok(None)` when children remain but none has exited, `Err` (ECHILD) when there are none.
    fn reap_one(&mut self) -> io::Result<Option<(i32, WaitStatus)>>;
    /// `sync(2)`.
    fn sync(&mut self);
    /// Waits a little (the grace period between SIGTERM and SIGKILL at power-off).
    fn sleep(&mut self, duration: Duration);
    /// `reboot(LINUX_REBOOT_CMD_RESTART)`; returns only if the kernel refused, with the reason.
    fn restart(&mut self) -> io::Error;
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl WaitStatus {
    /// Decodes a `waitpid(2)` status word.
    pub fn from_raw(status: libc::c_int) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signaled(libc::WTERMSIG(status))
        } else {
            Self::Exited(libc::WEXITSTATUS(status))
        }
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct Linux;

impl Sys for Linux {
    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn mkdir_all(&mut self, path: &str, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()> {
        let (source, target, fstype, data) =
            (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        })
    }

    fn switch_root(&mut self, new_root: &str) -> io::Result<()> {
        std::env::set_current_dir(new_root)?;
        let (dot, slash) = (cstr(".")?, cstr("/")?);
        // SAFETY: NUL-terminated strings that outlive the call; a null fstype and data are allowed
        // for MS_MOVE.
        check(unsafe {
            libc::mount(
                dot.as_ptr(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            )
        })?;
        // SAFETY: a NUL-terminated string that outlives the call.
        check(unsafe { libc::chroot(dot.as_ptr()) })?;
        std::env::set_current_dir("/")
    }

    fn root_is_initramfs(&mut self) -> io::Result<bool> {
        // In mountinfo the initramfs is the mount on "/" whose type (after the "-") is "rootfs".
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        Ok(info.lines().any(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-");
            fields.get(4) == Some(&"/") && sep.and_then(|i| fields.get(i + 1)) == Some(&"rootfs")
        }))
    }

    fn read_file(&mut self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write_file(&mut self, path: &str, contents: &str) -> io::Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(contents.as_bytes())
    }

    fn symlink(&mut self, target: &str, link: &str) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }

    fn set_clock(&mut self, secs: i64, nanos: u32) -> io::Result<()> {
        let ts = libc::timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nanos),
        };
        // SAFETY: `ts` is a valid timespec that outlives the call.
        check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })
    }

    fn kernel_release(&mut self) -> io::Result<String> {
        // SAFETY: utsname is plain old data; all-zero is a valid value.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `uts` is a valid, writable utsname.
        check(unsafe { libc::uname(&mut uts) })?;
        // SAFETY: uname fills `release` with a NUL-terminated string within the array.
        let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
        Ok(release.to_string_lossy().into_owned())
    }

    fn console(&mut self, line: &str) -> io::Result<()> {
        use std::io::Write;
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        // One write(2) per line, unbuffered, so lines from threads never interleave mid-line.
        io::stdout().lock().write_all(&buf)
    }

    fn outb(&mut self, port: u16, value: u8) -> io::Result<()> {
        // SAFETY: ioperm only changes this thread's I/O permission bitmap.
        check(unsafe { libc::ioperm(libc::c_ulong::from(port), 1, 1) })?;
        // SAFETY: ioperm granted this thread access to exactly `port`; an `out` instruction touches no
        // memory of this process. The device behind the port is the VMM's boot timer (or nothing).
        unsafe {
            std::arch::asm!("out dx, al", in("dx") port, in("al") value,
                options(nomem, nostack, preserves_flags));
        }
        Ok(())
    }

    fn kill_all(&mut self, signal: i32) -> io::Result<()> {
        // SAFETY: kill(2) takes no pointers; as PID 1, -1 means every process but this one.
        check(unsafe { libc::kill(-1, signal) })
    }

    fn reap_one(&mut self) -> io::Result<Option<(i32, WaitStatus)>> {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int for the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            p if p < 0 => Err(io::Error::last_os_error()),
            0 => Ok(None),
            p => Ok(Some((p, WaitStatus::from_raw(status)))),
        }
    }

    fn sync(&mut self) {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() }
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn restart(&mut self) -> io::Error {
        // SAFETY: reboot(2) takes no pointers with this command; it returns only on failure.
        unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_RESTART) };
        io::Error::last_os_error()
    }
}
