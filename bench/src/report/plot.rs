//! The SVG plots of a `moat bench` run, drawn from [`Results`] alone so that a saved
//! `results.json` can be re-plotted. The tables in `results.md` give the numbers; the plots are
//! there to show their shape at a glance: which backend costs what, how wide the spread is, and
//! how memory and start-up grow with K.
//!
//! Every plot shows medians with whiskers from p10 to p90, keeps one colour per backend across
//! all plots, and marks rows measured inside the nested-virtualisation rig (lighter, hatched,
//! labelled "(rig)") so that they are never read against host rows. This module decides what goes
//! in each plot; [`chart`] lays it out and draws it.

mod chart;
mod scale;
mod style;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chart::{Bar, BarPanel, Figure, Line, LinePanel, Panel};
use scale::Choice;
use style::Series;

use crate::metrics::catalogue;
use crate::results::{Metric, Results, Unit};

/// Errors drawing plots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plot directory could not be created.
    #[error("creating the plot directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// plotters failed to draw a plot.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The plot's file.
        path: PathBuf,
        /// plotters' error.
        message: String,
    },
    /// A plot could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The plot's file.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
}

/// The result of drawing plots.
pub type Result<T> = std::result::Result<T, Error>;

/// Writes every plot the results have data for into `dir`; returns the files written (plots with
/// no data are skipped).
///
/// The plots are `start-latency.svg`, `syscall-cost.svg`, `density-memory.svg`,
/// `density-ready.svg`, `memory.svg`, `io.svg` and `boot.svg`. `dir` is created when there is
/// anything to write.
pub fn write_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>> {
    let figures = figures(results);
    if figures.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(figures.len());
    for (file, figure) in figures {
        let path = dir.join(file);
        let svg = chart::render(&figure).map_err(|message| Error::Draw {
            path: path.clone(),
            message,
        })?;
        std::fs::write(&path, svg).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// The bar panels of each bar plot: (metric id, panel title).
const START: [(&str, &str); 3] = [
    ("start.oci", "OCI CLI: /bin/true, create to delete"),
    ("start.ctr", "containerd: ctr run --rm"),
    ("start.cri", "CRI: pod and container running"),
];
const SYSCALL: [(&str, &str); 2] = [
    ("syscall.getpid", "getpid()"),
    ("syscall.openat_close", "openat() + close()"),
];
const MEMORY: [(&str, &str); 3] = [
    ("memory.rss", "RSS per idle sandbox"),
    ("memory.pss", "PSS per idle sandbox"),
    ("memory.vmm_overhead", "VMM overhead"),
];
const IO: [(&str, &str); 4] = [
    ("io.rootfs.write", "Sequential write, container rootfs"),
    ("io.rootfs.read", "Sequential read, container rootfs"),
    ("io.tmpfs.write", "Sequential write, tmpfs"),
    ("io.tmpfs.read", "Sequential read, tmpfs"),
];
const BOOT: [(&str, &str); 3] = [
    ("boot.ready", "VMM exec to agent ready"),
    ("boot.floor", "Floor: VM, vCPU, kernel loaded"),
    ("boot.floor_rss", "Peak RSS of the floor run"),
];

/// Every figure there is data for, with its file name.
fn figures(r: &Results) -> Vec<(&'static str, Figure)> {
    use catalogue::Section;
    let bars = [
        (
            "start-latency.svg",
            Section::Start.title(),
            &START[..],
            Choice::Auto,
        ),
        (
            "syscall-cost.svg",
            Section::Syscall.title(),
            &SYSCALL[..],
            Choice::Log,
        ),
        (
            "memory.svg",
            Section::Memory.title(),
            &MEMORY[..],
            Choice::Auto,
        ),
        ("io.svg", Section::Io.title(), &IO[..], Choice::Auto),
        ("boot.svg", Section::Boot.title(), &BOOT[..], Choice::Auto),
    ];
    let mut out: Vec<(&'static str, Figure)> = bars
        .into_iter()
        .filter_map(|(file, title, panels, choice)| {
            bar_figure(r, title, panels, choice).map(|f| (file, f))
        })
        .collect();
    let density = [
        (
            "density-memory.svg",
            "rss_per",
            "Density: host RSS per sandbox, K started at once",
            "host RSS per sandbox",
        ),
        (
            "density-ready.svg",
            "ready",
            "Density: time until all K sandboxes are ready",
            "time until all K are ready",
        ),
    ];
    for (file, what, title, axis) in density {
        if let Some(f) = density_figure(r, what, title, axis) {
            out.push((file, f));
        }
    }
    out
}

/// The entries of `metric` worth drawing, one per series, in series order.
fn entries<'a>(r: &'a Results, metric: &str) -> Vec<(Series, &'a Metric)> {
    let mut v: Vec<(Series, &Metric)> = Vec::new();
    for m in r.metrics.iter().filter(|m| m.metric == metric) {
        let s = &m.stats;
        let finite = [s.median, s.p10, s.p90].iter().all(|v| v.is_finite());
        let series = Series::new(&m.backend, m.place);
        // A repeated entry for the same series is a duplicate: the first one counts.
        if finite && s.n > 0 && !v.iter().any(|(x, _)| *x == series) {
            v.push((series, m));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The value axis's name for `unit`.
fn axis_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Ms => "ms",
        Unit::Ns => "ns per call",
        Unit::Mib => "MiB",
        Unit::MibPerS => "MiB/s",
    }
}

/// One bar panel per metric of `panels` that has data; `None` when none has.
fn bar_figure(r: &Results, title: &str, panels: &[(&str, &str)], choice: Choice) -> Option<Figure> {
    let mut units = Vec::new();
    let mut counts = Vec::new();
    let panels: Vec<Panel> = panels
        .iter()
        .filter_map(|(id, panel_title)| {
            let e = entries(r, id);
            let unit = e.first()?.1.unit;
            units.push(unit);
            counts.extend(e.iter().map(|(_, m)| m.stats.n));
            Some(Panel::Bars(BarPanel {
                title: (*panel_title).to_string(),
                id: (*id).to_string(),
                y_label: axis_name(unit).to_string(),
                scale: choice,
                bars: e
                    .into_iter()
                    .map(|(series, m)| Bar {
                        series,
                        stats: m.stats.clone(),
                    })
                    .collect(),
            }))
        })
        .collect();
    if panels.is_empty() {
        return None;
    }
    Some(Figure {
        title: title.to_string(),
        caption: caption(r, "bars: median, whiskers: p10–p90", &counts, &units),
        panels,
    })
}

/// The density figure of `density.<K>.<what>`: a line per series over K; `None` without data.
fn density_figure(r: &Results, what: &str, title: &str, axis: &str) -> Option<Figure> {
    let mut by_k: BTreeMap<usize, String> = BTreeMap::new();
    for m in &r.metrics {
        if let Some(k) = catalogue::density_k(&m.metric)
            && m.metric.rsplit('.').next() == Some(what)
        {
            by_k.insert(k, m.metric.clone());
        }
    }
    let mut lines: Vec<Line> = Vec::new();
    let mut units = Vec::new();
    let mut counts = Vec::new();
    for (k, id) in &by_k {
        for (series, m) in entries(r, id) {
            units.push(m.unit);
            counts.push(m.stats.n);
            let point = (*k as f64, m.stats.clone());
            match lines.iter_mut().find(|l| l.series == series) {
                Some(l) => l.points.push(point),
                None => lines.push(Line {
                    series,
                    points: vec![point],
                }),
            }
        }
    }
    let unit = *units.first()?;
    lines.sort_by(|a, b| a.series.cmp(&b.series));
    let panel = LinePanel {
        title: String::new(),
        x_label: "K: sandboxes started at once".to_string(),
        y_label: format!("{}, {axis}", unit.as_str()),
        scale: Choice::Auto,
        lines,
    };
    Some(Figure {
        title: title.to_string(),
        caption: caption(r, "points: median, whiskers: p10–p90", &counts, &units),
        panels: vec![Panel::Lines(panel)],
    })
}

/// The caption: what the marks are, n, which way is better, and whether it was a quick run.
fn caption(r: &Results, marks: &str, counts: &[usize], units: &[Unit]) -> String {
    let mut s = marks.to_string();
    let lo = counts.iter().min();
    let hi = counts.iter().max();
    match (lo, hi) {
        (Some(lo), Some(hi)) if lo == hi => s.push_str(&format!(", n={lo}")),
        (Some(lo), Some(hi)) => s.push_str(&format!(", n={lo}–{hi}")),
        _ => {}
    }
    let higher = units.iter().any(|u| u.higher_is_better());
    let lower = units.iter().any(|u| !u.higher_is_better());
    match (higher, lower) {
        (true, false) => s.push_str(" · higher is better"),
        (false, true) => s.push_str(" · lower is better"),
        _ => {}
    }
    if r.quick {
        s.push_str(" · quick run (--quick)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{BackendInfo, Machine, Place};

    /// Plausible test data (not a measurement): a few samples per (metric, backend) around
    /// `median`, spread ±`spread` of it.
    fn add(r: &mut Results, metric: &str, backend: &str, place: Place, median: f64) {
        let unit = catalogue::info(metric).map_or(Unit::Ms, |i| i.unit);
        let spread = 0.15;
        let samples: Vec<f64> = (0..9)
            .map(|i| median * (1.0 + spread * (f64::from(i) - 4.0) / 4.0))
            .collect();
        r.add_samples(metric, backend, place, unit, &samples);
    }

    /// A whole run of made-up numbers: runc, crun, ns and trace on the host, vm and qemu in the
    /// rig, K of 5, 10 and 25.
    fn test_results() -> Results {
        let mut r = Results::new(false, Machine::default());
        let host = ["runc", "crun", "ns", "trace"];
        for b in host {
            r.backends.push(BackendInfo {
                name: b.into(),
                version: "test".into(),
                place: Place::Host,
                usable: true,
                why: None,
            });
        }
        for b in ["vm", "qemu"] {
            r.backends.push(BackendInfo {
                name: b.into(),
                version: "test".into(),
                place: Place::Rig,
                usable: true,
                why: Some("in the KVM rig".into()),
            });
        }
        let h = Place::Host;
        let g = Place::Rig;
        for (b, oci, ctr, cri) in [
            ("runc", 48.0, 160.0, 420.0),
            ("crun", 31.0, 140.0, 390.0),
            ("ns", 22.0, 120.0, 350.0),
            ("trace", 36.0, 150.0, 400.0),
        ] {
            add(&mut r, "start.oci", b, h, oci);
            add(&mut r, "start.ctr", b, h, ctr);
            add(&mut r, "start.cri", b, h, cri);
        }
        add(&mut r, "start.oci", "vm", g, 2900.0);
        add(&mut r, "start.ctr", "vm", g, 3400.0);
        add(&mut r, "start.cri", "vm", g, 4800.0);
        for (b, p, getpid, open) in [
            ("runc", h, 55.0, 900.0),
            ("crun", h, 54.0, 880.0),
            ("ns", h, 60.0, 1400.0),
            ("trace", h, 21_000.0, 46_000.0),
            ("vm", g, 380.0, 7_500.0),
            ("qemu", g, 360.0, 7_100.0),
        ] {
            add(&mut r, "syscall.getpid", b, p, getpid);
            add(&mut r, "syscall.openat_close", b, p, open);
        }
        for (b, p, rss, pss) in [
            ("runc", h, 1.6, 0.9),
            ("crun", h, 1.1, 0.6),
            ("ns", h, 2.4, 1.5),
            ("trace", h, 3.1, 2.2),
            ("vm", g, 44.0, 41.0),
            ("qemu", g, 61.0, 57.0),
        ] {
            add(&mut r, "memory.rss", b, p, rss);
            add(&mut r, "memory.pss", b, p, pss);
        }
        add(&mut r, "memory.vmm_overhead", "vm", g, 6.5);
        add(&mut r, "memory.vmm_overhead", "qemu", g, 23.0);
        for (b, p, f) in [
            ("runc", h, 1.0),
            ("crun", h, 1.0),
            ("ns", h, 0.97),
            ("trace", h, 0.6),
            ("vm", g, 0.08),
            ("qemu", g, 0.07),
        ] {
            add(&mut r, "io.rootfs.write", b, p, 1400.0 * f);
            add(&mut r, "io.rootfs.read", b, p, 3900.0 * f);
            add(&mut r, "io.tmpfs.write", b, p, 2600.0 * f);
            add(&mut r, "io.tmpfs.read", b, p, 7800.0 * f);
        }
        for k in [5, 10, 25] {
            let kf = k as f64;
            for (b, p, rss, ready) in [
                ("runc", h, 1.7, 45.0),
                ("crun", h, 1.2, 30.0),
                ("ns", h, 2.5, 25.0),
                ("trace", h, 3.3, 38.0),
                ("vm", g, 46.0, 900.0),
            ] {
                add(
                    &mut r,
                    &catalogue::density_rss(k),
                    b,
                    p,
                    rss * (1.0 + 0.01 * kf),
                );
                add(
                    &mut r,
                    &catalogue::density_ready(k),
                    b,
                    p,
                    ready * kf.sqrt() * 2.0,
                );
            }
        }
        add(&mut r, "boot.ready", "vm", g, 310.0);
        add(&mut r, "boot.ready", "qemu", g, 720.0);
        add(&mut r, "boot.floor", "vm", g, 41.0);
        add(&mut r, "boot.floor", "qemu", g, 180.0);
        r
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }

    /// The text of every `<text>` element of `svg`.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    #[test]
    fn writes_every_plot_with_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("plots");
        let written = write_all(&test_results(), &out).expect("plots");
        assert_eq!(
            names(&written),
            [
                "start-latency.svg",
                "syscall-cost.svg",
                "memory.svg",
                "io.svg",
                "boot.svg",
                "density-memory.svg",
                "density-ready.svg",
            ]
        );
        let expect: [(&str, &str, &[&str]); 7] = [
            (
                "start-latency.svg",
                "Start latency",
                &["runc", "crun", "ns", "trace", "vm"],
            ),
            (
                "syscall-cost.svg",
                "Syscall cost",
                &["runc", "trace", "vm", "qemu"],
            ),
            ("memory.svg", "Host memory", &["runc", "ns", "vm", "qemu"]),
            (
                "io.svg",
                "File I/O",
                &["runc", "crun", "ns", "trace", "vm", "qemu"],
            ),
            ("boot.svg", "VM boot", &["vm", "qemu"]),
            ("density-memory.svg", "RSS per sandbox", &["runc", "vm"]),
            ("density-ready.svg", "all K sandboxes", &["crun", "trace"]),
        ];
        for (file, title, backends) in expect {
            let path = out.join(file);
            assert!(written.contains(&path), "{file}");
            let svg = std::fs::read_to_string(&path).expect("read");
            assert!(svg.trim_start().starts_with("<svg"), "{file}");
            assert!(svg.trim_end().ends_with("</svg>"), "{file}");
            assert!(svg.contains(title), "{file}: title {title}");
            assert!(svg.contains("p10–p90"), "{file}: caption");
            let texts = texts(&svg);
            for b in backends {
                let named = |t: &String| t == b || *t == format!("{b} (rig)");
                assert!(texts.iter().any(named), "{file}: backend {b}");
            }
            // Rig rows are named as such in the legend.
            assert!(svg.contains("vm (rig)"), "{file}: rig label");
            assert!(
                svg.contains("nested-virtualisation rig"),
                "{file}: rig note"
            );
        }
        let syscall = std::fs::read_to_string(out.join("syscall-cost.svg")).expect("read");
        assert!(syscall.contains("(log scale)") && syscall.contains("ns per call"));
    }

    #[test]
    fn plots_without_data_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("plots");
        let written = write_all(&Results::default(), &out).expect("plots");
        assert!(written.is_empty());
        assert!(!out.exists(), "nothing to plot creates nothing");

        let mut r = Results::default();
        add(&mut r, "boot.ready", "vm", Place::Host, 120.0);
        let written = write_all(&r, &out).expect("plots");
        assert_eq!(names(&written), ["boot.svg"]);
        let svg = std::fs::read_to_string(&written[0]).expect("read");
        assert!(!svg.contains("(rig)") && !svg.contains("nested-virtualisation"));
    }

    #[test]
    fn unwritable_directory_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("write");
        let mut r = Results::default();
        add(&mut r, "start.oci", "runc", Place::Host, 40.0);
        let err = write_all(&r, &file).expect_err("a file is not a directory");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }

    #[test]
    fn caption_counts_and_direction() {
        let r = Results::default();
        assert_eq!(
            caption(&r, "m", &[5, 9], &[Unit::MibPerS]),
            "m, n=5–9 · higher is better"
        );
        assert_eq!(
            caption(&r, "m", &[7, 7], &[Unit::Ms]),
            "m, n=7 · lower is better"
        );
    }

    /// A sparse run: host rows only, one K, single samples (no whiskers to draw), an unknown
    /// backend and a negative value.
    fn sparse_results() -> Results {
        let mut r = Results::new(true, Machine::default());
        let h = Place::Host;
        add(&mut r, "start.oci", "runc", h, 45.0);
        add(&mut r, "start.oci", "crun", h, 30.0);
        r.add_samples("syscall.getpid", "ns", h, Unit::Ns, &[58.0]);
        r.add_samples(&catalogue::density_rss(10), "ns", h, Unit::Mib, &[2.5]);
        r.add_samples(&catalogue::density_ready(10), "ns", h, Unit::Ms, &[90.0]);
        add(&mut r, "boot.ready", "vm", h, 120.0);
        add(&mut r, "io.tmpfs.read", "some-new-backend", h, 5000.0);
        // A VMM can touch less than the guest's RAM: a negative overhead.
        add(&mut r, "memory.vmm_overhead", "vm", h, -3.0);
        add(&mut r, "memory.vmm_overhead", "qemu", h, 12.0);
        r
    }

    #[test]
    fn sparse_results_still_plot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_all(&sparse_results(), dir.path()).expect("plots");
        assert_eq!(written.len(), 7, "{:?}", names(&written));
        let io = std::fs::read_to_string(dir.path().join("io.svg")).expect("read");
        assert!(texts(&io).iter().any(|t| t == "some-new-backend"));
    }

    /// Renders the test data into `$MOAT_BENCH_PLOT_DIR` (and the sparse run into `sparse/`
    /// under it) for looking at; does nothing when that is unset.
    #[test]
    fn render_for_review() {
        if let Some(dir) = std::env::var_os("MOAT_BENCH_PLOT_DIR") {
            let dir = Path::new(&dir);
            write_all(&test_results(), dir).expect("plots");
            write_all(&sparse_results(), &dir.join("sparse")).expect("plots");
        }
    }
}
