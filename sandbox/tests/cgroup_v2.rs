//! cgroup v2, on this hybrid host: the test re-runs itself in a private mount namespace
//! (`unshare --mount`) with a fresh cgroup2 hierarchy mounted on /sys/fs/cgroup. On a pure v2
//! host it runs directly. (Here v2 holds no memory/pids/cpu controllers — they are bound to v1 —
//! so limits are covered by the v1 tests and the fake-tree unit tests; this covers creating,
//! joining, freezing, killing through cgroup.kill, the cgroup namespace view and removal.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Env, Exit, capture, id, root_or_skip, spec, wait};
use moat_sandbox::cgroups::{Layout, Version};
use moat_sandbox::{ExecOptions, Status, Stdio};
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder,
};

const CHILD_ENV: &str = "MOAT_CGROUP_V2_CHILD";

#[test]
fn cgroup_v2_in_a_private_mount_namespace() {
    if !root_or_skip("cgroup_v2_in_a_private_mount_namespace") {
        return;
    }
    if matches!(Layout::detect(), Ok(Layout::V2 { .. })) {
        v2_scenario();
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("SKIPPED: cgroup_v2_in_a_private_mount_namespace: unshare(1) missing");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(["--exact", "v2_child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("v2 scenario passed"), "{text}");
}

/// Entry point of the re-run; does nothing in a normal test run.
#[test]
fn v2_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        eprintln!("SKIPPED: v2_child: only runs inside cgroup_v2_in_a_private_mount_namespace");
        return;
    }
    // Private mount namespace: cover the v1 tmpfs with the unified hierarchy.
    // SAFETY: mount with static strings.
    let r = unsafe {
        libc::mount(
            c"cgroup2".as_ptr(),
            c"/sys/fs/cgroup".as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(
        r,
        0,
        "mounting cgroup2: {}",
        std::io::Error::last_os_error()
    );
    v2_scenario();
    println!("v2 scenario passed");
}

fn v2_scenario() {
    assert!(matches!(Layout::detect().unwrap(), Layout::V2 { .. }));
    let env = Env::new();
    let id = id("v2");

    // A limit whose controller v2 does not offer here is refused before anything is made.
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        let mut s = spec(&id, &["true"]);
        let mut linux = s.linux().clone().unwrap();
        linux.set_resources(Some(
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(1i64 << 30)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        ));
        s.set_linux(Some(linux));
        let e = env.create(&id, s, Stdio::Null).unwrap_err().to_string();
        assert!(e.contains("linux.resources.memory"), "{e}");
        assert!(
            !Path::new("/sys/fs/cgroup")
                .join(format!("moat-test-{id}"))
                .exists()
        );
        assert!(!env.root.path().join(&id).exists());
    }

    // With a cgroup namespace and a cgroup mount, the container sees its own cgroup as the root.
    let mut s = spec(
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/self/cgroup; ls /sys/fs/cgroup/cgroup.procs; sleep 60",
        ],
    );
    let mut mounts = s.mounts().clone().unwrap();
    let mut m = oci_spec::runtime::Mount::default();
    m.set_destination("/sys/fs/cgroup".into());
    m.set_typ(Some("cgroup".into()));
    m.set_source(Some("cgroup".into()));
    m.set_options(Some(vec![
        "nosuid".into(),
        "noexec".into(),
        "nodev".into(),
        "relatime".into(),
        "ro".into(),
    ]));
    mounts.push(m);
    s.set_mounts(Some(mounts));
    let mut linux = s.linux().clone().unwrap();
    let mut ns = linux.namespaces().clone().unwrap();
    ns.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Cgroup)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(ns));
    s.set_linux(Some(linux));

    let (stdio, cap) = capture();
    let c = env.create(&id, s, stdio).unwrap();
    assert_eq!(c.cgroup().version, Version::V2);
    let dir = c.cgroup().dirs[0].path.clone();
    assert_eq!(
        dir,
        Path::new("/sys/fs/cgroup").join(format!("moat-test-{id}"))
    );
    let _cleanup = common::Cleanup::new(&env, &id);
    c.start().unwrap();
    assert!(c.pids().unwrap().contains(&c.pid()));

    c.pause().unwrap();
    assert_eq!(c.status(), Status::Paused);
    assert_eq!(
        std::fs::read_to_string(dir.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "1"
    );
    c.resume().unwrap();
    assert_eq!(c.status(), Status::Running);

    let p = c
        .exec(&c_process(&["true"]), ExecOptions::default())
        .unwrap();
    assert_eq!(wait(p.pid), Exit::Code(0));

    c.kill(libc::SIGKILL, true).unwrap();
    assert_eq!(wait(c.pid()), Exit::Signal(libc::SIGKILL));
    c.delete(false).unwrap();
    assert!(!dir.exists(), "cgroup left behind");
    let (out, err) = cap.finish();
    assert!(out.lines().any(|l| l == "0::/"), "{out} {err}");
    assert!(out.contains("/sys/fs/cgroup/cgroup.procs"), "{out} {err}");
}

fn c_process(args: &[&str]) -> oci_spec::runtime::Process {
    let mut p = spec("x", args).process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p
}
