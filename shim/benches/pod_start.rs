//! Start-up numbers for the shim, side by side with runc's shim in the same private containerd:
//!
//! - `ctr run --rm` of busybox `/bin/true`: `io.containerd.moat.v2` (ns) vs `io.containerd.runc.v2`;
//! - CRI pod start (RunPodSandbox + CreateContainer + StartContainer) per moat handler, and runc.
//!
//! Medians over `MOAT_BENCH_RUNS` runs (default 20), runtimes interleaved so drift hits both.
//! Run: `cargo bench -p containerd-shim-moat-v2 --bench pod_start` (needs root and containerd).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Handlers, RUNTIME, containerd};
use k8s_cri::{Cri, container_config, pod_config};
use moat_artifacts::image::BUSYBOX_REF;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if let Some(why) = moat_testkit::containerd::unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let runs: usize = std::env::var("MOAT_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    let Some(ns_cfg) = handlers
        .config(moat_backend::BackendKind::Ns)
        .map(|p| p.to_owned())
    else {
        eprintln!("SKIPPED: the ns backend is not usable here");
        return;
    };
    let ns_cfg = ns_cfg.to_str().unwrap().to_string();

    // ctr run --rm /bin/true
    let ctd = containerd(&handlers, false);
    let mut moat = Vec::new();
    let mut runc = Vec::new();
    for i in 0..runs + 2 {
        let t = Instant::now();
        ctd.ctr_ok(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--runtime-config-path",
            &ns_cfg,
            BUSYBOX_REF,
            &format!("bm{i}"),
            "/bin/true",
        ])
        .unwrap();
        let m = t.elapsed();
        let t = Instant::now();
        ctd.ctr_ok(&["run", "--rm", BUSYBOX_REF, &format!("br{i}"), "/bin/true"])
            .unwrap();
        let r = t.elapsed();
        if i >= 2 {
            moat.push(m);
            runc.push(r);
        }
    }
    let (m, r) = (median(moat), median(runc));
    println!("ctr run --rm busybox /bin/true, median of {runs}:");
    println!("  io.containerd.moat.v2 (ns)  {}", ms(m));
    println!("  io.containerd.runc.v2       {}", ms(r));
    println!(
        "  ratio moat/runc             {:.2}",
        m.as_secs_f64() / r.as_secs_f64()
    );
    drop(ctd);

    // CRI pod start per handler.
    let ctd = containerd(&handlers, true);
    let mut cri = Cri::connect(ctd.address()).unwrap();
    let mut names: Vec<String> = handlers
        .usable
        .iter()
        .map(|(k, _)| k.handler().to_string())
        .collect();
    names.push("runc".into());
    let mut times: HashMap<String, Vec<Duration>> = HashMap::new();
    let pod_runs = runs.min(10);
    for i in 0..pod_runs + 1 {
        for h in &names {
            let mut cfg = pod_config(
                &format!("{h}-{i}"),
                &format!("uid-{h}-{i}"),
                "default",
                HashMap::new(),
            );
            if let Some(l) = cfg.linux.as_mut() {
                l.cgroup_parent = ctd.cgroup_parent();
            }
            let t = Instant::now();
            let pod = cri.run_pod_sandbox(cfg.clone(), h).unwrap();
            let c = cri
                .create_container(
                    &pod,
                    container_config("app", BUSYBOX_REF, &["sleep", "100"]),
                    cfg,
                )
                .unwrap();
            cri.start_container(&c).unwrap();
            let d = t.elapsed();
            if i > 0 {
                times.entry(h.clone()).or_default().push(d);
            }
            cri.stop_pod_sandbox(&pod).unwrap();
            cri.remove_pod_sandbox(&pod).unwrap();
        }
    }
    println!(
        "CRI pod start (RunPodSandbox + CreateContainer + StartContainer), median of {pod_runs}:"
    );
    for h in &names {
        println!(
            "  {h:<12} {}",
            ms(median(times.remove(h).unwrap_or_default()))
        );
    }
    for (kind, why) in &handlers.skipped {
        println!("  {:<12} skipped: {why}", kind.handler());
    }
}
