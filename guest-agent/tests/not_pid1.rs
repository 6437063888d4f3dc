//! Started by hand (not as the guest's PID 1), the agent refuses, says why, and touches nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn refuses_to_run_unless_pid1() {
    let out = Command::new(env!("CARGO_BIN_EXE_moat-agent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as PID 1, but it is PID"), "{err}");
    assert!(err.contains("initramfs"), "says where it belongs: {err}");
    assert!(out.stdout.is_empty(), "printed a ready line: {out:?}");
}
