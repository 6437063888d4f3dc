//! The shim through containerd's CRI plugin, as kubelet would drive it: one pod per moat handler,
//! `ExecSync`, stats, two containers sharing the pod's shim, and pods surviving a containerd
//! restart or a killed shim.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Handlers, containerd, eventually, host_kernel, shim_helper_pids, shim_pids};
use k8s_cri::{Cri, container_config, pod_config, v1};
use moat_artifacts::image::BUSYBOX_REF;
use moat_testkit::{Containerd, LeakCheck, skip_if};

fn connect(ctd: &moat_testkit::Containerd) -> Cri {
    Cri::connect(ctd.address()).unwrap()
}

/// Starts a pod on `handler` with one `sleep` container, under the harness's cgroup parent;
/// returns (pod id, pod config, container id).
fn start_pod(
    cri: &mut Cri,
    ctd: &Containerd,
    handler: &str,
    name: &str,
) -> (String, v1::PodSandboxConfig, String) {
    let mut cfg = pod_config(name, &format!("uid-{name}"), "default", HashMap::new());
    if let Some(l) = cfg.linux.as_mut() {
        l.cgroup_parent = ctd.cgroup_parent();
    }
    let pod = cri.run_pod_sandbox(cfg.clone(), handler).unwrap();
    let c = cri
        .create_container(
            &pod,
            container_config("app", BUSYBOX_REF, &["sleep", "1000"]),
            cfg.clone(),
        )
        .unwrap();
    cri.start_container(&c).unwrap();
    (pod, cfg, c)
}

fn remove_pod(cri: &mut Cri, pod: &str) {
    cri.stop_pod_sandbox(pod).unwrap();
    cri.remove_pod_sandbox(pod).unwrap();
}

#[test]
fn one_pod_per_handler_runs_exec_sync_and_reports_stats() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    if handlers.usable.is_empty() {
        moat_testkit::skip!("no moat backend is usable here");
    }
    let leaks = LeakCheck::new();
    let ctd = containerd(&handlers, true);
    let mut cri = connect(&ctd);
    for (kind, _) in &handlers.usable {
        let (pod, cfg, c) = start_pod(&mut cri, &ctd, kind.handler(), &format!("pod-{kind}"));
        let out = cri
            .exec_sync(&c, &["uname", "-r"], Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.exit_code, 0, "{kind}: {out:?}");
        let release = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if *kind != moat_backend::BackendKind::Vm {
            assert_eq!(release, host_kernel(), "{kind} shares the host kernel");
        } else {
            assert_ne!(release, "", "{kind}");
        }
        let out = cri
            .exec_sync(
                &c,
                &["sh", "-c", "echo err >&2; exit 5"],
                Duration::from_secs(30),
            )
            .unwrap();
        assert_eq!(
            (out.exit_code, out.stderr.as_slice()),
            (5, &b"err\n"[..]),
            "{kind}"
        );

        // The masked paths kubelet asks for hold in the app container (which shares the
        // pod's pid namespace): /proc/keys reads as empty, or the trace policy refuses it.
        let out = cri
            .exec_sync(&c, &["sh", "-c", "cat /proc/keys"], Duration::from_secs(30))
            .unwrap();
        if *kind == moat_backend::BackendKind::Trace {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("Permission denied"), "{kind}: {out:?}");
        } else {
            assert_eq!(
                (out.exit_code, out.stdout.as_slice()),
                (0, &b""[..]),
                "{kind}"
            );
        }
        if *kind == moat_backend::BackendKind::Trace {
            // The handler's policy (common::TRACE_POLICY) polices the pod's processes.
            let out = cri
                .exec_sync(&c, &["cat", "/etc/secret"], Duration::from_secs(30))
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.exit_code != 0 && err.contains("Permission denied"),
                "{kind}: {out:?}"
            );
        }

        let stats = cri.container_stats(&c).unwrap();
        let mem = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value);
        assert!(mem.is_some_and(|m| m > 0), "{kind}: {mem:?}");

        // A second container joins the pod's shim.
        let c2 = cri
            .create_container(
                &pod,
                container_config("side", BUSYBOX_REF, &["sleep", "1000"]),
                cfg.clone(),
            )
            .unwrap();
        cri.start_container(&c2).unwrap();
        assert_eq!(shim_pids(&ctd).len(), 1, "{kind}: one shim per pod");
        let st = cri.container_status(&c2).unwrap();
        assert_eq!(
            st.state,
            v1::ContainerState::ContainerRunning as i32,
            "{kind}"
        );

        cri.stop_container(&c2, 5).unwrap();
        cri.remove_container(&c2).unwrap();
        remove_pod(&mut cri, &pod);
        assert!(
            eventually(Duration::from_secs(10), || shim_pids(&ctd).is_empty()),
            "{kind}: the shim exits once its pod is gone"
        );
    }
    drop(cri);
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn pods_survive_a_containerd_restart() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    let Some(kind) = handlers.usable.first().map(|(k, _)| *k) else {
        moat_testkit::skip!("no moat backend is usable here");
    };
    let leaks = LeakCheck::new();
    let mut ctd = containerd(&handlers, true);
    let mut cri = connect(&ctd);
    let (pod, _cfg, c) = start_pod(&mut cri, &ctd, kind.handler(), "durable");
    drop(cri);
    ctd.kill_daemon();
    ctd.restart().unwrap();
    let mut cri = connect(&ctd);
    // The CRI plugin answers "not initialized" until it has reloaded its state.
    let mut pods = Vec::new();
    assert!(eventually(Duration::from_secs(30), || {
        cri.list_pod_sandbox().map(|p| pods = p).is_ok()
    }));
    let p = pods
        .iter()
        .find(|p| p.id == pod)
        .expect("pod listed after restart");
    assert_eq!(p.state, v1::PodSandboxState::SandboxReady as i32);
    let out = cri
        .exec_sync(&c, &["echo", "alive"], Duration::from_secs(30))
        .unwrap();
    assert_eq!(out.stdout, b"alive\n");
    remove_pod(&mut cri, &pod);
    assert!(eventually(Duration::from_secs(10), || shim_pids(&ctd).is_empty()));
    drop(cri);
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn killed_shim_ends_the_pod_and_remove_cleans_up() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    let Some(kind) = handlers.usable.first().map(|(k, _)| *k) else {
        moat_testkit::skip!("no moat backend is usable here");
    };
    let leaks = LeakCheck::new();
    let ctd = containerd(&handlers, true);
    let mut cri = connect(&ctd);
    let (pod, _cfg, c) = start_pod(&mut cri, &ctd, kind.handler(), "victim");
    let shims = shim_pids(&ctd);
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill has no memory arguments; the pid is the shim this test's pod runs in.
    unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) };
    assert!(
        eventually(Duration::from_secs(30), || {
            cri.container_status(&c)
                .is_ok_and(|s| s.state == v1::ContainerState::ContainerExited as i32)
        }),
        "the container never reported an exit:\n{}",
        ctd.log_tail(40)
    );
    cri.remove_container(&c).unwrap();
    remove_pod(&mut cri, &pod);
    // containerd cleans up after a dead shim with `containerd-shim-moat-v2 delete`, one per
    // container, in the background: each must finish, not hang.
    assert!(
        eventually(Duration::from_secs(30), || shim_helper_pids(&ctd)
            .is_empty()),
        "shim delete still running: {:?}\n{}",
        shim_helper_pids(&ctd),
        ctd.log_tail(40)
    );
    drop(cri);
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn limits_reach_the_cgroup_and_annotations_only_tighten() {
    skip_if!(moat_testkit::containerd::unavailable());
    let dir = tempfile::tempdir().unwrap();
    let handlers = Handlers::write(dir.path());
    if handlers.config(moat_backend::BackendKind::Ns).is_none() {
        moat_testkit::skip!("the ns backend is not usable here");
    }
    let leaks = LeakCheck::new();
    let ctd = containerd(&handlers, true);
    let mut cri = connect(&ctd);

    // A pod annotation cannot switch the handler's backend.
    let mut ann = HashMap::new();
    ann.insert("moat.dev/backend".to_string(), "vm".to_string());
    let mut bad = pod_config("sneaky", "uid-sneaky", "default", ann);
    if let Some(l) = bad.linux.as_mut() {
        l.cgroup_parent = ctd.cgroup_parent();
    }
    let e = cri.run_pod_sandbox(bad, "moat-ns").unwrap_err().to_string();
    assert!(e.contains("cannot switch"), "{e}");

    // Memory and CPU limits land in the container's cgroup under the pod's cgroup parent.
    let (pod, cfg, _c) = start_pod(&mut cri, &ctd, "moat-ns", "limited");
    let mut cc = container_config("capped", BUSYBOX_REF, &["sleep", "1000"]);
    cc.linux = Some(v1::LinuxContainerConfig {
        resources: Some(v1::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = cri.create_container(&pod, cc, cfg).unwrap();
    cri.start_container(&c).unwrap();
    let parent = ctd.cgroup_parent();
    let cg = |ctrl: &str, file: &str| {
        let v1 = format!("/sys/fs/cgroup/{ctrl}{parent}/{c}/{file}");
        std::fs::read_to_string(&v1).map(|s| s.trim().to_string())
    };
    if cg("memory", "memory.limit_in_bytes").is_ok() {
        assert_eq!(
            cg("memory", "memory.limit_in_bytes").unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(cg("cpu", "cpu.cfs_quota_us").unwrap(), "50000");
    } else {
        let v2 = format!("/sys/fs/cgroup{parent}/{c}/memory.max");
        let got = std::fs::read_to_string(&v2).map(|s| s.trim().to_string());
        assert_eq!(got.unwrap(), (64u64 << 20).to_string(), "{v2}");
    }
    remove_pod(&mut cri, &pod);
    drop(cri);
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

/// moat-vm through the CRI where `/dev/kvm` cannot run guests: the whole test (a private
/// containerd included) re-runs inside the KVM rig. Where it can, the per-handler test above
/// covers moat-vm directly.
#[test]
fn a_vm_pod_shares_one_vm_and_runs_the_guest_kernel() {
    use moat_backend::BackendKind;
    use moat_rig::harness::{Place, inside_rig, place};
    skip_if!(moat_testkit::containerd::unavailable());
    if place() == Place::Here && !inside_rig() {
        moat_testkit::skip!(
            "hardware KVM: one_pod_per_handler_runs_exec_sync_and_reports_stats covers moat-vm"
        );
    }
    if !inside_rig()
        && let Err(why) = moat_backend::vm::check::built_artifacts()
    {
        moat_testkit::skip!("the guest artifacts are not built: {why}");
    }
    // containerd's overlayfs snapshotter needs L1's overlay module.
    moat_rig::harness::run_in_rig_with_modules(&["overlay"], || {
        let dir = tempfile::tempdir().unwrap();
        let mut handlers = Handlers::write(dir.path());
        handlers.usable.retain(|(k, _)| *k == BackendKind::Vm);
        assert!(
            !handlers.usable.is_empty(),
            "vm must run in the rig: {:?}",
            handlers.skipped
        );
        let leaks = LeakCheck::new();
        let ctd = containerd(&handlers, true);
        let mut cri = connect(&ctd);
        let (pod, cfg, c) = start_pod(&mut cri, &ctd, "moat-vm", "vm-pod");
        let out = cri
            .exec_sync(&c, &["uname", "-r"], Duration::from_secs(60))
            .unwrap();
        let release = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let guest = match moat_artifacts::kernel::status() {
            moat_artifacts::kernel::Status::Built(k) => k.version,
            s => panic!("no guest kernel: {s:?}"),
        };
        assert_eq!(release, guest, "{out:?}");
        assert_ne!(release, host_kernel());

        // A second container (another image: busybox with another command) joins the same VM.
        let c2 = cri
            .create_container(
                &pod,
                container_config("side", BUSYBOX_REF, &["sh", "-c", "echo side; sleep 1000"]),
                cfg.clone(),
            )
            .unwrap();
        cri.start_container(&c2).unwrap();
        assert_eq!(shim_pids(&ctd).len(), 1, "one shim per pod");
        let vmms = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "moat-vmm")
            })
            .count();
        assert_eq!(vmms, 1, "one VM per pod");
        let out = cri
            .exec_sync(&c2, &["sh", "-c", "echo $((6*7))"], Duration::from_secs(60))
            .unwrap();
        assert_eq!(out.stdout, b"42\n");
        let stats = cri.container_stats(&c).unwrap();
        let mem = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value);
        assert!(mem.is_some_and(|m| m > 0), "{mem:?}");

        cri.stop_container(&c2, 5).unwrap();
        cri.remove_container(&c2).unwrap();
        remove_pod(&mut cri, &pod);
        assert!(
            eventually(Duration::from_secs(30), || shim_pids(&ctd).is_empty()),
            "the shim exits once its pod is gone"
        );
        drop(cri);
        let report = ctd.shutdown();
        assert!(report.is_clean(), "{report:#?}");
        leaks.assert_clean();
    });
}
