//! `moat-agent`: PID 1 of moat's microVM guest.
//!
//! The guest kernel starts it as `/init` from the initramfs `moat_artifacts::guest` builds. It
//! leaves the initramfs for a tmpfs root (so containers can `pivot_root`), mounts proc, sys, dev,
//! devpts, tmpfs (`/run`, `/tmp`, `/dev/shm`) and cgroup2 with the memory, pids and cpu controllers,
//! sets hostname and clock from the kernel command line, reports readiness (console line and
//! boot-timer port, see `moat_abi`), reaps every orphan, and powers the VM off on request.
//!
//! The logic lives in this library, behind the [`sys::Sys`] trait, so that it is unit-tested as an
//! ordinary process; the binary only calls [`pid1::run`]. The vsock RPC server ([`server`], the
//! guest side of `moat-agent-proto`) plugs in through [`pid1::Services`] ([`services`]).

pub mod cmdline;
pub mod init;
pub mod log;
pub mod pid1;
pub mod power;
pub mod server;
pub mod services;
pub mod sys;

#[cfg(test)]
mod fake;

use std::sync::{Mutex, MutexGuard};

/// Held while a container process is being started and registered, and by PID 1 around reaping.
///
/// `moat-sandbox` forks an intermediate child inside `Container::create` and `Container::exec`
/// and reaps it itself with `waitpid(pid)`; PID 1's `waitpid(-1)` must not take that status
/// first. And a container process may exit at once: its status must find it registered. So the
/// server holds this from before the fork until the new pid is in its registry, and PID 1 reaps
/// only while holding it.
pub static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Takes [`SPAWN_LOCK`] (a panic elsewhere while holding it does not stop reaping).
pub fn spawn_lock() -> MutexGuard<'static, ()> {
    SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
