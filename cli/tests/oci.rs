//! The OCI runtime verbs across processes, as containerd's runc shim uses them: each verb is a
//! separate `moat` process working on the state under `--root`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Out, output};

struct Oci {
    dir: tempfile::TempDir,
}

impl Oci {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("moat-oci-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn moat(&self, args: &[&str]) -> Out {
        let mut c = Command::new(support::moat());
        c.arg("--root").arg(self.root()).args(args);
        output(&mut c, Duration::from_secs(60))
    }

    /// A bundle running `args` on the shared image rootfs (read-only root).
    fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let mut spec = moat_sandbox::defaults::spec("/");
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(p));
        let mut root = spec.root().clone().unwrap();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
        let bundle = self.dir.path().join(name);
        moat_artifacts::image::write_bundle(&bundle, &support::image_rootfs(), &spec).unwrap();
        bundle
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let out = self.moat(&["state", id]);
        serde_json::from_str(out.ok()).unwrap()
    }

    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state(id)["status"] != want {
            assert!(Instant::now() < deadline, "{id} never became {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A container id unique to this test process.
fn uid(name: &str) -> String {
    format!("oci-{}-{name}", std::process::id())
}

fn b(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn create_start_state_kill_delete_across_processes() {
    if support::skip_unless_root() {
        return;
    }
    let t = Oci::new();
    let c1 = uid("c1");
    let bundle = t.bundle("b1", &["sleep", "600"]);
    let pid_file = t.dir.path().join("init.pid");
    let out = t.moat(&[
        "create",
        "--bundle",
        b(&bundle),
        "--pid-file",
        b(&pid_file),
        &c1,
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let st = t.state(&c1);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], c1.as_str());
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(st["pid"].to_string(), pid);
    assert_eq!(st["bundle"], b(&bundle));
    assert!(st["created"].as_str().unwrap().ends_with('Z'));

    // Creating the same id again is refused and changes nothing.
    let out = t.moat(&["create", "--bundle", b(&bundle), &c1]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("already exists"), "{out:#?}");

    t.moat(&["start", &c1]).ok();
    assert_eq!(t.state(&c1)["status"], "running");
    let out = t.moat(&["start", &c1]);
    assert_ne!(out.code, 0, "a second start must fail: {out:#?}");

    let pids: Vec<u32> =
        serde_json::from_str(t.moat(&["ps", "--format", "json", &c1]).ok()).unwrap();
    assert_eq!(pids, [pid.parse::<u32>().unwrap()]);

    let ev: serde_json::Value =
        serde_json::from_str(t.moat(&["events", "--stats", &c1]).ok()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["data"]["pids"]["current"], 1);

    t.moat(&["pause", &c1]).ok();
    assert_eq!(t.state(&c1)["status"], "paused");
    t.moat(&["resume", &c1]).ok();
    assert_eq!(t.state(&c1)["status"], "running");

    // A running container is not deleted without --force.
    let out = t.moat(&["delete", &c1]);
    assert_ne!(out.code, 0, "{out:#?}");
    t.moat(&["kill", &c1, "KILL"]).ok();
    t.wait_status(&c1, "stopped");
    let out = t.moat(&["kill", &c1, "TERM"]);
    assert!(out.stderr.contains("container not running"), "{out:#?}");
    t.moat(&["delete", &c1]).ok();
    let out = t.moat(&["state", &c1]);
    assert!(out.stderr.contains("does not exist"), "{out:#?}");
    let out = t.moat(&["delete", &c1]);
    assert!(out.stderr.contains("does not exist"), "{out:#?}");
    t.moat(&["delete", "--force", &c1]).ok();
    support::assert_clean(&t.root(), &c1);
}

#[test]
fn exec_ps_update_and_force_delete() {
    if support::skip_unless_root() {
        return;
    }
    let t = Oci::new();
    let c2 = uid("c2");
    let bundle = t.bundle("b2", &["sleep", "600"]);
    t.moat(&["create", "--bundle", b(&bundle), &c2]).ok();
    t.moat(&["start", &c2]).ok();

    // What containerd's shim passes: --process FILE --detach --pid-file F.
    let process = t.dir.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"args":["sleep","300"],"cwd":"/","user":{"uid":0,"gid":0},"env":["PATH=/bin"]}"#,
    )
    .unwrap();
    let pid_file = t.dir.path().join("exec.pid");
    t.moat(&[
        "exec",
        "--process",
        b(&process),
        "--detach",
        "--pid-file",
        b(&pid_file),
        &c2,
    ])
    .ok();
    let exec_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let pids: Vec<u32> =
        serde_json::from_str(t.moat(&["ps", "--format", "json", &c2]).ok()).unwrap();
    assert!(pids.contains(&exec_pid) && pids.len() == 2, "{pids:?}");

    // A foreground exec returns the process's status.
    let out = t.moat(&["exec", &c2, "sh", "-c", "echo in; exit 4"]);
    assert_eq!((out.code, out.stdout.as_str()), (4, "in\n"), "{out:#?}");

    // update --resources - (stdin), as go-runc sends it.
    let mut c = Command::new(support::moat());
    c.arg("--root")
        .arg(t.root())
        .args(["update", "--resources=-", &c2]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"pids":{"limit":50}}"#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let ev: serde_json::Value =
        serde_json::from_str(t.moat(&["events", "--stats", &c2]).ok()).unwrap();
    assert_eq!(ev["data"]["pids"]["limit"], 50);

    // kill --all reaches the exec'd process too; delete --force removes a running container.
    t.moat(&["delete", "--force", &c2]).ok();
    support::assert_clean(&t.root(), &c2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{exec_pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{exec_pid}/stat"))
            .unwrap_or_default()
            .contains(" Z ")
    {
        assert!(
            Instant::now() < deadline,
            "exec'd process {exec_pid} survived delete --force"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_config_on_create_is_named_and_leaves_nothing() {
    if support::skip_unless_root() {
        return;
    }
    let t = Oci::new();
    let (bad1, bad2) = (uid("bad1"), uid("bad2"));
    let bundle = t.dir.path().join("bad");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(
        bundle.join("config.json"),
        r#"{"ociVersion":"1.0.2","root":{"path":"/nonexistent-root"},"process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}],"cgroupsPath":"/moat-oci-bad"}}"#,
    )
    .unwrap();
    let log = t.dir.path().join("log.json");
    let out = t.moat(&[
        "--log",
        b(&log),
        "--log-format",
        "json",
        "create",
        "--bundle",
        b(&bundle),
        &bad1,
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("nonexistent-root"), "{out:#?}");
    // containerd reads the last error line of --log.
    let last = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(
        v["msg"].as_str().unwrap().contains("nonexistent-root"),
        "{v}"
    );
    support::assert_clean(&t.root(), &bad1);
    assert!(support::cgroup_dirs("moat-oci-bad").is_empty());

    let out = t.moat(&["create", "--bundle", b(t.dir.path()), &bad2]);
    assert!(out.stderr.contains("config.json"), "{out:#?}");
    let out = t.moat(&["kill", "nope", "SIGNOPE"]);
    assert!(out.stderr.contains("unknown signal"), "{out:#?}");
    let out = t.moat(&["--systemd-cgroup", "state", "x"]);
    assert!(out.stderr.contains("--systemd-cgroup"), "{out:#?}");
}
