//! Running another process in a container: it joins the init's namespaces (read from
//! `/proc/<init>/ns/*`) and cgroup and gets the exec'd process's own credentials, capabilities,
//! rlimits, env, cwd, `no_new_privs` and the container's seccomp profile (plus extra filters).
//! Like the init, it is a direct child of the caller.

use std::os::fd::OwnedFd;

use oci_spec::runtime::Process;
use seccompiler::BpfProgram;

use crate::config;
use crate::container::{Container, Stdio, spawn_stdio};
use crate::error::{Error, Result};
use crate::namespaces;
use crate::process::InitPlan;
use crate::process::channel::{Channel, Msg};
use crate::process::spawn::{self, Request, StartSignal};
use crate::seccomp;
use crate::state::Status;

/// Options of [`Container::exec`].
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// The process's stdio (`Stdio::Terminal` needs `process.terminal: true`).
    pub stdio: Stdio,
    /// Extra BPF programs installed after the container's seccomp profile, right before `execve`.
    pub extra_seccomp: Vec<BpfProgram>,
    /// Stop once set up, before the seccomp filters and `execve`, until
    /// [`ExecProcess::release`]: a supervisor can `PTRACE_SEIZE` the pid meanwhile.
    pub hold: bool,
}

/// A process started by [`Container::exec`].
#[derive(Debug)]
pub struct ExecProcess {
    /// Host pid (a child of the caller, who reaps it).
    pub pid: i32,
    /// The terminal master, with `Stdio::Terminal(Console::Return)`.
    pub console: Option<OwnedFd>,
    channel: Option<Channel>,
}

/// Waits until the process has exec'd (the close-on-exec channel hits EOF) or reports why not
/// (then it is reaped here).
fn await_exec(pid: i32, ch: Channel) -> Result<()> {
    match ch.recv() {
        Ok(None) => Ok(()),
        Ok(Some(Msg::Error(e))) => {
            // SAFETY: reaping our own child, which exits right after the message.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            Err(Error::Setup(e))
        }
        Ok(Some(other)) => Err(Error::Setup(format!("unexpected message {other:?}"))),
        Err(source) => Err(Error::Io {
            context: "waiting for the exec".into(),
            source,
        }),
    }
}

impl ExecProcess {
    /// Lets a held process go on: install its filters and `execve`. Returns once it has exec'd.
    pub fn release(&mut self) -> Result<()> {
        let Some(ch) = self.channel.take() else {
            return Err(Error::Setup(
                "the process is not held (or was released already)".into(),
            ));
        };
        ch.send(&Msg::Go).map_err(|source| Error::Io {
            context: "releasing the process".into(),
            source,
        })?;
        await_exec(self.pid, ch)
    }
}

impl Container {
    /// Starts `process` inside the container (created or running). Without `hold`, returns once
    /// the process has exec'd; exec errors (command not found, ...) come back as errors. Dropping
    /// a held [`ExecProcess`] without releasing it makes the process exit with status 1.
    pub fn exec(&self, process: &Process, opts: ExecOptions) -> Result<ExecProcess> {
        let status = self.status();
        if !matches!(status, Status::Created | Status::Running) {
            return Err(Error::WrongStatus {
                id: self.saved.id.clone(),
                status: status.to_string(),
                what: "exec needs a created or running container".into(),
            });
        }
        let profile = self
            .saved
            .seccomp
            .as_ref()
            .map(seccomp::compile)
            .transpose()?;
        let mut pp = config::process_plan(process, profile)?;
        pp.extra_seccomp = opts.extra_seccomp;
        let stdio = spawn_stdio(opts.stdio, pp.terminal)?;
        let plan = InitPlan {
            process: pp,
            ..Default::default()
        };
        let joins = namespaces::of_process(self.saved.pid)?;
        let join = crate::container::cgroup_join(&self.saved.cgroup)?;
        let spawned = spawn::spawn(Request {
            plan: &plan,
            cgroup: join,
            joins: &joins,
            clone_flags: 0,
            new_time: None,
            id_maps: None,
            stdio,
            start: if opts.hold {
                StartSignal::Hold
            } else {
                StartSignal::Immediate
            },
        })?;
        let mut p = ExecProcess {
            pid: spawned.pid,
            console: spawned.console,
            channel: None,
        };
        if opts.hold {
            p.channel = Some(spawned.channel);
        } else {
            await_exec(p.pid, spawned.channel)?;
        }
        Ok(p)
    }
}
