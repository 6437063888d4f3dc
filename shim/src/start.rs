//! `containerd-shim-moat-v2 start`: find or start the pod's shim and print its address.
//!
//! containerd 1.6 runs this with the bundle as working directory, reads everything it prints (stdout
//! and stderr together) as the ttrpc address, and writes nothing else. So on success exactly the
//! address is printed. The first container of a pod binds the socket and starts the long-lived shim
//! with the listening socket as fd 3; later containers of the pod (same
//! `io.kubernetes.cri.sandbox-id`) find the socket answering and join that shim.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::address::{self, Bound};
use crate::args::Args;
use crate::config::HandlerConfig;
use crate::container::ANNOTATION_SANDBOX_ID;
use crate::error::{Error, Result};
use crate::options::RuntimeOptions;

/// The grouping key: the pod's sandbox id when the spec has one, else the task id.
pub fn group_of(bundle: &Path, id: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let p = bundle.join("config.json");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    let spec: Annotated = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", p.display())))?;
    Ok(spec
        .annotations
        .get(ANNOTATION_SANDBOX_ID)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| id.to_string()))
}

fn adjust_oom_score(child: u32) {
    let parent = std::os::unix::process::parent_id();
    let score = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let _ = std::fs::write(
        format!("/proc/{child}/oom_score_adj"),
        (score + 1).min(1000).to_string(),
    );
}

/// Runs `start`; returns the address to print.
pub fn run(args: &Args) -> Result<String> {
    let bundle = std::env::current_dir().map_err(|e| Error::io("finding the bundle (cwd)", e))?;
    let group = group_of(&bundle, &args.id)?;

    // Options come on stdin when containerd has any; check the handler config now so a broken
    // one fails `start` with its reason instead of a later Create.
    let mut opts = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut opts);
    let options = RuntimeOptions::from_any_bytes(&opts)?;
    if let Some(p) = &options.config_path {
        HandlerConfig::load(p).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    }

    let addr = address::socket_address(&args.address, &args.namespace, &group);
    let listener = match address::bind_or_join(&addr)? {
        Bound::Existing => {
            address::write_address_file(&bundle, &addr)?;
            return Ok(addr);
        }
        Bound::New(l) => l,
    };
    let spawned = (|| {
        address::write_address_file(&bundle, &addr)?;
        let exe = std::env::current_exe().map_err(|e| Error::io("finding the shim binary", e))?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "-namespace",
            &args.namespace,
            "-id",
            &args.id,
            "-address",
            &args.address,
        ]);
        if args.debug {
            cmd.arg("-debug");
        }
        let fd = listener.as_raw_fd();
        cmd.current_dir(&bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in this process until
        // spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec: clear the flag instead.
                let rc = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| Error::io("starting the shim", e))?;
        adjust_oom_score(child.id());
        // The shim outlives this process; it is never waited for here.
        drop(child);
        Ok(())
    })();
    if let Err(e) = spawned {
        let _ = address::remove_socket(&addr);
        return Err(e);
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_sandbox_id() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"pod9"}}"#,
        )
        .unwrap();
        assert_eq!(group_of(d.path(), "c1").unwrap(), "pod9");
        std::fs::write(d.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(group_of(d.path(), "c1").unwrap(), "c1");
        std::fs::write(d.path().join("config.json"), "{").unwrap();
        assert!(group_of(d.path(), "c1").is_err());
    }
}
