//! `memory.rss` and `memory.pss`: the host memory of one idle sandbox (`moat-bench-probe idle`), summed
//! over every host process it consists of — the runtime process that waits for it (`runc run`,
//! `moat run`), a supervisor, a VMM with the guest RAM it touched, and the container's own
//! processes. For `vm`, `memory.vmm_overhead` is moat-vmm's RSS without the guest RAM.

use std::time::Duration;

use crate::exec::{self, Running};
use crate::fixture::{Limits, PROBE};
use crate::metrics::boot::overhead_mib;
use crate::results::Unit;
use crate::run::{Bench, limit};
use crate::walls::Kind;

/// How long a sandbox sits idle after saying ready before it is measured.
const SETTLE: Duration = Duration::from_millis(500);

/// Takes `plan.memory_runs` samples per wall, round-robin.
pub fn idle(b: &mut Bench) {
    if b.walls.is_empty() {
        return;
    }
    let bundle = b.fixture.bundle(&[PROBE, "idle"], &Limits::default());
    let runs = b.plan.memory_runs;
    b.progress.add(runs * b.walls.len());
    for r in 0..runs {
        for w in &b.walls {
            let name = w.kind.name();
            let id = format!("moat-bench-idle-{r}");
            let got = bundle
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|d| Running::spawn(&mut w.run_bundle(d, &id)))
                .and_then(|mut s| match s.wait_ready(limit(b.place)) {
                    Ok(_) => {
                        std::thread::sleep(SETTLE);
                        let pids = exec::tree(s.pid());
                        let m = exec::memory(&pids);
                        let vmm = (w.kind == Kind::Vm)
                            .then(|| pids.iter().find(|p| comm(**p) == "moat-vmm").copied())
                            .flatten()
                            .and_then(overhead_mib);
                        s.stop(Duration::from_secs(10));
                        Ok((m, vmm))
                    }
                    Err(e) => {
                        s.stop(Duration::from_secs(1));
                        Err(e)
                    }
                });
            match got {
                Ok((m, vmm)) => {
                    let (p, res) = (b.place, &mut b.results);
                    res.add_samples("memory.rss", name, p, Unit::Mib, &[m.rss_mib]);
                    res.add_samples("memory.pss", name, p, Unit::Mib, &[m.pss_mib]);
                    if let Some(o) = vmm {
                        res.add_samples("memory.vmm_overhead", name, p, Unit::Mib, &[o]);
                    }
                }
                Err(e) => b.results.fail("memory.rss", name, e),
            }
            b.progress.step(&format!("memory {name}"));
        }
    }
}

/// A process's `comm`.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
