//! Every metric `moat bench` knows: its id (the key in `results.json`), what it measures, its unit
//! and the section of the report it belongs to.

use crate::results::Unit;

/// The report section a metric is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Start latency.
    Start,
    /// Per-call syscall cost.
    Syscall,
    /// File I/O throughput.
    Io,
    /// Memory per idle sandbox.
    Memory,
    /// Many sandboxes at once.
    Density,
    /// VM boot.
    Boot,
}

impl Section {
    /// The section's heading.
    pub fn title(self) -> &'static str {
        match self {
            Section::Start => "Start latency",
            Section::Syscall => "Syscall cost inside the sandbox",
            Section::Io => "File I/O inside the sandbox",
            Section::Memory => "Host memory per idle sandbox",
            Section::Density => "Density: K sandboxes started at once",
            Section::Boot => "VM boot: VMM exec to guest agent ready",
        }
    }

    /// All sections in report order.
    pub const ALL: [Section; 6] = [
        Section::Start,
        Section::Syscall,
        Section::Io,
        Section::Memory,
        Section::Density,
        Section::Boot,
    ];
}

/// A metric's static description.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    /// The id, e.g. `start.oci`.
    pub id: String,
    /// What is measured, for the table's row.
    pub what: String,
    /// Its unit.
    pub unit: Unit,
    /// Its section.
    pub section: Section,
}

/// The fixed metrics (density metrics depend on K: see [`density_ready`] and [`density_rss`]).
pub fn fixed() -> Vec<Info> {
    use Section::*;
    use Unit::*;
    let m = |id: &str, what: &str, unit, section| Info {
        id: id.into(),
        what: what.into(),
        unit,
        section,
    };
    vec![
        m(
            "start.oci",
            "`/bin/true` through the runtime's CLI, create to delete",
            Ms,
            Start,
        ),
        m(
            "start.ctr",
            "`ctr run --rm` of busybox `/bin/true` (containerd)",
            Ms,
            Start,
        ),
        m(
            "start.cri",
            "CRI pod start: sandbox + busybox container running",
            Ms,
            Start,
        ),
        m("syscall.getpid", "getpid, per call", Ns, Syscall),
        m(
            "syscall.openat_close",
            "openat + close of an allowed file, per call",
            Ns,
            Syscall,
        ),
        m(
            "io.rootfs.write",
            "sequential write, container rootfs",
            MibPerS,
            Io,
        ),
        m(
            "io.rootfs.read",
            "sequential read, container rootfs",
            MibPerS,
            Io,
        ),
        m("io.tmpfs.write", "sequential write, tmpfs", MibPerS, Io),
        m("io.tmpfs.read", "sequential read, tmpfs", MibPerS, Io),
        m(
            "memory.rss",
            "host RSS of everything the sandbox runs on the host",
            Mib,
            Memory,
        ),
        m(
            "memory.pss",
            "host PSS (shared pages split between sharers)",
            Mib,
            Memory,
        ),
        m(
            "memory.vmm_overhead",
            "VMM RSS minus the guest RAM it touched",
            Mib,
            Memory,
        ),
        m(
            "boot.ready",
            "VMM exec to agent ready (same kernel and initramfs)",
            Ms,
            Boot,
        ),
        m(
            "boot.floor",
            "VMM exec to VM + vCPU + kernel loaded to exit (no guest run)",
            Ms,
            Boot,
        ),
        m("boot.floor_rss", "peak RSS of that floor run", Mib, Boot),
    ]
}

/// `density.<k>.ready`: time until all K sandboxes answered.
pub fn density_ready(k: usize) -> String {
    format!("density.{k}.ready")
}

/// `density.<k>.rss_per`: host RSS of the K running sandboxes, divided by K.
pub fn density_rss(k: usize) -> String {
    format!("density.{k}.rss_per")
}

/// The description of `id`, including the density ones.
pub fn info(id: &str) -> Option<Info> {
    if let Some(f) = fixed().into_iter().find(|i| i.id == id) {
        return Some(f);
    }
    let rest = id.strip_prefix("density.")?;
    let (k, what) = rest.split_once('.')?;
    let k: usize = k.parse().ok()?;
    let (what, unit) = match what {
        "ready" => (format!("{k} at once: time until all are ready"), Unit::Ms),
        "rss_per" => (format!("{k} at once: host RSS per sandbox"), Unit::Mib),
        _ => return None,
    };
    Some(Info {
        id: id.to_string(),
        what,
        unit,
        section: Section::Density,
    })
}

/// The K of a density metric id.
pub fn density_k(id: &str) -> Option<usize> {
    id.strip_prefix("density.")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn density_ids_round_trip() {
        assert_eq!(density_k(&density_ready(25)), Some(25));
        let i = info(&density_rss(10)).expect("known");
        assert_eq!((i.unit, i.section), (Unit::Mib, Section::Density));
        assert!(info("density.x.ready").is_none() && info("nope").is_none());
        assert_eq!(info("start.oci").map(|i| i.unit), Some(Unit::Ms));
    }
}
