//! What the default spec (containerd's) denies: masked and read-only /proc paths, mount, keyctl,
//! unshare(CLONE_NEWUSER) — from inside real containers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Exit, id, root_or_skip, run, spec};

#[test]
fn masked_and_readonly_paths() {
    if !root_or_skip("masked_and_readonly_paths") {
        return;
    }
    let id = id("masked");
    let script = "wc -c < /proc/keys; ls /sys/firmware | wc -l; \
                  echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo sys-writable || echo sys-ro; \
                  touch /proc/sysrq-trigger 2>/dev/null && echo trigger-writable || echo trigger-ro";
    let out = run(&id, spec(&id, &["sh", "-c", script]));
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["0", "0", "sys-ro", "trigger-ro"], "{out:?}");
}

#[test]
fn default_seccomp_and_capabilities_deny() {
    if !root_or_skip("default_seccomp_and_capabilities_deny") {
        return;
    }
    let id = id("deny");
    let script = "moat-probe keyctl; moat-probe unshare-user; moat-probe mount; \
                  mount -t tmpfs none /mnt 2>/dev/null && echo busybox-mount-ok || echo busybox-mount-denied; \
                  grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status";
    let out = run(&id, spec(&id, &["sh", "-c", script]));
    let s = &out.stdout;
    assert!(s.contains("keyctl: EPERM"), "{out:?}");
    assert!(s.contains("unshare-user: EPERM"), "{out:?}");
    assert!(s.contains("mount: EPERM"), "{out:?}");
    assert!(s.contains("busybox-mount-denied"), "{out:?}");
    assert!(s.contains("Seccomp:\t2"), "{out:?}");
    assert!(s.contains("NoNewPrivs:\t1"), "{out:?}");
    // containerd's 14 capabilities.
    assert!(s.contains("CapEff:\t00000000a80425fb"), "{out:?}");
    assert!(s.contains("CapBnd:\t00000000a80425fb"), "{out:?}");
}
