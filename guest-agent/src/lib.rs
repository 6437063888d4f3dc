//! `moat-agent`: PID 1 of moat's microVM guest.
//!
//! The guest kernel starts it as `/init` from the initramfs `moat_artifacts::guest` builds. It
//! leaves the initramfs for a tmpfs root (so containers can `pivot_root`), mounts proc, sys, dev,
//! devpts, tmpfs (`/run`, `/tmp`, `/dev/shm`) and cgroup2 with the memory, pids and cpu controllers,
//! sets hostname and clock from the kernel command line, reports readiness (console line and
//! boot-timer port, see `moat_abi`), reaps every orphan, and powers the VM off on request.
//!
//! The logic lives in this library, behind the [`sys::Sys`] trait, so that it is unit-tested as an
//! ordinary process; the binary only calls [`pid1::run`]. The vsock RPC server (issue 17) plugs in
//! through [`pid1::Services`].

pub mod cmdline;
pub mod init;
pub mod log;
pub mod pid1;
pub mod power;
pub mod sys;

#[cfg(test)]
mod fake;
