//! `moat run`: one container in the foreground through the [`Backend`] trait — stdio passed
//! through, signals forwarded, exit status propagated (128+N for signal N, 137 for an OOM kill),
//! everything removed afterwards.
//!
//! Without `--bundle`, the spec is containerd's default (from `moat-sandbox`) plus the options, and
//! the root is an overlay on the chosen (or the cached default) root file system, mounted in a
//! private mount namespace; the cached rootfs is never written.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use moat_backend::ns::{NsBackend, NsOptions};
use moat_backend::trace::{Policy, TraceBackend, TraceOptions};
use moat_backend::vm::{VmBackend, VmOptions};
use moat_backend::{Backend, BackendKind, ContainerConfig, Instance, ProcessIo};

use crate::args::{Cli, RunArgs};
use crate::rootfs::{self, Overlay};
use crate::spec::{self, Overrides};
use crate::{forward, oci};

/// What the positional words of `moat run` mean.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The container id.
    pub id: String,
    /// The command (empty: the bundle's own `process.args`).
    pub cmd: Vec<String>,
}

/// Splits `[ID] [--] CMD...` (see `moat run --help`).
pub fn target(a: &RunArgs) -> Target {
    let fresh = || {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("moat-{:x}{:05x}", std::process::id(), nanos & 0xfffff)
    };
    if let Some(id) = &a.id {
        return Target {
            id: id.clone(),
            cmd: a.args.clone(),
        };
    }
    if a.bundle.is_some() {
        match a.args.as_slice() {
            [id] => {
                return Target {
                    id: id.clone(),
                    cmd: vec![],
                };
            }
            [id, sep, rest @ ..] if sep == "--" => {
                return Target {
                    id: id.clone(),
                    cmd: rest.to_vec(),
                };
            }
            _ => {}
        }
    }
    Target {
        id: fresh(),
        cmd: a.args.clone(),
    }
}

/// The wall `moat run` asked for, checked (policy loaded) before anything is created; opened with
/// [`Wall::open`] once the private mounts are made (opening starts threads).
enum Wall {
    Ns,
    Trace(Policy),
    Vm(VmBackend),
}

impl Wall {
    fn choose(cli: &Cli, kind: BackendKind, a: &RunArgs, id: &str) -> anyhow::Result<Wall> {
        if a.policy.is_some() && kind != BackendKind::Trace {
            bail!("--policy applies to --backend trace only");
        }
        match kind {
            BackendKind::Ns => Ok(Wall::Ns),
            BackendKind::Vm => {
                let a = moat_backend::vm::check::availability(&moat_host::kvm::probe());
                if !a.usable() {
                    bail!(
                        "the vm backend cannot run here: {}. `moat check --backend vm` says more",
                        a.reason
                    );
                }
                let opts = VmOptions::with_built_artifacts(cli.root.clone(), id)?;
                Ok(Wall::Vm(VmBackend::new(opts)?))
            }
            BackendKind::Trace => Ok(Wall::Trace(match &a.policy {
                Some(p) => Policy::load(p)?,
                None => Policy::builtin().context("the built-in trace policy")?,
            })),
        }
    }

    fn open(self, root: PathBuf) -> anyhow::Result<Box<dyn Backend>> {
        Ok(match self {
            Wall::Ns => Box::new(NsBackend::new(NsOptions { root })?),
            Wall::Trace(policy) => Box::new(
                TraceBackend::new(TraceOptions {
                    root,
                    policy,
                    supervisor: None,
                })
                .context("`moat check --backend trace` says what this host lacks")?,
            ),
            Wall::Vm(vm) => Box::new(vm),
        })
    }
}

/// Runs `moat run`; returns the exit code.
pub fn run(cli: &Cli, a: &RunArgs) -> anyhow::Result<i32> {
    let kind: BackendKind = a.backend.into();
    let t = target(a);
    if a.detach {
        if kind != BackendKind::Ns {
            bail!("--detach runs the bundle with the OCI verbs, which use the ns backend only");
        }
        let Some(bundle) = &a.bundle else {
            bail!("--detach needs --bundle (a detached container outlives moat's private overlay)");
        };
        if !t.cmd.is_empty() || has_overrides(a) {
            bail!("--detach runs the bundle as it is: drop the command and the spec options");
        }
        return oci::lifecycle::create_and_start(cli, bundle, &t.id, a.pid_file.as_deref());
    }
    if a.console_socket.is_some() {
        bail!("--console-socket needs --detach (foreground runs pass moat's own stdio through)");
    }
    let mut o = Overrides {
        args: t.cmd.clone(),
        env: a.env.clone(),
        cwd: a.cwd.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        memory: a.memory,
        cpus: a.cpus,
        pids: a.pids_limit,
        ..Default::default()
    };
    // Everything is validated before anything is created.
    let (bundle_dir, mut spec, lower) = match &a.bundle {
        Some(b) => {
            let spec = moat_sandbox::load_spec(b).map_err(anyhow::Error::new)?;
            (b.clone(), spec, None)
        }
        None => {
            let t0 = std::time::Instant::now();
            let lower = match &a.rootfs {
                Some(r) => r.clone(),
                None => default_rootfs()?,
            };
            tracing::debug!("rootfs {} in {:?}", lower.display(), t0.elapsed());
            if o.hostname.is_none() {
                o.hostname = Some(t.id.clone());
            }
            o.cgroups_path = Some(format!("/moat/{}", t.id));
            let mut spec = moat_sandbox::defaults::spec("/");
            spec::add_cgroup_view(&mut spec);
            (
                cli.root.join(format!("{}.overlay", t.id)),
                spec,
                Some(lower),
            )
        }
    };
    if a.bundle.is_none() && t.cmd.is_empty() {
        bail!("no command to run: give one after `--` (e.g. moat run -- sh)");
    }
    spec::apply(&mut spec, &o).map_err(anyhow::Error::msg)?;
    let t0 = std::time::Instant::now();
    let wall = Wall::choose(cli, kind, a, &t.id)?;
    tracing::debug!("{kind} backend checked in {:?}", t0.elapsed());
    if moat_sandbox::Container::load(&cli.root, &t.id).is_ok() {
        bail!(
            "container {:?} already exists under {}: pick another id or delete it",
            t.id,
            cli.root.display()
        );
    }

    // Private mounts first, while this process has one thread.
    let overlay = match &lower {
        // The guest lays its own overlay on an image of the lower directory.
        Some(lower) if matches!(wall, Wall::Vm(_)) => {
            set_root(&mut spec, lower);
            None
        }
        Some(lower) => {
            rootfs::enter_private_mount_namespace()?;
            std::fs::create_dir_all(&cli.root)
                .with_context(|| format!("creating {}", cli.root.display()))?;
            let ov = Overlay::mount(lower, &bundle_dir)?;
            set_root(&mut spec, ov.merged());
            Some(ov)
        }
        None => None,
    };

    let backend = wall.open(cli.root.clone())?;
    let io = ProcessIo::Fds {
        stdin: dup_std(0),
        stdout: dup_std(1),
        stderr: dup_std(2),
    };
    let instance: Arc<dyn Instance> = Arc::from(backend.create(ContainerConfig {
        id: t.id.clone(),
        bundle: bundle_dir,
        spec,
        io,
        is_sandbox: false,
    })?);
    let result = run_created(instance.as_ref(), a.pid_file.as_deref(), &instance);
    let deleted = instance.delete(None);
    drop(instance);
    let stopped = backend.shutdown();
    drop(overlay);
    let status = result?;
    deleted?;
    stopped?;
    tracing::debug!("container exited: {status:?}");
    Ok(status.code())
}

fn run_created(
    inst: &dyn Instance,
    pid_file: Option<&Path>,
    shared: &Arc<dyn Instance>,
) -> anyhow::Result<moat_backend::ExitStatus> {
    if let Some(p) = pid_file {
        oci::write_pid_file(p, inst.pid())?;
    }
    let _fwd = forward::Forwarder::start(shared.clone())?;
    inst.start()?;
    Ok(inst.wait(None)?)
}

fn has_overrides(a: &RunArgs) -> bool {
    !a.env.is_empty()
        || a.cwd.is_some()
        || a.user.is_some()
        || a.hostname.is_some()
        || a.memory.is_some()
        || a.cpus.is_some()
        || a.pids_limit.is_some()
}

fn set_root(spec: &mut moat_sandbox::Spec, path: &Path) {
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(path.to_path_buf());
    spec.set_root(Some(root));
}

/// A duplicate of our own fd `n`, or `None` (the container gets `/dev/null`) if it is closed.
fn dup_std(n: i32) -> Option<OwnedFd> {
    // SAFETY: borrowing a descriptor number only to duplicate it; validity is checked by fcntl.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
    // SAFETY: F_GETFD only reads flags of a (possibly closed) fd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } < 0 {
        return None;
    }
    fd.try_clone_to_owned().ok()
}

/// The default image's root file system, built and cached on first use.
pub fn default_rootfs() -> anyhow::Result<PathBuf> {
    let img = moat_artifacts::image::busybox()
        .context("building the default busybox image (or pass --rootfs DIR / --bundle DIR)")?;
    Ok(img.rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["moat", "run"].iter().chain(args)).unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        r
    }

    #[test]
    fn positional_words() {
        let t = target(&run_args(&["--bundle", "b", "c1"]));
        assert_eq!((t.id.as_str(), t.cmd.len()), ("c1", 0));
        let t = target(&run_args(&["--bundle", "b", "c1", "--", "sh", "-c", "x"]));
        assert_eq!(
            (t.id.as_str(), t.cmd.as_slice()),
            ("c1", &["sh", "-c", "x"].map(String::from)[..])
        );
        let t = target(&run_args(&["--bundle", "b", "sh", "-c", "x"]));
        assert!(t.id.starts_with("moat-") && t.cmd.len() == 3);
        let t = target(&run_args(&["--", "true"]));
        assert_eq!(t.cmd, ["true"]);
        let t = target(&run_args(&["--id", "x", "--bundle", "b", "true"]));
        assert_eq!(
            (t.id.as_str(), t.cmd.as_slice()),
            ("x", &["true".to_string()][..])
        );
    }

    #[test]
    fn unavailable_backends_say_so() {
        let cli = Cli::try_parse_from(["moat", "run", "true"]).unwrap();
        let choose = |kind, args: &[&str]| Wall::choose(&cli, kind, &run_args(args), "c1");
        if !moat_host::kvm::probe().runs_linux_guests() {
            let e = choose(BackendKind::Vm, &["true"]).err().unwrap();
            assert!(
                format!("{e:#}").contains("moat check --backend vm"),
                "{e:#}"
            );
        }
        let e = choose(BackendKind::Ns, &["--policy", "p", "true"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("--policy"), "{e}");
        let e = choose(
            BackendKind::Trace,
            &["--policy", "/no/such/policy.toml", "true"],
        )
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("/no/such/policy.toml"), "{e:#}");
        assert!(matches!(
            choose(BackendKind::Trace, &["true"]),
            Ok(Wall::Trace(_))
        ));
    }
}
