//! The private containerd harness against the real daemon: images, runc tasks, the pause image's
//! signal handling, CRI start-up, daemon restart, and teardown that leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use moat_artifacts::image::{BUSYBOX_REF, PAUSE_REF};
use moat_testkit::containerd::{Cri, Runtime};
use moat_testkit::{Containerd, LeakCheck, Options, skip_if};

/// Polls `ctr task ls` until `id` has `status`.
fn wait_status(ctd: &Containerd, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctd.ctr_ok(&["tasks", "ls"]).unwrap();
        if out.lines().any(|l| l.starts_with(id) && l.contains(status)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never became {status}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn runc_runs_busybox_and_teardown_is_clean() {
    skip_if!(moat_testkit::containerd::unavailable());
    let leaks = LeakCheck::new();
    let ctd = Containerd::start(Options::default()).unwrap();
    assert!(ctd.address().starts_with(std::env::temp_dir()));
    assert!(!ctd.address().starts_with("/run/containerd"));
    ctd.import_test_images().unwrap();
    let images = ctd.ctr_ok(&["images", "ls", "-q"]).unwrap();
    assert!(
        images.contains(BUSYBOX_REF) && images.contains(PAUSE_REF),
        "{images}"
    );

    let out = ctd
        .ctr_ok(&["run", "--rm", BUSYBOX_REF, "t1", "echo", "hi"])
        .unwrap();
    assert_eq!(out, "hi\n");
    let out = ctd
        .ctr(&["run", "--rm", BUSYBOX_REF, "t2", "sh", "-c", "exit 7"])
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");

    let report = ctd.shutdown();
    assert!(
        report.is_clean(),
        "nothing should have needed force: {report:#?}"
    );
    leaks.assert_clean();
}

#[test]
fn pause_image_exits_0_on_sigterm() {
    skip_if!(moat_testkit::containerd::unavailable());
    let leaks = LeakCheck::new();
    let ctd = Containerd::start(Options::default()).unwrap();
    ctd.import_test_images().unwrap();
    // `ctr run` in the foreground exits with the task's status.
    let mut run = ctd.ctr_command();
    run.args(["run", "--rm", PAUSE_REF, "p1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut run = run.spawn().unwrap();
    wait_status(&ctd, "p1", "RUNNING");
    // The trap is installed before the first sleep starts: wait for that child.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctd.ctr_ok(&["tasks", "ps", "p1"]).unwrap().lines().count() < 3 {
        assert!(Instant::now() < deadline, "pause never started its sleeper");
        std::thread::sleep(Duration::from_millis(50));
    }
    ctd.ctr_ok(&["tasks", "kill", "--signal", "SIGTERM", "p1"])
        .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(0), "pause should exit 0 on SIGTERM");
    drop(ctd);
    leaks.assert_clean();
}

#[test]
fn teardown_kills_running_tasks_and_orphaned_shims() {
    skip_if!(moat_testkit::containerd::unavailable());
    let leaks = LeakCheck::new();
    let mut ctd = Containerd::start(Options::default()).unwrap();
    ctd.import_test_images().unwrap();
    ctd.ctr_ok(&["run", "-d", BUSYBOX_REF, "long1", "sleep", "1000"])
        .unwrap();
    wait_status(&ctd, "long1", "RUNNING");
    // A crashed daemon: the shim and the container keep running without it.
    ctd.kill_daemon();
    let report = ctd.shutdown();
    assert!(
        report.killed.iter().any(|k| k.contains("containerd-shim")),
        "the orphaned shim should have been killed: {report:#?}"
    );
    assert!(report.errors.is_empty(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn tasks_survive_a_daemon_restart() {
    skip_if!(moat_testkit::containerd::unavailable());
    let leaks = LeakCheck::new();
    let mut ctd = Containerd::start(Options::default()).unwrap();
    ctd.import_test_images().unwrap();
    ctd.ctr_ok(&["run", "-d", BUSYBOX_REF, "r1", "sleep", "1000"])
        .unwrap();
    wait_status(&ctd, "r1", "RUNNING");
    ctd.kill_daemon();
    ctd.restart().unwrap();
    wait_status(&ctd, "r1", "RUNNING");
    ctd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", "r1"])
        .unwrap();
    wait_status(&ctd, "r1", "STOPPED");
    ctd.ctr_ok(&["tasks", "delete", "r1"]).unwrap();
    ctd.ctr_ok(&["containers", "delete", "r1"]).unwrap();
    let report = ctd.shutdown();
    assert!(report.is_clean(), "{report:#?}");
    leaks.assert_clean();
}

#[test]
fn cri_plugin_starts_offline_with_moat_handlers() {
    skip_if!(moat_testkit::containerd::unavailable());
    let leaks = LeakCheck::new();
    let cri = Cri {
        runtimes: ["ns", "vm", "trace"]
            .iter()
            .map(|b| {
                Runtime::moat(
                    &format!("moat-{b}"),
                    Path::new(&format!("/etc/moat/{b}.toml")),
                )
            })
            .collect(),
        ..Cri::default()
    };
    let ctd = Containerd::start(Options {
        cri: Some(cri),
        ..Options::default()
    })
    .unwrap();
    let plugins = ctd.ctr_ok(&["plugins", "ls"]).unwrap();
    let cri_line = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
        .unwrap_or_else(|| panic!("no CRI plugin listed:\n{plugins}"));
    assert!(cri_line.trim_end().ends_with("ok"), "{cri_line}");
    ctd.import_test_images().unwrap();
    let k8s = ctd.ctr_in("k8s.io", &["images", "ls", "-q"]).unwrap();
    assert!(k8s.stdout.contains(PAUSE_REF), "{k8s:?}");
    let config = std::fs::read_to_string(ctd.config_path()).unwrap();
    assert!(config.contains("io.containerd.moat.v2"), "{config}");
    drop(ctd);
    leaks.assert_clean();
}

#[test]
fn leak_check_inside_a_running_harness_sees_a_leftover_task() {
    skip_if!(moat_testkit::containerd::unavailable());
    let ctd = Containerd::start(Options::default()).unwrap();
    ctd.import_test_images().unwrap();
    // The pattern shim tests use: containerd is already running when the snapshot is taken.
    let leaks = LeakCheck::new();
    ctd.ctr_ok(&["run", "-d", BUSYBOX_REF, "l1", "sleep", "1000"])
        .unwrap();
    wait_status(&ctd, "l1", "RUNNING");
    let found = leaks.leaks();
    assert!(
        found.iter().any(|l| l.contains("containerd-shim")),
        "{found:?}"
    );
    assert!(found.iter().any(|l| l.starts_with("mount ")), "{found:?}");
    ctd.ctr_ok(&["tasks", "kill", "--signal", "SIGKILL", "l1"])
        .unwrap();
    wait_status(&ctd, "l1", "STOPPED");
    ctd.ctr_ok(&["tasks", "delete", "l1"]).unwrap();
    ctd.ctr_ok(&["containers", "delete", "l1"]).unwrap();
    leaks.assert_clean();
    drop(ctd);
}
