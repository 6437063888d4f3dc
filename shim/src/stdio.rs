//! A process's standard streams as containerd describes them: FIFO paths (what `ctr` and the CRI
//! plugin create), `file://` and `binary://` log URIs, or nothing; with or without a terminal.
//!
//! - stdout/stderr FIFOs are opened read-write and handed to the process as they are: no copy, no
//!   thread, and containerd's reader sees end of file exactly when the process (and its children)
//!   close them. Read-write keeps a write from failing with EPIPE while containerd is restarting.
//! - stdin is copied from its FIFO into a pipe by a thread, so `CloseIO` (and containerd closing
//!   its end) give the process a real end of file.
//! - `file://PATH` appends stdout and stderr to a file; `binary://PATH?k=v` starts a logging binary
//!   with the read ends of two pipes as fds 3 and 4 and a ready pipe as fd 5, as containerd's runc
//!   shim does.
//! - With a terminal the backend creates the pty; the shim takes the master and copies stdin into it
//!   and its output to stdout.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use moat_backend::ProcessIo;
use moat_backend::reaper::Watch;

use crate::error::{Error, Result};
use crate::pump::{self, Cancel};

/// The stream paths containerd gave for one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// stdin FIFO, or empty.
    pub stdin: String,
    /// stdout FIFO or log URI, or empty.
    pub stdout: String,
    /// stderr FIFO, or empty.
    pub stderr: String,
    /// Whether the process gets a terminal.
    pub terminal: bool,
}

/// Where a process's output goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    None,
    Fifo(PathBuf),
    File(PathBuf),
    Binary { path: PathBuf, args: Vec<String> },
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if plus_is_space && b[i] == b'+' {
            b' '
        } else {
            b[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_target(s: &str) -> Result<Target> {
    if s.is_empty() {
        return Ok(Target::None);
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Ok(Target::Fifo(PathBuf::from(s)));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = PathBuf::from(percent_decode(path, false));
    if !path.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "stdio URI {s:?} needs an absolute path ({scheme}:///path)"
        )));
    }
    match scheme {
        "fifo" => Ok(Target::Fifo(path)),
        "file" => Ok(Target::File(path)),
        "binary" => {
            let mut args = Vec::new();
            for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                args.push(percent_decode(k, true));
                if !v.is_empty() {
                    args.push(percent_decode(v, true));
                }
            }
            Ok(Target::Binary { path, args })
        }
        other => Err(Error::InvalidArgument(format!(
            "unknown stdio scheme {other:?} in {s:?}: use a FIFO path, file:// or binary://"
        ))),
    }
}

fn open_fifo_rw(path: &Path) -> Result<OwnedFd> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("stdio {}", path.display()), e))?;
    let mut o = OpenOptions::new();
    if meta.file_type().is_fifo() {
        o.read(true).write(true);
    } else {
        o.append(true);
    }
    o.custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

fn open_file(path: &Path) -> Result<OwnedFd> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("opening log file {}", path.display()), e))
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    fd.try_clone()
        .map_err(|e| Error::io("duplicating a stdio descriptor", e))
}

/// A process's stdio as the shim holds it: the threads copying, the logger, the stdin closer.
pub struct ProcessStdio {
    paths: StdioPaths,
    cancel: Cancel,
    stdin_cancel: Cancel,
    input: Mutex<Option<JoinHandle<()>>>,
    output: Mutex<Vec<JoinHandle<()>>>,
    logger: Mutex<Option<Watch>>,
    /// Terminal mode: the stdin FIFO and stdout sink, waiting for the console.
    console_ends: Mutex<Option<(Option<OwnedFd>, Option<OwnedFd>)>>,
}

impl std::fmt::Debug for ProcessStdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStdio")
            .field("paths", &self.paths)
            .finish()
    }
}

/// Starts a `binary://` logger; returns its watch and the write ends for stdout and stderr.
fn start_logger(
    path: &Path,
    args: &[String],
    id: &str,
    namespace: &str,
) -> Result<(Watch, OwnedFd, OwnedFd)> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::io(what, e)
    };
    let (out_r, out_w) = pump::pipe().map_err(io("creating the stdout pipe"))?;
    let (err_r, err_w) = pump::pipe().map_err(io("creating the stderr pipe"))?;
    let (ready_r, ready_w) = pump::pipe().map_err(io("creating the ready pipe"))?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure only calls dup2/dup, which are async-signal-safe, on descriptors that
    // stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources out of the way of 3..5 first, then place them (dup2 clears CLOEXEC).
            let mut moved = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let d = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if d < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = d;
            }
            for (i, fd) in moved.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let reaper = moat_backend::reaper::global()
        .map_err(|e| Error::InvalidArgument(format!("starting the reaper: {e}")))?;
    let spawned = reaper.spawn(&mut cmd).map_err(|e| {
        Error::InvalidArgument(format!("starting logging binary {}: {e}", path.display()))
    })?;
    drop((out_r, err_r, ready_w));
    // The logger closes (or writes to) fd 5 when it is ready; give it ten seconds.
    let mut pfd = libc::pollfd {
        fd: ready_r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    if rc == 0 {
        let _ = spawned.watch.signal(libc::SIGKILL);
        return Err(Error::FailedPrecondition(format!(
            "logging binary {} did not signal ready (close fd 5) within 10 s",
            path.display()
        )));
    }
    Ok((spawned.watch, out_w, err_w))
}

impl ProcessStdio {
    /// Opens the streams for a process about to be created. Returns the shim's side and what the
    /// backend gets. On error nothing stays open or running.
    pub fn open(
        paths: &StdioPaths,
        id: &str,
        namespace: &str,
    ) -> Result<(ProcessStdio, ProcessIo)> {
        let cancel = Cancel::new().map_err(|e| Error::io("creating an eventfd", e))?;
        let stdin_cancel = Cancel::new().map_err(|e| Error::io("creating an eventfd", e))?;
        let me = ProcessStdio {
            paths: paths.clone(),
            cancel,
            stdin_cancel,
            input: Mutex::new(None),
            output: Mutex::new(Vec::new()),
            logger: Mutex::new(None),
            console_ends: Mutex::new(None),
        };

        let stdin_fifo = match parse_target(&paths.stdin)? {
            Target::None => None,
            Target::Fifo(p) => Some(
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io(format!("opening stdin {}", p.display()), e))?,
            ),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "stdin {:?} must be a FIFO path",
                    paths.stdin
                )));
            }
        };

        let (stdout, stderr) = match parse_target(&paths.stdout)? {
            Target::None => (None, None),
            Target::Fifo(p) => {
                let out = open_fifo_rw(&p)?;
                let err = match parse_target(&paths.stderr)? {
                    Target::None => None,
                    Target::Fifo(q) if q == p => Some(dup(&out)?),
                    Target::Fifo(q) => Some(open_fifo_rw(&q)?),
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "stderr {:?} must be a FIFO path when stdout is one",
                            paths.stderr
                        )));
                    }
                };
                (Some(out), err)
            }
            Target::File(p) => {
                let f = open_file(&p)?;
                let e = dup(&f)?;
                (Some(f), Some(e))
            }
            Target::Binary { path, args } => {
                let (watch, out, err) = start_logger(&path, &args, id, namespace)?;
                *me.logger.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch);
                (Some(out), Some(err))
            }
        };

        if paths.terminal {
            *me.console_ends.lock().unwrap_or_else(|e| e.into_inner()) = Some((stdin_fifo, stdout));
            drop(stderr);
            return Ok((me, ProcessIo::Terminal));
        }

        let stdin = match stdin_fifo {
            None => None,
            Some(fifo) => {
                let (r, w) = pump::pipe().map_err(|e| Error::io("creating the stdin pipe", e))?;
                let stop = me.stdin_cancel.clone();
                let t = std::thread::Builder::new()
                    .name("stdin".into())
                    .spawn(move || copy_stdin(&fifo, &w, &stop))
                    .map_err(|e| Error::io("starting the stdin thread", e))?;
                *me.input.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                Some(r)
            }
        };
        Ok((
            me,
            ProcessIo::Fds {
                stdin,
                stdout,
                stderr,
            },
        ))
    }

    /// The paths this was opened from.
    pub fn paths(&self) -> &StdioPaths {
        &self.paths
    }

    /// Terminal mode: starts copying between the FIFOs and the pty master the backend created.
    pub fn attach_console(&self, master: OwnedFd) -> Result<()> {
        let Some((stdin, stdout)) = self
            .console_ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        if let Some(fifo) = stdin {
            let m = dup(&master)?;
            let stop = self.stdin_cancel.clone();
            let t = std::thread::Builder::new()
                .name("console-in".into())
                .spawn(move || copy_stdin(&fifo, &m, &stop))
                .map_err(|e| Error::io("starting the console input thread", e))?;
            *self.input.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        }
        let c = self.cancel.clone();
        let t = std::thread::Builder::new()
            .name("console-out".into())
            .spawn(move || {
                if let Some(out) = stdout {
                    if let Err(e) = pump::pump(&master, &out, &c) {
                        tracing::warn!("copying terminal output: {e}");
                    }
                } else {
                    // Nobody reads the output: drain it so the process never blocks on a full pty.
                    let null: OwnedFd = match File::create("/dev/null") {
                        Ok(f) => f.into(),
                        Err(_) => return,
                    };
                    let _ = pump::pump(&master, &null, &c);
                }
            })
            .map_err(|e| Error::io("starting the console output thread", e))?;
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
        Ok(())
    }

    /// Closes the process's stdin (`CloseIO`): the copy stops and the process reads end of file.
    pub fn close_stdin(&self) {
        self.stdin_cancel.fire();
        if let Some(t) = self.input.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// After the process exited: waits up to `timeout` for its output to be copied out and its
    /// logger to finish, then stops whatever still runs. Idempotent.
    pub fn finish(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let threads: Vec<_> = self
            .output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in &threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let Some(w) = self.logger.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let left = deadline.saturating_duration_since(Instant::now());
            if !matches!(w.wait_timeout(left), Ok(Some(_))) {
                let _ = w.signal(libc::SIGKILL);
                let _ = w.wait_timeout(Duration::from_secs(1));
            }
        }
        self.cancel.fire();
        self.stdin_cancel.fire();
        for t in threads {
            let _ = t.join();
        }
        if let Some(t) = self.input.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        self.console_ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl Drop for ProcessStdio {
    fn drop(&mut self) {
        self.cancel.fire();
        self.stdin_cancel.fire();
        if let Some(w) = self
            .logger
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            && !w.has_exited()
        {
            let _ = w.signal(libc::SIGKILL);
        }
    }
}

fn copy_stdin(fifo: &OwnedFd, dst: &OwnedFd, stop: &Cancel) {
    if let Err(e) = pump::pump(fifo, dst, stop) {
        tracing::warn!("copying stdin: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("").unwrap(), Target::None);
        assert_eq!(
            parse_target("/run/x/stdout").unwrap(),
            Target::Fifo("/run/x/stdout".into())
        );
        assert_eq!(
            parse_target("file:///var/log/a%20b.log").unwrap(),
            Target::File("/var/log/a b.log".into())
        );
        assert_eq!(
            parse_target("binary:///usr/bin/logger?tag=web&debug").unwrap(),
            Target::Binary {
                path: "/usr/bin/logger".into(),
                args: vec!["tag".into(), "web".into(), "debug".into()]
            }
        );
        assert!(
            parse_target("ftp:///x")
                .unwrap_err()
                .to_string()
                .contains("unknown stdio scheme")
        );
        assert!(
            parse_target("file://relative")
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
    }
}
