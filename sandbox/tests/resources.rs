//! cgroup limits on real containers: memory (OOM kill detected after the fact), pids (a fork
//! bomb stops), pause/resume, stats and update.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, Exit, capture, id, root_or_skip, run, spec, wait};
use moat_sandbox::{Status, Stdio};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, Spec};

fn with_resources(mut s: Spec, edit: impl FnOnce(&mut LinuxResources)) -> Spec {
    let mut linux = s.linux().clone().unwrap();
    let mut r = linux.resources().clone().unwrap_or_default();
    edit(&mut r);
    linux.set_resources(Some(r));
    s.set_linux(Some(linux));
    s
}

#[test]
fn memory_limit_oom_kill_is_detected() {
    if !root_or_skip("memory_limit_oom_kill_is_detected") {
        return;
    }
    let id = id("oom");
    let limit = 32 << 20;
    let s = with_resources(spec(&id, &["tail", "/dev/zero"]), |r| {
        r.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .unwrap(),
        ));
    });
    let out = run(&id, s);
    assert_eq!(out.exit, Exit::Signal(libc::SIGKILL), "{out:?}");
    assert!(out.oom_kills >= 1, "OOM kill not recorded: {out:?}");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    if !root_or_skip("pids_limit_stops_a_fork_bomb") {
        return;
    }
    let id = id("pids");
    let script = "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; cat /sys/fs/cgroup/pids.current 2>/dev/null; echo done";
    let s = with_resources(spec(&id, &["sh", "-c", script]), |r| {
        r.set_pids(Some(LinuxPidsBuilder::default().limit(10).build().unwrap()));
    });
    let out = run(&id, s);
    // busybox sh gives up (exit 2) when fork fails; its 30 s sleepers are killed by delete.
    assert_eq!(out.exit, Exit::Code(2), "{out:?}");
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource temporarily unavailable"),
        "{out:?}"
    );
}

#[test]
fn pause_resume_stats_update() {
    if !root_or_skip("pause_resume_stats_update") {
        return;
    }
    let id = id("pause");
    let env = Env::new();
    let s = with_resources(spec(&id, &["sleep", "60"]), |r| {
        r.set_pids(Some(LinuxPidsBuilder::default().limit(50).build().unwrap()));
        r.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .unwrap(),
        ));
    });
    let c = env.create(&id, s, Stdio::Null).unwrap();
    let _cleanup = common::Cleanup::new(&env, &id);
    assert_eq!(c.status(), Status::Created);
    assert_eq!(c.state().status, Status::Created);
    c.start().unwrap();
    assert_eq!(c.status(), Status::Running);
    assert_eq!(c.pids().unwrap(), vec![c.pid()]);
    c.pause().unwrap();
    assert_eq!(c.status(), Status::Paused);
    assert!(c.delete_refused_while_running());
    c.resume().unwrap();
    assert_eq!(c.status(), Status::Running);
    let st = c.stats().unwrap();
    assert_eq!(st.pids_current, 1);
    assert_eq!(st.pids_limit, Some(50));
    assert_eq!(st.memory_limit, Some(64 << 20));
    assert!(st.memory_usage > 0);
    let mut r = LinuxResources::default();
    r.set_pids(Some(LinuxPidsBuilder::default().limit(7).build().unwrap()));
    c.update(&r).unwrap();
    assert_eq!(c.stats().unwrap().pids_limit, Some(7));
    c.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(wait(c.pid()), Exit::Signal(libc::SIGKILL));
    assert_eq!(c.status(), Status::Stopped);
    assert_eq!(c.state().pid, 0);
    c.delete(false).unwrap();
}

/// Delete without force must refuse a running (or paused) container and change nothing.
trait RefuseDelete {
    fn delete_refused_while_running(&self) -> bool;
}

impl RefuseDelete for moat_sandbox::Container {
    fn delete_refused_while_running(&self) -> bool {
        let again =
            moat_sandbox::Container::load(self.state_dir().parent().unwrap(), self.id()).unwrap();
        let e = again.delete(false).unwrap_err().to_string();
        e.contains("force") && self.state_dir().exists() && self.init_alive()
    }
}

#[test]
fn stdio_and_exit_code_through_pipes() {
    if !root_or_skip("stdio_and_exit_code_through_pipes") {
        return;
    }
    let id = id("stdio");
    let env = Env::new();
    let (stdio, cap) = capture();
    let c = env
        .create(
            &id,
            spec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"]),
            stdio,
        )
        .unwrap();
    c.start().unwrap();
    assert_eq!(wait(c.pid()), Exit::Code(3));
    c.delete(false).unwrap();
    assert_eq!(cap.finish(), ("out\n".to_string(), "err\n".to_string()));
}
