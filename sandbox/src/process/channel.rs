//! The caller <-> child channel: a `SOCK_SEQPACKET` socket pair carrying small tagged messages,
//! with descriptors passed by `SCM_RIGHTS` (the terminal master). Also the sender of runc's
//! console-socket protocol.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::syscall::cvt;

/// A message between the caller and the container's processes.
#[derive(Debug)]
pub enum Msg {
    /// Intermediate -> caller: the host pid of the container's process.
    Pid(i32),
    /// Child -> caller: set up, about to wait for the start signal (init) or exec (exec).
    Ready,
    /// Caller -> child: go on (id maps written; or a held exec released).
    Go,
    /// Caller -> child: the process is in its cgroup.
    Joined,
    /// Child -> caller: setup failed.
    Error(String),
    /// Child -> caller: the terminal master.
    Console(OwnedFd),
}

/// One end of the socket pair.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair, both ends close-on-exec.
pub fn pair() -> io::Result<(Channel, Channel)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((Channel { fd: a }, Channel { fd: b }))
}

/// Sends `payload`, with `fd` attached when given.
pub fn send_raw(sock: RawFd, payload: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // Room for one descriptor, u64-aligned.
    let mut cbuf = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; the fields are filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `cbuf`, large enough for one cmsghdr with one fd.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    loop {
        // SAFETY: `msg` and everything it points at are live for the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

impl Channel {
    /// Wraps a connected `SOCK_SEQPACKET` socket.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// The socket.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The raw descriptor (for the child after fork).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends a message.
    pub fn send(&self, msg: &Msg) -> io::Result<()> {
        send_msg(self.raw(), msg)
    }

    /// Receives a message; `None` when the other end closed.
    pub fn recv(&self) -> io::Result<Option<Msg>> {
        recv_msg(self.raw())
    }
}

/// Receives a message on the raw socket `sock`; `None` when the other end closed.
pub fn recv_msg(sock: RawFd) -> io::Result<Option<Msg>> {
    {
        let mut buf = [0u8; 4096];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 4];
        // SAFETY: an all-zero msghdr is valid; the fields are filled in below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = loop {
            // SAFETY: `msg` points at live buffers of the sizes given.
            let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        };
        let mut passed = None;
        // SAFETY: walking the control messages recvmsg filled in, within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                    passed = Some(OwnedFd::from_raw_fd(fd));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if n == 0 && passed.is_none() {
            return Ok(None);
        }
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed message from the container process",
            )
        };
        let payload = &buf[1..n.max(1)];
        Ok(Some(match buf[0] {
            b'P' => Msg::Pid(i32::from_le_bytes(payload.try_into().map_err(|_| bad())?)),
            b'R' => Msg::Ready,
            b'G' => Msg::Go,
            b'J' => Msg::Joined,
            b'E' => Msg::Error(String::from_utf8_lossy(payload).into_owned()),
            b'C' => Msg::Console(passed.ok_or_else(bad)?),
            _ => return Err(bad()),
        }))
    }
}

/// Sends `msg` on the raw socket `sock`.
pub fn send_msg(sock: RawFd, msg: &Msg) -> io::Result<()> {
    match msg {
        Msg::Pid(pid) => {
            let mut b = [b'P'; 5];
            b[1..].copy_from_slice(&pid.to_le_bytes());
            send_raw(sock, &b, None)
        }
        Msg::Ready => send_raw(sock, b"R", None),
        Msg::Go => send_raw(sock, b"G", None),
        Msg::Joined => send_raw(sock, b"J", None),
        Msg::Error(s) => {
            let mut b = Vec::with_capacity(s.len() + 1);
            b.push(b'E');
            b.extend_from_slice(&s.as_bytes()[..s.len().min(4000)]);
            send_raw(sock, &b, None)
        }
        Msg::Console(fd) => send_raw(sock, b"C", Some(fd.as_raw_fd())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (a, b) = pair().unwrap();
        a.send(&Msg::Pid(4242)).unwrap();
        a.send(&Msg::Ready).unwrap();
        a.send(&Msg::Error("boom".into())).unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        a.send(&Msg::Console(null.into())).unwrap();
        assert!(matches!(b.recv().unwrap(), Some(Msg::Pid(4242))));
        assert!(matches!(b.recv().unwrap(), Some(Msg::Ready)));
        assert!(matches!(b.recv().unwrap(), Some(Msg::Error(s)) if s == "boom"));
        match b.recv().unwrap() {
            Some(Msg::Console(fd)) => {
                let target =
                    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
                assert_eq!(target, std::path::Path::new("/dev/null"));
            }
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(b.recv().unwrap().is_none());
    }
}
