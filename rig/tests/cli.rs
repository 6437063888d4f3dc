//! `moat-rig run` driven like a user: output, exit status, environment, and every failure it must
//! report with its own status and nothing left behind. Tests that boot L1 take a lock, so only one L1
//! runs at a time (each keeps a core busy for ~10 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_L1_AT_A_TIME: Mutex<()> = Mutex::new(());

fn rig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moat-rig"))
}

/// Skips (returns `None`) when this host cannot boot the rig at all.
fn rig_available() -> Option<()> {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: qemu-system-x86_64 is not installed (scripts/deps.sh installs it)");
        return None;
    }
    Some(())
}

/// A private TMPDIR for one moat-rig process: its run directory goes there, so leftovers are visible.
struct Private(tempfile::TempDir);

impl Private {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Nothing of the run is left: its directory is gone and no process mentions it.
    fn assert_clean(&self) {
        let left: Vec<PathBuf> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        let needle = self.path().to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                assert!(!cmdline.contains(&needle), "still running: {cmdline}");
            }
        }
    }
}

fn run_rig(private: &Private, args: &[&str]) -> Output {
    let out = rig()
        .arg("run")
        .args(args)
        .env("TMPDIR", private.path())
        .output()
        .unwrap();
    eprintln!(
        "moat-rig {args:?} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn runs_cmd_in_l1_and_passes_output_env_cwd_and_status() {
    let Some(()) = rig_available() else { return };
    let _l1 = ONE_L1_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let private = Private::new();
    let log = private.path().join("../rig-console.log");
    let script = "uname -r; pwd; echo \"$TMPDIR\"; echo \"$MOAT_RIG $MOAT_SMOKE_VAR\"; \
                  echo hello > \"$TMPDIR/f\" && cat \"$TMPDIR/f\"; \
                  touch /usr/moat-rig-must-fail 2>/dev/null || echo read-only; \
                  [ -c /dev/kvm ] && [ -c /dev/net/tun ] && echo devices; \
                  echo to-stderr >&2; exit 7";
    let out = run_rig(
        &private,
        &[
            "--keep-log",
            log.to_str().unwrap(),
            "--env",
            "MOAT_SMOKE_VAR=passed",
            "--timings",
            "--module",
            "tun",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");

    let release = moat_rig::kernel::prepare().unwrap().release;
    let host = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    assert_eq!(lines[0], release, "uname -r inside L1 is the Debian kernel");
    assert_ne!(lines[0], host.trim(), "not the host's kernel");
    assert_eq!(lines[1], std::env::current_dir().unwrap().to_str().unwrap());
    assert!(
        lines[2].starts_with(private.path().to_str().unwrap()),
        "TMPDIR {}",
        lines[2]
    );
    assert_eq!(lines[3], "1 passed");
    assert_eq!(lines[4], "hello");
    assert_eq!(lines[5], "read-only");
    assert_eq!(
        lines[6], "devices",
        "/dev/kvm and /dev/net/tun (--module tun)"
    );
    assert!(stderr(&out).contains("to-stderr"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("moat-rig: timings: L1 boot"),
        "{}",
        stderr(&out)
    );
    let console = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert!(console.contains(&release), "console log: {console}");
    private.assert_clean();
}

#[test]
fn missing_cmd_is_reported_before_booting() {
    let private = Private::new();
    let started = Instant::now();
    let out = run_rig(&private, &["--", "no-such-command-for-moat-rig"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("no-such-command-for-moat-rig: command not found"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it should not boot L1"
    );
    private.assert_clean();
}

#[test]
fn missing_qemu_is_reported() {
    let private = Private::new();
    let empty = tempfile::tempdir().unwrap();
    let out = rig()
        .args(["run", "--", "/bin/true"])
        .env("PATH", empty.path())
        .env_remove("MOAT_RIG_QEMU")
        .env("TMPDIR", private.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("qemu-system-x86_64 not found"),
        "{}",
        stderr(&out)
    );
    private.assert_clean();
}

#[test]
fn unavailable_kernel_package_is_reported() {
    if Command::new("apt-cache").arg("--version").output().is_err() {
        eprintln!("SKIPPED: apt-cache is not installed");
        return;
    }
    let private = Private::new();
    let cache = tempfile::tempdir().unwrap();
    let out = rig()
        .args(["run", "--", "/bin/true"])
        .env(
            "MOAT_RIG_KERNEL_PACKAGE",
            "linux-image-0.0.0-no-such-kernel-amd64",
        )
        .env("MOAT_CACHE_DIR", cache.path())
        .env("TMPDIR", private.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not available"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("MOAT_RIG_KERNEL_PACKAGE"),
        "{}",
        stderr(&out)
    );
    private.assert_clean();
    assert!(!cache.path().join("rig-kernel").exists(), "nothing cached");
}

#[test]
fn bad_options_are_rejected() {
    let private = Private::new();
    let out = run_rig(&private, &["--mem", "lots", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--mem lots"), "{}", stderr(&out));
    let out = run_rig(&private, &[]);
    assert_eq!(out.status.code(), Some(125), "no CMD");
    private.assert_clean();
}

#[test]
fn timeout_stops_l1() {
    let Some(()) = rig_available() else { return };
    let _l1 = ONE_L1_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let private = Private::new();
    let out = run_rig(&private, &["--timeout", "20", "--", "sleep", "600"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("timed out after 20 s"),
        "{}",
        stderr(&out)
    );
    private.assert_clean();
}

#[test]
fn l1_panic_is_reported() {
    let Some(()) = rig_available() else { return };
    let _l1 = ONE_L1_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let private = Private::new();
    let out = run_rig(
        &private,
        &["--", "sh", "-c", "echo c > /proc/sysrq-trigger; sleep 60"],
    );
    assert_eq!(out.status.code(), Some(123), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("L1 died before CMD's exit status"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("sysrq triggered crash"),
        "console tail: {}",
        stderr(&out)
    );
    private.assert_clean();
}

#[test]
fn cpu_without_svm_is_a_kvm_failure() {
    let Some(()) = rig_available() else { return };
    let _l1 = ONE_L1_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let private = Private::new();
    let out = run_rig(&private, &["--cpu", "qemu64,-svm", "--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KVM failed to load in L1"),
        "{}",
        stderr(&out)
    );
    private.assert_clean();
}

#[test]
fn sigterm_stops_l1_and_cleans_up() {
    let Some(()) = rig_available() else { return };
    let _l1 = ONE_L1_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let private = Private::new();
    let child = rig()
        .args(["run", "--", "sleep", "600"])
        .env("TMPDIR", private.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 15), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted by signal 15"),
        "{}",
        stderr(&out)
    );
    private.assert_clean();
}
