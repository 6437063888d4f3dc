//! `moat bench`: an honest side-by-side comparison of runc, crun, moat's three walls and a QEMU
//! microvm reference on one machine, in one run. Every number is measured here (median, p10, p90
//! and n of interleaved repetitions); every isolation verdict is what a probe observed inside the
//! sandbox. The output is `results.json` (schema [`results::SCHEMA`]), `results.md` and SVG plots.
//!
//! Where `/dev/kvm` cannot run a Linux guest (a PVM host), the `vm` and `qemu` rows are measured by
//! a second `moat bench` inside the KVM rig ([`rig`]) and labelled `rig`: compare them only with
//! each other.

pub mod exec;
pub mod fixture;
pub mod isolation;
pub mod machine;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod report;
pub mod results;
pub mod rig;
pub mod run;
pub mod stats;
pub mod walls;

use std::path::PathBuf;

pub use plan::{Options, Plan};
pub use results::Results;
pub use run::run;

/// Why a run could not go on (a backend that fails is not one: it becomes a row saying why).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Preparing the run (images, the probe) failed.
    #[error("{0}")]
    Setup(String),
    /// Writing the plots failed.
    #[error(transparent)]
    Plot(#[from] report::plot::Error),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The files a run wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// `results.json`.
    pub json: PathBuf,
    /// `results.md`.
    pub markdown: PathBuf,
    /// The SVG plots.
    pub plots: Vec<PathBuf>,
}
