//! `moat-rig run`: one CMD, run as root inside a fresh L1, its output and exit status passed back.
//!
//! Before anything is created, the command line is checked: CMD must exist (127) and be executable
//! (126), QEMU must be installed, the kernel and initramfs must be ready (fetched once). Then a private
//! temporary directory gets the scratch share, the console log and three Unix sockets; QEMU (in its own
//! process group, killed if moat-rig dies) connects its virtio-serial ports `moat.ctl`, `moat.out` and
//! `moat.err` to them. The exit status is only ever the number L1's init reports on `moat.ctl`: a run
//! that ends any other way is an error with its own exit code (see [`Error::exit_code`]).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signalfd::SignalFd;

use crate::script::{self, Share};
use crate::{initrd, kernel, qemu};

/// CMD's working directory is missing inside L1, or the rig itself could not start (bad option, no
/// QEMU, no kernel package, busybox missing, cache or temp dir unwritable).
pub const EXIT_SETUP: u8 = 125;
/// CMD was found but is not executable (as in `sh`).
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// CMD was not found (as in `sh`).
pub const EXIT_NOT_FOUND: u8 = 127;
/// The timeout hit (as in `timeout(1)`).
pub const EXIT_TIMEOUT: u8 = 124;
/// L1 failed to boot, could not set up CMD's world, or died (panic, QEMU crash) before reporting.
pub const EXIT_L1_FAILED: u8 = 123;
/// L1 booted but `/dev/kvm` did not appear: `kvm_amd` failed to load.
pub const EXIT_KVM_FAILED: u8 = 122;

/// How long L1 may take to report that its init runs, before the run counts as a failed boot.
const BOOT_LIMIT: Duration = Duration::from_secs(180);
/// How long QEMU gets to power off after CMD's status arrived.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// What to run and on what machine.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// CMD and its arguments.
    pub cmd: Vec<OsString>,
    /// vCPUs of L1.
    pub smp: u32,
    /// Memory of L1 in MiB.
    pub mem_mib: u64,
    /// Limit for the whole run (boot included); `None` for none.
    pub timeout: Option<Duration>,
    /// Where to keep L1's console log.
    pub keep_log: Option<PathBuf>,
    /// CMD's working directory (default: ours).
    pub cwd: Option<PathBuf>,
    /// Variables to set for CMD beyond the inherited ones.
    pub env: Vec<(OsString, OsString)>,
    /// Host directories shared writable at the same path (the rest of `/` is read-only).
    pub rw: Vec<PathBuf>,
    /// QEMU `-cpu` model.
    pub cpu: String,
    /// Modules to load beyond the core ones (from [`kernel::EXTRA_MODULES`]).
    pub modules: Vec<String>,
}

impl RunConfig {
    /// Defaults: 1 vCPU, 2 GiB, 600 s, `-cpu EPYC`, our working directory.
    pub fn new(cmd: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            cmd: cmd.into_iter().map(Into::into).collect(),
            smp: 1,
            mem_mib: 2048,
            timeout: Some(Duration::from_secs(600)),
            keep_log: None,
            cwd: None,
            env: Vec::new(),
            rw: Vec::new(),
            cpu: "EPYC".into(),
            modules: Vec::new(),
        }
    }
}

/// Where a run's time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// QEMU start to L1's init running (before modules).
    pub boot: Duration,
    /// Loading the modules inside L1 (L1's own clock).
    pub modules: Duration,
    /// L1 ready to CMD's status reported.
    pub cmd: Duration,
    /// QEMU start to QEMU gone.
    pub total: Duration,
}

/// A run that reached CMD's end.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// CMD's exit status as `sh` reports it (128+N when killed by signal N).
    pub status: i32,
    /// Where the time went.
    pub timings: Timings,
}

/// Why a run did not produce CMD's exit status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// CMD does not exist.
    #[error("{cmd}: command not found (searched PATH={path})")]
    NotFound {
        /// CMD as given.
        cmd: String,
        /// The search path used.
        path: String,
    },
    /// CMD is not executable.
    #[error("{0}: not an executable file")]
    NotExecutable(PathBuf),
    /// QEMU is not installed.
    #[error(
        "{0} not found: install QEMU (Debian: apt-get install qemu-system-x86, or scripts/deps.sh)"
    )]
    NoQemu(String),
    /// The kernel could not be had.
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    /// The initramfs could not be built.
    #[error(transparent)]
    Initrd(#[from] initrd::Error),
    /// A host-side step failed.
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// L1 never reported that its init runs.
    #[error("L1 failed to boot: {detail}\n{console}")]
    BootFailed {
        /// What happened.
        detail: String,
        /// The end of L1's console log and QEMU's messages.
        console: String,
    },
    /// L1 booted, then ended without reporting CMD's status.
    #[error("L1 died before CMD's exit status was reported: {detail}\n{console}")]
    L1Died {
        /// What happened.
        detail: String,
        /// The end of L1's console log.
        console: String,
    },
    /// `kvm_amd` did not give a `/dev/kvm`.
    #[error("KVM failed to load in L1: {0}")]
    Kvm(String),
    /// L1's init could not prepare CMD's world.
    #[error("L1 could not set up CMD's environment: {0}")]
    L1Setup(String),
    /// The timeout hit.
    #[error("timed out after {secs} s {phase}; L1 was stopped")]
    Timeout {
        /// The limit.
        secs: u64,
        /// "while L1 was booting" or "while CMD was running".
        phase: &'static str,
    },
    /// moat-rig was asked to stop.
    #[error("interrupted by signal {0}; L1 was stopped")]
    Interrupted(i32),
}

/// A `Result` with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The exit status `moat-rig` ends with for this error.
    pub fn exit_code(&self) -> i32 {
        i32::from(match self {
            Error::NotFound { .. } => EXIT_NOT_FOUND,
            Error::NotExecutable(_) => EXIT_NOT_EXECUTABLE,
            Error::Timeout { .. } => EXIT_TIMEOUT,
            Error::BootFailed { .. } | Error::L1Died { .. } | Error::L1Setup(_) => EXIT_L1_FAILED,
            Error::Kvm(_) => EXIT_KVM_FAILED,
            Error::Interrupted(sig) => return 128 + sig,
            Error::Usage(_)
            | Error::NoQemu(_)
            | Error::Kernel(_)
            | Error::Initrd(_)
            | Error::Setup { .. } => EXIT_SETUP,
        })
    }
}

fn setup(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Setup { what, source }
}

/// Where CMD's output goes, and what may interrupt the run.
pub struct Streams<'a> {
    /// CMD's standard output.
    pub stdout: &'a mut dyn Write,
    /// CMD's standard error.
    pub stderr: &'a mut dyn Write,
    /// Signals that stop the run (QEMU is killed, the result is [`Error::Interrupted`]).
    pub cancel: Option<&'a SignalFd>,
}

/// Finds `name` like `sh` would: a path if it has a `/` (relative to `cwd`), else in `path`.
pub fn resolve(name: &Path, path: &str, cwd: &Path) -> Option<PathBuf> {
    if name.as_os_str().to_string_lossy().contains('/') {
        let p = cwd.join(name);
        return p.exists().then_some(p);
    }
    path.split(':')
        .map(|d| {
            if d.is_empty() {
                cwd.to_path_buf()
            } else {
                cwd.join(d)
            }
        })
        .map(|d| d.join(name))
        .find(|p| p.is_file() && is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks CMD against the search path CMD itself will use (ours, or the one given with `env`).
fn check_cmd(cfg: &RunConfig, cwd: &Path) -> Result<()> {
    let Some(cmd) = cfg.cmd.first() else {
        return Err(Error::Usage(
            "no CMD given: moat-rig run [OPTIONS] -- CMD [ARGS...]".into(),
        ));
    };
    let path = cfg
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let found = resolve(Path::new(cmd), &path, cwd).ok_or_else(|| Error::NotFound {
        cmd: cmd.to_string_lossy().into_owned(),
        path,
    })?;
    if !is_executable(&found) {
        return Err(Error::NotExecutable(found));
    }
    Ok(())
}

/// Checks the options, then boots L1, runs CMD, and passes its output to `io`.
pub fn run(cfg: &RunConfig, io: Streams<'_>) -> Result<Outcome> {
    if !(1..=64).contains(&cfg.smp) {
        return Err(Error::Usage(format!(
            "--smp {}: give 1 to 64 vCPUs",
            cfg.smp
        )));
    }
    if !(256..=1 << 20).contains(&cfg.mem_mib) {
        return Err(Error::Usage(format!(
            "--mem {}M: give 256M to 1T",
            cfg.mem_mib
        )));
    }
    let cwd = match &cfg.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir().map_err(setup("reading the working directory"))?,
    };
    check_cmd(cfg, &cwd)?;
    let mut rw = Vec::new();
    for (i, p) in cfg.rw.iter().enumerate() {
        let abs =
            fs::canonicalize(p).map_err(|e| Error::Usage(format!("--rw {}: {e}", p.display())))?;
        if !abs.is_dir() {
            return Err(Error::Usage(format!(
                "--rw {}: not a directory",
                p.display()
            )));
        }
        rw.push(Share {
            tag: format!("moat.rw{i}"),
            path: abs,
        });
    }
    let qemu_bin = qemu::binary();
    if resolve(
        Path::new(&qemu_bin),
        &std::env::var("PATH").unwrap_or_default(),
        &cwd,
    )
    .is_none()
    {
        return Err(Error::NoQemu(qemu_bin.to_string_lossy().into_owned()));
    }
    let kernel = kernel::prepare()?;
    let initrd = initrd::prepare(&kernel)?;
    let core = kernel.load_order(kernel::CORE_MODULES)?;
    let wanted: Vec<&str> = cfg.modules.iter().map(String::as_str).collect();
    let extra: Vec<String> = kernel
        .load_order(&wanted)
        .map_err(|e| Error::Usage(format!("--module: {e}")))?
        .into_iter()
        .filter(|m| !core.contains(m))
        .collect();

    let tmp = tempfile::Builder::new()
        .prefix("moat-rig-")
        .tempdir()
        .map_err(setup(
            "creating the run's temporary directory (check TMPDIR)",
        ))?;
    let scratch = tmp.path().join("scratch");
    let rig_dir = scratch.join(".rig");
    let cmd_tmp = scratch.join("tmp");
    for d in [&rig_dir, &cmd_tmp] {
        fs::create_dir_all(d).map_err(setup(format!("creating {}", d.display())))?;
    }
    fs::set_permissions(&cmd_tmp, fs::Permissions::from_mode(0o1777))
        .map_err(setup("chmod scratch/tmp"))?;
    let env = script::environment(std::env::vars_os(), &cfg.env, &cmd_tmp);
    let run_sh = rig_dir.join("run.sh");
    fs::write(&run_sh, script::run_sh(&cwd, &env, &cfg.cmd)).map_err(setup("writing run.sh"))?;
    fs::write(
        rig_dir.join("rig.env"),
        script::rig_env(&scratch, &run_sh, &rw, &extra),
    )
    .map_err(setup("writing rig.env"))?;

    let machine = qemu::Machine {
        cpu: cfg.cpu.clone(),
        smp: cfg.smp,
        mem_mib: cfg.mem_mib,
        kernel: kernel.image(),
        initrd,
        console_log: tmp.path().join("console.log"),
        verbose: cfg.keep_log.is_some(),
        scratch,
        rw,
        ctl_sock: tmp.path().join("ctl.sock"),
        out_sock: tmp.path().join("out.sock"),
        err_sock: tmp.path().join("err.sock"),
    };
    let result = boot_and_relay(cfg, &machine, &qemu_bin, tmp.path(), io);
    if let Some(keep) = &cfg.keep_log
        && let Err(e) = fs::copy(&machine.console_log, keep)
    {
        tracing::warn!("cannot keep the console log at {}: {e}", keep.display());
    }
    result
}

/// Kills QEMU and reaps it whatever way the run ends.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// One virtio-serial port's host end.
struct Port {
    listener: UnixListener,
    stream: Option<UnixStream>,
    eof: bool,
}

impl Port {
    fn bind(path: &Path) -> Result<Self> {
        let listener =
            UnixListener::bind(path).map_err(setup(format!("listening on {}", path.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(setup("setting a socket non-blocking"))?;
        Ok(Self {
            listener,
            stream: None,
            eof: false,
        })
    }

    fn open(&self) -> bool {
        self.stream.is_some() && !self.eof
    }

    /// Accepts the connection or reads what is there; `sink` gets the bytes.
    fn service(&mut self, sink: &mut dyn FnMut(&[u8])) {
        if self.stream.is_none() {
            if let Ok((s, _)) = self.listener.accept() {
                let _ = s.set_nonblocking(true);
                self.stream = Some(s);
            }
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut buf = [0u8; 1 << 16];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => sink(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.eof = true;
                    return;
                }
            }
        }
    }
}

/// What L1's init has said so far.
#[derive(Default)]
struct Report {
    line: Vec<u8>,
    booted_at: Option<Duration>,
    modules: Duration,
    exit: Option<(i32, Duration)>,
    kvm_error: Option<String>,
    setup_error: Option<String>,
}

impl Report {
    fn feed(&mut self, bytes: &[u8], at: Duration, stderr: &mut dyn Write) {
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
            let (word, rest) = line.split_once(' ').unwrap_or((&line, ""));
            match word {
                "booted" => {
                    let secs: Vec<f64> = rest.split(' ').filter_map(|s| s.parse().ok()).collect();
                    if let [t0, t1] = secs[..] {
                        self.modules = Duration::from_secs_f64((t1 - t0).max(0.0));
                    }
                    self.booted_at = Some(at);
                }
                "exit" => {
                    if let Ok(n) = rest.trim().parse() {
                        self.exit = Some((n, at));
                    }
                }
                "kvm-error" => self.kvm_error = Some(rest.to_string()),
                "error" => self.setup_error = Some(rest.to_string()),
                "warn" => {
                    let _ = writeln!(stderr, "moat-rig: L1: {rest}");
                }
                _ => tracing::debug!("unknown line from L1's init: {line}"),
            }
        }
    }
}

/// The first panic or oops line and the last lines of L1's console, then QEMU's own messages
/// (without TCG's CPUID feature warnings).
fn console_tail(dir: &Path) -> String {
    let console = fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let lines: Vec<&str> = console.lines().collect();
    let mut text = String::from("--- L1's console (see --keep-log for all of it) ---\n");
    let tail = lines.len().saturating_sub(20);
    let alarm = ["Kernel panic", "BUG:", "Oops:", "WARNING:", "panic"];
    if let Some(first) = lines[..tail]
        .iter()
        .find(|l| alarm.iter().any(|a| l.contains(a)))
    {
        text.push_str(first);
        text.push_str("\n...\n");
    }
    for l in &lines[tail..] {
        text.push_str(l);
        text.push('\n');
    }
    let qemu = fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
    let qemu: Vec<&str> = qemu
        .lines()
        .filter(|l| !l.contains("TCG doesn't support requested feature"))
        .collect();
    if !qemu.is_empty() {
        text.push_str("--- QEMU ---\n");
        text.push_str(&qemu.join("\n"));
        text.push('\n');
    }
    text
}

fn boot_and_relay(
    cfg: &RunConfig,
    m: &qemu::Machine,
    qemu_bin: &std::ffi::OsStr,
    dir: &Path,
    io: Streams<'_>,
) -> Result<Outcome> {
    let mut ports = [
        Port::bind(&m.ctl_sock)?,
        Port::bind(&m.out_sock)?,
        Port::bind(&m.err_sock)?,
    ];
    let log = File::create(dir.join("qemu.log")).map_err(setup("creating qemu.log"))?;
    let log2 = log.try_clone().map_err(setup("duplicating qemu.log"))?;
    let mut cmd = Command::new(qemu_bin);
    cmd.args(m.args())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe; it allocates nothing and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)
        });
    }
    let start = Instant::now();
    let mut qemu = Qemu(
        cmd.spawn()
            .map_err(setup(format!("starting {}", qemu_bin.to_string_lossy())))?,
    );

    let Streams {
        stdout,
        stderr,
        cancel,
    } = io;
    let mut report = Report::default();
    let mut out_broken = false;
    let mut err_broken = false;
    let forward = |w: &mut dyn Write, broken: &mut bool, bytes: &[u8]| {
        if !*broken && (w.write_all(bytes).is_err() || w.flush().is_err()) {
            *broken = true;
        }
    };
    let failure = loop {
        let elapsed = start.elapsed();
        if let Ok(Some(_)) = qemu.0.try_wait() {
            break None;
        }
        if let Some(sig) = cancel.and_then(|c| c.read_signal().ok().flatten()) {
            break Some(Error::Interrupted(sig.ssi_signo as i32));
        }
        if let Some((_, at)) = report.exit
            && elapsed > at + POWEROFF_GRACE
        {
            tracing::warn!("L1 did not power off after CMD ended; killing QEMU");
            break None;
        }
        if let Some(limit) = cfg.timeout
            && elapsed >= limit
        {
            let phase = if report.booted_at.is_some() {
                "while CMD was running"
            } else {
                "while L1 was booting"
            };
            break Some(Error::Timeout {
                secs: limit.as_secs(),
                phase,
            });
        }
        if report.booted_at.is_none() && elapsed >= BOOT_LIMIT {
            break Some(Error::BootFailed {
                detail: format!("its init did not start within {} s", BOOT_LIMIT.as_secs()),
                console: console_tail(dir),
            });
        }
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        for p in &ports {
            if p.stream.is_none() {
                fds.push(PollFd::new(p.listener.as_fd(), PollFlags::POLLIN));
            } else if let (Some(s), false) = (&p.stream, p.eof) {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
        }
        if let Some(c) = cancel {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        // QEMU's exit is noticed by polling its status; 50 ms keeps that latency small.
        let _ = poll(&mut fds, PollTimeout::from(50u8));
        drop(fds);
        let [ctl, out, err] = &mut ports;
        ctl.service(&mut |b| report.feed(b, start.elapsed(), stderr));
        out.service(&mut |b| forward(stdout, &mut out_broken, b));
        err.service(&mut |b| forward(stderr, &mut err_broken, b));
    };
    if failure.is_some() || qemu.0.try_wait().ok().flatten().is_none() {
        let _ = qemu.0.kill();
    }
    let qemu_status = qemu.0.wait().map_err(setup("waiting for QEMU"))?;
    let total = start.elapsed();
    // QEMU is gone: whatever it passed on is in the sockets; read it to the end.
    let [ctl, out, err] = &mut ports;
    while ctl.open() || out.open() || err.open() {
        ctl.service(&mut |b| report.feed(b, total, stderr));
        out.service(&mut |b| forward(stdout, &mut out_broken, b));
        err.service(&mut |b| forward(stderr, &mut err_broken, b));
    }
    if let Some(f) = failure {
        return Err(f);
    }
    if let Some((status, at)) = report.exit {
        let booted = report.booted_at.unwrap_or_default();
        return Ok(Outcome {
            status,
            timings: Timings {
                boot: booted.saturating_sub(report.modules),
                modules: report.modules,
                cmd: at.saturating_sub(booted),
                total,
            },
        });
    }
    if let Some(e) = report.kvm_error {
        return Err(Error::Kvm(e));
    }
    if let Some(e) = report.setup_error {
        return Err(Error::L1Setup(e));
    }
    let detail = format!(
        "QEMU exited ({qemu_status}) after {:.1} s",
        total.as_secs_f64()
    );
    Err(if report.booted_at.is_some() {
        Error::L1Died {
            detail,
            console: console_tail(dir),
        }
    } else {
        Error::BootFailed {
            detail,
            console: console_tail(dir),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_follows_sh_rules() {
        let cwd = Path::new("/");
        assert_eq!(
            resolve(Path::new("sh"), "/nonexistent:/bin", cwd),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            resolve(Path::new("no-such-cmd-xyz"), "/bin:/usr/bin", cwd),
            None
        );
        assert_eq!(
            resolve(Path::new("bin/sh"), "", cwd),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve(Path::new("./nope"), "/bin", cwd), None);
    }

    #[test]
    fn bad_input_is_rejected_before_anything_starts() {
        let io = |f: &dyn Fn(Streams<'_>) -> Result<Outcome>| {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            f(Streams {
                stdout: &mut o,
                stderr: &mut e,
                cancel: None,
            })
        };
        let err = io(&|s| run(&RunConfig::new(Vec::<OsString>::new()), s)).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_SETUP), "{err}");
        let err = io(&|s| run(&RunConfig::new(["no-such-command-xyz"]), s)).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_NOT_FOUND), "{err}");
        assert!(err.to_string().contains("command not found"), "{err}");
        let plain = tempfile::NamedTempFile::new().unwrap();
        let err = io(&|s| run(&RunConfig::new([plain.path()]), s)).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_NOT_EXECUTABLE), "{err}");
        let mut cfg = RunConfig::new(["true"]);
        cfg.smp = 0;
        let err = io(&|s| run(&cfg, s)).unwrap_err();
        assert!(err.to_string().contains("--smp"), "{err}");
        let mut cfg = RunConfig::new(["true"]);
        cfg.rw = vec![PathBuf::from("/nonexistent-rw-dir")];
        let err = io(&|s| run(&cfg, s)).unwrap_err();
        assert!(
            err.to_string().contains("--rw /nonexistent-rw-dir"),
            "{err}"
        );
    }

    #[test]
    fn report_parses_init_lines() {
        let mut r = Report::default();
        let mut e = Vec::new();
        let at = Duration::from_secs(3);
        r.feed(b"booted 2.50 2.90\nwarn x y\nex", at, &mut e);
        r.feed(b"it 7\n", at * 2, &mut e);
        assert_eq!(r.booted_at, Some(at));
        assert_eq!(r.modules.as_millis(), 400);
        assert_eq!(r.exit, Some((7, at * 2)));
        assert_eq!(String::from_utf8(e).unwrap(), "moat-rig: L1: x y\n");
    }
}
