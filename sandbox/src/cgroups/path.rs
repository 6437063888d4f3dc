//! `linux.cgroupsPath` to a path below the hierarchy root.
//!
//! - absent: `/moat/<id>`;
//! - `/abs/path`: taken as is, relative to the hierarchy root (what runc does);
//! - `slice:prefix:name` (systemd style, what containerd's CRI plugin writes with the systemd
//!   cgroup driver): mapped to the path systemd itself would use, `/<slice path>/<prefix>-<name>.scope`,
//!   where `a-b.slice` expands to `a.slice/a-b.slice` and an empty slice means `system.slice`.
//!   moat creates the directories with cgroupfs; no systemd unit is made;
//! - any other relative path: below `/moat/`.
//!
//! `..` components, empty names and NUL bytes are refused.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

const FIELD: &str = "linux.cgroupsPath";

/// The cgroup directory (relative to the hierarchy root, starting with `/`) for a container.
pub fn resolve(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let Some(p) = cgroups_path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(Path::new("/moat").join(id));
    };
    let s = p
        .to_str()
        .ok_or_else(|| Error::spec(FIELD, "is not valid UTF-8"))?;
    if s.contains('\0') {
        return Err(Error::spec(FIELD, "contains a NUL byte"));
    }
    let path = if s.starts_with('/') {
        PathBuf::from(s)
    } else if s.matches(':').count() == 2 {
        systemd(s)?
    } else {
        Path::new("/moat").join(s)
    };
    let mut clean = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => clean.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::spec(FIELD, format!("{s:?} must not contain '..'")));
            }
        }
    }
    if clean == Path::new("/") {
        return Err(Error::spec(
            FIELD,
            format!("{s:?} names the root cgroup; give a path below it, e.g. /moat/{id}"),
        ));
    }
    Ok(clean)
}

/// `slice:prefix:name` to systemd's path for the scope.
fn systemd(s: &str) -> Result<PathBuf> {
    let mut parts = s.splitn(3, ':');
    let (slice, prefix, name) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if name.is_empty() {
        return Err(Error::spec(
            FIELD,
            format!(
                "{s:?}: systemd-style paths are slice:prefix:name and the name must not be empty"
            ),
        ));
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(Error::spec(
            FIELD,
            format!("{s:?}: the slice {slice:?} must end in \".slice\""),
        ));
    };
    if stem.contains('/') || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(Error::spec(
            FIELD,
            format!("{s:?}: {slice:?} is not a valid slice name"),
        ));
    }
    let mut path = PathBuf::from("/");
    if stem != "-" && !stem.is_empty() {
        // a-b-c.slice lives at a.slice/a-b.slice/a-b-c.slice.
        let mut acc = String::new();
        for part in stem.split('-') {
            if !acc.is_empty() {
                acc.push('-');
            }
            acc.push_str(part);
            path.push(format!("{acc}.slice"));
        }
    }
    let leaf = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push(leaf);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: Option<&str>) -> Result<PathBuf> {
        resolve(p.map(Path::new), "c1")
    }

    #[test]
    fn mapping() {
        assert_eq!(r(None).unwrap(), Path::new("/moat/c1"));
        assert_eq!(r(Some("")).unwrap(), Path::new("/moat/c1"));
        assert_eq!(r(Some("/default/c1")).unwrap(), Path::new("/default/c1"));
        assert_eq!(r(Some("pods/c1")).unwrap(), Path::new("/moat/pods/c1"));
        assert_eq!(
            r(Some("kubepods-besteffort-pod12.slice:cri-containerd:abc")).unwrap(),
            Path::new(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            r(Some(":moat:x")).unwrap(),
            Path::new("/system.slice/moat-x.scope")
        );
        assert_eq!(
            r(Some("system.slice::x")).unwrap(),
            Path::new("/system.slice/x.scope")
        );
    }

    #[test]
    fn refusals_name_the_field() {
        for bad in ["/a/../b", "/", "a.slice:p:", "nope:p:x", "bad-.slice:p:x"] {
            let e = r(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("linux.cgroupsPath"), "{bad}: {e}");
        }
    }
}
