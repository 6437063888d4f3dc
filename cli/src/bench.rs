//! `moat bench`: the options checked and handed to `moat-bench`, and what was written reported.

use anyhow::Context;

use crate::args::BenchArgs;

/// Runs the comparison; exit code 0 when the outputs were written (a backend that could not be
/// measured is a row in them, not a failure of the run).
pub fn run(a: &BenchArgs) -> anyhow::Result<i32> {
    let backends = moat_bench::Options::parse_backends(&a.backends)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("moat bench runs containers and VMs: run it as root");
    }
    let moat = std::env::current_exe().context("finding the moat binary")?;
    let written = moat_bench::run(moat_bench::Options {
        backends,
        quick: a.quick,
        out: a.out.clone(),
        moat,
        inside_rig: a.inside_rig,
        runs: a.runs,
    })?;
    if a.inside_rig {
        return Ok(0);
    }
    let md = std::fs::read_to_string(&written.markdown)
        .with_context(|| format!("reading {}", written.markdown.display()))?;
    println!("{md}");
    println!(
        "wrote {}, {} and {} plots in {}",
        written.json.display(),
        written.markdown.display(),
        written.plots.len(),
        a.out.display()
    );
    Ok(0)
}
