//! Whether the `ns` backend can run on this host: root, the namespaces it creates, the cgroup
//! controllers behind its limits, and seccomp filters for the default profile.

use crate::BackendKind;
use crate::check::{Availability, Fact, HostFacts, Status};

/// Namespaces every ns container gets (user and time only when a spec asks).
const NAMESPACES: &[&str] = &["pid", "net", "mnt", "uts", "ipc", "cgroup"];

/// Controllers behind `--memory`, the pids limit and `--cpus`.
const CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

/// The `ns` backend's verdict on this host.
pub fn availability(host: &HostFacts) -> Availability {
    let missing_ns: Vec<&str> = NAMESPACES
        .iter()
        .copied()
        .filter(|n| !host.namespaces.iter().any(|h| h == n))
        .collect();
    let required = vec![
        Fact {
            name: "root",
            value: if host.root {
                "running as root".into()
            } else {
                "not root (moat's ns backend is not rootless)".into()
            },
            ok: host.root,
        },
        Fact {
            name: "namespaces",
            value: if missing_ns.is_empty() {
                host.namespaces.join(",")
            } else {
                format!("missing {}", missing_ns.join(","))
            },
            ok: missing_ns.is_empty(),
        },
        host.cgroups_fact(CONTROLLERS),
        host.seccomp_fact("errno"),
    ];
    let missing: Vec<String> = required
        .iter()
        .filter(|f| !f.ok)
        .map(|f| format!("{} ({})", f.name, f.value))
        .collect();
    let mut facts = required;
    facts.push(Fact {
        name: "overlayfs",
        value: if host.overlayfs {
            "available (moat run's copy-on-write root)".into()
        } else {
            "missing: moat run needs --bundle".into()
        },
        ok: host.overlayfs,
    });
    facts.push(host.userns_fact());
    facts.push(host.containerd_fact());
    let (status, reason) = if missing.is_empty() {
        (
            Status::Usable,
            format!(
                "root, namespaces, cgroups ({:?}) and seccomp filters are available",
                host.cgroups.mode
            )
            .to_lowercase(),
        )
    } else {
        (
            Status::Unusable,
            format!(
                "missing {}: run as root on a kernel with namespaces, the {} cgroup controllers \
                 and seccomp filters",
                missing.join("; "),
                CONTROLLERS.join("/")
            ),
        )
    };
    Availability {
        backend: BackendKind::Ns,
        status,
        reason,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_controller_is_named() {
        let mut host = HostFacts::probe();
        host.root = true;
        host.namespaces = NAMESPACES.iter().map(|s| s.to_string()).collect();
        host.seccomp_actions = vec!["errno".into()];
        host.cgroups.v1 = vec!["cpu".into(), "memory".into()];
        host.cgroups.v2.clear();
        let a = availability(&host);
        assert_eq!(a.status, Status::Unusable);
        assert!(a.reason.contains("cgroups"), "{}", a.reason);
        host.cgroups.v2 = vec!["pids".into()];
        assert!(availability(&host).usable());
        host.root = false;
        let a = availability(&host);
        assert!(!a.usable() && a.reason.contains("root"), "{}", a.reason);
    }
}
