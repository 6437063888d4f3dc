//! A process's standard streams as the host attaches them: one pipe per stream the
//! [`StdioPlan`] asks for (the child's end goes to `moat-sandbox`, the agent's end waits in the
//! registry until its stream connection takes it), and the copy loops of stream connections.
//! Streams the plan leaves out are `/dev/null`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use moat_agent_proto::{StdioPlan, Stream};

use super::failure::{Failure, Outcome};
use super::transport::Transport;

/// The copy buffer of a stream connection.
pub const BUFFER: usize = 64 * 1024;

/// The agent's end of one stream.
#[derive(Debug, Default)]
pub enum Slot {
    /// The plan did not ask for this stream (it is `/dev/null`).
    #[default]
    NotPlanned,
    /// Waiting for its stream connection.
    Ready(File),
    /// A stream connection has it (or had it).
    Taken,
}

/// The agent's ends of a process's pipes.
#[derive(Debug, Default)]
pub struct HostEnds {
    stdin: Slot,
    stdout: Slot,
    stderr: Slot,
}

impl HostEnds {
    /// Takes the agent's end of `stream` for a stream connection; `what` names the process.
    pub fn take(&mut self, stream: Stream, what: &str) -> Outcome<File> {
        let slot = match stream {
            Stream::Stdin => &mut self.stdin,
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        match std::mem::replace(slot, Slot::Taken) {
            Slot::Ready(f) => Ok(f),
            Slot::NotPlanned => {
                *slot = Slot::NotPlanned;
                Err(Failure::precondition(format!(
                    "{what} has no {stream:?} pipe: its stdio plan did not ask for one (it is \
                     /dev/null)"
                )))
            }
            Slot::Taken => Err(Failure::precondition(format!(
                "the {stream:?} of {what} is attached already: each stream can be attached once"
            ))),
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the pipes `plan` asks for: the agent's ends and the process's stdio. All close-on-exec
/// (`moat-sandbox` puts the child's ends on 0-2, which clears the flag there).
pub fn pipes(plan: StdioPlan) -> Outcome<(HostEnds, moat_sandbox::Stdio)> {
    let fail = |e| Failure::internal("creating a stdio pipe", e);
    let mut ends = HostEnds::default();
    let (mut stdin, mut stdout, mut stderr) = (None, None, None);
    if plan.stdin {
        let (r, w) = pipe().map_err(fail)?;
        ends.stdin = Slot::Ready(File::from(w));
        stdin = Some(r);
    }
    if plan.stdout {
        let (r, w) = pipe().map_err(fail)?;
        ends.stdout = Slot::Ready(File::from(r));
        stdout = Some(w);
    }
    if plan.stderr {
        let (r, w) = pipe().map_err(fail)?;
        ends.stderr = Slot::Ready(File::from(r));
        stderr = Some(w);
    }
    Ok((
        ends,
        moat_sandbox::Stdio::Fds {
            stdin,
            stdout,
            stderr,
        },
    ))
}

/// stdout/stderr: copies the pipe to the connection until the process's last writer closes it,
/// then shuts the connection's write side. A host that goes away ends the copy (the process then
/// gets EPIPE, as with any closed stdout).
pub fn copy_out(mut pipe: File, conn: &mut impl Transport) -> io::Result<u64> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        conn.write_all(&buf[..n])?;
        total += n as u64;
    }
    conn.flush()?;
    conn.shutdown_write()?;
    Ok(total)
}

/// stdin: copies the connection to the pipe until the host shuts its write side, then closes
/// the pipe (the process reads end of file). A process that closed its stdin ends the copy.
pub fn copy_in(conn: &mut impl Transport, mut pipe: File) -> io::Result<u64> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pipe.write_all(&buf[..n])?;
        total += n as u64;
    }
    drop(pipe);
    Ok(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn take_once() {
        let (mut ends, _stdio) = pipes(StdioPlan {
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .unwrap();
        ends.take(Stream::Stdout, "init").unwrap();
        let e = ends.take(Stream::Stdout, "init").unwrap_err();
        assert!(e.message.contains("attached already"), "{e}");
        let e = ends.take(Stream::Stdin, "init").unwrap_err();
        assert!(e.message.contains("did not ask"), "{e}");
        // Still not planned, not taken.
        let e = ends.take(Stream::Stdin, "init").unwrap_err();
        assert!(e.message.contains("did not ask"), "{e}");
    }

    #[test]
    fn copies_both_ways_to_eof() {
        let plan = StdioPlan {
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let (mut ends, stdio) = pipes(plan).unwrap();
        let moat_sandbox::Stdio::Fds {
            stdin: Some(child_in),
            stdout: Some(child_out),
            ..
        } = stdio
        else {
            panic!("no pipes");
        };
        // stdin: host -> pipe; the "process" reads it to EOF.
        let (mut host, mut agent) = UnixStream::pair().unwrap();
        let w = ends.take(Stream::Stdin, "p").unwrap();
        let t = std::thread::spawn(move || copy_in(&mut agent, w).unwrap());
        let data = vec![7u8; 3 * BUFFER + 5];
        host.write_all(&data).unwrap();
        host.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        File::from(child_in).read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(t.join().unwrap(), data.len() as u64);

        // stdout: pipe -> host, then EOF on the connection.
        let (mut host, mut agent) = UnixStream::pair().unwrap();
        let r = ends.take(Stream::Stdout, "p").unwrap();
        let t = std::thread::spawn(move || copy_out(r, &mut agent).unwrap());
        let mut out = File::from(child_out);
        out.write_all(b"hello").unwrap();
        drop(out);
        let mut got = Vec::new();
        host.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(t.join().unwrap(), 5);
    }
}
