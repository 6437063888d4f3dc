//! Errors every backend reports through the same few variants, so front ends can map them to
//! containerd's error codes (NotFound, AlreadyExists, InvalidArgument, FailedPrecondition, ...).

/// A backend error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something unsupported; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No such container or process.
    #[error("not found: {0}")]
    NotFound(String),
    /// A container or process with that id exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The operation does not fit the current state (e.g. start twice, exec into a stopped container).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The host cannot do this (no KVM, no cgroup controller, ...); says what is missing.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The backend does not implement this operation.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// Anything else, with its cause.
    #[error("{context}: {source}")]
    Internal {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps any error with what was being done.
    pub fn internal(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Internal {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// A `Result` with the backend [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
