//! Shared test harness: drives the real `moat` binary like a user, on every backend asked for.
//!
//! Backends: `MOAT_TEST_BACKENDS=ns,trace,vm` picks them; by default every backend that
//! `moat check --backend B` calls usable on this host. A case that differs by design on a backend
//! says so and why ([`Case::differs`]); the harness prints `SKIPPED: ...` for it there.
//!
//! Every run gets its own `--root` (a temp dir) and container id, and after each run the harness
//! checks that nothing is left behind: no state under the root, no cgroup named after the id, no
//! mount under the root.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Path of a binary built next to this test executable (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build -p moat` first",
        p.display()
    );
    p
}

/// The `moat` binary under test.
pub fn moat() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_moat"))
}

/// True when running as root; tests that need root print SKIPPED otherwise.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints the skip line the project uses and returns true if the test must skip.
pub fn skip_unless_root() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: needs root (namespaces, cgroups, mounts)");
        return true;
    }
    false
}

/// What a `moat` invocation did.
#[derive(Debug)]
pub struct Out {
    /// Exit code (128+N if moat itself died of signal N).
    pub code: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Out {
    /// Asserts a zero exit and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "moat failed: {self:#?}");
        &self.stdout
    }
}

/// Runs a command with a deadline, collecting its output; kills it if the deadline passes.
///
/// Output goes to temporary files, not pipes: a container that `moat create` leaves running holds
/// moat's stdout and stderr, and pipes would never reach EOF.
pub fn output(cmd: &mut Command, timeout: Duration) -> Out {
    let so = tempfile::tempfile().unwrap();
    let se = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(so.try_clone().unwrap())
        .stderr(se.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let read = |mut f: std::fs::File| {
        use std::io::Seek;
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Out {
        code,
        stdout: read(so),
        stderr: read(se),
    }
}

/// A backend the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend(pub &'static str);

/// The backends to test: `MOAT_TEST_BACKENDS`, or every one `moat check` calls usable here.
pub fn backends() -> Vec<Backend> {
    static CACHE: OnceLock<Vec<Backend>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let all = ["ns", "vm", "trace"];
            if let Ok(list) = std::env::var("MOAT_TEST_BACKENDS") {
                return all
                    .into_iter()
                    .filter(|b| list.split(',').any(|x| x.trim() == *b))
                    .map(Backend)
                    .collect();
            }
            all.into_iter()
                .filter(|b| {
                    let out = output(
                        Command::new(moat()).args(["check", "--backend", b]),
                        Duration::from_secs(30),
                    );
                    if out.code != 0 {
                        eprintln!(
                            "SKIPPED backend {b}: moat check says {}",
                            out.stdout.lines().next().unwrap_or("")
                        );
                    }
                    out.code == 0
                })
                .map(Backend)
                .collect()
        })
        .clone()
}

/// Backends that cannot run on this host but can in the KVM rig: `vm` where `/dev/kvm` is PVM
/// (or absent), once the guest artifacts are built. Empty when `MOAT_TEST_BACKENDS` is set (the
/// rig's nested runs set it) or inside the rig.
pub fn rig_backends() -> Vec<Backend> {
    use moat_rig::harness::{Place, inside_rig, place};
    if std::env::var_os("MOAT_TEST_BACKENDS").is_some() || inside_rig() {
        return Vec::new();
    }
    if backends().contains(&Backend("vm")) || place() != Place::Rig {
        return Vec::new();
    }
    match moat_backend::vm::check::built_artifacts() {
        Ok(_) => vec![Backend("vm")],
        Err(why) => {
            eprintln!("SKIPPED backend vm (in the rig): {why}");
            Vec::new()
        }
    }
}

/// A conformance case: where it differs by design and why.
pub struct Case {
    /// Test name, for messages.
    pub name: &'static str,
    /// Backends on which this case does not apply, with the reason.
    pub differs: &'static [(&'static str, &'static str)],
}

impl Case {
    /// Runs `body` once per backend under test (skipping with a reason where it differs).
    pub fn run(&self, body: impl Fn(&Ctx)) {
        if skip_unless_root() {
            return;
        }
        let list = backends();
        if list.is_empty() {
            eprintln!("SKIPPED: {}: no usable backend on this host", self.name);
        }
        for b in list {
            if let Some((_, why)) = self.differs.iter().find(|(k, _)| *k == b.0) {
                eprintln!(
                    "SKIPPED: {} on {}: differs by design: {why}",
                    self.name, b.0
                );
                continue;
            }
            eprintln!("conformance: {} on {}", self.name, b.0);
            let ctx = Ctx::new(b);
            body(&ctx);
        }
        for b in rig_backends() {
            if let Some((_, why)) = self.differs.iter().find(|(k, _)| *k == b.0) {
                eprintln!(
                    "SKIPPED: {} on {}: differs by design: {why}",
                    self.name, b.0
                );
                continue;
            }
            eprintln!("conformance: {} on {}, in the KVM rig", self.name, b.0);
            // Built here: the rig's view of the source and target trees is read-only.
            probe_binary();
            moat_rig::harness::rerun_in_rig_with_env(&[("MOAT_TEST_BACKENDS", b.0)]);
        }
    }
}

/// One backend's test context: a private `--root` and fresh ids.
pub struct Ctx {
    /// The backend under test.
    pub backend: Backend,
    /// Temporary directory: `root/` is moat's `--root`; the rest is scratch for the test.
    pub dir: tempfile::TempDir,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Ctx {
    /// A fresh context.
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("moat-conf-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Self { backend, dir }
    }

    /// moat's `--root` for this context.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A container id unique to this test process.
    pub fn fresh_id(&self) -> String {
        format!(
            "conf-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `moat --root R <args>`.
    pub fn moat(&self, args: &[&str]) -> Command {
        let mut c = Command::new(moat());
        c.arg("--root").arg(self.root()).args(args);
        c
    }

    /// The command line of `moat run --backend B --id ID <opts> -- <cmd>`.
    pub fn run_command(&self, id: &str, opts: &[&str], cmd: &[&str]) -> Command {
        let mut c = self.moat(&["run", "--backend", self.backend.0, "--id", id]);
        c.args(opts).arg("--").args(cmd);
        c
    }

    /// Runs `moat run ... -- <cmd>` to the end, then checks nothing was left behind.
    pub fn run(&self, opts: &[&str], cmd: &[&str]) -> Out {
        let id = self.fresh_id();
        let out = output(
            &mut self.run_command(&id, opts, cmd),
            Duration::from_secs(120),
        );
        self.assert_clean(&id);
        out
    }

    /// Polls `moat state ID` until the container runs; returns its init's host pid.
    pub fn wait_running(&self, id: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = output(&mut self.moat(&["state", id]), Duration::from_secs(30));
            if out.code == 0 {
                let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
                if v["status"] == "running" {
                    return v["pid"].as_u64().unwrap() as u32;
                }
            }
            assert!(Instant::now() < deadline, "{id} never ran: {out:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Shorthand: `sh -c SCRIPT` in the default image.
    pub fn sh(&self, script: &str) -> Out {
        self.run(&[], &["sh", "-c", script])
    }

    /// Asserts that container `id` left nothing: no state under the root, no cgroup, no mount.
    pub fn assert_clean(&self, id: &str) {
        assert_clean(&self.root(), id);
    }
}

/// Asserts that nothing of container `id` is left under `root`, in the cgroup trees, or mounted.
pub fn assert_clean(root: &Path, id: &str) {
    let leftovers: Vec<_> = std::fs::read_dir(root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "state left under {}: {leftovers:?}",
        root.display()
    );
    for cg in cgroup_dirs(id) {
        assert!(!cg.exists(), "cgroup left behind: {}", cg.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_s = root.to_string_lossy();
    for line in mounts.lines() {
        assert!(
            !line.contains(&*root_s) && !line.contains(id),
            "mount left behind: {line}"
        );
    }
}

/// Every cgroup named exactly `id` (v1 controllers and v2), up to five levels deep.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    fn walk(dir: &Path, id: &str, depth: usize, found: &mut Vec<PathBuf>) {
        if depth > 4 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if e.file_name().to_string_lossy() == id {
                    found.push(p.clone());
                }
                walk(&p, id, depth + 1, found);
            }
        }
    }
    walk(Path::new("/sys/fs/cgroup"), id, 0, &mut found);
    found
}

/// A static probe binary (`cli/tests/probe/probe.rs`), built once with rustc, for syscalls busybox
/// cannot make (e.g. `keyctl`). Returns its path.
pub fn probe_binary() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.rs");
            let exe = std::env::current_exe().unwrap();
            let out_dir = exe.parent().unwrap().join("moat-probe");
            std::fs::create_dir_all(&out_dir).unwrap();
            // Named by its source, so a nested run in the rig (read-only tree) finds it built.
            let key = moat_artifacts::cache::KeyBuilder::new("moat-cli-probe-v1")
                .add_file(&src)
                .unwrap()
                .finish();
            let out = out_dir.join(format!("probe-{}", &key.as_str()[..16]));
            if out.is_file() {
                return out;
            }
            let tmp = out_dir.join(format!("probe.{}.tmp", std::process::id()));
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let o = output(
                Command::new(rustc)
                    .args([
                        "--edition",
                        "2024",
                        "-O",
                        "-C",
                        "target-feature=+crt-static",
                    ])
                    .arg(&src)
                    .arg("-o")
                    .arg(&tmp),
                Duration::from_secs(300),
            );
            assert_eq!(o.code, 0, "building the probe: {o:#?}");
            std::fs::rename(&tmp, &out).unwrap();
            out
        })
        .clone()
}

/// The default image's root file system (built and cached by moat-artifacts).
pub fn image_rootfs() -> PathBuf {
    moat_artifacts::image::busybox().unwrap().rootfs
}

/// A copy of `rootfs` with extra files, for cases that need something the image lacks.
pub fn rootfs_with(dir: &Path, rootfs: &Path, extra: &[(&Path, &str)]) -> PathBuf {
    let dst = dir.join("rootfs");
    let o = output(
        Command::new("cp").arg("-a").arg(rootfs).arg(&dst),
        Duration::from_secs(60),
    );
    assert_eq!(o.code, 0, "copying the rootfs: {o:#?}");
    for (src, name) in extra {
        std::fs::copy(src, dst.join(name)).unwrap();
    }
    dst
}
