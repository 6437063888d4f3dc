//! The crate's error type: what went wrong, where, and (for what the user controls) what to do.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong creating or managing a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OCI spec (config.json) is malformed or asks for something moat does not support. Raised
    /// before any state changes.
    #[error("config.json: {field}: {message}")]
    Spec {
        /// The JSON path of the offending field, e.g. `linux.namespaces[2].type`.
        field: String,
        /// What is wrong and what to do about it.
        message: String,
    },
    /// A container id is not usable as a directory name.
    #[error(
        "container id {0:?} is not valid: use 1 to 1024 characters from [A-Za-z0-9_.+-], not starting with '.'"
    )]
    InvalidId(String),
    /// A container with this id already has state under the root directory.
    #[error("container {id:?} already exists (state in {dir}): pick another id or delete it first")]
    Exists {
        /// The id.
        id: String,
        /// Its state directory.
        dir: PathBuf,
    },
    /// No container with this id has state under the root directory.
    #[error("container {id:?} does not exist (no state in {dir})")]
    NotFound {
        /// The id.
        id: String,
        /// The state directory looked at.
        dir: PathBuf,
    },
    /// The operation does not fit the container's current status.
    #[error("container {id:?} is {status}: {what}")]
    WrongStatus {
        /// The id.
        id: String,
        /// Its status now.
        status: String,
        /// What was refused and what to do.
        what: String,
    },
    /// The container's process failed while setting itself up (message from inside the child).
    #[error("container setup failed: {0}")]
    Setup(String),
    /// A cgroup problem (unavailable controller, hierarchy missing, write refused).
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// The seccomp profile could not be compiled or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The saved state of a container is unreadable.
    #[error("container state: {0}")]
    State(String),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Spec`] for `field`.
    pub(crate) fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Spec {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`Error::Io`] with `context`.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
