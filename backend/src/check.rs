//! Whether each wall can run on this host, and why not: the facts behind `moat check`.
//!
//! Every backend answers with the same [`Availability`]; the facts about the host that several walls
//! need (cgroups, seccomp, ptrace, user namespaces, containerd) are probed once into [`HostFacts`].
//! The probes only read files under `/proc` and `/sys` and look at `PATH`: they start no processes, so
//! the shim and the benchmarks can call them from anywhere.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::BackendKind;

/// How usable a backend is on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It runs here.
    Usable,
    /// This host's hardware cannot run it (e.g. `/dev/kvm` is PVM or absent): information about the
    /// machine, not something an operator can fix by configuring it.
    NotOnThisHost,
    /// moat does not implement this backend yet.
    NotImplemented,
    /// It should run here but something is missing or misconfigured; the reason says what to do.
    Unusable,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Usable => "usable",
            Status::NotOnThisHost => "not usable on this host",
            Status::NotImplemented => "not available yet",
            Status::Unusable => "not usable",
        })
    }
}

/// One fact a verdict rests on, e.g. `cgroups = hybrid (v1: cpu,memory,pids; v2: none)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fact {
    /// Short name (`kvm`, `cgroups`, `seccomp`, ...).
    pub name: &'static str,
    /// What was found.
    pub value: String,
    /// Whether it is fine for this backend.
    pub ok: bool,
}

/// Whether one backend can run here, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Availability {
    /// Which backend.
    pub backend: BackendKind,
    /// The verdict.
    pub status: Status,
    /// One sentence: why, and what to do if it is not usable.
    pub reason: String,
    /// The facts the verdict rests on.
    pub facts: Vec<Fact>,
}

impl Availability {
    /// True when the backend runs here.
    pub fn usable(&self) -> bool {
        self.status == Status::Usable
    }
}

/// Which cgroup hierarchy layout the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    V1,
    /// Only the unified (v2) hierarchy.
    V2,
    /// v1 controllers plus a v2 hierarchy (usually at `/sys/fs/cgroup/unified`).
    Hybrid,
    /// No cgroup file system mounted.
    None,
}

/// The cgroup controllers a container runtime can use, by hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cgroups {
    /// The layout.
    pub mode: CgroupMode,
    /// Controllers mounted as v1 hierarchies.
    pub v1: Vec<String>,
    /// Controllers available in the v2 hierarchy's root (`cgroup.controllers`).
    pub v2: Vec<String>,
}

impl Cgroups {
    /// True if `controller` is usable in either hierarchy.
    pub fn has(&self, controller: &str) -> bool {
        self.v1.iter().chain(&self.v2).any(|c| c == controller)
    }
}

impl fmt::Display for Cgroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(",")
            }
        };
        match self.mode {
            CgroupMode::None => f.write_str("none mounted"),
            CgroupMode::V1 => write!(f, "v1 ({})", list(&self.v1)),
            CgroupMode::V2 => write!(f, "v2 ({})", list(&self.v2)),
            CgroupMode::Hybrid => {
                write!(f, "hybrid (v1: {}; v2: {})", list(&self.v1), list(&self.v2))
            }
        }
    }
}

/// Facts about the host that several backends rely on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostFacts {
    /// Effective uid is 0.
    pub root: bool,
    /// Cgroup layout and controllers.
    pub cgroups: Cgroups,
    /// Seccomp filter actions the kernel supports (`/proc/sys/kernel/seccomp/actions_avail`); empty
    /// when seccomp filters are not available.
    pub seccomp_actions: Vec<String>,
    /// Yama's `ptrace_scope` (0-3), `None` without Yama (then ptrace follows plain permissions).
    pub ptrace_scope: Option<u8>,
    /// `/proc/sys/user/max_user_namespaces`, `None` if absent.
    pub max_user_namespaces: Option<u64>,
    /// Namespace kinds this kernel has (`/proc/self/ns/*`).
    pub namespaces: Vec<String>,
    /// overlayfs is available (`/proc/filesystems`).
    pub overlayfs: bool,
    /// Where `containerd` is on `PATH`, if anywhere.
    pub containerd: Option<PathBuf>,
}

/// Where the host facts are read from; tests point it at a fake tree.
#[derive(Clone, Debug)]
pub struct Sources {
    /// `/proc`.
    pub proc: PathBuf,
    /// `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// The directories searched for `containerd` (normally `PATH`).
    pub path: Vec<PathBuf>,
}

impl Default for Sources {
    fn default() -> Self {
        let path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Self {
            proc: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            path,
        }
    }
}

impl HostFacts {
    /// Probes this host.
    pub fn probe() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Self::probe_from(&Sources::default(), root)
    }

    /// Probes using explicit sources.
    pub fn probe_from(src: &Sources, root: bool) -> Self {
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        let seccomp_actions = read(&src.proc.join("sys/kernel/seccomp/actions_avail"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let ptrace_scope = read(&src.proc.join("sys/kernel/yama/ptrace_scope"))
            .and_then(|s| s.trim().parse().ok());
        let max_user_namespaces = read(&src.proc.join("sys/user/max_user_namespaces"))
            .and_then(|s| s.trim().parse().ok());
        let mut namespaces: Vec<String> = std::fs::read_dir(src.proc.join("self/ns"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with("_for_children"))
                    .collect()
            })
            .unwrap_or_default();
        namespaces.sort();
        let overlayfs = read(&src.proc.join("filesystems")).is_some_and(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        });
        let containerd = src
            .path
            .iter()
            .map(|d| d.join("containerd"))
            .find(|p| p.is_file());
        let mountinfo = read(&src.proc.join("self/mountinfo")).unwrap_or_default();
        Self {
            root,
            cgroups: parse_cgroups(&mountinfo, &src.cgroup_root),
            seccomp_actions,
            ptrace_scope,
            max_user_namespaces,
            namespaces,
            overlayfs,
            containerd,
        }
    }

    /// True if the kernel supports seccomp filters with this action (`errno`, `trace`, ...).
    pub fn seccomp(&self, action: &str) -> bool {
        self.seccomp_actions.iter().any(|a| a == action)
    }

    /// True if a process may ptrace its own children (what the trace supervisor does).
    pub fn ptrace_children(&self) -> bool {
        match self.ptrace_scope {
            None | Some(0) | Some(1) => true,
            Some(2) => self.root,
            Some(_) => false,
        }
    }

    /// The facts as they read in `moat check`.
    pub fn seccomp_fact(&self, needed: &str) -> Fact {
        Fact {
            name: "seccomp",
            value: if self.seccomp_actions.is_empty() {
                "no seccomp filters (kernel built without CONFIG_SECCOMP_FILTER?)".into()
            } else {
                format!("filters with {}", self.seccomp_actions.join(","))
            },
            ok: self.seccomp(needed),
        }
    }

    /// The cgroups fact: ok when every controller in `needed` is available.
    pub fn cgroups_fact(&self, needed: &[&str]) -> Fact {
        Fact {
            name: "cgroups",
            value: self.cgroups.to_string(),
            ok: needed.iter().all(|c| self.cgroups.has(c)),
        }
    }

    /// The user-namespaces fact (information: moat runs as root and needs them only when a spec asks).
    pub fn userns_fact(&self) -> Fact {
        Fact {
            name: "user_namespaces",
            value: match self.max_user_namespaces {
                Some(0) => "disabled (max_user_namespaces = 0)".into(),
                Some(n) => format!("enabled (max {n})"),
                None => "unknown (no /proc/sys/user/max_user_namespaces)".into(),
            },
            ok: self.max_user_namespaces != Some(0) && self.namespaces.iter().any(|n| n == "user"),
        }
    }

    /// The ptrace fact.
    pub fn ptrace_fact(&self) -> Fact {
        Fact {
            name: "ptrace",
            value: match self.ptrace_scope {
                None => "allowed (no Yama)".into(),
                Some(s) => format!("yama ptrace_scope = {s}"),
            },
            ok: self.ptrace_children(),
        }
    }

    /// The containerd fact (information: only the shim needs it).
    pub fn containerd_fact(&self) -> Fact {
        Fact {
            name: "containerd",
            value: match &self.containerd {
                Some(p) => format!("found at {}", p.display()),
                None => {
                    "not on PATH (needed only for the shim; scripts/deps.sh installs it)".into()
                }
            },
            ok: self.containerd.is_some(),
        }
    }
}

/// Reads the cgroup layout from `/proc/self/mountinfo` and the v2 root's `cgroup.controllers`.
fn parse_cgroups(mountinfo: &str, cgroup_root: &Path) -> Cgroups {
    let mut v1 = Vec::new();
    let mut v2_mount: Option<PathBuf> = None;
    let mut v2_at_root = false;
    for line in mountinfo.lines() {
        // "<id> <parent> <dev> <root> <mountpoint> <opts> [optional...] - <fstype> <source> <superopts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mountpoint = left.split_whitespace().nth(4).unwrap_or("");
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let superopts = r.nth(1).unwrap_or("");
        match fstype {
            "cgroup2" => {
                v2_at_root |= Path::new(mountpoint) == cgroup_root;
                v2_mount.get_or_insert_with(|| PathBuf::from(mountpoint));
            }
            "cgroup" => {
                for opt in superopts.split(',') {
                    if KNOWN_V1.contains(&opt) && !v1.iter().any(|c| c == opt) {
                        v1.push(opt.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    v1.sort();
    let v2_dir = if v2_at_root {
        Some(cgroup_root.to_path_buf())
    } else {
        v2_mount
    };
    let v2 = v2_dir
        .and_then(|d| std::fs::read_to_string(d.join("cgroup.controllers")).ok())
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mode = match (
        v2_at_root,
        !v1.is_empty(),
        mountinfo.contains(" - cgroup2 "),
    ) {
        (true, _, _) => CgroupMode::V2,
        (false, true, true) => CgroupMode::Hybrid,
        (false, true, false) => CgroupMode::V1,
        (false, false, true) => CgroupMode::V2,
        (false, false, false) => CgroupMode::None,
    };
    Cgroups { mode, v1, v2 }
}

/// v1 controllers a container runtime cares about (mountinfo lists other options too).
const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
];

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / UNIFIED rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_layout_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let unified = dir.path().join("unified");
        std::fs::create_dir(&unified).unwrap();
        let mountinfo = HYBRID.replace("UNIFIED", unified.to_str().unwrap());
        let cg = parse_cgroups(&mountinfo, dir.path());
        assert_eq!(cg.mode, CgroupMode::Hybrid);
        assert_eq!(cg.v1, ["cpu", "memory", "pids"]);
        assert!(cg.has("memory") && !cg.has("name=systemd"));
        assert_eq!(cg.to_string(), "hybrid (v1: cpu,memory,pids; v2: none)");
    }

    #[test]
    fn pure_v2_reads_controllers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let mi = format!(
            "30 23 0:27 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
            dir.path().display()
        );
        let cg = parse_cgroups(&mi, dir.path());
        assert_eq!(cg.mode, CgroupMode::V2);
        assert_eq!(cg.v2, ["cpu", "memory", "pids"]);
        assert_eq!(parse_cgroups("", dir.path()).mode, CgroupMode::None);
    }

    #[test]
    fn ptrace_scope_rules() {
        let mut h = HostFacts::probe();
        for (scope, root, ok) in [
            (None, false, true),
            (Some(1), false, true),
            (Some(2), false, false),
            (Some(2), true, true),
            (Some(3), true, false),
        ] {
            h.ptrace_scope = scope;
            h.root = root;
            assert_eq!(h.ptrace_children(), ok, "{scope:?} root={root}");
        }
    }
}
