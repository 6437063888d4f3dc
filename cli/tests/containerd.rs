//! Acceptance of the OCI runtime verbs: containerd's own runc shim (`io.containerd.runc.v2`) drives
//! `moat` as its runc binary (`ctr run --runc-binary`), against a private containerd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use moat_testkit::{Containerd, LeakCheck, Options, skip_if};

const IMAGE: &str = "docker.io/library/busybox:latest";

fn moat() -> String {
    env!("CARGO_BIN_EXE_moat").to_string()
}

#[test]
fn ctr_run_with_moat_as_runc_prints_hi() {
    skip_if!(moat_testkit::containerd::unavailable());
    let leaks = LeakCheck::new();
    let ctd = Containerd::start(Options::default()).unwrap();
    ctd.import_test_images().unwrap();
    let moat = moat();
    let out = ctd
        .ctr_ok(&[
            "run",
            "--runc-binary",
            &moat,
            "--rm",
            IMAGE,
            "t1",
            "echo",
            "hi",
        ])
        .unwrap();
    assert_eq!(out, "hi\n");

    // Exit codes come back through the shim, and errors from moat's --log reach ctr.
    let out = ctd
        .ctr(&[
            "run",
            "--runc-binary",
            &moat,
            "--rm",
            IMAGE,
            "t2",
            "sh",
            "-c",
            "exit 7",
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = ctd
        .ctr(&[
            "run",
            "--runc-binary",
            &moat,
            "--rm",
            IMAGE,
            "t3",
            "/no/such/binary",
        ])
        .unwrap();
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("/no/such/binary"), "{out:?}");
    drop(ctd);
    leaks.assert_clean();
}

#[test]
fn ctr_task_exec_kill_and_ps_through_the_shim() {
    skip_if!(moat_testkit::containerd::unavailable());
    let leaks = LeakCheck::new();
    let ctd = Containerd::start(Options::default()).unwrap();
    ctd.import_test_images().unwrap();
    let moat = moat();
    ctd.ctr_ok(&[
        "run",
        "--runc-binary",
        &moat,
        "-d",
        IMAGE,
        "s1",
        "sleep",
        "600",
    ])
    .unwrap();
    let out = ctd
        .ctr_ok(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "s1",
            "sh",
            "-c",
            "echo $$; cat /proc/1/cmdline",
        ])
        .unwrap();
    let mut lines = out.lines();
    assert_ne!(
        lines.next(),
        Some("1"),
        "an exec'd process is not the init: {out}"
    );
    // It is in the init's pid namespace: pid 1 there is the container's `sleep 600`.
    assert_eq!(lines.next(), Some("sleep\u{0}600\u{0}"), "{out}");
    let out = ctd
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e2",
            "s1",
            "sh",
            "-c",
            "exit 5",
        ])
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let ps = ctd.ctr_ok(&["task", "ps", "s1"]).unwrap();
    assert!(ps.lines().count() >= 2, "{ps}");
    ctd.ctr_ok(&["task", "pause", "s1"]).unwrap();
    assert!(ctd.ctr_ok(&["task", "ls"]).unwrap().contains("PAUSED"));
    ctd.ctr_ok(&["task", "resume", "s1"]).unwrap();
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "s1"])
        .unwrap();
    // Wait for the task to stop, then remove it.
    for _ in 0..200 {
        if ctd.ctr_ok(&["task", "ls"]).unwrap().contains("STOPPED") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ctd.ctr_ok(&["task", "delete", "s1"]).unwrap();
    ctd.ctr_ok(&["container", "delete", "s1"]).unwrap();
    drop(ctd);
    leaks.assert_clean();
}
