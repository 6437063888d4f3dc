//! From a node's containerd config to running pods: `moat install --prefix` merges moat's runtimes
//! into a copy of containerd's default config, a private containerd is started from that file, and
//! one pod per handler (ns, trace) runs through the CRI with the installed shim, handler configs
//! and trace policy. Each pod's fixed overhead (the shim and what runs below it besides the
//! workload) is measured and held to the RuntimeClass's `overhead.podFixed`. Then `moat
//! uninstall` puts the config back byte for byte and nothing is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod install_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use install_common::{
    Prefix, assert_same_tree, moat_ok, pod_fixed_memory_mib, procs, require_binaries,
};
use k8s_cri::{Cri, container_config, pod_config};
use moat::install::containerd_config::ignores_runtime_path;
use moat::install::install_plan::containerd_release;
use moat_artifacts::image::BUSYBOX_REF;
use moat_backend::BackendKind;
use moat_testkit::containerd::Cri as CriOptions;
use moat_testkit::{Containerd, LeakCheck, Options, skip_if};

/// The containers' own command: excluded from the pod's overhead.
const WORKLOAD: [&str; 2] = ["sleep", "1000"];

/// `containerd config default`, the config a node starts from.
fn containerd_default_config() -> String {
    let out = std::process::Command::new("containerd")
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Measures the idle pod served by the only shim of `ctd`: its RSS/PSS, and CPU over 2 s.
fn measure(ctd: &Containerd, handler: &str) -> procs::Usage {
    let shims = procs::shim_pids(ctd.address());
    assert_eq!(shims.len(), 1, "{handler}: one shim per pod: {shims:?}");
    std::thread::sleep(Duration::from_millis(500));
    let (first, _) = procs::pod_overhead(shims[0], &WORKLOAD);
    std::thread::sleep(Duration::from_secs(2));
    let (mut u, counted) = procs::pod_overhead(shims[0], &WORKLOAD);
    let millicores =
        (u.cpu_ticks.saturating_sub(first.cpu_ticks)) * 1000 / (2 * procs::clock_ticks());
    eprintln!(
        "overhead of an idle {handler} pod: {:.1} MiB RSS, {:.1} MiB PSS, {millicores}m CPU over 2 s; \
         counted: {}",
        u.rss_kib as f64 / 1024.0,
        u.pss_kib as f64 / 1024.0,
        counted.join(", ")
    );
    u.cpu_ticks = millicores;
    u
}

#[test]
fn pods_run_on_each_handler_from_the_installed_containerd_config() {
    skip_if!(moat_testkit::containerd::unavailable());
    require_binaries();
    use moat_rig::harness::{Place, place};
    let mut kinds = vec![BackendKind::Ns, BackendKind::Trace];
    if place() == Place::Here {
        kinds.push(BackendKind::Vm);
    }
    install_and_run(&kinds);
}

/// The moat-vm handler from the installed config, where `/dev/kvm` cannot run guests: inside the
/// KVM rig (with L1's overlay module for containerd's snapshotter). Elsewhere the test above runs
/// it directly.
#[test]
fn a_vm_pod_from_the_installed_containerd_config_in_the_rig() {
    use moat_rig::harness::{Place, inside_rig, place};
    skip_if!(moat_testkit::containerd::unavailable());
    if place() == Place::Here && !inside_rig() {
        moat_testkit::skip!("hardware KVM: the test above runs the moat-vm pod");
    }
    if !inside_rig()
        && let Err(why) = moat_backend::vm::check::built_artifacts()
    {
        moat_testkit::skip!("the guest artifacts are not built: {why}");
    }
    require_binaries();
    if inside_rig() {
        install_and_run(&[BackendKind::Vm]);
        return;
    }
    // Held on the host while L1 runs: the other test's leak check would count L1's QEMU.
    let leaks = LeakCheck::new();
    moat_rig::harness::run_in_rig_with_modules(&["overlay"], || {});
    leaks.assert_clean();
}

/// Installs into a copy of containerd's default config, starts a private containerd from it, runs
/// one pod per handler in `kinds` through the CRI, then uninstalls and checks the restore.
fn install_and_run(kinds: &[BackendKind]) {
    let leaks = LeakCheck::new();
    let original = containerd_default_config();
    let p = Prefix::new(Some(&original));
    let before = p.tree();
    let out = moat_ok(&p.install_args(&[]));
    eprintln!("{out}");

    // containerd before 1.6.21 (Debian 12 ships 1.6.20) ignores runtime_path and runs the first
    // shim on its PATH: there, the installed bin dir goes in front of the build's.
    let release = containerd_release().unwrap_or_default();
    let mut path = Vec::new();
    if ignores_runtime_path(&release) {
        eprintln!(
            "note: containerd {release} ignores runtime_path; the installed bin dir goes on its PATH"
        );
        path.push(p.path().join("usr/local/bin"));
    }
    let opts = Options {
        base_config: Some(p.config.clone()),
        path,
        cri: Some(CriOptions::default()),
        namespace: Some("k8s.io".into()),
        ..Options::default()
    };
    let ctd = Containerd::start(opts).unwrap();
    ctd.import_test_images().unwrap();
    let written = std::fs::read_to_string(ctd.config_path()).unwrap();
    assert!(
        written.contains(&format!(
            "{}/usr/local/bin/containerd-shim-moat-v2",
            p.path().display()
        )),
        "containerd runs the installed shim:\n{written}"
    );
    let mut cri = Cri::connect(ctd.address()).unwrap();
    let mut ran = 0;
    for &kind in kinds {
        let handler = kind.handler();
        if let Err(why) = moat_shim::backends::available(kind) {
            eprintln!("SKIPPED: a {handler} pod: {why}");
            continue;
        }
        let name = format!("installed-{kind}");
        let mut cfg = pod_config(&name, &format!("uid-{name}"), "default", HashMap::new());
        if let Some(l) = cfg.linux.as_mut() {
            l.cgroup_parent = ctd.cgroup_parent();
        }
        let pod = cri.run_pod_sandbox(cfg.clone(), handler).unwrap();
        let c = cri
            .create_container(&pod, container_config("app", BUSYBOX_REF, &WORKLOAD), cfg)
            .unwrap();
        cri.start_container(&c).unwrap();
        // containerd started the installed shim, not the build's.
        let shims = procs::shim_pids(ctd.address());
        let exe = std::fs::read_link(format!("/proc/{}/exe", shims[0])).unwrap();
        assert_eq!(
            exe,
            p.path().join("usr/local/bin/containerd-shim-moat-v2"),
            "{handler}"
        );
        let out = cri
            .exec_sync(
                &c,
                &["sh", "-c", "echo hi; exit 3"],
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            (out.exit_code, out.stdout.as_slice()),
            (3, &b"hi\n"[..]),
            "{handler}"
        );
        if kind == BackendKind::Trace {
            // The installed default policy refuses /proc/keys: the pod runs under that policy.
            let out = cri
                .exec_sync(&c, &["cat", "/proc/keys"], Duration::from_secs(30))
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.exit_code != 0 && err.contains("Permission denied"),
                "{handler}: {out:?}"
            );
        }

        let u = measure(&ctd, handler);
        let budget = pod_fixed_memory_mib(handler);
        eprintln!(
            "{handler}: idle pod overhead {} KiB RSS (podFixed {budget} Mi)",
            u.rss_kib
        );
        assert!(
            u.rss_kib <= budget * 1024,
            "{handler}: an idle pod's overhead is {} KiB RSS, over its RuntimeClass's podFixed \
             memory of {budget} Mi: measure again and update runtimeclass/{handler}.yaml",
            u.rss_kib
        );

        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || procs::shim_pids(ctd.address())
                .is_empty()),
            "{handler}: the shim exits once its pod is gone"
        );
        ran += 1;
    }
    drop(cri);
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    if ran == 0 {
        eprintln!("SKIPPED: no pod ran (no usable moat backend here)");
    }

    moat_ok(&p.uninstall_args(&[]));
    assert_eq!(
        std::fs::read_to_string(&p.config).unwrap(),
        original,
        "byte for byte"
    );
    assert_same_tree(&before, &p.tree(), "after uninstall");
    drop(p);
    leaks.assert_clean();
}
