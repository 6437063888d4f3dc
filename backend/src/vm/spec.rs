//! A host's container spec made fit for the guest. What containerd's CRI plugin writes names host
//! objects — the pod's network namespace (`/var/run/netns/cni-...`), the sandbox's IPC, UTS and
//! PID namespaces (`/proc/<pid>/ns/...`), bind mounts of host files (`/etc/hosts`,
//! `/etc/resolv.conf`, `/dev/shm`, volumes) — none of which exists inside the VM. The pod's
//! boundary is the VM itself, so:
//!
//! - a namespace given by path becomes a new one in the guest, except the network namespace,
//!   which is dropped: every container of the pod shares the guest's network (the pod's);
//! - bind mounts of host paths are dropped (volumes are not supported on this wall yet);
//! - hooks are dropped: they are host programs.

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// What [`for_guest`] left out, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Mount destinations.
    pub mounts: Vec<String>,
    /// Namespaces that named a host path.
    pub namespaces: Vec<String>,
}

/// Rewrites `spec` for the guest; returns what it dropped.
pub(crate) fn for_guest(spec: &mut Spec) -> Dropped {
    let mut dropped = Dropped::default();
    if let Some(linux) = spec.linux_mut()
        && let Some(ns) = linux.namespaces().clone()
    {
        let kept = ns
            .into_iter()
            .filter_map(|mut n| {
                if n.path().is_none() {
                    return Some(n);
                }
                dropped.namespaces.push(format!("{:?}", n.typ()));
                if n.typ() == LinuxNamespaceType::Network {
                    return None;
                }
                n.set_path(None);
                Some(n)
            })
            .collect();
        linux.set_namespaces(Some(kept));
    }
    if let Some(mounts) = spec.mounts().clone() {
        let kept = mounts
            .into_iter()
            .filter(|m| {
                let bind = m.typ().as_deref() == Some("bind")
                    || m.options()
                        .as_ref()
                        .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
                if bind {
                    dropped.mounts.push(m.destination().display().to_string());
                }
                !bind
            })
            .collect();
        spec.set_mounts(Some(kept));
    }
    spec.set_hooks(None);
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_objects_are_left_out() {
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/x/hosts",
                 "options": ["rbind", "ro"]},
                {"destination": "/dev/shm", "source": "/run/x/shm", "options": ["rbind"]}
            ],
            "hooks": {"prestart": [{"path": "/usr/bin/true"}]},
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1"},
                {"type": "ipc", "path": "/proc/42/ns/ipc"},
                {"type": "mount"}
            ]}
        }))
        .unwrap();
        let d = for_guest(&mut spec);
        assert_eq!(d.mounts, ["/etc/hosts", "/dev/shm"]);
        assert_eq!(d.namespaces, ["Network", "Ipc"]);
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["mounts"].as_array().unwrap().len(), 1);
        assert!(v.get("hooks").is_none_or(|h| h.is_null()), "{v}");
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        let types: Vec<&str> = ns.iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["pid", "ipc", "mount"]);
        assert!(ns.iter().all(|n| n.get("path").is_none_or(|p| p.is_null())));
    }
}
