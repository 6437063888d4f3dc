//! `exec` and `ps`: processes inside a container.

use std::io::Write;

use anyhow::{Context, bail};
use moat_sandbox::{Console, ExecOptions, Stdio};
use oci_spec::runtime::{Process, User};

use super::{load, write_pid_file};
use crate::args::{Cli, ExecArgs, PsArgs};

/// The process to exec: `--process FILE` (what containerd passes), or built from the arguments.
pub fn exec_process(a: &ExecArgs) -> anyhow::Result<Process> {
    if let Some(path) = &a.process {
        if !a.command.is_empty() {
            bail!("give either --process or a command, not both");
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the process file {}", path.display()))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        let p: Process = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            anyhow::anyhow!(
                "process file {}: {}: {}",
                path.display(),
                e.path(),
                e.inner()
            )
        })?;
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            bail!(
                "process file {}: args: give the command to run",
                path.display()
            );
        }
        return Ok(p);
    }
    if a.command.is_empty() {
        bail!("nothing to exec: give a command after the container id, or --process FILE");
    }
    let mut p = Process::default();
    p.set_args(Some(a.command.clone()));
    let mut env = vec![moat_sandbox::defaults::PATH_ENV.to_string()];
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    p.set_cwd(a.cwd.clone().unwrap_or_else(|| "/".into()).into());
    p.set_terminal(Some(a.tty));
    p.set_capabilities(None);
    p.set_rlimits(None);
    if let Some(u) = &a.user {
        let (uid, gid) = crate::spec::parse_user(u).map_err(anyhow::Error::msg)?;
        let mut user = User::default();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    Ok(p)
}

/// `moat exec`: runs a process in the container; with `--detach` returns once it has started,
/// otherwise waits and exits with its status.
pub fn exec(cli: &Cli, a: &ExecArgs) -> anyhow::Result<i32> {
    let process = exec_process(a)?;
    let terminal = process.terminal().unwrap_or(false);
    let stdio = match (terminal, &a.console_socket) {
        (true, Some(s)) => Stdio::Terminal(Console::Socket(s.clone())),
        (true, None) => bail!("the process asks for a terminal: pass --console-socket"),
        (false, Some(_)) => bail!("--console-socket given, but the process has no terminal"),
        (false, None) => Stdio::Inherit,
    };
    let c = load(&cli.root, &a.id)?;
    let p = c.exec(
        &process,
        ExecOptions {
            stdio,
            ..Default::default()
        },
    )?;
    let pid = p.pid as u32;
    if let Some(f) = &a.pid_file {
        write_pid_file(f, pid)?;
    }
    if a.detach {
        return Ok(0);
    }
    let w = moat_backend::reaper::global()?.watch(pid)?;
    Ok(w.wait()?.code())
}

/// `moat ps`: host pids of the container's processes (`--format json`: a JSON array).
pub fn ps(cli: &Cli, a: &PsArgs) -> anyhow::Result<i32> {
    let c = load(&cli.root, &a.id)?;
    let pids = c.pids()?;
    let mut out = std::io::stdout().lock();
    match a.format.as_str() {
        "json" => {
            serde_json::to_writer(&mut out, &pids)?;
            writeln!(out)?;
        }
        "table" => {
            writeln!(out, "PID")?;
            for p in pids {
                writeln!(out, "{p}")?;
            }
        }
        other => bail!("--format {other:?}: use json or table"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use clap::Parser;

    fn exec_args(args: &[&str]) -> ExecArgs {
        let cli = Cli::try_parse_from(["moat", "exec"].iter().chain(args)).unwrap();
        let Command::Exec(e) = cli.command else {
            panic!()
        };
        e
    }

    #[test]
    fn process_from_file_or_args() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        std::fs::write(
            &f,
            r#"{"args":["sh","-c","true"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
        )
        .unwrap();
        let p = exec_process(&exec_args(&["--process", f.to_str().unwrap(), "c1"])).unwrap();
        assert_eq!(p.args().as_ref().unwrap()[0], "sh");
        std::fs::write(&f, r#"{"args":"notalist","cwd":"/"}"#).unwrap();
        let e = exec_process(&exec_args(&["--process", f.to_str().unwrap(), "c1"])).unwrap_err();
        assert!(e.to_string().contains("args"), "{e}");
        let p = exec_process(&exec_args(&["-e", "A=1", "--user", "5", "c1", "id", "-u"])).unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["id", "-u"]);
        assert_eq!(p.user().uid(), 5);
        assert!(exec_process(&exec_args(&["c1"])).is_err());
    }
}
