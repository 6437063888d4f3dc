//! Per-call cost of an untrapped call (`getpid`) and a trapped one (`openat` of an allowed path +
//! `close`), side by side in one run: native, the ns wall, the trace wall, `strace -f` and
//! `strace -f --seccomp-bpf`. Each row runs the same static probe (`tests/probe/probe.rs`), which
//! loops N calls and prints ns/call; the median of several runs is reported.
//!
//! ```text
//! cargo build --release -p moat -p moat-trace
//! cargo run --release -p moat-trace --example syscall_cost -- [--moat PATH] [--runs 5] [--json FILE]
//! ```
//!
//! Needs root (containers), `strace` and `/bin/busybox` (the container's rootfs).

use std::path::{Path, PathBuf};
use std::process::Command;

struct Row {
    name: &'static str,
    /// Command prefix; the probe's arguments follow.
    prefix: Vec<String>,
    /// Where the probe is, as the command sees it.
    probe: String,
    /// The path opened by the trapped benchmark, as the command sees it.
    file: String,
    /// Calls per run, (getpid, openat): fewer where every call stops.
    n: (u64, u64),
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .find(|p| p.join("moat-trace").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let moat = arg(&args, "--moat").map_or_else(|| target.join("moat"), PathBuf::from);
    let runs: usize = arg(&args, "--runs")
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("moat-syscall-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let probe = build_probe(&dir);
    let rootfs = make_rootfs(&dir, &probe);
    let host_file = rootfs.join("etc/allowed").display().to_string();
    let run_in = |backend: &str| {
        vec![
            moat.display().to_string(),
            "run".into(),
            "--backend".into(),
            backend.into(),
            "--rootfs".into(),
            rootfs.display().to_string(),
            "--".into(),
        ]
    };
    let strace = |seccomp: bool| {
        let mut v: Vec<String> = [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=openat",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if seccomp {
            v.insert(2, "--seccomp-bpf".into());
        }
        v
    };
    let host = |name, prefix, n| Row {
        name,
        prefix,
        probe: probe.display().to_string(),
        file: host_file.clone(),
        n,
    };
    let inside = |name, prefix, n| Row {
        name,
        prefix,
        probe: "/bin/probe".into(),
        file: "/etc/allowed".into(),
        n,
    };
    let rows = vec![
        host("native", vec![], (2_000_000, 50_000)),
        inside("ns", run_in("ns"), (2_000_000, 50_000)),
        inside("trace", run_in("trace"), (2_000_000, 5_000)),
        host("strace -f", strace(false), (5_000, 5_000)),
        host("strace -f --seccomp-bpf", strace(true), (2_000_000, 5_000)),
    ];
    let mut results = Vec::new();
    println!("| | getpid ns/call | openat+close ns/call |");
    println!("|---|---:|---:|");
    for r in &rows {
        let g = median(runs, || one(r, &["bench", "getpid", &r.n.0.to_string()]));
        let o = median(runs, || {
            one(r, &["bench", "open", &r.file, &r.n.1.to_string()])
        });
        println!("| {} | {} | {} |", r.name, fmt(g), fmt(o));
        results.push((r.name, g, o));
    }
    let get = |n: &str| results.iter().find(|r| r.0 == n).map(|r| (r.1, r.2));
    if let (Some(ns), Some(tr), Some(nat), Some(st)) = (
        get("ns"),
        get("trace"),
        get("native"),
        get("strace -f --seccomp-bpf"),
    ) {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "n/a".into(),
        };
        println!();
        println!(
            "untrapped getpid: trace/ns {} (target <= 1.1x), trace/native {}",
            ratio(tr.0, ns.0),
            ratio(tr.0, nat.0)
        );
        println!(
            "trapped openat+close: trace/(strace -f --seccomp-bpf) {} (target <= 0.5x)",
            ratio(tr.1, st.1)
        );
    }
    if let Some(path) = arg(&args, "--json") {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(n, g, o)| serde_json::json!({"row": n, "getpid_ns": g, "openat_close_ns": o}))
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or_else(|e| eprintln!("writing {path}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("failed".into(), |v| format!("{v:.0}"))
}

fn median(runs: usize, mut f: impl FnMut() -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = (0..runs).filter_map(|_| f()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn one(r: &Row, probe_args: &[&str]) -> Option<f64> {
    let (prog, rest) = match r.prefix.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (r.probe.clone(), Vec::new()),
    };
    let mut c = Command::new(prog);
    c.args(rest);
    if !r.prefix.is_empty() {
        c.arg(&r.probe);
    }
    let out = c.args(probe_args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let v = s
        .lines()
        .find_map(|l| l.strip_prefix("ns/call "))
        .and_then(|v| v.trim().parse().ok());
    if v.is_none() {
        eprintln!(
            "{}: {:?} failed: {}{}",
            r.name,
            probe_args,
            s,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    v
}

fn build_probe(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.rs");
    let out = dir.join("probe");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let st = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "-O",
            "-C",
            "target-feature=+crt-static",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running rustc: {e}"));
    assert!(st.success(), "building the probe failed");
    out
}

/// A minimal busybox rootfs with the probe and a file to open.
fn make_rootfs(dir: &Path, probe: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(r.join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap_or_else(|e| panic!("busybox: {e}"));
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap_or_default();
    std::fs::copy(probe, r.join("bin/probe")).unwrap_or_else(|e| panic!("probe: {e}"));
    std::fs::write(r.join("etc/allowed"), "fine\n").unwrap_or_default();
    r
}
