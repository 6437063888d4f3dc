//! OCI mount options (`mounts[].options`) to `mount(2)` flags, propagation changes, recursive
//! attributes (`mount_setattr(2)`) and the data string, with runc's vocabulary.

use crate::error::{Error, Result};

/// `MOUNT_ATTR_*` bits (linux/mount.h).
pub(crate) mod attr {
    /// Read-only.
    pub const RDONLY: u64 = 0x1;
    /// No set-user-id.
    pub const NOSUID: u64 = 0x2;
    /// No device files.
    pub const NODEV: u64 = 0x4;
    /// No execution.
    pub const NOEXEC: u64 = 0x8;
    /// Access-time field mask.
    pub const ATIME_MASK: u64 = 0x70;
    /// relatime.
    pub const RELATIME: u64 = 0x0;
    /// noatime.
    pub const NOATIME: u64 = 0x10;
    /// strictatime.
    pub const STRICTATIME: u64 = 0x20;
    /// nodiratime.
    pub const NODIRATIME: u64 = 0x80;
    /// nosymfollow.
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;
}

/// Parsed mount options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the `mount(2)` call (including `MS_BIND`/`MS_REC` for bind mounts).
    pub flags: libc::c_ulong,
    /// Propagation changes applied after the mount, in order (`MS_SHARED | MS_REC`, ...).
    pub propagation: Vec<libc::c_ulong>,
    /// `MOUNT_ATTR_*` to set recursively (`rro`, `rnosuid`, ...).
    pub rec_set: u64,
    /// `MOUNT_ATTR_*` to clear recursively (`rrw`, `rsuid`, ...).
    pub rec_clear: u64,
    /// Everything else, comma-joined, passed to the file system (`mode=755`, `size=64k`).
    pub data: String,
}

impl MountOptions {
    /// Whether this is a bind mount.
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }
}

/// Parses `options`; `field` names the list in errors.
pub fn parse(field: &str, options: &[String]) -> Result<MountOptions> {
    let mut o = MountOptions::default();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "suid" => (0, libc::MS_NOSUID),
            "nosuid" => (libc::MS_NOSUID, 0),
            "dev" => (0, libc::MS_NODEV),
            "nodev" => (libc::MS_NODEV, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noexec" => (libc::MS_NOEXEC, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            "nolazytime" => (0, libc::MS_LAZYTIME),
            "iversion" => (libc::MS_I_VERSION, 0),
            "noiversion" => (0, libc::MS_I_VERSION),
            "silent" => (libc::MS_SILENT, 0),
            "loud" => (0, libc::MS_SILENT),
            "nosymfollow" => (libc::MS_NOSYMFOLLOW, 0),
            "symfollow" => (0, libc::MS_NOSYMFOLLOW),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation
                    .push(propagation(opt).unwrap_or(libc::MS_PRIVATE));
                continue;
            }
            "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev" | "rnoexec" | "rexec"
            | "rnodiratime" | "rdiratime" | "rrelatime" | "rnorelatime" | "rnoatime" | "ratime"
            | "rstrictatime" | "rnostrictatime" | "rnosymfollow" | "rsymfollow" => {
                let (s, c) = recursive(opt);
                o.rec_set = (o.rec_set & !c) | s;
                o.rec_clear = (o.rec_clear & !s) | c;
                continue;
            }
            "idmap" | "ridmap" => {
                return Err(Error::spec(
                    field,
                    format!(
                        "{opt:?}: id-mapped mounts are not supported by moat; remove the option"
                    ),
                ));
            }
            "tmpcopyup" => {
                return Err(Error::spec(
                    field,
                    "\"tmpcopyup\" (a runc extension) is not supported by moat; remove the option",
                ));
            }
            other => {
                if other.is_empty() || other.contains('\0') {
                    return Err(Error::spec(field, format!("option {other:?} is not valid")));
                }
                data.push(other);
                continue;
            }
        };
        o.flags = (o.flags & !clear) | set;
    }
    o.data = data.join(",");
    Ok(o)
}

/// The `mount(2)` flags of a propagation keyword (`rootfsPropagation` and mount options).
pub fn propagation(word: &str) -> Option<libc::c_ulong> {
    Some(match word {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

fn recursive(word: &str) -> (u64, u64) {
    use attr::*;
    match word {
        "rro" => (RDONLY, 0),
        "rrw" => (0, RDONLY),
        "rnosuid" => (NOSUID, 0),
        "rsuid" => (0, NOSUID),
        "rnodev" => (NODEV, 0),
        "rdev" => (0, NODEV),
        "rnoexec" => (NOEXEC, 0),
        "rexec" => (0, NOEXEC),
        "rnodiratime" => (NODIRATIME, 0),
        "rdiratime" => (0, NODIRATIME),
        "rrelatime" => (RELATIME, ATIME_MASK),
        "rnoatime" => (NOATIME, ATIME_MASK),
        "rstrictatime" => (STRICTATIME, ATIME_MASK),
        "rnorelatime" | "ratime" | "rnostrictatime" => (0, ATIME_MASK),
        "rnosymfollow" => (NOSYMFOLLOW, 0),
        "rsymfollow" => (0, NOSYMFOLLOW),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> MountOptions {
        parse(
            "mounts[0].options",
            &opts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn flags_data_and_propagation() {
        let o = p(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(!o.is_bind());

        let o = p(&["rbind", "ro", "rslave", "nosuid", "suid"]);
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(o.propagation, vec![libc::MS_SLAVE | libc::MS_REC]);
        assert!(o.is_bind());

        let o = p(&["ro", "rw"]);
        assert_eq!(o.flags, 0);
        let o = p(&["defaults"]);
        assert_eq!(o, MountOptions::default());
    }

    #[test]
    fn recursive_attributes() {
        let o = p(&["bind", "rro", "rnosuid", "rnoatime"]);
        assert_eq!(o.rec_set, attr::RDONLY | attr::NOSUID | attr::NOATIME);
        assert_eq!(o.rec_clear, attr::ATIME_MASK);
        let o = p(&["rro", "rrw"]);
        assert_eq!((o.rec_set, o.rec_clear), (0, attr::RDONLY));
    }

    #[test]
    fn unsupported_options_name_the_field() {
        let e = parse("mounts[3].options", &["idmap".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mounts[3].options") && e.contains("idmap"),
            "{e}"
        );
        assert!(parse("m", &["".to_string()]).is_err());
        assert_eq!(propagation("rshared"), Some(libc::MS_SHARED | libc::MS_REC));
        assert_eq!(propagation("bogus"), None);
    }
}
