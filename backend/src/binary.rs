//! Finding moat's helper binaries (`moat-trace`, `moat-vmm`): an environment override, then next to
//! the running executable (or one directory up, for test executables under `target/*/deps`), then
//! `PATH`. Installed and development layouts both work without configuration.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Finds `name`, honouring `$env` first. The error lists every place looked at and what to do.
pub fn find(name: &str, env: &str, build_hint: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok();
    let mut tried = Vec::new();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::Unavailable(format!(
        "`{name}` is not installed: looked at {} and on PATH; {build_hint} or set {env}",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}
