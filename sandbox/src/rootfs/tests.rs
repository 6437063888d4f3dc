//! The order of the rootfs steps, recorded through the `Syscall` seam (no root needed).

use super::*;
use crate::config;
use crate::defaults;
use crate::syscall::record::Recorder;

fn plan() -> (tempfile::TempDir, RootfsPlan) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("rootfs")).unwrap();
    let mut s = defaults::spec("rootfs");
    let mut p = s.process().clone().unwrap();
    p.set_args(Some(vec!["/bin/sh".into()]));
    s.set_process(Some(p));
    let built = config::build(&s, t.path()).unwrap();
    (t, built.init.rootfs.unwrap())
}

#[test]
fn prepare_mounts_then_dev_then_pivots() {
    let (_t, plan) = plan();
    let r = Recorder::default();
    prepare(&r, &plan).unwrap();
    let root = plan.rootfs.display().to_string();
    let calls = r.calls.borrow().clone();
    assert_eq!(
        calls[0],
        format!("mount - / - {:#x} -", libc::MS_REC | libc::MS_SLAVE)
    );
    assert!(
        calls[1].starts_with(&format!("mount {root} {root} -")),
        "{calls:#?}"
    );
    let proc_m = r.pos(&format!("mount proc {root}/proc proc"));
    let dev_m = r.pos(&format!("mount tmpfs {root}/dev tmpfs"));
    let pts_m = r.pos(&format!("mount devpts {root}/dev/pts devpts"));
    let null = r.pos(&format!("mknod {root}/dev/null 20666"));
    let ptmx = r.pos(&format!("symlink pts/ptmx {root}/dev/ptmx"));
    let pivot = r.pos("pivot_root");
    assert!(proc_m < dev_m && dev_m < pts_m && pts_m < null && null < ptmx && ptmx < pivot);
    assert_eq!(pivot, calls.len() - 1, "pivot_root is the last step");
    assert!(r.has(&format!(
        "mount tmpfs {root}/dev tmpfs {:#x} mode=755,size=65536k",
        libc::MS_NOSUID | libc::MS_STRICTATIME
    )));
    assert!(r.has(&format!("symlink /proc/self/fd {root}/dev/fd")));
    assert!(r.has(&format!("chown {root}/dev/null 0 0")));
    // Mount targets were made inside the rootfs.
    assert!(plan.rootfs.join("dev/mqueue").is_dir());
}

#[test]
fn user_namespace_binds_devices() {
    let (_t, mut plan) = plan();
    plan.bind_devices = true;
    let r = Recorder::default();
    prepare(&r, &plan).unwrap();
    let root = plan.rootfs.display().to_string();
    assert!(r.has(&format!(
        "mount /dev/null {root}/dev/null - {:#x}",
        libc::MS_BIND
    )));
    assert!(!r.has("mknod"));
}

#[test]
fn readonly_then_masked_paths() {
    let (_t, plan) = plan();
    let r = Recorder::default();
    restrict_paths(&r, &plan).unwrap();
    // On the host these exist; inside a container they are the container's /proc.
    let ro = r.pos("mount /proc/sys /proc/sys -");
    let keys = r.pos("mount /dev/null /proc/keys -");
    assert!(ro < keys);
    assert!(r.has(&format!(
        "mount - /proc/sys - {:#x}",
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_REC
            | paths::locked_flags(Path::new("/proc/sys"))
    )));
    if Path::new("/proc/acpi").is_dir() {
        assert!(r.has(&format!(
            "mount tmpfs /proc/acpi tmpfs {:#x}",
            libc::MS_RDONLY
        )));
    }
}

#[test]
fn failures_say_which_mount() {
    let (_t, plan) = plan();
    let r = Recorder {
        fail: Some("mount devpts".into()),
        ..Default::default()
    };
    let e = prepare(&r, &plan).unwrap_err();
    assert!(
        e.contains("mounts[2] (/dev/pts)") && e.contains("devpts"),
        "{e}"
    );
    assert!(!r.has("pivot_root"));
}

#[test]
fn readonly_root_and_shared_propagation() {
    let (_t, mut plan) = plan();
    plan.readonly = true;
    plan.propagation = libc::MS_SHARED;
    let r = Recorder::default();
    prepare(&r, &plan).unwrap();
    finalize(&r, &plan).unwrap();
    let private = r.pos(&format!("mount - / - {:#x}", libc::MS_PRIVATE));
    let pivot = r.pos("pivot_root");
    let reshare = r
        .calls
        .borrow()
        .iter()
        .rposition(|c| {
            c.starts_with(&format!(
                "mount - / - {:#x}",
                libc::MS_REC | libc::MS_SHARED
            ))
        })
        .unwrap();
    let ro = r.pos(&format!(
        "mount - / - {:#x}",
        libc::MS_RDONLY | libc::MS_BIND | libc::MS_REMOUNT
    ));
    assert!(private < pivot && pivot < reshare && reshare < ro);
}
