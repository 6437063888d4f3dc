//! The flavour of `/dev/kvm`: hardware virtualisation, a paravirtual stand-in (PVM), or none.
//!
//! On cloud VMs without nested virtualisation, `/dev/kvm` may be a vendor PVM module (`kvm_pvm`):
//! tiny KVM programs run on it, but a Linux guest's kernel is emulated instruction by instruction and
//! dies at its first user-space syscall. Only hardware KVM (`kvm_intel`/`kvm_amd`, with the `vmx`/
//! `svm` CPU flag) can run moat's microVMs.

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// What `/dev/kvm` is on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// Hardware-assisted KVM (Intel VT-x or AMD-V), possibly nested: Linux guests run.
    Hardware,
    /// A paravirtual KVM (e.g. `kvm_pvm`) or one without VMX/SVM: small payloads run, Linux does not.
    Pvm,
    /// No usable `/dev/kvm`.
    None,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::Hardware => "hardware",
            Flavour::Pvm => "pvm",
            Flavour::None => "none",
        })
    }
}

/// The result of probing the host's KVM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    /// The flavour.
    pub flavour: Flavour,
    /// The KVM vendor module found (`kvm_intel`, `kvm_amd`, `kvm_pvm`), if any.
    pub module: Option<String>,
    /// One plain sentence saying what this means for moat.
    pub explanation: String,
}

impl Probe {
    /// True when Linux guests (moat's microVMs) can run directly on this host.
    pub fn runs_linux_guests(&self) -> bool {
        self.flavour == Flavour::Hardware
    }
}

/// Where the facts come from; tests point it at a fake tree.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The KVM device node.
    pub dev_kvm: PathBuf,
    /// `/proc/cpuinfo`.
    pub cpuinfo: PathBuf,
    /// `/sys/module`.
    pub sys_module: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            dev_kvm: PathBuf::from("/dev/kvm"),
            cpuinfo: PathBuf::from("/proc/cpuinfo"),
            sys_module: PathBuf::from("/sys/module"),
        }
    }
}

/// Probes this host's `/dev/kvm`.
pub fn probe() -> Probe {
    probe_from(&Sources::default())
}

/// Probes using explicit sources.
pub fn probe_from(src: &Sources) -> Probe {
    let module = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| src.sys_module.join(m).exists())
        .map(str::to_string);
    if !src.dev_kvm.exists() {
        return Probe {
            flavour: Flavour::None,
            module,
            explanation: format!(
                "{} does not exist: load kvm_intel or kvm_amd, or run on a host with hardware \
                 virtualisation; VM tests use the rig",
                src.dev_kvm.display()
            ),
        };
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open(&src.dev_kvm) {
        return Probe {
            flavour: Flavour::None,
            module,
            explanation: format!(
                "{} cannot be opened read-write ({e}): run as root or add this user to the kvm group",
                src.dev_kvm.display()
            ),
        };
    }
    let hw_flag = cpu_has_virt_flag(&src.cpuinfo);
    let flavour = match (module.as_deref(), hw_flag) {
        (Some("kvm_pvm"), _) => Flavour::Pvm,
        (Some("kvm_intel" | "kvm_amd"), true) => Flavour::Hardware,
        (_, true) => Flavour::Hardware,
        (_, false) => Flavour::Pvm,
    };
    let explanation = match flavour {
        Flavour::Hardware => format!(
            "KVM is hardware virtualisation ({}): microVMs run directly",
            module.as_deref().unwrap_or("vmx/svm present")
        ),
        _ => format!(
            "KVM is PVM ({}, no vmx/svm CPU flag): ordinary guests cannot run here; VM tests use the rig",
            module.as_deref().unwrap_or("unknown module")
        ),
    };
    Probe {
        flavour,
        module,
        explanation,
    }
}

fn cpu_has_virt_flag(cpuinfo: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(cpuinfo) else {
        return false;
    };
    text.lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake(module: Option<&str>, flags: &str, dev: bool) -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().unwrap();
        let src = Sources {
            dev_kvm: dir.path().join("kvm"),
            cpuinfo: dir.path().join("cpuinfo"),
            sys_module: dir.path().join("module"),
        };
        fs::create_dir_all(&src.sys_module).unwrap();
        if let Some(m) = module {
            fs::create_dir_all(src.sys_module.join(m)).unwrap();
        }
        fs::write(
            &src.cpuinfo,
            format!("processor\t: 0\nflags\t\t: fpu {flags} sse\n"),
        )
        .unwrap();
        if dev {
            fs::write(&src.dev_kvm, b"").unwrap();
        }
        (dir, src)
    }

    #[test]
    fn pvm_module_means_pvm() {
        let (_d, src) = fake(Some("kvm_pvm"), "hypervisor", true);
        let p = probe_from(&src);
        assert_eq!(p.flavour, Flavour::Pvm);
        assert!(p.explanation.contains("rig"), "{}", p.explanation);
        assert!(!p.runs_linux_guests());
    }

    #[test]
    fn svm_with_kvm_amd_is_hardware() {
        let (_d, src) = fake(Some("kvm_amd"), "svm npt", true);
        let p = probe_from(&src);
        assert_eq!(p.flavour, Flavour::Hardware);
        assert_eq!(p.module.as_deref(), Some("kvm_amd"));
    }

    #[test]
    fn no_flag_no_module_is_pvm() {
        let (_d, src) = fake(None, "hypervisor", true);
        assert_eq!(probe_from(&src).flavour, Flavour::Pvm);
    }

    #[test]
    fn missing_device_is_none() {
        let (_d, src) = fake(Some("kvm_intel"), "vmx", false);
        let p = probe_from(&src);
        assert_eq!(p.flavour, Flavour::None);
        assert!(p.explanation.contains("does not exist"));
    }

    #[test]
    fn this_host_probes_without_panicking() {
        let p = probe();
        assert!(!p.explanation.is_empty());
    }
}
