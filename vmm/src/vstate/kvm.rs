//! Opening `/dev/kvm` with errors a user can act on, and checking the capabilities the VMM needs.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Errors opening KVM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device node is missing.
    #[error(
        "{0} does not exist: load kvm_intel or kvm_amd (or run on a host with hardware virtualisation)"
    )]
    Missing(String),
    /// No permission.
    #[error("{0} is not writable by this user: run as root or add the user to the kvm group")]
    Permission(String),
    /// Another open error.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// The API version is not 12.
    #[error("KVM API version {0} is not supported (need 12)")]
    Version(i32),
    /// A required capability is missing.
    #[error("this KVM lacks {0}, which moat-vmm needs")]
    Capability(&'static str),
}

/// Opens KVM at `path` and checks it can run our VMs.
pub fn open(path: &Path) -> Result<Kvm, Error> {
    let shown = path.display().to_string();
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Missing(shown.clone()))?;
    let kvm = Kvm::new_with_path(cpath).map_err(|source| match source.errno() {
        libc::ENOENT => Error::Missing(shown.clone()),
        libc::EACCES | libc::EPERM | libc::EROFS => Error::Permission(shown.clone()),
        _ => Error::Open {
            path: shown.clone(),
            source,
        },
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(Error::Version(v));
    }
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (
            Cap::Irqchip,
            "KVM_CAP_IRQCHIP (in-kernel interrupt controller)",
        ),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::Capability(name));
        }
    }
    Ok(kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unwritable_devices_say_so() {
        let d = tempfile::tempdir().unwrap();
        let e = open(&d.path().join("kvm")).unwrap_err();
        assert!(matches!(e, Error::Missing(_)), "{e}");
        assert!(e.to_string().contains("does not exist"));
        // A regular file opens but is no KVM.
        let f = d.path().join("notkvm");
        std::fs::write(&f, b"").unwrap();
        assert!(open(&f).is_err());
    }
}
