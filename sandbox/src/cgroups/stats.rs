//! Resource usage read from a container's cgroup.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Cgroup, read};
use crate::error::Result;

/// A container's resource usage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// Memory limit, bytes (`None`: unlimited).
    pub memory_limit: Option<u64>,
    /// Times the limit was hit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub memory_failcnt: u64,
    /// Processes killed by the OOM killer.
    pub oom_kills: u64,
    /// CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// CPU time in user mode, nanoseconds.
    pub cpu_user_ns: u64,
    /// CPU time in kernel mode, nanoseconds.
    pub cpu_system_ns: u64,
    /// Tasks in the cgroup.
    pub pids_current: u64,
    /// Task limit (`None`: unlimited).
    pub pids_limit: Option<u64>,
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

fn num(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file).ok()?.trim().parse().ok()
}

/// A limit file: "max" (v2) or a huge value (v1's "unlimited") is `None`.
fn limit(dir: &Path, file: &str) -> Option<u64> {
    let s = read(dir, file).ok()?;
    let v: u64 = s.trim().parse().ok()?;
    // v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE, about 2^63.
    (v < 1 << 62).then_some(v)
}

pub(super) fn v2(dir: &Path) -> Result<Stats> {
    let events = read(dir, "memory.events").unwrap_or_default();
    let cpu = read(dir, "cpu.stat").unwrap_or_default();
    Ok(Stats {
        memory_usage: num(dir, "memory.current").unwrap_or(0),
        memory_limit: limit(dir, "memory.max"),
        memory_failcnt: keyed(&events, "max").unwrap_or(0),
        oom_kills: keyed(&events, "oom_kill").unwrap_or(0),
        cpu_usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
        cpu_user_ns: keyed(&cpu, "user_usec").unwrap_or(0) * 1000,
        cpu_system_ns: keyed(&cpu, "system_usec").unwrap_or(0) * 1000,
        pids_current: num(dir, "pids.current").unwrap_or(0),
        pids_limit: limit(dir, "pids.max"),
    })
}

pub(super) fn v1(cg: &Cgroup) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(dir) = cg.dir_of("memory") {
        s.memory_usage = num(dir, "memory.usage_in_bytes").unwrap_or(0);
        s.memory_limit = limit(dir, "memory.limit_in_bytes");
        s.memory_failcnt = num(dir, "memory.failcnt").unwrap_or(0);
        s.oom_kills = read(dir, "memory.oom_control")
            .ok()
            .and_then(|t| keyed(&t, "oom_kill"))
            .unwrap_or(0);
    }
    if let Some(dir) = cg.dir_of("cpuacct") {
        s.cpu_usage_ns = num(dir, "cpuacct.usage").unwrap_or(0);
        // cpuacct.stat is in USER_HZ ticks.
        // SAFETY: sysconf with a valid name.
        let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            n if n > 0 => n as u64,
            _ => 100,
        };
        let stat = read(dir, "cpuacct.stat").unwrap_or_default();
        s.cpu_user_ns = keyed(&stat, "user").unwrap_or(0) * 1_000_000_000 / hz;
        s.cpu_system_ns = keyed(&stat, "system").unwrap_or(0) * 1_000_000_000 / hz;
    }
    if let Some(dir) = cg.dir_of("pids") {
        s.pids_current = num(dir, "pids.current").unwrap_or(0);
        s.pids_limit = limit(dir, "pids.max");
    }
    Ok(s)
}
