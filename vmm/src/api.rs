//! The control API: a Unix socket speaking one command per line, one JSON object per answer.
//!
//! | request   | answer                                                   |
//! |-----------|----------------------------------------------------------|
//! | `ping`    | `{"ok":true}`                                            |
//! | `metrics` | `{"ok":true,"metrics":{...}}` (see [`crate::metrics`])   |
//! | `pause`   | `{"ok":true}` once every vCPU is parked                  |
//! | `resume`  | `{"ok":true}`                                            |
//! | `stop`    | `{"ok":true}`, then the VMM exits with status 0          |
//! | other     | `{"ok":false,"error":"..."}`                             |
//!
//! Lines longer than 256 bytes end the connection. Several commands may be sent on one connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::vstate::control::{Control, ExitReason};

const MAX_LINE: usize = 256;
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on API socket {path}: {source}")]
pub struct Error {
    path: PathBuf,
    source: std::io::Error,
}

/// What the API acts on.
pub struct Target {
    /// Exit/pause control.
    pub control: Arc<Control>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Interrupts every vCPU thread (a signal), so a pause takes effect.
    pub kick: Box<dyn Fn() + Send + Sync>,
    /// Number of vCPUs.
    pub vcpus: usize,
}

impl Target {
    /// What happens once the answer to `line` was sent.
    pub fn after(&self, line: &str) {
        if line.trim() == "stop" {
            self.control.request_exit(ExitReason::Stopped);
        }
    }

    /// Answers one command. `stop` only answers; [`Target::after`] then ends the VM, so the
    /// answer is on its way before the process exits.
    pub fn handle(&self, line: &str) -> Value {
        match line.trim() {
            "ping" => json!({"ok": true}),
            "metrics" => {
                let mut m = self.metrics.snapshot();
                m["paused"] = self.control.is_paused().into();
                json!({"ok": true, "metrics": m})
            }
            "pause" => match self.control.pause(self.vcpus, &self.kick, PAUSE_TIMEOUT) {
                Ok(()) => json!({"ok": true}),
                Err(e) => {
                    self.control.resume();
                    json!({"ok": false, "error": e.to_string()})
                }
            },
            "resume" => {
                self.control.resume();
                json!({"ok": true})
            }
            "stop" => json!({"ok": true}),
            other => json!({
                "ok": false,
                "error": format!("unknown command '{other}': use ping, metrics, pause, resume or stop")
            }),
        }
    }
}

/// The bound API socket (removed when dropped).
pub struct ApiSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ApiSocket {
    /// Binds `path`.
    pub fn bind(path: &Path) -> Result<Self, Error> {
        let listener = UnixListener::bind(path).map_err(|source| Error {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections one at a time, forever (the API thread's body).
    pub fn serve(&self, target: &Target) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => serve_one(s, target),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, target: &Target) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        match limited.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) if n > MAX_LINE => return,
            Ok(_) => {}
        }
        // One write per answer: the process may exit right after a `stop`.
        let answer = format!("{}\n", target.handle(&line));
        let sent = out.write_all(answer.as_bytes()).is_ok();
        target.after(&line);
        if !sent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn commands_over_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("api.sock");
        let api = Arc::new(ApiSocket::bind(&path).unwrap());
        let control = Arc::new(Control::new(Instant::now()).unwrap());
        let metrics = Arc::new(Metrics::default());
        let target = Target {
            control: control.clone(),
            metrics,
            kick: Box::new(|| {}),
            vcpus: 0,
        };
        let a = api.clone();
        std::thread::spawn(move || a.serve(&target));
        let mut s = UnixStream::connect(&path).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut ask = |cmd: &str| {
            writeln!(s, "{cmd}").unwrap();
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            serde_json::from_str::<Value>(&l).unwrap()
        };
        assert_eq!(ask("ping")["ok"], true);
        assert!(ask("metrics")["metrics"]["exits"].is_object());
        assert_eq!(ask("pause")["ok"], true);
        assert_eq!(ask("metrics")["metrics"]["paused"], true);
        assert_eq!(ask("resume")["ok"], true);
        let bad = ask("reboot");
        assert_eq!(bad["ok"], false);
        assert!(bad["error"].as_str().unwrap().contains("unknown command"));
        assert_eq!(ask("stop")["ok"], true);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while control.exit_reason().is_none() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(control.exit_reason(), Some(ExitReason::Stopped));
        // An overlong line ends the connection (the write itself may already fail).
        let _ = writeln!(s, "{}", "x".repeat(1000));
        let mut l = String::new();
        assert_eq!(r.read_line(&mut l).unwrap_or(0), 0);
    }
}
