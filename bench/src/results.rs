//! What a `moat bench` run found, as `results.json` holds it (schema `moat-bench/1`, documented in
//! `docs/benchmarks.md`). The Markdown tables and the plots are drawn from this alone, so a saved
//! `results.json` can be re-rendered.

use serde::{Deserialize, Serialize};

use crate::stats::Stats;

/// The schema tag written into every `results.json`.
pub const SCHEMA: &str = "moat-bench/1";

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// When the run started (seconds since the Unix epoch).
    pub started_unix: u64,
    /// How long the run took, in seconds.
    pub wall_s: f64,
    /// `--quick`: fewer repetitions and smaller sizes.
    pub quick: bool,
    /// The machine it ran on (and, for rig rows, the rig's L1 machine).
    pub machine: Machine,
    /// Every backend asked for: whether it ran, where, and why not.
    pub backends: Vec<BackendInfo>,
    /// One entry per (metric, backend) that produced samples.
    pub metrics: Vec<Metric>,
    /// Measurements that were attempted and failed, with the reason.
    pub failures: Vec<Failure>,
    /// The isolation probe matrix: one entry per (probe, backend).
    pub isolation: Vec<ProbeResult>,
}

/// Facts about the machine, recorded so that numbers are never read without their context.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Host kernel release.
    pub kernel: String,
    /// `/dev/kvm`: `hardware`, `pvm` or `none` (with the probe's reason).
    pub kvm: String,
    /// cgroups: `v1`, `v2` or `hybrid`.
    pub cgroups: String,
    /// The rig's L1 machine, when rig rows were measured (its kernel and CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rig: Option<RigMachine>,
}

/// The KVM rig's L1 machine, where `vm` and `qemu` run on hosts without hardware KVM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RigMachine {
    /// L1 kernel release.
    pub kernel: String,
    /// L1 CPU model (QEMU's emulated CPU).
    pub cpu: String,
    /// L1 vCPUs.
    pub cpus: usize,
}

/// Where a backend's rows were measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// On this machine.
    #[default]
    Host,
    /// Inside the KVM rig (QEMU TCG with emulated SVM): compare only with other rig rows.
    Rig,
}

impl Place {
    /// `host` or `rig`.
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Host => "host",
            Place::Rig => "rig",
        }
    }
}

/// One backend of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// `runc`, `crun`, `ns`, `trace`, `vm` or `qemu`.
    pub name: String,
    /// Its version (`runc --version`'s first line, moat's version, ...).
    pub version: String,
    /// Where its rows were measured.
    pub place: Place,
    /// Whether it ran at all.
    pub usable: bool,
    /// Why it did not run (or, when usable, a note such as "in the KVM rig").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Units of the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// Milliseconds.
    #[serde(rename = "ms")]
    Ms,
    /// Nanoseconds.
    #[serde(rename = "ns")]
    Ns,
    /// Mebibytes.
    #[serde(rename = "MiB")]
    Mib,
    /// Mebibytes per second.
    #[serde(rename = "MiB/s")]
    MibPerS,
}

impl Unit {
    /// The unit as the tables print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Ns => "ns",
            Unit::Mib => "MiB",
            Unit::MibPerS => "MiB/s",
        }
    }

    /// Whether a larger value is better (throughput) rather than worse (time, memory).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::MibPerS)
    }
}

/// One metric of one backend: its samples and their summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The metric's id, e.g. `start.oci`, `syscall.getpid` (see [`crate::metrics::catalogue`]).
    pub metric: String,
    /// The backend.
    pub backend: String,
    /// Where it was measured.
    pub place: Place,
    /// The unit of every sample.
    pub unit: Unit,
    /// The summary.
    pub stats: Stats,
    /// Every sample, in the order taken.
    pub samples: Vec<f64>,
}

/// A measurement that could not be taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The metric's id.
    pub metric: String,
    /// The backend.
    pub backend: String,
    /// What went wrong (the runtime's own error where there was one).
    pub why: String,
}

/// One isolation probe in one backend, as observed inside the sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probe's id (`kernel`, `proc_kcore`, `keyctl`, ...).
    pub probe: String,
    /// The backend.
    pub backend: String,
    /// Where it ran.
    pub place: Place,
    /// Whether the sandbox held: `true` the attempt failed or saw nothing of the host, `false` it
    /// succeeded or saw the host, `None` undecided (a fact was missing).
    pub isolated: Option<bool>,
    /// What actually happened, in a few words (an errno, a kernel release, a count).
    pub observed: String,
}

impl Results {
    /// An empty run record with the schema tag set.
    pub fn new(quick: bool, machine: Machine) -> Results {
        Results {
            schema: SCHEMA.to_string(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            quick,
            machine,
            ..Results::default()
        }
    }

    /// The metric entry for (`metric`, `backend`), if it was measured.
    pub fn metric(&self, metric: &str, backend: &str) -> Option<&Metric> {
        self.metrics
            .iter()
            .find(|m| m.metric == metric && m.backend == backend)
    }

    /// The metric entry for (`metric`, `backend`) measured at `place`.
    pub fn metric_at(&self, metric: &str, backend: &str, place: Place) -> Option<&Metric> {
        self.metrics
            .iter()
            .find(|m| m.metric == metric && m.backend == backend && m.place == place)
    }

    /// Records samples for (`metric`, `backend`), appending to an existing entry.
    pub fn add_samples(
        &mut self,
        metric: &str,
        backend: &str,
        place: Place,
        unit: Unit,
        samples: &[f64],
    ) {
        if let Some(m) = self
            .metrics
            .iter_mut()
            .find(|m| m.metric == metric && m.backend == backend && m.place == place)
        {
            m.samples.extend_from_slice(samples);
            if let Some(s) = Stats::of(&m.samples) {
                m.stats = s;
            }
            return;
        }
        if let Some(stats) = Stats::of(samples) {
            self.metrics.push(Metric {
                metric: metric.to_string(),
                backend: backend.to_string(),
                place,
                unit,
                stats,
                samples: samples.to_vec(),
            });
        }
    }

    /// Records a failed measurement (once per metric and backend: the first reason is kept).
    pub fn fail(&mut self, metric: &str, backend: &str, why: impl Into<String>) {
        if self
            .failures
            .iter()
            .any(|f| f.metric == metric && f.backend == backend)
        {
            return;
        }
        self.failures.push(Failure {
            metric: metric.to_string(),
            backend: backend.to_string(),
            why: why.into(),
        });
    }

    /// Takes in the rows another run measured (the rig's part of this run).
    pub fn merge(&mut self, other: Results) {
        for b in other.backends {
            self.backends.retain(|x| x.name != b.name);
            self.backends.push(b);
        }
        self.metrics.extend(other.metrics);
        self.failures.extend(other.failures);
        self.isolation.extend(other.isolation);
    }
}
