//! Whether the `trace` wall can run on this host: everything the `ns` wall needs, plus seccomp's
//! trace action, ptrace of children, `mseal` (for unwritable pinned arguments) and the supervisor
//! binary.

use crate::BackendKind;
use crate::check::{Availability, Fact, HostFacts, Status};

/// The `trace` backend's verdict on this host.
pub fn availability(host: &HostFacts) -> Availability {
    let ns = crate::ns::check::availability(host);
    let mseal = moat_trace::supervisor::probe();
    let bin = super::supervisor_binary();
    let mut facts = vec![
        host.seccomp_fact("trace"),
        host.ptrace_fact(),
        Fact {
            name: "mseal",
            value: match &mseal {
                Ok(()) => "available (pinned arguments cannot be unmapped or remapped)".into(),
                Err(e) => e.to_string(),
            },
            ok: mseal.is_ok(),
        },
        Fact {
            name: "supervisor",
            value: match &bin {
                Ok(p) => p.display().to_string(),
                Err(e) => e.to_string(),
            },
            ok: bin.is_ok(),
        },
    ];
    let missing: Vec<String> = facts
        .iter()
        .filter(|f| !f.ok)
        .map(|f| format!("{} ({})", f.name, f.value))
        .collect();
    let (status, reason) = if !missing.is_empty() {
        let mut reason = format!(
            "missing {}: the trace wall needs seccomp's trace action, ptrace of children (Yama \
             ptrace_scope <= 1, or 2 as root), Linux >= 6.10 and moat-trace",
            missing.join("; ")
        );
        if !ns.usable() {
            reason.push_str(&format!("; and the ns wall it builds on: {}", ns.reason));
        }
        (Status::Unusable, reason)
    } else if !ns.usable() {
        (
            Status::Unusable,
            format!("the ns wall it builds on is not usable: {}", ns.reason),
        )
    } else {
        (
            Status::Usable,
            "ns containers under a ptrace supervisor: seccomp RET_TRACE, ptrace, mseal and \
             moat-trace are available"
                .to_string(),
        )
    };
    facts.extend(
        ns.facts
            .into_iter()
            .filter(|f| f.ok || f.name != "overlayfs"),
    );
    Availability {
        backend: BackendKind::Trace,
        status,
        reason,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_without_seccomp_trace_is_unusable() {
        let mut h = HostFacts::probe();
        h.seccomp_actions = vec!["errno".into()];
        h.ptrace_scope = Some(1);
        let a = availability(&h);
        assert_eq!(a.status, Status::Unusable);
        assert!(a.reason.contains("seccomp"), "{}", a.reason);
    }
}
