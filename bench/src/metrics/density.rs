//! `density.<K>.ready` and `density.<K>.rss_per`: K sandboxes of one wall started at once (each
//! `moat-bench-probe idle`), the time until every one of them said ready, and their host RSS divided by
//! K. One sample per (wall, K): the walls take turns at each K.

use std::time::{Duration, Instant};

use crate::exec::{self, Running};
use crate::fixture::{Limits, PROBE};
use crate::metrics::catalogue::{density_ready, density_rss};
use crate::results::Unit;
use crate::run::{Bench, limit};

/// Starts K sandboxes per wall for every K of the plan.
pub fn measure(b: &mut Bench) {
    if b.walls.is_empty() {
        return;
    }
    let bundle = match b.fixture.bundle(&[PROBE, "idle"], &Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            for w in &b.walls {
                b.results.fail("density", w.kind.name(), e.to_string());
            }
            return;
        }
    };
    let ks = b.plan.density.clone();
    b.progress.add(ks.len() * b.walls.len());
    for k in ks {
        for w in &b.walls {
            let name = w.kind.name();
            let started = Instant::now();
            let mut running = Vec::with_capacity(k);
            let mut why = None;
            for i in 0..k {
                match Running::spawn(&mut w.run_bundle(&bundle, &format!("moat-bench-d{k}-{i}"))) {
                    Ok(r) => running.push(r),
                    Err(e) => {
                        why = Some(e);
                        break;
                    }
                }
            }
            // Generous: K sandboxes share the machine's cores.
            let budget = limit(b.place) + Duration::from_secs(5 * k as u64);
            let mut ready = 0;
            for r in &mut running {
                match r.wait_ready(budget.saturating_sub(started.elapsed())) {
                    Ok(_) => ready += 1,
                    Err(e) => {
                        why.get_or_insert(e);
                    }
                }
            }
            let all = started.elapsed();
            if let Some(e) = why.filter(|_| ready < k) {
                b.results.fail(
                    &density_ready(k),
                    name,
                    format!("{ready} of {k} became ready: {e}"),
                );
            } else {
                let pids: Vec<u32> = running.iter().flat_map(|r| exec::tree(r.pid())).collect();
                let m = exec::memory(&pids);
                let (p, res) = (b.place, &mut b.results);
                res.add_samples(
                    &density_ready(k),
                    name,
                    p,
                    Unit::Ms,
                    &[all.as_secs_f64() * 1e3],
                );
                res.add_samples(&density_rss(k), name, p, Unit::Mib, &[m.rss_mib / k as f64]);
            }
            for r in running {
                r.stop(Duration::from_secs(20));
            }
            b.progress.step(&format!("density K={k} {name}"));
        }
    }
}
