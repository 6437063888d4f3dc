//! containerd-shim-moat-v2: containerd's runtime v2 shim for moat.
//!
//! containerd 1.6/1.7 start one shim per pod (`start`), talk to it over ttrpc with the Task API v2
//! (`containerd.task.v2.Task`), and run `delete` when a shim died. The shim runs each pod on the
//! backend (ns, vm, trace) its RuntimeClass handler's config names, and talks to backends only
//! through the `moat-backend` trait.
//!
//! The binary is a thin `main` over [`run`]; everything is in these modules.

pub mod address;
pub mod args;
pub mod backends;
pub mod cleanup;
pub mod config;
pub mod container;
pub mod delete;
pub mod error;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod mount;
pub mod options;
pub mod pod;
pub mod process;
pub mod pump;
pub mod serve;
pub mod start;
pub mod state;
pub mod stdio;
pub mod task;

use std::io::Write;

pub use error::{Error, Result};

/// Runs the shim with the arguments after the program name. Writes what containerd reads to stdout.
pub fn run<I, S>(argv: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args = args::Args::parse(argv)?;
    match args.action {
        args::Action::Version => {
            println!(
                "containerd-shim-moat-v2:\n  Version:  {}\n  Task API: containerd.task.v2",
                env!("CARGO_PKG_VERSION")
            );
        }
        args::Action::Start => {
            let address = start::run(&args)?;
            let mut out = std::io::stdout();
            out.write_all(address.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("printing the address", e))?;
        }
        args::Action::Delete => {
            logging::init_stderr(args.debug);
            let bytes = delete::run(&args)?;
            let mut out = std::io::stdout();
            out.write_all(&bytes)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("printing the DeleteResponse", e))?;
        }
        args::Action::Serve => serve::run(&args)?,
    }
    Ok(())
}
