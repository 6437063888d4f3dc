//! The supervisor on plain processes (`moat-trace run`, no namespaces): exit statuses and signals
//! pass through, denials are refused and logged, the TOCTOU race never opens the denied file, the
//! workload cannot escape, and killing the supervisor kills the workload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn moat_trace() -> &'static str {
    env!("CARGO_BIN_EXE_moat-trace")
}

/// Prints the project's skip line and returns true when the host cannot run the supervisor.
fn skip() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (ptrace of children, pidfd_getfd, map_files)");
        return true;
    }
    if let Err(e) = moat_trace::supervisor::probe() {
        eprintln!("SKIPPED: {e}");
        return true;
    }
    false
}

/// The probe (`tests/probe/probe.rs`), built once per test binary with rustc, statically.
fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.rs");
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().join("moat-trace-probe");
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join(format!("probe-{}", std::process::id()));
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let st = Command::new(rustc)
                .args([
                    "--edition",
                    "2024",
                    "-O",
                    "-C",
                    "target-feature=+crt-static",
                ])
                .arg(&src)
                .arg("-o")
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success(), "building the probe failed");
            out
        })
        .clone()
}

struct Out {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(policy: Option<&Path>, json: bool, cmd: &[&str]) -> Out {
    let mut c = Command::new(moat_trace());
    c.arg("run");
    if let Some(p) = policy {
        c.arg("--policy").arg(p);
    }
    if json {
        c.arg("--json");
    }
    let out = c.arg("--").args(cmd).stdin(Stdio::null()).output().unwrap();
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn exit_codes_and_signals_pass_through() {
    if skip() {
        return;
    }
    let o = run(
        None,
        false,
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!(o.status.code(), Some(7), "{}", o.stderr);
    assert_eq!(o.stdout, "out\n");
    assert_eq!(o.stderr, "err\n");
    let o = run(None, false, &["/bin/sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.signal(), Some(libc::SIGTERM), "{}", o.stderr);
    // A signal with a handler reaches it (re-injected at the signal-delivery stop).
    let o = run(
        None,
        false,
        &[
            "/bin/sh",
            "-c",
            "trap 'echo got USR1' USR1; kill -USR1 $$; echo after",
        ],
    );
    assert_eq!(o.stdout, "got USR1\nafter\n", "{}", o.stderr);
    // Pipelines, subshells, many short processes.
    let o = run(
        None,
        false,
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3; do cat /etc/hostname | wc -l; done | sort -u",
        ],
    );
    assert_eq!(o.stdout, "1\n", "{}", o.stderr);
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) else {
            continue;
        };
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.trim().chars().next()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn group_stop_holds_until_sigcont() {
    if skip() {
        return;
    }
    let mut child = Command::new(moat_trace())
        .args(["run", "--", "/bin/sh", "-c", "kill -STOP $$; echo resumed"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sh = 0;
    wait_until("the shell stops", || {
        sh = descendants(child.id()).first().copied().unwrap_or(0);
        sh != 0 && state(sh) == Some('t') || state(sh) == Some('T')
    });
    // Stopped, and it stays stopped.
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(state(sh), Some('t' | 'T')), "{:?}", state(sh));
    // SAFETY: a signal to the shell we started.
    unsafe { libc::kill(sh as i32, libc::SIGCONT) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(out, "resumed\n");
}

#[test]
fn denied_path_fails_with_permission_denied_and_is_logged() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("secret");
    std::fs::write(&secret, "hunter2\n").unwrap();
    let p = policy(
        d.path(),
        &format!(
            "[[paths]]\npath = {:?}\nallow = []\n",
            secret.to_str().unwrap()
        ),
    );
    let o = run(Some(&p), true, &["cat", secret.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("Permission denied"), "{}", o.stderr);
    assert!(!o.stdout.contains("hunter2"));
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON decision line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let f = &v["fields"];
    assert_eq!(f["syscall"], "openat", "{line}");
    assert!(f["args"].as_str().unwrap().contains("secret"), "{line}");
    assert!(
        f["rule"].as_str().unwrap().contains("policy.toml:1"),
        "{line}"
    );
    assert_eq!(f["action"], "denied EACCES", "{line}");
    assert!(f["pid"].as_i64().unwrap() > 0, "{line}");
    // Through a symlink, a relative path, /proc/self/root and a hard-link attempt: the same.
    std::os::unix::fs::symlink(&secret, d.path().join("link")).unwrap();
    let script = format!(
        "cd {dir}; cat link; cat ./secret; cat /proc/self/root{s}; ln secret hard; cat hard; \
         echo done",
        dir = d.path().display(),
        s = secret.display()
    );
    let o = run(Some(&p), false, &["/bin/sh", "-c", &script]);
    assert!(!o.stdout.contains("hunter2"), "{}", o.stdout);
    assert!(o.stdout.ends_with("done\n"), "{}", o.stderr);
    let denials = o
        .stderr
        .lines()
        .filter(|l| l.contains("syscall denied EACCES"));
    assert_eq!(denials.count(), 4, "{}", o.stderr);
}

#[test]
fn bad_policy_is_rejected_before_the_workload_starts() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = policy(d.path(), "[[paths]]\npath = \"relative\"\nallow = []\n");
    let marker = d.path().join("ran");
    let o = run(Some(&p), false, &["touch", marker.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        o.stderr
            .contains("policy.toml:2:8: path \"relative\" is not absolute"),
        "{}",
        o.stderr
    );
    assert!(!marker.exists());
}

fn race(mode: &str) {
    let d = tempfile::tempdir().unwrap();
    let allowed = d.path().join("allowed");
    let denied = d.path().join("denied");
    std::fs::write(&allowed, "fine\n").unwrap();
    std::fs::write(&denied, "SECRET\n").unwrap();
    let p = policy(
        d.path(),
        &format!(
            "[[paths]]\npath = {:?}\nallow = []\n",
            denied.to_str().unwrap()
        ),
    );
    let probe = probe();
    let o = run(
        Some(&p),
        false,
        &[
            probe.to_str().unwrap(),
            "race",
            allowed.to_str().unwrap(),
            denied.to_str().unwrap(),
            "4000",
            mode,
        ],
    );
    assert!(o.status.success(), "{}", o.stderr);
    let n: Vec<u64> = o
        .stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [allowed_n, denied_n, refused, raced] = n[..] else {
        panic!("unexpected probe output {:?}", o.stdout);
    };
    eprintln!("race ({mode}): {}", o.stdout.trim());
    assert_eq!(denied_n, 0, "the denied file was opened: {}", o.stdout);
    assert!(
        allowed_n > 0 && refused > 0,
        "the race did not alternate: {}",
        o.stdout
    );
    assert!(raced > 0, "no call overlapped a swap: {}", o.stdout);
}

#[test]
fn toctou_race_with_a_thread_never_opens_the_denied_file() {
    if skip() {
        return;
    }
    race("thread");
}

#[test]
fn toctou_race_with_a_process_sharing_the_page_never_opens_the_denied_file() {
    if skip() {
        return;
    }
    race("process");
}

#[test]
fn the_workload_cannot_escape() {
    if skip() {
        return;
    }
    let probe = probe();
    let o = run(None, false, &[probe.to_str().unwrap(), "escape"]);
    let got: Vec<&str> = o.stdout.lines().collect();
    let want = [
        "ptrace: errno 1",
        "process_vm_writev: errno 1",
        "pidfd_getfd: errno 1",
        "io_uring_setup: errno 1",
        "clone3: errno 38",
        "unshare-user: errno 1",
        "seccomp-listener: errno 1",
        "keyctl: errno 1",
        "socket-packet: errno 1",
        "socket-raw: errno 1",
    ];
    assert_eq!(&got[..want.len()], want, "{}", o.stderr);
    assert!(got[want.len()].starts_with("getpid: ok"), "{got:?}");
    // Each refusal is logged.
    assert_eq!(
        o.stderr.matches("syscall denied").count(),
        9,
        "{}",
        o.stderr
    );
}

#[test]
fn the_pinned_region_cannot_be_changed() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // Let /proc/self/mem be opened for writing, so the kernel itself must refuse the write.
    let p = policy(
        d.path(),
        "[[paths]]\npath = \"/proc/*/mem\"\nallow = [\"all\"]\n",
    );
    let probe = probe();
    let o = run(Some(&p), false, &[probe.to_str().unwrap(), "attack"]);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines[0].starts_with("region: "), "{}", o.stdout);
    for l in &lines[1..] {
        assert!(l.contains("errno"), "{l}: {}", o.stdout);
    }
    assert_eq!(lines.len(), 6, "{}", o.stdout);
}

#[test]
fn killing_the_supervisor_kills_the_workload() {
    if skip() {
        return;
    }
    let mut child = Command::new(moat_trace())
        .args([
            "run",
            "--",
            "/bin/sh",
            "-c",
            "sleep 1000 & sleep 1000 & wait",
        ])
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    wait_until("the workload starts", || {
        pids = descendants(child.id());
        pids.len() >= 3
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("every workload process is gone", || {
        pids.iter().all(|p| matches!(state(*p), None | Some('Z')))
    });
}

#[test]
fn exec_allow_list_and_scripts() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\necho script ran\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let p = policy(
        d.path(),
        &format!(
            "[exec]\nallow = [\"/bin\", \"/usr/bin\", {:?}]\n",
            script.to_str().unwrap()
        ),
    );
    let o = run(Some(&p), false, &[script.to_str().unwrap()]);
    assert_eq!(o.stdout, "script ran\n", "{}", o.stderr);
    let o = run(
        Some(&p),
        false,
        &[
            "/bin/sh",
            "-c",
            "/sbin/ldconfig --help >/dev/null; echo rc=$?",
        ],
    );
    assert!(o.stdout.contains("rc=126"), "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("[exec] allow-list"), "{}", o.stderr);
}
