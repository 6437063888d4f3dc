//! virtio-vsock in user space, with a Firecracker-style hybrid Unix socket on the host side: no
//! host needs `vhost-vsock`. The agent's RPC runs over it.

pub mod connection;
pub mod device;
pub mod muxer;
pub mod packet;
pub mod txbuf;

pub use device::Vsock;
pub use muxer::Muxer;
