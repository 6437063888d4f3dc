//! KVM state: the VM, its vCPUs and the shared control block that ends or pauses them.

pub mod control;
pub mod kvm;
pub mod vcpu;
pub mod vm;
