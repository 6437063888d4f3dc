//! `cgroup_escape`: leaving the sandbox's cgroups (and with them its memory and pids limits).
//!
//! A forked child writes its own pid into the top `cgroup.procs` of each hierarchy it can see (so
//! the probe itself never moves: the limit probes after it still run inside the sandbox's
//! cgroups), and a cgroup2 filesystem is mounted on a scratch directory. Inside a cgroup namespace
//! the top is the sandbox's own cgroup; a write that succeeds still counts as not isolated, since
//! the sandbox could rearrange its processes, and with the namespace off it is a real escape.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::calls::{self, Mounted};
use super::{Host, Verdict};
use crate::process::{self, End};
use crate::sys::{self, Errno};

/// The top `cgroup.procs` files tried: cgroup v2, then the v1 pids and memory hierarchies.
const PROCS: &[&str] = &[
    "/sys/fs/cgroup/cgroup.procs",
    "/sys/fs/cgroup/pids/cgroup.procs",
    "/sys/fs/cgroup/memory/cgroup.procs",
];

/// Exit codes above this say the write failed (the rest say the open did).
const WRITE_FAILED: i32 = 128;

/// Writes a forked child's own pid into `file`: `Ok(())` if the kernel took it.
fn move_child(file: &str) -> Result<(), String> {
    let child = process::spawn(|| {
        let mut f = match std::fs::OpenOptions::new().write(true).open(file) {
            Ok(f) => f,
            Err(e) => return Errno::of(&e).0.min(WRITE_FAILED - 1),
        };
        match f.write_all(sys::getpid().to_string().as_bytes()) {
            Ok(()) => 0,
            Err(e) => WRITE_FAILED + Errno::of(&e).0.min(126),
        }
    })
    .map_err(|e| format!("fork: {e}"))?;
    match process::wait(child, Duration::from_secs(5)) {
        End::Exited(0) => Ok(()),
        End::Exited(c) if c > WRITE_FAILED => Err(format!("write: {}", Errno(c - WRITE_FAILED))),
        End::Exited(c) => Err(format!("open: {}", Errno(c))),
        other => Err(format!("child {other:?}")),
    }
}

/// The cgroup paths `/proc/self/cgroup` shows other than `/` (each once): present when the
/// sandbox sees where it sits in the host's hierarchy (no cgroup namespace).
fn visible_paths() -> String {
    match std::fs::read_to_string("/proc/self/cgroup") {
        Err(e) => format!("/proc/self/cgroup: {}", Errno::of(&e)),
        Ok(text) => {
            let mut paths: Vec<&str> = text
                .lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .filter(|p| *p != "/")
                .collect();
            paths.sort_unstable();
            paths.dedup();
            if paths.is_empty() {
                "/proc/self/cgroup: all /".into()
            } else {
                format!("/proc/self/cgroup shows {}", paths.join(" "))
            }
        }
    }
}

/// `cgroup_escape`: isolated when no top `cgroup.procs` accepted a pid and cgroup2 would not mount.
pub fn cgroup_escape(_: &Host) -> Verdict {
    let mut accepted = Vec::new();
    let mut notes = Vec::new();
    for file in PROCS.iter().filter(|f| Path::new(f).exists()) {
        match move_child(file) {
            Ok(()) => accepted.push(*file),
            Err(e) => notes.push(format!("{file}: {e}")),
        }
    }
    if notes.is_empty() && accepted.is_empty() {
        notes.push("no top cgroup.procs visible".into());
    }
    let mounted = match calls::try_mount("cgroup2", "moat-bench-probe-cg") {
        Mounted::At(at) => {
            notes.push(format!("mounted cgroup2 on {at}"));
            true
        }
        Mounted::Refused(e) => {
            notes.push(format!("cgroup2 mount: {e}"));
            false
        }
        Mounted::Nowhere(why) => {
            notes.push(format!("cgroup2 mount: {why}"));
            false
        }
    };
    notes.push(visible_paths());
    let mut observed = String::new();
    if !accepted.is_empty() {
        observed = format!("pid accepted by {}; ", accepted.join(" "));
    }
    observed.push_str(&notes.join("; "));
    Verdict::when(accepted.is_empty() && !mounted, observed)
}
