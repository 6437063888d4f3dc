//! A container in the pod: the backend's [`Instance`], the shim's record of its init and exec
//! processes, and what the shim set up for it (the rootfs mount).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use moat_backend::{Instance, Spec};
use oci_spec::runtime::LinuxNamespaceType;

use crate::error::{Error, Result};
use crate::process::Proc;

/// CRI annotation naming the container's role (`sandbox` or `container`).
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI annotation naming the pod (the sandbox container's id).
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// One container.
pub struct Container {
    /// containerd's task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The backend's handle.
    pub instance: Arc<dyn Instance>,
    /// The init process.
    pub init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    paused: AtomicBool,
    /// `<bundle>/rootfs` when the shim mounted containerd's snapshot there.
    pub rootfs: Option<PathBuf>,
    /// Kill every process of the container when init exits (no pid namespace of its own).
    pub kill_all_on_exit: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when the spec's init does not get a PID namespace of its own, so its exit does not take the
/// container's other processes with it (runc's `ShouldKillAllOnExit`).
pub fn shares_pid_namespace(spec: &Spec) -> bool {
    let own = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        });
    !own
}

impl Container {
    /// A freshly created container.
    pub fn new(
        id: String,
        bundle: PathBuf,
        instance: Arc<dyn Instance>,
        init: Arc<Proc>,
        rootfs: Option<PathBuf>,
        kill_all_on_exit: bool,
    ) -> Container {
        Container {
            id,
            bundle,
            instance,
            init,
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
            rootfs,
            kill_all_on_exit,
        }
    }

    /// The process with this exec id (`""`: init).
    pub fn process(&self, exec_id: &str) -> Result<Arc<Proc>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs).get(exec_id).cloned().ok_or_else(|| {
            Error::NotFound(format!("no process {exec_id:?} in container {}", self.id))
        })
    }

    /// Registers an exec process; refuses a duplicate id.
    pub fn add_exec(&self, proc: Arc<Proc>) -> Result<()> {
        let mut m = lock(&self.execs);
        let id = proc.exec_id_str().to_string();
        if m.contains_key(&id) {
            return Err(Error::AlreadyExists(format!(
                "process {id:?} already exists in container {}",
                self.id
            )));
        }
        m.insert(id, proc);
        Ok(())
    }

    /// Forgets an exec process.
    pub fn remove_exec(&self, exec_id: &str) -> Option<Arc<Proc>> {
        lock(&self.execs).remove(exec_id)
    }

    /// Every exec process.
    pub fn execs(&self) -> Vec<Arc<Proc>> {
        lock(&self.execs).values().cloned().collect()
    }

    /// Whether the container is frozen.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Records a pause or resume.
    pub fn set_paused(&self, p: bool) {
        self.paused.store(p, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn pid_namespace_decides_kill_all() {
        let own = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#,
        );
        assert!(!shares_pid_namespace(&own));
        let joined = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#,
        );
        assert!(shares_pid_namespace(&joined));
        let none = spec(r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"mount"}]}}"#);
        assert!(shares_pid_namespace(&none));
    }
}
