//! `moat run --backend trace` as a user meets it: a policy that denies a file, the denial logged,
//! a bad policy rejected before anything starts, and a killed supervisor taking the workload down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Backend, Ctx, output};

/// A trace context, or `None` (with a SKIPPED line) where the trace wall cannot run.
fn trace_ctx() -> Option<Ctx> {
    if support::skip_unless_root() {
        return None;
    }
    if !support::backends().contains(&Backend("trace")) {
        eprintln!(
            "SKIPPED: the trace backend is not usable here (see `moat check --backend trace`)"
        );
        return None;
    }
    Some(Ctx::new(Backend("trace")))
}

#[test]
fn a_denied_path_is_permission_denied_and_logged() {
    let Some(ctx) = trace_ctx() else { return };
    let policy = ctx.dir.path().join("policy.toml");
    std::fs::write(&policy, "[[paths]]\npath = \"/etc/secret\"\nallow = []\n").unwrap();
    let rootfs = support::rootfs_with(ctx.dir.path(), &support::image_rootfs(), &[]);
    std::fs::write(rootfs.join("etc/secret"), "top secret\n").unwrap();
    let p = policy.to_str().unwrap();
    let r = rootfs.to_str().unwrap();

    let log = ctx.dir.path().join("moat.log");
    let l = log.to_str().unwrap();
    let out = ctx.run(
        &[
            "--policy",
            p,
            "--rootfs",
            r,
            "--log",
            l,
            "--log-format",
            "json",
        ],
        &["cat", "/etc/secret"],
    );
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(!out.stdout.contains("top secret"), "{out:#?}");
    assert!(out.stderr.contains("Permission denied"), "{out:#?}");
    assert!(out.stderr.contains("syscall denied"), "{out:#?}");
    let lines = std::fs::read_to_string(&log).unwrap();
    // runc-style JSON lines (what containerd reads): the decision's fields are in `msg`.
    let denial = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "warn")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .find(|m| m.contains("syscall denied"))
        .unwrap_or_else(|| panic!("no JSON denial line in the log: {lines}"));
    for want in [
        "pid=1",
        "syscall=openat",
        "\"/etc/secret\"",
        "policy.toml:1)",
    ] {
        assert!(denial.contains(want), "{want} missing from {denial}");
    }

    // Everything else of the image still works under that policy.
    let out = ctx.run(&["--policy", p, "--rootfs", r], &["cat", "/etc/passwd"]);
    assert!(out.ok().starts_with("root:"), "{out:#?}");
}

#[test]
fn a_bad_policy_is_rejected_with_its_line_before_anything_starts() {
    let Some(ctx) = trace_ctx() else { return };
    let policy = ctx.dir.path().join("bad.toml");
    std::fs::write(
        &policy,
        "[[paths]]\npath = \"relative/path\"\nallow = [\"read\"]\n",
    )
    .unwrap();
    let out = ctx.run(&["--policy", policy.to_str().unwrap()], &["true"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("bad.toml:2"), "{out:#?}");
    assert!(out.stderr.contains("absolute"), "{out:#?}");
    let out = ctx.run(&["--policy", "/no/such/policy.toml"], &["true"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("/no/such/policy.toml"), "{out:#?}");
    // `ctx.run` checked that no state, cgroup or mount was left behind.
}

#[test]
fn killing_the_supervisor_kills_the_workload() {
    let Some(ctx) = trace_ctx() else { return };
    let id = ctx.fresh_id();
    let mut cmd = ctx.run_command(&id, &[], &["sleep", "600"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let init = ctx.wait_running(&id);
    // The supervisor is the tracer of the container's init.
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let tracer: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(tracer > 0, "the init is not traced: {status}");
    let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm")).unwrap();
    assert!(comm.starts_with("moat-trace"), "tracer is {comm:?}");
    // SAFETY: kill has no memory arguments; the pid is this test's container's supervisor.
    unsafe { libc::kill(tracer, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "moat run outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        code,
        Some(128 + libc::SIGKILL),
        "the workload must die with the supervisor"
    );
    ctx.assert_clean(&id);
    let out = output(&mut ctx.moat(&["state", &id]), Duration::from_secs(10));
    assert_ne!(out.code, 0, "{out:#?}");
}
