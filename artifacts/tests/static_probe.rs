//! The benchmark probe built static by `moat_artifacts::static_bin`: it is static, its timings and
//! isolation records have the promised format, and `idle` stops on EOF of a piped stdin and on
//! SIGTERM, but not on `/dev/null`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use moat_artifacts::static_bin;

/// The probe, built once for all the tests in this file.
fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| static_bin::probe().expect("build the static probe"))
        .clone()
}

/// Stdout of `moat-bench-probe args`, which must succeed.
fn run(args: &[&str]) -> String {
    let out = Command::new(probe()).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn is_static_and_times_calls() {
    let p = probe();
    static_bin::check_static(&p).unwrap();
    let out = run(&["getpid", "1000"]);
    let ns: f64 = out
        .trim()
        .strip_prefix("ns/call ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ns > 0.0, "{out}");
    assert!(run(&["open", "/", "100"]).starts_with("ns/call "));
    let missing = Command::new(&p)
        .args(["open", "/nonexistent/moat-bench-probe", "1"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("ENOENT"));
}

#[test]
fn io_writes_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["io", dir.path().to_str().unwrap(), "4"]);
    let keys: Vec<&str> = out.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(keys, ["write_mib_s", "read_mib_s"], "{out}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "file left"
    );
}

#[test]
fn isolation_prints_a_record_per_probe() {
    let out = run(&["isolation", "--fork-limit", "4", "--memory-mib", "2"]);
    let ids: Vec<&str> = out
        .lines()
        .map(|l| {
            assert!(l.starts_with("{\"probe\":\"") && l.ends_with("\"}"), "{l}");
            assert!(
                l.contains(",\"isolated\":") && l.contains(",\"observed\":\""),
                "{l}"
            );
            l.split('"').nth(3).unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 18, "{out}");
    assert_eq!(ids[0], "kernel");
    assert_eq!(ids[17], "memory_limit");
    // Host facts not passed: those probes cannot decide.
    assert!(
        out.contains(r#"{"probe":"host_network","isolated":null,"#),
        "{out}"
    );
    assert!(
        out.contains(r#"{"probe":"kernel","isolated":null,"#),
        "{out}"
    );
}

/// Starts `moat-bench-probe idle` with `stdin` and waits for its `ready` line.
fn idle(stdin: Stdio) -> Child {
    let mut child = Command::new(probe())
        .arg("idle")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// Whether `child` exits (successfully) within `limit`.
fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn idle_stops_on_pipe_eof_and_sigterm() {
    let mut piped = idle(Stdio::piped());
    drop(piped.stdin.take());
    assert!(
        exits_within(&mut piped, Duration::from_secs(5)),
        "EOF ignored"
    );

    let mut null = idle(Stdio::null());
    assert!(
        !exits_within(&mut null, Duration::from_millis(300)),
        "exited on /dev/null's EOF"
    );
    let pid = i32::try_from(null.id()).unwrap();
    // SAFETY: signalling our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        exits_within(&mut null, Duration::from_secs(5)),
        "SIGTERM ignored"
    );
}
