//! The shim's error type and how it reaches containerd: every error becomes a ttrpc status whose
//! code containerd's `errdefs.FromGRPC` turns back into NotFound, AlreadyExists, InvalidArgument,
//! FailedPrecondition, Unavailable or NotImplemented, so `ctr` and the CRI plugin react as they do
//! for runc's shim.

use ttrpc::Code;

/// A shim error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or names something unsupported; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No such container or process.
    #[error("not found: {0}")]
    NotFound(String),
    /// A container or process with that id exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The operation does not fit the current state.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The shim does not implement this operation.
    #[error("not implemented: {0}")]
    Unimplemented(String),
    /// A backend error, passed on with its own kind.
    #[error(transparent)]
    Backend(#[from] moat_backend::Error),
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps the last OS error (`errno`) with what was being done.
    pub fn last_os(context: impl Into<String>) -> Self {
        Error::io(context, std::io::Error::last_os_error())
    }

    /// The ttrpc status code containerd maps back to its own error kinds.
    pub fn code(&self) -> Code {
        use moat_backend::Error as B;
        match self {
            Error::InvalidArgument(_) | Error::Backend(B::InvalidArgument(_)) => {
                Code::INVALID_ARGUMENT
            }
            Error::NotFound(_) | Error::Backend(B::NotFound(_)) => Code::NOT_FOUND,
            Error::AlreadyExists(_) | Error::Backend(B::AlreadyExists(_)) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) | Error::Backend(B::FailedPrecondition(_)) => {
                Code::FAILED_PRECONDITION
            }
            Error::Unimplemented(_) | Error::Backend(B::Unimplemented(_)) => Code::UNIMPLEMENTED,
            Error::Backend(B::Unavailable(_)) => Code::UNAVAILABLE,
            Error::Backend(_) | Error::Io { .. } => Code::INTERNAL,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// A `Result` with the shim [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_containerd_errdefs() {
        assert_eq!(Error::NotFound("x".into()).code(), Code::NOT_FOUND);
        assert_eq!(
            Error::Backend(moat_backend::Error::AlreadyExists("c".into())).code(),
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            Error::Backend(moat_backend::Error::Unavailable("no kvm".into())).code(),
            Code::UNAVAILABLE
        );
        let e: ttrpc::Error = Error::FailedPrecondition("running".into()).into();
        match e {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::FAILED_PRECONDITION);
                assert!(s.message().contains("running"), "{}", s.message());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
