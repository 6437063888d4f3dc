//! From a handler config to a running [`Backend`]: the one place that names the walls. Everything
//! else in the shim talks to the trait only.

use std::path::PathBuf;
use std::sync::Arc;

use moat_backend::check::HostFacts;
use moat_backend::ns::{NsBackend, NsOptions};
use moat_backend::trace::{Policy, TraceBackend, TraceOptions};
use moat_backend::vm::{VmBackend, VmOptions};
use moat_backend::{Backend, BackendKind};
use sha2::{Digest, Sha256};

use crate::config::HandlerConfig;
use crate::error::{Error, Result};

/// Where backends keep per-container state: `/run/moat/shim/<containerd>/<namespace>`, where
/// `<containerd>` is a short hash of containerd's address (a test's private containerd and the
/// system's never share state).
pub fn state_root(containerd_address: &str, namespace: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(containerd_address.as_bytes()));
    PathBuf::from("/run/moat/shim")
        .join(&h[..16])
        .join(namespace)
}

/// Removes `root` (from [`state_root`]) and the directories above it up to `/run/moat`, each
/// only if empty: other pods, namespaces, containerd instances and `moat` itself share them.
pub fn remove_state_root(root: &std::path::Path) {
    let top = std::path::Path::new("/run/moat");
    let mut dir = Some(root);
    while let Some(d) = dir {
        if std::fs::remove_dir(d).is_err() || d == top || !d.starts_with(top) {
            return;
        }
        dir = d.parent();
    }
}

/// Whether this shim can run `kind` on this host; if not, why (one sentence).
pub fn available(kind: BackendKind) -> std::result::Result<(), String> {
    let a = match kind {
        BackendKind::Ns => moat_backend::ns::check::availability(&HostFacts::probe()),
        BackendKind::Trace => moat_backend::trace::check::availability(&HostFacts::probe()),
        BackendKind::Vm => moat_backend::vm::check::availability(&moat_host::kvm::probe()),
    };
    if a.usable() { Ok(()) } else { Err(a.reason) }
}

/// Opens the backend a (narrowed) handler config selects, for pod `pod` (its first container's
/// id) whose state lives under `root`.
pub fn open(config: &HandlerConfig, root: PathBuf, pod: &str) -> Result<Arc<dyn Backend>> {
    match config.backend {
        BackendKind::Ns => Ok(Arc::new(NsBackend::new(NsOptions { root })?)),
        BackendKind::Trace => {
            let t = config.trace.as_ref().ok_or_else(|| {
                Error::InvalidArgument("backend = \"trace\" needs a [trace] section".into())
            })?;
            if let Some(extra) = t.extra_policies.first() {
                // Fail closed: running the pod under the handler's policy alone would ignore
                // the stricter one the pod asked for.
                return Err(Error::InvalidArgument(format!(
                    "pod annotation {}: stacking a second policy ({}) is not supported by this \
                     shim yet; remove the annotation or run the pod under a handler whose \
                     policy is the stricter one",
                    crate::config::ANNOTATION_TRACE_POLICY,
                    extra.display()
                )));
            }
            let policy = Policy::load(&t.policy)
                .map_err(|e| Error::InvalidArgument(format!("the handler's trace policy: {e}")))?;
            Ok(Arc::new(TraceBackend::new(TraceOptions {
                root,
                policy,
                supervisor: None,
            })?))
        }
        BackendKind::Vm => {
            let v = config.vm.as_ref().ok_or_else(|| {
                Error::InvalidArgument("backend = \"vm\" needs a [vm] section".into())
            })?;
            let vmm = match &v.vmm {
                Some(p) => p.clone(),
                None => moat_backend::vm::vmm_binary()?,
            };
            Ok(Arc::new(VmBackend::new(VmOptions {
                root,
                pod: pod.to_string(),
                kernel: v.kernel.clone(),
                initramfs: v.initramfs.clone(),
                vmm,
                memory_mib: v.memory_mib,
                vcpus: v.vcpus,
                overhead_mib: v.overhead_mib,
                boot_timeout: std::time::Duration::from_secs(120),
                spare_disks: v.spare_disks,
            })?))
        }
    }
}
