//! `syscall.getpid` and `syscall.openat_close`: the per-call cost inside each sandbox, from the
//! probe's own loop (N calls, wall time / N). getpid is never trapped by a policy; openat is —
//! under `trace` every call stops in the supervisor, so it makes fewer calls there.

use crate::exec;
use crate::fixture::{ALLOWED_FILE, Limits, PROBE};
use crate::metrics::value;
use crate::results::Unit;
use crate::run::{Bench, limit};
use crate::walls::Kind;

/// Takes `plan.syscall_runs` samples of both calls per wall, round-robin.
pub fn cost(b: &mut Bench) {
    if b.walls.is_empty() {
        return;
    }
    let runs = b.plan.syscall_runs;
    b.progress.add(runs * b.walls.len() * 2);
    let getpid = b.plan.getpid_calls.to_string();
    let bundles: Vec<_> = b
        .walls
        .iter()
        .map(|w| {
            let n = if w.kind == Kind::Trace {
                b.plan.open_calls_trapped
            } else {
                b.plan.open_calls
            };
            let open = b.fixture.bundle(
                &[PROBE, "open", ALLOWED_FILE, &n.to_string()],
                &Limits::default(),
            );
            let pid = b
                .fixture
                .bundle(&[PROBE, "getpid", &getpid], &Limits::default());
            (pid, open)
        })
        .collect();
    for r in 0..runs {
        for (w, (pid, open)) in b.walls.iter().zip(&bundles) {
            for (metric, bundle) in [("syscall.getpid", pid), ("syscall.openat_close", open)] {
                let id = format!("moat-bench-sys-{r}");
                let got = bundle
                    .as_ref()
                    .map_err(|e| e.to_string())
                    .and_then(|d| exec::run(&mut w.run_bundle(d, &id), limit(b.place)))
                    .and_then(|f| {
                        value(&f.stdout, "ns/call")
                            .ok_or_else(|| format!("the probe printed no ns/call: {}", f.stdout))
                    });
                match got {
                    Ok(v) => b
                        .results
                        .add_samples(metric, w.kind.name(), b.place, Unit::Ns, &[v]),
                    Err(e) => b.results.fail(metric, w.kind.name(), e),
                }
                b.progress.step(&format!("{metric} {}", w.kind.name()));
            }
        }
    }
}
