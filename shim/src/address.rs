//! The shim's ttrpc socket: its name, how `start` binds it or finds the pod's running shim, and the
//! `address` file containerd reads to reconnect after a restart.
//!
//! Like runc's shim the socket lives at `/run/containerd/s/<sha256(containerd address, namespace,
//! group)>`, where the group is the pod (`io.kubernetes.cri.sandbox-id`) or, outside a pod, the task
//! id. Hashing containerd's address keeps two containerds (a test's private one and the system's)
//! from sharing shims.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Directory holding the shims' sockets.
pub const SOCKET_DIR: &str = "/run/containerd/s";
/// The file in a bundle that holds the shim's address.
pub const ADDRESS_FILE: &str = "address";
const SCHEME: &str = "unix://";

/// The socket address (`unix:///run/containerd/s/<hex>`) of the shim serving `group`.
pub fn socket_address(containerd_address: &str, namespace: &str, group: &str) -> String {
    let key = Path::new(containerd_address).join(namespace).join(group);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    format!("{SCHEME}{SOCKET_DIR}/{}", hex::encode(digest))
}

/// The filesystem path of a `unix://` address.
pub fn socket_path(address: &str) -> Result<PathBuf> {
    address
        .strip_prefix(SCHEME)
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "shim address {address:?} is not a unix:///absolute/path address"
            ))
        })
}

/// True if a shim accepts connections at `address`.
pub fn can_connect(address: &str) -> bool {
    socket_path(address).is_ok_and(|p| UnixStream::connect(p).is_ok())
}

/// What [`bind_or_join`] found.
pub enum Bound {
    /// A fresh socket: this invocation must start the shim and hand it the listener.
    New(UnixListener),
    /// A shim already serves this address (another container of the same pod).
    Existing,
}

/// Binds `address`, or finds the running shim that holds it. A stale socket whose shim is gone is
/// removed and bound again.
pub fn bind_or_join(address: &str) -> Result<Bound> {
    let path = socket_path(address)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    match UnixListener::bind(&path) {
        Ok(l) => return finish_bind(l, &path),
        Err(e) if e.kind() == ErrorKind::AddrInUse => {}
        Err(e) => {
            return Err(Error::io(
                format!("binding shim socket {}", path.display()),
                e,
            ));
        }
    }
    if can_connect(address) {
        return Ok(Bound::Existing);
    }
    remove_socket(address)?;
    let l = UnixListener::bind(&path)
        .map_err(|e| Error::io(format!("binding shim socket {} again", path.display()), e))?;
    finish_bind(l, &path)
}

fn finish_bind(l: UnixListener, path: &Path) -> Result<Bound> {
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(Error::io(format!("chmod {}", path.display()), e));
    }
    Ok(Bound::New(l))
}

/// Removes the socket file behind `address`; a missing file is fine.
pub fn remove_socket(address: &str) -> Result<()> {
    let path = socket_path(address)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Writes `dir/address` atomically (temp file + rename), as containerd's shims do.
pub fn write_address_file(dir: &Path, address: &str) -> Result<()> {
    let tmp = dir.join(format!(".{ADDRESS_FILE}"));
    let dst = dir.join(ADDRESS_FILE);
    std::fs::write(&tmp, address)
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(
            format!("renaming {} to {}", tmp.display(), dst.display()),
            e,
        )
    })
}

/// Reads `dir/address`.
pub fn read_address_file(dir: &Path) -> Result<String> {
    let p = dir.join(ADDRESS_FILE);
    let s = std::fs::read_to_string(&p)
        .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    if s.is_empty() {
        return Err(Error::InvalidArgument(format!("{} is empty", p.display())));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_is_stable_and_short_enough() {
        let a = socket_address("/run/containerd/containerd.sock", "k8s.io", "pod1");
        assert_eq!(
            a,
            socket_address("/run/containerd/containerd.sock", "k8s.io", "pod1")
        );
        assert_ne!(a, socket_address("/tmp/other.sock", "k8s.io", "pod1"));
        assert_ne!(
            a,
            socket_address("/run/containerd/containerd.sock", "default", "pod1")
        );
        assert!(a.starts_with("unix:///run/containerd/s/"));
        // sun_path holds 108 bytes; containerd's own limit is 106.
        assert!(socket_path(&a).unwrap().as_os_str().len() < 106);
        assert!(socket_path("/no/scheme").is_err());
        assert!(socket_path("unix://relative").is_err());
    }

    #[test]
    fn bind_join_and_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix://{}/s.sock", dir.path().display());
        let Bound::New(l) = bind_or_join(&addr).unwrap() else {
            panic!("expected a new socket")
        };
        assert!(matches!(bind_or_join(&addr).unwrap(), Bound::Existing));
        drop(l);
        // The file is left behind by the dead listener: it is stale and gets replaced.
        let Bound::New(_l2) = bind_or_join(&addr).unwrap() else {
            panic!("expected rebinding")
        };
        remove_socket(&addr).unwrap();
        remove_socket(&addr).unwrap();
    }

    #[test]
    fn address_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        write_address_file(dir.path(), "unix:///x").unwrap();
        assert_eq!(read_address_file(dir.path()).unwrap(), "unix:///x");
        assert!(!dir.path().join(".address").exists());
        std::fs::write(dir.path().join("address"), "").unwrap();
        assert!(read_address_file(dir.path()).is_err());
    }
}
