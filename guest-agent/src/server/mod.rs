//! The agent's RPC server: the guest side of `moat-agent-proto`, through which the host's `vm`
//! backend runs containers in the guest with `moat-sandbox`.
//!
//! One thread accepts vsock connections on [`moat_abi::AGENT_VSOCK_PORT`]; each connection gets a
//! thread of its own and is, by its first frame, an RPC connection ([`Request::Hello`], then
//! request/response pairs in order; a [`Request::Wait`] blocks only its own connection) or a stream
//! connection ([`Request::Attach`], then raw bytes of one stream). The server works on any
//! [`Transport`], so unit tests drive it over `UnixStream::pair()`; [`vsock`] is the thin layer
//! for the real thing.
//!
//! What it knows lives in the [`registry`]; PID 1's reaper hands it exit statuses through
//! [`Server::child_exited`]. Anything a host sends is untrusted input: a malformed or oversized
//! frame drops the connection, and every field is checked before use.

mod cgroup;
mod failure;
mod ops;
pub mod registry;
pub mod rootfs;
mod spec;
pub mod stdio;
pub mod transport;
pub mod vsock;

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use moat_agent_proto::{ErrorKind, Request, Response, Stream, VERSION, read_frame, write_frame};

pub use failure::Failure;
use failure::Outcome;
use registry::{Registry, describe};
pub use rootfs::Paths;
use transport::Transport;
use vsock::VsockListener;

use crate::sys::{Sys, WaitStatus};

/// How the server is set up.
pub struct Options {
    /// Where it keeps its things.
    pub paths: Paths,
    /// Called after a [`Request::Shutdown`] was answered (in the guest: power off).
    pub on_shutdown: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// The RPC server (shared by its connection threads).
pub struct Server {
    paths: Paths,
    registry: Registry,
    on_shutdown: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("paths", &self.paths)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Reads the next request; `None` when the connection ended or must be dropped (logged).
fn next_request(conn: &mut impl Transport) -> Option<Request> {
    match read_frame(conn) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("dropping a host connection: {e}");
            None
        }
    }
}

/// Sends a response; `false` if the host went away.
fn reply(conn: &mut impl Transport, response: &Response) -> bool {
    match write_frame(conn, response) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("cannot answer the host: {e}");
            false
        }
    }
}

/// A request for the log: specs and processes left out (their environments may hold secrets).
fn summary(request: &Request) -> String {
    match request {
        Request::Create(c) => format!("create {:?} from {:?}, stdio {:?}", c.id, c.rootfs, c.stdio),
        Request::Exec(e) => format!("exec {:?} in {:?}, stdio {:?}", e.exec_id, e.id, e.stdio),
        other => format!("{other:?}"),
    }
}

fn answer(outcome: Outcome<Response>) -> Response {
    outcome.unwrap_or_else(|f| {
        tracing::debug!("request failed: {f}");
        f.response()
    })
}

impl Server {
    /// A server with no containers yet.
    pub fn new(opts: Options) -> Self {
        Self {
            paths: opts.paths,
            registry: Registry::default(),
            on_shutdown: opts.on_shutdown,
        }
    }

    /// A process of the guest ended (PID 1's reaper, holding [`crate::SPAWN_LOCK`]); returns
    /// whether it was one of the containers'.
    pub fn child_exited(&self, pid: i32, status: WaitStatus) -> bool {
        self.registry.exited(pid, status)
    }

    /// Listens on vsock `port` and serves every connection on a thread of its own.
    pub fn listen(self: &Arc<Self>, port: u32) -> io::Result<JoinHandle<()>> {
        let listener = VsockListener::bind(port)?;
        let server = self.clone();
        std::thread::Builder::new()
            .name("agent-accept".into())
            .spawn(move || server.accept_loop(&listener))
    }

    fn accept_loop(self: Arc<Self>, listener: &VsockListener) {
        loop {
            match listener.accept() {
                Ok((conn, cid)) => {
                    tracing::debug!("connection from CID {cid}");
                    let server = self.clone();
                    if let Err(e) = std::thread::Builder::new()
                        .name("agent-conn".into())
                        .spawn(move || server.serve(conn))
                    {
                        tracing::error!("cannot start a thread for a host connection: {e}");
                    }
                }
                Err(e) => {
                    tracing::error!("accepting a vsock connection: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Serves one connection until it ends.
    pub fn serve(&self, mut conn: impl Transport) {
        let Some(first) = next_request(&mut conn) else {
            return;
        };
        match first {
            Request::Hello { version } if version == VERSION => {
                let kernel = crate::sys::Linux
                    .kernel_release()
                    .unwrap_or_else(|_| "unknown".into());
                if reply(&mut conn, &Response::Hello { version, kernel }) {
                    self.rpc(conn);
                }
            }
            Request::Hello { version } => {
                tracing::warn!("refusing a host that speaks protocol {version}");
                reply(
                    &mut conn,
                    &Response::error(
                        ErrorKind::InvalidArgument,
                        format!(
                            "moat-agent in the guest speaks protocol {VERSION}, the host speaks \
                             {version}; install matching moat and guest artifacts"
                        ),
                    ),
                );
            }
            Request::Attach {
                id,
                exec_id,
                stream,
            } => self.attach(conn, &id, exec_id.as_deref(), stream),
            _ => {
                reply(
                    &mut conn,
                    &Response::error(
                        ErrorKind::InvalidArgument,
                        "a connection starts with hello (RPC) or attach (stream); say hello first",
                    ),
                );
            }
        }
    }

    /// Request/response pairs after the hello.
    fn rpc(&self, mut conn: impl Transport) {
        while let Some(request) = next_request(&mut conn) {
            let shutdown = matches!(request, Request::Shutdown);
            let response = self.handle(request);
            if !reply(&mut conn, &response) {
                return;
            }
            if shutdown {
                tracing::info!("the host asked for shutdown");
                (self.on_shutdown)();
                return;
            }
        }
    }

    /// Answers one request of an RPC connection.
    fn handle(&self, request: Request) -> Response {
        tracing::debug!("request: {}", summary(&request));
        answer(match request {
            Request::Hello { .. } => Err(Failure::invalid(
                "hello comes once, as the first request of a connection",
            )),
            Request::Attach { .. } => Err(Failure::invalid(
                "attach turns a connection into a stream: send it first on a new connection",
            )),
            Request::Ping => Ok(Response::Pong),
            Request::SetClock { unix_nanos } => self.set_clock(unix_nanos),
            Request::Create(c) => self.create(c),
            Request::Start { id } => self.start(&id),
            Request::Exec(e) => self.exec(e),
            Request::Signal {
                id,
                exec_id,
                signal,
                all,
            } => self.signal(&id, exec_id.as_deref(), signal, all),
            Request::Wait { id, exec_id } => self.wait(&id, exec_id.as_deref()),
            Request::Stats { id } => self.stats(&id),
            Request::Pids { id } => self.pids(&id),
            Request::Delete { id, exec_id } => self.delete(&id, exec_id.as_deref()),
            Request::Shutdown => Ok(Response::Ok),
        })
    }

    /// A stream connection: hands over the pipe end, then copies until end of file.
    fn attach(&self, mut conn: impl Transport, id: &str, exec_id: Option<&str>, stream: Stream) {
        let what = describe(id, exec_id);
        let taken = self.registry.get(id).and_then(|entry| {
            let mut st = entry.lock();
            st.proc_mut(id, exec_id)?.stdio.take(stream, &what)
        });
        let pipe = match taken {
            Ok(p) => p,
            Err(f) => {
                reply(&mut conn, &f.response());
                return;
            }
        };
        if !reply(&mut conn, &Response::Ok) {
            return;
        }
        let copied = match stream {
            Stream::Stdin => stdio::copy_in(&mut conn, pipe),
            Stream::Stdout | Stream::Stderr => stdio::copy_out(pipe, &mut conn),
        };
        match copied {
            Ok(n) => tracing::debug!("{stream:?} of {what}: {n} bytes, done"),
            Err(e) => tracing::debug!("{stream:?} of {what}: ended early: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
