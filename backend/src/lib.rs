//! The one seam between moat's front ends and its walls.
//!
//! `moat run` and `containerd-shim-moat-v2` drive containers only through the traits here, so the same
//! conformance suite runs unchanged against every backend (in the spirit of runwasi's `Instance`).
//!
//! The model follows containerd's: a [`Backend`] object serves **one pod** (one shim per pod; `moat
//! run` makes a pod of one container). The pod's containers are [`Instance`]s; each has an init
//! process and may have exec'd processes, addressed by an exec id (`None` = the init process).
//!
//! - `ns`: a pod is nothing more than its containers; containers of one pod share namespaces because
//!   their OCI specs name the sandbox's namespaces by path (containerd's CRI plugin writes those).
//! - `trace`: like `ns`, with each container's processes under a ptrace supervisor.
//! - `vm`: the pod is a microVM, booted when the first container (the sandbox) is created; every
//!   container of the pod runs inside it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

pub use oci_spec::runtime::{LinuxResources, Process, Spec};

pub mod binary;
pub mod check;
mod error;
mod kind;
pub mod ns;
pub mod reaper;
pub mod trace;
pub mod vm;

pub use error::{Error, Result};
pub use kind::BackendKind;

/// Where a process's standard streams go.
#[derive(Debug, Default)]
pub enum ProcessIo {
    /// The process gets these descriptors as fds 0, 1 and 2 (a closed stream when `None`). They may
    /// be pipes, FIFOs, files or a terminal the caller owns. Backends that cannot hand descriptors
    /// to the process (vm) copy between them and the process's streams, and finish copying every
    /// byte of stdout/stderr before reporting the exit from [`Instance::wait`].
    Fds {
        /// Standard input.
        stdin: Option<OwnedFd>,
        /// Standard output.
        stdout: Option<OwnedFd>,
        /// Standard error.
        stderr: Option<OwnedFd>,
    },
    /// The process gets a new pseudo-terminal as its controlling terminal; the caller takes the
    /// master end with [`Instance::take_console`].
    Terminal,
    /// All three streams are closed (`/dev/null`).
    #[default]
    Null,
}

/// What a container is created from.
#[derive(Debug)]
pub struct ContainerConfig {
    /// Container id, unique within the pod (containerd's task id).
    pub id: String,
    /// The OCI bundle directory (holds `config.json`; `root.path` is relative to it unless absolute).
    pub bundle: PathBuf,
    /// The parsed and validated spec. Front ends may have adjusted it (e.g. `moat run --memory`).
    pub spec: Spec,
    /// The init process's streams.
    pub io: ProcessIo,
    /// True for the pod's sandbox (pause) container, which the others join.
    pub is_sandbox: bool,
}

/// What an exec'd process is created from.
#[derive(Debug)]
pub struct ExecConfig {
    /// Exec id, unique within the container.
    pub exec_id: String,
    /// The process to run inside the container's namespaces and cgroup.
    pub process: Process,
    /// Its streams.
    pub io: ProcessIo,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
    /// The kernel's OOM killer ended it because its cgroup hit the memory limit.
    OomKilled,
}

impl ExitStatus {
    /// The status a shell reports: the exit code, 128+N for signal N, 137 after an OOM kill.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
            ExitStatus::OomKilled => 128 + 9,
        }
    }
}

/// Resource usage of a container, from its cgroup (ns, trace) or from the guest (vm).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Memory in use, in bytes.
    pub memory_usage: u64,
    /// Memory limit in bytes, if any.
    pub memory_limit: Option<u64>,
    /// Times the memory limit was hit.
    pub memory_failcnt: u64,
    /// OOM kills in the cgroup.
    pub oom_kills: u64,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// CPU time in user mode, in nanoseconds.
    pub cpu_user_ns: u64,
    /// CPU time in kernel mode, in nanoseconds.
    pub cpu_system_ns: u64,
    /// Number of tasks in the cgroup.
    pub pids_current: u64,
    /// Task limit, if any.
    pub pids_limit: Option<u64>,
}

/// A pod, on one wall. Created by the backend's constructor; `moat run` and the shim hold one each.
pub trait Backend: Send + Sync {
    /// Which wall this is.
    fn kind(&self) -> BackendKind;

    /// Creates a container and leaves its init process in the runtime-spec "created" state: set up,
    /// waiting for [`Instance::start`] before it runs user code. Bad input is rejected before any
    /// state changes; on error nothing is left behind.
    fn create(&self, config: ContainerConfig) -> Result<Box<dyn Instance>>;

    /// Tears down what the pod holds beyond its containers (the VM, sockets, images). Containers
    /// still running are killed. Idempotent.
    fn shutdown(&self) -> Result<()>;

    /// Cleans up container `id` (bundle `bundle`) after the process that created it died without
    /// deleting it — containerd runs the shim's `delete` in a fresh process when a shim was killed.
    /// Kills what still runs of it and removes the backend's own state for it (cgroups, mounts,
    /// state directories, VM sockets). Idempotent; an id this backend never knew is not an error.
    ///
    /// The shim already kills the init pid it recorded, empties the spec's cgroup and unmounts the
    /// rootfs it mounted; this default does nothing more. Backends that keep more (a state
    /// directory, a VMM) override it.
    fn cleanup_orphan(&self, id: &str, bundle: &std::path::Path) -> Result<()> {
        let _ = (id, bundle);
        Ok(())
    }
}

/// One container of a pod. Every method may be called from any thread.
pub trait Instance: Send + Sync {
    /// The container id.
    fn id(&self) -> &str;

    /// The host pid of the container's init process (vm: the pid of the process that represents
    /// it on the host, e.g. the VMM, since the guest's pids mean nothing to the host).
    fn pid(&self) -> u32;

    /// Lets the init process run user code (execve of `process.args`).
    fn start(&self) -> Result<()>;

    /// Starts another process in the running container; returns its host pid (as for [`pid`]).
    ///
    /// [`pid`]: Instance::pid
    fn exec(&self, config: ExecConfig) -> Result<u32>;

    /// Sends `signal` to the init process (`exec_id` = `None`) or to an exec'd process; with `all`,
    /// to every process of the container.
    fn kill(&self, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()>;

    /// Blocks until the process ends and returns how; returns at once if it already has. Any number
    /// of threads may wait on the same process.
    fn wait(&self, exec_id: Option<&str>) -> Result<ExitStatus>;

    /// Like [`wait`](Instance::wait) with a deadline: `Ok(None)` if the process is still running.
    fn wait_timeout(&self, exec_id: Option<&str>, timeout: Duration) -> Result<Option<ExitStatus>>;

    /// Takes the master end of the process's pseudo-terminal (once), if it was created with
    /// [`ProcessIo::Terminal`].
    fn take_console(&self, exec_id: Option<&str>) -> Result<Option<OwnedFd>>;

    /// Resizes the process's terminal.
    fn resize_console(&self, exec_id: Option<&str>, width: u16, height: u16) -> Result<()>;

    /// Closes the process's standard input (the caller's write end is already closed; backends that
    /// copy stdin pass the EOF on).
    fn close_stdin(&self, exec_id: Option<&str>) -> Result<()>;

    /// Host pids of every process in the container.
    fn pids(&self) -> Result<Vec<u32>>;

    /// Freezes every process of the container.
    fn pause(&self) -> Result<()>;

    /// Thaws a paused container.
    fn resume(&self) -> Result<()>;

    /// Changes the container's resource limits.
    fn update(&self, resources: &LinuxResources) -> Result<()>;

    /// Current resource usage.
    fn stats(&self) -> Result<Stats>;

    /// Forgets an exec'd process that has ended (`exec_id` = `Some`), or removes the container:
    /// kills whatever still runs, then removes its cgroups, mounts, state and files. Returns the
    /// exit status if the process had ended. Idempotent.
    fn delete(&self, exec_id: Option<&str>) -> Result<Option<ExitStatus>>;
}
