//! What the shim writes into each bundle (`moat-shim.json`) so that `delete` — run by containerd
//! in a fresh process after the shim died — knows what to clean up.

use std::path::{Path, PathBuf};

use moat_backend::BackendKind;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name inside the bundle.
pub const STATE_FILE: &str = "moat-shim.json";

/// The record of one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// The backend that ran it.
    pub backend: BackendKind,
    /// The handler config it was created with.
    pub config_path: Option<PathBuf>,
    /// Host pid of its init (vm: the process representing it).
    pub pid: u32,
    /// That process's start time (`/proc/PID/stat` field 22), so a recycled pid is never killed.
    pub pid_start: Option<u64>,
    /// Whether the shim mounted `<bundle>/rootfs`.
    pub rootfs_mounted: bool,
}

impl ShimState {
    /// Writes the record atomically.
    pub fn write(&self, bundle: &Path) -> Result<()> {
        let tmp = bundle.join(format!(".{STATE_FILE}"));
        let json = serde_json::to_vec(self)
            .map_err(|e| Error::InvalidArgument(format!("encoding shim state: {e}")))?;
        std::fs::write(&tmp, json)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, bundle.join(STATE_FILE))
            .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
    }

    /// Reads the record; `None` if there is none (the container was never created).
    pub fn read(bundle: &Path) -> Result<Option<ShimState>> {
        let p = bundle.join(STATE_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        }
    }

    /// Removes the record (container deleted).
    pub fn remove(bundle: &Path) {
        let _ = std::fs::remove_file(bundle.join(STATE_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ShimState::read(d.path()).unwrap(), None);
        let s = ShimState {
            backend: BackendKind::Trace,
            config_path: Some("/etc/moat/trace.toml".into()),
            pid: 7,
            pid_start: Some(12345),
            rootfs_mounted: true,
        };
        s.write(d.path()).unwrap();
        assert_eq!(ShimState::read(d.path()).unwrap(), Some(s));
        ShimState::remove(d.path());
        assert_eq!(ShimState::read(d.path()).unwrap(), None);
        std::fs::write(d.path().join(STATE_FILE), "{").unwrap();
        assert!(ShimState::read(d.path()).is_err());
    }
}
