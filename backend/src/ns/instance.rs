//! One `ns` container: its sandbox handle, its init's and exec'd processes' reaper watches, and
//! the OOM-aware exit status.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use moat_sandbox::{Container, ExecOptions};

use super::{Supervise, map_err, sandbox_stdio};
use crate::reaper::{self, Watch};
use crate::{Error, ExecConfig, ExitStatus, Instance, LinuxResources, Result, Stats};

/// How long `delete` waits for a killed init to be reaped before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An exec'd process.
#[derive(Debug)]
struct ExecProc {
    watch: Watch,
    console: Option<OwnedFd>,
    /// A second handle on the terminal master, kept for resizing after the first is taken.
    console_resize: Option<OwnedFd>,
}

/// The shared state of one container.
#[derive(Debug)]
pub(crate) struct Inner {
    id: String,
    /// `None` once deleted.
    container: Mutex<Option<Container>>,
    init: Watch,
    /// The init's exit, with the OOM verdict applied, once known.
    init_status: Mutex<Option<ExitStatus>>,
    console: Mutex<Option<OwnedFd>>,
    console_resize: Option<OwnedFd>,
    execs: Mutex<HashMap<String, ExecProc>>,
    /// The trace wall's supervisor hook, attached to every exec'd process too.
    supervise: Option<Arc<dyn Supervise>>,
}

fn dup(fd: &Option<OwnedFd>) -> Option<OwnedFd> {
    fd.as_ref().and_then(|f| f.try_clone().ok())
}

fn reaper_err(what: &str, e: reaper::Error) -> Error {
    match e {
        reaper::Error::Exited(_) => Error::NotFound(format!("{what}: process already finished")),
        other => Error::internal(what, other),
    }
}

impl Inner {
    pub(crate) fn new(
        id: String,
        c: Container,
        init: Watch,
        console: Option<OwnedFd>,
        supervise: Option<Arc<dyn Supervise>>,
    ) -> Self {
        Self {
            supervise,
            id,
            container: Mutex::new(Some(c)),
            init,
            init_status: Mutex::new(None),
            console_resize: dup(&console),
            console: Mutex::new(console),
            execs: Mutex::default(),
        }
    }

    fn with_container<T>(&self, f: impl FnOnce(&Container) -> Result<T>) -> Result<T> {
        let g = lock(&self.container);
        match g.as_ref() {
            Some(c) => f(c),
            None => Err(Error::NotFound(format!(
                "container {:?} has been deleted",
                self.id
            ))),
        }
    }

    /// The init's status with the OOM verdict, once it has exited (reads the cgroup's OOM counter
    /// the first time, so it must run before the cgroup is removed).
    fn init_exit(&self, raw: ExitStatus) -> ExitStatus {
        let mut st = lock(&self.init_status);
        if let Some(s) = *st {
            return s;
        }
        let status = match raw {
            ExitStatus::Signaled(libc::SIGKILL) => {
                let ooms = lock(&self.container)
                    .as_ref()
                    .map_or(0, Container::oom_kills);
                if ooms > 0 { ExitStatus::OomKilled } else { raw }
            }
            other => other,
        };
        *st = Some(status);
        status
    }

    fn watch_of(&self, exec_id: Option<&str>) -> Result<Watch> {
        match exec_id {
            None => Ok(self.init.clone()),
            Some(e) => lock(&self.execs)
                .get(e)
                .map(|p| p.watch.clone())
                .ok_or_else(|| Error::NotFound(format!("exec {e:?} in container {:?}", self.id))),
        }
    }

    fn finish(&self, exec_id: Option<&str>, r: reaper::Result<ExitStatus>) -> Result<ExitStatus> {
        let raw = r.map_err(|e| Error::internal(format!("waiting for {:?}", self.id), e))?;
        Ok(if exec_id.is_none() {
            self.init_exit(raw)
        } else {
            raw
        })
    }

    /// Kills what still runs, records the init's exit, removes cgroups, mounts and state.
    /// Idempotent. Returns the init's exit status if it has exited.
    pub(crate) fn delete_container(&self) -> Result<Option<ExitStatus>> {
        if lock(&self.container).is_none() {
            return Ok(*lock(&self.init_status));
        }
        if !self.init.has_exited() {
            let _ = self.init.signal(libc::SIGKILL);
        }
        let status = match self.init.wait_timeout(KILL_WAIT) {
            Ok(Some(raw)) => Some(self.init_exit(raw)),
            Ok(None) => {
                return Err(Error::internal(
                    format!("deleting container {:?}", self.id),
                    format!(
                        "its init (pid {}) did not die within {KILL_WAIT:?} of SIGKILL",
                        self.init.pid()
                    ),
                ));
            }
            Err(e) => {
                return Err(Error::internal(
                    format!("deleting container {:?}", self.id),
                    e,
                ));
            }
        };
        for (_, p) in lock(&self.execs).drain() {
            let _ = p.watch.signal(libc::SIGKILL);
        }
        let Some(c) = lock(&self.container).take() else {
            return Ok(status);
        };
        c.delete(true)
            .map_err(|e| map_err(&format!("deleting container {:?}", self.id), e))?;
        Ok(status)
    }
}

/// A container on the `ns` wall ([`Instance`]). Dropping it without [`Instance::delete`] deletes
/// it anyway (killing what still runs), so nothing leaks.
#[derive(Debug)]
pub struct NsInstance {
    inner: Arc<Inner>,
    live: Arc<Mutex<HashMap<String, Arc<Inner>>>>,
}

impl NsInstance {
    pub(crate) fn new(inner: Arc<Inner>, live: Arc<Mutex<HashMap<String, Arc<Inner>>>>) -> Self {
        Self { inner, live }
    }

    fn forget(&self) {
        let mut live = lock(&self.live);
        if live
            .get(&self.inner.id)
            .is_some_and(|i| Arc::ptr_eq(i, &self.inner))
        {
            live.remove(&self.inner.id);
        }
    }
}

impl Drop for NsInstance {
    fn drop(&mut self) {
        if let Err(e) = self.inner.delete_container() {
            tracing::warn!("cleaning up container {:?}: {e}", self.inner.id);
        }
        self.forget();
    }
}

fn set_winsize(fd: &OwnedFd, width: u16, height: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on a terminal fd we own, reading a valid winsize.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Error::internal(
            "resizing the terminal",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl Instance for NsInstance {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn pid(&self) -> u32 {
        self.inner.init.pid()
    }

    fn start(&self) -> Result<()> {
        self.inner
            .with_container(|c| c.start().map_err(|e| map_err("starting the container", e)))
    }

    fn exec(&self, config: ExecConfig) -> Result<u32> {
        let reaper = reaper::global().map_err(|e| Error::internal("starting the reaper", e))?;
        if self.inner.init.has_exited() {
            return Err(Error::FailedPrecondition(format!(
                "container {:?} has stopped: cannot exec into it",
                self.inner.id
            )));
        }
        let mut execs = lock(&self.inner.execs);
        if execs.contains_key(&config.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {:?} in container {:?}",
                config.exec_id, self.inner.id
            )));
        }
        let sup = self.inner.supervise.clone();
        let mut p = self.inner.with_container(|c| {
            c.exec(
                &config.process,
                ExecOptions {
                    stdio: sandbox_stdio(config.io),
                    extra_seccomp: sup.as_ref().map(|s| s.extra_seccomp()).unwrap_or_default(),
                    hold: sup.is_some(),
                },
            )
            .map_err(|e| map_err(&format!("exec in container {:?}", self.inner.id), e))
        })?;
        let pid = p.pid as u32;
        let watch = reaper
            .watch(pid)
            .map_err(|e| Error::internal(format!("watching exec {:?}", config.exec_id), e))?;
        if let Some(s) = &sup {
            // Held before its execve: supervise it, then let it go (dropping `p` unreleased
            // makes it exit, and the reaper collects it).
            s.attach(pid, &format!("exec {:?}", config.exec_id))?;
            p.release()
                .map_err(|e| map_err(&format!("exec in container {:?}", self.inner.id), e))?;
        }
        execs.insert(
            config.exec_id,
            ExecProc {
                watch,
                console_resize: dup(&p.console),
                console: p.console,
            },
        );
        Ok(pid)
    }

    fn kill(&self, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        if all && exec_id.is_none() {
            return self.inner.with_container(|c| {
                c.kill(signal, true)
                    .map_err(|e| map_err("signalling the container", e))
            });
        }
        let w = self.inner.watch_of(exec_id)?;
        w.signal(signal)
            .map_err(|e| reaper_err(&format!("container {:?}", self.inner.id), e))
    }

    fn wait(&self, exec_id: Option<&str>) -> Result<ExitStatus> {
        let w = self.inner.watch_of(exec_id)?;
        self.inner.finish(exec_id, w.wait())
    }

    fn wait_timeout(&self, exec_id: Option<&str>, timeout: Duration) -> Result<Option<ExitStatus>> {
        let w = self.inner.watch_of(exec_id)?;
        match w.wait_timeout(timeout) {
            Ok(None) => Ok(None),
            Ok(Some(s)) => self.inner.finish(exec_id, Ok(s)).map(Some),
            Err(e) => self.inner.finish(exec_id, Err(e)).map(Some),
        }
    }

    fn take_console(&self, exec_id: Option<&str>) -> Result<Option<OwnedFd>> {
        match exec_id {
            None => Ok(lock(&self.inner.console).take()),
            Some(e) => lock(&self.inner.execs)
                .get_mut(e)
                .map(|p| p.console.take())
                .ok_or_else(|| Error::NotFound(format!("exec {e:?}"))),
        }
    }

    fn resize_console(&self, exec_id: Option<&str>, width: u16, height: u16) -> Result<()> {
        let not_tty = || Error::FailedPrecondition("the process has no terminal".into());
        match exec_id {
            None => set_winsize(
                self.inner.console_resize.as_ref().ok_or_else(not_tty)?,
                width,
                height,
            ),
            Some(e) => {
                let execs = lock(&self.inner.execs);
                let p = execs
                    .get(e)
                    .ok_or_else(|| Error::NotFound(format!("exec {e:?}")))?;
                set_winsize(
                    p.console_resize.as_ref().ok_or_else(not_tty)?,
                    width,
                    height,
                )
            }
        }
    }

    fn close_stdin(&self, exec_id: Option<&str>) -> Result<()> {
        // The process holds the caller's descriptors directly: closing the caller's write end is
        // the EOF. Nothing to pass on, but the process must exist.
        self.inner.watch_of(exec_id).map(drop)
    }

    fn pids(&self) -> Result<Vec<u32>> {
        self.inner.with_container(|c| {
            c.pids()
                .map(|v| v.into_iter().map(|p| p as u32).collect())
                .map_err(|e| map_err("listing the container's processes", e))
        })
    }

    fn pause(&self) -> Result<()> {
        self.inner
            .with_container(|c| c.pause().map_err(|e| map_err("pausing the container", e)))
    }

    fn resume(&self) -> Result<()> {
        self.inner
            .with_container(|c| c.resume().map_err(|e| map_err("resuming the container", e)))
    }

    fn update(&self, resources: &LinuxResources) -> Result<()> {
        self.inner.with_container(|c| {
            c.update(resources)
                .map_err(|e| map_err("updating the container's resources", e))
        })
    }

    fn stats(&self) -> Result<Stats> {
        self.inner.with_container(|c| {
            let s = c
                .stats()
                .map_err(|e| map_err("reading the container's stats", e))?;
            Ok(Stats {
                memory_usage: s.memory_usage,
                memory_limit: s.memory_limit,
                memory_failcnt: s.memory_failcnt,
                oom_kills: s.oom_kills,
                cpu_usage_ns: s.cpu_usage_ns,
                cpu_user_ns: s.cpu_user_ns,
                cpu_system_ns: s.cpu_system_ns,
                pids_current: s.pids_current,
                pids_limit: s.pids_limit,
            })
        })
    }

    fn delete(&self, exec_id: Option<&str>) -> Result<Option<ExitStatus>> {
        match exec_id {
            Some(e) => {
                let mut execs = lock(&self.inner.execs);
                let Some(p) = execs.get(e) else {
                    return Ok(None);
                };
                match p.watch.try_status() {
                    Ok(None) => Err(Error::FailedPrecondition(format!(
                        "exec {e:?} is still running: kill it first"
                    ))),
                    Ok(Some(s)) => {
                        execs.remove(e);
                        Ok(Some(s))
                    }
                    Err(err) => {
                        execs.remove(e);
                        Err(Error::internal(format!("exec {e:?}"), err))
                    }
                }
            }
            None => {
                let r = self.inner.delete_container();
                if r.is_ok() {
                    self.forget();
                }
                r
            }
        }
    }
}
