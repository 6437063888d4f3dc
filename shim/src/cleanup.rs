//! Cleaning up after a shim that died (`containerd-shim-moat-v2 delete`): containerd runs it in a
//! fresh process when the shim's connection broke, and publishes the exit it prints. What the dead
//! shim left is found from the bundle: its state record (init pid), the spec's cgroup path, and the
//! rootfs mount. Every step tolerates "already gone", so running it twice is harmless.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_backend::Spec;

use crate::error::Result;
use crate::mount;
use crate::state::ShimState;

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Every cgroup directory `cgroups_path` names on this host: one per v1 hierarchy plus the v2 one.
/// Only a path whose last component is the container's own id counts (containerd names the
/// container's cgroup after it), so a malformed spec can never point this at a shared cgroup;
/// systemd-style paths (`slice:prefix:name`) name no directory and give nothing.
pub fn cgroup_dirs(cgroups_path: &str, id: &str, mountinfo: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_matches('/');
    if cgroups_path.contains(':')
        || id.is_empty()
        || rel
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        || rel.rsplit('/').next() != Some(id)
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // mountinfo: ... mount_point ... - fstype source options
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mp), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        if *fstype == "cgroup" || *fstype == "cgroup2" {
            out.push(Path::new(mp).join(rel));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn kill_pid_checked(pid: u32, start: Option<u64>) {
    if pid == 0 {
        return;
    }
    if let Some(s) = start
        && proc_start_time(pid) != Some(s)
    {
        return;
    }
    // SAFETY: kill has no memory arguments; the start-time check above keeps it to our process.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Kills every process in the cgroup directories and removes them (deepest first), retrying for a
/// short while as processes die.
fn clear_cgroups(dirs: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = false;
        for d in dirs {
            let mut subdirs = Vec::new();
            collect_dirs(d, &mut subdirs);
            subdirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for s in &subdirs {
                if let Ok(procs) = std::fs::read_to_string(s.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill has no memory arguments; the pid is in the dead
                        // container's cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        left = true;
                    }
                }
                if std::fs::remove_dir(s).is_err() && s.exists() {
                    left = true;
                }
            }
        }
        if !left || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    if !d.is_dir() {
        return;
    }
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Cleans up what container `id` in `bundle` left behind. Returns the pid it had (0 if unknown).
pub fn cleanup_bundle(bundle: &Path, id: &str) -> Result<u32> {
    let state = ShimState::read(bundle).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    });
    let pid = state.as_ref().map_or(0, |s| s.pid);
    if let Some(s) = &state {
        kill_pid_checked(s.pid, s.pid_start);
    }
    if let Ok(spec) = Spec::load(bundle.join("config.json"))
        && let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
    {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        clear_cgroups(&cgroup_dirs(&path.to_string_lossy(), id, &mountinfo));
    }
    let rootfs = bundle.join("rootfs");
    if let Err(e) = mount::unmount_all(&rootfs) {
        tracing::warn!("{e}");
    }
    ShimState::remove(bundle);
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self() {
        let me = std::process::id();
        let t = proc_start_time(me).unwrap();
        assert_eq!(proc_start_time(me), Some(t));
        assert_eq!(proc_start_time(u32::MAX - 1), None);
    }

    #[test]
    fn cgroup_dirs_from_mountinfo() {
        let mi = "\
30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 25 0:29 / /proc rw - proc proc rw";
        assert_eq!(
            cgroup_dirs("/default/c1", "c1", mi),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/default/c1"),
                PathBuf::from("/sys/fs/cgroup/memory/default/c1"),
                PathBuf::from("/sys/fs/cgroup/unified/default/c1"),
            ]
        );
        assert!(cgroup_dirs("kubepods.slice:cri-containerd:abc", "abc", mi).is_empty());
        assert!(cgroup_dirs("/a/../c1", "c1", mi).is_empty());
        assert!(cgroup_dirs("/", "c1", mi).is_empty());
        assert!(cgroup_dirs("/default", "c1", mi).is_empty());
        assert!(cgroup_dirs("/default/c1", "", mi).is_empty());
    }

    #[test]
    fn cleanup_of_an_empty_bundle_is_harmless() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(cleanup_bundle(d.path(), "c1").unwrap(), 0);
        assert_eq!(cleanup_bundle(d.path(), "c1").unwrap(), 0);
    }
}
