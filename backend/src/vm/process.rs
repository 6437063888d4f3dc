//! One process in the guest seen from the host: its standard streams copied between the caller's
//! descriptors and the agent's stream connections, and its exit collected by a waiter thread.
//!
//! The waiter blocks in the agent's `Wait` on a connection of its own, then waits for the stdout
//! and stderr copies to reach EOF (so every byte the process wrote is delivered before the exit is
//! reported), then publishes the status to any number of [`Proc::wait`]ers. If the VM dies, the
//! connection breaks and the process counts as killed (SIGKILL), with the reason logged.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use moat_agent_proto::{self as proto, Request, Response, StdioPlan, Stream};

use super::client;
use super::machine::Machine;
use crate::{Error, ExitStatus, ProcessIo, Result};

/// How long stdout/stderr may stay open after the process ended (a daemonised child can hold
/// them); after that the copies are abandoned and the exit is reported anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The plan for the agent, and the caller's descriptors to copy to and from.
pub(crate) struct Io {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl Io {
    /// From the front end's request. Terminals are not supported on this wall yet.
    pub(crate) fn from_process_io(io: ProcessIo) -> Result<Io> {
        match io {
            ProcessIo::Fds {
                stdin,
                stdout,
                stderr,
            } => Ok(Io {
                stdin,
                stdout,
                stderr,
            }),
            ProcessIo::Null => Ok(Io {
                stdin: None,
                stdout: None,
                stderr: None,
            }),
            ProcessIo::Terminal => Err(Error::Unimplemented(
                "terminals are not supported by the vm backend yet: run without -t/--tty".into(),
            )),
        }
    }

    /// Which streams the agent must make pipes for.
    pub(crate) fn plan(&self) -> StdioPlan {
        StdioPlan {
            stdin: self.stdin.is_some(),
            stdout: self.stdout.is_some(),
            stderr: self.stderr.is_some(),
        }
    }
}

#[derive(Default)]
struct Slot {
    status: Option<ExitStatus>,
}

/// A process of a container in the guest.
pub(crate) struct Proc {
    slot: Mutex<Slot>,
    cv: Condvar,
    /// Its pid in the guest.
    pub guest_pid: u32,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("guest_pid", &self.guest_pid)
            .finish()
    }
}

impl Proc {
    /// Attaches the streams of process (`id`, `exec_id`) and starts its waiter. Call right after
    /// the agent created it; on error the caller deletes it in the guest.
    pub(crate) fn attach(
        machine: &Arc<Machine>,
        id: &str,
        exec_id: Option<&str>,
        io: Io,
        guest_pid: u32,
    ) -> Result<Arc<Proc>> {
        let mut copies = Vec::new();
        let vsock = machine.vsock();
        if let Some(fd) = io.stdout {
            let s = client::attach(vsock, id, exec_id, Stream::Stdout)?;
            copies.push(spawn_copy("stdout", s, fd)?);
        }
        if let Some(fd) = io.stderr {
            let s = client::attach(vsock, id, exec_id, Stream::Stderr)?;
            copies.push(spawn_copy("stderr", s, fd)?);
        }
        if let Some(fd) = io.stdin {
            let s = client::attach(vsock, id, exec_id, Stream::Stdin)?;
            // Not joined: stdin ends when the caller closes it, not when the process ends.
            spawn_stdin(s, fd)?;
        }
        let proc = Arc::new(Proc {
            slot: Mutex::default(),
            cv: Condvar::new(),
            guest_pid,
        });
        let (m, p) = (machine.clone(), proc.clone());
        let (id, exec_id) = (id.to_string(), exec_id.map(str::to_string));
        std::thread::Builder::new()
            .name("moat-vm-wait".into())
            .spawn(move || {
                let status = wait_in_guest(&m, &id, exec_id.as_deref());
                drain(copies);
                p.publish(status);
            })
            .map_err(|e| Error::internal("starting a waiter thread", e))?;
        Ok(proc)
    }

    fn publish(&self, status: ExitStatus) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).status = Some(status);
        self.cv.notify_all();
    }

    /// The exit status, if it ended.
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).status
    }

    /// Blocks until it ended (up to `timeout`; `None`: no limit).
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<ExitStatus> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = slot.status {
                return Some(s);
            }
            slot = match deadline {
                None => self.cv.wait(slot).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.cv
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

fn wait_in_guest(m: &Machine, id: &str, exec_id: Option<&str>) -> ExitStatus {
    let req = Request::Wait {
        id: id.to_string(),
        exec_id: exec_id.map(str::to_string),
    };
    match m.call_timeout(&req, None) {
        Ok(Response::Exited { status }) => match status {
            proto::ExitStatus::Exited(c) => ExitStatus::Exited(c),
            proto::ExitStatus::Signaled(s) => ExitStatus::Signaled(s),
            proto::ExitStatus::OomKilled => ExitStatus::OomKilled,
        },
        Ok(other) => {
            tracing::error!(
                "waiting for {id}/{exec_id:?}: {}; counting it as killed",
                client::unexpected("wait", other)
            );
            ExitStatus::Signaled(libc::SIGKILL)
        }
        Err(e) => {
            tracing::error!("waiting for {id}/{exec_id:?}: {e}; counting it as killed");
            ExitStatus::Signaled(libc::SIGKILL)
        }
    }
}

fn drain(copies: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for c in copies {
        while !c.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if c.is_finished() {
            let _ = c.join();
        } else {
            tracing::warn!(
                "a process's output stayed open {DRAIN_TIMEOUT:?} after it ended (a child still \
                 holds it?): reporting the exit without it"
            );
        }
    }
}

/// Copies the guest's stream into the caller's descriptor until EOF.
fn spawn_copy(name: &'static str, mut from: UnixStream, to: OwnedFd) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("moat-vm-{name}"))
        .spawn(move || {
            let mut to = std::fs::File::from(to);
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = to.write_all(&buf[..n]) {
                            // The reader went away: keep draining so the guest is not blocked.
                            tracing::debug!("{name}: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!("{name} of a guest process: {e}");
                        break;
                    }
                }
            }
        })
        .map_err(|e| Error::internal("starting a stream copy", e))
}

/// Copies the caller's stdin to the guest until EOF, then shuts the stream's write side.
fn spawn_stdin(to: UnixStream, from: OwnedFd) -> Result<()> {
    std::thread::Builder::new()
        .name("moat-vm-stdin".into())
        .spawn(move || {
            let mut from = std::fs::File::from(from);
            let mut to_w = &to;
            if let Err(e) = std::io::copy(&mut from, &mut to_w) {
                tracing::debug!("stdin of a guest process: {e}");
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
        .map(drop)
        .map_err(|e| Error::internal("starting a stream copy", e))
}
