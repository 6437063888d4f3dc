//! One `moat bench` run from start to end: find the backends, build the fixture, take every
//! metric (interleaved across backends), hand the VM rows to the rig where this host cannot run
//! them, and write the outputs.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fixture::{Fixture, Limits};
use crate::metrics::{boot, containerd, density, io, memory, start, syscall};
use crate::progress::Progress;
use crate::results::{BackendInfo, Place, Results};
use crate::walls::{self, Kind, Wall};
use crate::{Error, Options, Plan, Result, Written, exec, isolation, machine, report, rig};

/// The state of a run that the metric modules share.
pub struct Bench {
    /// The run's options.
    pub opts: Options,
    /// Repetitions and sizes.
    pub plan: Plan,
    /// Where the walls of this process run.
    pub place: Place,
    /// The static probe binary (the rig's half gets it too).
    pub probe: std::path::PathBuf,
    /// The rootfs and bundles.
    pub fixture: Fixture,
    /// The container walls that passed their trial run, in table order.
    pub walls: Vec<Wall>,
    /// Whether QEMU's reference rows run here.
    pub qemu: bool,
    /// The bar.
    pub progress: Progress,
    /// What was found so far.
    pub results: Results,
}

/// A named step of a run: one kind of metric, taken from every wall.
type Step = (&'static str, fn(&mut Bench));

/// How long one sandbox run may take before it counts as hung.
pub fn limit(place: Place) -> Duration {
    match place {
        Place::Host => Duration::from_secs(120),
        Place::Rig => Duration::from_secs(600),
    }
}

/// Runs the whole comparison and writes the outputs into `opts.out`.
pub fn run(opts: Options) -> Result<Written> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| Error::Io(format!("creating {}", opts.out.display()), e))?;
    let place = if opts.inside_rig {
        Place::Rig
    } else {
        Place::Host
    };
    let plan = Plan::new(opts.quick, opts.inside_rig, opts.runs);
    let probe = moat_artifacts::static_bin::probe().map_err(|e| {
        Error::Setup(format!(
            "the benchmark probe (static moat-bench-probe): {e}; set MOAT_BENCH_PROBE to a static build of it"
        ))
    })?;
    let fixture = Fixture::new(&probe)?;
    let results = Results::new(opts.quick, machine::probe());
    let progress = Progress::new(0, false);
    progress.note(&format!(
        "moat bench{}: {} on {}, results in {}",
        if opts.quick { " --quick" } else { "" },
        walls::names(&opts.backends),
        place.as_str(),
        opts.out.display()
    ));

    // Which walls run here, which in the rig, which not at all (and why).
    let kvm_here = opts.inside_rig || moat_host::kvm::probe().runs_linux_guests();
    let mut here = Vec::new();
    let mut in_rig = Vec::new();
    for &kind in &opts.backends {
        if kind.needs_kvm() && !kvm_here {
            in_rig.push(kind);
        } else {
            here.push(kind);
        }
    }
    let mut bench = Bench {
        walls: Vec::new(),
        qemu: false,
        opts,
        plan,
        place,
        probe,
        fixture,
        progress,
        results,
    };
    for kind in here {
        admit(&mut bench, kind);
    }

    // In metric order; density last, as many VMs at once are what most often takes a rig down.
    // The rig's half saves its results after every step, so a rig that dies mid-run loses only
    // the step it died in.
    let steps: [Step; 8] = [
        ("start", start::oci),
        ("containerd", |b| {
            // Through containerd (ctr and the CRI): on the host for runc, ns and trace (and vm
            // where this host's KVM runs guests), and in the rig's half for vm.
            if b.place == Place::Host || b.walls.iter().any(|w| w.kind == Kind::Vm) {
                containerd::start(b);
            }
        }),
        ("syscall", syscall::cost),
        ("io", io::throughput),
        ("memory", memory::idle),
        ("boot", boot::measure),
        ("isolation", |b| {
            if let Err(e) = isolation::matrix(b) {
                for w in &b.walls {
                    b.results.fail("isolation", w.kind.name(), e.to_string());
                }
            }
        }),
        ("density", density::measure),
    ];
    for (name, step) in steps {
        step(&mut bench);
        if bench.opts.inside_rig
            && let Err(e) = write(&bench.results, &bench.opts.out, true)
        {
            bench
                .progress
                .note(&format!("saving the results after {name}: {e}"));
        }
    }
    if !bench.opts.inside_rig {
        boot::floor(&mut bench);
    }

    if !in_rig.is_empty() {
        rig::measure(&mut bench, &in_rig);
    }
    bench.progress.finish();
    let Bench {
        mut results, opts, ..
    } = bench;
    results.wall_s = started.elapsed().as_secs_f64();
    write(&results, &opts.out, opts.inside_rig)
}

/// Writes `results.json` and, unless this is the rig's half, `results.md` and the plots.
pub fn write(results: &Results, out: &Path, json_only: bool) -> Result<Written> {
    let json = out.join("results.json");
    let text = serde_json::to_string_pretty(results)
        .map_err(|e| Error::Setup(format!("encoding the results: {e}")))?;
    std::fs::write(&json, text + "\n")
        .map_err(|e| Error::Io(format!("writing {}", json.display()), e))?;
    let markdown = out.join("results.md");
    let mut plots = Vec::new();
    if !json_only {
        std::fs::write(&markdown, report::markdown::render(results))
            .map_err(|e| Error::Io(format!("writing {}", markdown.display()), e))?;
        plots = report::plot::write_all(results, out)?;
    }
    Ok(Written {
        json,
        markdown,
        plots,
    })
}

/// Finds `kind`'s binary, and for container walls runs `/bin/true` once: a wall that cannot do
/// that here is recorded with the reason it gave and left out of every metric.
fn admit(bench: &mut Bench, kind: Kind) {
    let place = bench.place;
    let moat = bench.opts.moat.clone();
    let (bin, version) = match kind {
        Kind::Runc | Kind::Crun => match walls::which(kind.name()) {
            Some(b) => {
                let v = walls::version_of(&b);
                (b, v)
            }
            None => {
                bench.results.backends.push(walls::missing(
                    kind,
                    place,
                    format!("{} is not installed (not on PATH)", kind.name()),
                ));
                return;
            }
        },
        Kind::Ns | Kind::Trace | Kind::Vm => {
            let v = format!("moat {}", env!("CARGO_PKG_VERSION"));
            (moat, v)
        }
        Kind::Qemu => {
            let q = moat_artifacts::reference_boot::qemu_binary();
            if !q.is_file() && walls::which(&q.display().to_string()).is_none() {
                bench.results.backends.push(walls::missing(
                    kind,
                    place,
                    format!("QEMU ({}) is not installed", q.display()),
                ));
                return;
            }
            let v = walls::version_of(&q);
            bench.results.backends.push(BackendInfo {
                name: kind.name().into(),
                version: v,
                place,
                usable: true,
                why: None,
            });
            bench.qemu = true;
            return;
        }
    };
    let root = bench.fixture.dir().join(format!("state-{}", kind.name()));
    let wall = Wall {
        kind,
        bin,
        root,
        policy: None,
    };
    let trial = bench
        .fixture
        .bundle(&["/bin/true"], &Limits::default())
        .map_err(|e| e.to_string())
        .and_then(|b| exec::run(&mut wall.run_bundle(&b, "moat-bench-trial"), limit(place)));
    bench.progress.step(&format!("trial run: {}", kind.name()));
    match trial {
        Ok(_) => {
            bench.results.backends.push(BackendInfo {
                name: kind.name().into(),
                version,
                place,
                usable: true,
                why: (place == Place::Rig)
                    .then(|| "measured inside the KVM rig: compare only with rig rows".into()),
            });
            bench.walls.push(wall);
        }
        Err(why) => bench.results.backends.push(walls::missing(
            kind,
            place,
            format!("`/bin/true` failed: {why}"),
        )),
    }
}
