//! Thin wrappers over the system calls the supervisor makes, returning `io::Result`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The errno of the last failed call.
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Turns a `-1`-on-error return into a `Result`.
pub(crate) fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a new descriptor returned by a call.
pub(crate) fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(rc)? as RawFd;
    // SAFETY: the call just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_open(pid, 0)`.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate of another process's descriptor.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

/// Reads `buf.len()` bytes (or fewer, at an unmapped page) from another process at `addr`.
pub(crate) fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: writes at most buf.len() bytes into `buf`; the remote address is only read by the
    // kernel on the other process's behalf.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// Writes `buf` into another process at `addr`.
pub(crate) fn write_mem(pid: i32, addr: u64, buf: &[u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: reads `buf` only; the kernel writes the other process's memory.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `readlinkat(dirfd, path)`; an empty path reads the link `dirfd` itself refers to.
pub(crate) fn readlinkat(dirfd: RawFd, path: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat writes at most buf.len() bytes into `buf`.
    let n = unsafe { libc::readlinkat(dirfd, path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = check(n as libc::c_long)? as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}

/// `openat2(dirfd, path, how)`.
pub(crate) fn openat2(dirfd: RawFd, path: &CStr, flags: u64, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags;
    how.resolve = resolve;
    // SAFETY: openat2 reads `path` and `how`, both valid for the call.
    owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })
}

/// `openat(dirfd, path, flags)`.
pub(crate) fn openat(dirfd: RawFd, path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: openat reads `path`, a valid C string.
    owned(unsafe { libc::openat(dirfd, path.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

/// `fstatat(dirfd, path, AT_SYMLINK_NOFOLLOW | extra)`.
pub(crate) fn lstatat(dirfd: RawFd, path: &CStr, extra: i32) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for the kernel to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat fills `st` and reads `path`.
    let rc = unsafe {
        libc::fstatat(
            dirfd,
            path.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW | extra,
        )
    };
    check(rc as libc::c_long)?;
    Ok(st)
}

/// `fstat(fd)`.
pub(crate) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    lstatat(fd, c"", libc::AT_EMPTY_PATH)
}

/// The file system magic of the file system `fd` lives on.
pub(crate) fn fs_type(fd: RawFd) -> io::Result<i64> {
    // SAFETY: an all-zero statfs is a valid value for the kernel to fill in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs fills `st`.
    check(unsafe { libc::fstatfs(fd, &mut st) } as libc::c_long)?;
    Ok(st.f_type)
}

/// procfs's magic number.
pub(crate) const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// `tgkill(tgid, tid, sig)`.
pub(crate) fn tgkill(tgid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill takes plain integers.
    check(unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) }).map(drop)
}

/// `kill(pid, sig)`.
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, sig) } as libc::c_long).map(drop)
}
