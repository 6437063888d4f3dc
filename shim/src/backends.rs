//! From a handler config to a running [`Backend`]: the one place that names the walls. Everything
//! else in the shim talks to the trait only.

use std::sync::Arc;

use moat_backend::{Backend, BackendKind};

use crate::config::HandlerConfig;
use crate::error::{Error, Result};

/// Opens the backend a (narrowed) handler config selects, for one pod.
pub fn open(config: &HandlerConfig) -> Result<Arc<dyn Backend>> {
    match config.backend {
        kind @ (BackendKind::Ns | BackendKind::Vm | BackendKind::Trace) => {
            Err(Error::Backend(moat_backend::Error::Unavailable(format!(
                "the {kind} backend is not built into this containerd-shim-moat-v2 yet"
            ))))
        }
    }
}
