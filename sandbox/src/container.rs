//! The container: create (to the runtime-spec "created" state), load from another process, start,
//! kill, delete, pause/resume, update, stats.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxNamespaceType, LinuxResources, Spec};
use seccompiler::BpfProgram;

use crate::cgroups::{self, Cgroup, Layout, Stats};
use crate::config;
use crate::error::{Error, IoContext, Result};
use crate::process::spawn::{self, ConsoleTarget, Request, StartSignal};
use crate::rootfs::{CgroupSubmount, CgroupView};
use crate::state::{self, FIFO, OciState, Saved, Status};
use crate::syscall::{cvt, cvt_long};

/// Where a container process's standard streams go.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The caller's own fds 0, 1 and 2.
    Inherit,
    /// `/dev/null` for all three.
    #[default]
    Null,
    /// These descriptors (pipes, FIFOs, files, a terminal the caller owns); `None` is `/dev/null`.
    Fds {
        /// Standard input.
        stdin: Option<OwnedFd>,
        /// Standard output.
        stdout: Option<OwnedFd>,
        /// Standard error.
        stderr: Option<OwnedFd>,
    },
    /// A new pseudo-terminal made inside the container (requires `process.terminal: true`).
    Terminal(Console),
}

/// Who gets the master end of a container's terminal.
#[derive(Debug)]
pub enum Console {
    /// Sent over a Unix socket at this path with `SCM_RIGHTS`, as runc's `--console-socket`
    /// (payload: the string `/dev/ptmx`).
    Socket(PathBuf),
    /// Kept for the caller: [`Container::take_console`] / [`crate::ExecProcess::console`].
    Return,
}

/// What [`Container::create`] needs.
#[derive(Debug)]
pub struct CreateOptions {
    /// State root (`/run/moat` by default, see [`state::DEFAULT_ROOT`]); the container's state
    /// goes to `<root>/<id>/`.
    pub root: PathBuf,
    /// Container id: 1-1024 of `[A-Za-z0-9_.+-]`, not starting with `.`.
    pub id: String,
    /// Bundle directory (`root.path` and relative bind sources are relative to it).
    pub bundle: PathBuf,
    /// The spec (e.g. from [`crate::load_spec`], possibly adjusted).
    pub spec: Spec,
    /// The init's stdio.
    pub stdio: Stdio,
    /// Extra BPF programs installed after the spec's seccomp profile, right before `execve`
    /// (the kernel runs every filter; the strictest verdict wins).
    pub extra_seccomp: Vec<BpfProgram>,
}

/// A container, created here or loaded from its state.
#[derive(Debug)]
pub struct Container {
    pub(crate) saved: Saved,
    pub(crate) dir: PathBuf,
    console: Option<OwnedFd>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
}

fn dev_null() -> Result<OwnedFd> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .ctx(|| "opening /dev/null".into())
}

/// Turns the public [`Stdio`] into what the spawner takes.
pub(crate) fn spawn_stdio(stdio: Stdio, terminal: bool) -> Result<spawn::Stdio> {
    if terminal != matches!(stdio, Stdio::Terminal(_)) {
        return Err(Error::spec(
            "process.terminal",
            if terminal {
                "is true, so the process needs a console: pass Stdio::Terminal (--console-socket) or set it false"
            } else {
                "is false, but a terminal was asked for: set process.terminal to true"
            },
        ));
    }
    Ok(match stdio {
        Stdio::Inherit => spawn::Stdio::Inherit,
        Stdio::Null => spawn::Stdio::Fds([dev_null()?, dev_null()?, dev_null()?]),
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            let or_null = |f: Option<OwnedFd>| f.map_or_else(dev_null, Ok);
            spawn::Stdio::Fds([or_null(stdin)?, or_null(stdout)?, or_null(stderr)?])
        }
        Stdio::Terminal(Console::Return) => spawn::Stdio::Terminal(ConsoleTarget::Caller),
        Stdio::Terminal(Console::Socket(path)) => {
            let s = UnixStream::connect(&path)
                .ctx(|| format!("connecting to the console socket {}", path.display()))?;
            spawn::Stdio::Terminal(ConsoleTarget::Socket(s.into()))
        }
    })
}

/// How a new process gets into `cg`: `clone3(CLONE_INTO_CGROUP)` on v2, the caller writing its
/// pid on v1.
pub(crate) fn cgroup_join(cg: &Cgroup) -> Result<spawn::CgroupJoin> {
    let procs = cg
        .procs_files()
        .iter()
        .map(|p| spawn::open_procs(p))
        .collect::<Result<Vec<_>>>()?;
    let into = match (cg.version, cg.dirs.as_slice()) {
        (cgroups::Version::V2, [dir]) => {
            let c = crate::syscall::cpath(&dir.path).ctx(|| "cgroup path".into())?;
            let fd = crate::syscall::open_raw(&c, libc::O_RDONLY | libc::O_DIRECTORY)
                .ctx(|| format!("opening {}", dir.path.display()))?;
            // SAFETY: just opened.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        _ => None,
    };
    Ok(spawn::CgroupJoin { procs, into })
}

/// The cgroup hierarchies as the container's `cgroup` mount shows them.
fn cgroup_view(cg: &Cgroup, new_ns: bool) -> CgroupView {
    let v2 = cg.version == cgroups::Version::V2;
    let submounts = cg
        .dirs
        .iter()
        .map(|d| CgroupSubmount {
            name: if v2 {
                String::new()
            } else if d.unified {
                "unified".into()
            } else {
                d.mountpoint
                    .file_name()
                    .map_or_else(|| d.options.join(","), |n| n.to_string_lossy().into_owned())
            },
            fstype: if v2 || d.unified { "cgroup2" } else { "cgroup" },
            data: d.options.join(","),
            host_dir: d.path.clone(),
        })
        .collect();
    CgroupView {
        new_ns,
        submounts,
        v2,
    }
}

/// The spec's resources plus allow rules for the devices it creates (runc does the same).
fn resources_with_devices(spec: &Spec) -> Option<LinuxResources> {
    let linux = spec.linux().as_ref()?;
    let mut r = linux.resources().clone()?;
    if let (Some(rules), Some(devs)) = (r.devices_mut(), linux.devices()) {
        rules.extend(devs.iter().map(LinuxDeviceCgroup::from));
    }
    Some(r)
}

impl Container {
    /// Creates the container and leaves it in the "created" state: its init set up and blocked
    /// before `execve` until [`Container::start`] (from any process). The init is a child of the
    /// calling process: the caller reaps it (`waitpid`, or a pidfd reaper). Bad input is rejected
    /// before anything is made; on any error nothing is left behind.
    pub fn create(opts: CreateOptions) -> Result<Container> {
        if !valid_id(&opts.id) {
            return Err(Error::InvalidId(opts.id));
        }
        let dir = opts.root.join(&opts.id);
        if dir.exists() {
            return Err(Error::Exists { id: opts.id, dir });
        }
        let bundle = std::path::absolute(&opts.bundle)
            .ctx(|| format!("bundle {}", opts.bundle.display()))?;
        let mut built = config::build(&opts.spec, &bundle)?;
        built.init.process.extra_seccomp = opts.extra_seccomp;
        let terminal = built.init.process.terminal;
        let layout = Layout::detect()?;
        let linux = opts.spec.linux().as_ref();
        let relative =
            cgroups::path::resolve(linux.and_then(|l| l.cgroups_path().as_deref()), &opts.id)?;
        let stdio = spawn_stdio(opts.stdio, terminal)?;

        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&opts.root)
            .ctx(|| format!("creating {}", opts.root.display()))?;
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Exists {
                        id: opts.id.clone(),
                        dir: dir.clone(),
                    }
                } else {
                    Error::Io {
                        context: format!("creating {}", dir.display()),
                        source,
                    }
                }
            })?;
        let result = Self::create_in(
            &dir, &opts.id, &bundle, &opts.spec, built, &layout, &relative, stdio,
        );
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn create_in(
        dir: &Path,
        id: &str,
        bundle: &Path,
        spec: &Spec,
        mut built: config::Built,
        layout: &Layout,
        relative: &Path,
        stdio: spawn::Stdio,
    ) -> Result<Container> {
        let fifo = crate::syscall::cpath(&dir.join(FIFO)).ctx(|| "exec FIFO path".into())?;
        // SAFETY: a valid path; mode as runc's.
        cvt(unsafe { libc::mkfifo(fifo.as_ptr(), 0o622) })
            .ctx(|| format!("creating {}", dir.join(FIFO).display()))?;
        // Exactly 0622 whatever the umask: the init may run as another (mapped) uid when it opens
        // it, and only writes to it.
        // SAFETY: a valid path.
        cvt(unsafe { libc::chmod(fifo.as_ptr(), 0o622) })
            .ctx(|| format!("chmod {}", dir.join(FIFO).display()))?;
        let resources = resources_with_devices(spec);
        let cgroup = Cgroup::create(layout, relative, resources.as_ref())?;
        let result = (|| {
            if let Some(r) = built.init.rootfs.as_mut() {
                r.cgroup = cgroup_view(&cgroup, built.ns.creates(LinuxNamespaceType::Cgroup));
            }
            let join = cgroup_join(&cgroup)?;
            let dir_c = crate::syscall::cpath(dir).ctx(|| "state directory".into())?;
            let dirfd = crate::syscall::open_raw(&dir_c, libc::O_PATH | libc::O_DIRECTORY)
                .ctx(|| format!("opening {}", dir.display()))?;
            // SAFETY: `dirfd` was just opened.
            let dirfd = unsafe { OwnedFd::from_raw_fd(dirfd) };
            let maps = built
                .ns
                .id_maps
                .as_ref()
                .map(|(u, g)| (u.as_str(), g.as_str()));
            let spawned = spawn::spawn(Request {
                plan: &built.init,
                cgroup: join,
                joins: &built.ns.joins,
                clone_flags: built.ns.clone_flags & !libc::CLONE_NEWCGROUP,
                new_time: built.ns.new_time.as_deref(),
                id_maps: maps,
                stdio,
                start: StartSignal::Fifo(dirfd),
            })?;
            let saved = Saved {
                oci_version: spec.version().clone(),
                id: id.to_string(),
                pid: spawned.pid,
                pid_start_time: state::proc_stat(spawned.pid).map_or(0, |(_, t)| t),
                bundle: bundle.to_path_buf(),
                rootfs: built.rootfs.clone(),
                created: state::now_rfc3339(),
                annotations: spec.annotations().clone().unwrap_or_default(),
                cgroup: cgroup.clone(),
                seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
                no_new_privs: built.init.process.no_new_privs,
            };
            if let Err(e) = saved.write(dir) {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(spawned.pid, libc::SIGKILL);
                    libc::waitpid(spawned.pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
            Ok(Container {
                saved,
                dir: dir.to_path_buf(),
                console: spawned.console,
            })
        })();
        if result.is_err() {
            let _ = cgroup.kill_all(Duration::from_secs(5));
            let _ = cgroup.remove();
        }
        result
    }

    /// Loads container `id` from `<root>/<id>/state.json` (any process).
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        if !valid_id(id) {
            return Err(Error::InvalidId(id.to_string()));
        }
        let dir = root.join(id);
        if !dir.join(state::STATE_FILE).exists() {
            return Err(Error::NotFound {
                id: id.to_string(),
                dir,
            });
        }
        let saved = Saved::read(&dir)?;
        Ok(Container {
            saved,
            dir,
            console: None,
        })
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.saved.id
    }

    /// Host pid of the init.
    pub fn pid(&self) -> i32 {
        self.saved.pid
    }

    /// The bundle directory.
    pub fn bundle(&self) -> &Path {
        &self.saved.bundle
    }

    /// The container's state directory (`<root>/<id>`).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> &Cgroup {
        &self.saved.cgroup
    }

    /// The saved state (pid start time, rootfs, created time, ...).
    pub fn saved(&self) -> &Saved {
        &self.saved
    }

    /// The terminal master of the init, when created with `Stdio::Terminal(Console::Return)`.
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Whether the init is alive (not exited, not a zombie, pid not reused).
    pub fn init_alive(&self) -> bool {
        state::alive(self.saved.pid, self.saved.pid_start_time)
    }

    /// The lifecycle status now.
    pub fn status(&self) -> Status {
        if !self.init_alive() {
            Status::Stopped
        } else if self.dir.join(FIFO).exists() {
            Status::Created
        } else if self.saved.cgroup.is_frozen() {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// The runtime-spec state.
    pub fn state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: self.saved.oci_version.clone(),
            id: self.saved.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.saved.pid
            },
            bundle: self.saved.bundle.clone(),
            annotations: self.saved.annotations.clone(),
        }
    }

    fn wrong(&self, status: Status, what: &str) -> Error {
        Error::WrongStatus {
            id: self.saved.id.clone(),
            status: status.to_string(),
            what: what.to_string(),
        }
    }

    /// A pidfd for the init, checked against its start time.
    fn pidfd(&self) -> Result<OwnedFd> {
        // SAFETY: pidfd_open with integer arguments.
        let fd = cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, self.saved.pid, 0) })
            .ctx(|| format!("pidfd_open({})", self.saved.pid))?;
        // SAFETY: the descriptor was just created.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !self.init_alive() {
            return Err(self.wrong(Status::Stopped, "its init has exited"));
        }
        Ok(fd)
    }

    /// Lets the init run `process.args` (from any process): opens and reads the exec FIFO, then
    /// removes it. Fails if the container is not in the "created" state or its init dies first.
    pub fn start(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            return Err(self.wrong(status, "only a created container can be started"));
        }
        let pidfd = self.pidfd()?;
        let path = self.dir.join(FIFO);
        let c = crate::syscall::cpath(&path).ctx(|| "exec FIFO path".into())?;
        let fifo = crate::syscall::open_raw(&c, libc::O_RDONLY | libc::O_NONBLOCK)
            .ctx(|| format!("opening {}", path.display()))?;
        // SAFETY: just opened.
        let fifo = unsafe { OwnedFd::from_raw_fd(fifo) };
        let mut fds = [
            libc::pollfd {
                fd: fifo.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a live array of two pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n > 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if n < 0 && e.raw_os_error() != Some(libc::EINTR) {
                return Err(Error::Io {
                    context: "waiting for the container's init".into(),
                    source: e,
                });
            }
        }
        let mut byte = 0u8;
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(fifo.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        if n != 1 {
            return Err(Error::Setup(
                "the container's init exited before it was started".into(),
            ));
        }
        fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))
    }

    /// Sends `signal` to the init, or with `all` to every process of the container.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        if all {
            return self.saved.cgroup.signal_all(signal);
        }
        let pidfd = self.pidfd()?;
        // SAFETY: pidfd_send_signal on a live pidfd, no siginfo.
        cvt_long(unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        })
        .ctx(|| format!("sending signal {signal} to {}", self.saved.pid))
        .map(drop)
    }

    /// Removes the container: refuses a running or paused one unless `force` (which kills it);
    /// a created one is killed (as runc does). Kills what is left in the cgroup, removes the cgroup
    /// and the state directory. The init's exit status stays with its parent (the creator).
    pub fn delete(self, force: bool) -> Result<()> {
        let status = self.status();
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(self.wrong(status, "stop it first (kill), or delete with force"));
        }
        self.saved.cgroup.kill_all(Duration::from_secs(10))?;
        self.saved.cgroup.remove()?;
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
                context: format!("removing {}", self.dir.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Host pids of every process in the container.
    pub fn pids(&self) -> Result<Vec<i32>> {
        self.saved.cgroup.pids()
    }

    /// Freezes the container.
    pub fn pause(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Running {
            return Err(self.wrong(status, "only a running container can be paused"));
        }
        self.saved.cgroup.set_frozen(true)
    }

    /// Thaws a paused container.
    pub fn resume(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Paused {
            return Err(self.wrong(status, "only a paused container can be resumed"));
        }
        self.saved.cgroup.set_frozen(false)
    }

    /// Changes the resource limits.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        self.saved.cgroup.update(resources)
    }

    /// Current resource usage.
    pub fn stats(&self) -> Result<Stats> {
        self.saved.cgroup.stats()
    }

    /// How many processes of the container the OOM killer killed. Read it before `delete`: an
    /// init killed by SIGKILL with a non-zero count is reported as exit 137 (OOM).
    pub fn oom_kills(&self) -> u64 {
        self.saved.cgroup.oom_kills()
    }
}
