//! Control groups, v2 and v1 (and hybrid: v1 controllers plus a cgroup2 mount at
//! `/sys/fs/cgroup/unified`, like this project's CI host).
//!
//! [`Layout::detect`] finds the hierarchies; [`Cgroup::create`] makes the container's directory
//! in each, enables controllers (v2), writes the spec's resources and hands back the
//! `cgroup.procs` files the spawner joins. Everything after that (freeze, kill, update, stats,
//! OOM count, removal) works from the [`Cgroup`] stored in the container's state, so it works from
//! another process too.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

pub mod path;
mod stats;
mod v1;
mod v2;

pub use stats::Stats;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup hierarchies of this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Pure cgroup v2 mounted at `root`.
    V2 {
        /// Mount point of the unified hierarchy.
        root: PathBuf,
    },
    /// cgroup v1 hierarchies, plus the cgroup2 mount of a hybrid host.
    V1 {
        /// One entry per mounted v1 hierarchy.
        hierarchies: Vec<Hierarchy>,
        /// The cgroup2 mount (hybrid hosts), holding no controllers moat uses.
        unified: Option<PathBuf>,
    },
}

/// A mounted v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its mount options naming what it holds (`cpu,cpuacct`, `name=systemd`).
    pub options: Vec<String>,
}

const V1_CONTROLLERS: [&str; 15] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

impl Layout {
    /// Looks at `/sys/fs/cgroup`: cgroup2 there means v2; otherwise the v1 (and cgroup2) mounts
    /// listed in `/proc/self/mountinfo`.
    pub fn detect() -> Result<Layout> {
        // SAFETY: `st` is a plain C struct that statfs fills in; the path is a static string.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) } == 0
            && st.f_type == CGROUP2_SUPER_MAGIC
        {
            return Ok(Layout::V2 {
                root: PathBuf::from(DEFAULT_ROOT),
            });
        }
        let info = fs::read_to_string("/proc/self/mountinfo")
            .ctx(|| "reading /proc/self/mountinfo".into())?;
        let layout = Self::from_mountinfo(&info);
        match &layout {
            Layout::V1 { hierarchies, .. } if hierarchies.is_empty() => Err(Error::Cgroup(
                "no cgroup hierarchy is mounted (neither cgroup2 at /sys/fs/cgroup nor cgroup v1 \
                 controllers): mount cgroup2 on /sys/fs/cgroup"
                    .into(),
            )),
            _ => Ok(layout),
        }
    }

    /// The layout described by a mountinfo text (v1 hierarchies and the cgroup2 mount).
    pub fn from_mountinfo(info: &str) -> Layout {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        let mut unified = None;
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(root), Some(mountpoint), Some(fstype), Some(superopts)) = (
                fields.get(3),
                fields.get(4),
                fields.get(sep + 1),
                fields.get(sep + 3),
            ) else {
                continue;
            };
            if *root != "/" {
                continue;
            }
            let mountpoint = PathBuf::from(unescape(mountpoint));
            match *fstype {
                "cgroup2" if unified.is_none() => unified = Some(mountpoint),
                "cgroup" => {
                    let options: Vec<String> = superopts
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    if !options.is_empty() && !hierarchies.iter().any(|h| h.options == options) {
                        hierarchies.push(Hierarchy {
                            mountpoint,
                            options,
                        });
                    }
                }
                _ => {}
            }
        }
        Layout::V1 {
            hierarchies,
            unified,
        }
    }
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which cgroup version a container's cgroup uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// cgroup v1 (possibly hybrid).
    V1,
    /// cgroup v2.
    V2,
}

/// One directory of a container's cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    /// The hierarchy's mount point.
    pub mountpoint: PathBuf,
    /// The container's directory (`mountpoint` + the cgroup path).
    pub path: PathBuf,
    /// v1: what the hierarchy holds (`cpu`, `name=systemd`); v2 and the hybrid cgroup2 mount: empty.
    pub options: Vec<String>,
    /// The cgroup2 mount of a hybrid host.
    #[serde(default)]
    pub unified: bool,
    /// moat made the directory (and removes it on delete).
    pub created: bool,
}

/// A container's cgroup: one directory (v2) or one per hierarchy (v1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// v1 or v2.
    pub version: Version,
    /// The cgroup path below each hierarchy's root (`/moat/<id>`).
    pub relative: PathBuf,
    /// Its directories.
    pub dirs: Vec<Dir>,
}

pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ERANGE) => " (value out of range for this kernel?)",
            Some(libc::EBUSY) => " (usage is above the new limit?)",
            Some(libc::ENOENT) => " (controller not enabled here?)",
            _ => "",
        };
        Error::Io {
            context: format!("writing {value:?} to {}{hint}", path.display()),
            source,
        }
    })
}

pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))
}

fn mkdir_tracking(path: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_tracking(parent, created)?;
    }
    match fs::create_dir(path) {
        Ok(()) => {
            created.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl Cgroup {
    /// Makes the container's cgroup at `relative` (see [`path::resolve`]) in every hierarchy of
    /// `layout` and applies `resources`. On error, removes what it made.
    pub fn create(
        layout: &Layout,
        relative: &Path,
        resources: Option<&LinuxResources>,
    ) -> Result<Cgroup> {
        let mut made = Vec::new();
        let result = Self::create_inner(layout, relative, resources, &mut made);
        if result.is_err() {
            for dir in made.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        result
    }

    fn create_inner(
        layout: &Layout,
        relative: &Path,
        resources: Option<&LinuxResources>,
        made: &mut Vec<PathBuf>,
    ) -> Result<Cgroup> {
        let rel = relative.strip_prefix("/").unwrap_or(relative);
        let mut dirs = Vec::new();
        let version = match layout {
            Layout::V2 { root } => {
                let needed = resources.map(v2::controllers_needed).unwrap_or_default();
                v2::check_controllers(root, &needed)?;
                let path = root.join(rel);
                let before = made.len();
                mkdir_tracking(&path, made)
                    .ctx(|| format!("creating cgroup {}", path.display()))?;
                v2::enable_controllers(root, rel, &needed)?;
                dirs.push(Dir {
                    mountpoint: root.clone(),
                    path,
                    options: Vec::new(),
                    unified: false,
                    created: made.len() > before,
                });
                Version::V2
            }
            Layout::V1 {
                hierarchies,
                unified,
            } => {
                if let Some(r) = resources {
                    v1::check_controllers(hierarchies, r)?;
                }
                for h in hierarchies {
                    let path = h.mountpoint.join(rel);
                    let before = made.len();
                    mkdir_tracking(&path, made)
                        .ctx(|| format!("creating cgroup {}", path.display()))?;
                    if h.options.iter().any(|o| o == "cpuset") {
                        v1::init_cpuset(&h.mountpoint, &path)?;
                    }
                    dirs.push(Dir {
                        mountpoint: h.mountpoint.clone(),
                        path,
                        options: h.options.clone(),
                        unified: false,
                        created: made.len() > before,
                    });
                }
                if let Some(u) = unified {
                    let path = u.join(rel);
                    let before = made.len();
                    mkdir_tracking(&path, made)
                        .ctx(|| format!("creating cgroup {}", path.display()))?;
                    dirs.push(Dir {
                        mountpoint: u.clone(),
                        path,
                        options: Vec::new(),
                        unified: true,
                        created: made.len() > before,
                    });
                }
                Version::V1
            }
        };
        let cg = Cgroup {
            version,
            relative: Path::new("/").join(rel),
            dirs,
        };
        if let Some(r) = resources {
            cg.update(r)?;
        }
        Ok(cg)
    }

    /// The `cgroup.procs` file of every directory (a process joins by writing its pid, or `0`).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    /// The directory holding `controller` (v1), or the one directory (v2).
    pub(crate) fn dir_of(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|d| d.path.as_path()),
            Version::V1 => self
                .dirs
                .iter()
                .find(|d| d.options.iter().any(|o| o == controller))
                .map(|d| d.path.as_path()),
        }
    }

    /// Writes `resources` (create and `update`).
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        match self.version {
            Version::V2 => {
                let dir = self.dirs.first().map(|d| d.path.as_path()).ok_or_else(|| {
                    Error::Cgroup("the container's cgroup has no directory".into())
                })?;
                v2::apply(dir, resources)
            }
            Version::V1 => v1::apply(self, resources),
        }
    }

    /// Host pids of every process in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = self
            .dir_of("pids")
            .or_else(|| self.dirs.first().map(|d| d.path.as_path()))
            .ok_or_else(|| Error::Cgroup("the container's cgroup has no directory".into()))?;
        Ok(read(dir, "cgroup.procs")?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Freezes (`true`) or thaws every process, waiting until the kernel reports it done.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self.version {
            Version::V2 => v2::set_frozen(self.dir_of("").unwrap_or(Path::new("/")), frozen),
            Version::V1 => {
                let dir = self.dir_of("freezer").ok_or_else(|| {
                    Error::Cgroup("no freezer hierarchy is mounted: cannot pause".into())
                })?;
                v1::set_frozen(dir, frozen)
            }
        }
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        match self.version {
            Version::V2 => self
                .dir_of("")
                .and_then(|d| read(d, "cgroup.freeze").ok())
                .is_some_and(|s| s.trim() == "1"),
            Version::V1 => self
                .dir_of("freezer")
                .and_then(|d| read(d, "freezer.state").ok())
                .is_some_and(|s| s.trim() != "THAWED"),
        }
    }

    /// Sends `signal` to every process (frozen ones are thawed after, so that SIGKILL lands).
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        if signal == libc::SIGKILL
            && self.version == Version::V2
            && let Some(dir) = self.dir_of("")
            && dir.join("cgroup.kill").exists()
        {
            return write(dir, "cgroup.kill", "1");
        }
        // Freeze first so that no process forks between listing and signalling (runc does this).
        let frozen_before = self.is_frozen();
        let can_freeze = self.set_frozen(true).is_ok();
        let result = self.pids().map(|pids| {
            for pid in pids {
                // SAFETY: kill(2) with integer arguments.
                unsafe { libc::kill(pid, signal) };
            }
        });
        // Thaw what we froze; a frozen container is thawed too when killed, so SIGKILL lands.
        if (can_freeze && !frozen_before) || (frozen_before && signal == libc::SIGKILL) {
            self.set_frozen(false)?;
        }
        result
    }

    /// Like [`pids`](Self::pids), but a cgroup that is already gone holds no process.
    fn pids_left(&self) -> Result<Vec<i32>> {
        match self.pids() {
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            r => r,
        }
    }

    /// Kills every process and waits (up to `timeout`) until none is left. A cgroup someone else
    /// already removed (a cleanup after a dead shim) has nothing left to kill.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        if self.pids_left()?.is_empty() {
            return Ok(());
        }
        self.signal_all(libc::SIGKILL)?;
        let deadline = Instant::now() + timeout;
        while !self.pids_left()?.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::Cgroup(format!(
                    "processes in {} did not die after SIGKILL",
                    self.relative.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Removes the directories moat made (the processes must be gone: see [`Cgroup::kill_all`]).
    pub fn remove(&self) -> Result<()> {
        for d in self.dirs.iter().filter(|d| d.created) {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match fs::remove_dir(&d.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    // Exiting tasks may hold the cgroup for a moment.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(source) => {
                        return Err(Error::Io {
                            context: format!("removing cgroup {}", d.path.display()),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match self.version {
            Version::V2 => self
                .dir_of("")
                .and_then(|d| read(d, "memory.events").ok())
                .and_then(|s| stats::keyed(&s, "oom_kill"))
                .unwrap_or(0),
            Version::V1 => self
                .dir_of("memory")
                .and_then(|d| read(d, "memory.oom_control").ok())
                .and_then(|s| stats::keyed(&s, "oom_kill"))
                .unwrap_or(0),
        }
    }

    /// Current resource usage.
    pub fn stats(&self) -> Result<Stats> {
        match self.version {
            Version::V2 => stats::v2(self.dir_of("").unwrap_or(Path::new("/"))),
            Version::V1 => stats::v1(self),
        }
    }
}

#[cfg(test)]
mod tests;
