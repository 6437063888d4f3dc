//! `moat bench` end to end on the walls that run on any Linux host (runc, crun, ns, trace), with
//! one repetition: every output is written, every asked-for backend is either measured or listed
//! with the reason it could not be, and the isolation cells come from the probe (the host's own
//! kernel release seen in ns, /proc/kcore refused). Timings are not checked: they belong to the
//! benchmark, not to a pass/fail test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use moat_bench::results::{Place, Results};
use moat_testkit::LeakCheck;

#[test]
fn a_quick_bench_writes_every_output_and_accounts_for_every_backend() {
    if !moat_testkit::is_root() {
        eprintln!("SKIPPED: moat bench needs root (it runs containers)");
        return;
    }
    let leaks = LeakCheck::new();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args([
            "bench",
            "--quick",
            "--runs",
            "1",
            "--backends",
            "runc,crun,ns,trace",
        ])
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "moat bench failed: {}{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results: Results =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results.schema, moat_bench::results::SCHEMA);

    // Every backend asked for is accounted for: measured, or missing with a reason.
    for name in ["runc", "crun", "ns", "trace"] {
        let b = results
            .backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the results: {:?}", results.backends));
        assert!(
            b.usable || b.why.as_deref().is_some_and(|w| !w.is_empty()),
            "{b:?}"
        );
        assert_eq!(b.place, Place::Host);
    }
    // moat's own walls run here, and every metric of theirs was taken.
    for name in ["ns", "trace"] {
        let b = results.backends.iter().find(|b| b.name == name).unwrap();
        assert!(b.usable, "{name} did not run: {:?}", b.why);
        for metric in [
            "start.oci",
            "syscall.getpid",
            "syscall.openat_close",
            "io.rootfs.write",
            "io.tmpfs.read",
            "memory.rss",
            "memory.pss",
            "density.5.ready",
            "density.10.rss_per",
        ] {
            let m = results.metric(metric, name).unwrap_or_else(|| {
                panic!(
                    "{metric} missing for {name}; failures: {:?}",
                    results.failures
                )
            });
            assert!(m.stats.n >= 1 && m.stats.median > 0.0, "{m:?}");
        }
    }

    // The isolation cells are observations: ns shares this kernel, and masks /proc/kcore.
    let cell = |probe: &str, backend: &str| {
        results
            .isolation
            .iter()
            .find(|p| p.probe == probe && p.backend == backend)
            .unwrap_or_else(|| panic!("no {probe} cell for {backend}: {:?}", results.isolation))
            .clone()
    };
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let k = cell("kernel", "ns");
    assert_eq!(k.isolated, Some(false), "{k:?}");
    assert!(k.observed.contains(host_kernel.trim()), "{k:?}");
    for backend in ["ns", "trace"] {
        for probe in [
            "proc_keys",
            "host_pids",
            "fork_bomb",
            "memory_limit",
            "keyctl",
        ] {
            let c = cell(probe, backend);
            assert_eq!(c.isolated, Some(true), "{c:?}");
        }
        // Some kernels have no /proc/kcore at all: then the probe cannot decide, never "open".
        let c = cell("proc_kcore", backend);
        assert_ne!(c.isolated, Some(false), "{c:?}");
    }

    // The report and the plots.
    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(
        md.contains("## Start latency") && md.contains("## Isolation"),
        "{md}"
    );
    assert!(
        stdout.contains("## Start latency"),
        "the table goes to stdout too"
    );
    for svg in ["start-latency.svg", "syscall-cost.svg"] {
        let text =
            std::fs::read_to_string(out.path().join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(text.contains("<svg") && text.contains("ns"), "{svg}");
    }
    drop(out);
    leaks.assert_clean();
}

#[test]
fn unknown_backends_are_refused_before_anything_runs() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("never");
    let run = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["bench", "--backends", "ns,gvisor", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("gvisor") && err.contains("runc,crun,ns,trace,vm,qemu"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing is created for a refused run");
}
