//! Host facts that several parts of moat must judge the same way.
//!
//! `moat check`, `moat-vmm` (which refuses to boot Linux on a host where it cannot run) and the test
//! helper that decides whether VM tests run directly or in the KVM rig all call [`kvm::probe`], so
//! they can never disagree about what this host's `/dev/kvm` is.

pub mod kvm;
