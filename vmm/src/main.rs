//! `moat-vmm`: parses the command line and runs the VM; the exit status says how it ended.

use std::time::Instant;

use clap::Parser;
use moat_vmm::config::cli::Args;
use moat_vmm::vstate::control::EXIT_ERROR;

fn main() {
    let started = Instant::now();
    let args = Args::parse();
    let filter = args
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .init();
    let code = match args
        .to_config()
        .map_err(moat_vmm::vmm::Error::from)
        .and_then(|c| moat_vmm::vmm::run(c, started))
    {
        Ok(reason) => {
            if reason.code() == 0 {
                tracing::info!("{reason}");
            } else {
                eprintln!("moat-vmm: {reason}");
            }
            reason.code()
        }
        Err(e) => {
            eprintln!("moat-vmm: {e}");
            EXIT_ERROR
        }
    };
    std::process::exit(code);
}
