//! The OCI runtime verbs, runc-compatible as far as containerd's runc shim
//! (`io.containerd.runc.v2`) needs them.
//!
//! Each verb is one short-lived process working on `<root>/<id>/` through `moat-sandbox`, as runc
//! does: `create` leaves the container's init (its child) blocked on the exec FIFO and exits — the
//! init is then reparented to the shim, a subreaper, which reaps it; `start` opens the FIFO from
//! another process; the rest load the saved state.
//!
//! Error texts keep the words containerd matches on: "does not exist" (delete and kill of an unknown
//! container), "container not running" (kill of a stopped one).

pub mod lifecycle;
pub mod process;
pub mod resources;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use moat_sandbox::Container;

/// Writes `pid` to `path` atomically (temp file + rename), as runc does: readers never see a
/// partial pid.
pub fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        write!(f, "{pid}")?;
        std::fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing pid file {}", path.display()))
}

/// Loads container `id` under `root`; the error says it does not exist when it does not.
pub fn load(root: &Path, id: &str) -> anyhow::Result<Container> {
    Ok(Container::load(root, id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_written_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("init.pid");
        write_pid_file(&p, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "4242");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let err = write_pid_file(&d.path().join("no/such/dir/p"), 1).unwrap_err();
        assert!(format!("{err:#}").contains("pid file"), "{err:#}");
    }
}
