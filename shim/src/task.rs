//! The ttrpc service `containerd.task.v2.Task`: converts containerd's messages to [`Pod`] calls and
//! back. No rules here beyond decoding.

use std::sync::Arc;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::types::task::Status;
use moat_backend::{LinuxResources, Process};
use ttrpc::TtrpcContext;

use crate::error::{Error, Result};
use crate::events::{timestamp, to_any};
use crate::metrics;
use crate::mount::Mount;
use crate::options::RuntimeOptions;
use crate::pod::{CreateRequest, Pod};
use crate::process::Phase;
use crate::stdio::StdioPaths;

/// Type URL suffix of an OCI process spec in `ExecProcessRequest.spec` (JSON).
const PROCESS_TYPE: &str = "opencontainers/runtime-spec/1/Process";
/// Type URL suffix of OCI resources in `UpdateTaskRequest.resources` (JSON).
const RESOURCES_TYPE: &str = "opencontainers/runtime-spec/1/LinuxResources";

/// The Task service.
pub struct TaskService {
    pod: Arc<Pod>,
}

impl TaskService {
    /// Serves `pod`.
    pub fn new(pod: Arc<Pod>) -> Self {
        TaskService { pod }
    }
}

fn json_any<T: serde::de::DeserializeOwned>(
    any: &MessageField<Any>,
    suffix: &str,
    what: &str,
) -> Result<T> {
    let any = any
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument(format!("{what} is missing")))?;
    if !any.type_url.ends_with(suffix) {
        return Err(Error::InvalidArgument(format!(
            "{what} has type {:?}, expected types.containerd.io/{suffix}",
            any.type_url
        )));
    }
    serde_json::from_slice(&any.value).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
}

fn status(phase: Phase, paused: bool) -> Status {
    match phase {
        Phase::Created => Status::CREATED,
        Phase::Running if paused => Status::PAUSED,
        Phase::Running => Status::RUNNING,
        Phase::Stopped => Status::STOPPED,
    }
}

fn log_err<T>(method: &str, id: &str, r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        tracing::warn!(method, id, "{e}");
        e.into()
    })
}

fn empty() -> api::Empty {
    api::Empty::new()
}

impl containerd_shim_protos::Task for TaskService {
    fn state(&self, _: &TtrpcContext, r: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        let s = log_err("State", &r.id, self.pod.state(&r.id, &r.exec_id))?;
        let mut out = api::StateResponse::new();
        out.id = if r.exec_id.is_empty() {
            r.id.clone()
        } else {
            r.exec_id.clone()
        };
        out.bundle = s.bundle.display().to_string();
        out.pid = s.pid;
        out.status = status(s.phase, s.paused).into();
        out.stdin = s.stdio.stdin;
        out.stdout = s.stdio.stdout;
        out.stderr = s.stdio.stderr;
        out.terminal = s.stdio.terminal;
        if let Some(e) = s.exit {
            out.exit_status = e.status;
            out.exited_at = Some(timestamp(e.at)).into();
        }
        out.exec_id = r.exec_id;
        Ok(out)
    }

    fn create(
        &self,
        _: &TtrpcContext,
        r: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        let id = r.id.clone();
        let res = (|| {
            if !r.checkpoint.is_empty() || !r.parent_checkpoint.is_empty() {
                return Err(Error::Unimplemented("restoring from a checkpoint".into()));
            }
            let options = RuntimeOptions::from_any(r.options.as_ref())?;
            self.pod.create(CreateRequest {
                id: r.id,
                bundle: r.bundle.into(),
                rootfs: r
                    .rootfs
                    .into_iter()
                    .map(|m| Mount {
                        kind: m.type_,
                        source: m.source,
                        options: m.options,
                    })
                    .collect(),
                stdio: StdioPaths {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    terminal: r.terminal,
                },
                options,
            })
        })();
        let pid = log_err("Create", &id, res)?;
        let mut out = api::CreateTaskResponse::new();
        out.pid = pid;
        Ok(out)
    }

    fn start(&self, _: &TtrpcContext, r: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        let pid = log_err("Start", &r.id, self.pod.start(&r.id, &r.exec_id))?;
        let mut out = api::StartResponse::new();
        out.pid = pid;
        Ok(out)
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        r: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        let (pid, exit) = log_err("Delete", &r.id, self.pod.delete(&r.id, &r.exec_id))?;
        let mut out = api::DeleteResponse::new();
        out.pid = pid;
        out.exit_status = exit.status;
        out.exited_at = Some(timestamp(exit.at)).into();
        Ok(out)
    }

    fn pids(&self, _: &TtrpcContext, r: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let pids = log_err("Pids", &r.id, self.pod.pids(&r.id))?;
        let mut out = api::PidsResponse::new();
        for (pid, exec) in pids {
            let mut info = api::ProcessInfo::new();
            info.pid = pid;
            if let Some(exec_id) = exec {
                let mut d = ProcessDetails::new();
                d.exec_id = exec_id;
                info.info = Some(to_any(&d)).into();
            }
            out.processes.push(info);
        }
        Ok(out)
    }

    fn pause(&self, _: &TtrpcContext, r: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        log_err("Pause", &r.id, self.pod.set_paused(&r.id, true))?;
        Ok(empty())
    }

    fn resume(&self, _: &TtrpcContext, r: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        log_err("Resume", &r.id, self.pod.set_paused(&r.id, false))?;
        Ok(empty())
    }

    fn checkpoint(
        &self,
        _: &TtrpcContext,
        r: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        log_err(
            "Checkpoint",
            &r.id,
            Err(Error::Unimplemented("checkpointing moat containers".into())),
        )
    }

    fn kill(&self, _: &TtrpcContext, r: api::KillRequest) -> ttrpc::Result<api::Empty> {
        log_err(
            "Kill",
            &r.id,
            self.pod.kill(&r.id, &r.exec_id, r.signal, r.all),
        )?;
        Ok(empty())
    }

    fn exec(&self, _: &TtrpcContext, r: api::ExecProcessRequest) -> ttrpc::Result<api::Empty> {
        let res = json_any::<Process>(&r.spec, PROCESS_TYPE, "exec process spec").and_then(|p| {
            self.pod.exec(
                &r.id,
                &r.exec_id,
                StdioPaths {
                    stdin: r.stdin.clone(),
                    stdout: r.stdout.clone(),
                    stderr: r.stderr.clone(),
                    terminal: r.terminal,
                },
                p,
            )
        });
        log_err("Exec", &r.id, res)?;
        Ok(empty())
    }

    fn resize_pty(&self, _: &TtrpcContext, r: api::ResizePtyRequest) -> ttrpc::Result<api::Empty> {
        log_err(
            "ResizePty",
            &r.id,
            self.pod.resize(&r.id, &r.exec_id, r.width, r.height),
        )?;
        Ok(empty())
    }

    fn close_io(&self, _: &TtrpcContext, r: api::CloseIORequest) -> ttrpc::Result<api::Empty> {
        if r.stdin {
            log_err("CloseIO", &r.id, self.pod.close_stdin(&r.id, &r.exec_id))?;
        }
        Ok(empty())
    }

    fn update(&self, _: &TtrpcContext, r: api::UpdateTaskRequest) -> ttrpc::Result<api::Empty> {
        let res = json_any::<LinuxResources>(&r.resources, RESOURCES_TYPE, "resources")
            .and_then(|res| self.pod.update(&r.id, &res));
        log_err("Update", &r.id, res)?;
        Ok(empty())
    }

    fn wait(&self, _: &TtrpcContext, r: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        let exit = log_err("Wait", &r.id, self.pod.wait(&r.id, &r.exec_id))?;
        let mut out = api::WaitResponse::new();
        out.exit_status = exit.status;
        out.exited_at = Some(timestamp(exit.at)).into();
        Ok(out)
    }

    fn stats(&self, _: &TtrpcContext, r: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        let s = log_err("Stats", &r.id, self.pod.stats(&r.id))?;
        let mut out = api::StatsResponse::new();
        out.stats = Some(metrics::to_metrics_any(&s, metrics::host_flavour())).into();
        Ok(out)
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        r: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        let mut out = api::ConnectResponse::new();
        out.shim_pid = std::process::id();
        out.task_pid = self.pod.container(&r.id).map_or(0, |c| c.init.pid());
        out.version = concat!("moat ", env!("CARGO_PKG_VERSION")).to_string();
        Ok(out)
    }

    fn shutdown(&self, _: &TtrpcContext, r: api::ShutdownRequest) -> ttrpc::Result<api::Empty> {
        log_err("Shutdown", &r.id, self.pod.shutdown(r.now))?;
        Ok(empty())
    }
}
