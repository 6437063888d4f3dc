//! cgroup v2 resource files.

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::{read, write};
use crate::error::{Error, Result};

/// The controllers `r` needs, each with the spec field that needs it.
pub(super) fn controllers_needed(r: &LinuxResources) -> Vec<(String, String)> {
    let mut need: Vec<(String, String)> = Vec::new();
    let mut add = |c: &str, field: &str| {
        if !need.iter().any(|(n, _)| n == c) {
            need.push((c.to_string(), field.to_string()));
        }
    };
    if r.memory().is_some() {
        add("memory", "linux.resources.memory");
    }
    if r.pids().is_some() {
        add("pids", "linux.resources.pids");
    }
    if let Some(cpu) = r.cpu() {
        if cpu.shares().is_some()
            || cpu.quota().is_some()
            || cpu.period().is_some()
            || cpu.idle().is_some()
            || cpu.burst().is_some()
        {
            add("cpu", "linux.resources.cpu");
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            add("cpuset", "linux.resources.cpu.cpus");
        }
    }
    if r.block_io().is_some() {
        add("io", "linux.resources.blockIO");
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        add("hugetlb", "linux.resources.hugepageLimits");
    }
    for key in r.unified().iter().flat_map(|u| u.keys()) {
        if let Some((c, _)) = key.split_once('.')
            && c != "cgroup"
        {
            add(c, &format!("linux.resources.unified.{key}"));
        }
    }
    need
}

/// Errors out, naming the field, if a needed controller is not in the root's `cgroup.controllers`.
pub(super) fn check_controllers(root: &Path, need: &[(String, String)]) -> Result<()> {
    if need.is_empty() {
        return Ok(());
    }
    let available = read(root, "cgroup.controllers")?;
    let available: Vec<&str> = available.split_whitespace().collect();
    for (c, field) in need {
        if !available.contains(&c.as_str()) {
            return Err(Error::spec(
                field,
                format!(
                    "needs the {c} controller, which the cgroup v2 hierarchy at {} does not offer \
                     (it has: {}); on a hybrid host it is bound to cgroup v1: drop the limit or \
                     free the controller",
                    root.display(),
                    available.join(" ")
                ),
            ));
        }
    }
    Ok(())
}

/// Enables `need` in `cgroup.subtree_control` of every ancestor of `root/rel`.
pub(super) fn enable_controllers(root: &Path, rel: &Path, need: &[(String, String)]) -> Result<()> {
    if need.is_empty() {
        return Ok(());
    }
    let mut dir = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        // (Always there on cgroupfs; a missing file reads as "nothing enabled".)
        let enabled = read(&dir, "cgroup.subtree_control").unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let add: Vec<String> = need
            .iter()
            .filter(|(c, _)| !enabled.contains(&c.as_str()))
            .map(|(c, _)| format!("+{c}"))
            .collect();
        if !add.is_empty() {
            write(&dir, "cgroup.subtree_control", &add.join(" "))?;
        }
        if i + 1 < comps.len() {
            dir.push(c);
        }
    }
    Ok(())
}

/// runc's conversion of v1 cpu.shares (2..262144) to cpu.weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

fn max(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// Writes `r` into the v2 directory `dir`.
pub(super) fn apply(dir: &Path, r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            write(dir, "memory.max", &max(l))?;
        }
        match (m.limit(), m.swap()) {
            (_, None) => {}
            (_, Some(s)) if s < 0 => write(dir, "memory.swap.max", "max")?,
            (Some(l), Some(s)) if l >= 0 => {
                if s < l {
                    return Err(Error::spec(
                        "linux.resources.memory.swap",
                        format!(
                            "memory+swap ({s}) is below the memory limit ({l}): make it at least the limit"
                        ),
                    ));
                }
                write(dir, "memory.swap.max", &(s - l).to_string())?;
            }
            _ => {
                return Err(Error::spec(
                    "linux.resources.memory.swap",
                    "a swap limit needs a memory limit on cgroup v2: set memory.limit too",
                ));
            }
        }
        if let Some(v) = m.reservation() {
            write(dir, "memory.low", &max(v))?;
        }
        if m.swappiness().is_some()
            || m.disable_oom_killer() == Some(true)
            || m.kernel_tcp().is_some()
        {
            tracing::debug!(
                "memory swappiness, disableOOMKiller and kernelTCP have no cgroup v2 equivalent; ignored"
            );
        }
    }
    if let Some(p) = r.pids() {
        write(
            dir,
            "pids.max",
            &(if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            }),
        )?;
    }
    if let Some(cpu) = r.cpu() {
        if let Some(s) = cpu.shares().filter(|s| *s > 0) {
            write(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
            let quota = cpu
                .quota()
                .filter(|q| *q > 0)
                .map_or("max".to_string(), |q| q.to_string());
            write(dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(b) = cpu.burst() {
            write(dir, "cpu.max.burst", &b.to_string())?;
        }
        if let Some(i) = cpu.idle() {
            write(dir, "cpu.idle", &i.to_string())?;
        }
        if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            write(dir, "cpuset.cpus", c)?;
        }
        if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            write(dir, "cpuset.mems", m)?;
        }
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight() {
            // blkio.weight 10..1000 to io.weight 1..10000, as runc does.
            let w = 1 + (u64::from(w).saturating_sub(10)) * 9999 / 990;
            write(dir, "io.weight", &format!("default {w}"))?;
        }
        for (key, list) in [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ] {
            for t in list.iter().flatten() {
                write(
                    dir,
                    "io.max",
                    &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
                )?;
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        write(
            dir,
            &format!("hugetlb.{}.max", h.page_size()),
            &h.limit().to_string(),
        )?;
    }
    if r.network().is_some() {
        return Err(Error::spec(
            "linux.resources.network",
            "net_cls/net_prio do not exist in cgroup v2: drop linux.resources.network",
        ));
    }
    for (key, value) in r.unified().iter().flatten() {
        if key.contains('/') || key.starts_with('.') || !key.contains('.') {
            return Err(Error::spec(
                format!("linux.resources.unified.{key}"),
                "is not a cgroup interface file name (like memory.high)",
            ));
        }
        write(dir, key, value)?;
    }
    Ok(())
}

/// Sets `cgroup.freeze` and waits until `cgroup.events` reports it.
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if read(dir, "cgroup.events")?
            .lines()
            .any(|l| l.trim() == want)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Cgroup(format!(
                "{} did not become {want}",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
