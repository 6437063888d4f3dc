//! One pod's microVM: a `moat-vmm` process booted from the guest kernel and initramfs, its state
//! directory (hybrid vsock socket, API socket, console log, VMM log), and its agent.
//!
//! [`Machine::boot`] returns once the agent answers `Hello`, or fails with the console's last
//! lines when the VMM dies or the agent does not answer within the deadline; either way nothing
//! is left running. Dropping a `Machine` kills the VMM (if still running) and removes its
//! directory; [`Machine::shutdown`] asks the agent to power off first.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_agent_proto::{Request, Response};

use super::client::{self, Rpc};
use crate::reaper::{self, Watch};
use crate::{Error, Result};

/// What a VM is booted with.
#[derive(Clone, Debug)]
pub(crate) struct BootConfig {
    /// The moat-vmm binary.
    pub vmm: PathBuf,
    /// Guest kernel (vmlinux or bzImage).
    pub kernel: PathBuf,
    /// Initramfs with moat-agent as `/init`.
    pub initramfs: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Read-only disks, in order (`vda`, `vdb`, ...).
    pub disks: Vec<PathBuf>,
    /// Empty read-only disks after those, to be filled later ([`Machine::fill_disk`]).
    pub spare_disks: u32,
    /// The guest's hostname.
    pub hostname: String,
    /// How long the agent may take to answer after the VMM starts.
    pub boot_timeout: Duration,
}

/// A running microVM with a live agent.
#[derive(Debug)]
pub(crate) struct Machine {
    dir: PathBuf,
    vsock: PathBuf,
    vmm: Watch,
    /// The guest kernel's release, as the agent reported it.
    pub kernel: String,
    /// How long the boot took (VMM start to the agent's answer).
    pub boot_time: Duration,
}

impl Machine {
    /// Boots a VM with its state in `dir` (created; must not exist).
    pub(crate) fn boot(dir: &Path, cfg: &BootConfig) -> Result<Machine> {
        std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("/")))
            .map_err(|e| Error::internal(format!("creating {}", dir.display()), e))?;
        std::fs::create_dir(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(format!(
                "{} exists: another VM of this pod is running, or a crashed one left it (remove \
                 it if no moat-vmm uses it)",
                dir.display()
            )),
            _ => Error::internal(format!("creating {}", dir.display()), e),
        })?;
        match Self::start(dir, cfg) {
            Ok(m) => Ok(m),
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                Err(e)
            }
        }
    }

    fn start(dir: &Path, cfg: &BootConfig) -> Result<Machine> {
        let vsock = dir.join("vsock.sock");
        let log = dir.join("vmm.log");
        let console = dir.join("console.log");
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stderr = std::fs::File::create(&log)
            .map_err(|e| Error::internal(format!("creating {}", log.display()), e))?;
        let mut cmd = Command::new(&cfg.vmm);
        cmd.arg("--kernel")
            .arg(&cfg.kernel)
            .arg("--initramfs")
            .arg(&cfg.initramfs)
            .arg("--memory")
            .arg(format!("{}M", cfg.memory_mib))
            .arg("--vcpus")
            .arg(cfg.vcpus.to_string())
            .arg("--vsock")
            .arg(&vsock)
            .arg("--api-sock")
            .arg(dir.join("api.sock"))
            .arg("--serial")
            .arg(&console)
            .arg("--append")
            .arg(format!(
                "quiet {}={} {}={clock}",
                moat_abi::cmdline::HOSTNAME,
                cfg.hostname,
                moat_abi::cmdline::CLOCK
            ));
        for d in &cfg.disks {
            cmd.arg("--block").arg(format!("{},ro", d.display()));
        }
        if cfg.spare_disks > 0 {
            let empty = dir.join("empty.img");
            std::fs::write(&empty, b"")
                .map_err(|e| Error::internal(format!("creating {}", empty.display()), e))?;
            for _ in 0..cfg.spare_disks {
                cmd.arg("--block").arg(format!("{},ro", empty.display()));
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let reaper = reaper::global().map_err(|e| Error::internal("starting the reaper", e))?;
        let started = Instant::now();
        let vmm = reaper
            .spawn(&mut cmd)
            .map_err(|e| Error::internal(format!("starting {}", cfg.vmm.display()), e))?
            .watch;
        // For a cleanup after this process dies (the shim's `delete`): the VMM's pid and start.
        let pid = vmm.pid();
        let record = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
        if let Err(e) = std::fs::write(dir.join(PID_FILE), record) {
            tracing::warn!("recording the VMM's pid: {e}");
        }
        let mut machine = Machine {
            dir: dir.to_path_buf(),
            vsock,
            vmm,
            kernel: String::new(),
            boot_time: Duration::ZERO,
        };
        let deadline = started + cfg.boot_timeout;
        loop {
            if let Ok(Some(status)) = machine.vmm.try_status() {
                return Err(Error::Unavailable(format!(
                    "the VM ended before its agent answered ({status:?}): {}",
                    machine.last_words()
                )));
            }
            if machine.vsock.exists()
                && let Ok((_, kernel)) = Rpc::open(&machine.vsock)
            {
                machine.kernel = kernel;
                machine.boot_time = started.elapsed();
                tracing::debug!(
                    "VM {} up in {:?}: guest kernel {}",
                    dir.display(),
                    machine.boot_time,
                    machine.kernel
                );
                return Ok(machine);
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "the guest agent did not answer within {:?}: {}",
                    cfg.boot_timeout,
                    machine.last_words()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Puts `image` into disk `index` (0 = `vda`; one of the spare disks) through the VMM's API:
    /// the image's descriptor goes over the socket, so the VMM opens nothing itself.
    pub(crate) fn fill_disk(&self, index: usize, image: &Path) -> Result<()> {
        use std::io::{BufRead, BufReader, Read};
        let file = std::fs::File::open(image)
            .map_err(|e| Error::internal(format!("opening {}", image.display()), e))?;
        let api = self.dir.join("api.sock");
        let s = std::os::unix::net::UnixStream::connect(&api)
            .map_err(|e| self.explain(Error::internal("connecting to the VMM's API", e)))?;
        s.set_read_timeout(Some(client::RPC_TIMEOUT))
            .map_err(|e| Error::internal("setting the API socket's timeout", e))?;
        send_with_fd(&s, format!("disk {index}\n").as_bytes(), &file)
            .map_err(|e| self.explain(Error::internal("sending a disk to the VMM", e)))?;
        let mut line = String::new();
        BufReader::new((&s).take(4096))
            .read_line(&mut line)
            .map_err(|e| self.explain(Error::internal("reading the VMM's answer", e)))?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| Error::internal("reading the VMM's answer", format!("{e}: {line:?}")))?;
        if v["ok"] == true {
            Ok(())
        } else {
            Err(Error::internal(
                format!("putting {} into disk {index}", image.display()),
                v["error"].as_str().unwrap_or("the VMM refused").to_string(),
            ))
        }
    }

    /// The hybrid vsock socket.
    pub(crate) fn vsock(&self) -> &Path {
        &self.vsock
    }

    /// The VMM's host pid.
    pub(crate) fn pid(&self) -> u32 {
        self.vmm.pid()
    }

    /// True once the VMM has exited.
    pub(crate) fn ended(&self) -> bool {
        self.vmm.has_exited()
    }

    /// One RPC on a connection of its own.
    pub(crate) fn call(&self, req: &Request) -> Result<Response> {
        self.call_timeout(req, Some(client::RPC_TIMEOUT))
    }

    /// One RPC with an explicit timeout (`None`: block until answered).
    pub(crate) fn call_timeout(
        &self,
        req: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        let (mut rpc, _) = Rpc::open(&self.vsock).map_err(|e| self.explain(e))?;
        rpc.call_timeout(req, timeout).map_err(|e| self.explain(e))
    }

    /// True if the VM has ended or ends within a moment: a failed connection is usually the
    /// first sign of a dying VMM, before its exit is collected.
    pub(crate) fn ending(&self) -> bool {
        self.ended() || matches!(self.vmm.wait_timeout(Duration::from_secs(2)), Ok(Some(_)))
    }

    /// Adds why the VM is gone to a connection error, if it is.
    pub(crate) fn explain(&self, e: Error) -> Error {
        if self.ending() {
            Error::Unavailable(format!("the VM ended: {}", self.last_words()))
        } else {
            e
        }
    }

    /// The end of the VMM's log and the console, for error messages.
    pub(crate) fn last_words(&self) -> String {
        let tail = |p: PathBuf, n: usize| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join(" | ")
        };
        format!(
            "moat-vmm: [{}]; console: [{}] (more in {})",
            tail(self.dir.join("vmm.log"), 5),
            tail(self.dir.join("console.log"), 8),
            self.dir.display()
        )
    }

    /// Asks the agent to power off and waits (up to `grace`) for the VMM to exit; then kills it.
    pub(crate) fn shutdown(&self, grace: Duration) {
        if !self.ended() {
            if let Err(e) = self.call(&Request::Shutdown) {
                tracing::debug!("shutdown request: {e}");
            }
            match self.vmm.wait_timeout(grace) {
                Ok(Some(status)) => tracing::debug!("VMM exited: {status:?}"),
                _ => tracing::warn!("the VM did not power off within {grace:?}: killing it"),
            }
        }
        self.kill();
    }

    fn kill(&self) {
        if !self.ended() {
            let _ = self.vmm.signal(libc::SIGKILL);
            let _ = self.vmm.wait_timeout(Duration::from_secs(10));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("removing {}: {e}", self.dir.display());
        }
    }
}

/// Sends `line` with `file`'s descriptor attached (`SCM_RIGHTS`).
fn send_with_fd(
    s: &std::os::unix::net::UnixStream,
    line: &[u8],
    file: &std::fs::File,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: line.as_ptr() as *mut libc::c_void,
        iov_len: line.len(),
    };
    // Room for one descriptor's control message, 8-byte aligned.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a constant computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: the control buffer holds one cmsghdr plus an int (checked size above), so the
    // header and data pointers stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        libc::CMSG_DATA(c)
            .cast::<libc::c_int>()
            .write_unaligned(file.as_raw_fd());
    }
    // SAFETY: sendmsg of the message built above on a connected socket.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != line.len() {
        return Err(std::io::Error::other("short write on the API socket"));
    }
    Ok(())
}

/// The file in a VM's directory naming its VMM: `<pid> <start time>`.
const PID_FILE: &str = "vmm.pid";

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Kills the VMM a dead process left in `dir` (if it still runs: pid and start time must match)
/// and removes the directory. Idempotent.
pub(crate) fn kill_orphan(dir: &Path) {
    if let Ok(text) = std::fs::read_to_string(dir.join(PID_FILE)) {
        let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        if let (Some(Some(pid)), Some(Some(start))) = (it.next(), it.next())
            && let Ok(pid) = u32::try_from(pid)
            && start_time(pid) == Some(start)
        {
            // SAFETY: kill has no memory arguments; pid and start time name the VMM we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while start_time(pid) == Some(start) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
    }
}
