//! System calls by name and number, and what the supervisor does with each one it polices: which
//! arguments are paths (and relative to which directory fd), which rights each needs, which calls
//! are denied outright because allowing them would defeat the supervisor.

mod table;

use std::sync::OnceLock;

use crate::policy::Rights;

pub(crate) use table::MAX_NR;

/// The number of a system call, by its x86_64 name.
pub fn nr(name: &str) -> Option<u32> {
    table::BY_NAME
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| table::BY_NAME[i].1)
}

/// The name of a system call number (`"syscall_N"` style names are not invented: `None`).
pub fn name(nr: u32) -> Option<&'static str> {
    static BY_NR: OnceLock<Vec<Option<&'static str>>> = OnceLock::new();
    let v = BY_NR.get_or_init(|| {
        let mut v = vec![None; MAX_NR as usize + 1];
        for (n, k) in table::BY_NAME {
            v[*k as usize] = Some(*n);
        }
        v
    });
    v.get(nr as usize).copied().flatten()
}

/// How a path argument is followed when its last component is a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Always followed (`chmod`, `truncate`).
    Yes,
    /// Never followed: the call acts on the link itself (`unlink`, `mkdir`, `lchown`).
    No,
    /// Followed unless the flags argument (this index) has `AT_SYMLINK_NOFOLLOW`; `AT_EMPTY_PATH`
    /// there makes an empty path mean the directory fd itself.
    AtFlags(usize),
}

/// A path argument: the directory fd it is relative to (if the call takes one) and the pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PathArg {
    /// Index of the directory fd argument, `None` for calls relative to the working directory.
    pub dirfd: Option<usize>,
    /// Index of the path pointer argument.
    pub path: usize,
}

const fn at(dirfd: usize, path: usize) -> PathArg {
    PathArg {
        dirfd: Some(dirfd),
        path,
    }
}

const fn cwd(path: usize) -> PathArg {
    PathArg { dirfd: None, path }
}

/// What the supervisor does with a policed system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `open`, `creat`, `openat`, `openat2`: rights from the flags; emulated as `openat2` on the
    /// checked path with `RESOLVE_NO_SYMLINKS`.
    Open {
        /// The path.
        arg: PathArg,
        /// The flags argument; `None` for `creat` (`O_CREAT|O_WRONLY|O_TRUNC`).
        flags: Option<usize>,
        /// The mode argument (for `openat2`, the `struct open_how *`).
        mode: usize,
        /// True for `openat2` (flags and mode live in `struct open_how`, its size in arg 3).
        how: bool,
    },
    /// `execve`, `execveat`: exec right plus the exec allow-list.
    Exec {
        /// The program path.
        arg: PathArg,
        /// The `AT_*` flags argument (`execveat`).
        flags: Option<usize>,
    },
    /// A call on one path needing `rights`.
    Path {
        /// The path.
        arg: PathArg,
        /// What it needs.
        rights: Rights,
        /// Symlink handling of the last component.
        follow: Follow,
        /// True if a null path means "the fd itself" (`utimensat`).
        null_ok: bool,
    },
    /// `rename*` (`link = false`) and `link*` (`link = true`): two paths.
    Two {
        /// The existing name.
        old: PathArg,
        /// The new name.
        new: PathArg,
        /// True for hard links.
        link: bool,
        /// The flags argument (`renameat2`'s `RENAME_*`, `linkat`'s `AT_*`).
        flags: Option<usize>,
    },
    /// `symlink`, `symlinkat`: create right on the link's path (the target is stored, not resolved).
    Symlink {
        /// Index of the target string argument.
        target: usize,
        /// The new link.
        link: PathArg,
    },
    /// `mount`: write on the target; for bind and move mounts the source must have every right
    /// the target has.
    Mount,
    /// `umount2`: write on the target.
    Umount,
    /// `socket`: address family and raw sockets.
    Socket,
    /// `socketpair`: address family.
    SocketPair,
    /// `connect`: Unix socket paths need write.
    Connect,
    /// `bind`: Unix socket paths need create.
    Bind,
    /// `seccomp`: a filter with a user-space listener would take syscalls away from the supervisor.
    Seccomp,
    /// `clone` with namespace flags (the filter traps only those).
    Clone,
    /// `unshare`: namespace flags are refused, `CLONE_FS`/`CLONE_FILES`/`CLONE_SYSVSEM` allowed.
    Unshare,
    /// Always denied with this errno: allowing it would let the workload escape the supervisor.
    Fixed {
        /// The errno returned.
        errno: i32,
        /// Why it is denied, for the log and for policy errors.
        why: &'static str,
    },
}

impl Kind {
    /// True if the call's decision depends on the `[[paths]]` rules.
    pub(crate) fn uses_paths(self) -> bool {
        matches!(
            self,
            Kind::Open { .. }
                | Kind::Exec { .. }
                | Kind::Path { .. }
                | Kind::Two { .. }
                | Kind::Symlink { .. }
                | Kind::Mount
                | Kind::Umount
                | Kind::Connect
                | Kind::Bind
        )
    }
}

const W: Rights = Rights::WRITE;
const C: Rights = Rights::CREATE;

const fn path(arg: PathArg, rights: Rights, follow: Follow) -> Kind {
    Kind::Path {
        arg,
        rights,
        follow,
        null_ok: false,
    }
}

const NOT_SUPERVISED: &str = "the trace backend cannot supervise it";

/// Every system call the supervisor polices, by name.
const KINDS: &[(&str, Kind)] = &[
    (
        "open",
        Kind::Open {
            arg: cwd(0),
            flags: Some(1),
            mode: 2,
            how: false,
        },
    ),
    (
        "creat",
        Kind::Open {
            arg: cwd(0),
            flags: None,
            mode: 1,
            how: false,
        },
    ),
    (
        "openat",
        Kind::Open {
            arg: at(0, 1),
            flags: Some(2),
            mode: 3,
            how: false,
        },
    ),
    (
        "openat2",
        Kind::Open {
            arg: at(0, 1),
            flags: None,
            mode: 2,
            how: true,
        },
    ),
    (
        "execve",
        Kind::Exec {
            arg: cwd(0),
            flags: None,
        },
    ),
    (
        "execveat",
        Kind::Exec {
            arg: at(0, 1),
            flags: Some(4),
        },
    ),
    ("unlink", path(cwd(0), W, Follow::No)),
    ("rmdir", path(cwd(0), W, Follow::No)),
    ("unlinkat", path(at(0, 1), W, Follow::No)),
    ("mkdir", path(cwd(0), C, Follow::No)),
    ("mkdirat", path(at(0, 1), C, Follow::No)),
    ("mknod", path(cwd(0), C, Follow::No)),
    ("mknodat", path(at(0, 1), C, Follow::No)),
    ("chmod", path(cwd(0), W, Follow::Yes)),
    ("fchmodat", path(at(0, 1), W, Follow::Yes)),
    ("fchmodat2", path(at(0, 1), W, Follow::AtFlags(3))),
    ("chown", path(cwd(0), W, Follow::Yes)),
    ("lchown", path(cwd(0), W, Follow::No)),
    ("fchownat", path(at(0, 1), W, Follow::AtFlags(4))),
    ("truncate", path(cwd(0), W, Follow::Yes)),
    ("utime", path(cwd(0), W, Follow::Yes)),
    ("utimes", path(cwd(0), W, Follow::Yes)),
    ("futimesat", path(at(0, 1), W, Follow::Yes)),
    (
        "utimensat",
        Kind::Path {
            arg: at(0, 1),
            rights: W,
            follow: Follow::AtFlags(3),
            null_ok: true,
        },
    ),
    ("setxattr", path(cwd(0), W, Follow::Yes)),
    ("lsetxattr", path(cwd(0), W, Follow::No)),
    ("removexattr", path(cwd(0), W, Follow::Yes)),
    ("lremovexattr", path(cwd(0), W, Follow::No)),
    ("setxattrat", path(at(0, 1), W, Follow::AtFlags(2))),
    ("removexattrat", path(at(0, 1), W, Follow::AtFlags(2))),
    (
        "rename",
        Kind::Two {
            old: cwd(0),
            new: cwd(1),
            link: false,
            flags: None,
        },
    ),
    (
        "renameat",
        Kind::Two {
            old: at(0, 1),
            new: at(2, 3),
            link: false,
            flags: None,
        },
    ),
    (
        "renameat2",
        Kind::Two {
            old: at(0, 1),
            new: at(2, 3),
            link: false,
            flags: Some(4),
        },
    ),
    (
        "link",
        Kind::Two {
            old: cwd(0),
            new: cwd(1),
            link: true,
            flags: None,
        },
    ),
    (
        "linkat",
        Kind::Two {
            old: at(0, 1),
            new: at(2, 3),
            link: true,
            flags: Some(4),
        },
    ),
    (
        "symlink",
        Kind::Symlink {
            target: 0,
            link: cwd(1),
        },
    ),
    (
        "symlinkat",
        Kind::Symlink {
            target: 0,
            link: at(1, 2),
        },
    ),
    ("mount", Kind::Mount),
    ("umount2", Kind::Umount),
    ("socket", Kind::Socket),
    ("socketpair", Kind::SocketPair),
    ("connect", Kind::Connect),
    ("bind", Kind::Bind),
    ("seccomp", Kind::Seccomp),
    ("clone", Kind::Clone),
    ("unshare", Kind::Unshare),
    (
        "ptrace",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "a traced workload may not trace",
        },
    ),
    (
        "process_vm_writev",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "it writes other processes' memory",
        },
    ),
    (
        "pidfd_getfd",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "it takes other processes' descriptors",
        },
    ),
    (
        "io_uring_setup",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "io_uring bypasses seccomp",
        },
    ),
    (
        "io_uring_enter",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "io_uring bypasses seccomp",
        },
    ),
    (
        "io_uring_register",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "io_uring bypasses seccomp",
        },
    ),
    (
        "userfaultfd",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "it can stall the kernel inside a checked call",
        },
    ),
    (
        "open_by_handle_at",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "it opens files without a path to check",
        },
    ),
    (
        "chroot",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "paths are checked against one root",
        },
    ),
    (
        "pivot_root",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "paths are checked against one root",
        },
    ),
    (
        "setns",
        Kind::Fixed {
            errno: libc::EPERM,
            why: "paths are checked in one mount namespace",
        },
    ),
    (
        "fsopen",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
    (
        "fsconfig",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
    (
        "fsmount",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
    (
        "fspick",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
    (
        "move_mount",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
    (
        "open_tree",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
    (
        "open_tree_attr",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
    (
        "mount_setattr",
        Kind::Fixed {
            errno: libc::EPERM,
            why: NOT_SUPERVISED,
        },
    ),
];

/// What the supervisor does with system call `nr`, if it polices it at all.
pub(crate) fn kind(nr: u32) -> Option<Kind> {
    static BY_NR: OnceLock<Vec<Option<Kind>>> = OnceLock::new();
    let v = BY_NR.get_or_init(|| {
        let mut v = vec![None; MAX_NR as usize + 1];
        for (n, k) in KINDS {
            if let Some(i) = self::nr(n) {
                v[i as usize] = Some(*k);
            }
        }
        v
    });
    v.get(nr as usize).copied().flatten()
}

/// Every policed call, with its number.
pub(crate) fn policed() -> impl Iterator<Item = (u32, Kind)> {
    KINDS.iter().filter_map(|(n, k)| nr(n).map(|nr| (nr, *k)))
}

/// Namespace flags that `clone` and `unshare` may not use under the trace wall: a new mount or
/// user namespace would let the workload see a different file tree than the one paths are
/// checked in.
pub(crate) const NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWCGROUP
    | 0x80) as u64; // CLONE_NEWTIME

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(table::BY_NAME.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(nr("getpid"), Some(39));
        assert_eq!(nr("openat2"), Some(437));
        assert_eq!(nr("mseal"), Some(462));
        assert_eq!(name(257), Some("openat"));
        assert_eq!(name(9999), None);
        for (n, _) in KINDS {
            assert!(nr(n).is_some(), "{n} is not in the table");
        }
        assert!(matches!(kind(101), Some(Kind::Fixed { .. }))); // ptrace
        assert_eq!(kind(39), None);
    }
}
