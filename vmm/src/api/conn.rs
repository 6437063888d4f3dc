//! One control connection: lines in, each with the descriptors that arrived with it (the `disk`
//! command passes an image as `SCM_RIGHTS`, so the VMM never opens host paths: that works in the
//! jail too). Bounded: a line longer than [`MAX_LINE`] or more than [`MAX_FDS`] descriptors per
//! message end the connection; descriptors not claimed by a command are closed.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// The longest command line accepted.
pub const MAX_LINE: usize = 256;
/// Descriptors accepted per message.
pub const MAX_FDS: usize = 1;

/// A line and the descriptors that came with its bytes.
pub struct Line {
    /// The command, without its newline.
    pub text: String,
    /// Descriptors passed with it.
    pub fds: Vec<OwnedFd>,
}

/// Reads lines (and their descriptors) from a control connection.
pub struct Reader {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Reader {
    /// Reads from `stream`.
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// The next line; `None` at end of stream, on an error, or when a limit is exceeded.
    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(nl + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                let text = String::from_utf8_lossy(&line).into_owned();
                return Some(Line {
                    text,
                    fds: self.fds.drain(..).collect(),
                });
            }
            if self.buf.len() > MAX_LINE {
                return None;
            }
            match self.recv() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// One `recvmsg`: bytes into the buffer, descriptors into the queue.
    fn recv(&mut self) -> io::Result<usize> {
        let mut data = [0u8; MAX_LINE + 1];
        // Room for MAX_FDS descriptors (CMSG_SPACE of one int, 8-byte aligned).
        let mut control = [0u64; 4];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = loop {
            // SAFETY: recvmsg into the live buffers described by `msg`; MSG_CMSG_CLOEXEC so
            // passed descriptors never leak into a child.
            let n =
                unsafe { libc::recvmsg(self.stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut got = 0;
        // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR walk its control buffer.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` points at a complete cmsghdr inside `control` (CMSG_* guarantee it).
            let h = unsafe { &*c };
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN(0) is a constant computation.
                let header = unsafe { libc::CMSG_LEN(0) } as usize;
                let count = (h.cmsg_len as usize).saturating_sub(header) / 4;
                // SAFETY: the data of an SCM_RIGHTS message is `count` ints.
                let ptr = unsafe { libc::CMSG_DATA(c) }.cast::<libc::c_int>();
                for i in 0..count {
                    // SAFETY: reading the i-th int of the message's data (unaligned-safe).
                    let fd = unsafe { ptr.add(i).read_unaligned() };
                    // SAFETY: the kernel installed `fd` for us; nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    got += 1;
                    if self.fds.len() < MAX_FDS {
                        self.fds.push_back(fd);
                    }
                }
            }
            // SAFETY: advancing within the same control buffer.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        if got > MAX_FDS || msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many descriptors in one message",
            ));
        }
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }
}
