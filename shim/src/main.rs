//! `containerd-shim-moat-v2`: see the library (`moat_shim`) for everything.

fn main() {
    if let Err(e) = moat_shim::run(std::env::args().skip(1)) {
        eprintln!("containerd-shim-moat-v2: {e}");
        std::process::exit(1);
    }
}
