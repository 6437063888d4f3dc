//! Times the full lifecycle of `/bin/true` (create, start, wait, delete) with moat-sandbox, and
//! the same bundle with `crun run` and `runc run` when they are installed.
//!
//! `cargo run --release -p moat-sandbox --example lifecycle_bench -- [ITERATIONS]` (as root).
//! Builds a busybox bundle in a temp dir (from /bin/busybox), with containerd's default spec.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::symlink;
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use moat_sandbox::{Container, CreateOptions, Stdio, defaults};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let bundle = tempfile::Builder::new()
        .prefix("moat-bench-")
        .tempdir()
        .unwrap();
    let rootfs = bundle.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "run", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for a in ["sh", "true"] {
        symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    let mut spec = defaults::spec("rootfs");
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(vec!["/bin/true".into()]));
    spec.set_process(Some(p));
    spec.set_hostname(Some("bench".into()));
    spec.save(bundle.path().join("config.json")).unwrap();
    let root = tempfile::Builder::new()
        .prefix("moat-bench-state-")
        .tempdir()
        .unwrap();

    let mut moat = Vec::with_capacity(n);
    let mut phases: [Vec<Duration>; 4] = Default::default();
    for i in 0..n {
        let t = Instant::now();
        let spec = moat_sandbox::load_spec(bundle.path()).unwrap();
        phases[0].push(t.elapsed());
        let c = Container::create(CreateOptions {
            root: root.path().into(),
            id: format!("bench-{i}"),
            bundle: bundle.path().into(),
            spec,
            stdio: Stdio::Null,
            extra_seccomp: Vec::new(),
        })
        .unwrap();
        phases[1].push(t.elapsed());
        c.start().unwrap();
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(c.pid(), std::ptr::null_mut(), 0) };
        phases[2].push(t.elapsed());
        c.delete(false).unwrap();
        moat.push(t.elapsed());
    }
    println!(
        "moat-sandbox  create+start+wait+delete: median {:?} over {n}",
        median(moat)
    );
    let names = ["load spec", "+ create", "+ start and exit", "(total)"];
    for (name, v) in names.iter().zip(phases) {
        if !v.is_empty() {
            println!("  {name:<18} {:?}", median(v));
        }
    }

    for runtime in ["crun", "runc"] {
        if Command::new(runtime).arg("--version").output().is_err() {
            println!("{runtime}: not installed");
            continue;
        }
        let state = tempfile::tempdir().unwrap();
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let st = Command::new(runtime)
                .arg("--root")
                .arg(state.path())
                .args(["run", "--bundle"])
                .arg(bundle.path())
                .arg(format!("b{i}"))
                .stdin(PStdio::null())
                .stdout(PStdio::null())
                .stderr(PStdio::inherit())
                .status()
                .unwrap();
            if !st.success() {
                println!("{runtime} run failed on this host (see its message above)");
                break;
            }
            times.push(t.elapsed());
        }
        if times.is_empty() {
            continue;
        }
        println!(
            "{runtime:<13} run (same bundle):           median {:?} over {n}",
            median(times)
        );
    }
}
