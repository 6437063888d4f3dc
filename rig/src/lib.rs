//! The KVM rig: a real KVM (Debian's `kvm_amd`) inside a QEMU TCG machine, where moat's VM tests run.
//!
//! Hosts whose `/dev/kvm` is a paravirtual stand-in (PVM), or that have none, cannot run a Linux guest
//! with KVM. QEMU's software emulator emulates AMD SVM with nested paging, so Debian's stock kernel
//! booted under it ("L1") loads the real `kvm_amd`, and that KVM runs guests ("L2") correctly. The rig
//! runs one command inside such an L1, as root, with the host's filesystem visible read-only, a writable
//! scratch directory, and the command's output and exit status passed back.
//!
//! - [`run`]: boot L1, run a command, relay its output and status ([`run::run`]).
//! - [`harness`]: the one decision where VM tests run, and re-running a test inside the rig.
//! - [`kernel`], [`modules`], [`initrd`]: L1's kernel, modules and initramfs, fetched and built once.
//! - [`qemu`], [`script`]: the QEMU command line and the files that tell L1's init what to do.
//!
//! Timings inside the rig are not performance: guest code runs 16-20x slower than native there.

pub mod harness;
pub mod initrd;
pub mod kernel;
pub mod modules;
pub mod qemu;
pub mod run;
pub mod script;

pub use run::{Error, Outcome, RunConfig, Streams, Timings, run};
