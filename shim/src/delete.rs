//! `containerd-shim-moat-v2 delete`: containerd's cleanup after a shim that died. Cleans what the
//! container left (see [`crate::cleanup`]) and returns the `DeleteResponse` to print: the init pid,
//! exit status 137 (killed), now.

use std::path::PathBuf;
use std::time::SystemTime;

use containerd_shim_protos::api::DeleteResponse;
use protobuf::Message;

use crate::args::Args;
use crate::cleanup;
use crate::error::{Error, Result};
use crate::events::timestamp;

/// Runs `delete`; returns the serialized `DeleteResponse`.
pub fn run(args: &Args) -> Result<Vec<u8>> {
    let bundle: PathBuf = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(|e| Error::io("finding the bundle (cwd)", e))?,
    };
    let pid = cleanup::cleanup_bundle(&bundle, &args.id)?;
    let mut r = DeleteResponse::new();
    r.pid = pid;
    r.exit_status = 128 + libc::SIGKILL as u32;
    r.exited_at = Some(timestamp(SystemTime::now())).into();
    r.write_to_bytes()
        .map_err(|e| Error::InvalidArgument(format!("encoding DeleteResponse: {e}")))
}
