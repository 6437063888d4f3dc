//! `results.md`: the machine, the backends (and why any is missing), one table per section with
//! a column per backend — median, p10–p90 and n, and the ratio to runc (host rows) or to QEMU (rig
//! rows) — the isolation matrix, and every measurement that failed.

use std::fmt::Write;

use crate::metrics::catalogue::{self, Section};
use crate::results::{Metric, Place, Results};

/// The report as Markdown.
pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# moat bench\n");
    let _ = writeln!(
        s,
        "{} run, {:.0} s. Medians of interleaved repetitions; `p10–p90` and `n` beside each. \
         Ratios are to runc for rows measured on this host, and to QEMU for rows measured in the \
         KVM rig (nested virtualisation, many times slower: compare rig rows only with rig rows).\n",
        if r.quick { "A `--quick`" } else { "A full" },
        r.wall_s
    );
    machine(&mut s, r);
    backends(&mut s, r);
    let cols = columns(r);
    for section in Section::ALL {
        table(&mut s, r, &cols, section);
    }
    isolation(&mut s, r, &cols);
    failures(&mut s, r);
    s
}

fn machine(s: &mut String, r: &Results) {
    let m = &r.machine;
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| CPU | CPUs | memory | kernel | /dev/kvm | cgroups |");
    let _ = writeln!(s, "|---|---:|---:|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} MiB | {} | {} | {} |",
        m.cpu, m.cpus, m.memory_mib, m.kernel, m.kvm, m.cgroups
    );
    if let Some(rig) = &m.rig {
        let _ = writeln!(
            s,
            "\nRig rows ran in the KVM rig's L1: {} vCPUs of an emulated {}, kernel {} \
             (QEMU TCG, kvm_amd).",
            rig.cpus, rig.cpu, rig.kernel
        );
    }
    s.push('\n');
}

fn backends(s: &mut String, r: &Results) {
    let _ = writeln!(s, "## Backends\n");
    let _ = writeln!(s, "| backend | version | where | status |");
    let _ = writeln!(s, "|---|---|---|---|");
    for b in &r.backends {
        let status = match (b.usable, &b.why) {
            (true, None) => "measured".to_string(),
            (true, Some(w)) => format!("measured; {w}"),
            (false, w) => format!("**not measured**: {}", w.as_deref().unwrap_or("unknown")),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            b.name,
            cell_text(&b.version),
            b.place.as_str(),
            cell_text(&status)
        );
    }
    s.push('\n');
}

/// The backend columns: the usable backends, in the order the run listed them.
/// Host columns first, then rig columns, for every backend with a row at that place (a backend
/// that could not run in the rig may still have its host rows); a backend measured in both places (`vm`: its boot floor
/// on the host, the rest in the rig) gets a column in each.
fn columns(r: &Results) -> Vec<(String, Place)> {
    let mut cols = Vec::new();
    for place in [Place::Host, Place::Rig] {
        for b in &r.backends {
            let col = (b.name.clone(), place);
            let measured = (b.usable && b.place == place)
                || r.metrics
                    .iter()
                    .any(|m| m.backend == b.name && m.place == place);
            if measured && !cols.contains(&col) {
                cols.push(col);
            }
        }
    }
    cols
}

fn header(name: &str, place: Place) -> String {
    match place {
        Place::Host => name.to_string(),
        Place::Rig => format!("{name} (rig)"),
    }
}

fn table(s: &mut String, r: &Results, cols: &[(String, Place)], section: Section) {
    let mut ids: Vec<String> = r
        .metrics
        .iter()
        .filter(|m| catalogue::info(&m.metric).is_some_and(|i| i.section == section))
        .map(|m| m.metric.clone())
        .collect();
    ids.sort_by_key(|id| order(id));
    ids.dedup();
    if ids.is_empty() {
        return;
    }
    let used: Vec<&(String, Place)> = cols
        .iter()
        .filter(|(b, p)| ids.iter().any(|id| r.metric_at(id, b, *p).is_some()))
        .collect();
    let _ = writeln!(s, "## {}\n", section.title());
    let _ = write!(s, "| metric |");
    for (b, p) in &used {
        let _ = write!(s, " {} |", header(b, *p));
    }
    let _ = write!(s, "\n|---|");
    for _ in &used {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for id in &ids {
        let Some(info) = catalogue::info(id) else {
            continue;
        };
        let _ = write!(s, "| {} ({}) |", info.what, info.unit.as_str());
        for (b, p) in &used {
            let cell = r
                .metric_at(id, b, *p)
                .map_or_else(|| "–".to_string(), |m| value_cell(r, m));
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s.push('\n');
}

/// Sort key: the catalogue's order, density by K.
fn order(id: &str) -> (usize, usize, String) {
    let fixed = catalogue::fixed();
    match fixed.iter().position(|i| i.id == id) {
        Some(p) => (p, 0, String::new()),
        None => (
            fixed.len(),
            catalogue::density_k(id).unwrap_or(0),
            id.to_string(),
        ),
    }
}

/// `142 (130–160, n=10) · 0.63x runc`.
fn value_cell(r: &Results, m: &Metric) -> String {
    let st = &m.stats;
    let mut c = format!(
        "{} ({}–{}, n={})",
        num(st.median),
        num(st.p10),
        num(st.p90),
        st.n
    );
    let base = match m.place {
        Place::Host => "runc",
        Place::Rig => "qemu",
    };
    if m.backend != base
        && let Some(b) = r
            .metric_at(&m.metric, base, m.place)
            .filter(|b| b.stats.median > 0.0)
    {
        let _ = write!(c, " · {:.2}x {base}", m.stats.median / b.stats.median);
    }
    c
}

/// A number with sensible precision.
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn isolation(s: &mut String, r: &Results, cols: &[(String, Place)]) {
    if r.isolation.is_empty() {
        return;
    }
    let used: Vec<&(String, Place)> = cols
        .iter()
        .filter(|(b, place)| {
            r.isolation
                .iter()
                .any(|p| &p.backend == b && p.place == *place)
        })
        .collect();
    let mut probes: Vec<&str> = Vec::new();
    for p in &r.isolation {
        if !probes.contains(&p.probe.as_str()) {
            probes.push(&p.probe);
        }
    }
    let _ = writeln!(s, "## Isolation, as observed inside each sandbox\n");
    let _ = writeln!(
        s,
        "Each cell is what `moat-bench-probe isolation` saw happen in that sandbox (64 MiB memory \
         limit, 100 processes): **held** means the attempt failed or saw nothing of the host, \
         **open** that it succeeded or saw the host.\n"
    );
    let _ = write!(s, "| probe |");
    for (b, p) in &used {
        let _ = write!(s, " {} |", header(b, *p));
    }
    let _ = write!(s, "\n|---|");
    for _ in &used {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    for probe in probes {
        let _ = write!(s, "| `{probe}` |");
        for (b, place) in &used {
            let cell = r
                .isolation
                .iter()
                .find(|p| p.probe == probe && &p.backend == b && p.place == *place)
                .map_or_else(
                    || "–".to_string(),
                    |p| {
                        let verdict = match p.isolated {
                            Some(true) => "**held**",
                            Some(false) => "**open**",
                            None => "?",
                        };
                        format!("{verdict}: {}", cell_text(&p.observed))
                    },
                );
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s.push('\n');
}

fn failures(s: &mut String, r: &Results) {
    if r.failures.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Not measured\n");
    for f in &r.failures {
        let _ = writeln!(
            s,
            "- `{}` on {}: {}",
            f.metric,
            f.backend,
            cell_text(&f.why)
        );
    }
    s.push('\n');
}

/// Text safe inside a table cell.
fn cell_text(t: &str) -> String {
    t.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{BackendInfo, ProbeResult, Unit};

    fn results() -> Results {
        let mut r = Results::new(true, Default::default());
        for (name, place) in [
            ("runc", Place::Host),
            ("ns", Place::Host),
            ("vm", Place::Rig),
        ] {
            r.backends.push(BackendInfo {
                name: name.into(),
                version: "v".into(),
                place,
                usable: true,
                why: None,
            });
        }
        r.backends.push(BackendInfo {
            name: "crun".into(),
            version: String::new(),
            place: Place::Host,
            usable: false,
            why: Some("crun refused | hybrid cgroups".into()),
        });
        r.add_samples("start.oci", "runc", Place::Host, Unit::Ms, &[20.0, 22.0]);
        r.add_samples("start.oci", "ns", Place::Host, Unit::Ms, &[10.0, 12.0]);
        r.add_samples("start.oci", "vm", Place::Rig, Unit::Ms, &[9000.0]);
        r.isolation.push(ProbeResult {
            probe: "kernel".into(),
            backend: "vm".into(),
            place: Place::Rig,
            isolated: Some(true),
            observed: "6.12.0".into(),
        });
        r
    }

    #[test]
    fn tables_show_medians_ratios_and_missing_backends() {
        let md = render(&results());
        assert!(md.contains("| runc | ns | vm (rig) |"), "{md}");
        assert!(md.contains("11.0 (10.2–11.8, n=2) · 0.52x runc"), "{md}");
        assert!(
            md.contains("**not measured**: crun refused \\| hybrid cgroups"),
            "{md}"
        );
        // Only backends that ran the probe get a column.
        assert!(md.contains("| probe | vm (rig) |"), "{md}");
        assert!(md.contains("| `kernel` | **held**: 6.12.0 |"), "{md}");
        assert!(!md.contains("Not measured"), "no failures were recorded");
    }
}
