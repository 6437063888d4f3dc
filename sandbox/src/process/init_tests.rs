//! The order of a container process's setup, recorded through the `Syscall` seam.

use std::os::fd::OwnedFd;

use super::InitPlan;
use super::init::{Parent, finish, setup};
use crate::config;
use crate::defaults;
use crate::rootfs::StepResult;
use crate::syscall::record::Recorder;

/// Logs its events into the recorder's list, so they interleave with the syscalls.
struct FakeParent<'a>(&'a Recorder);

impl Parent for FakeParent<'_> {
    fn wait_cgroup(&mut self) -> StepResult {
        self.0.calls.borrow_mut().push("parent wait_cgroup".into());
        Ok(())
    }
    fn wait_id_maps(&mut self) -> StepResult {
        self.0.calls.borrow_mut().push("parent wait_id_maps".into());
        Ok(())
    }
    fn send_console(&mut self, _master: OwnedFd) -> StepResult {
        self.0.calls.borrow_mut().push("parent console".into());
        Ok(())
    }
    fn ready(&mut self) -> StepResult {
        self.0.calls.borrow_mut().push("parent ready".into());
        Ok(())
    }
    fn wait_start(&mut self) -> StepResult {
        self.0.calls.borrow_mut().push("parent wait_start".into());
        Ok(())
    }
}

fn plan(edit: impl FnOnce(&mut oci_spec::runtime::Spec)) -> (tempfile::TempDir, InitPlan) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("rootfs")).unwrap();
    let mut s = defaults::spec("rootfs");
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec!["/bin/sh".into()]));
    p.set_cwd("/tmp".into());
    s.set_process(Some(p));
    s.set_hostname(Some("box".into()));
    edit(&mut s);
    let mut built = config::build(&s, t.path()).unwrap();
    built.init.process.extra_seccomp = vec![vec![seccompiler::sock_filter {
        code: 6,
        jt: 0,
        jf: 0,
        k: 0x7fff_0000,
    }]];
    (t, built.init)
}

fn run(plan: &InitPlan) -> Vec<String> {
    let r = Recorder::default();
    let exec = setup(&r, plan, &mut FakeParent(&r)).unwrap();
    let (msg, code) = finish(&r, plan, &exec);
    assert_eq!(code, 127, "{msg}");
    r.calls.borrow().clone()
}

fn pos(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {calls:#?}"))
}

#[test]
fn init_order() {
    let (_t, plan) = plan(|_| {});
    let calls = run(&plan);
    let order = [
        "setsid",
        "keyring",
        "umask 0",
        "pivot_root",
        "sethostname box",
        "mount /proc/sys /proc/sys",
        "mount /dev/null /proc/keys",
        "parent wait_cgroup",
        "setrlimit 7 1024 1024",
        "keepcaps true",
        "capbset_drop",
        "setgroups",
        "setresgid 0",
        "setresuid 0",
        "keepcaps false",
        "capset",
        "chdir /tmp",
        "umask 22",
        "cloexec_from 3",
        "no_new_privs",
        "parent ready",
        "parent wait_start",
        "seccomp",
        "execve",
    ];
    let idx: Vec<usize> = order.iter().map(|p| pos(&calls, p)).collect();
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]),
        "{:?}\n{calls:#?}",
        order.iter().zip(&idx).collect::<Vec<_>>()
    );
    // The spec's filter, then the extra one, then execve: nothing else after the first filter.
    let first = pos(&calls, "seccomp");
    assert!(calls[first].starts_with("seccomp ") && calls[first + 1] == "seccomp 1 0");
    assert!(calls[first + 2].starts_with("execve"));
    assert_eq!(calls.len(), first + 3);
    // With no_new_privs, CAP_SYS_ADMIN is not kept: 14 default caps, effective == permitted.
    let capset = &calls[pos(&calls, "capset")];
    assert_eq!(capset, "capset 0xa80425fb 0xa80425fb 0x0");
}

#[test]
fn without_no_new_privs_sys_admin_is_kept_until_exec() {
    let (_t, plan) = plan(|s| {
        let mut p = s.process().clone().unwrap();
        p.set_no_new_privileges(Some(false));
        s.set_process(Some(p));
    });
    let calls = run(&plan);
    assert!(!calls.iter().any(|c| c == "no_new_privs"));
    assert_eq!(
        calls[pos(&calls, "capset")],
        format!(
            "capset {:#x} {:#x} 0x0",
            0xa80425fbu64 | 1 << 21,
            0xa80425fbu64 | 1 << 21
        )
    );
}

#[test]
fn user_namespace_waits_for_maps_first_and_terminal_follows_pivot() {
    let (_t, mut plan) = plan(|s| {
        let mut p = s.process().clone().unwrap();
        p.set_terminal(Some(true));
        s.set_process(Some(p));
    });
    plan.new_userns = true;
    let r = Recorder::default();
    setup(&r, &plan, &mut FakeParent(&r)).unwrap();
    let calls = r.calls.borrow();
    assert_eq!(
        &calls[..3],
        &[
            "parent wait_id_maps".to_string(),
            "setresgid 0".to_string(),
            "setresuid 0".to_string()
        ]
    );
    let pivot = pos(&calls, "pivot_root");
    let pty = pos(&calls, "open_pty");
    let console = pos(&calls, "mount /dev/pts/7 /dev/console");
    let attach = pos(&calls, "attach_terminal /dev/pts/7");
    let sent = pos(&calls, "parent console");
    assert!(pivot < pty && pty < console && console < sent && sent < attach);
}

#[test]
fn cgroup_namespace_is_made_once_in_the_cgroup() {
    // Without a cgroup mount: joined late (overlapping the rootfs work), then unshared.
    let (_t, mut p1) = plan(|_| {});
    p1.new_cgroupns = true;
    let calls = run(&p1);
    let pivot = pos(&calls, "pivot_root");
    let wait = pos(&calls, "parent wait_cgroup");
    let unshare = pos(&calls, &format!("unshare {:#x}", libc::CLONE_NEWCGROUP));
    let caps = pos(&calls, "capset");
    assert!(
        pivot < wait && wait + 1 == unshare && unshare < caps,
        "{calls:#?}"
    );

    // With a cgroup mount, the namespace must exist before the rootfs is built.
    let (_t2, mut p2) = plan(|s| {
        let mut mounts = s.mounts().clone().unwrap();
        let mut m = oci_spec::runtime::Mount::default();
        m.set_destination("/sys/fs/cgroup".into());
        m.set_typ(Some("cgroup".into()));
        m.set_source(Some("cgroup".into()));
        mounts.push(m);
        s.set_mounts(Some(mounts));
    });
    p2.new_cgroupns = true;
    let calls = run(&p2);
    let wait = pos(&calls, "parent wait_cgroup");
    let unshare = pos(&calls, "unshare");
    let first_mount = pos(&calls, "mount");
    assert!(wait < unshare && unshare < first_mount, "{calls:#?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("parent wait_cgroup"))
            .count(),
        1
    );
}
