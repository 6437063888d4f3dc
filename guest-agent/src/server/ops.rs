//! The RPC requests, one handler each: create, start, exec, signal, wait, stats, pids, delete,
//! set the clock. Each checks its input, does the work with `moat-sandbox`, and answers with a
//! [`Response`] or a [`Failure`] that says what was wrong.

use std::sync::Arc;
use std::time::Duration;

use moat_agent_proto::{CreateContainer, ErrorKind, ExecProcess, Response, Rootfs, Stats};
use moat_sandbox::{Container, CreateOptions, ExecOptions};

use super::Server;
use super::failure::{Failure, Outcome, check_id};
use super::registry::{Entry, Proc, describe};
use super::{rootfs, spec, stdio};
use crate::sys::Sys;

/// How long a delete waits for the killed init's exit to be reaped, so that waiters see it.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// The highest signal number (`SIGRTMAX` on x86-64 Linux).
const MAX_SIGNAL: i32 = 64;

impl Server {
    pub(super) fn create(&self, c: CreateContainer) -> Outcome<Response> {
        check_id("container id", &c.id)?;
        let Rootfs::Block { device, fstype } = &c.rootfs;
        let disk = rootfs::check(&self.paths, device, fstype)?;
        let id = c.id;
        let spec = spec::container(&id, c.spec, &self.paths.rootfs(&id))?;
        let reservation = self.registry.reserve(&id)?;
        let readonly = spec::readonly_root(&spec);
        let mut mounted = rootfs::mount_rootfs(&self.paths, &id, &disk, fstype, readonly)?;
        let undo = |mounted: &mut rootfs::Mounted| {
            if let Err(e) = mounted.undo() {
                tracing::error!("cleaning up after the failed creation of {id}: {e}");
            }
        };
        let (ends, stdio) = match stdio::pipes(c.stdio) {
            Ok(p) => p,
            Err(e) => {
                undo(&mut mounted);
                return Err(e);
            }
        };
        super::cgroup::prepare_parent();
        // Held until the init's pid is registered: PID 1 reaps nothing meanwhile (moat-sandbox
        // reaps its intermediate child itself, and the init's exit must find its entry).
        let spawning = crate::spawn_lock();
        let created = Container::create(CreateOptions {
            root: self.paths.state(),
            id: id.clone(),
            bundle: self.paths.bundle(&id),
            spec,
            stdio,
            extra_seccomp: Vec::new(),
        });
        let container = match created {
            Ok(c) => c,
            Err(e) => {
                drop(spawning);
                undo(&mut mounted);
                return Err(Failure::sandbox(&format!("creating container {id:?}"), e));
            }
        };
        let pid = container.pid();
        let entry = Arc::new(Entry::new(
            id.clone(),
            container,
            Proc::new(pid, ends),
            mounted,
        ));
        self.registry.insert(reservation, entry, pid);
        drop(spawning);
        tracing::info!(container = id, pid, "created");
        Ok(Response::Created { pid: pid as u32 })
    }

    pub(super) fn start(&self, id: &str) -> Outcome<Response> {
        let entry = self.registry.get(id)?;
        let st = entry.lock();
        st.container(id)?
            .start()
            .map_err(|e| Failure::sandbox(&format!("starting container {id:?}"), e))?;
        Ok(Response::Ok)
    }

    pub(super) fn exec(&self, e: ExecProcess) -> Outcome<Response> {
        check_id("exec id", &e.exec_id)?;
        let process = spec::process(e.process)?;
        let entry = self.registry.get(&e.id)?;
        let (ends, stdio) = stdio::pipes(e.stdio)?;
        let what = describe(&e.id, Some(&e.exec_id));
        // As in create: held until the pid is registered.
        let spawning = crate::spawn_lock();
        let mut st = entry.lock();
        if st.execs.contains_key(&e.exec_id) {
            return Err(Failure::new(
                ErrorKind::AlreadyExists,
                format!("{what} exists already: pick another exec id, or delete the old one"),
            ));
        }
        let p = st
            .container(&e.id)?
            .exec(
                &process,
                ExecOptions {
                    stdio,
                    ..ExecOptions::default()
                },
            )
            .map_err(|err| Failure::sandbox(&format!("starting {what}"), err))?;
        st.execs.insert(e.exec_id.clone(), Proc::new(p.pid, ends));
        drop(st);
        self.registry
            .insert_exec(p.pid, entry.clone(), e.exec_id.clone());
        drop(spawning);
        tracing::info!(container = e.id, exec = e.exec_id, pid = p.pid, "exec'd");
        Ok(Response::Started { pid: p.pid as u32 })
    }

    pub(super) fn signal(
        &self,
        id: &str,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Outcome<Response> {
        if !(1..=MAX_SIGNAL).contains(&signal) {
            return Err(Failure::invalid(format!(
                "{signal} is not a signal number (1 to {MAX_SIGNAL})"
            )));
        }
        let entry = self.registry.get(id)?;
        let what = describe(id, exec_id);
        let Some(exec_id) = exec_id else {
            let st = entry.lock();
            if !all && st.init.status.is_some() {
                return Err(Failure::not_found(format!("{what} has already exited")));
            }
            return match st.container(id)?.kill(signal, all) {
                Ok(()) => Ok(Response::Ok),
                // Dead but not reaped yet: as good as exited.
                Err(moat_sandbox::Error::WrongStatus { .. }) if !all => {
                    Err(Failure::not_found(format!("{what} has already exited")))
                }
                Err(e) => Err(Failure::sandbox(&format!("signalling {what}"), e)),
            };
        };
        if all {
            return Err(Failure::invalid(format!(
                "signalling {what}: `all` applies to a container's init only"
            )));
        }
        // No reaping meanwhile: a pid without a status is not reaped, so it is still this process.
        let _spawning = crate::spawn_lock();
        let mut st = entry.lock();
        let p = st.proc_mut(id, Some(exec_id))?;
        if p.status.is_some() {
            return Err(Failure::not_found(format!("{what} has already exited")));
        }
        // SAFETY: kill(2) takes no pointers; the pid is our unreaped child.
        if unsafe { libc::kill(p.pid, signal) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Failure::internal(&format!("signalling {what}"), e));
        }
        Ok(Response::Ok)
    }

    pub(super) fn wait(&self, id: &str, exec_id: Option<&str>) -> Outcome<Response> {
        let entry = self.registry.get(id)?;
        match entry.wait(exec_id, None)? {
            Some(status) => Ok(Response::Exited { status }),
            None => Err(Failure::internal("waiting", "no status without a timeout")),
        }
    }

    pub(super) fn stats(&self, id: &str) -> Outcome<Response> {
        let entry = self.registry.get(id)?;
        let s =
            entry.lock().container(id)?.stats().map_err(|e| {
                Failure::sandbox(&format!("reading the stats of container {id:?}"), e)
            })?;
        Ok(Response::Stats(Stats {
            memory_usage: s.memory_usage,
            memory_limit: s.memory_limit,
            memory_failcnt: s.memory_failcnt,
            oom_kills: s.oom_kills,
            cpu_usage_ns: s.cpu_usage_ns,
            cpu_user_ns: s.cpu_user_ns,
            cpu_system_ns: s.cpu_system_ns,
            pids_current: s.pids_current,
            pids_limit: s.pids_limit,
        }))
    }

    pub(super) fn pids(&self, id: &str) -> Outcome<Response> {
        let entry = self.registry.get(id)?;
        let pids = entry
            .lock()
            .container(id)?
            .pids()
            .map_err(|e| Failure::sandbox(&format!("listing the processes of {id:?}"), e))?;
        Ok(Response::Pids {
            pids: pids.into_iter().map(|p| p as u32).collect(),
        })
    }

    pub(super) fn delete(&self, id: &str, exec_id: Option<&str>) -> Outcome<Response> {
        let entry = self.registry.get(id)?;
        if let Some(exec_id) = exec_id {
            let mut st = entry.lock();
            if st.proc_mut(id, Some(exec_id))?.status.is_none() {
                return Err(Failure::precondition(format!(
                    "{} is still running: signal it and wait for it first",
                    describe(id, Some(exec_id))
                )));
            }
            st.execs.remove(exec_id);
            return Ok(Response::Ok);
        }
        self.delete_container(&entry)?;
        Ok(Response::Ok)
    }

    /// Kills what runs, removes the cgroup and state, unmounts the rootfs, forgets the container.
    fn delete_container(&self, entry: &Entry) -> Outcome<()> {
        let id = &entry.id;
        let container = entry.lock().container.take().ok_or_else(|| {
            Failure::precondition(format!("container {id:?} is being deleted already"))
        })?;
        if let Err(e) = container.delete(true) {
            // Keep it for another try.
            entry.lock().container = Container::load(&self.paths.state(), id).ok();
            return Err(Failure::sandbox(&format!("deleting container {id:?}"), e));
        }
        // Its processes are dead; let PID 1 reap the init so that waiters get its status.
        if let Ok(None) = entry.wait(None, Some(REAP_WAIT)) {
            tracing::warn!("the init of {id} was not reaped within {REAP_WAIT:?} of its deletion");
        }
        let mut st = entry.lock();
        let undone = st.rootfs.undo();
        st.deleted = true;
        drop(st);
        entry.notify();
        self.registry.remove(id);
        tracing::info!(container = id, "deleted");
        undone.map_err(|e| {
            Failure::internal(
                &format!("container {id:?} is deleted, but its rootfs is not all gone"),
                e,
            )
        })
    }

    pub(super) fn set_clock(&self, unix_nanos: u64) -> Outcome<Response> {
        let secs = (unix_nanos / 1_000_000_000) as i64;
        let nanos = (unix_nanos % 1_000_000_000) as u32;
        crate::sys::Linux
            .set_clock(secs, nanos)
            .map_err(|e| Failure::internal("setting the clock (clock_settime)", e))?;
        Ok(Response::Ok)
    }
}
