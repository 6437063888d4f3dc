//! Containers through the agent's RPC server, for real, on this host as root: erofs and ext4
//! images on loop devices stand in for the guest's virtio-blk disks (`<dev>/vda` is a symlink to
//! the loop device), `moat-sandbox` runs the containers, and this process plays PID 1's part:
//! it reaps with `power::reap_all` under `SPAWN_LOCK` and hands exits to the server, as
//! `pid1::run` does in the guest. The host is driven over `UnixStream::pair()` (no vsock).
//!
//! One test function: the reaper's `waitpid(-1)` would take other tests' children.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use moat_agent::server::{Options, Paths, Server};
use moat_agent_proto::{
    CreateContainer, ErrorKind, ExecProcess, ExitStatus, Request, Response, Rootfs, StdioPlan,
    Stream, VERSION, read_frame, write_frame,
};
use serde_json::{Value, json};

fn missing() -> Option<String> {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    for tool in ["/bin/busybox", "/dev/loop-control"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing"));
        }
    }
    for tool in ["mkfs.erofs", "mkfs.ext4", "losetup"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("{tool} is missing"));
        }
    }
    None
}

/// A busybox root file system tree.
fn rootfs_tree(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "run"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Read-only loop devices over images, linked as `<dev>/vdX`.
struct Disks {
    loops: Vec<String>,
}

impl Disks {
    fn attach(&mut self, image: &Path, dev: &Path, name: &str) {
        let lo = run(Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(image));
        std::os::unix::fs::symlink(&lo, dev.join(name)).unwrap();
        self.loops.push(lo);
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        let _spawning = moat_agent::spawn_lock();
        for lo in &self.loops {
            let _ = Command::new("losetup").args(["-d", lo]).status();
        }
    }
}

/// PID 1's part: reap every child under the spawn lock and report it to the server.
fn reaper(server: Arc<Server>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            {
                let _spawning = moat_agent::spawn_lock();
                moat_agent::power::reap_all(&mut moat_agent::sys::Linux, &mut |pid, status| {
                    server.child_exited(pid, status);
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

struct Host {
    server: Arc<Server>,
}

impl Host {
    fn connect(&self, first: &Request) -> (UnixStream, Response) {
        let (mut host, agent) = UnixStream::pair().unwrap();
        let server = self.server.clone();
        std::thread::spawn(move || server.serve(agent));
        write_frame(&mut host, first).unwrap();
        let r = read_frame(&mut host).unwrap().expect("no answer");
        (host, r)
    }

    fn rpc(&self) -> Rpc {
        let (conn, r) = self.connect(&Request::Hello { version: VERSION });
        assert!(matches!(r, Response::Hello { .. }), "{r:?}");
        Rpc(conn)
    }

    /// A stream connection for one stream.
    fn attach(&self, id: &str, exec_id: Option<&str>, stream: Stream) -> UnixStream {
        let (conn, r) = self.connect(&Request::Attach {
            id: id.into(),
            exec_id: exec_id.map(Into::into),
            stream,
        });
        assert_eq!(r, Response::Ok, "attach {id} {exec_id:?} {stream:?}");
        conn
    }

    /// Reads a stream connection to its end on a thread.
    fn read_all(&self, id: &str, exec_id: Option<&str>, stream: Stream) -> JoinHandle<String> {
        let mut conn = self.attach(id, exec_id, stream);
        std::thread::spawn(move || {
            let mut s = String::new();
            conn.read_to_string(&mut s).unwrap();
            s
        })
    }
}

struct Rpc(UnixStream);

impl Rpc {
    fn call(&mut self, request: Request) -> Response {
        write_frame(&mut self.0, &request).unwrap();
        read_frame(&mut self.0)
            .unwrap()
            .expect("the agent closed the connection")
    }

    fn ok(&mut self, request: Request) {
        let what = format!("{request:?}");
        assert_eq!(self.call(request), Response::Ok, "{what}");
    }

    fn wait(&mut self, id: &str, exec_id: Option<&str>) -> ExitStatus {
        match self.call(Request::Wait {
            id: id.into(),
            exec_id: exec_id.map(Into::into),
        }) {
            Response::Exited { status } => status,
            other => panic!("wait {id} {exec_id:?}: {other:?}"),
        }
    }

    fn delete(&mut self, id: &str) {
        self.ok(Request::Delete {
            id: id.into(),
            exec_id: None,
        });
    }
}

fn spec(args: &[&str], readonly: bool) -> Value {
    let spec = moat_sandbox::defaults::spec("rootfs");
    let mut v = serde_json::to_value(&spec).unwrap();
    v["process"]["args"] = json!(args);
    v["root"] = json!({"path": "rootfs", "readonly": readonly});
    // CRI always names the pod's network namespace; the agent makes a new one instead.
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "network", "path": "/var/run/netns/cni-host-only"}));
    v
}

fn create(id: &str, device: &str, fstype: &str, spec: Value, stdio: StdioPlan) -> Request {
    Request::Create(CreateContainer {
        id: id.into(),
        spec,
        rootfs: Rootfs::Block {
            device: device.into(),
            fstype: fstype.into(),
        },
        stdio,
    })
}

const ALL: StdioPlan = StdioPlan {
    stdin: true,
    stdout: true,
    stderr: true,
};

const STDOUT: StdioPlan = StdioPlan {
    stdin: false,
    stdout: true,
    stderr: false,
};

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy().into_owned();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .map(String::from)
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn containers_through_the_agent() {
    if let Some(why) = missing() {
        eprintln!("SKIPPED: containers_through_the_agent: {why}");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("moat-agent-test-")
        .tempdir()
        .unwrap();
    let tree = tmp.path().join("tree");
    rootfs_tree(&tree);
    let (erofs, ext4) = (tmp.path().join("img.erofs"), tmp.path().join("img.ext4"));
    run(Command::new("mkfs.erofs").arg(&erofs).arg(&tree));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&ext4)
        .arg("16M"));
    let dev = tmp.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    let mut disks = Disks { loops: Vec::new() };
    disks.attach(&erofs, &dev, "vda");
    disks.attach(&ext4, &dev, "vdb");

    let run_dir = tmp.path().join("run");
    let server = Arc::new(Server::new(Options {
        paths: Paths {
            dev: dev.clone(),
            run: run_dir.clone(),
        },
        on_shutdown: Box::new(|| {}),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let reaping = reaper(server.clone(), stop.clone());
    let host = Host { server };
    let mut rpc = host.rpc();
    let id = |name: &str| format!("{name}-{}", std::process::id());

    // A writable root on erofs: stdin in, stdout and stderr out, an exec'd process, exit code.
    let c1 = id("c1");
    let script = "read line; echo got:$line; echo oops >&2; touch /written && echo wrote; exit 7";
    let r = rpc.call(create(
        &c1,
        "vda",
        "erofs",
        spec(&["sh", "-c", script], false),
        ALL,
    ));
    let Response::Created { pid } = r else {
        panic!("create: {r:?}")
    };
    assert!(alive(pid));
    let again = rpc.call(create(&c1, "vda", "erofs", spec(&["true"], false), ALL));
    assert!(
        matches!(
            again,
            Response::Error {
                kind: ErrorKind::AlreadyExists,
                ..
            }
        ),
        "{again:?}"
    );
    let mut stdin = host.attach(&c1, None, Stream::Stdin);
    let stdout = host.read_all(&c1, None, Stream::Stdout);
    let stderr = host.read_all(&c1, None, Stream::Stderr);
    rpc.ok(Request::Start { id: c1.clone() });

    let r = rpc.call(Request::Exec(ExecProcess {
        id: c1.clone(),
        exec_id: "e1".into(),
        process: json!({"cwd": "/", "args": ["sh", "-c", "echo exec-out; exit 3"], "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]}),
        stdio: STDOUT,
    }));
    assert!(matches!(r, Response::Started { .. }), "{r:?}");
    let exec_out = host.read_all(&c1, Some("e1"), Stream::Stdout);
    assert_eq!(rpc.wait(&c1, Some("e1")), ExitStatus::Exited(3));
    assert_eq!(exec_out.join().unwrap(), "exec-out\n");

    match rpc.call(Request::Pids { id: c1.clone() }) {
        Response::Pids { pids } => assert!(pids.contains(&pid), "{pids:?} lacks {pid}"),
        other => panic!("pids: {other:?}"),
    }
    match rpc.call(Request::Stats { id: c1.clone() }) {
        Response::Stats(s) => assert!(s.pids_current >= 1, "{s:?}"),
        other => panic!("stats: {other:?}"),
    }

    stdin.write_all(b"hi\n").unwrap();
    stdin.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(rpc.wait(&c1, None), ExitStatus::Exited(7));
    assert_eq!(stdout.join().unwrap(), "got:hi\nwrote\n");
    assert_eq!(stderr.join().unwrap(), "oops\n");
    rpc.ok(Request::Delete {
        id: c1.clone(),
        exec_id: Some("e1".into()),
    });
    rpc.delete(&c1);
    assert!(!run_dir.join("images").join(&c1).exists());
    assert!(!run_dir.join("bundles").join(&c1).exists());
    assert!(!run_dir.join("state").join(&c1).exists());
    let r = rpc.call(Request::Wait {
        id: c1.clone(),
        exec_id: None,
    });
    assert!(
        matches!(
            r,
            Response::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{r:?}"
    );

    // A read-only root on ext4 stays read-only; the image is readable.
    let c2 = id("c2");
    let script = "cat /etc/passwd; touch /x";
    let r = rpc.call(create(
        &c2,
        "vdb",
        "ext4",
        spec(&["sh", "-c", script], true),
        STDOUT,
    ));
    assert!(matches!(r, Response::Created { .. }), "{r:?}");
    let out = host.read_all(&c2, None, Stream::Stdout);
    rpc.ok(Request::Start { id: c2.clone() });
    assert_eq!(rpc.wait(&c2, None), ExitStatus::Exited(1));
    assert_eq!(out.join().unwrap(), "root:x:0:0:root:/root:/bin/sh\n");
    rpc.delete(&c2);

    // Signals: an exec'd process and the init, by SIGTERM and SIGKILL.
    let c3 = id("c3");
    let r = rpc.call(create(
        &c3,
        "vda",
        "erofs",
        spec(&["sleep", "100"], false),
        StdioPlan::default(),
    ));
    assert!(matches!(r, Response::Created { .. }), "{r:?}");
    rpc.ok(Request::Start { id: c3.clone() });
    let r = rpc.call(Request::Exec(ExecProcess {
        id: c3.clone(),
        exec_id: "e2".into(),
        process: json!({"cwd": "/", "args": ["sleep", "100"], "user": {"uid": 0, "gid": 0}}),
        stdio: StdioPlan::default(),
    }));
    assert!(matches!(r, Response::Started { .. }), "{r:?}");
    rpc.ok(Request::Signal {
        id: c3.clone(),
        exec_id: Some("e2".into()),
        signal: libc::SIGTERM,
        all: false,
    });
    assert_eq!(
        rpc.wait(&c3, Some("e2")),
        ExitStatus::Signaled(libc::SIGTERM)
    );
    rpc.ok(Request::Signal {
        id: c3.clone(),
        exec_id: None,
        signal: libc::SIGKILL,
        all: false,
    });
    assert_eq!(rpc.wait(&c3, None), ExitStatus::Signaled(libc::SIGKILL));
    rpc.delete(&c3);

    // Deleting a running container kills it; its waiter gets the status.
    let c4 = id("c4");
    let r = rpc.call(create(
        &c4,
        "vda",
        "erofs",
        spec(&["sleep", "100"], false),
        StdioPlan::default(),
    ));
    assert!(matches!(r, Response::Created { .. }), "{r:?}");
    rpc.ok(Request::Start { id: c4.clone() });
    let waiter = {
        let mut w = host.rpc();
        let c4 = c4.clone();
        std::thread::spawn(move || w.wait(&c4, None))
    };
    std::thread::sleep(Duration::from_millis(50));
    rpc.delete(&c4);
    assert_eq!(waiter.join().unwrap(), ExitStatus::Signaled(libc::SIGKILL));

    // A failed create leaves nothing behind.
    let c5 = id("c5");
    let r = rpc.call(create(
        &c5,
        "vda",
        "erofs",
        spec(&["/no/such/program"], false),
        ALL,
    ));
    let Response::Error { kind, message } = r else {
        panic!("create of a missing program: {r:?}")
    };
    assert_ne!(kind, ErrorKind::AlreadyExists);
    assert!(message.contains("/no/such/program"), "{message}");
    assert!(!run_dir.join("images").join(&c5).exists());
    assert!(!run_dir.join("bundles").join(&c5).exists());

    assert_eq!(mounts_under(tmp.path()), Vec::<String>::new());
    drop(rpc);
    stop.store(true, Ordering::SeqCst);
    reaping.join().unwrap();
    drop(disks);
    let _: PathBuf = tmp.path().to_path_buf();
}
