//! Copying bytes between descriptors in a thread that can be stopped: `poll` on the source, the
//! destination and a cancel `eventfd`, never a blocking read or write that nothing could interrupt.
//!
//! FIFO sources need care: a FIFO opened read-only before any writer exists reads as end-of-file
//! although a writer may still come. `poll` reports neither readable nor hung-up until a writer has
//! come (Linux records the writer count at open), so the pump only reads when `poll` says so, and a
//! zero-byte read then is a real end of file.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// How a pump ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The source reached end of file (or EIO: a terminal whose other side closed).
    Eof,
    /// The cancel event fired.
    Cancelled,
    /// The destination is gone (EPIPE).
    DstClosed,
}

/// A one-shot, many-listener stop signal (an `eventfd` that stays readable once fired).
#[derive(Clone, Debug)]
pub struct Cancel(Arc<OwnedFd>);

impl Cancel {
    /// A new, unfired signal.
    pub fn new() -> io::Result<Cancel> {
        // SAFETY: eventfd has no memory arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        Ok(Cancel(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Fires the signal; every pump watching it stops.
    pub fn fire(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// True once fired.
    pub fn fired(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we borrow; F_GETFL/F_SETFL take no pointers.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` has `events` or `cancel` fires. Returns the revents of `fd`, or `None` when
/// cancelled.
fn wait(fd: RawFd, events: libc::c_short, cancel: &Cancel) -> io::Result<Option<libc::c_short>> {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: cancel.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd structs for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            return Ok(None);
        }
        if fds[0].revents != 0 {
            return Ok(Some(fds[0].revents));
        }
    }
}

/// Copies from `src` to `dst` until end of file, cancellation or a closed destination. Both are
/// switched to non-blocking mode.
pub fn pump(src: &OwnedFd, dst: &OwnedFd, cancel: &Cancel) -> io::Result<End> {
    use std::os::fd::AsFd;
    set_nonblocking(src.as_fd())?;
    set_nonblocking(dst.as_fd())?;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let Some(_) = wait(src.as_raw_fd(), libc::POLLIN, cancel)? else {
            return Ok(End::Cancelled);
        };
        // SAFETY: reads at most buf.len() bytes into our buffer from a descriptor we own.
        let n = unsafe { libc::read(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                Some(libc::EIO) => return Ok(End::Eof),
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Ok(End::Eof);
        }
        let mut off = 0usize;
        let n = n as usize;
        while off < n {
            // SAFETY: writes bytes off..n of our buffer, which holds n valid bytes.
            let w = unsafe { libc::write(dst.as_raw_fd(), buf[off..n].as_ptr().cast(), n - off) };
            if w < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        if wait(dst.as_raw_fd(), libc::POLLOUT, cancel)?.is_none() {
                            return Ok(End::Cancelled);
                        }
                    }
                    Some(libc::EINTR) => {}
                    Some(libc::EPIPE) | Some(libc::EIO) => return Ok(End::DstClosed),
                    _ => return Err(e),
                }
                continue;
            }
            off += w as usize;
        }
    }
}

/// A pipe with both ends close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn copies_until_eof() {
        let (r1, w1) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        let c = Cancel::new().unwrap();
        let t = std::thread::spawn(move || pump(&r1, &w2, &c).unwrap());
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(w1);
            w.write_all(b"hello ").unwrap();
            w.write_all(&vec![b'x'; 100_000]).unwrap();
        });
        let mut out = Vec::new();
        std::fs::File::from(r2).read_to_end(&mut out).unwrap();
        writer.join().unwrap();
        assert_eq!(t.join().unwrap(), End::Eof);
        assert!(out.starts_with(b"hello "));
        assert_eq!(out.len(), 6 + 100_000);
    }

    #[test]
    fn cancel_stops_a_pump_waiting_on_a_fifo_without_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdin");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid path string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let fifo: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap()
            .into();
        let (_r, w) = pipe().unwrap();
        let c = Cancel::new().unwrap();
        let c2 = c.clone();
        let t = std::thread::spawn(move || pump(&fifo, &w, &c2).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !t.is_finished(),
            "a FIFO with no writer yet is not end of file"
        );
        c.fire();
        assert_eq!(t.join().unwrap(), End::Cancelled);
    }

    #[test]
    fn fifo_writer_that_comes_and_goes_is_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdin");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid path string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let fifo: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap()
            .into();
        let (r, w) = pipe().unwrap();
        let c = Cancel::new().unwrap();
        let t = std::thread::spawn(move || pump(&fifo, &w, &c).unwrap());
        let mut wr = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        wr.write_all(b"abc").unwrap();
        drop(wr);
        assert_eq!(t.join().unwrap(), End::Eof);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "abc");
    }
}
