//! `start.oci`: the whole life of `/bin/true` through each runtime's own CLI (`runc run`,
//! `crun run`, `moat run --backend X --bundle`): create, start, wait, delete.

use crate::exec;
use crate::fixture::Limits;
use crate::results::Unit;
use crate::run::{Bench, limit};

/// Takes `plan.start_runs` samples per wall, round-robin, after one untimed warm-up run each (a
/// first `vm` run also builds the rootfs image; caches are warm for everybody after it).
pub fn oci(b: &mut Bench) {
    if b.walls.is_empty() {
        return;
    }
    let bundle = match b.fixture.bundle(&["/bin/true"], &Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            for w in &b.walls {
                b.results.fail("start.oci", w.kind.name(), e.to_string());
            }
            return;
        }
    };
    let runs = b.plan.start_runs;
    b.progress.add(runs * b.walls.len());
    let mut samples = vec![Vec::new(); b.walls.len()];
    for (i, w) in b.walls.iter().enumerate() {
        if let Err(e) = exec::run(
            &mut w.run_bundle(&bundle, "moat-bench-warm"),
            limit(b.place),
        ) {
            b.results.fail("start.oci", w.kind.name(), e);
            samples[i].clear();
        }
    }
    for r in 0..runs {
        for (i, w) in b.walls.iter().enumerate() {
            let id = format!("moat-bench-start-{r}");
            match exec::run(&mut w.run_bundle(&bundle, &id), limit(b.place)) {
                Ok(f) => samples[i].push(f.elapsed.as_secs_f64() * 1e3),
                Err(e) => b.results.fail("start.oci", w.kind.name(), e),
            }
            b.progress.step(&format!("start.oci {}", w.kind.name()));
        }
    }
    for (w, s) in b.walls.iter().zip(samples) {
        b.results
            .add_samples("start.oci", w.kind.name(), b.place, Unit::Ms, &s);
    }
}
