//! The OCI spec and process objects as the host sends them, made to fit the guest: parsed with
//! errors that name the field, `root.path` pointed at the rootfs the agent mounted, the cgroup
//! placed in the guest's own tree, and host paths (namespaces to join) dealt with, since they mean
//! nothing inside the VM.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Process, Root, Spec};
use serde::de::DeserializeOwned;

use super::failure::{Failure, Outcome};

/// Where a container's cgroup goes in the guest's cgroup2 tree.
pub fn cgroup_path(id: &str) -> PathBuf {
    Path::new("/moat").join(id)
}

fn parse<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Outcome<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." => "(the whole object)".to_string(),
            p => p,
        };
        Failure::invalid(format!("{what}: {field}: {}", e.into_inner()))
    })
}

fn refuse_terminal(field: &str, terminal: Option<bool>) -> Outcome<()> {
    if terminal == Some(true) {
        return Err(Failure::invalid(format!(
            "{field} is true, but the vm backend has no terminals yet: set it to false and attach \
             stdin/stdout/stderr instead"
        )));
    }
    Ok(())
}

/// Parses the container's spec and adjusts it for the guest: `root.path` becomes `rootfs`,
/// `linux.cgroupsPath` becomes [`cgroup_path`], a network namespace's `path` is dropped (a new
/// network namespace is made instead), and any other namespace with a `path` is refused.
pub fn container(id: &str, value: serde_json::Value, rootfs: &Path) -> Outcome<Spec> {
    let mut spec: Spec = parse("spec", value)?;
    let readonly = spec
        .root()
        .as_ref()
        .and_then(Root::readonly)
        .unwrap_or(false);
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(readonly));
    spec.set_root(Some(root));
    if let Some(p) = spec.process() {
        refuse_terminal("spec: process.terminal", p.terminal())?;
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(cgroup_path(id)));
    if let Some(namespaces) = linux.namespaces_mut() {
        for (i, ns) in namespaces.iter_mut().enumerate() {
            let Some(path) = ns.path().clone() else {
                continue;
            };
            if ns.typ() == LinuxNamespaceType::Network {
                tracing::warn!(
                    container = id,
                    "linux.namespaces[{i}]: the network namespace at {} is a host path; the \
                     container gets a new network namespace in the guest instead",
                    path.display()
                );
                ns.set_path(None);
            } else {
                return Err(Failure::invalid(format!(
                    "spec: linux.namespaces[{i}]: joining the {:?} namespace at {} is not possible \
                     in the VM (host paths mean nothing in the guest): leave out its path to get \
                     a new one",
                    ns.typ(),
                    path.display()
                )));
            }
        }
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Whether the spec asks for a read-only root (after [`container`]).
pub fn readonly_root(spec: &Spec) -> bool {
    spec.root()
        .as_ref()
        .and_then(Root::readonly)
        .unwrap_or(false)
}

/// Parses an exec'd process's OCI `process` object.
pub fn process(value: serde_json::Value) -> Outcome<Process> {
    let p: Process = parse("process", value)?;
    refuse_terminal("process.terminal", p.terminal())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use moat_agent_proto::ErrorKind;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({
            "ociVersion": "1.0.2",
            "root": {"path": "/host/rootfs", "readonly": true},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
            "linux": {
                "cgroupsPath": "kubepods-besteffort.slice:cri-containerd:abc",
                "namespaces": [
                    {"type": "pid"},
                    {"type": "network", "path": "/var/run/netns/cni-1234"},
                    {"type": "mount"}
                ]
            }
        })
    }

    #[test]
    fn points_root_and_cgroup_into_the_guest() {
        let spec = container("c1", base(), Path::new("/run/moat/bundles/c1/rootfs")).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/run/moat/bundles/c1/rootfs"));
        assert!(readonly_root(&spec));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/moat/c1")));
        let ns = linux.namespaces().as_ref().unwrap();
        assert_eq!(ns.len(), 3);
        assert_eq!(ns[1].typ(), LinuxNamespaceType::Network);
        assert_eq!(ns[1].path(), &None, "the host's netns path is dropped");
    }

    #[test]
    fn root_is_writable_unless_asked() {
        let mut v = base();
        v["root"] = json!({"path": "rootfs"});
        let spec = container("c1", v, Path::new("/r")).unwrap();
        assert!(!readonly_root(&spec));
        let mut v = base();
        v.as_object_mut().unwrap().remove("root");
        assert!(!readonly_root(
            &container("c1", v, Path::new("/r")).unwrap()
        ));
    }

    #[test]
    fn refuses_other_namespace_paths() {
        let mut v = base();
        v["linux"]["namespaces"][0]["path"] = json!("/proc/42/ns/pid");
        let e = container("c1", v, Path::new("/r")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("linux.namespaces[0]"), "{e}");
        assert!(e.message.contains("/proc/42/ns/pid"), "{e}");
    }

    #[test]
    fn names_the_wrong_field() {
        let mut v = base();
        v["linux"]["namespaces"][2]["type"] = json!("bogus");
        let e = container("c1", v, Path::new("/r")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("linux.namespaces[2].type"), "{e}");
        let e = process(json!({"cwd": 7})).unwrap_err();
        assert!(e.message.starts_with("process: cwd"), "{e}");
    }

    #[test]
    fn refuses_terminals() {
        let mut v = base();
        v["process"]["terminal"] = json!(true);
        let e = container("c1", v, Path::new("/r")).unwrap_err();
        assert!(e.message.contains("process.terminal"), "{e}");
        let e = process(
            json!({"cwd": "/", "args": ["sh"], "terminal": true, "user": {"uid": 0, "gid": 0}}),
        )
        .unwrap_err();
        assert!(e.message.contains("terminal"), "{e}");
    }
}
