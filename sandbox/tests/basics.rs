//! A container's view of the world: pid 1, hostname, no host processes, masked and read-only
//! paths, denied mounts, the default seccomp profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Exit, id, root_or_skip, run, spec};

#[test]
fn pid1_hostname_and_no_host_processes() {
    if !root_or_skip("pid1_hostname_and_no_host_processes") {
        return;
    }
    let id = id("basics");
    let out = run(
        &id,
        spec(
            &id,
            &[
                "sh",
                "-c",
                "echo $$; hostname; ls /proc | grep -c '^[0-9]'; exit 7",
            ],
        ),
    );
    assert_eq!(out.exit, Exit::Code(7), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1", "{out:?}");
    assert_eq!(lines[1], "moat-test", "{out:?}");
    let procs: u32 = lines[2].parse().unwrap();
    assert!(procs <= 4, "the container sees {procs} processes: {out:?}");
}
