//! `events`, `pause`, `resume`, `update` and `features`: a container's cgroup, and what moat
//! supports.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use oci_spec::runtime::{LinuxPids, LinuxResources};
use serde_json::json;

use super::load;
use crate::args::{Cli, EventsArgs, IdArg, UpdateArgs};

/// One runc `events` record (`{"type":"stats","id":..,"data":{..}}`) from sandbox stats.
pub fn stats_event(id: &str, s: &moat_sandbox::Stats) -> serde_json::Value {
    json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {
                "usage": {
                    "total": s.cpu_usage_ns,
                    "kernel": s.cpu_system_ns,
                    "user": s.cpu_user_ns,
                },
                "throttling": {},
            },
            "memory": {
                "usage": {
                    "limit": s.memory_limit.unwrap_or(u64::MAX),
                    "usage": s.memory_usage,
                    "failcnt": s.memory_failcnt,
                },
                "swap": { "limit": 0, "failcnt": 0 },
                "kernel": { "limit": 0, "failcnt": 0 },
                "kernelTCP": { "limit": 0, "failcnt": 0 },
                "raw": { "oom_kill": s.oom_kills },
            },
            "pids": {
                "current": s.pids_current,
                "limit": s.pids_limit.unwrap_or(0),
            },
            "blkio": {},
            "hugetlb": {},
        }
    })
}

fn parse_interval(s: &str) -> anyhow::Result<Duration> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .with_context(|| format!("--interval {s:?}: give a duration such as 5s or 500ms"))?;
    Ok(Duration::from_secs_f64(v * mult))
}

/// `moat events [--stats] ID`: the stats once, or every `--interval` until the container is gone.
pub fn events(cli: &Cli, a: &EventsArgs) -> anyhow::Result<i32> {
    let interval = parse_interval(&a.interval)?;
    let c = load(&cli.root, &a.id)?;
    let mut out = std::io::stdout().lock();
    loop {
        let s = c.stats()?;
        serde_json::to_writer(&mut out, &stats_event(&a.id, &s))?;
        writeln!(out)?;
        out.flush()?;
        if a.stats {
            return Ok(0);
        }
        std::thread::sleep(interval);
        if !cli.root.join(&a.id).exists() {
            return Ok(0);
        }
    }
}

/// `moat pause`.
pub fn pause(cli: &Cli, a: &IdArg) -> anyhow::Result<i32> {
    load(&cli.root, &a.id)?.pause()?;
    Ok(0)
}

/// `moat resume`.
pub fn resume(cli: &Cli, a: &IdArg) -> anyhow::Result<i32> {
    load(&cli.root, &a.id)?.resume()?;
    Ok(0)
}

/// `moat update --resources FILE|- ID` (what containerd passes), or `--memory`/`--pids-limit`.
pub fn update(cli: &Cli, a: &UpdateArgs) -> anyhow::Result<i32> {
    let mut res: LinuxResources = match a.resources.as_deref() {
        Some(src) => {
            let text = if src == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading resources from stdin")?;
                s
            } else {
                std::fs::read_to_string(src).with_context(|| format!("reading {src}"))?
            };
            let mut de = serde_json::Deserializer::from_str(&text);
            serde_path_to_error::deserialize(&mut de)
                .map_err(|e| anyhow::anyhow!("--resources: {}: {}", e.path(), e.inner()))?
        }
        None => LinuxResources::default(),
    };
    if let Some(m) = a.memory {
        let mut mem = res.memory().unwrap_or_default();
        mem.set_limit(Some(i64::try_from(m).context("--memory is too large")?));
        res.set_memory(Some(mem));
    }
    if let Some(p) = a.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        res.set_pids(Some(pids));
    }
    if a.resources.is_none() && a.memory.is_none() && a.pids_limit.is_none() {
        bail!("nothing to update: give --resources FILE|-, --memory or --pids-limit");
    }
    load(&cli.root, &a.id)?.update(&res)?;
    Ok(0)
}

/// `moat features`: runtime-spec `features.json` for what moat implements.
pub fn features() -> anyhow::Result<i32> {
    let caps: Vec<String> = (0..=moat_sandbox::caps::LAST_CAP)
        .map(moat_sandbox::caps::name)
        .collect();
    let v = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": [
            "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async",
            "remount", "bind", "rbind", "private", "rprivate", "shared", "rshared", "slave",
            "rslave", "unbindable", "runbindable", "relatime", "norelatime", "strictatime",
            "nostrictatime", "noatime", "atime", "nodiratime", "diratime", "mand", "nomand"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": true },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
        },
        "annotations": { "org.opencontainers.runc.version": "moat" }
    });
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &v)?;
    writeln!(out)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_interval("x").is_err());
        assert!(parse_interval("0s").is_err());
    }

    #[test]
    fn stats_event_has_runc_shape() {
        let s = moat_sandbox::Stats {
            memory_usage: 10,
            pids_current: 2,
            ..Default::default()
        };
        let v = stats_event("c1", &s);
        assert_eq!(v["type"], "stats");
        assert_eq!(v["data"]["memory"]["usage"]["usage"], 10);
        assert_eq!(v["data"]["pids"]["current"], 2);
    }
}
