//! Builds (or finds in the cache) everything a moat microVM guest boots from: the kernel, the static
//! `moat-agent` and the initramfs. Prints where they are.
//!
//! `cargo run --release -p moat-artifacts --example build-guest [-- --status] [-- --initramfs-only]`
//! - `--status`: build nothing, say what is built and where (what `moat check` reports);
//! - `--initramfs-only`: skip the kernel (minutes on first use).

use std::process::ExitCode;
use std::time::Instant;

use moat_artifacts::{guest, kernel};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for a in &args {
        if !matches!(a.as_str(), "--status" | "--initramfs-only") {
            eprintln!(
                "build-guest: unknown argument {a:?} (expected --status or --initramfs-only)"
            );
            return ExitCode::from(2);
        }
    }
    if args.iter().any(|a| a == "--status") {
        let k = kernel::status();
        let g = guest::status();
        println!("kernel: {k:?}");
        println!("initramfs: {g:?}");
        let built = matches!(k, kernel::Status::Built(_)) && matches!(g, guest::Status::Built(_));
        return if built {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if !args.iter().any(|a| a == "--initramfs-only") {
        let t = Instant::now();
        match kernel::build() {
            Ok(k) => {
                println!("kernel {} ({:.1?})", k.version, t.elapsed());
                println!("  vmlinux  {}", k.vmlinux.display());
                println!("  bzImage  {}", k.bz_image.display());
            }
            Err(e) => {
                eprintln!("build-guest: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let t = Instant::now();
    match guest::initramfs() {
        Ok(g) => {
            println!("initramfs ({:.1?})", t.elapsed());
            println!("  initrd   {}", g.initramfs.display());
            println!("  agent    {}", g.agent.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("build-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
