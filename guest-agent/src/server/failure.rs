//! A request that failed: the [`ErrorKind`] the host maps onto its own errors and a message for
//! the user. Every handler returns one of these; the connection loop turns it into
//! [`Response::Error`].

use moat_agent_proto::{ErrorKind, Response};

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What was wrong (and, where the user can fix it, what to do).
    pub message: String,
}

/// A handler's result.
pub type Outcome<T> = Result<T, Failure>;

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Bad input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// No such container or process.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Not possible in the current state.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    /// Anything else: `what` was being done when `error` happened.
    pub fn internal(what: &str, error: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, format!("{what}: {error}"))
    }

    /// A `moat-sandbox` error while doing `what`, mapped as the ns backend maps it.
    pub fn sandbox(what: &str, e: moat_sandbox::Error) -> Self {
        use moat_sandbox::Error as S;
        let kind = match &e {
            S::Spec { .. } | S::InvalidId(_) => ErrorKind::InvalidArgument,
            S::Exists { .. } => ErrorKind::AlreadyExists,
            S::NotFound { .. } => ErrorKind::NotFound,
            S::WrongStatus { .. } => ErrorKind::FailedPrecondition,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, format!("{what}: {e}"))
    }

    /// The protocol's answer for this failure.
    pub fn response(&self) -> Response {
        Response::error(self.kind, self.message.clone())
    }
}

/// Checks an id with [`moat_agent_proto::validate_id`].
pub fn check_id(what: &str, id: &str) -> Outcome<()> {
    moat_agent_proto::validate_id(what, id).map_err(Failure::invalid)
}
