//! Whole-config checks, run before the VMM creates anything, so that bad input changes nothing.

use std::path::Path;

use super::{Error, Result, VmConfig};
use crate::arch::{layout, mptable};

/// Longest Unix socket path (`sun_path` holds 108 bytes including the NUL).
const SUN_PATH_MAX: usize = 107;
/// Room left after the vsock socket path for `_<port>` (guest-initiated connections).
const VSOCK_SUFFIX_MAX: usize = 11;
/// Most guest memory accepted (1 TiB).
const MAX_MEMORY_MIB: u64 = 1 << 20;
/// virtio-mmio devices fit the IRQs between the first virtio IRQ and the last IOAPIC pin.
pub const MAX_VIRTIO_DEVICES: usize = (layout::IRQ_MAX - layout::VIRTIO_IRQ_START + 1) as usize;

fn invalid<T>(msg: String) -> Result<T> {
    Err(Error::Invalid(msg))
}

fn readable_file(what: &str, p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => std::fs::File::open(p)
            .map(drop)
            .or_else(|e| invalid(format!("{what} {} cannot be opened: {e}", p.display()))),
        Ok(_) => invalid(format!("{what} {} is not a regular file", p.display())),
        Err(e) => invalid(format!(
            "{what} {} does not exist or cannot be read ({e}): check the path",
            p.display()
        )),
    }
}

fn free_socket_path(what: &str, p: &Path, extra: usize) -> Result<()> {
    let len = p.as_os_str().len();
    if len + extra > SUN_PATH_MAX {
        return invalid(format!(
            "{what} path {} is {len} bytes long; Unix socket paths must stay under {} bytes: use a shorter path",
            p.display(),
            SUN_PATH_MAX + 1 - extra
        ));
    }
    if p.symlink_metadata().is_ok() {
        return invalid(format!(
            "{what} path {} is already taken (another VMM may be using it; remove it if it is stale)",
            p.display()
        ));
    }
    let parent = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return invalid(format!(
            "{what} path {}: directory {} does not exist",
            p.display(),
            parent.display()
        ));
    }
    Ok(())
}

/// Checks `c` as a whole. Returns the first problem found.
pub fn validate(c: &VmConfig) -> Result<()> {
    match (&c.kernel, &c.payload) {
        (Some(_), Some(_)) => {
            return invalid("give either a kernel or a payload, not both".into());
        }
        (None, None) => {
            return invalid("no kernel given: use --kernel FILE (a vmlinux or bzImage)".into());
        }
        (Some(k), None) => readable_file("kernel", k)?,
        (None, Some(p)) => readable_file("payload", p)?,
    }
    if let Some(i) = &c.initramfs {
        readable_file("initramfs", i)?;
    }
    if c.memory_mib < (layout::MIN_MEMORY >> 20) {
        return invalid(format!(
            "guest memory of {} MiB is too small: give at least {} MiB (a Linux guest needs 32 MiB or more)",
            c.memory_mib,
            layout::MIN_MEMORY >> 20
        ));
    }
    if c.memory_mib > MAX_MEMORY_MIB {
        return invalid(format!(
            "guest memory of {} MiB is more than the {} MiB moat-vmm supports",
            c.memory_mib, MAX_MEMORY_MIB
        ));
    }
    if c.vcpus == 0 || c.vcpus > mptable::MAX_CPUS {
        return invalid(format!(
            "{} vCPUs: give between 1 and {}",
            c.vcpus,
            mptable::MAX_CPUS
        ));
    }
    if c.cmdline.contains('\0') {
        return invalid("the kernel command line contains a NUL byte".into());
    }
    let devices = c.block.len() + usize::from(c.vsock.is_some());
    if devices > MAX_VIRTIO_DEVICES {
        return invalid(format!(
            "{devices} virtio devices asked for; at most {MAX_VIRTIO_DEVICES} fit"
        ));
    }
    for (i, b) in c.block.iter().enumerate() {
        readable_file(&format!("block device {i} image"), &b.path)?;
        if b.id.as_ref().is_some_and(|id| id.len() > 20) {
            return invalid(format!("block device {i}: id longer than 20 bytes"));
        }
    }
    if let Some(v) = &c.vsock {
        if v.cid < 3 || v.cid >= u64::from(u32::MAX) {
            return invalid(format!(
                "vsock guest CID {} is reserved or too large: use 3 or more",
                v.cid
            ));
        }
        free_socket_path("vsock socket", &v.socket, VSOCK_SUFFIX_MAX)?;
    }
    if let Some(a) = &c.api_socket {
        free_socket_path("API socket", a, 0)?;
        if c.vsock.as_ref().is_some_and(|v| v.socket == *a) {
            return invalid("the API socket and the vsock socket must differ".into());
        }
    }
    if let Some(j) = &c.jail {
        if !j.dir.is_absolute() || !j.dir.is_dir() {
            return invalid(format!(
                "jail directory {} must be an existing absolute directory",
                j.dir.display()
            ));
        }
        let sockets = c.vsock.iter().map(|v| &v.socket).chain(c.api_socket.iter());
        for s in sockets {
            if !s.starts_with(&j.dir) {
                return invalid(format!(
                    "socket {} must lie inside the jail directory {} (the jailed VMM sees nothing else)",
                    s.display(),
                    j.dir.display()
                ));
            }
        }
        if let crate::config::SerialOutput::File(_) = c.serial {
            // Opened before jailing: fine anywhere.
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BlockConfig, VsockConfig};

    fn base(dir: &Path) -> VmConfig {
        let k = dir.join("kernel");
        std::fs::write(&k, b"x").unwrap();
        VmConfig {
            kernel: Some(k),
            ..Default::default()
        }
    }

    fn err(c: &VmConfig) -> String {
        validate(c).unwrap_err().to_string()
    }

    #[test]
    fn good_config_passes() {
        let d = tempfile::tempdir().unwrap();
        let mut c = base(d.path());
        c.vsock = Some(VsockConfig {
            socket: d.path().join("v.sock"),
            cid: 3,
        });
        c.api_socket = Some(d.path().join("api.sock"));
        validate(&c).unwrap();
    }

    #[test]
    fn each_bad_value_is_named() {
        let d = tempfile::tempdir().unwrap();
        let c = VmConfig::default();
        assert!(err(&c).contains("no kernel"));
        let mut c = base(d.path());
        c.kernel = Some(d.path().join("missing"));
        assert!(err(&c).contains("does not exist"));
        let mut c = base(d.path());
        c.memory_mib = 1;
        assert!(err(&c).contains("too small"));
        let mut c = base(d.path());
        c.vcpus = 0;
        assert!(err(&c).contains("vCPUs"));
        let mut c = base(d.path());
        let taken = d.path().join("taken.sock");
        std::fs::write(&taken, b"").unwrap();
        c.vsock = Some(VsockConfig {
            socket: taken,
            cid: 3,
        });
        assert!(err(&c).contains("already taken"));
        let mut c = base(d.path());
        c.vsock = Some(VsockConfig {
            socket: d.path().join("v"),
            cid: 2,
        });
        assert!(err(&c).contains("CID"));
        let mut c = base(d.path());
        c.api_socket = Some(d.path().join("x".repeat(120)));
        assert!(err(&c).contains("bytes long"));
        let mut c = base(d.path());
        c.block = vec![BlockConfig {
            path: d.path().join("nope"),
            read_only: true,
            id: None,
        }];
        assert!(err(&c).contains("block device 0"));
        let mut c = base(d.path());
        c.payload = c.kernel.clone();
        assert!(err(&c).contains("not both"));
    }
}
