//! `start.ctr` and `start.cri`: starting a container the way containerd users and kubelet do, so
//! the shims are compared and not only the runtimes' CLIs. `ctr run --rm` of busybox `/bin/true`
//! with `io.containerd.runc.v2` and with `io.containerd.moat.v2` (ns, trace and vm handler
//! configs), and a CRI pod start (RunPodSandbox + CreateContainer + StartContainer) per
//! RuntimeClass handler.
//!
//! Both run in a private containerd from `moat-testkit` (a workspace test-helper crate, used here
//! on purpose: its daemon has its own root, state, socket and config in a temp dir, never the
//! system's, and its teardown kills, unmounts and removes whatever the runs left behind). The CRI
//! calls go through `k8s-cri`, the workspace's small CRI client. The `vm` handler runs wherever
//! the `vm` wall does: on a host whose KVM runs Linux guests, or in the rig's half of the run
//! (where containerd's overlayfs snapshotter needs L1's `overlay` module, which [`crate::rig`]
//! asks for), with fewer rounds there: a pod start takes seconds in the rig.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::{Cri, container_config, pod_config};
use moat_artifacts::image::BUSYBOX_REF;
use moat_testkit::containerd::{Containerd, Cri as CriPlugin, Options, Runtime};

use crate::results::{Place, Unit};
use crate::run::Bench;
use crate::walls::Kind;

/// `ctr run --rm` of busybox `/bin/true`.
const CTR: &str = "start.ctr";
/// RunPodSandbox + CreateContainer + StartContainer.
const CRI: &str = "start.cri";
/// The shim binary containerd runs for [`MOAT_RUNTIME`]; it is looked for beside `moat`.
const SHIM: &str = "containerd-shim-moat-v2";
/// moat's runtime type.
const MOAT_RUNTIME: &str = "io.containerd.moat.v2";
/// runc's runtime type (its shim runs the `runc` binary).
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The VMM the vm handler runs; it is looked for beside `moat`.
const VMM: &str = "moat-vmm";
/// Untimed `ctr run` rounds before the timed ones (the first also unpacks the image); one in the
/// rig, where each costs seconds.
const CTR_WARM_UP: usize = 2;
/// Untimed pod rounds before the timed ones.
const CRI_WARM_UP: usize = 1;
/// At most this many timed pod rounds (a pod start costs several `ctr run`s).
const CRI_MAX_ROUNDS: usize = 10;
/// The trace handler's policy: the built-in one, as `start.oci`'s `moat run --backend trace`
/// (no `--policy`) uses it, so the two rows differ only in the path to the wall.
const TRACE_POLICY: &str = "# moat bench: the built-in policy, unrefined.\nbase = \"default\"\n";

/// How long the private containerd may take to answer: in the rig, L1 runs 16-20x slower.
const RIG_START_TIMEOUT: Duration = Duration::from_secs(180);

/// One backend measured through containerd.
struct Target {
    /// runc, ns, trace or vm.
    kind: Kind,
    /// The moat handler config (`None` for runc).
    config: Option<PathBuf>,
}

impl Target {
    /// The backend name in the results.
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The CRI RuntimeClass handler: `runc` (always registered), `moat-ns`, `moat-trace`,
    /// `moat-vm`.
    fn handler(&self) -> String {
        match self.config {
            Some(_) => format!("moat-{}", self.kind.name()),
            None => "runc".into(),
        }
    }

    /// `ctr run --rm` of busybox `/bin/true` as container `id`.
    fn ctr_args(&self, id: &str) -> Vec<String> {
        let mut a = vec!["run".to_string(), "--rm".into(), "--runtime".into()];
        match &self.config {
            Some(c) => a.extend([
                MOAT_RUNTIME.into(),
                "--runtime-config-path".into(),
                c.display().to_string(),
            ]),
            None => a.push(RUNC_RUNTIME.into()),
        }
        a.extend([BUSYBOX_REF.into(), id.into(), "/bin/true".into()]);
        a
    }
}

/// Takes `start.ctr` and `start.cri` for the admitted runc, ns, trace and vm walls, or records for
/// each why containerd cannot run here.
pub fn start(b: &mut Bench) {
    let kinds: Vec<Kind> = b
        .walls
        .iter()
        .map(|w| w.kind)
        .filter(|k| matches!(k, Kind::Runc | Kind::Ns | Kind::Trace | Kind::Vm))
        .collect();
    if kinds.is_empty() {
        return;
    }
    if let Some(why) = moat_testkit::containerd::unavailable() {
        for k in &kinds {
            b.results.fail(CTR, k.name(), why.clone());
            b.results.fail(CRI, k.name(), why.clone());
        }
        return;
    }
    // containerd finds shims on its PATH: put moat's own directory first, so the shim built with
    // this `moat` is the one measured (not an installed one, nor one where cargo's tests look).
    let moat_dir = b
        .opts
        .moat
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let shim = moat_dir.join(SHIM);
    let dir = b.fixture.dir().join("containerd-handlers");
    let mut targets = Vec::new();
    for kind in kinds {
        if kind == Kind::Runc {
            targets.push(Target { kind, config: None });
            continue;
        }
        let config = if shim.is_file() {
            handler_config(&dir, kind, &moat_dir)
        } else {
            Err(format!(
                "no {SHIM} beside moat ({} is missing): build it (cargo build --release -p {SHIM})",
                shim.display()
            ))
        };
        match config {
            Ok(c) => targets.push(Target {
                kind,
                config: Some(c),
            }),
            Err(why) => {
                b.results.fail(CTR, kind.name(), why.clone());
                b.results.fail(CRI, kind.name(), why);
            }
        }
    }
    if targets.is_empty() {
        return;
    }
    ctr(b, &targets, &moat_dir);
    cri(b, &targets, &moat_dir);
}

/// Writes `<dir>/<kind>.toml` (and the trace policy beside it); returns its path. The vm handler
/// boots moat's built guest kernel and initramfs with the `moat-vmm` in `moat_dir`, with the
/// shim's default size and spare disks, as `shim/examples/vm.toml` does.
fn handler_config(dir: &Path, kind: Kind, moat_dir: &Path) -> Result<PathBuf, String> {
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|e| format!("writing {}: {e}", p.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let text = match kind {
        Kind::Trace => {
            let policy = dir.join("trace-policy.toml");
            write(&policy, TRACE_POLICY)?;
            format!(
                "backend = \"trace\"\n[trace]\npolicy = {:?}\n",
                policy.display().to_string()
            )
        }
        Kind::Vm => {
            let (kernel, initramfs) = guest()?;
            let vmm = moat_dir.join(VMM);
            if !vmm.is_file() {
                return Err(format!(
                    "no {VMM} beside moat ({} is missing): build it (cargo build --release -p {VMM})",
                    vmm.display()
                ));
            }
            format!(
                "backend = \"vm\"\n[vm]\nkernel = {:?}\ninitramfs = {:?}\nvmm = {:?}\n",
                kernel.display().to_string(),
                initramfs.display().to_string(),
                vmm.display().to_string()
            )
        }
        _ => format!("backend = {:?}\n", kind.name()),
    };
    let path = dir.join(format!("{}.toml", kind.name()));
    write(&path, &text)?;
    Ok(path)
}

/// moat's built guest kernel and initramfs, or why they are missing.
fn guest() -> Result<(PathBuf, PathBuf), String> {
    use moat_artifacts::{guest, kernel};
    match (kernel::status(), guest::status()) {
        (kernel::Status::Built(k), guest::Status::Built(g)) => Ok((k.vmlinux, g.initramfs)),
        (kernel::Status::NotBuilt { reason, .. }, _) | (_, guest::Status::NotBuilt { reason }) => {
            Err(format!("the guest is not built ({reason})"))
        }
    }
}

/// The private containerd's options: the shims in `shim_dir` first on its `PATH`, and in the rig
/// a longer wait for it to answer.
fn options(b: &Bench, shim_dir: &Path) -> Options {
    Options {
        path: vec![shim_dir.to_path_buf()],
        start_timeout: (b.place == Place::Rig).then_some(RIG_START_TIMEOUT),
        ..Options::default()
    }
}

/// Starts a private containerd with `opts` and imports the busybox and pause images into it.
fn containerd(opts: Options) -> Result<Containerd, String> {
    let ctd = Containerd::start(opts).map_err(|e| format!("starting a private containerd: {e}"))?;
    ctd.import_test_images()
        .map_err(|e| format!("importing the test images: {e}"))?;
    Ok(ctd)
}

/// Stops `ctd` and removes its temp dir, noting whatever its teardown had to force.
fn stop(b: &Bench, ctd: Containerd) {
    let report = ctd.shutdown();
    if !report.is_clean() {
        b.progress
            .note(&format!("containerd teardown had to clean up: {report:?}"));
    }
}

/// Records `why` for every target of `metric`.
fn fail_all(b: &mut Bench, metric: &str, targets: &[Target], why: &str) {
    for t in targets {
        b.results.fail(metric, t.name(), why);
    }
}

/// Milliseconds since `t`.
fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `start.ctr`: warm-up rounds (one in the rig), then `plan.start_runs` rounds, one run of each
/// target per round. A target that fails once is recorded and left out of the rest (and gets no
/// row).
fn ctr(b: &mut Bench, targets: &[Target], shim_dir: &Path) {
    let ctd = match containerd(options(b, shim_dir)) {
        Ok(c) => c,
        Err(why) => return fail_all(b, CTR, targets, &why),
    };
    let warm_up = match b.place {
        Place::Host => CTR_WARM_UP,
        Place::Rig => 1,
    };
    let rounds = warm_up + b.plan.start_runs;
    b.progress.add(rounds * targets.len());
    let mut samples: Vec<Option<Vec<f64>>> = vec![Some(Vec::new()); targets.len()];
    for r in 0..rounds {
        for (t, s) in targets.iter().zip(samples.iter_mut()) {
            b.progress.step(&format!("{CTR} {}", t.name()));
            let Some(taken) = s else { continue };
            let id = format!("moat-bench-{}-{r}", t.name());
            let started = Instant::now();
            match ctd.ctr_ok(&t.ctr_args(&id)) {
                Ok(_) if r >= warm_up => taken.push(ms_since(started)),
                Ok(_) => {}
                Err(e) => {
                    b.results.fail(CTR, t.name(), e.to_string());
                    *s = None;
                }
            }
        }
    }
    stop(b, ctd);
    for (t, s) in targets.iter().zip(samples) {
        if let Some(s) = s {
            b.results.add_samples(CTR, t.name(), b.place, Unit::Ms, &s);
        }
    }
}

/// `start.cri`: one warm-up round, then `min(start_runs, 10)` rounds (3 in a quick rig run), one
/// pod of each handler per round, each stopped and removed before the next. A handler that fails
/// once is left out.
fn cri(b: &mut Bench, targets: &[Target], shim_dir: &Path) {
    let mut plugin = CriPlugin::default();
    for t in targets {
        if let Some(c) = &t.config {
            plugin.runtimes.push(Runtime::moat(&t.handler(), c));
        }
    }
    let opts = Options {
        cri: Some(plugin),
        namespace: Some("k8s.io".into()),
        ..options(b, shim_dir)
    };
    let ctd = match containerd(opts) {
        Ok(c) => c,
        Err(why) => return fail_all(b, CRI, targets, &why),
    };
    let mut client = match Cri::connect(ctd.address()) {
        Ok(c) => c,
        Err(e) => {
            stop(b, ctd);
            return fail_all(b, CRI, targets, &e.to_string());
        }
    };
    let rounds = CRI_WARM_UP + b.plan.start_runs.min(CRI_MAX_ROUNDS);
    b.progress.add(rounds * targets.len());
    let mut samples: Vec<Option<Vec<f64>>> = vec![Some(Vec::new()); targets.len()];
    for r in 0..rounds {
        for (t, s) in targets.iter().zip(samples.iter_mut()) {
            b.progress.step(&format!("{CRI} {}", t.name()));
            let Some(taken) = s else { continue };
            match pod_start(&mut client, &ctd, &t.handler(), r) {
                Ok(ms) if r >= CRI_WARM_UP => taken.push(ms),
                Ok(_) => {}
                Err(why) => {
                    b.results.fail(CRI, t.name(), why);
                    *s = None;
                }
            }
        }
    }
    drop(client);
    stop(b, ctd);
    for (t, s) in targets.iter().zip(samples) {
        if let Some(s) = s {
            b.results.add_samples(CRI, t.name(), b.place, Unit::Ms, &s);
        }
    }
}

/// Starts a pod running busybox `sleep 100` with `handler` and returns how long that took (ms);
/// the pod is stopped and removed again either way.
fn pod_start(cri: &mut Cri, ctd: &Containerd, handler: &str, round: usize) -> Result<f64, String> {
    let name = format!("bench-{handler}-{round}");
    let mut cfg = pod_config(&name, &format!("uid-{name}"), "default", HashMap::new());
    if let Some(l) = cfg.linux.as_mut() {
        l.cgroup_parent = ctd.cgroup_parent();
    }
    let started = Instant::now();
    let pod = cri
        .run_pod_sandbox(cfg.clone(), handler)
        .map_err(|e| e.to_string())?;
    let app = container_config("app", BUSYBOX_REF, &["sleep", "100"]);
    let took = cri
        .create_container(&pod, app, cfg)
        .and_then(|c| cri.start_container(&c))
        .map(|()| ms_since(started))
        .map_err(|e| e.to_string());
    let removed = cri
        .stop_pod_sandbox(&pod)
        .and_then(|()| cri.remove_pod_sandbox(&pod))
        .map_err(|e| format!("removing the pod: {e}"));
    let took = took?;
    removed.map(|()| took)
}
