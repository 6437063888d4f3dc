//! Restarting containerd after its config changed (`--restart-containerd`): through systemd when
//! it manages this machine — directly, or, from a container that shares the host's PID namespace
//! (the node installer DaemonSet), via `nsenter` into PID 1's mount namespace — else the admin is
//! told how.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// How containerd can be restarted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `systemctl restart containerd`: systemd runs this mount namespace.
    Systemctl,
    /// `nsenter --target 1 --mount -- systemctl restart containerd`: PID 1 is systemd, but this
    /// process sees another mount namespace (a privileged pod with `hostPID: true`).
    NsenterSystemctl,
    /// No systemd to ask; the reason.
    Manual(String),
}

/// The command that restarts containerd by `method`, or `None` for [`Method::Manual`].
pub fn command_line(method: &Method) -> Option<Vec<&'static str>> {
    match method {
        Method::Systemctl => Some(vec!["systemctl", "restart", "containerd"]),
        Method::NsenterSystemctl => Some(vec![
            "nsenter",
            "--target",
            "1",
            "--mount",
            "--",
            "systemctl",
            "restart",
            "containerd",
        ]),
        Method::Manual(_) => None,
    }
}

/// Decides how containerd can be restarted on this machine.
pub fn method() -> Method {
    method_from(Path::new("/"))
}

/// [`method`] with `/run` and `/proc` read below `root` (tests point it at a fake tree).
pub fn method_from(root: &Path) -> Method {
    if root.join("run/systemd/system").is_dir() {
        return Method::Systemctl;
    }
    let pid1 = std::fs::read_to_string(root.join("proc/1/comm")).unwrap_or_default();
    if pid1.trim() == "systemd" {
        return Method::NsenterSystemctl;
    }
    Method::Manual(format!(
        "systemd does not run this machine (PID 1 is {:?})",
        pid1.trim()
    ))
}

/// How an admin restarts containerd by hand.
pub fn manual_hint() -> &'static str {
    "`systemctl restart containerd` where systemd runs it, else stop the containerd process \
     (SIGTERM) and start it again as your init system does; running pods keep running"
}

/// Restarts containerd; returns what was run.
pub fn restart() -> anyhow::Result<String> {
    let m = method();
    if let Method::Manual(why) = &m {
        bail!(
            "cannot restart containerd: {why}; restart it yourself: {}",
            manual_hint()
        );
    }
    let argv = command_line(&m).unwrap_or_default();
    let shown = argv.join(" ");
    let Some((prog, args)) = argv.split_first() else {
        bail!("cannot restart containerd: no command for {m:?}");
    };
    let status = Command::new(prog)
        .args(args)
        .status()
        .with_context(|| format!("running `{shown}`"))?;
    if !status.success() {
        bail!(
            "`{shown}` failed ({status}): look at `journalctl -u containerd`; the new config \
             is in place, so fix what containerd complains about and restart it"
        );
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_here_in_a_host_pid_namespace_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("proc/1")).unwrap();
        std::fs::write(r.join("proc/1/comm"), "sh\n").unwrap();
        let m = method_from(r);
        assert!(
            matches!(&m, Method::Manual(w) if w.contains("\"sh\"")),
            "{m:?}"
        );
        assert_eq!(command_line(&m), None);
        std::fs::write(r.join("proc/1/comm"), "systemd\n").unwrap();
        assert_eq!(method_from(r), Method::NsenterSystemctl);
        std::fs::create_dir_all(r.join("run/systemd/system")).unwrap();
        assert_eq!(method_from(r), Method::Systemctl);
        assert_eq!(
            command_line(&Method::Systemctl),
            Some(vec!["systemctl", "restart", "containerd"])
        );
    }
}
