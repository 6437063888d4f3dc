//! OCI runtime bundles: a directory with `config.json` whose `root.path` names a rootfs.
//!
//! The spec itself is the caller's (the CLI owns containerd-like defaults); this module only places
//! it and the rootfs, and makes sure a failure leaves no half-written bundle behind.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{RootBuilder, Spec};

use super::{Error, Result};

/// Writes an OCI bundle at `bundle`: creates the directory (it must not exist yet, or be empty) and
/// writes `config.json`, which is `spec` with `root.path` pointing at `rootfs` — relative when
/// `rootfs` is inside the bundle (e.g. a private copy made with [`copy_tree`]), absolute otherwise.
/// `root.readonly` is kept from `spec`. Returns the path of `config.json`.
///
/// A shared rootfs (such as the cached busybox image's) must not be written to by the container:
/// set `root.readonly`, or give each container its own copy.
pub fn write_bundle(bundle: &Path, rootfs: &Path, spec: &Spec) -> Result<PathBuf> {
    let rootfs_abs = if rootfs.is_absolute() {
        rootfs.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| Error::Io {
                op: "resolve",
                path: rootfs.to_path_buf(),
                source,
            })?
            .join(rootfs)
    };
    if !rootfs_abs.is_dir() {
        return Err(Error::BadInput(format!(
            "rootfs {} is not a directory; build it first (moat_artifacts::image::busybox)",
            rootfs_abs.display()
        )));
    }
    let created = match fs::read_dir(bundle) {
        Ok(mut entries) => {
            let in_bundle = rootfs_abs.starts_with(bundle);
            if bundle.join("config.json").exists() || (entries.next().is_some() && !in_bundle) {
                return Err(Error::BadInput(format!(
                    "bundle directory {} is not empty; pick a new directory",
                    bundle.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(bundle).map_err(|source| Error::Io {
                op: "create",
                path: bundle.to_path_buf(),
                source,
            })?;
            true
        }
        Err(source) => {
            return Err(Error::Io {
                op: "read",
                path: bundle.to_path_buf(),
                source,
            });
        }
    };
    let result = write_config(bundle, &rootfs_abs, spec);
    if result.is_err() && created {
        let _ = fs::remove_dir_all(bundle);
    }
    result
}

fn write_config(bundle: &Path, rootfs: &Path, spec: &Spec) -> Result<PathBuf> {
    let root_path = match rootfs.strip_prefix(bundle) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => rootfs.to_path_buf(),
    };
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let root = RootBuilder::default()
        .path(root_path)
        .readonly(readonly)
        .build()
        .map_err(|e| Error::Format {
            what: "bundle root",
            message: e.to_string(),
        })?;
    let mut spec = spec.clone();
    spec.set_root(Some(root));
    let path = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| Error::Format {
        what: "config.json",
        message: e.to_string(),
    })?;
    fs::write(&path, json).map_err(|source| Error::Io {
        op: "write",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Copies a directory tree (directories, regular files, symlinks) from `src` to `dst`, which must
/// not exist (its parent is created if needed), keeping modes and, when running as root, owners. Use it to give a container its own
/// writable copy of a shared rootfs. On failure `dst` is removed.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        return Err(Error::BadInput(format!(
            "copy destination {} already exists; pick a new path",
            dst.display()
        )));
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|source| Error::Io {
            op: "create",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let result = copy_rec(src, dst);
    if result.is_err() {
        let _ = fs::remove_dir_all(dst);
    }
    result
}

fn copy_rec(src: &Path, dst: &Path) -> Result<()> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let meta = fs::symlink_metadata(src).map_err(io("stat", src))?;
    let ty = meta.file_type();
    if ty.is_symlink() {
        let target = fs::read_link(src).map_err(io("readlink", src))?;
        symlink(&target, dst).map_err(io("symlink", dst))?;
    } else if ty.is_dir() {
        fs::create_dir(dst).map_err(io("create", dst))?;
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(io("read", src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io("read", src))?;
        names.sort();
        for name in names {
            copy_rec(&src.join(&name), &dst.join(&name))?;
        }
    } else if ty.is_file() {
        fs::copy(src, dst).map_err(io("copy", dst))?;
    } else {
        return Err(Error::BadInput(format!(
            "{} is neither a file, a directory nor a symlink; a rootfs to copy may hold only those",
            src.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(io("chown", dst))?;
    }
    if !ty.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io("chmod", dst))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let mut s = Spec::default();
        s.set_root(Some(
            RootBuilder::default()
                .path("ignored")
                .readonly(true)
                .build()
                .unwrap(),
        ));
        s
    }

    #[test]
    fn rootfs_outside_is_absolute_inside_is_relative() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        let b1 = tmp.path().join("b1");
        let cfg = write_bundle(&b1, &shared, &spec()).unwrap();
        let s = Spec::load(&cfg).unwrap();
        assert_eq!(s.root().as_ref().unwrap().path(), &shared);
        assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));

        let b2 = tmp.path().join("b2");
        copy_tree(&shared, &b2.join("rootfs")).unwrap();
        let cfg = write_bundle(&b2, &b2.join("rootfs"), &spec()).unwrap();
        let s = Spec::load(&cfg).unwrap();
        assert_eq!(s.root().as_ref().unwrap().path(), Path::new("rootfs"));
    }

    #[test]
    fn existing_bundle_is_refused_and_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path().join("b");
        fs::create_dir(&b).unwrap();
        fs::write(b.join("config.json"), "{}").unwrap();
        let err = write_bundle(&b, tmp.path(), &spec()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(fs::read_to_string(b.join("config.json")).unwrap(), "{}");
    }

    #[test]
    fn missing_rootfs_is_refused_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path().join("b");
        let err = write_bundle(&b, &tmp.path().join("nope"), &spec()).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(!b.exists());
    }

    #[test]
    fn copy_keeps_links_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("tmp")).unwrap();
        fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(src.join("f"), "x").unwrap();
        symlink("f", src.join("l")).unwrap();
        let dst = tmp.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("f"));
        let mode = fs::metadata(dst.join("tmp")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        assert!(copy_tree(&src, &dst).is_err());
    }
}
