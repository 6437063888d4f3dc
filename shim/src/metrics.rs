//! `Stats` for containerd: the backend's [`Stats`] as the cgroup metrics message `ctr task metrics`
//! and the CRI plugin's `ContainerStats` decode — `io.containerd.cgroups.v1.Metrics` on v1 and
//! hybrid hosts, `io.containerd.cgroups.v2.Metrics` where `/sys/fs/cgroup` is cgroup2 — packed in an
//! `Any` with the bare type URL containerd's `typeurl` registers.

use std::sync::OnceLock;

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use moat_backend::Stats;

use crate::events::to_any;

/// Which metrics message to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// cgroups v1 (also hybrid hosts, whose controllers are v1).
    V1,
    /// cgroups v2 only (unified hierarchy at `/sys/fs/cgroup`).
    V2,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The host's flavour, probed once.
pub fn host_flavour() -> Flavour {
    static F: OnceLock<Flavour> = OnceLock::new();
    *F.get_or_init(|| {
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: the path is a valid NUL-terminated string and `st` is writable memory of the
        // right size; statfs only writes into it.
        let rc = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), st.as_mut_ptr()) };
        if rc == 0 {
            // SAFETY: statfs returned 0, so it filled `st`.
            let st = unsafe { st.assume_init() };
            if st.f_type == CGROUP2_SUPER_MAGIC {
                return Flavour::V2;
            }
        }
        Flavour::V1
    })
}

/// Packs `s` as the metrics message of `flavour`.
pub fn to_metrics_any(s: &Stats, flavour: Flavour) -> Any {
    match flavour {
        Flavour::V1 => to_any(&to_v1(s)),
        Flavour::V2 => to_any(&to_v2(s)),
    }
}

fn to_v1(s: &Stats) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    let mut pids = v1::PidsStat::new();
    pids.current = s.pids_current;
    pids.limit = s.pids_limit.unwrap_or(0);
    m.pids = Some(pids).into();

    let mut usage = v1::CPUUsage::new();
    usage.total = s.cpu_usage_ns;
    usage.user = s.cpu_user_ns;
    usage.kernel = s.cpu_system_ns;
    let mut cpu = v1::CPUStat::new();
    cpu.usage = Some(usage).into();
    m.cpu = Some(cpu).into();

    let mut entry = v1::MemoryEntry::new();
    entry.usage = s.memory_usage;
    entry.limit = s.memory_limit.unwrap_or(u64::MAX);
    entry.failcnt = s.memory_failcnt;
    let mut mem = v1::MemoryStat::new();
    mem.usage = Some(entry).into();
    m.memory = Some(mem).into();

    let mut oom = v1::MemoryOomControl::new();
    oom.oom_kill = s.oom_kills;
    m.memory_oom_control = Some(oom).into();
    m
}

fn to_v2(s: &Stats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let mut pids = v2::PidsStat::new();
    pids.current = s.pids_current;
    pids.limit = s.pids_limit.unwrap_or(0);
    m.pids = Some(pids).into();

    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = s.cpu_usage_ns / 1000;
    cpu.user_usec = s.cpu_user_ns / 1000;
    cpu.system_usec = s.cpu_system_ns / 1000;
    m.cpu = Some(cpu).into();

    let mut mem = v2::MemoryStat::new();
    mem.usage = s.memory_usage;
    mem.usage_limit = s.memory_limit.unwrap_or(u64::MAX);
    m.memory = Some(mem).into();

    let mut ev = v2::MemoryEvents::new();
    ev.max = s.memory_failcnt;
    ev.oom_kill = s.oom_kills;
    m.memory_events = Some(ev).into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    fn stats() -> Stats {
        Stats {
            memory_usage: 4096,
            memory_limit: Some(1 << 20),
            memory_failcnt: 2,
            oom_kills: 1,
            cpu_usage_ns: 5_000_000,
            cpu_user_ns: 3_000_000,
            cpu_system_ns: 2_000_000,
            pids_current: 3,
            pids_limit: None,
        }
    }

    #[test]
    fn v1_metrics_carry_the_numbers() {
        let any = to_metrics_any(&stats(), Flavour::V1);
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 1 << 20);
        assert_eq!(m.cpu.usage.total, 5_000_000);
        assert_eq!(m.cpu.usage.kernel, 2_000_000);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
    }

    #[test]
    fn v2_metrics_use_microseconds() {
        let any = to_metrics_any(&stats(), Flavour::V2);
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage_usec, 5000);
        assert_eq!(m.cpu.user_usec, 3000);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory_events.oom_kill, 1);
    }

    #[test]
    fn probe_agrees_with_mountinfo() {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let v2 = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == "/sys/fs/cgroup" && f[2] == "cgroup2"
        });
        assert_eq!(host_flavour() == Flavour::V2, v2);
    }
}
