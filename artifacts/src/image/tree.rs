//! The busybox root filesystem as data: one sorted list of entries that is written both as a
//! directory and as a tar layer, so the two can never disagree.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;
use std::process::Command;

use super::tar::TarWriter;
use super::{Error, Result};

/// What a rootfs entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symbolic link to this (relative) target.
    Symlink(String),
}

/// One file, directory or link of the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the rootfs, without a leading slash.
    pub path: String,
    /// Permission bits (including sticky/setuid bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The entry's kind and contents.
    pub kind: Kind,
}

impl Entry {
    fn dir(path: &str, mode: u32) -> Self {
        Self::owned_dir(path, mode, 0)
    }

    fn owned_dir(path: &str, mode: u32, id: u32) -> Self {
        Self {
            path: path.to_string(),
            mode,
            uid: id,
            gid: id,
            kind: Kind::Dir,
        }
    }

    fn file(path: &str, mode: u32, data: &[u8]) -> Self {
        Self {
            path: path.to_string(),
            mode,
            uid: 0,
            gid: 0,
            kind: Kind::File(data.to_vec()),
        }
    }

    fn symlink(path: &str, target: String) -> Self {
        Self {
            path: path.to_string(),
            mode: 0o777,
            uid: 0,
            gid: 0,
            kind: Kind::Symlink(target),
        }
    }
}

/// The uid and gid of the unprivileged test user (`user`, home `/home/user`).
pub const USER_ID: u32 = 1000;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    user:x:1000:1000:user:/home/user:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nuser:x:1000:\nnobody:x:65534:\n";
const HOSTNAME: &str = "moat\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
/// Runtimes bind-mount the real one over it; an empty file gives them a mount target.
const RESOLV_CONF: &str = "";

/// Asks the busybox binary which applets it has, as rootfs-relative paths (`bin/ls`, `usr/bin/env`).
pub fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| Error::Io {
            op: "run",
            path: busybox.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Busybox {
            path: busybox.to_path_buf(),
            message: format!(
                "`busybox --list-full` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let text = String::from_utf8(out.stdout).map_err(|_| Error::Busybox {
        path: busybox.to_path_buf(),
        message: "`busybox --list-full` printed something that is not UTF-8".into(),
    })?;
    let mut list = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let safe = !line.starts_with('/')
            && line
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !safe {
            return Err(Error::Busybox {
                path: busybox.to_path_buf(),
                message: format!("unexpected applet path {line:?} in `busybox --list-full`"),
            });
        }
        if line != "bin/busybox" {
            list.push(line.to_string());
        }
    }
    if !list.iter().any(|a| a == "bin/sh") {
        return Err(Error::Busybox {
            path: busybox.to_path_buf(),
            message: "this busybox has no `sh` applet; install Debian's busybox-static".into(),
        });
    }
    Ok(list)
}

/// The full rootfs: the busybox binary, a symlink per applet, `/etc` files and the usual empty
/// directories. Sorted by path, so parents come before children.
pub fn entries(busybox_binary: Vec<u8>, applets: &[String]) -> Vec<Entry> {
    let mut list = vec![
        Entry::dir("bin", 0o755),
        Entry::dir("dev", 0o755),
        Entry::dir("etc", 0o755),
        Entry::dir("home", 0o755),
        Entry::owned_dir("home/user", 0o755, USER_ID),
        Entry::dir("mnt", 0o755),
        Entry::dir("opt", 0o755),
        Entry::dir("proc", 0o555),
        Entry::dir("root", 0o700),
        Entry::dir("run", 0o755),
        Entry::dir("sbin", 0o755),
        Entry::dir("sys", 0o555),
        Entry::dir("tmp", 0o1777),
        Entry::dir("usr", 0o755),
        Entry::dir("usr/bin", 0o755),
        Entry::dir("usr/sbin", 0o755),
        Entry::dir("var", 0o755),
        Entry::dir("var/log", 0o755),
        Entry::dir("var/tmp", 0o1777),
        Entry::file("bin/busybox", 0o755, &busybox_binary),
        Entry::file("etc/passwd", 0o644, PASSWD.as_bytes()),
        Entry::file("etc/group", 0o644, GROUP.as_bytes()),
        Entry::file("etc/hostname", 0o644, HOSTNAME.as_bytes()),
        Entry::file("etc/hosts", 0o644, HOSTS.as_bytes()),
        Entry::file("etc/resolv.conf", 0o644, RESOLV_CONF.as_bytes()),
    ];
    for applet in applets {
        // A relative link, so it resolves both inside the container and on the host.
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        list.push(Entry::symlink(applet, target));
    }
    list.sort_by(|a, b| a.path.cmp(&b.path));
    list.dedup_by(|a, b| a.path == b.path);
    list
}

/// Writes the entries under `root` (which must exist), with their modes and, when running as root,
/// their owners.
pub fn write_dir(entries: &[Entry], root: &Path) -> Result<()> {
    let as_root = is_root();
    for e in entries {
        let path = root.join(&e.path);
        let io = |op: &'static str| {
            let path = path.clone();
            move |source: io::Error| Error::Io { op, path, source }
        };
        match &e.kind {
            Kind::Dir => fs::create_dir(&path).map_err(io("create"))?,
            Kind::File(data) => fs::write(&path, data).map_err(io("write"))?,
            Kind::Symlink(target) => symlink(target, &path).map_err(io("symlink"))?,
        }
        if as_root {
            lchown(&path, Some(e.uid), Some(e.gid)).map_err(io("chown"))?;
        }
        if !matches!(e.kind, Kind::Symlink(_)) {
            fs::set_permissions(&path, fs::Permissions::from_mode(e.mode)).map_err(io("chmod"))?;
        }
    }
    Ok(())
}

/// Writes the entries as an uncompressed tar stream.
pub fn write_tar<W: io::Write>(entries: &[Entry], out: W) -> io::Result<W> {
    let mut tar = TarWriter::new(out);
    for e in entries {
        match &e.kind {
            Kind::Dir => tar.dir(&e.path, e.mode, e.uid, e.gid)?,
            Kind::File(data) => tar.file(&e.path, e.mode, e.uid, e.gid, data)?,
            Kind::Symlink(target) => tar.symlink(&e.path, target, e.uid, e.gid)?,
        }
    }
    tar.finish()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_links_are_relative_and_sorted() {
        let list = entries(
            b"bb".to_vec(),
            &["usr/bin/env".into(), "bin/ls".into(), "linuxrc".into()],
        );
        let find = |p: &str| list.iter().find(|e| e.path == p).unwrap().kind.clone();
        assert_eq!(
            find("usr/bin/env"),
            Kind::Symlink("../../bin/busybox".into())
        );
        assert_eq!(find("bin/ls"), Kind::Symlink("../bin/busybox".into()));
        assert_eq!(find("linuxrc"), Kind::Symlink("bin/busybox".into()));
        let paths: Vec<_> = list.iter().map(|e| e.path.clone()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn passwd_has_root_nobody_and_user() {
        for name in ["root:x:0:0", "nobody:x:65534", "user:x:1000:1000"] {
            assert!(PASSWD.contains(name), "{name}");
        }
        for name in ["root:x:0", "nobody:x:65534", "user:x:1000"] {
            assert!(GROUP.contains(name), "{name}");
        }
    }
}
