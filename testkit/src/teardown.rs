//! Forced cleanup of everything carrying a harness marker: processes, cgroups, mounts, runtime
//! state directories, and the harness's temp dir. Used by [`crate::Containerd`]'s teardown and to
//! reap harness directories left by a test process that was killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::procfs::{self, Process};

/// Where containerd 1.6 shims put their sockets (hard-coded, not under `--state`).
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Where the runc shim keeps runc's state by default: `<dir>/<namespace>/<id>`.
const RUNC_ROOT: &str = "/run/containerd/runc";
/// The prefix of every harness marker and temp dir.
pub const MARKER_PREFIX: &str = "moat-testkit-";

/// What a forced cleanup had to do; empty when the tests had already cleaned up after themselves.
#[derive(Debug, Default)]
pub struct Report {
    /// Processes that were still running and were killed.
    pub killed: Vec<String>,
    /// Mount points that were still mounted.
    pub unmounted: Vec<PathBuf>,
    /// Cgroups that were still there.
    pub cgroups: Vec<PathBuf>,
    /// Other leftover paths that were removed (shim sockets, runc state).
    pub removed: Vec<PathBuf>,
    /// What could not be cleaned.
    pub errors: Vec<String>,
}

impl Report {
    /// Whether nothing had been left behind.
    pub fn is_clean(&self) -> bool {
        self.killed.is_empty()
            && self.unmounted.is_empty()
            && self.cgroups.is_empty()
            && self.removed.is_empty()
            && self.errors.is_empty()
    }
}

fn kill(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid just gives ESRCH.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| procfs::alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The socket a containerd 1.6 shim listens on: `/run/containerd/s/<sha256(address/ns/id)>`.
pub fn shim_socket(p: &Process) -> Option<PathBuf> {
    let address = p.arg_after("-address")?;
    let ns = p.arg_after("-namespace")?;
    let id = p.arg_after("-id")?;
    let joined = format!("{}/{ns}/{id}", address.trim_end_matches('/'));
    Some(Path::new(SHIM_SOCKET_DIR).join(hex::encode(Sha256::digest(joined.as_bytes()))))
}

/// Kills every process (but this one) whose command line mentions `marker`, and returns them.
fn kill_marked(marker: &str, report: &mut Report) -> Vec<Process> {
    let me = std::process::id() as i32;
    let victims: Vec<Process> = procfs::processes()
        .into_iter()
        .filter(|p| p.pid != me && p.cmdline.contains(marker))
        .collect();
    for p in &victims {
        kill(p.pid);
        report.killed.push(p.describe());
    }
    let pids: Vec<i32> = victims.iter().map(|p| p.pid).collect();
    for pid in wait_gone(&pids, Duration::from_secs(10)) {
        report.errors.push(format!("pid {pid} survived SIGKILL"));
    }
    victims
}

/// Every cgroup directory (any hierarchy) whose path mentions `marker`, deepest first.
fn marked_cgroups(marker: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = procfs::cgroup_roots()
        .iter()
        .flat_map(|root| procfs::dirs_below(root, 8))
        .filter(|d| d.to_string_lossy().contains(marker))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs
}

/// Thaws, kills and removes every cgroup that mentions `marker`.
fn clean_cgroups(marker: &str, report: &mut Report) {
    let dirs = marked_cgroups(marker);
    for dir in &dirs {
        // A frozen task cannot die: thaw first (v1 freezer, v2 cgroup.freeze).
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pids = Vec::new();
        for dir in &dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            report
                .errors
                .push(format!("processes {pids:?} stay in cgroups of {marker}"));
            break;
        }
        for &pid in &pids {
            if let Some(p) = procfs::process(pid) {
                report.killed.push(p.describe());
            }
            kill(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for dir in dirs {
        // rmdir fails with EBUSY while a just-killed task is still exiting: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => {
                    // The marker's own directory (`ctr`'s `/<namespace>`, a CRI cgroup parent) is
                    // left by runc on every clean delete; only what is below it is news.
                    if !dir.ends_with(marker) {
                        report.cgroups.push(dir);
                    }
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() >= deadline => {
                    report.errors.push(format!("rmdir {}: {e}", dir.display()));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn unmount(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The mounts under `dir` or mentioning `marker`, innermost (latest) first.
fn marked_mounts(dir: &Path, marker: &str) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = procfs::mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir) || p.to_string_lossy().contains(marker))
        .collect();
    list.reverse();
    list
}

fn clean_mounts(dir: &Path, marker: &str, report: &mut Report) {
    for _ in 0..3 {
        let list = marked_mounts(dir, marker);
        if list.is_empty() {
            return;
        }
        for p in list {
            match unmount(&p) {
                Ok(()) => report.unmounted.push(p),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => report.errors.push(format!("umount {}: {e}", p.display())),
            }
        }
    }
}

/// Removes entries of `parent` whose names mention `marker` (runtime state kept outside the dir).
fn clean_named(parent: &Path, marker: &str, report: &mut Report) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().contains(marker) {
            let p = e.path();
            // An empty namespace directory is what runc leaves after a clean delete: not news.
            if fs::remove_dir(&p).is_ok() {
                continue;
            }
            match fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p)) {
                Ok(()) => report.removed.push(p),
                Err(err) => report.errors.push(format!("remove {}: {err}", p.display())),
            }
        }
    }
}

/// Removes `dir`, but only once nothing is mounted below it (removing through a bind mount would
/// delete whatever it points at).
fn remove_dir(dir: &Path, marker: &str, report: &mut Report) {
    if !dir.exists() {
        return;
    }
    let left = marked_mounts(dir, marker);
    if !left.is_empty() {
        report.errors.push(format!(
            "not removing {}: still mounted below it: {left:?}",
            dir.display()
        ));
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir) {
        report.errors.push(format!("remove {}: {e}", dir.display()));
    }
}

/// Kills, unmounts and removes everything that belongs to harness `marker` with temp dir `dir`.
/// The daemon itself must already be stopped (or be killed here through its command line).
pub fn clean(marker: &str, dir: &Path, report: &mut Report) {
    for p in kill_marked(marker, report) {
        if let Some(sock) = shim_socket(&p).filter(|s| s.exists()) {
            match fs::remove_file(&sock) {
                Ok(()) => report.removed.push(sock),
                Err(e) => report
                    .errors
                    .push(format!("remove {}: {e}", sock.display())),
            }
        }
    }
    clean_cgroups(marker, report);
    clean_mounts(dir, marker, report);
    clean_named(Path::new(RUNC_ROOT), marker, report);
    remove_dir(dir, marker, report);
}

/// Cleans up after harnesses of test processes that no longer exist (killed before their Drop
/// ran): temp dirs named `moat-testkit-<pid>-<n>` whose pid is gone.
pub fn reap_stale() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = marker_pid(&name) else {
            continue;
        };
        if !procfs::alive(pid) {
            let mut report = Report::default();
            clean(&name, &e.path(), &mut report);
        }
    }
}

/// The pid in a `moat-testkit-<pid>-...` marker found in `text`, if any.
pub fn marker_pid(text: &str) -> Option<i32> {
    let rest = &text[text.find(MARKER_PREFIX)? + MARKER_PREFIX.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_pids() {
        assert_eq!(marker_pid("/tmp/moat-testkit-123-0004/root"), Some(123));
        assert_eq!(marker_pid("moat-testkit-"), None);
        assert_eq!(marker_pid("/tmp/other"), None);
    }

    #[test]
    fn shim_socket_follows_containerd() {
        // A process with a shim's arguments (`; :` keeps sh from exec'ing sleep in its place).
        let mut c = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 30; :",
                "-namespace",
                "ns1",
                "-id",
                "c1",
                "-address",
                "/x/c.sock",
            ])
            .spawn()
            .unwrap();
        // Until exec completes, /proc shows the forked test process's command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sock = None;
        while sock.is_none() && Instant::now() < deadline {
            sock = procfs::process(c.id() as i32).and_then(|p| shim_socket(&p));
            std::thread::sleep(Duration::from_millis(5));
        }
        c.kill().unwrap();
        c.wait().unwrap();
        let expect = hex::encode(Sha256::digest(b"/x/c.sock/ns1/c1"));
        assert_eq!(sock.unwrap(), Path::new(SHIM_SOCKET_DIR).join(expect));
    }

    #[test]
    fn stale_harness_dirs_are_unmounted_then_removed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return;
        }
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let dir = std::env::temp_dir().join(format!("{MARKER_PREFIX}{dead}-0000"));
        let mnt = dir.join("state/m");
        fs::create_dir_all(&mnt).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(ok.success());
        fs::write(mnt.join("inside"), "x").unwrap();
        reap_stale();
        assert!(!dir.exists(), "{} should be gone", dir.display());
        assert!(
            procfs::mounts()
                .iter()
                .all(|m| !m.mount_point.starts_with(&dir))
        );
    }
}
