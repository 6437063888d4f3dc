//! The pod the shim serves: its backend (opened with the first container), its containers, and
//! every Task API operation in terms of the backend trait. The ttrpc glue in [`crate::task`] only
//! converts messages; the rules live here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::events::task as ev;
use moat_backend::{
    Backend, BackendKind, ContainerConfig, ExecConfig, ExitStatus, LinuxResources, Process, Spec,
    Stats,
};

use crate::config::HandlerConfig;
use crate::container::{ANNOTATION_CONTAINER_TYPE, Container, shares_pid_namespace};
use crate::error::{Error, Result};
use crate::events::{Publisher, timestamp};
use crate::mount::{self, Mount};
use crate::options::RuntimeOptions;
use crate::process::{Exit, Phase, Proc, UNKNOWN_EXIT};
use crate::state::ShimState;
use crate::stdio::{ProcessStdio, StdioPaths};

/// How long the exit watcher waits for a process's output to drain before reporting the exit.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// How long `Delete` waits for a killed created process to be reported.
const DELETE_WAIT: Duration = Duration::from_secs(10);

/// What `Create` needs.
#[derive(Debug, Default)]
pub struct CreateRequest {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Snapshot mounts for `<bundle>/rootfs`.
    pub rootfs: Vec<Mount>,
    /// Streams.
    pub stdio: StdioPaths,
    /// Decoded runtime options.
    pub options: RuntimeOptions,
}

/// A process's state, for `State`.
#[derive(Debug)]
pub struct ProcState {
    /// Phase.
    pub phase: Phase,
    /// Paused (init only).
    pub paused: bool,
    /// Host pid.
    pub pid: u32,
    /// The exit, once stopped.
    pub exit: Option<Exit>,
    /// Streams.
    pub stdio: StdioPaths,
    /// Bundle.
    pub bundle: PathBuf,
}

struct Inner {
    backend: Option<Arc<dyn Backend>>,
    /// The handler config the pod was opened with (path, narrowed config).
    config: Option<(Option<PathBuf>, HandlerConfig)>,
    containers: HashMap<String, Arc<Container>>,
}

/// The pod.
pub struct Pod {
    namespace: String,
    /// Where the backend keeps per-container state.
    state_root: PathBuf,
    publisher: Publisher,
    inner: Mutex<Inner>,
    /// Serializes `Create`, which may take long (a VM boot), without blocking other calls.
    create_lock: Mutex<()>,
    shutdown: Mutex<Option<Sender<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn load_config(options: &RuntimeOptions) -> Result<(Option<PathBuf>, HandlerConfig)> {
    match &options.config_path {
        None => Ok((None, HandlerConfig::default_ns())),
        Some(p) => HandlerConfig::load(p)
            .map(|c| (Some(p.clone()), c))
            .map_err(|e| Error::InvalidArgument(e.to_string())),
    }
}

impl Pod {
    /// An empty pod whose backend keeps its state under `state_root`. `shutdown` receives one
    /// message when the shim should exit.
    pub fn new(
        namespace: &str,
        state_root: PathBuf,
        publisher: Publisher,
        shutdown: Sender<()>,
    ) -> Arc<Pod> {
        Arc::new(Pod {
            namespace: namespace.to_string(),
            state_root,
            publisher,
            inner: Mutex::new(Inner {
                backend: None,
                config: None,
                containers: HashMap::new(),
            }),
            create_lock: Mutex::new(()),
            shutdown: Mutex::new(Some(shutdown)),
        })
    }

    /// The publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The container with this id.
    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        lock(&self.inner)
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not created in this shim")))
    }

    /// Number of containers.
    pub fn len(&self) -> usize {
        lock(&self.inner).containers.len()
    }

    /// True when the pod has no containers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend kind, once a container was created.
    pub fn backend_kind(&self) -> Option<BackendKind> {
        lock(&self.inner).backend.as_ref().map(|b| b.kind())
    }

    /// The pod's backend for a new container: opened on the first, checked on the others.
    fn backend_for(
        &self,
        path: &Option<PathBuf>,
        config: &HandlerConfig,
        id: &str,
    ) -> Result<Arc<dyn Backend>> {
        let mut g = lock(&self.inner);
        if let (Some(b), Some((p, c))) = (&g.backend, &g.config) {
            if p != path || c.backend != config.backend {
                return Err(Error::InvalidArgument(format!(
                    "container {id} asks for handler config {} ({} backend) but its pod runs \
                     {} ({} backend): containers of one pod share one handler",
                    path.as_deref()
                        .map_or("<default>".into(), |p| p.display().to_string()),
                    config.backend,
                    p.as_deref()
                        .map_or("<default>".into(), |p| p.display().to_string()),
                    c.backend
                )));
            }
            return Ok(b.clone());
        }
        let b = crate::backends::open(config, self.state_root.clone(), id)?;
        g.backend = Some(b.clone());
        g.config = Some((path.clone(), config.clone()));
        Ok(b)
    }

    /// `Create`: sets up a container and its init process (not yet running user code).
    pub fn create(self: &Arc<Self>, req: CreateRequest) -> Result<u32> {
        if req.id.is_empty() || req.id.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "invalid container id {:?}",
                req.id
            )));
        }
        if !req.bundle.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "bundle {:?} must be an absolute path",
                req.bundle.display().to_string()
            )));
        }
        let _g = lock(&self.create_lock);
        if lock(&self.inner).containers.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let spec_path = req.bundle.join("config.json");
        let spec = Spec::load(&spec_path)
            .map_err(|e| Error::InvalidArgument(format!("reading {}: {e}", spec_path.display())))?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let (path, base) = load_config(&req.options)?;
        let config = base
            .narrow(&annotations)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let is_sandbox = annotations
            .get(ANNOTATION_CONTAINER_TYPE)
            .map(String::as_str)
            == Some("sandbox");
        let kill_all = shares_pid_namespace(&spec);
        let backend = self.backend_for(&path, &config, &req.id)?;

        let rootfs = if req.rootfs.is_empty() {
            None
        } else {
            let target = req.bundle.join("rootfs");
            std::fs::create_dir_all(&target)
                .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            mount::mount_all(&req.rootfs, &target)?;
            Some(target)
        };
        let undo_mount = |rootfs: &Option<PathBuf>| {
            if let Some(t) = rootfs
                && let Err(e) = mount::unmount_all(t)
            {
                tracing::warn!("cleaning up after a failed create: {e}");
            }
        };

        let (stdio, io) = match ProcessStdio::open(&req.stdio, &req.id, &self.namespace) {
            Ok(x) => x,
            Err(e) => {
                undo_mount(&rootfs);
                return Err(e);
            }
        };
        let instance = match backend.create(ContainerConfig {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            spec,
            io,
            is_sandbox,
        }) {
            Ok(i) => Arc::<dyn moat_backend::Instance>::from(i),
            Err(e) => {
                drop(stdio);
                undo_mount(&rootfs);
                return Err(e.into());
            }
        };
        if req.stdio.terminal {
            let attached = instance
                .take_console(None)
                .map_err(Error::from)
                .and_then(|m| match m {
                    Some(m) => stdio.attach_console(m),
                    None => Err(Error::FailedPrecondition(
                        "terminal requested but the backend created no console".into(),
                    )),
                });
            if let Err(e) = attached {
                let _ = instance.delete(None);
                drop(stdio);
                undo_mount(&rootfs);
                return Err(e);
            }
        }
        let pid = instance.pid();
        let init = Arc::new(Proc::new(None, req.stdio.clone(), pid, None));
        init.set_io(stdio);
        let c = Arc::new(Container::new(
            req.id.clone(),
            req.bundle.clone(),
            instance,
            init.clone(),
            rootfs,
            kill_all,
        ));
        let state = ShimState {
            backend: config.backend,
            config_path: path,
            pid,
            pid_start: crate::cleanup::proc_start_time(pid),
            rootfs_mounted: c.rootfs.is_some(),
        };
        if let Err(e) = state.write(&req.bundle) {
            tracing::warn!(
                "container {}: {e} (cleanup after a shim crash will be partial)",
                req.id
            );
        }
        lock(&self.inner)
            .containers
            .insert(req.id.clone(), c.clone());

        let mut e = ev::TaskCreate::new();
        e.container_id = req.id.clone();
        e.bundle = req.bundle.display().to_string();
        e.pid = pid;
        let mut tio = ev::TaskIO::new();
        tio.stdin = req.stdio.stdin.clone();
        tio.stdout = req.stdio.stdout.clone();
        tio.stderr = req.stdio.stderr.clone();
        tio.terminal = req.stdio.terminal;
        e.io = Some(tio).into();
        self.publisher.publish(&e);
        self.watch(c, init);
        tracing::info!(id = %req.id, pid, backend = %config.backend, sandbox = is_sandbox, "created");
        Ok(pid)
    }

    /// Starts a thread that reports the process's exit: drains its output, records the exit,
    /// wakes `Wait`, publishes `TaskOOM`/`TaskExit`.
    fn watch(self: &Arc<Self>, c: Arc<Container>, p: Arc<Proc>) {
        let pod = self.clone();
        let name = format!("wait-{}", p.exec_id.as_deref().unwrap_or(&c.id));
        let res = std::thread::Builder::new().name(name).spawn(move || {
            let status = c.instance.wait(p.exec_id.as_deref());
            let exit = match &status {
                Ok(s) => Exit::from_status(*s),
                Err(e) => {
                    tracing::error!(id = %c.id, exec = p.exec_id_str(), "lost the process: {e}");
                    Exit {
                        status: UNKNOWN_EXIT,
                        at: std::time::SystemTime::now(),
                    }
                }
            };
            p.with_io(|io| io.finish(OUTPUT_DRAIN));
            let _order = lock(&p.order);
            if p.exec_id.is_none()
                && c.kill_all_on_exit
                && let Err(e) = c.instance.kill(None, libc::SIGKILL, true)
            {
                tracing::debug!(id = %c.id, "killing what is left after init exited: {e}");
            }
            if !p.set_exited(exit) {
                return;
            }
            pod.publish_exit(&c, &p, exit, matches!(status, Ok(ExitStatus::OomKilled)));
        });
        if let Err(e) = res {
            tracing::error!("cannot start an exit watcher thread: {e}");
        }
    }

    fn publish_exit(&self, c: &Container, p: &Proc, exit: Exit, oom: bool) {
        if oom {
            let mut o = ev::TaskOOM::new();
            o.container_id = c.id.clone();
            self.publisher.publish(&o);
        }
        let mut e = ev::TaskExit::new();
        e.container_id = c.id.clone();
        e.id = p.exec_id.clone().unwrap_or_else(|| c.id.clone());
        e.pid = p.pid();
        e.exit_status = exit.status;
        e.exited_at = Some(timestamp(exit.at)).into();
        self.publisher.publish(&e);
        tracing::info!(id = %c.id, exec = p.exec_id_str(), status = exit.status, "exited");
    }

    /// `Start`: runs the init process, or starts a registered exec process. Returns its pid.
    pub fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        let order = lock(&p.order);
        match p.phase() {
            Phase::Created => {}
            Phase::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "process {} of {id} is already running",
                    p.exec_id.as_deref().unwrap_or("init")
                )));
            }
            Phase::Stopped => {
                return Err(Error::FailedPrecondition(format!(
                    "process {} of {id} has already exited",
                    p.exec_id.as_deref().unwrap_or("init")
                )));
            }
        }
        let Some(exec) = p.exec_id.clone() else {
            c.instance.start()?;
            let pid = c.instance.pid();
            p.set_running(pid);
            let mut e = ev::TaskStart::new();
            e.container_id = id.to_string();
            e.pid = pid;
            self.publisher.publish(&e);
            tracing::info!(id, pid, "started");
            return Ok(pid);
        };
        if c.init.phase() != Phase::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in container {id}: it is not running"
            )));
        }
        let process = p.take_pending().ok_or_else(|| {
            Error::FailedPrecondition(format!("process {exec} of {id} was already started"))
        })?;
        let started = ProcessStdio::open(&p.stdio, id, &self.namespace).and_then(|(stdio, io)| {
            let pid = c.instance.exec(ExecConfig {
                exec_id: exec.clone(),
                process,
                io,
            })?;
            if p.stdio.terminal {
                match c.instance.take_console(Some(&exec))? {
                    Some(m) => stdio.attach_console(m)?,
                    None => {
                        return Err(Error::FailedPrecondition(
                            "terminal requested but the backend created no console".into(),
                        ));
                    }
                }
            }
            Ok((stdio, pid))
        });
        let (stdio, pid) = match started {
            Ok(x) => x,
            Err(e) => {
                // Release anyone already waiting on this process.
                let exit = Exit {
                    status: UNKNOWN_EXIT,
                    at: std::time::SystemTime::now(),
                };
                if p.set_exited(exit) {
                    drop(order);
                    self.publish_exit(&c, &p, exit, false);
                }
                return Err(e);
            }
        };
        p.set_io(stdio);
        p.set_running(pid);
        let mut e = ev::TaskExecStarted::new();
        e.container_id = id.to_string();
        e.exec_id = exec.clone();
        e.pid = pid;
        self.publisher.publish(&e);
        drop(order);
        self.watch(c, p);
        tracing::info!(id, exec, pid, "exec started");
        Ok(pid)
    }

    /// `Exec`: registers a process to start later with `Start`.
    pub fn exec(&self, id: &str, exec_id: &str, stdio: StdioPaths, process: Process) -> Result<()> {
        if exec_id.is_empty() || exec_id.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "invalid exec id {exec_id:?}"
            )));
        }
        let c = self.container(id)?;
        if c.init.phase() != Phase::Running {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in container {id}: it is not running"
            )));
        }
        let p = Arc::new(Proc::new(
            Some(exec_id.to_string()),
            stdio,
            0,
            Some(process),
        ));
        c.add_exec(p)?;
        let mut e = ev::TaskExecAdded::new();
        e.container_id = id.to_string();
        e.exec_id = exec_id.to_string();
        self.publisher.publish(&e);
        Ok(())
    }

    /// `Kill`.
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        if signal == 0 || signal > 64 {
            return Err(Error::InvalidArgument(format!("invalid signal {signal}")));
        }
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        if p.phase() == Phase::Stopped && !all {
            return Err(Error::NotFound(format!(
                "process {} of {id} already finished",
                p.exec_id.as_deref().unwrap_or("init")
            )));
        }
        if p.exec_id.is_some() && p.phase() == Phase::Created {
            return Err(Error::FailedPrecondition(format!(
                "process {exec_id} of {id} was never started"
            )));
        }
        c.instance.kill(p.exec_id.as_deref(), signal as i32, all)?;
        Ok(())
    }

    /// `Delete` of an exec process or of the whole container; returns (pid, exit).
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Exit)> {
        let c = self.container(id)?;
        if !exec_id.is_empty() {
            let p = c.process(exec_id)?;
            if p.phase() == Phase::Running {
                return Err(Error::FailedPrecondition(format!(
                    "process {exec_id} of {id} is still running: kill it first"
                )));
            }
            if p.pid() != 0 {
                match c.instance.delete(Some(exec_id)) {
                    Ok(_) | Err(moat_backend::Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            p.drop_io();
            c.remove_exec(exec_id);
            let exit = p.exit().unwrap_or(Exit {
                status: 0,
                at: std::time::SystemTime::now(),
            });
            return Ok((p.pid(), exit));
        }

        let init = &c.init;
        if init.phase() == Phase::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is still running: kill it first"
            )));
        }
        let reported = c.instance.delete(None)?;
        // A created container was killed by the delete: give the watcher time to report it.
        let deadline = std::time::Instant::now() + DELETE_WAIT;
        while init.exit().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let exit = init.exit().unwrap_or_else(|| {
            let e = reported.map(Exit::from_status).unwrap_or(Exit {
                status: UNKNOWN_EXIT,
                at: std::time::SystemTime::now(),
            });
            init.set_exited(e);
            e
        });
        for p in c.execs() {
            p.drop_io();
        }
        init.drop_io();
        if let Some(t) = &c.rootfs {
            mount::unmount_all(t)?;
        }
        ShimState::remove(&c.bundle);
        lock(&self.inner).containers.remove(id);
        let mut e = ev::TaskDelete::new();
        e.container_id = id.to_string();
        e.pid = init.pid();
        e.exit_status = exit.status;
        e.exited_at = Some(timestamp(exit.at)).into();
        self.publisher.publish(&e);
        tracing::info!(id, "deleted");
        Ok((init.pid(), exit))
    }

    /// `State`.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcState> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        let phase = p.phase();
        Ok(ProcState {
            phase,
            paused: p.exec_id.is_none() && phase == Phase::Running && c.paused(),
            pid: p.pid(),
            exit: p.exit(),
            stdio: p.stdio.clone(),
            bundle: c.bundle.clone(),
        })
    }

    /// `Wait`: blocks until the process exits.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        drop(c);
        Ok(p.wait())
    }

    /// `Pids`: every pid of the container, with the exec id of those that are exec processes.
    pub fn pids(&self, id: &str) -> Result<Vec<(u32, Option<String>)>> {
        let c = self.container(id)?;
        let execs: HashMap<u32, String> = c
            .execs()
            .iter()
            .filter(|p| p.pid() != 0)
            .map(|p| (p.pid(), p.exec_id_str().to_string()))
            .collect();
        Ok(c.instance
            .pids()?
            .into_iter()
            .map(|pid| (pid, execs.get(&pid).cloned()))
            .collect())
    }

    /// `Pause` / `Resume`.
    pub fn set_paused(&self, id: &str, pause: bool) -> Result<()> {
        let c = self.container(id)?;
        if c.init.phase() != Phase::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        if pause {
            c.instance.pause()?;
            c.set_paused(true);
            let mut e = ev::TaskPaused::new();
            e.container_id = id.to_string();
            self.publisher.publish(&e);
        } else {
            c.instance.resume()?;
            c.set_paused(false);
            let mut e = ev::TaskResumed::new();
            e.container_id = id.to_string();
            self.publisher.publish(&e);
        }
        Ok(())
    }

    /// `ResizePty`.
    pub fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        let clamp = |v: u32| v.min(u32::from(u16::MAX)) as u16;
        c.instance
            .resize_console(p.exec_id.as_deref(), clamp(width), clamp(height))?;
        Ok(())
    }

    /// `CloseIO` (stdin).
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        p.with_io(|io| io.close_stdin());
        c.instance.close_stdin(p.exec_id.as_deref())?;
        Ok(())
    }

    /// `Update`.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        self.container(id)?.instance.update(resources)?;
        Ok(())
    }

    /// `Stats`.
    pub fn stats(&self, id: &str) -> Result<Stats> {
        Ok(self.container(id)?.instance.stats()?)
    }

    /// `Shutdown`: when no container is left, tears the pod down and lets the shim exit. With
    /// containers left it does nothing (containerd asks after every task delete).
    pub fn shutdown(&self, now: bool) -> Result<bool> {
        let backend = {
            let g = lock(&self.inner);
            if !g.containers.is_empty() && !now {
                return Ok(false);
            }
            g.backend.clone()
        };
        if let Some(b) = backend
            && let Err(e) = b.shutdown()
        {
            tracing::warn!("shutting the backend down: {e}");
        }
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
        Ok(true)
    }
}
