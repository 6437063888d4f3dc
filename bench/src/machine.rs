//! The facts a number needs beside it: CPU, cores, memory, kernel, which KVM, which cgroups.

use crate::results::Machine;

/// Reads this machine's facts.
pub fn probe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mib = crate::exec::field_kib(&meminfo, "MemTotal:") as u64 / 1024;
    let kvm = moat_host::kvm::probe();
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        memory_mib,
        kernel: kernel_release(),
        kvm: match &kvm.module {
            Some(m) => format!("{} ({m})", kvm.flavour),
            None => kvm.flavour.to_string(),
        },
        cgroups: cgroups(),
        rig: None,
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// This boot's id (the isolation probe compares it with the sandbox's).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `v2` (cgroup2 at /sys/fs/cgroup), `hybrid` (v1 controllers plus a cgroup2 mount) or `v1`.
fn cgroups() -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let fs: Vec<(&str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let _src = w.next()?;
            let dir = w.next()?;
            let typ = w.next()?;
            Some((dir, typ))
        })
        .collect();
    let v2_root = fs
        .iter()
        .any(|(d, t)| *d == "/sys/fs/cgroup" && *t == "cgroup2");
    let v1 = fs.iter().any(|(_, t)| *t == "cgroup");
    let v2 = fs.iter().any(|(_, t)| *t == "cgroup2");
    match (v2_root, v1, v2) {
        (true, _, _) => "v2",
        (false, true, true) => "hybrid",
        (false, true, false) => "v1",
        _ => "none",
    }
    .into()
}
