//! `moat run --backend vm` as a user meets it: the container runs on the guest's own kernel, exit
//! codes and OOM kills come back as with the other walls, and a flood of output arrives intact.
//! These boot Linux guests, so they run directly on hardware KVM and in the KVM rig elsewhere;
//! on a host whose KVM cannot run guests, moat must refuse at once with a clear message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Backend, Ctx, output};

/// Runs `body` with a vm context where guests can run: here, or in the rig (re-running this test
/// there). Prints SKIPPED where neither works.
fn on_vm(body: impl FnOnce(&Ctx)) {
    if support::skip_unless_root() {
        return;
    }
    if support::backends().contains(&Backend("vm")) {
        body(&Ctx::new(Backend("vm")));
    } else if support::rig_backends().contains(&Backend("vm")) {
        moat_rig::harness::rerun_in_rig_with_env(&[("MOAT_TEST_BACKENDS", "vm")]);
    } else {
        eprintln!("SKIPPED: the vm backend runs neither here nor in the KVM rig");
    }
}

#[test]
fn the_guest_has_its_own_kernel_and_exit_codes_come_back() {
    on_vm(|ctx| {
        let out = ctx.run(&[], &["uname", "-r"]);
        let release = out.ok().trim().to_string();
        let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_ne!(
            release,
            host.trim(),
            "the vm backend must not share the host kernel"
        );
        let guest = match moat_artifacts::kernel::status() {
            moat_artifacts::kernel::Status::Built(k) => k.version,
            s => panic!("no guest kernel: {s:?}"),
        };
        assert_eq!(release, guest, "the container runs on moat's guest kernel");

        assert_eq!(ctx.sh("exit 7").code, 7);
        assert_eq!(ctx.sh("echo $$").ok(), "1\n");
    });
}

#[test]
fn the_memory_limit_kills_inside_the_guest_with_137() {
    on_vm(|ctx| {
        let out = ctx.run(&["--memory", "64M"], &["sh", "-c", "tail /dev/zero"]);
        assert_eq!(out.code, 137, "{out:#?}");
    });
}

#[test]
fn ten_mib_of_stdout_arrive_intact() {
    on_vm(|ctx| {
        // 10 MiB of a non-repeating pattern (a counter), and its checksum computed in the guest.
        let out = ctx.sh(
            "seq 1 1500000 | head -c 10485760 > /tmp/out; md5sum < /tmp/out >&2; \
             wc -c < /tmp/out >&2; cat /tmp/out",
        );
        assert_eq!(out.code, 0, "stderr: {}", out.stderr);
        assert_eq!(out.stdout.len(), 10 << 20);
        let mut lines = out.stderr.lines();
        let guest_md5 = lines
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        assert_eq!(lines.next().unwrap().trim(), (10 << 20).to_string());
        let mut md5 = std::process::Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        md5.stdin
            .take()
            .unwrap()
            .write_all(out.stdout.as_bytes())
            .unwrap();
        let host = md5.wait_with_output().unwrap();
        let host_md5 = String::from_utf8_lossy(&host.stdout);
        assert_eq!(host_md5.split_whitespace().next().unwrap(), guest_md5);
    });
}

#[test]
fn a_host_that_cannot_run_guests_is_refused_at_once() {
    if support::skip_unless_root() {
        return;
    }
    if moat_host::kvm::probe().runs_linux_guests() {
        eprintln!("SKIPPED: this host runs guests: nothing to refuse");
        return;
    }
    let ctx = Ctx::new(Backend("vm"));
    let started = std::time::Instant::now();
    let out = output(
        &mut ctx.run_command(&ctx.fresh_id(), &[], &["true"]),
        Duration::from_secs(30),
    );
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("moat check --backend vm"), "{out:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusing must not hang"
    );
}
