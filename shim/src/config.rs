//! The handler configuration: what `/etc/moat/<backend>.toml` holds and how a pod's annotations may
//! narrow it.
//!
//! containerd's CRI plugin passes each runtime handler's `options.ConfigPath` to the shim; the file
//! names the backend and its settings. The same schema is what `moat install` writes, so it lives in
//! this small module with no dependency beyond serde and toml:
//!
//! ```toml
//! backend = "trace"              # ns | vm | trace
//! [trace]
//! policy = "/etc/moat/trace-policy.toml"
//! annotation_policy_dir = "/etc/moat/policies"   # optional
//! ```
//!
//! Pod annotations (containerd passes them when the handler lists `pod_annotations = ["moat.dev/*"]`)
//! may only tighten what the file allows: `moat.dev/backend` must name the handler's own backend,
//! `moat.dev/trace-policy` stacks one more policy (every policy must allow a syscall; the shim does
//! not enforce stacks yet and refuses such pods rather than ignore the stricter policy), and
//! `moat.dev/vm-memory-mib` / `moat.dev/vm-vcpus` may only lower the VM's size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use moat_backend::BackendKind;
use serde::{Deserialize, Serialize};

/// Where `moat install` puts the handler configs: `/etc/moat/{ns,vm,trace}.toml`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/moat";

/// Annotation naming the backend a pod expects; must match the handler's.
pub const ANNOTATION_BACKEND: &str = "moat.dev/backend";
/// Annotation stacking one more trace policy (a file name inside `annotation_policy_dir`).
pub const ANNOTATION_TRACE_POLICY: &str = "moat.dev/trace-policy";
/// Annotation lowering the VM's memory, in MiB.
pub const ANNOTATION_VM_MEMORY_MIB: &str = "moat.dev/vm-memory-mib";
/// Annotation lowering the VM's vCPU count.
pub const ANNOTATION_VM_VCPUS: &str = "moat.dev/vm-vcpus";
/// Prefix of every annotation moat reads; unknown ones under it are rejected.
pub const ANNOTATION_PREFIX: &str = "moat.dev/";

/// A config error: what was wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading handler config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("handler config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// The values do not fit together.
    #[error("handler config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A pod annotation asks for something the handler does not allow.
    #[error("pod annotation {key}={value:?}: {message}")]
    Annotation {
        /// The annotation key.
        key: String,
        /// Its value.
        value: String,
        /// Why it was refused.
        message: String,
    },
}

/// One handler's configuration (`/etc/moat/<backend>.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Which wall runs this handler's pods.
    pub backend: BackendKind,
    /// Settings of the `ns` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<NsConfig>,
    /// Settings of the `vm` backend (required when `backend = "vm"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmConfig>,
    /// Settings of the `trace` backend (required when `backend = "trace"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceConfig>,
}

/// `[ns]`: nothing to set yet; the table is accepted so configs can be written ahead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsConfig {}

/// `[vm]`: the guest and its default size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Guest kernel image (bzImage or vmlinux), absolute path.
    pub kernel: PathBuf,
    /// Initramfs with `moat-agent` as `/init`, absolute path.
    pub initramfs: PathBuf,
    /// Guest memory in MiB when the pod sets no memory limit.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// vCPUs when the pod sets no CPU limit.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory added to the pod's limit for the guest kernel and agent, in MiB.
    #[serde(default = "default_overhead_mib")]
    pub overhead_mib: u32,
    /// The VMM binary; default: `moat-vmm` next to the shim, then on `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<PathBuf>,
    /// Empty disks each VM boots with, one per further container image of the pod (the pod's
    /// first image, the pause container's, is attached at boot).
    #[serde(default = "default_spare_disks")]
    pub spare_disks: u32,
}

/// `[trace]`: the syscall policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// The policy every pod of this handler runs under, absolute path.
    pub policy: PathBuf,
    /// Directory from which a pod may stack one more policy by annotation; none: not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_policy_dir: Option<PathBuf>,
    /// Policies stacked on top of `policy` by pod annotations (never read from the file).
    #[serde(skip)]
    pub extra_policies: Vec<PathBuf>,
}

fn default_memory_mib() -> u32 {
    128
}
fn default_vcpus() -> u32 {
    1
}
fn default_overhead_mib() -> u32 {
    64
}
fn default_spare_disks() -> u32 {
    6
}

/// The most spare disks a VM may boot with (moat-vmm has 19 virtio slots; vsock takes one).
const MAX_SPARE_DISKS: u32 = 16;

const MIN_MEMORY_MIB: u32 = 32;
const MAX_VCPUS: u32 = 255;

impl HandlerConfig {
    /// The configuration used when containerd passes no `ConfigPath` (plain `ctr run`): `ns`.
    pub fn default_ns() -> Self {
        HandlerConfig {
            backend: BackendKind::Ns,
            ns: None,
            vm: None,
            trace: None,
        }
    }

    /// Reads, parses and validates a handler config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates handler config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: HandlerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks that the sections fit the backend and the values are sane.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let b = self.backend;
        for (kind, present) in [
            (BackendKind::Ns, self.ns.is_some()),
            (BackendKind::Vm, self.vm.is_some()),
            (BackendKind::Trace, self.trace.is_some()),
        ] {
            if present && kind != b {
                return Err(invalid(format!(
                    "has a [{kind}] section but backend = \"{b}\": remove the section or change \
                     the backend"
                )));
            }
        }
        match b {
            BackendKind::Ns => {}
            BackendKind::Vm => {
                let vm = self.vm.as_ref().ok_or_else(|| {
                    invalid(
                        "backend = \"vm\" needs a [vm] section with kernel and initramfs".into(),
                    )
                })?;
                absolute(&vm.kernel, "vm.kernel").map_err(invalid)?;
                absolute(&vm.initramfs, "vm.initramfs").map_err(invalid)?;
                if let Some(vmm) = &vm.vmm {
                    absolute(vmm, "vm.vmm").map_err(invalid)?;
                }
                if vm.memory_mib < MIN_MEMORY_MIB {
                    return Err(invalid(format!(
                        "vm.memory_mib = {} is too small: the guest needs at least {MIN_MEMORY_MIB}",
                        vm.memory_mib
                    )));
                }
                if vm.spare_disks > MAX_SPARE_DISKS {
                    return Err(invalid(format!(
                        "vm.spare_disks = {} is out of range: use 0..={MAX_SPARE_DISKS}",
                        vm.spare_disks
                    )));
                }
                if vm.vcpus == 0 || vm.vcpus > MAX_VCPUS {
                    return Err(invalid(format!(
                        "vm.vcpus = {} is out of range: use 1..={MAX_VCPUS}",
                        vm.vcpus
                    )));
                }
            }
            BackendKind::Trace => {
                let t = self.trace.as_ref().ok_or_else(|| {
                    invalid("backend = \"trace\" needs a [trace] section with policy".into())
                })?;
                absolute(&t.policy, "trace.policy").map_err(invalid)?;
                if let Some(dir) = &t.annotation_policy_dir {
                    absolute(dir, "trace.annotation_policy_dir").map_err(invalid)?;
                }
            }
        }
        Ok(())
    }

    /// Applies a pod's `moat.dev/*` annotations, which may only tighten this config. Returns the
    /// narrowed config, or says which annotation was refused and why. Other annotations are ignored.
    pub fn narrow(&self, annotations: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut out = self.clone();
        let mut keys: Vec<&String> = annotations
            .keys()
            .filter(|k| k.starts_with(ANNOTATION_PREFIX))
            .collect();
        keys.sort();
        for key in keys {
            let value = &annotations[key];
            let refuse = |message: String| ConfigError::Annotation {
                key: key.clone(),
                value: value.clone(),
                message,
            };
            match key.as_str() {
                ANNOTATION_BACKEND => {
                    let wanted: BackendKind = value.parse().map_err(|e| refuse(format!("{e}")))?;
                    if wanted != self.backend {
                        return Err(refuse(format!(
                            "this handler runs the {} backend; an annotation cannot switch it to \
                             {wanted}: pick the moat-{wanted} RuntimeClass instead",
                            self.backend
                        )));
                    }
                }
                ANNOTATION_TRACE_POLICY => {
                    let t = out.trace.as_mut().ok_or_else(|| {
                        refuse(format!(
                            "only the trace backend has policies, not {}",
                            self.backend
                        ))
                    })?;
                    let dir = t.annotation_policy_dir.clone().ok_or_else(|| {
                        refuse(
                            "this handler allows no per-pod policy: set \
                             trace.annotation_policy_dir in its config"
                                .into(),
                        )
                    })?;
                    if value.is_empty()
                        || value.contains('/')
                        || value.starts_with('.')
                        || value.contains('\0')
                    {
                        return Err(refuse(format!(
                            "name a policy file inside {} (a plain file name, no '/', not \
                             starting with '.')",
                            dir.display()
                        )));
                    }
                    t.extra_policies.push(dir.join(value));
                }
                ANNOTATION_VM_MEMORY_MIB | ANNOTATION_VM_VCPUS => {
                    let vm = out.vm.as_mut().ok_or_else(|| {
                        refuse(format!(
                            "only the vm backend has a VM size, not {}",
                            self.backend
                        ))
                    })?;
                    let n: u32 = value
                        .parse()
                        .map_err(|_| refuse("expected a positive whole number".into()))?;
                    let (current, floor, what) = if key == ANNOTATION_VM_VCPUS {
                        (&mut vm.vcpus, 1, "vCPUs")
                    } else {
                        (&mut vm.memory_mib, MIN_MEMORY_MIB, "MiB")
                    };
                    if n > *current {
                        return Err(refuse(format!(
                            "may only lower the handler's {} {what}, not raise it",
                            *current
                        )));
                    }
                    if n < floor {
                        return Err(refuse(format!("below the minimum of {floor} {what}")));
                    }
                    *current = n;
                }
                other => {
                    return Err(refuse(format!(
                        "unknown moat annotation {other:?}: known are {ANNOTATION_BACKEND}, \
                         {ANNOTATION_TRACE_POLICY}, {ANNOTATION_VM_MEMORY_MIB}, {ANNOTATION_VM_VCPUS}"
                    )));
                }
            }
        }
        Ok(out)
    }
}

fn absolute(p: &Path, key: &str) -> Result<(), String> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "{key} = {:?} must be an absolute path",
            p.display().to_string()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/etc/moat/test.toml")
    }

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        for (file, kind) in [
            ("ns.toml", BackendKind::Ns),
            ("vm.toml", BackendKind::Vm),
            ("trace.toml", BackendKind::Trace),
        ] {
            let c = HandlerConfig::load(&dir.join(file)).unwrap();
            assert_eq!(c.backend, kind, "{file}");
        }
    }

    #[test]
    fn vm_defaults_fill_in() {
        let c = HandlerConfig::parse(
            "backend = \"vm\"\n[vm]\nkernel = \"/k\"\ninitramfs = \"/i\"\n",
            p(),
        )
        .unwrap();
        let vm = c.vm.unwrap();
        assert_eq!((vm.memory_mib, vm.vcpus, vm.overhead_mib), (128, 1, 64));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        for (text, needle) in [
            ("backend = \"kvm\"", "unknown variant"),
            ("backend = \"ns\"\nbogus = 1", "unknown field"),
            ("backend = \"vm\"", "needs a [vm] section"),
            ("backend = \"trace\"", "needs a [trace] section"),
            (
                "backend = \"ns\"\n[trace]\npolicy = \"/p\"",
                "has a [trace] section",
            ),
            (
                "backend = \"trace\"\n[trace]\npolicy = \"p.toml\"",
                "absolute",
            ),
            (
                "backend = \"vm\"\n[vm]\nkernel = \"/k\"\ninitramfs = \"/i\"\nmemory_mib = 8",
                "too small",
            ),
            (
                "backend = \"vm\"\n[vm]\nkernel = \"/k\"\ninitramfs = \"/i\"\nvcpus = 0",
                "out of range",
            ),
            (
                "backend = \"vm\"\n[vm]\nkernel = \"/k\"\ninitramfs = \"/i\"\nsmp = 2",
                "unknown field",
            ),
        ] {
            let e = HandlerConfig::parse(text, p()).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("/etc/moat/test.toml"), "{e}");
        }
        let e = HandlerConfig::load(Path::new("/nonexistent/moat.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/moat.toml"), "{e}");
    }

    #[test]
    fn annotations_only_tighten() {
        let vm = HandlerConfig::parse(
            "backend = \"vm\"\n[vm]\nkernel = \"/k\"\ninitramfs = \"/i\"\nmemory_mib = 256\nvcpus = 2",
            p(),
        )
        .unwrap();
        let n = vm
            .narrow(&ann(&[
                ("moat.dev/vm-memory-mib", "64"),
                ("moat.dev/vm-vcpus", "1"),
                ("moat.dev/backend", "vm"),
                ("io.kubernetes.cri.sandbox-id", "x"),
            ]))
            .unwrap();
        let v = n.vm.unwrap();
        assert_eq!((v.memory_mib, v.vcpus), (64, 1));

        for (k, v, needle) in [
            ("moat.dev/backend", "ns", "cannot switch"),
            ("moat.dev/vm-memory-mib", "512", "only lower"),
            ("moat.dev/vm-vcpus", "0", "minimum"),
            ("moat.dev/vm-vcpus", "two", "whole number"),
            (
                "moat.dev/trace-policy",
                "strict.toml",
                "only the trace backend",
            ),
            ("moat.dev/seccomp", "off", "unknown moat annotation"),
        ] {
            let e = vm.narrow(&ann(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(needle), "{k}={v}: {e}");
        }
    }

    #[test]
    fn trace_policy_annotation_stacks_inside_the_allowed_dir() {
        let t = HandlerConfig::parse(
            "backend = \"trace\"\n[trace]\npolicy = \"/etc/moat/p.toml\"\n\
             annotation_policy_dir = \"/etc/moat/policies\"",
            p(),
        )
        .unwrap();
        let n = t
            .narrow(&ann(&[("moat.dev/trace-policy", "strict.toml")]))
            .unwrap();
        let tc = n.trace.unwrap();
        assert_eq!(tc.policy, PathBuf::from("/etc/moat/p.toml"));
        assert_eq!(
            tc.extra_policies,
            vec![PathBuf::from("/etc/moat/policies/strict.toml")]
        );
        for bad in ["../../etc/shadow", "a/b.toml", ".hidden", ""] {
            let e = t
                .narrow(&ann(&[("moat.dev/trace-policy", bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("plain file name"), "{bad}: {e}");
        }
        let no_dir =
            HandlerConfig::parse("backend = \"trace\"\n[trace]\npolicy = \"/p.toml\"", p())
                .unwrap();
        let e = no_dir
            .narrow(&ann(&[("moat.dev/trace-policy", "strict.toml")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("annotation_policy_dir"), "{e}");
    }
}
