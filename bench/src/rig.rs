//! The `vm` and `qemu` rows on a host whose `/dev/kvm` cannot run a Linux guest: a second
//! `moat bench --inside-rig` measures them inside the KVM rig (`moat-rig run`), writes its
//! `results.json` into `<out>/rig/`, and its rows join this run's, every one labelled `rig`.

use std::process::Command;

use crate::results::{Place, Results, RigMachine};
use crate::run::Bench;
use crate::walls::{self, Kind};

/// Measures `kinds` inside the rig and merges what it found; a rig that cannot run leaves each
/// kind recorded as missing, with the reason.
pub fn measure(b: &mut Bench, kinds: &[Kind]) {
    let why_here = moat_host::kvm::probe().explanation;
    let missing = |b: &mut Bench, why: String| {
        for &k in kinds {
            b.results.backends.push(walls::missing(
                k,
                Place::Rig,
                format!("no KVM for Linux guests here ({why_here}); {why}"),
            ));
        }
    };
    let Some(rig) = b
        .opts
        .moat
        .parent()
        .map(|d| d.join("moat-rig"))
        .filter(|p| p.is_file())
    else {
        missing(
            b,
            "and moat-rig (beside moat) is not built to measure it in the KVM rig".into(),
        );
        return;
    };
    let out = b.opts.out.join("rig");
    if let Err(e) = std::fs::create_dir_all(&out) {
        missing(b, format!("cannot create {}: {e}", out.display()));
        return;
    }
    let out = out.canonicalize().unwrap_or(out);
    let _ = std::fs::remove_file(out.join("results.json"));
    let names = walls::names(kinds);
    b.progress.note(&format!(
        "{}: measuring them inside the KVM rig (QEMU TCG + kvm_amd; minutes)",
        names
    ));
    // One vCPU: with two, L1 (multi-threaded TCG emulating SVM) stalled now and then for good,
    // in about a third of the runs here; the test suite's rig runs use one and do not. L1 may
    // still stall: its own time limit
    // bounds the run, and a run that hits it leaves the rows missing with that reason. A full run
    // starts up to 50 VMs at once: more memory. containerd's overlayfs snapshotter (`start.ctr`,
    // `start.cri`) needs L1's `overlay` module.
    let (mem, timeout) = if b.opts.quick {
        ("4G", "900")
    } else {
        ("8G", "3600")
    };
    let mut c = Command::new(&rig);
    c.args(["run", "--smp", "1", "--mem", mem, "--timeout", timeout])
        .args(["--module", "overlay"])
        .arg("--rw")
        .arg(moat_artifacts::cache::root())
        .arg("--rw")
        .arg(&out)
        .arg("--keep-log")
        .arg(out.join("console.log"))
        .arg("--env")
        .arg(format!("MOAT_BENCH_PROBE={}", b.probe.display()))
        .arg("--")
        .arg(&b.opts.moat)
        .args(["bench", "--inside-rig", "--backends", &names])
        .arg("--out")
        .arg(&out);
    if b.opts.quick {
        c.arg("--quick");
    }
    if let Some(n) = b.opts.runs {
        c.args(["--runs", &n.to_string()]);
    }
    let status = match c.status() {
        Ok(s) => s,
        Err(e) => {
            missing(b, format!("cannot start {}: {e}", rig.display()));
            return;
        }
    };
    let json = out.join("results.json");
    let inner: Results = match std::fs::read_to_string(&json)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            missing(
                b,
                format!(
                    "the rig run ended with {status} and left no results ({}: {e})",
                    json.display()
                ),
            );
            return;
        }
    };
    if !status.success() {
        for &k in kinds {
            b.results.fail(
                "rig",
                k.name(),
                format!(
                    "the rig run ended with {status} before it finished (L1's console: {}): \
                     the rows it had not measured by then are missing",
                    out.join("console.log").display()
                ),
            );
        }
    }
    b.results.machine.rig = Some(RigMachine {
        kernel: inner.machine.kernel.clone(),
        cpu: inner.machine.cpu.clone(),
        cpus: inner.machine.cpus,
    });
    b.results.merge(inner);
}
