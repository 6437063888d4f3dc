//! Talking to `moat-agent` from the host: connections through moat-vmm's hybrid vsock socket
//! (`CONNECT <port>\n` -> `OK <hostport>\n`), RPC calls and stream attaches (the protocol is in
//! `moat-agent-proto`). Everything the guest sends is untrusted: frames are bounded by the
//! protocol crate, the handshake line by [`MAX_HANDSHAKE`], and answers of the wrong kind are
//! errors, never assumptions.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use moat_agent_proto::{self as proto, ErrorKind, Request, Response, Stream};

use crate::{Error, Result};

/// Longest `OK <port>\n` line accepted from the VMM.
const MAX_HANDSHAKE: usize = 32;

/// How long an ordinary RPC may take before the agent counts as hung (the rig is slow).
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(120);

/// Opens a connection to guest port `port` through the hybrid socket at `vsock`.
pub(crate) fn connect(vsock: &Path, port: u32) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(vsock)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Byte by byte, so nothing after the line is consumed.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the VMM closed the connection to guest port {port} (nobody listening)"),
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > MAX_HANDSHAKE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the VMM's vsock handshake line is too long",
            ));
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the VMM answered {:?} to CONNECT {port}",
                String::from_utf8_lossy(&line)
            ),
        ));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// An RPC connection to the agent, past its `Hello`.
pub(crate) struct Rpc {
    stream: UnixStream,
}

impl Rpc {
    /// Connects and says hello; returns the connection and the guest kernel's release.
    pub(crate) fn open(vsock: &Path) -> Result<(Rpc, String)> {
        let stream = connect(vsock, moat_abi::AGENT_VSOCK_PORT)
            .map_err(|e| Error::internal("connecting to the guest agent", e))?;
        let mut rpc = Rpc { stream };
        match rpc.call(&Request::Hello {
            version: proto::VERSION,
        })? {
            Response::Hello { version, kernel } if version == proto::VERSION => {
                let mut kernel = kernel;
                kernel.truncate(64);
                Ok((rpc, kernel))
            }
            Response::Hello { version, .. } => Err(Error::Unavailable(format!(
                "the guest agent speaks protocol {version}, this moat speaks {}: rebuild the \
                 guest artifacts (cargo run --release -p moat-artifacts --example build-guest)",
                proto::VERSION
            ))),
            other => Err(unexpected("hello", other)),
        }
    }

    /// Sends `req` and reads its answer; the call may block up to `timeout` (`None`: forever).
    pub(crate) fn call_timeout(
        &mut self,
        req: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(|e| Error::internal("setting the agent connection's timeout", e))?;
        proto::write_frame(&mut self.stream, req)
            .map_err(|e| Error::internal("sending a request to the guest agent", e))?;
        match proto::read_frame::<_, Response>(&mut self.stream) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Error::internal(
                "reading the guest agent's answer",
                "the connection closed (the agent or the VM died)",
            )),
            Err(e) => Err(Error::internal("reading the guest agent's answer", e)),
        }
    }

    /// [`call_timeout`](Self::call_timeout) with [`RPC_TIMEOUT`].
    pub(crate) fn call(&mut self, req: &Request) -> Result<Response> {
        self.call_timeout(req, Some(RPC_TIMEOUT))
    }
}

/// Turns an agent `Error` answer into the backend's error; other unexpected answers become
/// internal errors naming the request.
pub(crate) fn unexpected(what: &str, r: Response) -> Error {
    match r {
        Response::Error { kind, message } => {
            let message = format!("in the guest: {message}");
            match kind {
                ErrorKind::InvalidArgument => Error::InvalidArgument(message),
                ErrorKind::NotFound => Error::NotFound(message),
                ErrorKind::AlreadyExists => Error::AlreadyExists(message),
                ErrorKind::FailedPrecondition => Error::FailedPrecondition(message),
                ErrorKind::Unsupported => Error::Unimplemented(message),
                ErrorKind::Internal => Error::internal(format!("guest agent: {what}"), message),
            }
        }
        other => Error::internal(
            format!("guest agent: {what}"),
            format!("unexpected answer {other:?}"),
        ),
    }
}

/// Expects [`Response::Ok`].
pub(crate) fn expect_ok(what: &str, r: Response) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        other => Err(unexpected(what, other)),
    }
}

/// Opens a stream connection for one standard stream of a process.
pub(crate) fn attach(
    vsock: &Path,
    id: &str,
    exec_id: Option<&str>,
    stream: Stream,
) -> Result<UnixStream> {
    let mut s = connect(vsock, moat_abi::AGENT_VSOCK_PORT)
        .map_err(|e| Error::internal("connecting to the guest agent", e))?;
    let req = Request::Attach {
        id: id.to_string(),
        exec_id: exec_id.map(str::to_string),
        stream,
    };
    s.set_read_timeout(Some(RPC_TIMEOUT))
        .map_err(|e| Error::internal("setting a stream's timeout", e))?;
    proto::write_frame(&mut s, &req)
        .map_err(|e| Error::internal("attaching a process stream", e))?;
    match proto::read_frame::<_, Response>(&mut s) {
        Ok(Some(Response::Ok)) => {}
        Ok(Some(other)) => return Err(unexpected("attach", other)),
        Ok(None) => {
            return Err(Error::internal(
                "attaching a process stream",
                "the agent closed the connection",
            ));
        }
        Err(e) => return Err(Error::internal("attaching a process stream", e)),
    }
    s.set_read_timeout(None)
        .map_err(|e| Error::internal("setting a stream's timeout", e))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A fake VMM socket: answers the handshake with `reply`, then echoes frames back as `Ok`.
    fn fake_vmm(reply: &'static str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.sock");
        let l = UnixListener::bind(&p).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "CONNECT 1024\n");
            (&s).write_all(reply.as_bytes()).unwrap();
            while let Ok(Some(req)) = proto::read_frame::<_, Request>(&mut r) {
                let resp = match req {
                    Request::Hello { .. } => Response::Hello {
                        version: proto::VERSION,
                        kernel: "6.12.0-test".into(),
                    },
                    _ => Response::error(ErrorKind::NotFound, "no such container"),
                };
                proto::write_frame(&mut &s, &resp).unwrap();
            }
        });
        (d, p)
    }

    #[test]
    fn hello_then_errors_map_onto_backend_errors() {
        let (_d, p) = fake_vmm("OK 1073741824\n");
        let (mut rpc, kernel) = Rpc::open(&p).unwrap();
        assert_eq!(kernel, "6.12.0-test");
        let r = rpc.call(&Request::Start { id: "c1".into() }).unwrap();
        assert!(matches!(unexpected("start", r), Error::NotFound(m) if m.contains("no such")));
    }

    #[test]
    fn a_refused_connect_is_an_error() {
        let (_d, p) = fake_vmm("FAILURE\n");
        let e = Rpc::open(&p).err().unwrap().to_string();
        assert!(e.contains("FAILURE"), "{e}");
    }
}
