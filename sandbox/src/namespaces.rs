//! Which namespaces a container creates and which it joins, as the process spawner needs them.
//!
//! Namespaces given by `path` are opened here, in the caller (so the path is resolved in the
//! caller's mount namespace) and their type is checked with `NS_GET_NSTYPE` before anything is
//! created. The user namespace is joined first, since the others may belong to it.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};

use crate::error::{Error, Result};

/// The `CLONE_NEW*` flag of a namespace type.
pub fn clone_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => CLONE_NEWTIME,
    }
}

/// `CLONE_NEWTIME` (only usable with `unshare(2)`/`setns(2)`: its bit is CSIGNAL's in `clone(2)`).
pub const CLONE_NEWTIME: libc::c_int = 0x80;

/// The name of a namespace type under `/proc/<pid>/ns/`.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Every type, the user namespace first (the order they are joined in).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

/// A namespace to join: its type's clone flag and an open descriptor.
#[derive(Debug)]
pub struct Join {
    /// `CLONE_NEW*` of the namespace.
    pub flag: libc::c_int,
    /// The open namespace file.
    pub fd: OwnedFd,
}

/// What the spawner does about namespaces.
#[derive(Debug, Default)]
pub struct Namespaces {
    /// Namespaces to join, user namespace first.
    pub joins: Vec<Join>,
    /// `CLONE_NEW*` flags for the container's init (time excluded).
    pub clone_flags: libc::c_int,
    /// A new time namespace (made with `unshare` before the clone), with its offsets.
    pub new_time: Option<String>,
    /// The container has a new user namespace: the caller writes these maps.
    pub id_maps: Option<(String, String)>,
    /// Types present in the spec (new or joined).
    pub present: HashSet<LinuxNamespaceTypeKey>,
}

/// A hashable stand-in for [`LinuxNamespaceType`] (its derive has no `Hash` on every version).
pub type LinuxNamespaceTypeKey = libc::c_int;

impl Namespaces {
    /// Whether the spec has this namespace type (new or joined).
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.present.contains(&clone_flag(t))
    }

    /// Whether the spec creates this namespace type.
    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        match t {
            LinuxNamespaceType::Time => self.new_time.is_some(),
            t => self.clone_flags & clone_flag(t) != 0,
        }
    }
}

const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Opens a namespace file and checks its type.
pub fn open_ns(field: &str, path: &Path, t: LinuxNamespaceType) -> Result<OwnedFd> {
    let file = File::open(path).map_err(|e| {
        Error::spec(
            field,
            format!("cannot open namespace {}: {e}; give the path of a live namespace (/proc/<pid>/ns/{})", path.display(), proc_name(t)),
        )
    })?;
    // SAFETY: NS_GET_NSTYPE takes no argument; the fd is open.
    let got = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if got != clone_flag(t) {
        return Err(Error::spec(
            field,
            format!("{} is not a {} namespace", path.display(), proc_name(t)),
        ));
    }
    Ok(file.into())
}

fn id_map(field: &str, maps: &[LinuxIdMapping]) -> Result<String> {
    if maps.is_empty() {
        return Err(Error::spec(
            field,
            "a new user namespace needs at least one mapping (containerID, hostID, size)",
        ));
    }
    if maps.len() > 340 {
        return Err(Error::spec(
            field,
            "the kernel accepts at most 340 mappings",
        ));
    }
    let mut s = String::new();
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return Err(Error::spec(
                format!("{field}[{i}].size"),
                "must be at least 1",
            ));
        }
        s.push_str(&format!(
            "{} {} {}\n",
            m.container_id(),
            m.host_id(),
            m.size()
        ));
    }
    Ok(s)
}

/// Plans the namespaces of `linux.namespaces` (opening the ones given by path).
pub fn plan(linux: &Linux) -> Result<Namespaces> {
    let mut ns = Namespaces::default();
    let list = linux.namespaces().as_deref().unwrap_or_default();
    let mut joins: Vec<(usize, Join)> = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let field = format!("linux.namespaces[{i}]");
        let flag = clone_flag(n.typ());
        if !ns.present.insert(flag) {
            return Err(Error::spec(
                field,
                format!(
                    "namespace type {:?} appears twice: keep one entry",
                    proc_name(n.typ())
                ),
            ));
        }
        match n.path() {
            Some(p) if !p.as_os_str().is_empty() => {
                let fd = open_ns(&format!("{field}.path"), p, n.typ())?;
                let order = JOIN_ORDER.iter().position(|t| *t == n.typ()).unwrap_or(0);
                joins.push((order, Join { flag, fd }));
            }
            _ if n.typ() == LinuxNamespaceType::Time => {
                ns.new_time = Some(time_offsets(linux)?);
            }
            _ => ns.clone_flags |= flag,
        }
    }
    joins.sort_by_key(|(o, _)| *o);
    ns.joins = joins.into_iter().map(|(_, j)| j).collect();

    let uid = linux.uid_mappings().as_deref().unwrap_or_default();
    let gid = linux.gid_mappings().as_deref().unwrap_or_default();
    if ns.clone_flags & libc::CLONE_NEWUSER != 0 {
        ns.id_maps = Some((
            id_map("linux.uidMappings", uid)?,
            id_map("linux.gidMappings", gid)?,
        ));
    } else if !uid.is_empty() || !gid.is_empty() {
        return Err(Error::spec(
            "linux.uidMappings",
            "id mappings are given but the spec creates no user namespace: add {\"type\": \"user\"} to linux.namespaces or remove the mappings",
        ));
    }
    if ns.new_time.is_none() && linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(Error::spec(
            "linux.timeOffsets",
            "time offsets need a new time namespace: add {\"type\": \"time\"} to linux.namespaces",
        ));
    }
    if !ns.has(LinuxNamespaceType::Mount) {
        return Err(Error::spec(
            "linux.namespaces",
            "moat needs a mount namespace for the rootfs: add {\"type\": \"mount\"}",
        ));
    }
    Ok(ns)
}

/// The contents for `/proc/self/timens_offsets`.
fn time_offsets(linux: &Linux) -> Result<String> {
    let mut s = String::new();
    for (clock, off) in linux.time_offsets().iter().flatten() {
        let id = match clock.as_str() {
            "monotonic" => libc::CLOCK_MONOTONIC,
            "boottime" => libc::CLOCK_BOOTTIME,
            other => {
                return Err(Error::spec(
                    format!("linux.timeOffsets.{other}"),
                    "only \"monotonic\" and \"boottime\" clocks can be offset",
                ));
            }
        };
        s.push_str(&format!(
            "{id} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    Ok(s)
}

/// The namespaces of process `pid` that differ from the caller's, as joins in [`JOIN_ORDER`].
pub fn of_process(pid: i32) -> Result<Vec<Join>> {
    let mut joins = Vec::new();
    for t in JOIN_ORDER {
        let name = proc_name(t);
        let theirs = format!("/proc/{pid}/ns/{name}");
        let Ok(their_meta) = std::fs::metadata(&theirs) else {
            // This kernel has no such namespace type (e.g. time before 5.6).
            continue;
        };
        if let Ok(ours) = std::fs::metadata(format!("/proc/self/ns/{name}"))
            && ours.ino() == their_meta.ino()
            && ours.dev() == their_meta.dev()
        {
            continue;
        }
        let fd = File::open(&theirs).map_err(|source| Error::Io {
            context: format!("opening {theirs}"),
            source,
        })?;
        joins.push(Join {
            flag: clone_flag(t),
            fd: fd.into(),
        });
    }
    Ok(joins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder};

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> oci_spec::runtime::LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().unwrap()
    }

    #[test]
    fn new_and_joined_namespaces() {
        let mut linux = Linux::default();
        linux.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
            ns(LinuxNamespaceType::User, Some("/proc/self/ns/user")),
        ]));
        let p = plan(&linux).unwrap();
        assert_eq!(p.clone_flags, libc::CLONE_NEWPID | libc::CLONE_NEWNS);
        assert_eq!(p.joins.len(), 2);
        assert_eq!(
            p.joins[0].flag,
            libc::CLONE_NEWUSER,
            "user namespace joined first"
        );
        assert!(p.has(LinuxNamespaceType::Network) && !p.creates(LinuxNamespaceType::Network));
        assert!(p.id_maps.is_none());
    }

    #[test]
    fn bad_namespaces_name_the_field() {
        let mut linux = Linux::default();
        linux.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/uts")),
        ]));
        let e = plan(&linux).unwrap_err().to_string();
        assert!(
            e.contains("linux.namespaces[1].path") && e.contains("not a net namespace"),
            "{e}"
        );

        linux.set_namespaces(Some(vec![ns(LinuxNamespaceType::Pid, None)]));
        let e = plan(&linux).unwrap_err().to_string();
        assert!(e.contains("mount namespace"), "{e}");

        linux.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Mount, None),
        ]));
        assert!(plan(&linux).unwrap_err().to_string().contains("twice"));

        linux.set_namespaces(Some(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::User, None),
        ]));
        let e = plan(&linux).unwrap_err().to_string();
        assert!(e.contains("linux.uidMappings"), "{e}");
        let m = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(100000u32)
            .size(65536u32)
            .build()
            .unwrap();
        linux.set_uid_mappings(Some(vec![m]));
        linux.set_gid_mappings(Some(vec![m]));
        let p = plan(&linux).unwrap();
        assert_eq!(p.id_maps.unwrap().0, "0 100000 65536\n");
    }

    #[test]
    fn own_namespaces_are_not_joined() {
        let me = std::process::id() as i32;
        assert!(of_process(me).unwrap().is_empty());
    }
}
