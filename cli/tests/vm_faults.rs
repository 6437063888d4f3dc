//! Faults of the `vm` wall, as `moat run` and the `Backend` API meet them: the VMM killed under a
//! running container, the guest kernel panicking, the agent powering the VM off under a container,
//! an initramfs whose `/init` never answers, and a command that does not exist in the image. Each
//! must end with a clear error (or exit status), promptly, with the VM, its state directory and its
//! sockets gone and no process left behind ([`LeakCheck`]).
//!
//! Already covered elsewhere, so not repeated here: the VMM's own bad input (vmm/tests/bad_input.rs),
//! a host that cannot run guests (cli/tests/vm.rs), and in the conformance suite on every backend,
//! a missing program's non-zero exit and a SIGKILL to the `--pid-file` pid giving 137
//! (cli/tests/conformance.rs). These boot Linux guests: on hardware KVM here, else in the KVM rig.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use moat_backend::vm::{VmBackend, VmOptions};
use moat_backend::{Backend, ContainerConfig, ExecConfig, ExitStatus, ProcessIo};
use moat_testkit::LeakCheck;
use support::{Backend as Wall, Ctx, Out};

/// How long `moat run` may take to notice that its VM is gone (the rig's nested KVM is slow).
const NOTICE: Duration = Duration::from_secs(30);

/// Runs `body` with a vm context where guests can run: here, or in the rig (re-running this test
/// there). Prints SKIPPED where neither works.
fn on_vm(body: impl FnOnce(&Ctx)) {
    if support::skip_unless_root() {
        return;
    }
    if support::backends().contains(&Wall("vm")) {
        body(&Ctx::new(Wall("vm")));
    } else if support::rig_backends().contains(&Wall("vm")) {
        moat_rig::harness::rerun_in_rig_with_env(&[("MOAT_TEST_BACKENDS", "vm")]);
    } else {
        eprintln!("SKIPPED: the vm backend runs neither here nor in the KVM rig");
    }
}

/// A `moat run` in the background: its stdout's lines arrive on `lines`, its stderr goes to a file.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::fs::File,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        let stderr = tempfile::tempfile().unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// Waits (up to two minutes: a boot in the rig) for the container's first line, which must
    /// start with `want`; returns it.
    fn expect_line(&mut self, want: &str) -> String {
        match self.lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                assert!(line.starts_with(want), "{line:?}, not {want:?}");
                line
            }
            Err(e) => {
                let _ = self.child.kill();
                let out = self.finish(Duration::from_secs(10));
                panic!("no {want:?} from the container ({e}): {out:#?}");
            }
        }
    }

    /// Waits up to `limit` for moat to exit (killing it and failing if it does not); returns what
    /// it did. `stdout` holds the lines after those already read.
    fn finish(&mut self, limit: Duration) -> Out {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let mut err = String::new();
                self.stderr.rewind().unwrap();
                self.stderr.read_to_string(&mut err).unwrap();
                panic!("moat run did not exit within {limit:?} after the fault; stderr: {err}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let mut stderr = String::new();
        self.stderr.rewind().unwrap();
        self.stderr.read_to_string(&mut stderr).unwrap();
        let stdout: Vec<String> = self.lines.try_iter().collect();
        Out {
            code,
            stdout: stdout.join("\n"),
            stderr,
        }
    }
}

/// The command name of process `pid` (`/proc/PID/comm`), or "" once it is gone.
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory arguments; the pid is a VMM this test just started and checked.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill {pid}");
}

/// A bundle under `dir` whose spec is moat's default for the busybox image, changed by `edit`, so
/// a case can grant what the default withholds.
fn bundle(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let rootfs = support::image_rootfs();
    let spec = moat_sandbox::defaults::spec(rootfs.to_str().unwrap());
    let mut v = serde_json::to_value(&spec).unwrap();
    v["process"]["args"] = serde_json::json!(["true"]);
    edit(&mut v);
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("config.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
    b
}

/// A container config for the `Backend` API: the busybox image running `args`, no streams.
fn container(id: &str, dir: &Path, args: &[&str]) -> ContainerConfig {
    let rootfs = support::image_rootfs();
    let mut spec = moat_sandbox::defaults::spec(rootfs.to_str().unwrap());
    if let Some(p) = spec.process_mut().as_mut() {
        p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    }
    ContainerConfig {
        id: id.to_string(),
        bundle: dir.to_path_buf(),
        spec,
        io: ProcessIo::Null,
        is_sandbox: false,
    }
}

/// Every `moat-vmm` process on this machine.
fn vmms() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| comm(pid) == "moat-vmm")
        .collect()
}

#[test]
fn a_killed_vmm_ends_moat_run_promptly_saying_the_vm_ended() {
    on_vm(|ctx| {
        let leaks = LeakCheck::new();
        let id = ctx.fresh_id();
        let pid_file = ctx.dir.path().join("vmm.pid");
        let mut run = Running::spawn(&mut ctx.run_command(
            &id,
            &["--pid-file", pid_file.to_str().unwrap()],
            &["sh", "-c", "echo ready; exec sleep 100"],
        ));
        run.expect_line("ready");
        let vmm: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(comm(vmm), "moat-vmm", "--pid-file names the VMM");
        let vm_dir = ctx.root().join(format!("{id}.vm"));
        assert!(vm_dir.join("vsock.sock").exists(), "{}", vm_dir.display());

        signal(vmm, libc::SIGKILL);
        let killed = Instant::now();
        let out = run.finish(NOTICE);
        eprintln!(
            "VMM killed: moat run exited {} after {:?}; stderr: {}",
            out.code,
            killed.elapsed(),
            out.stderr.trim()
        );
        // The container counts as killed (as the conformance suite expects of a SIGKILL to the
        // `--pid-file` pid), and the log says why.
        assert_eq!(out.code, 137, "{out:#?}");
        assert!(out.stderr.contains("the VM ended"), "{out:#?}");
        ctx.assert_clean(&id);
        leaks.assert_clean();
    });
}

#[test]
fn a_killed_vmm_turns_every_backend_call_into_a_clear_error() {
    on_vm(|ctx| {
        let leaks = LeakCheck::new();
        let opts = VmOptions::with_built_artifacts(ctx.root(), "dead-vmm").unwrap();
        let backend = VmBackend::new(opts).unwrap();
        let c = backend
            .create(container("c1", ctx.dir.path(), &["sleep", "100"]))
            .unwrap();
        c.start().unwrap();
        let vmm = c.pid();
        assert_eq!(comm(vmm), "moat-vmm", "a vm container's pid is its VMM");
        assert_eq!(
            c.wait_timeout(None, Duration::from_millis(200)).unwrap(),
            None
        );

        signal(vmm, libc::SIGKILL);
        let killed = Instant::now();
        let status = c.wait_timeout(None, NOTICE).unwrap();
        eprintln!(
            "VMM killed: wait gave {status:?} after {:?}",
            killed.elapsed()
        );
        assert_eq!(status, Some(ExitStatus::Signaled(libc::SIGKILL)));

        let process = container("x", ctx.dir.path(), &["true"])
            .spec
            .process()
            .clone()
            .unwrap();
        let e = c
            .exec(ExecConfig {
                exec_id: "e1".into(),
                process,
                io: ProcessIo::Null,
            })
            .unwrap_err()
            .to_string();
        eprintln!("exec: {e}");
        assert!(e.contains("the VM ended"), "{e}");
        let e = c.kill(None, libc::SIGTERM, false).unwrap_err().to_string();
        eprintln!("kill: {e}");
        assert!(e.contains("the VM ended"), "{e}");
        let e = c.stats().unwrap_err().to_string();
        assert!(e.contains("the VM ended"), "{e}");
        let e = backend
            .create(container("c2", ctx.dir.path(), &["true"]))
            .err()
            .expect("a container in a dead VM")
            .to_string();
        eprintln!("create: {e}");
        assert!(e.contains("the pod's VM has ended"), "{e}");

        // Deleting what is left works and keeps the status; shutting down removes the VM's state.
        assert_eq!(
            c.delete(None).unwrap(),
            Some(ExitStatus::Signaled(libc::SIGKILL))
        );
        drop(c);
        backend.shutdown().unwrap();
        support::assert_clean(&ctx.root(), "c1");
        assert!(vmms().is_empty(), "{:?}", vmms());
        drop(backend);
        leaks.assert_clean();
    });
}

#[test]
fn a_guest_kernel_panic_or_power_off_under_a_container_ends_moat_run() {
    on_vm(|ctx| {
        // A container allowed to write /proc/sys (the default makes it read-only) turns any
        // system-wide OOM into a kernel panic, then fills the guest's memory (no memory limit).
        let b = bundle(ctx.dir.path(), |v| {
            v["linux"]["readonlyPaths"] = serde_json::json!([]);
        });
        let leaks = LeakCheck::new();
        let id = ctx.fresh_id();
        let mut run = Running::spawn(&mut ctx.moat(&[
            "run",
            "--backend",
            "vm",
            "--bundle",
            b.to_str().unwrap(),
            "--id",
            &id,
            "--",
            "sh",
            "-c",
            "echo 1 > /proc/sys/vm/panic_on_oom && echo armed && exec tail /dev/zero",
        ]));
        run.expect_line("armed");
        let armed = Instant::now();
        let out = run.finish(NOTICE * 2);
        eprintln!(
            "guest panic: moat run exited {} after {:?}; stderr: {}",
            out.code,
            armed.elapsed(),
            out.stderr.trim()
        );
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(out.stderr.contains("the VM ended"), "{out:#?}");
        assert!(
            out.stderr.contains("panic"),
            "the VMM's log says why: {out:#?}"
        );
        ctx.assert_clean(&id);
        leaks.assert_clean();
        std::fs::remove_dir_all(&b).unwrap();

        // A container that shares the guest's pid namespace (no `pid` namespace in its spec, as
        // for `hostPID`) sees the agent as pid 1, and SIGTERM asks it to power the VM off.
        let b = bundle(ctx.dir.path(), |v| {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "pid");
        });
        let leaks = LeakCheck::new();
        let id = ctx.fresh_id();
        let mut run = Running::spawn(&mut ctx.moat(&[
            "run",
            "--backend",
            "vm",
            "--bundle",
            b.to_str().unwrap(),
            "--id",
            &id,
            "--",
            "sh",
            "-c",
            "echo \"pid 1: $(cat /proc/1/cmdline)\"; kill -TERM 1; exec sleep 100",
        ]));
        let pid1 = run.expect_line("pid 1: ");
        eprintln!("{pid1}");
        let asked = Instant::now();
        let out = run.finish(NOTICE);
        eprintln!(
            "agent powered off: moat run exited {} after {:?}; stderr: {}",
            out.code,
            asked.elapsed(),
            out.stderr.trim()
        );
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(out.stderr.contains("the VM ended"), "{out:#?}");
        ctx.assert_clean(&id);
        leaks.assert_clean();
    });
}

#[test]
fn an_initramfs_without_the_agent_fails_the_boot_within_its_deadline() {
    on_vm(|ctx| {
        let busybox = moat_artifacts::image::busybox_binary();
        if !busybox.is_file() {
            eprintln!("SKIPPED: no static busybox at {}", busybox.display());
            return;
        }
        // A guest whose /init says so on the console and sleeps: the kernel boots, nobody listens.
        let initramfs = ctx.dir.path().join("not-an-agent.cpio");
        moat_artifacts::initramfs::Initramfs::new()
            .dir("/dev", 0o755)
            .char_dev("/dev/console", 0o600, 5, 1)
            .file("/bin/busybox", 0o755, &busybox)
            .symlink("/bin/sh", "busybox")
            .symlink("/bin/sleep", "busybox")
            .file_bytes(
                "/init",
                0o755,
                b"#!/bin/sh\necho 'not an agent: sleeping'\nexec sleep 100000\n".to_vec(),
            )
            .write(&initramfs, moat_artifacts::initramfs::Compression::None)
            .unwrap();
        let leaks = LeakCheck::new();
        let mut opts = VmOptions::with_built_artifacts(ctx.root(), "no-agent").unwrap();
        opts.initramfs = initramfs;
        opts.boot_timeout = Duration::from_secs(10);
        let backend = VmBackend::new(opts).unwrap();
        let started = Instant::now();
        let e = backend
            .create(container("c1", ctx.dir.path(), &["true"]))
            .err()
            .expect("a VM without its agent cannot run a container")
            .to_string();
        let took = started.elapsed();
        eprintln!("no agent: create failed after {took:?}: {e}");
        assert!(e.contains("did not answer within 10s"), "{e}");
        assert!(e.contains("not an agent"), "the console's last lines: {e}");
        // The deadline plus one handshake's read timeout (10 s) at most.
        assert!(took < Duration::from_secs(30), "{took:?}");
        support::assert_clean(&ctx.root(), "c1");
        assert!(vmms().is_empty(), "{:?}", vmms());
        backend.shutdown().unwrap();
        drop(backend);
        leaks.assert_clean();
    });
}

#[test]
fn a_missing_binary_is_a_clear_error_like_on_the_ns_backend() {
    on_vm(|ctx| {
        let leaks = LeakCheck::new();
        let started = Instant::now();
        // `ctx.run` also checks that nothing is left under the root.
        let out = ctx.run(&[], &["/no/such/binary"]);
        eprintln!(
            "missing binary: moat run exited {} after {:?}; stderr: {}",
            out.code,
            started.elapsed(),
            out.stderr.trim()
        );
        // As on the ns backend: the container cannot be created, so moat itself fails (1); it is
        // not mistaken for a process that ran and was killed.
        assert_eq!(out.code, 1, "{out:#?}");
        assert!(out.stderr.contains("/no/such/binary"), "{out:#?}");
        leaks.assert_clean();
    });
}
