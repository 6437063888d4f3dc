//! A small CRI client for moat's tests: kubelet and crictl are not available here, so the tests
//! drive containerd's CRI plugin with this.
//!
//! The API is generated from the `runtime.v1` `api.proto` containerd 1.6 serves (vendored in
//! `proto/`, see its README). [`Cri`] wraps the generated gRPC client in blocking calls over a unix
//! socket, one small tokio runtime per client; the generated messages are in [`v1`]. Images are
//! never pulled: tests import them offline, and [`Cri::image_present`] checks they are there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated `runtime.v1` messages and clients.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// A CRI client error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached.
    #[error("connecting to the CRI socket {path}: {message}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The runtime answered with an error.
    #[error("CRI {call} failed: {status}")]
    Rpc {
        /// The call.
        call: &'static str,
        /// containerd's status.
        status: Box<tonic::Status>,
    },
    /// The client's runtime could not start.
    #[error("starting the CRI client's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl Error {
    /// The gRPC code, for an RPC error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// A `Result` with the CRI [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What [`Cri::exec_sync`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i32,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

/// A blocking CRI client on a unix socket.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Rpc {
        call,
        status: Box::new(status),
    }
}

impl Cri {
    /// Connects to containerd's CRI socket (its main gRPC socket).
    pub fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path = socket.to_path_buf();
        let channel = rt.block_on(async {
            let p = path.clone();
            // The URI is required by tonic but unused: the connector dials the socket.
            Endpoint::try_from("http://[::1]:0")
                .map_err(|e| e.to_string())?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let p = p.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(p).await?,
                        ))
                    }
                }))
                .await
                .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
        });
        let channel = channel.map_err(|message| Error::Connect { path, message })?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&mut self) -> Result<v1::VersionResponse> {
        let req = v1::VersionRequest {
            version: "v1".into(),
        };
        let r = self
            .rt
            .block_on(self.runtime.version(req))
            .map_err(rpc("Version"))?;
        Ok(r.into_inner())
    }

    /// `RunPodSandbox` with a RuntimeClass handler (`""`: the default runtime). Returns the pod id.
    pub fn run_pod_sandbox(
        &mut self,
        config: v1::PodSandboxConfig,
        handler: &str,
    ) -> Result<String> {
        let req = v1::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        };
        let r = self
            .rt
            .block_on(self.runtime.run_pod_sandbox(req))
            .map_err(rpc("RunPodSandbox"))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    /// `StopPodSandbox`.
    pub fn stop_pod_sandbox(&mut self, pod: &str) -> Result<()> {
        let req = v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(req))
            .map_err(rpc("StopPodSandbox"))?;
        Ok(())
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod_sandbox(&mut self, pod: &str) -> Result<()> {
        let req = v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        self.rt
            .block_on(self.runtime.remove_pod_sandbox(req))
            .map_err(rpc("RemovePodSandbox"))?;
        Ok(())
    }

    /// `PodSandboxStatus`.
    pub fn pod_sandbox_status(&mut self, pod: &str) -> Result<v1::PodSandboxStatus> {
        let req = v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        };
        let r = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(req))
            .map_err(rpc("PodSandboxStatus"))?;
        r.into_inner().status.ok_or_else(|| Error::Rpc {
            call: "PodSandboxStatus",
            status: Box::new(tonic::Status::internal("no status in the reply")),
        })
    }

    /// `ListPodSandbox` (all pods).
    pub fn list_pod_sandbox(&mut self) -> Result<Vec<v1::PodSandbox>> {
        let req = v1::ListPodSandboxRequest { filter: None };
        let r = self
            .rt
            .block_on(self.runtime.list_pod_sandbox(req))
            .map_err(rpc("ListPodSandbox"))?;
        Ok(r.into_inner().items)
    }

    /// `CreateContainer` in `pod`; `pod_config` is the config the pod was started with.
    pub fn create_container(
        &mut self,
        pod: &str,
        config: v1::ContainerConfig,
        pod_config: v1::PodSandboxConfig,
    ) -> Result<String> {
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config),
        };
        let r = self
            .rt
            .block_on(self.runtime.create_container(req))
            .map_err(rpc("CreateContainer"))?;
        Ok(r.into_inner().container_id)
    }

    /// `StartContainer`.
    pub fn start_container(&mut self, id: &str) -> Result<()> {
        let req = v1::StartContainerRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.start_container(req))
            .map_err(rpc("StartContainer"))?;
        Ok(())
    }

    /// `StopContainer` with a grace period in seconds.
    pub fn stop_container(&mut self, id: &str, timeout_s: i64) -> Result<()> {
        let req = v1::StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_s,
        };
        self.rt
            .block_on(self.runtime.stop_container(req))
            .map_err(rpc("StopContainer"))?;
        Ok(())
    }

    /// `RemoveContainer`.
    pub fn remove_container(&mut self, id: &str) -> Result<()> {
        let req = v1::RemoveContainerRequest {
            container_id: id.into(),
        };
        self.rt
            .block_on(self.runtime.remove_container(req))
            .map_err(rpc("RemoveContainer"))?;
        Ok(())
    }

    /// `ContainerStatus`.
    pub fn container_status(&mut self, id: &str) -> Result<v1::ContainerStatus> {
        let req = v1::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let r = self
            .rt
            .block_on(self.runtime.container_status(req))
            .map_err(rpc("ContainerStatus"))?;
        r.into_inner().status.ok_or_else(|| Error::Rpc {
            call: "ContainerStatus",
            status: Box::new(tonic::Status::internal("no status in the reply")),
        })
    }

    /// `ListContainers` (all, or those of one pod).
    pub fn list_containers(&mut self, pod: Option<&str>) -> Result<Vec<v1::Container>> {
        let filter = pod.map(|p| v1::ContainerFilter {
            pod_sandbox_id: p.into(),
            ..Default::default()
        });
        let req = v1::ListContainersRequest { filter };
        let r = self
            .rt
            .block_on(self.runtime.list_containers(req))
            .map_err(rpc("ListContainers"))?;
        Ok(r.into_inner().containers)
    }

    /// `ExecSync`: runs `cmd` in the container and returns its output (`timeout`: 0 = none).
    pub fn exec_sync(&mut self, id: &str, cmd: &[&str], timeout: Duration) -> Result<ExecOutput> {
        let req = v1::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout.as_secs() as i64,
        };
        let r = self
            .rt
            .block_on(self.runtime.exec_sync(req))
            .map_err(rpc("ExecSync"))?;
        let r = r.into_inner();
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    /// `ContainerStats`.
    pub fn container_stats(&mut self, id: &str) -> Result<v1::ContainerStats> {
        let req = v1::ContainerStatsRequest {
            container_id: id.into(),
        };
        let r = self
            .rt
            .block_on(self.runtime.container_stats(req))
            .map_err(rpc("ContainerStats"))?;
        r.into_inner().stats.ok_or_else(|| Error::Rpc {
            call: "ContainerStats",
            status: Box::new(tonic::Status::internal("no stats in the reply")),
        })
    }

    /// True if the image (by reference, e.g. `docker.io/library/busybox:latest`) is present.
    pub fn image_present(&mut self, image: &str) -> Result<bool> {
        let req = v1::ImageStatusRequest {
            image: Some(v1::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        let r = self
            .rt
            .block_on(self.images.image_status(req))
            .map_err(rpc("ImageStatus"))?;
        Ok(r.into_inner().image.is_some())
    }
}

/// A pod config with the fields containerd requires (name, uid, namespace), on the host's network.
/// Like kubelet for a host-network pod it sets no hostname: the pod has no UTS namespace of its own.
pub fn pod_config(
    name: &str,
    uid: &str,
    namespace: &str,
    annotations: HashMap<String, String>,
) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: String::new(),
        annotations,
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `command` from `image`.
/// What kubelet masks in every unprivileged container (`securitycontext.ConvertToRuntimeMaskedPaths`
/// with the default proc mount): it sends these, containerd's CRI plugin does not add them.
pub const KUBELET_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// What kubelet makes read-only in every unprivileged container.
pub const KUBELET_READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A container running `command` from `image`, with the security context kubelet gives an
/// unprivileged container (masked and read-only paths).
pub fn container_config(name: &str, image: &str, command: &[&str]) -> v1::ContainerConfig {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    v1::ContainerConfig {
        linux: Some(v1::LinuxContainerConfig {
            security_context: Some(v1::LinuxContainerSecurityContext {
                masked_paths: strings(KUBELET_MASKED_PATHS),
                readonly_paths: strings(KUBELET_READONLY_PATHS),
                ..Default::default()
            }),
            ..Default::default()
        }),
        metadata: Some(v1::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connecting_to_a_missing_socket_says_where() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("none.sock");
        let e = Cri::connect(&p).err().unwrap().to_string();
        assert!(e.contains("none.sock"), "{e}");
    }

    #[test]
    fn configs_carry_what_containerd_requires() {
        let p = pod_config("web", "uid-1", "default", HashMap::new());
        let m = p.metadata.unwrap();
        assert_eq!(
            (m.name.as_str(), m.uid.as_str(), m.namespace.as_str()),
            ("web", "uid-1", "default")
        );
        let ns = p
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, v1::NamespaceMode::Node as i32);
        let c = container_config("app", "docker.io/library/busybox:latest", &["sleep", "1"]);
        assert_eq!(c.command, vec!["sleep", "1"]);
        assert_eq!(c.image.unwrap().image, "docker.io/library/busybox:latest");
    }
}
