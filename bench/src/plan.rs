//! What a run measures: the options `moat bench` was given, turned into repetition counts and
//! sizes (`--quick` or full), checked before anything runs.

use std::path::PathBuf;

use crate::walls::Kind;
use crate::{Error, Result};

/// `moat bench`'s options.
#[derive(Clone, Debug)]
pub struct Options {
    /// The backends to compare (default: all).
    pub backends: Vec<Kind>,
    /// Fewer repetitions and smaller sizes: minutes, not tens of minutes.
    pub quick: bool,
    /// Where `results.json`, `results.md` and the plots go (created if missing).
    pub out: PathBuf,
    /// The `moat` binary (the `ns`, `trace` and `vm` rows run `moat run`).
    pub moat: PathBuf,
    /// This run is the rig's half of another run: measure here, write `results.json` only.
    pub inside_rig: bool,
    /// Override every repetition count.
    pub runs: Option<usize>,
}

impl Options {
    /// Parses `--backends a,b,c` (unknown names are an error that lists the known ones).
    pub fn parse_backends(list: &str) -> Result<Vec<Kind>> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = Kind::parse(name).ok_or_else(|| {
                Error::Usage(format!(
                    "--backends: unknown backend {name:?}; choose from {}",
                    crate::walls::names(&Kind::ALL)
                ))
            })?;
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        if out.is_empty() {
            return Err(Error::Usage(
                "--backends: name at least one backend (runc,crun,ns,trace,vm,qemu)".into(),
            ));
        }
        Ok(out)
    }
}

/// Repetitions and sizes of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `start.oci` repetitions per backend.
    pub start_runs: usize,
    /// Syscall-cost repetitions (each a whole container run of N calls).
    pub syscall_runs: usize,
    /// getpid calls per run.
    pub getpid_calls: u64,
    /// openat+close calls per run (untrapped walls).
    pub open_calls: u64,
    /// openat+close calls per run where every call stops (trace).
    pub open_calls_trapped: u64,
    /// File I/O repetitions.
    pub io_runs: usize,
    /// File I/O size, MiB.
    pub io_mib: u64,
    /// Idle-memory repetitions.
    pub memory_runs: usize,
    /// Density: the K values.
    pub density: Vec<usize>,
    /// VM boot repetitions.
    pub boot_runs: usize,
}

impl Plan {
    /// The plan for `quick` or a full run, where `rig` runs are cut down further (a guest runs
    /// 16-20x slower there); `runs` overrides every repetition count.
    pub fn new(quick: bool, rig: bool, runs: Option<usize>) -> Plan {
        let mut p = match (quick, rig) {
            (true, false) => Plan {
                start_runs: 10,
                syscall_runs: 3,
                getpid_calls: 500_000,
                open_calls: 50_000,
                open_calls_trapped: 3_000,
                io_runs: 2,
                io_mib: 64,
                memory_runs: 2,
                density: vec![5, 10],
                boot_runs: 3,
            },
            (true, true) => Plan {
                start_runs: 3,
                syscall_runs: 1,
                getpid_calls: 200_000,
                open_calls: 20_000,
                open_calls_trapped: 3_000,
                io_runs: 1,
                io_mib: 64,
                memory_runs: 1,
                density: vec![5],
                boot_runs: 3,
            },
            (false, false) => Plan {
                start_runs: 30,
                syscall_runs: 5,
                getpid_calls: 2_000_000,
                open_calls: 100_000,
                open_calls_trapped: 10_000,
                io_runs: 3,
                io_mib: 256,
                memory_runs: 3,
                density: vec![10, 25, 50],
                boot_runs: 10,
            },
            (false, true) => Plan {
                start_runs: 5,
                syscall_runs: 3,
                getpid_calls: 1_000_000,
                open_calls: 50_000,
                open_calls_trapped: 5_000,
                io_runs: 2,
                io_mib: 256,
                memory_runs: 2,
                density: vec![10, 25, 50],
                boot_runs: 5,
            },
        };
        if let Some(n) = runs.filter(|n| *n > 0) {
            p.start_runs = n;
            p.syscall_runs = n;
            p.io_runs = n;
            p.memory_runs = n;
            p.boot_runs = n;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_reject_unknown_names() {
        let b = Options::parse_backends("ns, trace,ns").expect("parses");
        assert_eq!(b, vec![Kind::Ns, Kind::Trace]);
        let e = Options::parse_backends("ns,gvisor").expect_err("unknown");
        assert!(e.to_string().contains("gvisor") && e.to_string().contains("runc,crun"));
        assert!(Options::parse_backends(",").is_err());
    }

    #[test]
    fn quick_is_smaller_and_runs_overrides() {
        let (q, f) = (Plan::new(true, false, None), Plan::new(false, false, None));
        assert!(q.start_runs < f.start_runs && q.io_mib < f.io_mib);
        assert_eq!(f.density, vec![10, 25, 50]);
        assert_eq!(Plan::new(true, true, Some(1)).start_runs, 1);
    }
}
