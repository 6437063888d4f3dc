//! `create`, `start`, `state`, `kill`, `delete` and `list`: the container lifecycle across
//! processes.

use std::io::Write;
use std::path::Path;

use anyhow::bail;
use moat_sandbox::{Console, Container, CreateOptions, Status, Stdio};
use serde::Serialize;

use super::{load, write_pid_file};
use crate::args::{Cli, CreateArgs, DeleteArgs, IdArg, KillArgs, ListArgs};
use crate::signal::parse_signal;

/// runc's `state` output (runtime-spec state plus `rootfs`, `created`, `owner`), which go-runc's
/// `Container` reads.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateJson {
    /// runtime-spec version of the container's config.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Host pid of the init (0 once stopped).
    pub pid: i32,
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// Bundle directory.
    pub bundle: String,
    /// Root file system directory.
    pub rootfs: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Owner (always empty: containers run as root).
    pub owner: String,
    /// The spec's annotations.
    pub annotations: std::collections::HashMap<String, String>,
}

/// The state of a loaded container.
pub fn state_of(c: &Container) -> StateJson {
    let st = c.state();
    StateJson {
        oci_version: st.oci_version,
        id: st.id,
        pid: st.pid,
        status: st.status.as_str().to_string(),
        bundle: st.bundle.display().to_string(),
        rootfs: c.saved().rootfs.display().to_string(),
        created: c.saved().created.clone(),
        owner: String::new(),
        annotations: st.annotations,
    }
}

/// `moat create`: the container waits in "created" for `moat start`; its stdio is ours.
pub fn create(cli: &Cli, a: &CreateArgs) -> anyhow::Result<i32> {
    if a.preserve_fds > 0 {
        bail!(
            "--preserve-fds {} is not supported: moat passes only stdio",
            a.preserve_fds
        );
    }
    create_container(
        cli,
        &a.bundle,
        &a.id,
        a.pid_file.as_deref(),
        a.console_socket.as_deref(),
    )?;
    Ok(0)
}

fn create_container(
    cli: &Cli,
    bundle: &Path,
    id: &str,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
) -> anyhow::Result<Container> {
    let spec = moat_sandbox::load_spec(bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let stdio = match (terminal, console_socket) {
        (true, Some(s)) => Stdio::Terminal(Console::Socket(s.to_path_buf())),
        (true, None) => {
            bail!("config.json: process.terminal is true: pass --console-socket (or set it false)")
        }
        (false, Some(_)) => bail!(
            "--console-socket was given but config.json's process.terminal is false: set it true \
             or drop --console-socket"
        ),
        (false, None) => Stdio::Inherit,
    };
    let c = Container::create(CreateOptions {
        root: cli.root.clone(),
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        spec,
        stdio,
        extra_seccomp: Vec::new(),
    })?;
    if let Some(p) = pid_file
        && let Err(e) = write_pid_file(p, c.pid() as u32)
    {
        let _ = c.delete(true);
        return Err(e);
    }
    Ok(c)
}

/// `moat run --detach --bundle B ID`: create, start, return.
pub fn create_and_start(
    cli: &Cli,
    bundle: &Path,
    id: &str,
    pid_file: Option<&Path>,
) -> anyhow::Result<i32> {
    let c = create_container(cli, bundle, id, pid_file, None)?;
    if let Err(e) = c.start() {
        let _ = c.delete(true);
        return Err(e.into());
    }
    Ok(0)
}

/// `moat start`.
pub fn start(cli: &Cli, a: &IdArg) -> anyhow::Result<i32> {
    load(&cli.root, &a.id)?.start()?;
    Ok(0)
}

/// `moat state`: runtime-spec state JSON on stdout.
pub fn state(cli: &Cli, a: &IdArg) -> anyhow::Result<i32> {
    let c = load(&cli.root, &a.id)?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &state_of(&c))?;
    writeln!(out)?;
    Ok(0)
}

/// `moat kill [--all] ID [SIGNAL]`.
pub fn kill(cli: &Cli, a: &KillArgs) -> anyhow::Result<i32> {
    let sig = parse_signal(&a.signal).map_err(anyhow::Error::msg)?;
    let c = load(&cli.root, &a.id)?;
    if !a.all && c.status() == Status::Stopped {
        bail!(
            "cannot signal container {:?}: container not running (its init has exited)",
            a.id
        );
    }
    c.kill(sig, a.all)?;
    Ok(0)
}

/// `moat delete [--force] ID`.
pub fn delete(cli: &Cli, a: &DeleteArgs) -> anyhow::Result<i32> {
    let c = match load(&cli.root, &a.id) {
        Ok(c) => c,
        // runc: `delete --force` of a container that is not there succeeds.
        Err(_) if a.force && !cli.root.join(&a.id).exists() => return Ok(0),
        Err(e) => return Err(e),
    };
    c.delete(a.force)?;
    Ok(0)
}

/// `moat list`: every container under the root.
pub fn list(cli: &Cli, a: &ListArgs) -> anyhow::Result<i32> {
    let mut states = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&cli.root) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(c) = Container::load(&cli.root, &name) {
                states.push(state_of(&c));
            }
        }
    }
    states.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for s in &states {
            writeln!(out, "{}", s.id)?;
        }
    } else if a.format == "json" {
        serde_json::to_writer(&mut out, &states)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<24} {:<8} {:<10} {:<32} CREATED",
            "ID", "PID", "STATUS", "BUNDLE"
        )?;
        for s in &states {
            writeln!(
                out,
                "{:<24} {:<8} {:<10} {:<32} {}",
                s.id, s.pid, s.status, s.bundle, s.created
            )?;
        }
    }
    Ok(0)
}
