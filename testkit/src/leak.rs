//! The leak checker: what a test left behind that was not there before it started.
//!
//! [`LeakCheck::new`] snapshots the host; [`LeakCheck::assert_clean`] waits (up to 10 s, since
//! shims and VMs exit asynchronously) until nothing new remains, and otherwise panics naming each
//! leak: processes (containerd, shims, moat*, qemu*, runc, crun, or anything in a harness cgroup),
//! mounts, cgroups (every hierarchy, v1 and v2), network devices (taps, veths), and entries of
//! `$TMPDIR` starting with `moat`, `/run/moat`, `/run/netns` and containerd's shim socket and runc
//! state directories.
//!
//! Tests in one binary run in parallel threads; a `LeakCheck` holds a process-wide lock for its
//! lifetime so leak-checked tests run one at a time, and things carrying the marker of a harness
//! created by another thread or another live test process are not counted as this test's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::procfs::{self, Mount, Process};
use crate::teardown::{MARKER_PREFIX, marker_pid};

/// Command-name prefixes of processes that count as leaks when new.
const PROCESS_NAMES: &[&str] = &["containerd", "moat", "qemu", "runc", "crun"];
/// Directories whose new entries are leaks (entries with these prefixes only, for `$TMPDIR`).
const RUNTIME_DIRS: &[&str] = &[
    "/run/moat",
    "/run/netns",
    "/run/containerd/s",
    "/run/containerd/runc",
];
/// How deep cgroup hierarchies are compared.
const CGROUP_DEPTH: usize = 6;

static SERIAL: Mutex<()> = Mutex::new(());
static HARNESSES: Mutex<Vec<(String, ThreadId)>> = Mutex::new(Vec::new());

/// Records that the harness with `marker` belongs to the current thread's test.
pub(crate) fn register(marker: &str) {
    let mut list = HARNESSES.lock().unwrap_or_else(|e| e.into_inner());
    list.push((marker.to_string(), std::thread::current().id()));
}

#[derive(Default)]
struct Snapshot {
    pids: BTreeSet<i32>,
    mounts: BTreeMap<Mount, usize>,
    cgroups: BTreeSet<PathBuf>,
    netdevs: BTreeSet<String>,
    paths: BTreeSet<PathBuf>,
}

fn list_dir(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if depth > 1 && e.file_type().is_ok_and(|t| t.is_dir()) {
            list_dir(&p, depth - 1, out);
        }
        out.insert(p);
    }
}

impl Snapshot {
    fn take() -> Self {
        let mut mounts = BTreeMap::new();
        for m in procfs::mounts() {
            *mounts.entry(m).or_insert(0) += 1;
        }
        let cgroups = procfs::cgroup_roots()
            .iter()
            .flat_map(|r| procfs::dirs_below(r, CGROUP_DEPTH))
            .collect();
        let netdevs = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut paths = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("moat") {
                    paths.insert(e.path());
                }
            }
        }
        for dir in RUNTIME_DIRS {
            let depth = if dir.ends_with("runc") { 2 } else { 1 };
            list_dir(Path::new(dir), depth, &mut paths);
        }
        Self {
            pids: procfs::processes().iter().map(|p| p.pid).collect(),
            mounts,
            cgroups,
            netdevs,
            paths,
        }
    }
}

/// Whether `path` is a harness's own directory (named exactly by its marker): its temp dir, or the
/// per-namespace directory runc creates once and keeps (`/<namespace>` in every cgroup hierarchy,
/// `/run/containerd/runc/<namespace>`). The harness removes those at teardown; what a test puts
/// below them is still counted.
fn is_harness_dir(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some(rest) = name.strip_prefix(MARKER_PREFIX) else {
        return false;
    };
    let mut parts = rest.split('-');
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()
}

/// A before/after comparison of the host; see the module documentation.
pub struct LeakCheck {
    before: Snapshot,
    thread: ThreadId,
    _serial: MutexGuard<'static, ()>,
}

impl Default for LeakCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl LeakCheck {
    /// Waits for other leak-checked tests of this process to finish, then snapshots the host.
    pub fn new() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        Self {
            before: Snapshot::take(),
            thread: std::thread::current().id(),
            _serial: serial,
        }
    }

    /// Whether `text` carries the marker of a harness that is not this test's: one of another
    /// live test process, or one another thread of this process created.
    fn foreign(&self, text: &str) -> bool {
        let mut rest = text;
        while let Some(at) = rest.find(MARKER_PREFIX) {
            let here = &rest[at..];
            rest = &rest[at + MARKER_PREFIX.len()..];
            let Some(pid) = marker_pid(here) else {
                continue;
            };
            if pid != std::process::id() as i32 {
                if procfs::alive(pid) {
                    return true;
                }
                continue;
            }
            let list = HARNESSES.lock().unwrap_or_else(|e| e.into_inner());
            if list
                .iter()
                .any(|(m, t)| here.starts_with(m.as_str()) && *t != self.thread)
            {
                return true;
            }
        }
        false
    }

    fn process_leak(&self, p: &Process, all: &[Process]) -> bool {
        let me = std::process::id() as i32;
        if p.pid == me || self.before.pids.contains(&p.pid) || !procfs::alive(p.pid) {
            return false;
        }
        let marked = p.cmdline.contains(MARKER_PREFIX) || p.cgroups.contains(MARKER_PREFIX);
        let argv0 = p.cmdline.split(' ').next().unwrap_or("");
        let argv0 = argv0.rsplit('/').next().unwrap_or(argv0);
        let named = PROCESS_NAMES
            .iter()
            .any(|n| p.comm.starts_with(n) || argv0.starts_with(n));
        if !(marked || named) || self.foreign(&p.cmdline) || self.foreign(&p.cgroups) {
            return false;
        }
        // Unmarked processes count only if they are ours: descendants, or orphans (reparented to
        // init or a subreaper), not another test process's children.
        marked || procfs::descends_from(p.pid, me, all) || p.ppid == 1
    }

    /// What is there now that was not at [`new`](Self::new), one line per leak.
    pub fn leaks(&self) -> Vec<String> {
        let now = Snapshot::take();
        let mut out = Vec::new();
        let all = procfs::processes();
        for p in all.iter().filter(|p| self.process_leak(p, &all)) {
            out.push(format!("process {}", p.describe()));
        }
        for (m, n) in &now.mounts {
            let before = self.before.mounts.get(m).copied().unwrap_or(0);
            let text = format!("{} {}", m.mount_point.display(), m.source);
            if *n > before && !self.foreign(&text) {
                out.push(format!(
                    "mount {} ({} from {}){}",
                    m.mount_point.display(),
                    m.fstype,
                    m.source,
                    if n - before > 1 {
                        format!(" x{}", n - before)
                    } else {
                        String::new()
                    }
                ));
            }
        }
        for c in now.cgroups.difference(&self.before.cgroups) {
            if !self.foreign(&c.to_string_lossy()) && !is_harness_dir(c) {
                out.push(format!("cgroup {}", c.display()));
            }
        }
        for d in now.netdevs.difference(&self.before.netdevs) {
            out.push(format!("network device {d}"));
        }
        for p in now.paths.difference(&self.before.paths) {
            if !self.foreign(&p.to_string_lossy()) && !is_harness_dir(p) {
                out.push(format!("path {}", p.display()));
            }
        }
        out
    }

    /// Waits up to 10 s for the host to be back to the snapshot.
    ///
    /// # Panics
    /// If something is still left, naming each leak.
    pub fn assert_clean(self) {
        self.assert_clean_within(Duration::from_secs(10));
    }

    /// Like [`assert_clean`](Self::assert_clean) with an explicit grace period.
    ///
    /// # Panics
    /// If something is still left after `grace`, naming each leak.
    pub fn assert_clean_within(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let leaks = self.leaks();
            if leaks.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the test leaked {} thing(s):\n  {}",
                    leaks.len(),
                    leaks.join("\n  ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaked_temp_dir_is_named_and_its_removal_is_clean() {
        let lc = LeakCheck::new();
        let dir =
            std::env::temp_dir().join(format!("moat-leakcheck-selftest-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let leaks = lc.leaks();
        assert!(
            leaks.iter().any(|l| l.contains("moat-leakcheck-selftest")),
            "{leaks:?}"
        );
        std::fs::remove_dir(&dir).unwrap();
        lc.assert_clean_within(Duration::from_secs(2));
    }

    #[test]
    fn a_leaked_process_is_named() {
        let lc = LeakCheck::new();
        // `exec -a` gives the process a moat-like name, as a leaked moat binary would have.
        let mut child = std::process::Command::new("bash")
            .args(["-c", "exec -a moat-leak-selftest sleep 30"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut leaks = lc.leaks();
        while !leaks.iter().any(|l| l.contains("moat-leak-selftest")) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            leaks = lc.leaks();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            leaks.iter().any(|l| l.contains("moat-leak-selftest")),
            "{leaks:?}"
        );
        lc.assert_clean_within(Duration::from_secs(2));
    }

    #[test]
    fn harness_dirs_are_recognised_by_name() {
        assert!(is_harness_dir(Path::new(
            "/sys/fs/cgroup/pids/moat-testkit-12-0003"
        )));
        assert!(!is_harness_dir(Path::new(
            "/sys/fs/cgroup/pids/moat-testkit-12-0003/t1"
        )));
        assert!(!is_harness_dir(Path::new("/tmp/moat-testkit-12-x")));
    }

    #[test]
    fn other_processes_markers_are_foreign() {
        let lc = LeakCheck::new();
        // pid 1 is alive and is not us.
        assert!(lc.foreign("/tmp/moat-testkit-1-0000/x"));
        assert!(!lc.foreign("/tmp/moat-something-else"));
        let mine = format!("/tmp/moat-testkit-{}-9999/x", std::process::id());
        assert!(
            !lc.foreign(&mine),
            "an unregistered marker of this process is this test's"
        );
    }
}
