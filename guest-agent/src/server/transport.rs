//! What a connection to the host is: a byte stream both ways whose write side can be shut down on
//! its own (a stream connection signals the end of stdout that way). The vsock stream is the real
//! one; `UnixStream` lets unit tests drive the server over `UnixStream::pair()` without a VM.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

/// A connection the server can serve.
pub trait Transport: Read + Write + Send + 'static {
    /// Shuts down the write side: the peer reads end of file, and can still send.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Transport for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Transport for super::vsock::VsockStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
