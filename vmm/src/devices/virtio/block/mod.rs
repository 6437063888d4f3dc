//! virtio-blk: container rootfs images for the guest.

pub mod device;
pub mod request;

pub use device::Block;
