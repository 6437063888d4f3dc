//! Shared helpers for the integration tests: a busybox rootfs built once per test binary from
//! Debian's busybox-static, bundles with containerd's default spec, and a run-to-completion helper.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use moat_sandbox::{Container, CreateOptions, Spec, Stdio, defaults};
use oci_spec::runtime::Mount;

/// True when running as root; otherwise prints a SKIPPED line.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: {test}: needs root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: {test}: /bin/busybox missing (install busybox-static)");
        return false;
    }
    true
}

/// A busybox rootfs, built once per test binary.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let t = tempfile::Builder::new()
                .prefix("moat-rootfs-")
                .tempdir()
                .unwrap();
            let r = t.path();
            for d in [
                "bin",
                "etc",
                "proc",
                "sys",
                "dev",
                "tmp",
                "root",
                "usr/bin",
                "lib64",
                "lib/x86_64-linux-gnu",
                "mnt",
                "run",
            ] {
                std::fs::create_dir_all(r.join(d)).unwrap();
            }
            std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
            // Mount targets exist already, so a user-namespaced root (which cannot write here)
            // can mount on them.
            std::fs::write(r.join("usr/bin/moat-probe"), "").unwrap();
            let list = std::process::Command::new("/bin/busybox")
                .arg("--list")
                .output()
                .unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                if applet != "busybox" {
                    let _ = symlink("busybox", r.join("bin").join(applet));
                }
            }
            std::fs::write(
                r.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            )
            .unwrap();
            std::fs::write(
                r.join("etc/group"),
                "root:x:0:\ntty:x:5:\nnobody:x:65534:\n",
            )
            .unwrap();
            // The whole tree must be traversable by mapped users too.
            std::fs::set_permissions(r, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            t
        })
        .path()
}

/// The probe binary, built by cargo for integration tests.
pub fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moat-probe"))
}

fn bind(src: &Path, dest: &str) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(src.to_path_buf()));
    m.set_options(Some(vec![
        "rbind".into(),
        "ro".into(),
        "nosuid".into(),
        "nodev".into(),
    ]));
    m
}

/// containerd's default spec over the shared rootfs, running `args`, hostname `moat-test`,
/// cgroup `/moat-test-<id>`, with the probe and the host's libraries bound in (read-only).
pub fn spec(id: &str, args: &[&str]) -> Spec {
    let mut spec = defaults::spec(rootfs().to_str().unwrap());
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(p));
    spec.set_hostname(Some("moat-test".into()));
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(bind(&probe(), "/usr/bin/moat-probe"));
    mounts.push(bind(Path::new("/lib64"), "/lib64"));
    mounts.push(bind(
        Path::new("/lib/x86_64-linux-gnu"),
        "/lib/x86_64-linux-gnu",
    ));
    spec.set_mounts(Some(mounts));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(format!("/moat-test-{id}").into()));
    spec.set_linux(Some(linux));
    spec
}

/// A unique container id for a test.
pub fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A state root and a bundle directory for one test.
pub struct Env {
    pub root: tempfile::TempDir,
    pub bundle: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            root: tempfile::Builder::new()
                .prefix("moat-state-")
                .tempdir()
                .unwrap(),
            bundle: tempfile::Builder::new()
                .prefix("moat-bundle-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn create(&self, id: &str, spec: Spec, stdio: Stdio) -> moat_sandbox::Result<Container> {
        Container::create(CreateOptions {
            root: self.root.path().to_path_buf(),
            id: id.to_string(),
            bundle: self.bundle.path().to_path_buf(),
            spec,
            stdio,
            extra_seccomp: Vec::new(),
        })
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Waits for our child `pid`.
pub fn wait(pid: i32) -> Exit {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        r,
        pid,
        "waitpid({pid}): {}",
        std::io::Error::last_os_error()
    );
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    }
}

/// Pipes for stdout and stderr, and threads reading them.
pub struct Capture {
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

pub fn capture() -> (Stdio, Capture) {
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let (mut err_r, err_w) = std::io::pipe().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out_r.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err_r.read_to_string(&mut s).unwrap();
        s
    });
    let stdio = Stdio::Fds {
        stdin: None,
        stdout: Some(OwnedFd::from(out_w)),
        stderr: Some(OwnedFd::from(err_w)),
    };
    (stdio, Capture { out, err })
}

impl Capture {
    pub fn finish(self) -> (String, String) {
        (self.out.join().unwrap(), self.err.join().unwrap())
    }
}

/// What a container run produced.
#[derive(Debug)]
pub struct Output {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
    pub oom_kills: u64,
}

/// Creates, starts, waits for and deletes a container; returns its output.
pub fn run(id: &str, spec: Spec) -> Output {
    let env = Env::new();
    let (stdio, cap) = capture();
    let c = env
        .create(id, spec, stdio)
        .unwrap_or_else(|e| panic!("create {id}: {e}"));
    if let Err(e) = c.start() {
        let pid = c.pid();
        c.delete(true).unwrap();
        wait(pid);
        panic!("start {id}: {e}; container output: {:?}", cap.finish());
    }
    let exit = wait(c.pid());
    let oom_kills = c.oom_kills();
    let cgroup_dirs: Vec<PathBuf> = c.cgroup().dirs.iter().map(|d| d.path.clone()).collect();
    c.delete(true).unwrap();
    for d in cgroup_dirs {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    assert!(!env.root.path().join(id).exists(), "state left behind");
    let (stdout, stderr) = cap.finish();
    Output {
        exit,
        stdout,
        stderr,
        oom_kills,
    }
}

/// Force-deletes a container when dropped (a failed assertion must not leak a running one).
pub struct Cleanup {
    root: PathBuf,
    id: String,
}

impl Cleanup {
    pub fn new(env: &Env, id: &str) -> Cleanup {
        Cleanup {
            root: env.root.path().to_path_buf(),
            id: id.to_string(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(c) = Container::load(&self.root, &self.id) {
            let pid = c.pid();
            let _ = c.delete(true);
            // SAFETY: reaping our own child if it is one; harmless otherwise.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}
