//! Whether the `vm` wall can run on this host: KVM that runs Linux guests (hardware virtualisation,
//! not PVM), the `moat-vmm` binary, and moat's guest kernel and initramfs built.

use std::path::PathBuf;

use moat_artifacts::{guest, kernel};

use crate::BackendKind;
use crate::check::{Availability, Fact, Status};

/// The kernel and initramfs from moat's cache, or why they are not there (and what to run).
pub fn built_artifacts() -> Result<(PathBuf, PathBuf), String> {
    let k = match kernel::status() {
        kernel::Status::Built(k) => k,
        kernel::Status::NotBuilt { reason, .. } => return Err(format!("guest kernel: {reason}")),
    };
    match guest::status() {
        guest::Status::Built(g) => Ok((k.vmlinux, g.initramfs)),
        guest::Status::NotBuilt { reason } => Err(format!("guest initramfs: {reason}")),
    }
}

/// The `vm` backend's verdict on this host.
pub fn availability(kvm: &moat_host::kvm::Probe) -> Availability {
    use moat_host::kvm::Flavour;
    let vmm = super::vmm_binary();
    let artifacts = built_artifacts();
    let facts = vec![
        Fact {
            name: "kvm",
            value: format!(
                "{} ({})",
                kvm.flavour,
                kvm.module.as_deref().unwrap_or("no KVM module")
            ),
            ok: kvm.runs_linux_guests(),
        },
        Fact {
            name: "vmm",
            value: match &vmm {
                Ok(p) => p.display().to_string(),
                Err(e) => e.to_string(),
            },
            ok: vmm.is_ok(),
        },
        Fact {
            name: "guest_artifacts",
            value: match &artifacts {
                Ok((k, i)) => format!("kernel {}, initramfs {}", k.display(), i.display()),
                Err(e) => e.clone(),
            },
            ok: artifacts.is_ok(),
        },
    ];
    let (status, reason) = match kvm.flavour {
        Flavour::Pvm => (
            Status::NotOnThisHost,
            "KVM is PVM: ordinary guests cannot run here; VM tests use the rig".to_string(),
        ),
        Flavour::None => (Status::NotOnThisHost, kvm.explanation.clone()),
        Flavour::Hardware => {
            let missing: Vec<String> = facts
                .iter()
                .filter(|f| !f.ok)
                .map(|f| format!("{} ({})", f.name, f.value))
                .collect();
            if missing.is_empty() {
                (
                    Status::Usable,
                    "a microVM per pod: hardware KVM, moat-vmm and the guest artifacts are here"
                        .to_string(),
                )
            } else {
                (Status::Unusable, format!("missing {}", missing.join("; ")))
            }
        }
    };
    Availability {
        backend: BackendKind::Vm,
        status,
        reason,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_means_not_on_this_host() {
        let probe = moat_host::kvm::Probe {
            flavour: moat_host::kvm::Flavour::Pvm,
            module: Some("kvm_pvm".into()),
            explanation: String::new(),
        };
        let a = availability(&probe);
        assert_eq!(a.status, Status::NotOnThisHost);
        assert!(a.reason.contains("use the rig"), "{}", a.reason);
    }
}
