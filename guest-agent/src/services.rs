//! What the agent runs besides its PID-1 duties: the RPC server. This is the [`Services`]
//! implementation the binary hands to [`crate::pid1::run`]: it starts the vsock listener once the
//! guest is ready and routes every reaped child's status to the server's registry.

use std::sync::Arc;

use moat_abi::AGENT_VSOCK_PORT;

use crate::cmdline::Config;
use crate::pid1::{self, Services};
use crate::server::{Options, Paths, Server};
use crate::sys::WaitStatus;

/// The agent's services: the RPC server on vsock.
#[derive(Debug)]
pub struct Agent {
    server: Arc<Server>,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent {
    /// The server with the guest's paths; a shutdown request powers the VM off.
    pub fn new() -> Self {
        let server = Server::new(Options {
            paths: Paths::default(),
            on_shutdown: Box::new(|| {
                if let Err(e) = pid1::request_power_off() {
                    tracing::error!("cannot ask PID 1 to power off: {e}");
                }
            }),
        });
        Self {
            server: Arc::new(server),
        }
    }
}

impl Services for Agent {
    fn after_ready(&mut self, _cfg: &Config) {
        match self.server.listen(AGENT_VSOCK_PORT) {
            Ok(_) => tracing::info!("listening on vsock port {AGENT_VSOCK_PORT}"),
            Err(e) => tracing::error!(
                "cannot listen on vsock port {AGENT_VSOCK_PORT}: {e}; the host cannot reach this \
                 guest (does the VM have a virtio-vsock device?)"
            ),
        }
    }

    fn child_exited(&mut self, pid: i32, status: WaitStatus) {
        if !self.server.child_exited(pid, status) {
            tracing::debug!("process {pid} ended: {status:?}");
        }
    }
}
