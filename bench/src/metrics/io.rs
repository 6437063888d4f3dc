//! `io.{rootfs,tmpfs}.{write,read}`: sequential throughput of one file (`plan.io_mib`, 1 MiB
//! blocks, fsync after writing) in the container's root file system and in a tmpfs at `/tmp`.
//! The read follows the write, so it is served from the page cache (the guest's, for `vm`): it
//! measures the path through the wall, not the disk.

use crate::exec;
use crate::fixture::{Limits, PROBE};
use crate::metrics::value;
use crate::results::Unit;
use crate::run::{Bench, limit};

/// Takes `plan.io_runs` samples per wall, round-robin.
pub fn throughput(b: &mut Bench) {
    if b.walls.is_empty() {
        return;
    }
    let mib = b.plan.io_mib;
    // The tmpfs pages are charged to the container (and fill a VM's RAM): room for the file twice.
    let limits = Limits {
        memory_mib: Some(2 * mib + 256),
        pids: None,
        tmpfs_mib: Some(mib + 16),
    };
    let m = mib.to_string();
    let script = format!(
        "echo rootfs; {PROBE} io / {m} || exit 1; echo tmpfs; {PROBE} io /tmp {m} || exit 1"
    );
    let bundle = b.fixture.bundle(&["/bin/sh", "-c", &script], &limits);
    let runs = b.plan.io_runs;
    b.progress.add(runs * b.walls.len());
    for r in 0..runs {
        for w in &b.walls {
            let id = format!("moat-bench-io-{r}");
            let got = bundle
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|d| exec::run(&mut w.run_bundle(d, &id), limit(b.place)));
            match got {
                Ok(f) => {
                    let (root, tmp) = f.stdout.split_once("tmpfs").unwrap_or((&f.stdout, ""));
                    for (place, part) in [("rootfs", root), ("tmpfs", tmp)] {
                        for dir in ["write", "read"] {
                            let metric = format!("io.{place}.{dir}");
                            match value(part, &format!("{dir}_mib_s")) {
                                Some(v) => b.results.add_samples(
                                    &metric,
                                    w.kind.name(),
                                    b.place,
                                    Unit::MibPerS,
                                    &[v],
                                ),
                                None => b.results.fail(
                                    &metric,
                                    w.kind.name(),
                                    format!("the probe printed no {dir}_mib_s"),
                                ),
                            }
                        }
                    }
                }
                Err(e) => {
                    for metric in [
                        "io.rootfs.write",
                        "io.rootfs.read",
                        "io.tmpfs.write",
                        "io.tmpfs.read",
                    ] {
                        b.results.fail(metric, w.kind.name(), e.clone());
                    }
                }
            }
            b.progress.step(&format!("io {}", w.kind.name()));
        }
    }
}
