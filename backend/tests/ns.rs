//! The `ns` backend through the [`Backend`]/[`Instance`] trait, as the shim uses it: several
//! containers and execs in one multithreaded process, every exit collected by the reaper.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use moat_backend::ns::{NsBackend, NsOptions};
use moat_backend::{Backend, ContainerConfig, ExecConfig, ExitStatus, Instance, ProcessIo, Spec};

fn root_or_skip() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the ns backend needs root");
        return false;
    }
    true
}

struct Pod {
    dir: tempfile::TempDir,
    backend: NsBackend,
}

impl Pod {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("moat-ns-")
            .tempdir()
            .unwrap();
        let backend = NsBackend::new(NsOptions {
            root: dir.path().join("state"),
        })
        .unwrap();
        Self { dir, backend }
    }

    fn spec(&self, args: &[&str], memory: Option<i64>) -> Spec {
        let mut spec = moat_sandbox::defaults::spec(
            moat_artifacts::image::busybox()
                .unwrap()
                .rootfs
                .to_str()
                .unwrap(),
        );
        let mut root = spec.root().clone().unwrap();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(p));
        if let Some(m) = memory {
            let mut linux = spec.linux().clone().unwrap();
            let mut res = linux.resources().clone().unwrap_or_default();
            let mut mem = res.memory().unwrap_or_default();
            mem.set_limit(Some(m));
            mem.set_swap(Some(m));
            res.set_memory(Some(mem));
            linux.set_resources(Some(res));
            spec.set_linux(Some(linux));
        }
        spec
    }

    fn create(&self, id: &str, spec: Spec, io: ProcessIo) -> Box<dyn Instance> {
        self.backend
            .create(ContainerConfig {
                id: id.into(),
                bundle: self.dir.path().to_path_buf(),
                spec,
                io,
                is_sandbox: false,
            })
            .unwrap()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

fn pipe() -> (OwnedFd, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just created.
    unsafe {
        use std::os::fd::FromRawFd;
        (
            OwnedFd::from_raw_fd(fds[1]),
            std::fs::File::from_raw_fd(fds[0]),
        )
    }
}

fn read_all(mut f: std::fs::File) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    s
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn many_waiters_exec_and_delete() {
    if !root_or_skip() {
        return;
    }
    let pod = Pod::new();
    let id = format!("ns-{}-a", std::process::id());
    let c: Arc<dyn Instance> =
        Arc::from(pod.create(&id, pod.spec(&["sleep", "600"], None), ProcessIo::Null));
    c.start().unwrap();
    assert_eq!(
        c.wait_timeout(None, Duration::from_millis(50)).unwrap(),
        None
    );

    // An exec with its stdout on a pipe; its exit is seen by the reaper, not stolen.
    let (w, r) = pipe();
    let mut process = pod
        .spec(&["sh", "-c", "echo $$; exit 5"], None)
        .process()
        .clone()
        .unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo exec; exit 5".into(),
    ]));
    let pid = c
        .exec(ExecConfig {
            exec_id: "e1".into(),
            process,
            io: ProcessIo::Fds {
                stdin: None,
                stdout: Some(w),
                stderr: None,
            },
        })
        .unwrap();
    assert!(pid > 0);
    assert_eq!(read_all(r), "exec\n");
    assert_eq!(c.wait(Some("e1")).unwrap(), ExitStatus::Exited(5));
    assert_eq!(c.delete(Some("e1")).unwrap(), Some(ExitStatus::Exited(5)));
    assert!(c.pids().unwrap().len() == 1);

    // Four threads wait on the init; a kill ends them all with the same status.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.wait(None).unwrap())
        })
        .collect();
    c.kill(None, libc::SIGKILL, false).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    }
    assert!(
        c.kill(None, libc::SIGTERM, false).is_err(),
        "killing an exited init"
    );
    assert_eq!(
        c.delete(None).unwrap(),
        Some(ExitStatus::Signaled(libc::SIGKILL))
    );
    assert_eq!(
        c.delete(None).unwrap(),
        Some(ExitStatus::Signaled(libc::SIGKILL))
    );
    assert!(empty(&pod.state_dir()));
}

#[test]
fn oom_kill_is_reported_and_shutdown_cleans_up() {
    if !root_or_skip() {
        return;
    }
    let pod = Pod::new();
    let pid = std::process::id();
    let oom = pod.create(
        &format!("ns-{pid}-oom"),
        pod.spec(&["sh", "-c", "exec tail /dev/zero"], Some(32 << 20)),
        ProcessIo::Null,
    );
    let idle = pod.create(
        &format!("ns-{pid}-idle"),
        pod.spec(&["sleep", "600"], None),
        ProcessIo::Null,
    );
    oom.start().unwrap();
    idle.start().unwrap();
    assert_eq!(oom.wait(None).unwrap(), ExitStatus::OomKilled);
    assert_eq!(oom.wait(None).unwrap().code(), 137);
    let st = idle.stats().unwrap();
    assert!(st.pids_current >= 1, "{st:?}");
    idle.pause().unwrap();
    idle.resume().unwrap();
    // A second container with the same id is refused.
    let dup = pod.backend.create(ContainerConfig {
        id: format!("ns-{pid}-idle"),
        bundle: pod.dir.path().to_path_buf(),
        spec: pod.spec(&["true"], None),
        io: ProcessIo::Null,
        is_sandbox: false,
    });
    assert!(matches!(dup, Err(moat_backend::Error::AlreadyExists(_))));
    pod.backend.shutdown().unwrap();
    assert_eq!(
        idle.wait(None).unwrap(),
        ExitStatus::Signaled(libc::SIGKILL)
    );
    assert!(empty(&pod.state_dir()));
    drop((oom, idle));
}
