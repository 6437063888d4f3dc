//! moat-vmm: moat's KVM microVM monitor.
//!
//! It boots moat's guest kernel and initramfs to `moat-agent` and gives the host two ways in:
//! virtio-vsock through a hybrid Unix socket (the agent's RPC) and virtio-blk (container rootfs
//! images). It is built on the rust-vmm crates and follows Firecracker's shape: one thread per
//! vCPU, one event-loop thread for devices, one API thread, each under its own seccomp filter.
//!
//! The library holds everything; the `moat-vmm` binary parses flags and calls [`vmm::run`].

pub mod api;
pub mod arch;
pub mod config;
pub mod devices;
pub mod event_loop;
pub mod jail;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod seccomp;
pub mod vmm;
pub mod vstate;
