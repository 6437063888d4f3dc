//! The protocol between moat's `vm` backend (host) and `moat-agent` (PID 1 in the guest).
//!
//! Transport: vsock, port [`moat_abi::AGENT_VSOCK_PORT`] in the guest; the host reaches it through
//! moat-vmm's hybrid Unix socket (`CONNECT 1024\n` -> `OK <port>\n`). Every connection starts
//! with one [`Request`] frame and is then one of two kinds:
//!
//! - **RPC**: request frames, each answered by exactly one [`Response`] frame, in order. The first
//!   request must be [`Request::Hello`] with [`VERSION`]; the agent refuses any other version. A
//!   [`Request::Wait`] blocks its connection until the process ends, so the host waits on
//!   connections of their own.
//! - **Stream**: the first request is [`Request::Attach`]; after its [`Response::Ok`] the
//!   connection carries one standard stream of one process as raw bytes (stdout/stderr: guest to
//!   host until the process's last writer closes; stdin: host to guest until the host shuts its
//!   side). Back-pressure is vsock's own credit flow control, so nothing is lost and nothing is
//!   buffered without bound when a reader is slow.
//!
//! Frames are a 4-byte big-endian length followed by that many bytes of JSON. JSON keeps the
//! protocol readable in logs and lets both sides reject unknown fields (`deny_unknown_fields`);
//! the messages are small (an OCI spec is the largest), so its cost does not matter. Both sides
//! treat what they read as untrusted: a frame longer than [`MAX_FRAME`] is refused before it is
//! read, and every field is validated by its user ([`validate_id`] for ids).

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Bump on any incompatible change.
pub const VERSION: u32 = 1;

/// The largest frame either side accepts, in bytes (length prefix excluded).
pub const MAX_FRAME: u32 = 1 << 20;

/// The longest container or exec id accepted.
pub const MAX_ID: usize = 128;

/// A framing or encoding error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the connection failed.
    #[error("agent connection: {0}")]
    Io(#[from] io::Error),
    /// The peer announced a frame larger than [`MAX_FRAME`].
    #[error("agent connection: a frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(u32),
    /// The connection ended in the middle of a frame.
    #[error("agent connection: closed in the middle of a frame")]
    Truncated,
    /// The frame is not a valid message.
    #[error("agent connection: malformed message: {0}")]
    Malformed(String),
}

/// A `Result` with the protocol [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Which standard stream of a process an [`Request::Attach`] connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Host to guest.
    Stdin,
    /// Guest to host.
    Stdout,
    /// Guest to host.
    Stderr,
}

/// Which of a new process's standard streams the host will attach; the others are `/dev/null`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioPlan {
    /// A pipe for stdin, fed by an [`Stream::Stdin`] attach.
    pub stdin: bool,
    /// A pipe for stdout, read by a [`Stream::Stdout`] attach.
    pub stdout: bool,
    /// A pipe for stderr, read by a [`Stream::Stderr`] attach.
    pub stderr: bool,
}

/// Where a container's root file system comes from inside the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rootfs {
    /// A read-only image on a virtio-blk disk (`vda`, `vdb`, ...), mounted read-only with a
    /// writable overlay on tmpfs (unless the spec asks for a read-only root).
    Block {
        /// The disk's name under `/dev` (`vd` followed by letters).
        device: String,
        /// Its file system: `erofs` or `ext4`.
        fstype: String,
    },
}

/// A container to create in the guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Container id ([`validate_id`]).
    pub id: String,
    /// The OCI runtime spec (`config.json`), as JSON. `root.path` is replaced by the agent; paths of
    /// namespaces to join mean nothing in the guest and are refused.
    pub spec: serde_json::Value,
    /// Its root file system.
    pub rootfs: Rootfs,
    /// Which streams of the init process the host attaches.
    pub stdio: StdioPlan,
}

/// A process to start in a running container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecProcess {
    /// The container.
    pub id: String,
    /// Exec id, unique within the container ([`validate_id`]).
    pub exec_id: String,
    /// The OCI `process` object, as JSON.
    pub process: serde_json::Value,
    /// Which streams the host attaches.
    pub stdio: StdioPlan,
}

/// What the host asks of the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First request of an RPC connection.
    Hello {
        /// The host's [`VERSION`].
        version: u32,
    },
    /// Health check: answered with [`Response::Pong`].
    Ping,
    /// Sets the guest's wall clock (the guest has no RTC).
    SetClock {
        /// Nanoseconds since the Unix epoch.
        unix_nanos: u64,
    },
    /// Creates a container; its init waits for [`Request::Start`]. Answer: [`Response::Created`].
    Create(CreateContainer),
    /// Lets a created container's init run.
    Start {
        /// The container.
        id: String,
    },
    /// Starts another process in a running container. Answer: [`Response::Started`].
    Exec(ExecProcess),
    /// Sends a signal.
    Signal {
        /// The container.
        id: String,
        /// The process (`None`: the init).
        exec_id: Option<String>,
        /// The signal number.
        signal: i32,
        /// Every process of the container (init only).
        all: bool,
    },
    /// Blocks until the process ends. Answer: [`Response::Exited`].
    Wait {
        /// The container.
        id: String,
        /// The process (`None`: the init).
        exec_id: Option<String>,
    },
    /// Resource usage of a container. Answer: [`Response::Stats`].
    Stats {
        /// The container.
        id: String,
    },
    /// Guest pids of a container's processes. Answer: [`Response::Pids`].
    Pids {
        /// The container.
        id: String,
    },
    /// Removes a container (killing what still runs), or forgets an ended exec'd process.
    Delete {
        /// The container.
        id: String,
        /// The exec'd process to forget (`None`: the whole container).
        exec_id: Option<String>,
    },
    /// Turns this connection into a stream of one process (see the module docs).
    Attach {
        /// The container.
        id: String,
        /// The process (`None`: the init).
        exec_id: Option<String>,
        /// Which stream.
        stream: Stream,
    },
    /// Stops every process and powers the VM off (answered first).
    Shutdown,
}

/// How a process ended, as the guest saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Killed by the OOM killer at its cgroup's memory limit.
    OomKilled,
}

/// A container's resource usage, from its cgroup in the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// Memory limit, bytes.
    pub memory_limit: Option<u64>,
    /// Times the limit was hit.
    pub memory_failcnt: u64,
    /// OOM kills.
    pub oom_kills: u64,
    /// CPU time, ns.
    pub cpu_usage_ns: u64,
    /// User CPU time, ns.
    pub cpu_user_ns: u64,
    /// System CPU time, ns.
    pub cpu_system_ns: u64,
    /// Tasks.
    pub pids_current: u64,
    /// Task limit.
    pub pids_limit: Option<u64>,
}

/// What kind of failure an [`Response::Error`] reports (the host maps it onto its own errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something invalid.
    InvalidArgument,
    /// No such container or process.
    NotFound,
    /// The id is taken.
    AlreadyExists,
    /// Not possible in the current state (e.g. start twice).
    FailedPrecondition,
    /// The agent does not do this.
    Unsupported,
    /// Anything else.
    Internal,
}

/// What the agent answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello {
        /// The agent's [`VERSION`].
        version: u32,
        /// The guest kernel's release (`uname -r`).
        kernel: String,
    },
    /// Done.
    Ok,
    /// Answer to [`Request::Ping`].
    Pong,
    /// A container was created.
    Created {
        /// Guest pid of its init.
        pid: u32,
    },
    /// An exec'd process started.
    Started {
        /// Its guest pid.
        pid: u32,
    },
    /// The process ended.
    Exited {
        /// How.
        status: ExitStatus,
    },
    /// Resource usage.
    Stats(Stats),
    /// Guest pids.
    Pids {
        /// The pids.
        pids: Vec<u32>,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// What was wrong, for the user.
        message: String,
    },
}

impl Response {
    /// An [`Response::Error`].
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

/// Checks a container or exec id: 1 to [`MAX_ID`] characters of `[A-Za-z0-9_.-]`, not starting
/// with `.` (ids name directories in the guest).
pub fn validate_id(what: &str, id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {id:?} is not valid: use 1 to {MAX_ID} of A-Z a-z 0-9 _ - . (not starting with .)"
        ))
    }
}

/// Checks a disk name: `vd` followed by one or two lower-case letters.
pub fn validate_device(device: &str) -> std::result::Result<(), String> {
    let rest = device.strip_prefix("vd").unwrap_or("");
    if (1..=2).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "rootfs device {device:?} is not a virtio-blk disk name (vda, vdb, ...)"
        ))
    }
}

/// Writes one frame holding `msg`.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| Error::Malformed(e.to_string()))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n <= MAX_FRAME)
        .ok_or(Error::TooLarge(
            u32::try_from(body.len()).unwrap_or(u32::MAX),
        ))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame and decodes it; `Ok(None)` if the connection ended cleanly before a frame.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(Error::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated,
        _ => Error::Io(e),
    })?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests;
