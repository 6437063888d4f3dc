//! One process of a container as the shim tracks it: created, running or stopped, its pid, its
//! exit, and the waiters blocked in `Wait`. The shim's record is what containerd sees; the backend's
//! [`Instance`](moat_backend::Instance) is what it drives.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use moat_backend::{ExitStatus, Process};

use crate::stdio::{ProcessStdio, StdioPaths};

/// Where a process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Set up, not yet running user code (init), or registered but not started (exec).
    Created,
    /// Running.
    Running,
    /// Ended.
    Stopped,
}

/// How a process ended, as containerd reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128+N for signal N; 255 when unknown (the backend lost it).
    pub status: u32,
    /// When the shim saw it.
    pub at: SystemTime,
}

impl Exit {
    /// The exit of a status the backend reported.
    pub fn from_status(s: ExitStatus) -> Exit {
        Exit {
            status: s.code() as u32,
            at: SystemTime::now(),
        }
    }
}

/// The status containerd reports when the real one is lost (`unknownExitCode` in its CRI plugin).
pub const UNKNOWN_EXIT: u32 = 255;

#[derive(Debug)]
struct State {
    phase: Phase,
    pid: u32,
    exit: Option<Exit>,
}

/// A process the shim tracks.
#[derive(Debug)]
pub struct Proc {
    /// `None` for the container's init process.
    pub exec_id: Option<String>,
    /// The streams it was given.
    pub stdio: StdioPaths,
    state: Mutex<State>,
    cv: Condvar,
    /// What to run, for an exec process between `Exec` and `Start`.
    pending: Mutex<Option<Process>>,
    /// The shim's side of its streams, once opened.
    io: Mutex<Option<ProcessStdio>>,
    /// Held while starting and while reporting the exit, so `TaskExit` never overtakes `TaskStart`.
    pub order: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proc {
    /// A new process record in the Created phase.
    pub fn new(
        exec_id: Option<String>,
        stdio: StdioPaths,
        pid: u32,
        pending: Option<Process>,
    ) -> Proc {
        Proc {
            exec_id,
            stdio,
            state: Mutex::new(State {
                phase: Phase::Created,
                pid,
                exit: None,
            }),
            cv: Condvar::new(),
            pending: Mutex::new(pending),
            io: Mutex::new(None),
            order: Mutex::new(()),
        }
    }

    /// The exec id as containerd spells it (empty for init).
    pub fn exec_id_str(&self) -> &str {
        self.exec_id.as_deref().unwrap_or("")
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        lock(&self.state).phase
    }

    /// Host pid (0 before an exec process starts).
    pub fn pid(&self) -> u32 {
        lock(&self.state).pid
    }

    /// The exit, once stopped.
    pub fn exit(&self) -> Option<Exit> {
        lock(&self.state).exit
    }

    /// Marks it running with `pid`.
    pub fn set_running(&self, pid: u32) {
        let mut s = lock(&self.state);
        if s.phase != Phase::Stopped {
            s.phase = Phase::Running;
            s.pid = pid;
        }
    }

    /// Records the exit (the first one wins) and wakes every waiter. Returns false if it had
    /// already been recorded.
    pub fn set_exited(&self, exit: Exit) -> bool {
        let mut s = lock(&self.state);
        if s.exit.is_some() {
            return false;
        }
        s.phase = Phase::Stopped;
        s.exit = Some(exit);
        self.cv.notify_all();
        true
    }

    /// Blocks until the process has stopped.
    pub fn wait(&self) -> Exit {
        let mut s = lock(&self.state);
        loop {
            if let Some(e) = s.exit {
                return e;
            }
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes the pending exec spec (once).
    pub fn take_pending(&self) -> Option<Process> {
        lock(&self.pending).take()
    }

    /// Stores the shim's side of the streams.
    pub fn set_io(&self, io: ProcessStdio) {
        *lock(&self.io) = Some(io);
    }

    /// Runs `f` on the streams, if opened.
    pub fn with_io<R>(&self, f: impl FnOnce(&ProcessStdio) -> R) -> Option<R> {
        lock(&self.io).as_ref().map(f)
    }

    /// Drops the streams (closing every descriptor and stopping every copy).
    pub fn drop_io(&self) {
        lock(&self.io).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn waiters_wake_on_the_first_exit_only() {
        let p = Arc::new(Proc::new(None, StdioPaths::default(), 42, None));
        assert_eq!(p.phase(), Phase::Created);
        p.set_running(42);
        assert_eq!(p.phase(), Phase::Running);
        let w = {
            let p = p.clone();
            std::thread::spawn(move || p.wait())
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(p.set_exited(Exit::from_status(ExitStatus::Signaled(9))));
        assert!(!p.set_exited(Exit::from_status(ExitStatus::Exited(0))));
        assert_eq!(w.join().unwrap().status, 137);
        assert_eq!(p.exit().unwrap().status, 137);
        assert_eq!(p.phase(), Phase::Stopped);
        // A stopped process never goes back to running.
        p.set_running(43);
        assert_eq!(p.phase(), Phase::Stopped);
        assert_eq!(p.pid(), 42);
    }
}
