//! What the agent knows about the containers it runs: each container's `moat-sandbox` handle,
//! rootfs mounts and processes (the init and exec'd ones: guest pid, the agent's pipe ends not yet
//! attached, the exit status once known), and an index from guest pid to process, through which
//! PID 1's reaper delivers exit statuses ([`Registry::exited`]) and wakes the waiters.
//!
//! Locking: the registry's tables and each container's state have mutexes of their own, and no
//! code holds one while taking the other. Processes are registered while the caller holds
//! [`crate::SPAWN_LOCK`], which PID 1 takes around reaping, so no exit can come before its pid is
//! known here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moat_agent_proto::ExitStatus;
use moat_sandbox::Container;
use moat_sandbox::cgroups::Cgroup;

use super::failure::{Failure, Outcome};
use super::rootfs::Mounted;
use super::stdio::HostEnds;
use crate::sys::WaitStatus;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One process of a container.
#[derive(Debug)]
pub struct Proc {
    /// Guest pid.
    pub pid: i32,
    /// How it ended, once reaped.
    pub status: Option<ExitStatus>,
    /// The agent's pipe ends.
    pub stdio: HostEnds,
}

impl Proc {
    /// A running process.
    pub fn new(pid: i32, stdio: HostEnds) -> Self {
        Self {
            pid,
            status: None,
            stdio,
        }
    }
}

/// A container's state.
#[derive(Debug)]
pub struct State {
    /// The sandbox handle; `None` once deletion began.
    pub container: Option<Container>,
    /// Its cgroup, for the OOM verdict (readable while deletion runs).
    cgroup: Option<Cgroup>,
    /// The cgroup's OOM kill count at creation.
    oom_baseline: u64,
    /// The init.
    pub init: Proc,
    /// Exec'd processes by exec id.
    pub execs: HashMap<String, Proc>,
    /// Its rootfs mounts.
    pub rootfs: Mounted,
    /// Deleted: waiters still waiting give up.
    pub deleted: bool,
}

impl State {
    /// The process `exec_id` names (`None`: the init); `id` is the container, for messages.
    pub fn proc_mut(&mut self, id: &str, exec_id: Option<&str>) -> Outcome<&mut Proc> {
        match exec_id {
            None => Ok(&mut self.init),
            Some(e) => self.execs.get_mut(e).ok_or_else(|| no_exec(id, e)),
        }
    }

    /// The sandbox handle, unless deletion began.
    pub fn container(&self, id: &str) -> Outcome<&Container> {
        self.container.as_ref().ok_or_else(|| deleted(id))
    }

    /// How a process that ended with `raw` is reported: SIGKILL while the cgroup's OOM count
    /// moved since creation is the OOM killer.
    fn verdict(&self, raw: WaitStatus) -> ExitStatus {
        match raw {
            WaitStatus::Exited(code) => ExitStatus::Exited(code),
            WaitStatus::Signaled(libc::SIGKILL)
                if self.cgroup.as_ref().map_or(0, Cgroup::oom_kills) > self.oom_baseline =>
            {
                ExitStatus::OomKilled
            }
            WaitStatus::Signaled(sig) => ExitStatus::Signaled(sig),
        }
    }
}

fn no_exec(id: &str, exec_id: &str) -> Failure {
    Failure::not_found(format!(
        "container {id:?} has no exec'd process {exec_id:?}"
    ))
}

fn deleted(id: &str) -> Failure {
    Failure::not_found(format!("container {id:?} has been deleted"))
}

/// Names a process in messages.
pub fn describe(id: &str, exec_id: Option<&str>) -> String {
    match exec_id {
        None => format!("the init of container {id:?}"),
        Some(e) => format!("exec'd process {e:?} of container {id:?}"),
    }
}

/// One container: its id, state, and the condition its waiters wait on.
#[derive(Debug)]
pub struct Entry {
    /// The container id.
    pub id: String,
    state: Mutex<State>,
    changed: Condvar,
}

impl Entry {
    /// A container just created; `rootfs` is what was mounted for it.
    pub fn new(id: String, container: Container, init: Proc, rootfs: Mounted) -> Self {
        let cgroup = container.cgroup().clone();
        let oom_baseline = cgroup.oom_kills();
        Self::with(
            id,
            Some(container),
            Some(cgroup),
            oom_baseline,
            init,
            rootfs,
        )
    }

    /// A container without a sandbox handle, for tests of the exit routing.
    #[cfg(test)]
    pub fn detached(id: &str, init_pid: i32) -> Self {
        let init = Proc::new(init_pid, HostEnds::default());
        Self::with(id.to_string(), None, None, 0, init, Mounted::default())
    }

    fn with(
        id: String,
        container: Option<Container>,
        cgroup: Option<Cgroup>,
        oom_baseline: u64,
        init: Proc,
        rootfs: Mounted,
    ) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                container,
                cgroup,
                oom_baseline,
                init,
                execs: HashMap::new(),
                rootfs,
                deleted: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Its state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Wakes every waiter (after a change they wait for).
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Records that `exec_id`'s process (`None`: the init) ended with `raw`.
    fn record(&self, exec_id: Option<&str>, raw: WaitStatus) {
        let mut st = self.lock();
        let status = st.verdict(raw);
        let id = &self.id;
        match st.proc_mut(id, exec_id) {
            Ok(p) => {
                tracing::debug!(
                    "{} (pid {}) ended: {status:?}",
                    describe(id, exec_id),
                    p.pid
                );
                p.status = Some(status);
            }
            Err(_) => tracing::debug!("{} ended after it was forgotten", describe(id, exec_id)),
        }
        drop(st);
        self.notify();
    }

    /// Blocks until the process ends (or, with `timeout`, until it passes: then `Ok(None)`).
    pub fn wait(
        &self,
        exec_id: Option<&str>,
        timeout: Option<Duration>,
    ) -> Outcome<Option<ExitStatus>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some(status) = st.proc_mut(&self.id, exec_id)?.status {
                return Ok(Some(status));
            }
            if st.deleted {
                return Err(Failure::not_found(format!(
                    "{} was deleted before its exit was seen",
                    describe(&self.id, exec_id)
                )));
            }
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    self.changed
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

#[derive(Debug, Default)]
struct Tables {
    containers: HashMap<String, Arc<Entry>>,
    /// Ids whose creation is under way.
    creating: HashSet<String>,
    /// Live registered processes: container and exec id (`None`: the init).
    pids: HashMap<i32, (Arc<Entry>, Option<String>)>,
}

/// Every container in the guest.
#[derive(Debug, Default)]
pub struct Registry {
    tables: Mutex<Tables>,
}

/// An id held for a creation under way; dropping it without [`Registry::insert`] frees it.
#[derive(Debug)]
pub struct Reservation<'a> {
    registry: &'a Registry,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.registry.tables).creating.remove(&self.id);
    }
}

impl Registry {
    /// Holds `id` for a new container; refuses an id in use.
    pub fn reserve(&self, id: &str) -> Outcome<Reservation<'_>> {
        let mut t = lock(&self.tables);
        if t.containers.contains_key(id) || !t.creating.insert(id.to_string()) {
            return Err(Failure::new(
                moat_agent_proto::ErrorKind::AlreadyExists,
                format!("container {id:?} already exists in this VM: pick another id or delete it"),
            ));
        }
        Ok(Reservation {
            registry: self,
            id: id.to_string(),
        })
    }

    /// Adds a created container under its reserved id and registers its init's pid. Call with
    /// [`crate::SPAWN_LOCK`] held since the container was created.
    pub fn insert(&self, reservation: Reservation<'_>, entry: Arc<Entry>, init_pid: i32) {
        let mut t = lock(&self.tables);
        t.containers.insert(reservation.id.clone(), entry.clone());
        t.pids.insert(init_pid, (entry, None));
        drop(t);
        drop(reservation);
    }

    /// Registers an exec'd process's pid. Call with [`crate::SPAWN_LOCK`] held since it started.
    pub fn insert_exec(&self, pid: i32, entry: Arc<Entry>, exec_id: String) {
        lock(&self.tables).pids.insert(pid, (entry, Some(exec_id)));
    }

    /// The container `id`.
    pub fn get(&self, id: &str) -> Outcome<Arc<Entry>> {
        lock(&self.tables)
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| {
                Failure::not_found(format!("container {id:?} does not exist in this VM"))
            })
    }

    /// Forgets container `id` (its processes' exits still reach its waiters).
    pub fn remove(&self, id: &str) {
        lock(&self.tables).containers.remove(id);
    }

    /// Every container.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        lock(&self.tables).containers.values().cloned().collect()
    }

    /// A process of the guest ended: if it is one of the containers', record its status and wake
    /// its waiters. Returns whether it was. Called by PID 1's reaper (holding
    /// [`crate::SPAWN_LOCK`]).
    pub fn exited(&self, pid: i32, raw: WaitStatus) -> bool {
        let Some((entry, exec_id)) = lock(&self.tables).pids.remove(&pid) else {
            return false;
        };
        entry.record(exec_id.as_deref(), raw);
        true
    }
}
