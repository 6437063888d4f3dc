//! `moat-sandbox`: an OCI `config.json` to a running Linux container, as runc does — namespaces,
//! rootfs and `pivot_root`, mounts, `/dev`, masked and read-only paths, cgroups v1 and v2,
//! capabilities, rlimits, `no_new_privs`, user namespaces, seccomp. The `ns` and `trace` backends
//! and the in-guest agent build on it.
//!
//! # Lifecycle
//!
//! ```no_run
//! use moat_sandbox::{Container, CreateOptions, Stdio, load_spec};
//! # fn main() -> moat_sandbox::Result<()> {
//! let bundle = std::path::Path::new("/tmp/bundle");
//! let spec = load_spec(bundle)?;                  // errors name the JSON field
//! let c = Container::create(CreateOptions {
//!     root: "/run/moat".into(),                   // state in /run/moat/<id>/
//!     id: "c1".into(),
//!     bundle: bundle.into(),
//!     spec,
//!     stdio: Stdio::Inherit,
//!     extra_seccomp: Vec::new(),
//! })?;                                            // "created": init blocked before execve
//! let init_pid = c.pid();                         // a child of this process: reap it yourself
//! c.start()?;                                     // or, elsewhere: Container::load(root, id)?.start()
//! // ... waitpid(init_pid) ...; if killed by SIGKILL and c.oom_kills() > 0: report 137
//! c.delete(false)?;                               // cgroups and state removed
//! # Ok(()) }
//! ```
//!
//! # Process model
//!
//! The caller may be multithreaded (the containerd shim). [`Container::create`] and
//! [`Container::exec`] `fork()` once (glibc's fork); the single-threaded child joins the cgroup and
//! the namespaces given by path (user namespace first) and raw-`clone`s the container process with
//! `CLONE_PARENT`, so that process is **a direct child of the caller** (and pid 1 of its new pid
//! namespace); the intermediate exits and is reaped inside the call. Nothing in this crate ever
//! waits for the container's processes except on a failed create/exec: the caller reaps them
//! (`waitpid(pid)` or the backend's pidfd reaper) and gets their exit status.
//!
//! # States
//!
//! `<root>/<id>/state.json` holds the init's pid and start time (pid reuse is detected), bundle,
//! rootfs, creation time, annotations and cgroup paths; `<root>/<id>/exec.fifo` exists while the
//! container is "created". [`Container::status`]: `created` (FIFO there, init alive), `running`,
//! `paused` (cgroup frozen), `stopped` (init dead or a zombie). [`Container::state`] is the
//! runtime-spec state (JSON via serde).
//!
//! # Hooks for supervisors (the trace backend)
//!
//! 1. `extra_seccomp` ([`CreateOptions::extra_seccomp`], [`ExecOptions::extra_seccomp`]):
//!    `seccompiler::BpfProgram`s installed **after** the spec's profile, as the very last step
//!    before `execve`: nothing but `seccomp(2)` and `execve(2)` runs after the first filter, so
//!    a filter returning `SECCOMP_RET_TRACE` for `openat` first fires on the workload's own calls.
//!    Without `no_new_privs`, installing filters needs CAP_SYS_ADMIN: the process keeps it in its
//!    effective/permitted sets until `execve` drops it (it is in no set that survives exec unless
//!    the spec grants it). A spec profile that denies `seccomp(2)` makes the extra filters fail.
//! 2. The "created" state: between `create` and `start` the init is blocked in `open` of the
//!    exec FIFO and has run no user code, so a supervisor may `PTRACE_SEIZE` it then. For exec'd
//!    processes, [`ExecOptions::hold`] gives the same window ([`ExecProcess::release`]).
//! 3. Stdio: three descriptors ([`Stdio::Fds`]), the caller's ([`Stdio::Inherit`]), `/dev/null`,
//!    or a terminal made inside the container whose master goes over a console socket
//!    (runc's `--console-socket` protocol) or back to the caller ([`Console`]).
//!
//! # Defaults
//!
//! [`defaults::spec`] is containerd's default spec with its default seccomp profile
//! ([`defaults::seccomp_profile`]), for `moat run` without a bundle.

pub mod caps;
pub mod cgroups;
pub mod config;
mod container;
pub mod defaults;
mod error;
mod exec;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod state;
pub mod syscall;

pub use cgroups::Stats;
pub use config::load as load_spec;
pub use container::{Console, Container, CreateOptions, Stdio};
pub use error::{Error, Result};
pub use exec::{ExecOptions, ExecProcess};
pub use oci_spec::runtime::Spec;
pub use seccompiler::BpfProgram;
pub use state::{DEFAULT_ROOT, OciState, Status};
