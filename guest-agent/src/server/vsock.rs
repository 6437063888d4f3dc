//! AF_VSOCK, the thin layer under the server: std has no vsock sockets, so this is `socket`,
//! `bind`, `listen`, `accept4` and `read`/`send` on an [`OwnedFd`]. Everything above it works on
//! any [`super::Transport`].

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// How many connections may wait to be accepted.
const BACKLOG: libc::c_int = 64;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A listening vsock socket.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

/// One accepted vsock connection.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listens on `port` of this machine's every CID (`VMADDR_CID_ANY`).
    pub fn bind(port: u32) -> io::Result<Self> {
        // SAFETY: socket(2) takes no pointers.
        let fd = check(unsafe {
            libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: socket returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = libc::sockaddr_vm {
            svm_family: libc::AF_VSOCK as libc::sa_family_t,
            svm_reserved1: 0,
            svm_port: port,
            svm_cid: libc::VMADDR_CID_ANY,
            svm_zero: [0; 4],
        };
        // SAFETY: `addr` is a valid sockaddr_vm of the length given, alive for the call.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        })?;
        // SAFETY: listen(2) takes no pointers.
        check(unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) })?;
        Ok(Self { fd })
    }

    /// Waits for the next connection; returns it and the peer's CID.
    pub fn accept(&self) -> io::Result<(VsockStream, u32)> {
        // SAFETY: sockaddr_vm is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        loop {
            // SAFETY: `addr` and `len` are writable and describe a sockaddr_vm buffer.
            let rc = unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    (&raw mut addr).cast::<libc::sockaddr>(),
                    &mut len,
                    libc::SOCK_CLOEXEC,
                )
            };
            match check(rc) {
                Ok(fd) => {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    return Ok((VsockStream::from(fd), addr.svm_cid));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl From<OwnedFd> for VsockStream {
    fn from(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl VsockStream {
    /// `shutdown(2)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown(2) takes no pointers.
        check(unsafe { libc::shutdown(self.fd.as_raw_fd(), how) }).map(drop)
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is readable for `buf.len()` bytes. MSG_NOSIGNAL: a closed peer is an
            // EPIPE error here, not a signal.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
