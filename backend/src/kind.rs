//! The names of moat's walls, as users type them (`--backend`) and as handlers carry them.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// One of moat's three walls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Linux namespaces, cgroups, capabilities and seccomp: the host kernel is shared.
    Ns,
    /// A KVM microVM per pod: its own kernel.
    Vm,
    /// Namespaces plus a ptrace supervisor that polices chosen syscalls.
    Trace,
}

impl BackendKind {
    /// Every kind, in the order moat reports them.
    pub const ALL: [BackendKind; 3] = [BackendKind::Ns, BackendKind::Vm, BackendKind::Trace];

    /// The name as users type it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Ns => "ns",
            BackendKind::Vm => "vm",
            BackendKind::Trace => "trace",
        }
    }

    /// The RuntimeClass handler that selects this kind (`moat-ns`, `moat-vm`, `moat-trace`).
    pub fn handler(self) -> &'static str {
        match self {
            BackendKind::Ns => "moat-ns",
            BackendKind::Vm => "moat-vm",
            BackendKind::Trace => "moat-trace",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ns" | "moat-ns" => Ok(BackendKind::Ns),
            "vm" | "moat-vm" => Ok(BackendKind::Vm),
            "trace" | "moat-trace" => Ok(BackendKind::Trace),
            other => Err(Error::InvalidArgument(format!(
                "unknown backend {other:?}: use one of ns, vm, trace"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.as_str().parse::<BackendKind>().unwrap(), kind);
            assert_eq!(kind.handler().parse::<BackendKind>().unwrap(), kind);
        }
        let err = "kvm".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("ns, vm, trace"), "{err}");
    }
}
