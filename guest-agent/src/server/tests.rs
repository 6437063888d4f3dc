//! The server over `UnixStream::pair()`: handshake, framing, errors, stream attach, and exit
//! routing through fake pids (no container, no VM).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use moat_agent_proto::{
    CreateContainer, ErrorKind, ExitStatus, MAX_FRAME, Request, Response, Rootfs, StdioPlan,
    Stream, VERSION, read_frame, write_frame,
};
use serde_json::json;

use super::registry::Entry;
use super::stdio::pipes;
use super::{Options, Paths, Server};
use crate::sys::WaitStatus;

/// Pids no process has (above the kernel's pid_max limit of 2^22).
const FAKE_PID: i32 = 1 << 23;

struct Harness {
    server: Arc<Server>,
    shut_down: Arc<AtomicBool>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shut_down = Arc::new(AtomicBool::new(false));
        let flag = shut_down.clone();
        let server = Arc::new(Server::new(Options {
            paths: Paths {
                dev: dir.path().join("dev"),
                run: dir.path().join("run"),
            },
            on_shutdown: Box::new(move || flag.store(true, Ordering::SeqCst)),
        }));
        Self {
            server,
            shut_down,
            dir,
        }
    }

    /// A raw connection being served.
    fn connect(&self) -> (UnixStream, JoinHandle<()>) {
        let (host, agent) = UnixStream::pair().unwrap();
        let server = self.server.clone();
        (host, std::thread::spawn(move || server.serve(agent)))
    }

    /// An RPC connection after a successful hello.
    fn rpc(&self) -> Rpc {
        let (mut conn, thread) = self.connect();
        write_frame(&mut conn, &Request::Hello { version: VERSION }).unwrap();
        match read_frame(&mut conn).unwrap() {
            Some(Response::Hello { version, kernel }) => {
                assert_eq!(version, VERSION);
                assert!(!kernel.is_empty());
            }
            other => panic!("hello answered {other:?}"),
        }
        Rpc { conn, thread }
    }

    /// Registers a container without a sandbox handle whose init has `pid`.
    fn fake_container(&self, id: &str, pid: i32, plan: StdioPlan) -> Arc<Entry> {
        let entry = Arc::new(Entry::detached(id, pid));
        entry.lock().init.stdio = pipes(plan).unwrap().0;
        let _spawning = crate::spawn_lock();
        let r = self.server.registry.reserve(id).unwrap();
        self.server.registry.insert(r, entry.clone(), pid);
        entry
    }
}

struct Rpc {
    conn: UnixStream,
    thread: JoinHandle<()>,
}

impl Rpc {
    fn call(&mut self, request: &Request) -> Response {
        write_frame(&mut self.conn, request).unwrap();
        read_frame(&mut self.conn)
            .unwrap()
            .expect("the agent closed the connection")
    }

    fn close(self) {
        drop(self.conn);
        self.thread.join().unwrap();
    }
}

fn kind(r: &Response) -> ErrorKind {
    match r {
        Response::Error { kind, .. } => *kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn message(r: &Response) -> &str {
    match r {
        Response::Error { message, .. } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The connection ends with nothing more from the agent.
fn closed(mut conn: UnixStream, thread: JoinHandle<()>) {
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    thread.join().unwrap();
}

#[test]
fn hello_then_ping() {
    let h = Harness::new();
    let mut rpc = h.rpc();
    assert_eq!(rpc.call(&Request::Ping), Response::Pong);
    assert_eq!(rpc.call(&Request::Ping), Response::Pong);
    let again = rpc.call(&Request::Hello { version: VERSION });
    assert_eq!(kind(&again), ErrorKind::InvalidArgument);
    assert_eq!(rpc.call(&Request::Ping), Response::Pong, "still usable");
    rpc.close();
}

#[test]
fn version_mismatch_is_refused_and_closed() {
    let h = Harness::new();
    let (mut conn, thread) = h.connect();
    write_frame(&mut conn, &Request::Hello { version: 99 }).unwrap();
    let r: Response = read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(kind(&r), ErrorKind::InvalidArgument);
    let m = message(&r);
    assert!(m.contains(&format!("speaks protocol {VERSION}")), "{m}");
    assert!(m.contains("host speaks 99"), "{m}");
    assert!(
        m.contains("install matching moat and guest artifacts"),
        "{m}"
    );
    closed(conn, thread);
}

#[test]
fn a_connection_starts_with_hello_or_attach() {
    let h = Harness::new();
    let (mut conn, thread) = h.connect();
    write_frame(&mut conn, &Request::Ping).unwrap();
    let r: Response = read_frame(&mut conn).unwrap().unwrap();
    assert_eq!(kind(&r), ErrorKind::InvalidArgument);
    assert!(message(&r).contains("hello"), "{r:?}");
    closed(conn, thread);
}

#[test]
fn malformed_and_oversized_frames_drop_the_connection() {
    let h = Harness::new();
    // Not JSON.
    let (mut conn, thread) = h.connect();
    conn.write_all(&5u32.to_be_bytes()).unwrap();
    conn.write_all(b"{{{{{").unwrap();
    closed(conn, thread);
    // An unknown op after hello.
    let mut rpc = h.rpc();
    let body = br#"{"op":"format_disk"}"#;
    rpc.conn
        .write_all(&(body.len() as u32).to_be_bytes())
        .unwrap();
    rpc.conn.write_all(body).unwrap();
    closed(rpc.conn, rpc.thread);
    // Larger than the limit: refused before it is read.
    let (mut conn, thread) = h.connect();
    conn.write_all(&(MAX_FRAME + 1).to_be_bytes()).unwrap();
    closed(conn, thread);
    // Cut off in the middle of a frame.
    let (mut conn, thread) = h.connect();
    conn.write_all(&100u32.to_be_bytes()).unwrap();
    conn.write_all(b"{\"op\":").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    closed(conn, thread);
    // The server still serves.
    h.rpc().close();
}

#[test]
fn unknown_containers_are_not_found() {
    let h = Harness::new();
    let mut rpc = h.rpc();
    let id = "nope".to_string();
    for r in [
        Request::Start { id: id.clone() },
        Request::Wait {
            id: id.clone(),
            exec_id: None,
        },
        Request::Stats { id: id.clone() },
        Request::Pids { id: id.clone() },
        Request::Delete {
            id: id.clone(),
            exec_id: None,
        },
        Request::Signal {
            id: id.clone(),
            exec_id: None,
            signal: 15,
            all: false,
        },
    ] {
        let a = rpc.call(&r);
        assert_eq!(kind(&a), ErrorKind::NotFound, "{r:?}: {a:?}");
        assert!(message(&a).contains("\"nope\" does not exist"), "{a:?}");
    }
    rpc.close();
}

fn create(id: &str, device: &str, fstype: &str) -> Request {
    Request::Create(CreateContainer {
        id: id.into(),
        spec: json!({"ociVersion": "1.0.2", "process": {"cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0}}}),
        rootfs: Rootfs::Block {
            device: device.into(),
            fstype: fstype.into(),
        },
        stdio: StdioPlan::default(),
    })
}

#[test]
fn create_checks_its_input_and_leaves_nothing_behind() {
    let h = Harness::new();
    let mut rpc = h.rpc();
    let a = rpc.call(&create("../etc", "vda", "erofs"));
    assert_eq!(kind(&a), ErrorKind::InvalidArgument);
    assert!(message(&a).contains("container id"), "{a:?}");
    let a = rpc.call(&create("c1", "sda", "erofs"));
    assert_eq!(kind(&a), ErrorKind::InvalidArgument);
    assert!(message(&a).contains("virtio-blk"), "{a:?}");
    let a = rpc.call(&create("c1", "vdb", "xfs"));
    assert_eq!(kind(&a), ErrorKind::InvalidArgument);
    assert!(message(&a).contains("erofs or ext4"), "{a:?}");
    let a = rpc.call(&create("c1", "vdb", "ext4"));
    assert_eq!(kind(&a), ErrorKind::FailedPrecondition);
    assert!(message(&a).contains("no disk"), "{a:?}");
    // A plain file is not a disk.
    std::fs::create_dir_all(h.dir.path().join("dev")).unwrap();
    std::fs::write(h.dir.path().join("dev/vdc"), "").unwrap();
    let a = rpc.call(&create("c1", "vdc", "ext4"));
    assert!(message(&a).contains("not a block device"), "{a:?}");
    assert!(!h.dir.path().join("run").exists(), "created directories");
    rpc.close();
}

#[test]
fn create_refuses_an_id_in_use() {
    let h = Harness::new();
    h.fake_container("taken", FAKE_PID + 1, StdioPlan::default());
    let e = h.server.registry.reserve("taken").unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    let first = h.server.registry.reserve("new").unwrap();
    assert_eq!(
        h.server.registry.reserve("new").unwrap_err().kind,
        ErrorKind::AlreadyExists,
        "an id being created is in use"
    );
    drop(first);
    h.server.registry.reserve("new").unwrap();
}

#[test]
fn exits_reach_waiters() {
    let h = Harness::new();
    let pid = FAKE_PID + 2;
    h.fake_container("w", pid, StdioPlan::default());
    let waiter = {
        let mut rpc = h.rpc();
        std::thread::spawn(move || {
            let r = rpc.call(&Request::Wait {
                id: "w".into(),
                exec_id: None,
            });
            rpc.close();
            r
        })
    };
    // Another connection is not blocked by the wait.
    let mut rpc = h.rpc();
    assert_eq!(rpc.call(&Request::Ping), Response::Pong);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!h.server.child_exited(pid + 100, WaitStatus::Exited(0)));
    assert!(h.server.child_exited(pid, WaitStatus::Exited(3)));
    assert_eq!(
        waiter.join().unwrap(),
        Response::Exited {
            status: ExitStatus::Exited(3)
        }
    );
    // Later waits answer at once; the pid is forgotten (a reused pid is not this process).
    let r = rpc.call(&Request::Wait {
        id: "w".into(),
        exec_id: None,
    });
    assert_eq!(
        r,
        Response::Exited {
            status: ExitStatus::Exited(3)
        }
    );
    assert!(!h.server.child_exited(pid, WaitStatus::Exited(4)));
    // The init is gone: signalling it alone is refused.
    let r = rpc.call(&Request::Signal {
        id: "w".into(),
        exec_id: None,
        signal: 9,
        all: false,
    });
    assert_eq!(kind(&r), ErrorKind::NotFound);
    rpc.close();
}

#[test]
fn exec_exits_and_forgetting() {
    let h = Harness::new();
    let entry = h.fake_container("x", FAKE_PID + 3, StdioPlan::default());
    let exec_pid = FAKE_PID + 4;
    {
        let _spawning = crate::spawn_lock();
        entry.lock().execs.insert(
            "e1".into(),
            super::registry::Proc::new(exec_pid, Default::default()),
        );
        h.server
            .registry
            .insert_exec(exec_pid, entry.clone(), "e1".into());
    }
    let mut rpc = h.rpc();
    let del = Request::Delete {
        id: "x".into(),
        exec_id: Some("e1".into()),
    };
    let r = rpc.call(&del);
    assert_eq!(kind(&r), ErrorKind::FailedPrecondition, "{r:?}");
    let r = rpc.call(&Request::Signal {
        id: "x".into(),
        exec_id: Some("e1".into()),
        signal: 9,
        all: true,
    });
    assert_eq!(kind(&r), ErrorKind::InvalidArgument, "{r:?}");
    let r = rpc.call(&Request::Signal {
        id: "x".into(),
        exec_id: Some("e1".into()),
        signal: 0,
        all: false,
    });
    assert_eq!(kind(&r), ErrorKind::InvalidArgument, "{r:?}");
    // Killed by SIGKILL without an OOM count: a plain signal.
    assert!(h.server.child_exited(exec_pid, WaitStatus::Signaled(9)));
    let wait = Request::Wait {
        id: "x".into(),
        exec_id: Some("e1".into()),
    };
    assert_eq!(
        rpc.call(&wait),
        Response::Exited {
            status: ExitStatus::Signaled(9)
        }
    );
    assert_eq!(rpc.call(&del), Response::Ok);
    let r = rpc.call(&wait);
    assert_eq!(kind(&r), ErrorKind::NotFound, "{r:?}");
    assert!(message(&r).contains("e1"), "{r:?}");
    rpc.close();
}

#[test]
fn attach_streams() {
    let h = Harness::new();
    let entry = h.fake_container(
        "a",
        FAKE_PID + 5,
        StdioPlan {
            stdin: false,
            stdout: true,
            stderr: false,
        },
    );
    // The child's end of stdout, as the process would hold it.
    let (ends, stdio) = pipes(StdioPlan {
        stdin: false,
        stdout: true,
        stderr: false,
    })
    .unwrap();
    entry.lock().init.stdio = ends;
    let moat_sandbox::Stdio::Fds {
        stdout: Some(child_out),
        ..
    } = stdio
    else {
        panic!("no stdout pipe");
    };

    let attach = |id: &str, stream| Request::Attach {
        id: id.into(),
        exec_id: None,
        stream,
    };
    let (mut conn, thread) = h.connect();
    write_frame(&mut conn, &attach("a", Stream::Stdout)).unwrap();
    assert_eq!(
        read_frame::<_, Response>(&mut conn).unwrap(),
        Some(Response::Ok)
    );
    let mut out = std::fs::File::from(child_out);
    out.write_all(b"bytes from the process").unwrap();
    drop(out);
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bytes from the process");
    thread.join().unwrap();

    // Each refusal is answered, then the connection closes.
    let refused = |request: Request, want: ErrorKind, text: &str| {
        let (mut conn, thread) = h.connect();
        write_frame(&mut conn, &request).unwrap();
        let r: Response = read_frame(&mut conn).unwrap().unwrap();
        assert_eq!(kind(&r), want, "{request:?}: {r:?}");
        assert!(message(&r).contains(text), "{r:?}");
        closed(conn, thread);
    };
    refused(
        attach("a", Stream::Stdout),
        ErrorKind::FailedPrecondition,
        "attached already",
    );
    refused(
        attach("a", Stream::Stderr),
        ErrorKind::FailedPrecondition,
        "did not ask",
    );
    refused(attach("zz", Stream::Stdin), ErrorKind::NotFound, "\"zz\"");
    refused(
        Request::Attach {
            id: "a".into(),
            exec_id: Some("e9".into()),
            stream: Stream::Stdin,
        },
        ErrorKind::NotFound,
        "e9",
    );
    // Attach on an RPC connection is refused there.
    let mut rpc = h.rpc();
    let r = rpc.call(&attach("a", Stream::Stdin));
    assert_eq!(kind(&r), ErrorKind::InvalidArgument);
    rpc.close();
}

#[test]
fn shutdown_is_answered_first() {
    let h = Harness::new();
    let mut rpc = h.rpc();
    assert!(!h.shut_down.load(Ordering::SeqCst));
    assert_eq!(rpc.call(&Request::Shutdown), Response::Ok);
    closed(rpc.conn, rpc.thread);
    assert!(h.shut_down.load(Ordering::SeqCst));
}

#[test]
fn many_connections_at_once() {
    let h = Harness::new();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut rpc = h.rpc();
            let errors = errors.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let r = rpc.call(&Request::Ping);
                    if r != Response::Pong {
                        errors.lock().unwrap().push(r);
                    }
                }
                rpc.close();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(errors.lock().unwrap().is_empty());
}
