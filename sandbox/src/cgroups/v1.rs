//! cgroup v1 resource files.

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::{Cgroup, Hierarchy, read, write};
use crate::error::{Error, Result};

/// Errors out if `resources` needs a controller no hierarchy holds.
pub(super) fn check_controllers(hierarchies: &[Hierarchy], r: &LinuxResources) -> Result<()> {
    let has = |c: &str| hierarchies.iter().any(|h| h.options.iter().any(|o| o == c));
    let mut need: Vec<(&str, &str)> = Vec::new();
    if r.memory().is_some() {
        need.push(("memory", "linux.resources.memory"));
    }
    if r.pids().is_some() {
        need.push(("pids", "linux.resources.pids"));
    }
    if let Some(cpu) = r.cpu() {
        if cpu.shares().is_some() || cpu.quota().is_some() || cpu.period().is_some() {
            need.push(("cpu", "linux.resources.cpu"));
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            need.push(("cpuset", "linux.resources.cpu.cpus"));
        }
    }
    if r.block_io().is_some() {
        need.push(("blkio", "linux.resources.blockIO"));
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        need.push(("hugetlb", "linux.resources.hugepageLimits"));
    }
    for (c, field) in need {
        if !has(c) {
            return Err(Error::spec(
                field,
                format!(
                    "needs the {c} cgroup controller, which is not mounted on this host: mount it or drop the limit"
                ),
            ));
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(Error::spec(
            "linux.resources.unified",
            "needs cgroup v2, and this host uses cgroup v1 controllers: drop it",
        ));
    }
    if let Some(cpu) = r.cpu()
        && (cpu.idle().is_some() || cpu.burst().is_some())
    {
        return Err(Error::spec(
            "linux.resources.cpu",
            "idle and burst need cgroup v2: drop them",
        ));
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(Error::spec(
            "linux.resources.rdma",
            "rdma limits are not supported by moat: drop them",
        ));
    }
    Ok(())
}

/// A new cpuset cgroup starts with no CPUs and memory nodes: copy them from the parent, from the
/// hierarchy root down.
pub(super) fn init_cpuset(mountpoint: &Path, dir: &Path) -> Result<()> {
    let Ok(rel) = dir.strip_prefix(mountpoint) else {
        return Ok(());
    };
    let mut parent = mountpoint.to_path_buf();
    for c in rel.components() {
        let child = parent.join(c);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read(&child, file)?.trim().is_empty() {
                let v = read(&parent, file)?;
                write(&child, file, v.trim())?;
            }
        }
        parent = child;
    }
    Ok(())
}

fn limit(v: i64) -> String {
    if v < 0 { "-1".into() } else { v.to_string() }
}

fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let typ = d.typ().map_or("a".to_string(), |t| t.as_str().to_string());
    if typ == "a" && d.major().is_none() && d.minor().is_none() {
        return "a".into();
    }
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    format!(
        "{typ} {}:{} {}",
        num(d.major()),
        num(d.minor()),
        d.access().as_deref().unwrap_or("rwm")
    )
}

/// The device rules runc adds after the spec's: the devices every container gets.
pub(crate) const DEFAULT_ALLOWED_DEVICES: [&str; 10] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// Writes `r` into the v1 hierarchies of `cg`.
pub(super) fn apply(cg: &Cgroup, r: &LinuxResources) -> Result<()> {
    if let (Some(m), Some(dir)) = (r.memory(), cg.dir_of("memory")) {
        let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
        let set_limit = |v: i64| write(dir, "memory.limit_in_bytes", &limit(v));
        let set_swap = |v: i64| -> Result<()> {
            if memsw {
                write(dir, "memory.memsw.limit_in_bytes", &limit(v))
            } else if v > 0 && Some(v) != m.limit() {
                Err(Error::spec(
                    "linux.resources.memory.swap",
                    "swap accounting is off on this host (no memory.memsw.*): drop the swap limit or boot with swapaccount=1",
                ))
            } else {
                Ok(())
            }
        };
        match (m.limit(), m.swap()) {
            (Some(l), Some(s)) => {
                // memsw must stay >= limit at every step.
                let cur_sw = read(dir, "memory.memsw.limit_in_bytes")
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .unwrap_or(i64::MAX);
                if s < 0 || s > cur_sw || l < 0 {
                    set_swap(s)?;
                    set_limit(l)?;
                } else {
                    set_limit(l)?;
                    set_swap(s)?;
                }
            }
            (Some(l), None) => set_limit(l)?,
            (None, Some(s)) => set_swap(s)?,
            (None, None) => {}
        }
        if let Some(v) = m.reservation() {
            write(dir, "memory.soft_limit_in_bytes", &limit(v))?;
        }
        if let Some(v) = m.swappiness() {
            if v > 100 {
                return Err(Error::spec(
                    "linux.resources.memory.swappiness",
                    "must be 0 to 100",
                ));
            }
            write(dir, "memory.swappiness", &v.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write(dir, "memory.oom_control", "1")?;
        }
        if let Some(v) = m.kernel_tcp() {
            write(dir, "memory.kmem.tcp.limit_in_bytes", &limit(v))?;
        }
    }
    if let (Some(p), Some(dir)) = (r.pids(), cg.dir_of("pids")) {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        write(dir, "pids.max", &v)?;
    }
    if let Some(cpu) = r.cpu() {
        if let Some(dir) = cg.dir_of("cpu") {
            if let Some(s) = cpu.shares() {
                write(dir, "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = cpu.period() {
                write(dir, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = cpu.quota() {
                write(
                    dir,
                    "cpu.cfs_quota_us",
                    &(if q > 0 { q } else { -1 }).to_string(),
                )?;
            }
            if let Some(p) = cpu.realtime_period() {
                write(dir, "cpu.rt_period_us", &p.to_string())?;
            }
            if let Some(rt) = cpu.realtime_runtime() {
                write(dir, "cpu.rt_runtime_us", &rt.to_string())?;
            }
        }
        if let Some(dir) = cg.dir_of("cpuset") {
            if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                write(dir, "cpuset.cpus", c)?;
            }
            if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                write(dir, "cpuset.mems", m)?;
            }
        }
    }
    if let (Some(dir), Some(rules)) = (cg.dir_of("devices"), r.devices()) {
        for d in rules {
            let file = if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(dir, file, &device_rule(d))?;
        }
        if !rules.is_empty() {
            for rule in DEFAULT_ALLOWED_DEVICES {
                write(dir, "devices.allow", rule)?;
            }
        }
    }
    if let (Some(hp), Some(dir)) = (r.hugepage_limits(), cg.dir_of("hugetlb")) {
        for h in hp {
            write(
                dir,
                &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
    }
    if let (Some(b), Some(dir)) = (r.block_io(), cg.dir_of("blkio")) {
        if let Some(w) = b.weight() {
            write(dir, "blkio.weight", &w.to_string())?;
        }
        for (file, list) in [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ] {
            for t in list.iter().flatten() {
                write(
                    dir,
                    file,
                    &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                )?;
            }
        }
    }
    if let Some(net) = r.network() {
        if let (Some(id), Some(dir)) = (net.class_id(), cg.dir_of("net_cls")) {
            write(dir, "net_cls.classid", &id.to_string())?;
        }
        if let Some(dir) = cg.dir_of("net_prio") {
            for p in net.priorities().iter().flatten() {
                write(
                    dir,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?;
            }
        }
    }
    Ok(())
}

/// Sets `freezer.state` and waits for the kernel to finish.
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        write(dir, "freezer.state", want)?;
        if read(dir, "freezer.state")?.trim() == want {
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
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

    #[test]
    fn device_rules() {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&deny_all), "a");
        let tun = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10i64)
            .minor(200i64)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&tun), "c 10:200 rw");
        let any_minor = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .major(8i64)
            .build()
            .unwrap();
        assert_eq!(device_rule(&any_minor), "b 8:* rwm");
    }
}
