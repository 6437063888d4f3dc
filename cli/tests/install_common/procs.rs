//! What a pod costs the host beyond its containers: the moat shim serving it and every process
//! below the shim except the containers' own workloads (the pause process, a trace supervisor),
//! read from `/proc` — RSS, PSS and CPU time.

use std::path::Path;

/// One process's numbers.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Resident set, KiB (shared pages counted in full: an upper bound).
    pub rss_kib: u64,
    /// Proportional set, KiB (shared pages split among their users).
    pub pss_kib: u64,
    /// User + system CPU time, clock ticks.
    pub cpu_ticks: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.rss_kib += o.rss_kib;
        self.pss_kib += o.pss_kib;
        self.cpu_ticks += o.cpu_ticks;
    }
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The long-lived moat shims serving the containerd at `socket` (not `start`/`delete` runs).
pub fn shim_pids(socket: &Path) -> Vec<u32> {
    let want = socket.display().to_string();
    let mut out: Vec<u32> = pids()
        .into_iter()
        .filter(|&pid| {
            let args = cmdline(pid);
            args.first()
                .is_some_and(|a| a.ends_with("containerd-shim-moat-v2"))
                && args.windows(2).any(|w| w[0] == "-address" && w[1] == want)
                && !args.iter().any(|a| a == "start" || a == "delete")
        })
        .collect();
    out.sort();
    out
}

/// `root` and every process below it.
pub fn tree(root: u32) -> Vec<u32> {
    let all: Vec<(u32, Option<u32>)> = pids().into_iter().map(|p| (p, ppid(p))).collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            all.iter()
                .filter(|(_, pp)| *pp == Some(parent))
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// A process's usage (zeros for a process that is gone).
pub fn usage(pid: u32) -> Usage {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let cpu_ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 2..].to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the state field: utime is field 14 of stat, stime 15 (1-based, counting pid
            // and comm), so 11 and 12 here.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Usage {
        rss_kib: field(&status, "VmRSS:"),
        pss_kib: field(&rollup, "Pss:"),
        cpu_ticks,
    }
}

/// The overhead of the pod served by shim `shim`: the shim and everything below it except the
/// processes whose command line is `workload` (the containers' own processes).
pub fn pod_overhead(shim: u32, workload: &[&str]) -> (Usage, Vec<String>) {
    let mut total = Usage::default();
    let mut counted = Vec::new();
    for pid in tree(shim) {
        let args = cmdline(pid);
        if args == workload {
            continue;
        }
        let u = usage(pid);
        counted.push(format!(
            "{pid} {} ({} KiB RSS)",
            args.first().map(String::as_str).unwrap_or("?"),
            u.rss_kib
        ));
        total += u;
    }
    (total, counted)
}

/// Clock ticks per second.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}
