//! Builds (or finds in the cache) a read-only image of a root filesystem directory, for a guest to
//! mount from virtio-blk, and prints its path, size and how long it took.
//!
//! `cargo run --release -p moat-artifacts --example rootfs-image -- DIR [erofs|ext4]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use moat_artifacts::rootfs_image::{self, DEFAULT_FORMAT, Format};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: rootfs-image DIR [erofs|ext4]");
        return ExitCode::from(2);
    };
    let format = match args.next().as_deref() {
        None => DEFAULT_FORMAT,
        Some("erofs") => Format::Erofs,
        Some("ext4") => Format::Ext4,
        Some(other) => {
            eprintln!("rootfs-image: unknown format {other:?} (erofs or ext4)");
            return ExitCode::from(2);
        }
    };
    let t = Instant::now();
    match rootfs_image::build(&dir, format) {
        Ok(img) => {
            println!(
                "{} {} bytes {:.3} s",
                img.path.display(),
                img.size,
                t.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rootfs-image: {e}");
            ExitCode::FAILURE
        }
    }
}
