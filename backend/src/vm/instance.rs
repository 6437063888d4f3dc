//! A container inside the pod's microVM, driven through the agent. Host pids mean nothing in the
//! guest, so [`Instance::pid`] and [`Instance::pids`] give the VMM's pid (the host process that
//! represents the pod); everything else is one agent request.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_agent_proto::{self as proto, ExecProcess, Request, Response};

use super::client::{expect_ok, unexpected};
use super::machine::Machine;
use super::process::{Io, Proc};
use crate::{Error, ExecConfig, ExitStatus, Instance, LinuxResources, Result, Stats};

/// A container of a `vm` pod.
#[derive(Debug)]
pub struct VmInstance {
    id: String,
    machine: Arc<Machine>,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
}

impl VmInstance {
    pub(crate) fn new(id: String, machine: Arc<Machine>, init: Arc<Proc>) -> Self {
        Self {
            id,
            machine,
            init,
            execs: Mutex::default(),
        }
    }

    fn proc(&self, exec_id: Option<&str>) -> Result<Arc<Proc>> {
        match exec_id {
            None => Ok(self.init.clone()),
            Some(e) => self
                .execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(e)
                .cloned()
                .ok_or_else(|| {
                    Error::NotFound(format!("no process {e:?} in container {}", self.id))
                }),
        }
    }

    fn call(&self, req: Request) -> Result<Response> {
        self.machine.call(&req)
    }
}

impl Instance for VmInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn pid(&self) -> u32 {
        self.machine.pid()
    }

    fn start(&self) -> Result<()> {
        let r = self.call(Request::Start {
            id: self.id.clone(),
        })?;
        expect_ok("start", r)
    }

    fn exec(&self, config: ExecConfig) -> Result<u32> {
        proto::validate_id("exec id", &config.exec_id).map_err(Error::InvalidArgument)?;
        let io = Io::from_process_io(config.io)?;
        let process = serde_json::to_value(&config.process)
            .map_err(|e| Error::InvalidArgument(format!("the exec'd process: {e}")))?;
        {
            let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
            if execs.contains_key(&config.exec_id) {
                return Err(Error::AlreadyExists(format!(
                    "process {:?} exists in container {}",
                    config.exec_id, self.id
                )));
            }
        }
        let r = self.call(Request::Exec(ExecProcess {
            id: self.id.clone(),
            exec_id: config.exec_id.clone(),
            process,
            stdio: io.plan(),
        }))?;
        let guest_pid = match r {
            Response::Started { pid } => pid,
            other => return Err(unexpected("exec", other)),
        };
        let proc = match Proc::attach(
            &self.machine,
            &self.id,
            Some(&config.exec_id),
            io,
            guest_pid,
        ) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.kill(Some(&config.exec_id), libc::SIGKILL, false);
                return Err(e);
            }
        };
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(config.exec_id, proc);
        Ok(self.machine.pid())
    }

    fn kill(&self, exec_id: Option<&str>, signal: i32, all: bool) -> Result<()> {
        let r = self.call(Request::Signal {
            id: self.id.clone(),
            exec_id: exec_id.map(str::to_string),
            signal,
            all,
        })?;
        expect_ok("signal", r)
    }

    fn wait(&self, exec_id: Option<&str>) -> Result<ExitStatus> {
        let p = self.proc(exec_id)?;
        p.wait(None)
            .ok_or_else(|| Error::internal("waiting", "woke without a status"))
    }

    fn wait_timeout(&self, exec_id: Option<&str>, timeout: Duration) -> Result<Option<ExitStatus>> {
        Ok(self.proc(exec_id)?.wait(Some(timeout)))
    }

    fn take_console(&self, exec_id: Option<&str>) -> Result<Option<OwnedFd>> {
        self.proc(exec_id).map(|_| None)
    }

    fn resize_console(&self, exec_id: Option<&str>, _width: u16, _height: u16) -> Result<()> {
        self.proc(exec_id)?;
        Err(Error::FailedPrecondition(
            "the process has no terminal (the vm backend does not make terminals yet)".into(),
        ))
    }

    fn close_stdin(&self, exec_id: Option<&str>) -> Result<()> {
        // The caller's EOF reaches the guest by itself: the stdin copy shuts its stream then.
        self.proc(exec_id).map(drop)
    }

    fn pids(&self) -> Result<Vec<u32>> {
        Ok(vec![self.machine.pid()])
    }

    fn pause(&self) -> Result<()> {
        Err(Error::Unimplemented(
            "pausing a container is not supported by the vm backend yet".into(),
        ))
    }

    fn resume(&self) -> Result<()> {
        Err(Error::Unimplemented(
            "resuming a container is not supported by the vm backend yet".into(),
        ))
    }

    fn update(&self, _resources: &LinuxResources) -> Result<()> {
        Err(Error::Unimplemented(
            "changing the limits of a running container is not supported by the vm backend yet"
                .into(),
        ))
    }

    fn stats(&self) -> Result<Stats> {
        match self.call(Request::Stats {
            id: self.id.clone(),
        })? {
            Response::Stats(s) => Ok(Stats {
                memory_usage: s.memory_usage,
                memory_limit: s.memory_limit,
                memory_failcnt: s.memory_failcnt,
                oom_kills: s.oom_kills,
                cpu_usage_ns: s.cpu_usage_ns,
                cpu_user_ns: s.cpu_user_ns,
                cpu_system_ns: s.cpu_system_ns,
                pids_current: s.pids_current,
                pids_limit: s.pids_limit,
            }),
            other => Err(unexpected("stats", other)),
        }
    }

    fn delete(&self, exec_id: Option<&str>) -> Result<Option<ExitStatus>> {
        let status = match exec_id {
            Some(e) => {
                let p = self
                    .execs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(e);
                p.and_then(|p| p.status())
            }
            None => self.init.status(),
        };
        if self.machine.ended() {
            return Ok(status);
        }
        match self.call(Request::Delete {
            id: self.id.clone(),
            exec_id: exec_id.map(str::to_string),
        }) {
            Ok(Response::Ok) => Ok(status),
            Ok(Response::Error {
                kind: proto::ErrorKind::NotFound,
                ..
            }) => Ok(status),
            Ok(other) => Err(unexpected("delete", other)),
            Err(_) if self.machine.ending() => Ok(status),
            Err(e) => Err(e),
        }
    }
}
