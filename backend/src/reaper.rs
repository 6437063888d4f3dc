//! The process-wide reaper: one thread that collects every child moat starts and keeps its exit
//! status until whoever cares asks for it.
//!
//! A process that runs many containers (the shim) must never let two parts of itself race for one
//! child's exit status. moat solves it with pidfds (Linux >= 5.3): every child moat starts — a
//! container's init, an exec'd process, a VMM, a trace supervisor — is registered here with
//! [`Reaper::watch`] (or started through [`Reaper::spawn`]); the reaper thread waits on all their
//! pidfds with epoll and reaps each with `waitid(P_PIDFD)`, which touches no other child. Waiters get
//! a [`Watch`]: any number of threads may wait on it, with or without a deadline, before or after the
//! exit, and signal the process through its pidfd (never a recycled pid).
//!
//! Registering after the child exists is race-free because a child that has exited stays a zombie,
//! and its pid cannot be reused, until someone reaps it. The one rule for the rest of the process:
//! **nobody calls `wait()`/`waitpid(-1)`** (or `std::process::Child::wait` on a child registered
//! here): those would take exit statuses that belong to the reaper. Children moat does not register
//! (a library's own helper processes) are left alone.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::ExitStatus;

/// A reaper error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The process ended, but it was not a child of this process, so its exit status is unknown.
    #[error(
        "process {0} exited, but it is not a child of this process: its exit status is unknown"
    )]
    NotOurChild(u32),
    /// The process has already exited (and been reaped): it can no longer be signalled.
    #[error("process {0} has already exited")]
    Exited(u32),
}

/// A `Result` with the reaper [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn os_err(context: impl Into<String>) -> Error {
    Error::Io {
        context: context.into(),
        source: io::Error::last_os_error(),
    }
}

/// What became of a watched process.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Status(ExitStatus),
    NotOurChild,
}

/// The reaper's record of one process.
#[derive(Debug)]
struct Proc {
    pid: u32,
    /// Open until the process has been reaped.
    pidfd: Mutex<Option<OwnedFd>>,
    outcome: Mutex<Option<Outcome>>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proc {
    fn result(&self, outcome: Outcome) -> Result<ExitStatus> {
        match outcome {
            Outcome::Status(s) => Ok(s),
            Outcome::NotOurChild => Err(Error::NotOurChild(self.pid)),
        }
    }
}

/// A handle on one process the reaper watches. Cheap to clone; every clone sees the same exit.
#[derive(Clone, Debug)]
pub struct Watch(Arc<Proc>);

impl Watch {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Blocks until the process has exited and returns how it ended.
    pub fn wait(&self) -> Result<ExitStatus> {
        let mut g = lock(&self.0.outcome);
        loop {
            if let Some(o) = *g {
                return self.0.result(o);
            }
            g = self.0.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`wait`](Watch::wait), giving up after `timeout`: `Ok(None)` if it still runs.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.0.outcome);
        loop {
            if let Some(o) = *g {
                return self.0.result(o).map(Some);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            g = self
                .0
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// How the process ended, or `None` while it runs (never blocks).
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        match *lock(&self.0.outcome) {
            Some(o) => self.0.result(o).map(Some),
            None => Ok(None),
        }
    }

    /// True once the process has exited and been reaped.
    pub fn has_exited(&self) -> bool {
        lock(&self.0.outcome).is_some()
    }

    /// Sends `signal` through the pidfd, so it can never reach a process that reused the pid.
    /// Fails with [`Error::Exited`] once the process has been reaped.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let g = lock(&self.0.pidfd);
        let Some(fd) = g.as_ref() else {
            return Err(Error::Exited(self.0.pid));
        };
        // SAFETY: pidfd_send_signal with a valid pidfd, a null siginfo and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Err(Error::Exited(self.0.pid));
            }
            return Err(Error::Io {
                context: format!("sending signal {signal} to process {}", self.0.pid),
                source: e,
            });
        }
        Ok(())
    }
}

/// A child started by [`Reaper::spawn`]: its pipes (if the command asked for them) and its watch.
#[derive(Debug)]
pub struct Spawned {
    /// The child's stdin pipe, if `Stdio::piped()`.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout pipe, if `Stdio::piped()`.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr pipe, if `Stdio::piped()`.
    pub stderr: Option<ChildStderr>,
    /// Its exit, through the reaper.
    pub watch: Watch,
}

/// The reaper. There is one per process: [`global`].
#[derive(Debug)]
pub struct Reaper {
    epoll: OwnedFd,
    procs: Mutex<HashMap<u64, Arc<Proc>>>,
    next: AtomicU64,
}

/// The process's reaper, started (with its thread) on first use.
pub fn global() -> Result<&'static Reaper> {
    static GLOBAL: OnceLock<std::result::Result<Reaper, i32>> = OnceLock::new();
    let r = GLOBAL.get_or_init(|| Reaper::start().map_err(|e| e.raw_os_error().unwrap_or(0)));
    match r {
        Ok(r) => Ok(r),
        Err(errno) => Err(Error::Io {
            context: "starting the reaper".into(),
            source: io::Error::from_raw_os_error(*errno),
        }),
    }
}

impl Reaper {
    fn start() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes only flags; the fd it returns is checked and owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = epoll.as_raw_fd();
        std::thread::Builder::new()
            .name("moat-reaper".into())
            .spawn(move || reap_loop(raw))?;
        Ok(Self {
            epoll,
            procs: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        })
    }

    /// Starts watching `pid`, which must be a child of this process that nobody else waits for.
    /// Call it right after the child is created; an early exit is not lost (see the module docs).
    pub fn watch(&self, pid: u32) -> Result<Watch> {
        // SAFETY: pidfd_open takes a pid and flags; the fd it returns is checked and owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(os_err(format!("opening a pidfd for process {pid}")));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        self.watch_pidfd(pid, pidfd)
    }

    /// Starts watching a child through a pidfd the caller already has (e.g. from `clone3`).
    pub fn watch_pidfd(&self, pid: u32, pidfd: OwnedFd) -> Result<Watch> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let raw = pidfd.as_raw_fd();
        let proc = Arc::new(Proc {
            pid,
            pidfd: Mutex::new(Some(pidfd)),
            outcome: Mutex::new(None),
            cv: Condvar::new(),
        });
        lock(&self.procs).insert(token, proc.clone());
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: adds a valid fd we keep open (in `proc`) to our epoll set.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, raw, &mut ev) };
        if rc < 0 {
            lock(&self.procs).remove(&token);
            return Err(os_err(format!("watching process {pid}")));
        }
        Ok(Watch(proc))
    }

    /// Spawns `cmd` and watches it. Never `wait` on the child any other way.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Spawned> {
        let mut child = cmd.spawn().map_err(|source| Error::Io {
            context: format!("starting {:?}", cmd.get_program()),
            source,
        })?;
        let watch = match self.watch(child.id()) {
            Ok(w) => w,
            Err(e) => {
                // Not watched, so std may reap it: kill and collect it rather than leak it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        // Dropping `child` neither waits nor kills: the reaper owns its exit from here on.
        Ok(Spawned {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            watch,
        })
    }

    fn reaped(&self, token: u64) {
        let Some(proc) = lock(&self.procs).remove(&token) else {
            return;
        };
        let outcome = {
            let mut fd = lock(&proc.pidfd);
            let outcome = fd.as_ref().map(|fd| waitid_pidfd(fd.as_raw_fd()));
            if let Some(fd) = fd.as_ref() {
                // SAFETY: removes an fd we registered; a null event is allowed for DEL.
                unsafe {
                    libc::epoll_ctl(
                        self.epoll.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
            }
            *fd = None;
            outcome.unwrap_or(Outcome::NotOurChild)
        };
        *lock(&proc.outcome) = Some(outcome);
        proc.cv.notify_all();
    }
}

/// Reaps the process behind a readable pidfd.
fn waitid_pidfd(fd: RawFd) -> Outcome {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value for waitid to fill in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on a pidfd we own, filling `info`.
        let rc = unsafe { libc::waitid(libc::P_PIDFD, fd as libc::id_t, &mut info, libc::WEXITED) };
        if rc < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Outcome::NotOurChild;
        }
        // SAFETY: waitid succeeded with WEXITED, so the SIGCHLD fields of `info` are set.
        let status = unsafe { info.si_status() };
        return Outcome::Status(match info.si_code {
            libc::CLD_EXITED => ExitStatus::Exited(status),
            _ => ExitStatus::Signaled(status),
        });
    }
}

fn reap_loop(epoll: RawFd) {
    // The thread starts while `global()` is storing the reaper: this blocks until it is stored.
    let Ok(reaper) = global() else {
        return;
    };
    debug_assert_eq!(reaper.epoll.as_raw_fd(), epoll);
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 32];
    loop {
        // SAFETY: waits on our epoll fd, filling at most `events.len()` entries.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            tracing::error!("reaper: epoll_wait failed: {}", io::Error::last_os_error());
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            reaper.reaped(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sh(script: &str) -> Spawned {
        global()
            .unwrap()
            .spawn(
                Command::new("/bin/sh")
                    .args(["-c", script])
                    .stdout(Stdio::piped()),
            )
            .unwrap()
    }

    #[test]
    fn exit_codes_and_signals() {
        let a = sh("exit 7");
        let b = sh("kill -TERM $$");
        assert_eq!(a.watch.wait().unwrap(), ExitStatus::Exited(7));
        assert_eq!(b.watch.wait().unwrap(), ExitStatus::Signaled(libc::SIGTERM));
        // Asking again, from a clone, gives the same answer.
        assert_eq!(a.watch.clone().wait().unwrap(), ExitStatus::Exited(7));
    }

    #[test]
    fn many_waiters_and_timeouts() {
        let s = sh("sleep 10; exit 3");
        let w = s.watch.clone();
        assert_eq!(w.wait_timeout(Duration::from_millis(20)).unwrap(), None);
        assert_eq!(w.try_status().unwrap(), None);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || w.wait().unwrap())
            })
            .collect();
        w.signal(libc::SIGKILL).unwrap();
        for t in threads {
            assert_eq!(t.join().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
        }
        assert!(matches!(w.signal(libc::SIGTERM), Err(Error::Exited(_))));
    }

    #[test]
    fn early_exit_is_not_lost() {
        let child = Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(50)); // it is a zombie by now
        let w = global().unwrap().watch(pid).unwrap();
        assert_eq!(w.wait().unwrap(), ExitStatus::Exited(0));
        drop(child);
    }

    #[test]
    fn non_child_is_reported_as_such() {
        // A grandchild: the shell's background job, not ours.
        let s = sh("sleep 0.2 & echo $!");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s.stdout.unwrap(), &mut out).unwrap();
        let pid: u32 = out.trim().parse().unwrap();
        let w = global().unwrap().watch(pid).unwrap();
        assert!(matches!(w.wait(), Err(Error::NotOurChild(p)) if p == pid));
        s.watch.wait().unwrap();
    }
}
