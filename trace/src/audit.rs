//! One structured line per decision that denies, kills or logs: who, which call, with which
//! arguments, under which rule, and what happened.

use std::fmt;

/// A decision worth a log line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// The process id inside the container's pid namespace.
    pub pid: i32,
    /// The thread id on the host.
    pub host_tid: i32,
    /// The system call's name (or number).
    pub syscall: String,
    /// Its arguments as the supervisor read them (paths, flags, families).
    pub args: String,
    /// The rule that decided: `[[paths]] /etc/secret (p.toml:3)`, `[syscalls] keyctl (...)`,
    /// `built in: ...`.
    pub rule: String,
    /// What happened: `denied EACCES`, `killed`, `allowed`.
    pub action: String,
}

impl Decision {
    /// Emits the decision through `tracing` (target `moat_trace::audit`): denials and kills as
    /// warnings, logged calls as info.
    pub fn emit(&self) {
        if self.action == "allowed" {
            tracing::info!(
                target: "moat_trace::audit",
                pid = self.pid,
                host_tid = self.host_tid,
                syscall = %self.syscall,
                args = %self.args,
                rule = %self.rule,
                action = %self.action,
                "syscall {}", self.action
            );
        } else {
            tracing::warn!(
                target: "moat_trace::audit",
                pid = self.pid,
                host_tid = self.host_tid,
                syscall = %self.syscall,
                args = %self.args,
                rule = %self.rule,
                action = %self.action,
                "syscall {}", self.action
            );
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} {}({}) {} by {}",
            self.pid, self.syscall, self.args, self.action, self.rule
        )
    }
}

/// Shows a path (or any bytes) as a quoted string, escaping what is not printable.
pub(crate) fn quote(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}
