//! The `ns` wall: containers as Linux namespaces, cgroups, capabilities and seccomp, sharing the
//! host kernel (what runc and crun do), built on `moat-sandbox`.
//!
//! A [`NsBackend`] serves one pod: it creates containers with `moat_sandbox::Container::create`
//! (state under its root directory), registers every process it starts with the process-wide
//! [`reaper`](crate::reaper) (the container's init and each exec'd process are direct children of
//! this process), and reports an init killed by SIGKILL in a cgroup whose OOM counter moved as
//! [`ExitStatus::OomKilled`].

pub mod check;
mod instance;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use moat_sandbox::{Console, Container, CreateOptions, Stdio};

use crate::{Backend, BackendKind, ContainerConfig, Error, Instance, ProcessIo, Result, reaper};

use instance::Inner;
pub use instance::NsInstance;

/// How an [`NsBackend`] is set up.
#[derive(Clone, Debug)]
pub struct NsOptions {
    /// Where container state lives (`<root>/<id>/`); `/run/moat` for `moat run` and the OCI verbs.
    pub root: PathBuf,
}

impl Default for NsOptions {
    fn default() -> Self {
        Self {
            root: PathBuf::from(moat_sandbox::DEFAULT_ROOT),
        }
    }
}

/// One pod on the `ns` wall.
#[derive(Debug)]
pub struct NsBackend {
    opts: NsOptions,
    live: Arc<Mutex<HashMap<String, Arc<Inner>>>>,
    supervise: Option<Arc<dyn Supervise>>,
}

/// What the trace wall adds to ns containers: a seccomp filter installed last, right before
/// `execve`, and a supervisor attached to every process (init and exec'd) while it is held before
/// that `execve`, so it never runs user code unsupervised.
pub(crate) trait Supervise: Send + Sync + std::fmt::Debug {
    /// Filters installed after the spec's seccomp profile.
    fn extra_seccomp(&self) -> Vec<moat_sandbox::BpfProgram>;
    /// Attaches a supervisor to `pid` (held before its `execve`); returns once it is attached.
    /// `what` names the process in errors.
    fn attach(&self, pid: u32, what: &str) -> Result<()>;
}

impl NsBackend {
    /// A backend keeping state under `opts.root`. Starts the process-wide reaper if needed.
    pub fn new(opts: NsOptions) -> Result<Self> {
        reaper::global().map_err(|e| Error::internal("starting the reaper", e))?;
        Ok(Self {
            opts,
            live: Arc::default(),
            supervise: None,
        })
    }

    /// A backend whose every process runs under `supervise` (the trace wall).
    pub(crate) fn with_supervisor(opts: NsOptions, supervise: Arc<dyn Supervise>) -> Result<Self> {
        let mut b = Self::new(opts)?;
        b.supervise = Some(supervise);
        Ok(b)
    }

    /// The state root.
    pub fn root(&self) -> &std::path::Path {
        &self.opts.root
    }
}

/// Maps a sandbox error onto the backend's few kinds (which the shim maps to containerd codes).
pub(crate) fn map_err(context: &str, e: moat_sandbox::Error) -> Error {
    use moat_sandbox::Error as S;
    match e {
        S::Spec { .. } | S::InvalidId(_) => Error::InvalidArgument(e.to_string()),
        S::Exists { .. } => Error::AlreadyExists(e.to_string()),
        S::NotFound { .. } => Error::NotFound(e.to_string()),
        S::WrongStatus { .. } => Error::FailedPrecondition(e.to_string()),
        S::Cgroup(_) => Error::Unavailable(e.to_string()),
        other => Error::internal(context, other),
    }
}

/// The sandbox's stdio for a process's [`ProcessIo`].
pub(crate) fn sandbox_stdio(io: ProcessIo) -> Stdio {
    match io {
        ProcessIo::Fds {
            stdin,
            stdout,
            stderr,
        } => Stdio::Fds {
            stdin,
            stdout,
            stderr,
        },
        ProcessIo::Terminal => Stdio::Terminal(Console::Return),
        ProcessIo::Null => Stdio::Null,
    }
}

impl Backend for NsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ns
    }

    fn create(&self, config: ContainerConfig) -> Result<Box<dyn Instance>> {
        let reaper = reaper::global().map_err(|e| Error::internal("starting the reaper", e))?;
        if self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&config.id)
        {
            return Err(Error::AlreadyExists(format!(
                "container {:?} already exists in this pod",
                config.id
            )));
        }
        let id = config.id.clone();
        let mut container = Container::create(CreateOptions {
            root: self.opts.root.clone(),
            id: config.id,
            bundle: config.bundle,
            spec: config.spec,
            stdio: sandbox_stdio(config.io),
            extra_seccomp: self
                .supervise
                .as_ref()
                .map(|s| s.extra_seccomp())
                .unwrap_or_default(),
        })
        .map_err(|e| map_err(&format!("creating container {id}"), e))?;
        let pid = container.pid() as u32;
        let init = match reaper.watch(pid) {
            Ok(w) => w,
            Err(e) => {
                // Without a watch nobody would reap it: take it all down again.
                // SAFETY: kill and reap our own child (the init), which nothing else waits for.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                    libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
                }
                let _ = container.delete(true);
                return Err(Error::internal(format!("watching container {id}"), e));
            }
        };
        if let Some(s) = &self.supervise
            && let Err(e) = s.attach(pid, &format!("container {id}"))
        {
            let _ = init.signal(libc::SIGKILL);
            let _ = init.wait_timeout(std::time::Duration::from_secs(10));
            let _ = container.delete(true);
            return Err(e);
        }
        let console = container.take_console();
        let inner = Arc::new(Inner::new(
            id.clone(),
            container,
            init,
            console,
            self.supervise.clone(),
        ));
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, inner.clone());
        Ok(Box::new(NsInstance::new(inner, self.live.clone())))
    }

    /// Force-deletes what a dead shim's container left under the state root: its processes (by
    /// cgroup), its cgroup and its state directory. Nothing recorded is not an error.
    fn cleanup_orphan(&self, id: &str, _bundle: &std::path::Path) -> Result<()> {
        match Container::load(&self.opts.root, id) {
            Ok(c) => c
                .delete(true)
                .map_err(|e| map_err(&format!("deleting orphaned container {id}"), e)),
            Err(moat_sandbox::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(&format!("loading orphaned container {id}"), e)),
        }
    }

    fn shutdown(&self) -> Result<()> {
        let all: Vec<Arc<Inner>> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, v)| v)
            .collect();
        let mut first_err = None;
        for inner in all {
            if let Err(e) = inner.delete_container() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
