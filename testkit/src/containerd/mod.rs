//! A private containerd for end-to-end tests: Debian's `containerd` with its own `--root`, `--state`,
//! socket and config inside a temp dir `$TMPDIR/moat-testkit-<pid>-<n>/` — never the system's
//! daemon, socket or `/run/containerd` state directory.
//!
//! ```no_run
//! use moat_testkit::{Containerd, Options, LeakCheck, skip_if};
//! # fn t() {
//! skip_if!(moat_testkit::containerd::unavailable());
//! let leaks = LeakCheck::new();
//! let ctd = Containerd::start(Options::default()).unwrap();
//! ctd.import_test_images().unwrap();
//! let out = ctd
//!     .ctr_ok(&["run", "--rm", "docker.io/library/busybox:latest", "t1", "echo", "hi"])
//!     .unwrap();
//! assert_eq!(out, "hi\n");
//! drop(ctd);
//! leaks.assert_clean();
//! # }
//! ```
//!
//! Teardown (on [`Containerd::shutdown`] or drop) first asks containerd to delete every task it
//! still has, then stops the daemon, then forcibly kills whatever still mentions the harness (shims
//! and their children, processes in its cgroups), unmounts everything below its dir, removes its
//! cgroups, shim sockets and runc state, and deletes the dir. What it had to force is reported.

pub mod config;
mod exec;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use config::{Cni, Cri, Runtime};
use moat_artifacts::image::{self, BusyboxImage};

use crate::teardown::{self, MARKER_PREFIX, Report};

/// Errors of the containerd harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation or spawning a command failed.
    #[error("containerd harness: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path (or command) it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// containerd exited or did not answer in time.
    #[error("private containerd did not come up: {reason}\n--- {log_path} (last lines) ---\n{log}")]
    Start {
        /// What went wrong.
        reason: String,
        /// The daemon's log file.
        log_path: String,
        /// Its last lines.
        log: String,
    },
    /// A `ctr` command exited non-zero.
    #[error("`{cmd}` failed ({status}):\nstdout: {stdout}\nstderr: {stderr}")]
    Ctr {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        stdout: String,
        /// What it complained.
        stderr: String,
    },
    /// A command did not finish in time and was killed.
    #[error("`{cmd}` did not finish within {secs} s and was killed")]
    Timeout {
        /// The command line.
        cmd: String,
        /// The limit.
        secs: u64,
    },
    /// Building the test images failed.
    #[error(transparent)]
    Image(#[from] image::Error),
    /// The config could not be rendered.
    #[error("containerd harness: rendering config.toml: {0}")]
    Config(String),
}

/// A `Result` with the harness's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Why a private containerd cannot run here, if it cannot: not root, or a binary missing.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("a private containerd needs root".into());
    }
    let missing = crate::missing_cmds(&["containerd", "ctr", "runc", "containerd-shim-runc-v2"]);
    if !missing.is_empty() {
        return Some(format!(
            "missing {} (scripts/deps.sh installs containerd and runc)",
            missing.join(", ")
        ));
    }
    None
}

/// How to start the private containerd. `Options::default()` gives a plain daemon (CRI off).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The namespace `ctr` uses; default: the harness marker (`moat-testkit-<pid>-<n>`), which
    /// keeps runc's state dir and `ctr`'s default cgroups (`/<namespace>/<id>`) recognisable.
    pub namespace: Option<String>,
    /// Enable the CRI plugin with these settings (runtime handlers, sandbox image, CNI).
    pub cri: Option<Cri>,
    /// Directories put in front of containerd's `PATH`, where it looks for shim binaries
    /// (`containerd-shim-<name>-v2`), then the workspace's [`crate::bin_dir`] (so a test can
    /// put another copy of a shim, say an installed one, in front of the build's).
    pub path: Vec<PathBuf>,
    /// TOML merged over the generated config, table by table.
    pub extra_config: toml::Table,
    /// Start from this config file (say, one `moat install` merged its runtimes into) instead of
    /// an empty one: its tables are kept, and only what the harness needs private (root, state,
    /// socket, the opt/CNI/registry paths, runc's state dir, the CRI settings above) is merged
    /// over them. The file itself is only read.
    pub base_config: Option<PathBuf>,
    /// containerd's log level (default `info`); the log is `<dir>/containerd.log`.
    pub log_level: Option<String>,
    /// How long to wait for the daemon to answer (default 30 s).
    pub start_timeout: Option<Duration>,
}

/// The captured result of a `ctr` command.
#[derive(Clone, Debug)]
pub struct CtrOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CtrOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// How long one `ctr` command may take before it is killed.
const CTR_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the graceful part of teardown may take.
const GRACEFUL_BUDGET: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running private containerd; dropping it tears everything down.
pub struct Containerd {
    marker: String,
    dir: PathBuf,
    paths: config::Paths,
    namespace: String,
    config_path: PathBuf,
    log_path: PathBuf,
    env_path: std::ffi::OsString,
    start_timeout: Duration,
    cri: bool,
    child: Option<Child>,
    done: bool,
}

impl Containerd {
    /// Writes the config and starts containerd, then waits until it answers `ctr version` (and,
    /// with CRI, until the CRI plugin has started). On failure everything is cleaned up again.
    pub fn start(opts: Options) -> Result<Self> {
        // Leftovers of test processes that were killed before their harness could clean up.
        teardown::reap_stale();
        let marker = format!(
            "{MARKER_PREFIX}{}-{:04}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        crate::leak::register(&marker);
        let dir = std::env::temp_dir().join(&marker);
        let paths = config::Paths {
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("containerd.sock"),
            dir: dir.clone(),
        };
        let mut env_path = std::env::join_paths(
            opts.path
                .iter()
                .cloned()
                .chain(std::iter::once(crate::bin_dir())),
        )
        .map_err(|e| Error::Config(format!("PATH entry: {e}")))?;
        if let Some(path) = std::env::var_os("PATH") {
            env_path.push(":");
            env_path.push(path);
        }
        let mut me = Self {
            namespace: opts.namespace.clone().unwrap_or_else(|| marker.clone()),
            config_path: dir.join("config.toml"),
            log_path: dir.join("containerd.log"),
            marker,
            dir,
            paths,
            env_path,
            start_timeout: opts.start_timeout.unwrap_or(Duration::from_secs(30)),
            cri: opts.cri.is_some(),
            child: None,
            done: false,
        };
        // From here on, drop cleans up whatever was created.
        me.write_files(&opts)?;
        me.spawn()?;
        Ok(me)
    }

    fn write_files(&self, opts: &Options) -> Result<()> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let level = opts.log_level.as_deref().unwrap_or("info");
        let base = match &opts.base_config {
            Some(path) => {
                let text = fs::read_to_string(path).map_err(io("read", path))?;
                toml::from_str(&text)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let text = config::render_on(
            base,
            &self.paths,
            opts.cri.as_ref(),
            level,
            &opts.extra_config,
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        fs::write(&self.config_path, text).map_err(io("write", &self.config_path))?;
        if let Some(cri) = &opts.cri {
            let net = self.dir.join("cni/net.d");
            fs::create_dir_all(&net).map_err(io("create", &net))?;
            if let Some(list) = config::cni_conflist(&cri.cni, &self.paths, &self.marker) {
                let p = net.join("10-moat-testkit.conflist");
                fs::write(&p, list).map_err(io("write", &p))?;
            }
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|source| Error::Io {
                op: "open",
                path: self.log_path.clone(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| Error::Io {
            op: "dup",
            path: self.log_path.clone(),
            source,
        })?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config_path)
            .env("PATH", &self.env_path)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| Error::Io {
                op: "spawn",
                path: "containerd".into(),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn start_error(&self, reason: String) -> Error {
        Error::Start {
            reason,
            log_path: self.log_path.display().to_string(),
            log: self.log_tail(30),
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.start_timeout;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(self.start_error(format!("containerd exited with {status}")));
            }
            if self.paths.socket.exists() {
                let up = self
                    .ctr_timeout(None, &["version"], Duration::from_secs(5))
                    .is_ok_and(|o| o.success());
                // The CRI service answers only once its plugin has started its servers.
                let cri_up = !self.cri || self.log().contains("Start streaming server");
                if up && cri_up {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "no answer on {} within {} s",
                    self.paths.socket.display(),
                    self.start_timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's gRPC socket (`ctr --address`, a CRI client's endpoint).
    pub fn address(&self) -> &Path {
        &self.paths.socket
    }

    /// The namespace [`ctr`](Self::ctr) uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The harness's temp dir; everything it creates is below it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's `--root`.
    pub fn root(&self) -> &Path {
        &self.paths.root
    }

    /// containerd's `--state`.
    pub fn state(&self) -> &Path {
        &self.paths.state
    }

    /// The marker `moat-testkit-<pid>-<n>` in every name the harness owns.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// A cgroup parent for CRI pods (`LinuxPodSandboxConfig.cgroup_parent`) that teardown removes.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.marker)
    }

    /// The generated `config.toml`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The whole daemon log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the daemon log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A `ctr --address <socket> -n <namespace>` command to add arguments to, for tests that
    /// need their own stdio or timing.
    pub fn ctr_command(&self) -> Command {
        self.ctr_command_in(&self.namespace)
    }

    fn ctr_command_in(&self, namespace: &str) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.paths.socket)
            .arg("--namespace")
            .arg(namespace)
            .env("PATH", &self.env_path);
        cmd
    }

    fn ctr_timeout<S: AsRef<OsStr>>(
        &self,
        namespace: Option<&str>,
        args: &[S],
        timeout: Duration,
    ) -> Result<CtrOutput> {
        let mut cmd = self.ctr_command_in(namespace.unwrap_or(&self.namespace));
        cmd.args(args);
        exec::output(cmd, timeout)
    }

    /// Runs `ctr` in the harness namespace and captures its output; a non-zero exit is not an
    /// error here (look at [`CtrOutput::status`]). Killed after two minutes.
    pub fn ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<CtrOutput> {
        self.ctr_timeout(None, args, CTR_TIMEOUT)
    }

    /// Runs `ctr` in namespace `namespace` (e.g. `k8s.io`, where the CRI plugin keeps pods).
    pub fn ctr_in<S: AsRef<OsStr>>(&self, namespace: &str, args: &[S]) -> Result<CtrOutput> {
        self.ctr_timeout(Some(namespace), args, CTR_TIMEOUT)
    }

    /// Runs `ctr` in the harness namespace and returns its stdout; a non-zero exit is an error
    /// carrying the command, status, stdout and stderr.
    pub fn ctr_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        exec::check(self.ctr(args)?, args)
    }

    /// Imports the busybox (`docker.io/library/busybox:latest`) and pause
    /// (`registry.k8s.io/pause:3.6`) test images into the harness namespace and, with CRI on, into
    /// `k8s.io`. Builds them on first use (cached).
    pub fn import_test_images(&self) -> Result<BusyboxImage> {
        let img = image::busybox()?;
        self.import_test_images_into(&self.namespace, &img)?;
        if self.cri && self.namespace != "k8s.io" {
            self.import_test_images_into("k8s.io", &img)?;
        }
        Ok(img)
    }

    /// Imports both test images into `namespace`.
    pub fn import_test_images_into(&self, namespace: &str, img: &BusyboxImage) -> Result<()> {
        for archive in [&img.archive, &img.pause_archive] {
            let args = [
                OsStr::new("images"),
                OsStr::new("import"),
                archive.as_os_str(),
            ];
            exec::check(self.ctr_in(namespace, &args)?, &args)?;
        }
        Ok(())
    }

    /// Kills the daemon with SIGKILL and nothing else (shims and tasks keep running), as a crash
    /// would; [`restart`](Self::restart) brings it back on the same state.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again with the same config and state (after [`kill_daemon`]
    /// (Self::kill_daemon), or stops it first if it runs) and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_daemon();
        self.spawn()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Asks containerd to delete every task in every namespace, within [`GRACEFUL_BUDGET`].
    fn delete_tasks(&self) {
        if self.child.is_none() {
            return;
        }
        let deadline = Instant::now() + GRACEFUL_BUDGET;
        let left = || deadline.saturating_duration_since(Instant::now());
        let lines = |o: Result<CtrOutput>| -> Vec<String> {
            o.ok()
                .filter(CtrOutput::success)
                .map(|o| o.stdout.lines().map(str::to_string).collect())
                .unwrap_or_default()
        };
        for ns in lines(self.ctr_timeout(None, &["namespaces", "ls", "-q"], left())) {
            for task in lines(self.ctr_timeout(Some(&ns), &["tasks", "ls", "-q"], left())) {
                let _ = self.ctr_timeout(Some(&ns), &["tasks", "delete", "-f", &task], left());
            }
        }
    }

    /// Tears everything down now and says what had to be forced; see the module documentation.
    pub fn shutdown(mut self) -> Report {
        self.teardown()
    }

    fn teardown(&mut self) -> Report {
        self.done = true;
        self.delete_tasks();
        self.stop_daemon();
        let mut report = Report::default();
        teardown::clean(&self.marker, &self.dir, &mut report);
        report
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "--- private containerd {} log (last lines) ---\n{}",
                self.marker,
                self.log_tail(40)
            );
        }
        let report = self.teardown();
        if !report.is_clean() {
            eprintln!(
                "testkit: teardown of {} had to clean up: {report:#?}",
                self.marker
            );
        }
    }
}
