//! The trace wall through the backend trait, on real containers: a denied file cannot be read by
//! the init nor by an exec'd process (and the denial is logged), the TOCTOU race never opens it,
//! and killing the supervisor kills the container.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use moat_backend::trace::{TraceBackend, TraceOptions, supervisor_binary};
use moat_backend::{Backend, ContainerConfig, ExecConfig, ExitStatus, ProcessIo};
use moat_trace::Policy;

/// Prints the project's skip line and returns true where these tests cannot run.
fn skip() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (namespaces, cgroups, ptrace)");
        return true;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: /bin/busybox missing (install busybox-static)");
        return true;
    }
    if let Err(e) = moat_trace::supervisor::probe() {
        eprintln!("SKIPPED: {e}");
        return true;
    }
    if let Err(e) = supervisor_binary() {
        eprintln!("SKIPPED: {e}");
        return true;
    }
    false
}

/// The static probe from `trace/tests/probe/probe.rs`, built once with rustc.
fn probe() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trace/tests/probe/probe.rs");
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().join("moat-trace-probe");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("probe-backend-{}", std::process::id()));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let st = std::process::Command::new(rustc)
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
        assert!(st.success());
        out
    })
    .clone()
}

/// A busybox rootfs with /etc/secret, /etc/allowed and the probe.
fn rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", r.join("bin").join(applet));
        }
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/secret"), "SECRET\n").unwrap();
    std::fs::write(r.join("etc/allowed"), "fine\n").unwrap();
    std::fs::copy(probe(), r.join("bin/probe")).unwrap();
    r
}

const POLICY: &str = "[[paths]]\npath = \"/etc/secret\"\nallow = []\n";

struct Pipe {
    read: std::fs::File,
}

fn pipe() -> (Pipe, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (
        Pipe {
            read: std::fs::File::from(OwnedFd::from(r)),
        },
        OwnedFd::from(w),
    )
}

impl Pipe {
    fn text(mut self) -> String {
        let mut s = String::new();
        self.read.read_to_string(&mut s).unwrap();
        s
    }
}

struct Box_ {
    _dir: tempfile::TempDir,
    backend: TraceBackend,
    rootfs: PathBuf,
    root: PathBuf,
}

fn setup() -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = rootfs(dir.path());
    let root = dir.path().join("state");
    std::fs::create_dir(&root).unwrap();
    let backend = TraceBackend::new(TraceOptions {
        root: root.clone(),
        policy: Policy::parse(POLICY, "test.toml").unwrap(),
        supervisor: None,
    })
    .unwrap();
    Box_ {
        _dir: dir,
        backend,
        rootfs,
        root,
    }
}

fn config(b: &Box_, id: &str, args: &[&str], io: ProcessIo) -> ContainerConfig {
    let mut spec = moat_sandbox::defaults::spec(b.rootfs.to_str().unwrap());
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(p));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(format!("/moat-trace-test-{id}").into()));
    spec.set_linux(Some(linux));
    ContainerConfig {
        id: id.to_string(),
        bundle: b.root.clone(),
        spec,
        io,
        is_sandbox: false,
    }
}

fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Runs `args` as a container's init to the end: (status, stdout, stderr).
fn run(b: &Box_, name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let (out, out_w) = pipe();
    let (err, err_w) = pipe();
    let io = ProcessIo::Fds {
        stdin: None,
        stdout: Some(out_w),
        stderr: Some(err_w),
    };
    let c = b.backend.create(config(b, &id(name), args, io)).unwrap();
    c.start().unwrap();
    let st = c.wait(None).unwrap();
    c.delete(None).unwrap();
    drop(c);
    (st, out.text(), err.text())
}

#[test]
fn the_init_cannot_read_a_denied_file() {
    if skip() {
        return;
    }
    let b = setup();
    let (st, out, err) = run(&b, "deny", &["cat", "/etc/secret"]);
    assert_eq!(st, ExitStatus::Exited(1), "{out}{err}");
    assert!(err.contains("Permission denied"), "{err}");
    let (st, out, _) = run(&b, "allow", &["sh", "-c", "cat /etc/allowed; echo $$"]);
    assert_eq!(st, ExitStatus::Exited(0));
    assert_eq!(out, "fine\n1\n");
}

#[test]
fn an_exec_process_is_supervised_too() {
    if skip() {
        return;
    }
    let b = setup();
    let c = b
        .backend
        .create(config(&b, &id("exec"), &["sleep", "100"], ProcessIo::Null))
        .unwrap();
    c.start().unwrap();
    for (n, (path, want_code, want_out)) in [("/etc/secret", 1, ""), ("/etc/allowed", 0, "fine\n")]
        .into_iter()
        .enumerate()
    {
        let (out, out_w) = pipe();
        let (err, err_w) = pipe();
        let mut process = c_process(&b, &["cat", path]);
        process.set_terminal(Some(false));
        c.exec(ExecConfig {
            exec_id: format!("e{n}"),
            process,
            io: ProcessIo::Fds {
                stdin: None,
                stdout: Some(out_w),
                stderr: Some(err_w),
            },
        })
        .unwrap();
        let st = c.wait(Some(&format!("e{n}"))).unwrap();
        let (out, err) = (out.text(), err.text());
        assert_eq!(st, ExitStatus::Exited(want_code), "{path}: {out}{err}");
        assert_eq!(out, want_out);
        if want_code == 1 {
            assert!(err.contains("Permission denied"), "{err}");
        }
    }
    c.kill(None, libc::SIGKILL, false).unwrap();
    assert_eq!(c.wait(None).unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    c.delete(None).unwrap();
}

fn c_process(b: &Box_, args: &[&str]) -> oci_spec::runtime::Process {
    let spec = moat_sandbox::defaults::spec(b.rootfs.to_str().unwrap());
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p
}

#[test]
fn the_toctou_race_never_opens_the_denied_file_in_a_container() {
    if skip() {
        return;
    }
    let b = setup();
    for mode in ["thread", "process"] {
        let (st, out, err) = run(
            &b,
            &format!("race-{mode}"),
            &[
                "/bin/probe",
                "race",
                "/etc/allowed",
                "/etc/secret",
                "3000",
                mode,
            ],
        );
        assert_eq!(st, ExitStatus::Exited(0), "{out}{err}");
        eprintln!("race in a container ({mode}): {}", out.trim());
        let n: Vec<u64> = out
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(n.len(), 4, "{out}");
        assert_eq!(n[1], 0, "the denied file was opened: {out}");
        assert!(n[0] > 0 && n[2] > 0, "{out}");
    }
}

/// The supervisor processes this test process started (`moat-trace attach`).
fn supervisors() -> Vec<i32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(ch) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for pid in ch.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.starts_with(b"") && String::from_utf8_lossy(&cmd).contains("attach") {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn killing_the_supervisor_kills_the_container() {
    if skip() {
        return;
    }
    let b = setup();
    let name = id("exitkill");
    let c = b
        .backend
        .create(config(
            &b,
            &name,
            &["sh", "-c", "sleep 1000 & sleep 1000"],
            ProcessIo::Null,
        ))
        .unwrap();
    c.start().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.wait_timeout(None, Duration::ZERO).unwrap(), None);
    let pids = c.pids().unwrap();
    assert!(pids.len() >= 2, "{pids:?}");
    let sups: Vec<i32> = supervisors()
        .into_iter()
        .filter(|s| {
            std::fs::read_to_string(format!("/proc/{s}/cmdline"))
                .unwrap_or_default()
                .contains(&c.pid().to_string())
        })
        .collect();
    assert_eq!(sups.len(), 1, "{:?}", supervisors());
    // SAFETY: SIGKILL to the supervisor this test started.
    unsafe { libc::kill(sups[0], libc::SIGKILL) };
    let st = c.wait_timeout(None, Duration::from_secs(20)).unwrap();
    assert_eq!(st, Some(ExitStatus::Signaled(libc::SIGKILL)));
    for p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "{p} still runs: {stat}"
        );
    }
    c.delete(None).unwrap();
}
