//! The `trace` wall: `ns` containers whose every process runs under a `moat-trace` supervisor
//! (crate `moat-trace`): a seccomp filter installed right before `execve` traps the calls the
//! policy polices, and the supervisor, attached while the process is held before that `execve`,
//! decides them. If the supervisor dies, the kernel kills the workload (`PTRACE_O_EXITKILL`).
//!
//! The supervisor runs in its own process (`moat-trace attach --pid N`), one per container
//! process started here (the init and each exec'd process; their children are followed by it).
//! It has to: ptrace ties tracees to the tracer thread and reports their stops through
//! `waitpid`, which must not compete with this process's reaper. The container's processes stay
//! children of this process, so exit statuses, OOM detection, stats and cleanup are the `ns`
//! wall's own.

pub mod check;
mod spawn;

use std::path::PathBuf;
use std::sync::Arc;

use crate::ns::{NsBackend, NsOptions};
use crate::{Backend, BackendKind, ContainerConfig, Error, Instance, Result};

pub use moat_trace::Policy;
pub use spawn::supervisor_binary;

/// How a [`TraceBackend`] is set up.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Where container state lives (as for the `ns` wall).
    pub root: PathBuf,
    /// The policy every container of the pod runs under (checked already:
    /// [`Policy::load`], [`Policy::builtin`]).
    pub policy: Policy,
    /// The `moat-trace` binary; `None`: [`supervisor_binary`] finds it.
    pub supervisor: Option<PathBuf>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            root: PathBuf::from(moat_sandbox::DEFAULT_ROOT),
            // The built-in policy is tested to compile.
            policy: Policy::builtin().unwrap_or_else(|e| panic!("built-in trace policy: {e}")),
            supervisor: None,
        }
    }
}

/// One pod on the `trace` wall.
#[derive(Debug)]
pub struct TraceBackend {
    ns: NsBackend,
}

impl TraceBackend {
    /// A backend running every container under `opts.policy`. Fails if the host cannot supervise
    /// soundly (no `mseal`), or the supervisor binary is missing.
    pub fn new(opts: TraceOptions) -> Result<Self> {
        moat_trace::supervisor::probe().map_err(|e| Error::Unavailable(e.to_string()))?;
        let bin = match opts.supervisor {
            Some(b) => b,
            None => supervisor_binary()?,
        };
        let hooks = spawn::Spawner::new(bin, &opts.policy)?;
        let ns = NsBackend::with_supervisor(NsOptions { root: opts.root }, Arc::new(hooks))?;
        Ok(Self { ns })
    }
}

impl Backend for TraceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Trace
    }

    fn create(&self, config: ContainerConfig) -> Result<Box<dyn Instance>> {
        self.ns.create(config)
    }

    fn shutdown(&self) -> Result<()> {
        self.ns.shutdown()
    }

    fn cleanup_orphan(&self, id: &str, bundle: &std::path::Path) -> Result<()> {
        self.ns.cleanup_orphan(id, bundle)
    }
}
