//! Everything moat builds before it can run something, built reproducibly and cached by content hash.
//!
//! Each artifact kind has its own module; they all store their output through [`cache`], which keys an
//! entry by a hash of every input, verifies it on use, and publishes it atomically.

pub mod cache;
pub mod guest;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod reference_boot;
pub mod rootfs_image;
pub mod static_bin;
