//! Emulated devices: the bus that dispatches guest accesses, legacy PC devices, and virtio.

pub mod bus;
pub mod legacy;
pub mod virtio;
