//! The control API: a Unix socket speaking one command per line, one JSON object per answer.
//!
//! | request   | answer                                                   |
//! |-----------|----------------------------------------------------------|
//! | `ping`    | `{"ok":true}`                                            |
//! | `metrics` | `{"ok":true,"metrics":{...}}` (see [`crate::metrics`])   |
//! | `pause`   | `{"ok":true}` once every vCPU is parked                  |
//! | `resume`  | `{"ok":true}`                                            |
//! | `stop`    | `{"ok":true}`, then the VMM exits with status 0          |
//! | `disk N`  | `{"ok":true,"size":BYTES}`: disk N (0 = `vda`) now reads the image passed with the line as `SCM_RIGHTS`; the guest gets a configuration-change interrupt |
//! | other     | `{"ok":false,"error":"..."}`                             |
//!
//! Lines longer than 256 bytes end the connection. Several commands may be sent on one connection.
//! `disk` is how the vm backend gives a running pod's VM the root file system of a container
//! created after boot: the VM starts with empty spare disks, and each is filled once.

mod conn;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::devices::virtio::mmio::MmioTransport;
use crate::metrics::Metrics;
use crate::vstate::control::{Control, ExitReason};

pub use conn::MAX_LINE;
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
    /// The block devices' transports, `vda` first (for `disk N`).
    pub disks: Vec<Arc<Mutex<MmioTransport>>>,
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
        self.handle_with(line, Vec::new())
    }

    /// [`handle`](Self::handle), with the descriptors that came with the line.
    pub fn handle_with(&self, line: &str, mut fds: Vec<std::os::fd::OwnedFd>) -> Value {
        if let Some(arg) = line.trim().strip_prefix("disk ") {
            return match (arg.trim().parse::<usize>(), fds.pop()) {
                (Ok(n), Some(fd)) => self.replace_disk(n, fd),
                (Err(_), _) => json!({"ok": false, "error": format!(
                    "disk {arg:?}: give the disk's index (0 = vda)")}),
                (_, None) => json!({"ok": false, "error":
                    "disk: pass the image's descriptor with the line (SCM_RIGHTS)"}),
            };
        }
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

impl Target {
    fn replace_disk(&self, n: usize, fd: std::os::fd::OwnedFd) -> Value {
        let Some(t) = self.disks.get(n) else {
            return json!({"ok": false, "error": format!(
                "there is no disk {n}: this VM has {} (0..{})", self.disks.len(),
                self.disks.len().saturating_sub(1))});
        };
        let Ok(mut t) = t.lock() else {
            return json!({"ok": false, "error": "the disk's lock is poisoned"});
        };
        match t.replace_disk(std::fs::File::from(fd)) {
            Ok(size) => json!({"ok": true, "size": size}),
            Err(e) => json!({"ok": false, "error": format!("disk {n}: {e}")}),
        }
    }
}

fn serve_one(stream: UnixStream, target: &Target) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = conn::Reader::new(stream);
    while let Some(line) = reader.next_line() {
        // One write per answer: the process may exit right after a `stop`.
        let answer = format!("{}\n", target.handle_with(&line.text, line.fds));
        let sent = out.write_all(answer.as_bytes()).is_ok();
        target.after(&line.text);
        if !sent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
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
            disks: Vec::new(),
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

    /// Sends `line` with `fd` as SCM_RIGHTS, as the vm backend does.
    fn send_with_fd(s: &UnixStream, line: &str, fd: i32) {
        use std::os::fd::AsRawFd;
        let mut iov = libc::iovec {
            iov_base: line.as_ptr() as *mut libc::c_void,
            iov_len: line.len(),
        };
        let mut control = [0u64; 4];
        // SAFETY: test code building a one-descriptor SCM_RIGHTS message in live buffers.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            libc::CMSG_DATA(c).cast::<i32>().write_unaligned(fd);
            assert!(libc::sendmsg(s.as_raw_fd(), &msg, 0) > 0);
        }
    }

    #[test]
    fn disk_swaps_the_backing_file_and_tells_the_guest() {
        use crate::devices::virtio::INT_CONFIG;
        use crate::devices::virtio::block::Block;
        use std::os::fd::AsRawFd;
        use vm_memory::{GuestAddress, GuestMemoryMmap};
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let image = d.path().join("image.img");
        std::fs::write(&image, vec![0u8; 4096]).unwrap();
        let metrics = Arc::new(Metrics::default());
        let block = Block::open(&empty, true, "spare", metrics.clone()).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let t = Arc::new(Mutex::new(
            MmioTransport::new(Box::new(block), mem, evt).unwrap(),
        ));
        let path = d.path().join("api.sock");
        let api = Arc::new(ApiSocket::bind(&path).unwrap());
        let target = Target {
            control: Arc::new(Control::new(Instant::now()).unwrap()),
            metrics,
            kick: Box::new(|| {}),
            vcpus: 0,
            disks: vec![t.clone()],
        };
        let a = api.clone();
        std::thread::spawn(move || a.serve(&target));
        let s = UnixStream::connect(&path).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut answer = || {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            serde_json::from_str::<Value>(&l).unwrap()
        };
        let mut capacity = [0u8; 8];
        t.lock().unwrap().device().read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), 0);

        let f = std::fs::File::open(&image).unwrap();
        send_with_fd(&s, "disk 0\n", f.as_raw_fd());
        let a = answer();
        assert_eq!(
            (a["ok"].clone(), a["size"].clone()),
            (json!(true), json!(4096)),
            "{a}"
        );
        t.lock().unwrap().device().read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), 8, "capacity in sectors");
        assert_ne!(t.lock().unwrap().interrupt().status() & INT_CONFIG, 0);

        send_with_fd(&s, "disk 3\n", f.as_raw_fd());
        assert!(answer()["error"].as_str().unwrap().contains("no disk 3"));
        (&s).write_all(b"disk 0\n").unwrap();
        assert!(answer()["error"].as_str().unwrap().contains("SCM_RIGHTS"));
        (&s).write_all(b"disk x\n").unwrap();
        assert!(answer()["error"].as_str().unwrap().contains("index"));
    }
}
