//! The system calls the probe makes, each behind a small safe wrapper, so the `unsafe` is in one
//! place and every caller gets a `Result` with the errno the kernel (or a seccomp filter, or a
//! tracing supervisor) actually returned.
//!
//! Raw `syscall(2)` through glibc's variadic wrapper, with x86-64 numbers: no crates, so the binary
//! links statically against nothing but glibc.

use std::ffi::CStr;
use std::fmt;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("moat-bench-probe uses x86-64 system call numbers");

unsafe extern "C" {
    fn syscall(number: i64, ...) -> i64;
    fn __errno_location() -> *mut i32;
    fn uname(buf: *mut u8) -> i32;
}

/// x86-64 system call numbers.
mod nr {
    pub const READ: i64 = 0;
    pub const CLOSE: i64 = 3;
    pub const FSTAT: i64 = 5;
    pub const GETPID: i64 = 39;
    pub const SOCKET: i64 = 41;
    pub const PTRACE: i64 = 101;
    pub const MOUNT: i64 = 165;
    pub const UMOUNT2: i64 = 166;
    pub const INIT_MODULE: i64 = 175;
    pub const KEYCTL: i64 = 250;
    pub const OPENAT: i64 = 257;
    pub const UNSHARE: i64 = 272;
    pub const BPF: i64 = 321;
}

/// `AT_FDCWD`: paths relative to the working directory.
const AT_FDCWD: i64 = -100;
/// `O_RDONLY`.
pub const O_RDONLY: i32 = 0;
/// `O_CLOEXEC`.
const O_CLOEXEC: i32 = 0o2_000_000;
/// `S_IFMT`: the file type bits of `st_mode`.
const S_IFMT: u32 = 0o170_000;
/// `S_IFIFO`.
const S_IFIFO: u32 = 0o010_000;
/// `S_IFCHR`.
const S_IFCHR: u32 = 0o020_000;
/// `S_IFSOCK`.
const S_IFSOCK: u32 = 0o140_000;
/// `CLONE_NEWUSER`.
pub const CLONE_NEWUSER: i64 = 0x1000_0000;

/// An errno value, shown by name (`EPERM`) when it is a common one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// `EINTR`.
pub const EINTR: Errno = Errno(4);
/// `EPERM`.
pub const EPERM: Errno = Errno(1);
/// `ENOENT`.
pub const ENOENT: Errno = Errno(2);
/// `ENOSYS`.
pub const ENOSYS: Errno = Errno(38);

impl Errno {
    /// The calling thread's current errno.
    pub fn last() -> Self {
        // SAFETY: glibc's errno location is thread-local and always valid to read.
        Errno(unsafe { *__errno_location() })
    }

    /// The errno of an `io::Error` from std, or `EIO` if it carries none.
    pub fn of(e: &std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(5))
    }

    /// The symbolic name, if it is one the probes are likely to see.
    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            8 => "ENOEXEC",
            9 => "EBADF",
            10 => "ECHILD",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            19 => "ENODEV",
            20 => "ENOTDIR",
            21 => "EISDIR",
            22 => "EINVAL",
            24 => "EMFILE",
            28 => "ENOSPC",
            30 => "EROFS",
            38 => "ENOSYS",
            61 => "ENODATA",
            93 => "EPROTONOSUPPORT",
            95 => "EOPNOTSUPP",
            97 => "EAFNOSUPPORT",
            99 => "EADDRNOTAVAIL",
            101 => "ENETUNREACH",
            110 => "ETIMEDOUT",
            111 => "ECONNREFUSED",
            113 => "EHOSTUNREACH",
            122 => "EDQUOT",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// A system call's result: the non-negative return value, or the errno.
pub type SysResult = Result<i64, Errno>;

/// Makes system call `number` with six integer arguments.
///
/// # Safety
/// The arguments must be what the kernel expects for that call: pointers valid for the access the
/// call makes, buffers as long as the lengths passed.
unsafe fn raw(number: i64, a: [i64; 6]) -> SysResult {
    // SAFETY: the caller guarantees the arguments suit the call.
    let rc = unsafe { syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

/// `getpid()`, always the raw system call (no libc caching).
pub fn getpid() -> i64 {
    // SAFETY: getpid takes no arguments.
    unsafe { raw(nr::GETPID, [0; 6]) }.unwrap_or(-1)
}

/// `openat(AT_FDCWD, path, flags | O_CLOEXEC)`.
pub fn open(path: &CStr, flags: i32) -> Result<i32, Errno> {
    let flags = i64::from(flags | O_CLOEXEC);
    // SAFETY: `path` is NUL-terminated and outlives the call; no mode is needed without O_CREAT.
    let fd = unsafe { raw(nr::OPENAT, [AT_FDCWD, path.as_ptr() as i64, flags, 0, 0, 0]) }?;
    Ok(i32::try_from(fd).unwrap_or(i32::MAX))
}

/// `close(fd)`.
pub fn close(fd: i32) {
    // SAFETY: closing a descriptor we own; errors are of no use here.
    let _ = unsafe { raw(nr::CLOSE, [i64::from(fd), 0, 0, 0, 0, 0]) };
}

/// `read(fd, buf)`: the number of bytes read.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let (p, n) = (buf.as_mut_ptr() as i64, buf.len() as i64);
    // SAFETY: `buf` is writable for its whole length.
    let got = unsafe { raw(nr::READ, [i64::from(fd), p, n, 0, 0, 0]) }?;
    Ok(usize::try_from(got).unwrap_or(0))
}

/// The kind of file an open descriptor refers to (from `fstat`'s `st_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A pipe or FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character device (`/dev/null`, a terminal).
    CharDevice,
    /// Anything else (regular file, directory, block device, link).
    Other,
}

/// `fstat(fd)`'s file type.
pub fn file_kind(fd: i32) -> Result<FileKind, Errno> {
    // x86-64 `struct stat` is 144 bytes; `st_mode` is the u32 at offset 24.
    let mut st = [0u64; 18];
    // SAFETY: `st` is 144 writable bytes, the size of the kernel's `struct stat` on x86-64.
    unsafe {
        raw(
            nr::FSTAT,
            [i64::from(fd), st.as_mut_ptr() as i64, 0, 0, 0, 0],
        )
    }?;
    // `st_mode` is the low half of the fourth u64 (little-endian).
    let mode = (st[3] & 0xffff_ffff) as u32;
    Ok(match mode & S_IFMT {
        S_IFIFO => FileKind::Fifo,
        S_IFSOCK => FileKind::Socket,
        S_IFCHR => FileKind::CharDevice,
        _ => FileKind::Other,
    })
}

/// `uname()`'s release field (`6.1.0-...`).
pub fn kernel_release() -> Result<String, Errno> {
    // `struct utsname`: six fields of 65 bytes; the release is the third.
    let mut buf = [0u8; 6 * 65];
    // SAFETY: `buf` is as large as glibc's `struct utsname` on Linux.
    if unsafe { uname(buf.as_mut_ptr()) } != 0 {
        return Err(Errno::last());
    }
    let field = &buf[130..195];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    Ok(String::from_utf8_lossy(&field[..end]).into_owned())
}

/// `socket(domain, ty, protocol)`: the new descriptor.
pub fn socket(domain: i64, ty: i64, protocol: i64) -> Result<i32, Errno> {
    // SAFETY: integer arguments only.
    let fd = unsafe { raw(nr::SOCKET, [domain, ty, protocol, 0, 0, 0]) }?;
    Ok(i32::try_from(fd).unwrap_or(i32::MAX))
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`: joins a new anonymous session keyring.
pub fn keyctl_join_session() -> SysResult {
    const KEYCTL_JOIN_SESSION_KEYRING: i64 = 1;
    // SAFETY: a NULL name asks for an anonymous keyring; no memory is passed.
    unsafe { raw(nr::KEYCTL, [KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0, 0]) }
}

/// `bpf(BPF_MAP_CREATE)` of an array map of one 4-byte element: the map's descriptor.
pub fn bpf_array_map() -> Result<i32, Errno> {
    const BPF_MAP_CREATE: i64 = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // `union bpf_attr` for BPF_MAP_CREATE starts with map_type, key_size, value_size,
    // max_entries, map_flags (u32 each); the rest stays zero, as the kernel requires.
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    let size = std::mem::size_of_val(&attr) as i64;
    // SAFETY: `attr` is `size` readable bytes and outlives the call.
    let fd = unsafe {
        raw(
            nr::BPF,
            [BPF_MAP_CREATE, attr.as_ptr() as i64, size, 0, 0, 0],
        )
    }?;
    Ok(i32::try_from(fd).unwrap_or(i32::MAX))
}

/// `init_module(image, len, "")` with `image` a zeroed buffer: never loads anything, but the errno
/// tells whether the kernel looked at the image (allowed) or refused the call.
pub fn init_module_zeroed() -> SysResult {
    let image = [0u8; 64];
    let params = c"";
    let (p, n) = (image.as_ptr() as i64, image.len() as i64);
    // SAFETY: `image` is 64 readable bytes and `params` a NUL-terminated string, both live.
    unsafe { raw(nr::INIT_MODULE, [p, n, params.as_ptr() as i64, 0, 0, 0]) }
}

/// `unshare(flags)`.
pub fn unshare(flags: i64) -> SysResult {
    // SAFETY: integer argument only.
    unsafe { raw(nr::UNSHARE, [flags, 0, 0, 0, 0, 0]) }
}

/// `ptrace(PTRACE_ATTACH, pid)`.
pub fn ptrace_attach(pid: i32) -> SysResult {
    const PTRACE_ATTACH: i64 = 16;
    // SAFETY: integer arguments only (addr and data are unused by PTRACE_ATTACH).
    unsafe { raw(nr::PTRACE, [PTRACE_ATTACH, i64::from(pid), 0, 0, 0, 0]) }
}

/// `mount(source, target, fstype, 0, "")`.
pub fn mount(source: &CStr, target: &CStr, fstype: &CStr) -> SysResult {
    let data = c"";
    let a = [source, target, fstype].map(|s| s.as_ptr() as i64);
    // SAFETY: all four strings are NUL-terminated and outlive the call; no flags.
    unsafe { raw(nr::MOUNT, [a[0], a[1], a[2], 0, data.as_ptr() as i64, 0]) }
}

/// `umount2(target, MNT_DETACH)`.
pub fn umount(target: &CStr) -> SysResult {
    const MNT_DETACH: i64 = 2;
    // SAFETY: `target` is NUL-terminated and outlives the call.
    unsafe {
        raw(
            nr::UMOUNT2,
            [target.as_ptr() as i64, MNT_DETACH, 0, 0, 0, 0],
        )
    }
}
