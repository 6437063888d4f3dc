//! `containerd-shim-moat-v2 delete`: containerd's cleanup after a shim that died. Cleans what the
//! container left (see [`crate::cleanup`]) and returns the `DeleteResponse` to print: the init pid,
//! exit status 137 (killed), now.

use std::path::PathBuf;
use std::time::SystemTime;

use containerd_shim_protos::api::DeleteResponse;
use protobuf::Message;

use crate::args::Args;
use crate::backends;
use crate::cleanup;
use crate::config::HandlerConfig;
use crate::error::{Error, Result};
use crate::events::timestamp;

/// Runs `delete`; returns the serialized `DeleteResponse`.
pub fn run(args: &Args) -> Result<Vec<u8>> {
    let bundle: PathBuf = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(|e| Error::io("finding the bundle (cwd)", e))?,
    };
    // The dead shim's socket: removed unless a live shim still answers on it.
    if let Ok(addr) = crate::address::read_address_file(&bundle)
        && !crate::address::can_connect(&addr)
        && let Err(e) = crate::address::remove_socket(&addr)
    {
        tracing::warn!("{e}");
    }
    let state = crate::state::ShimState::read(&bundle).ok().flatten();
    let pid = cleanup::cleanup_bundle(&bundle, &args.id)?;
    // Then whatever the backend keeps of its own.
    if let Some(s) = state {
        let config = match &s.config_path {
            Some(p) => HandlerConfig::load(p).ok(),
            None => Some(HandlerConfig::default_ns()),
        };
        let root = backends::state_root(&args.address, &args.namespace);
        match config.map(|c| backends::open(&c, root.clone(), &args.id)) {
            Some(Ok(b)) => {
                if let Err(e) = b.cleanup_orphan(&args.id, &bundle) {
                    tracing::warn!("backend cleanup of {}: {e}", args.id);
                }
            }
            Some(Err(e)) => tracing::warn!("backend cleanup of {}: {e}", args.id),
            None => tracing::warn!(
                "handler config of {} is gone: backend state not cleaned",
                args.id
            ),
        }
        backends::remove_state_root(&root);
    }
    let mut r = DeleteResponse::new();
    r.pid = pid;
    r.exit_status = 128 + libc::SIGKILL as u32;
    r.exited_at = Some(timestamp(SystemTime::now())).into();
    r.write_to_bytes()
        .map_err(|e| Error::InvalidArgument(format!("encoding DeleteResponse: {e}")))
}
