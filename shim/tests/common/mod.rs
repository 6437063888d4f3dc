//! Helpers shared by the shim's end-to-end tests: handler configs in a temp dir, a private
//! containerd with the moat handlers registered, and a look at the running shim processes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moat_backend::BackendKind;
use moat_testkit::containerd::{Cri, Runtime};
use moat_testkit::{Containerd, Options};

/// The runtime type containerd maps to `containerd-shim-moat-v2`.
pub const RUNTIME: &str = "io.containerd.moat.v2";

/// The trace handler's policy in these tests: the default, and `/etc/secret` untouchable.
pub const TRACE_POLICY: &str = "[[paths]]\npath = \"/etc/secret\"\nallow = []\n";

/// Handler configs for the backends this build and host can run, written into `dir`; the others
/// with the reason they cannot run.
pub struct Handlers {
    /// `(kind, config path)` of each usable backend.
    pub usable: Vec<(BackendKind, PathBuf)>,
    /// `(kind, reason)` of each backend that cannot run here.
    pub skipped: Vec<(BackendKind, String)>,
}

impl Handlers {
    /// Writes `<dir>/<kind>.toml` for every backend.
    pub fn write(dir: &Path) -> Handlers {
        let mut h = Handlers {
            usable: Vec::new(),
            skipped: Vec::new(),
        };
        for kind in BackendKind::ALL {
            let text = match kind {
                BackendKind::Ns => "backend = \"ns\"\n".to_string(),
                BackendKind::Trace => {
                    let policy = dir.join("trace-policy.toml");
                    std::fs::write(&policy, TRACE_POLICY).unwrap();
                    format!("backend = \"trace\"\n[trace]\npolicy = {:?}\n", policy)
                }
                BackendKind::Vm => match moat_backend::vm::check::built_artifacts() {
                    Ok((kernel, initramfs)) => format!(
                        "backend = \"vm\"\n[vm]\nkernel = {kernel:?}\ninitramfs = {initramfs:?}\n"
                    ),
                    Err(why) => {
                        h.skipped.push((BackendKind::Vm, why));
                        continue;
                    }
                },
            };
            let p = dir.join(format!("{kind}.toml"));
            std::fs::write(&p, text).unwrap();
            match moat_shim::backends::available(kind) {
                Ok(()) => h.usable.push((kind, p)),
                Err(why) => h.skipped.push((kind, why)),
            }
        }
        for (kind, why) in &h.skipped {
            eprintln!("SKIPPED: backend {kind}: {why}");
        }
        h
    }

    /// The config path of `kind`, if usable.
    pub fn config(&self, kind: BackendKind) -> Option<&Path> {
        self.usable
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.as_path())
    }
}

/// A private containerd; with `cri`, the moat handlers are registered for every usable backend.
pub fn containerd(handlers: &Handlers, cri: bool) -> Containerd {
    let mut opts = Options::default();
    if cri {
        let mut c = Cri::default();
        for (kind, path) in &handlers.usable {
            c.runtimes.push(Runtime::moat(kind.handler(), path));
        }
        opts.cri = Some(c);
        opts.namespace = Some("k8s.io".into());
    }
    let ctd = Containerd::start(opts).unwrap();
    ctd.import_test_images().unwrap();
    ctd
}

/// Pids of the long-lived moat shims serving containerd `ctd` (not `start`/`delete` helpers).
pub fn shim_pids(ctd: &Containerd) -> Vec<u32> {
    shim_processes(ctd, false)
}

/// Pids of the short-lived `start`/`delete` runs of our shim for this containerd.
pub fn shim_helper_pids(ctd: &Containerd) -> Vec<u32> {
    shim_processes(ctd, true)
}

fn shim_processes(ctd: &Containerd, helpers: bool) -> Vec<u32> {
    let want = ctd.address().display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with("containerd-shim-moat-v2"));
        let is_ours = args.windows(2).any(|w| w[0] == "-address" && w[1] == want);
        let helper = args.iter().any(|a| a == "start" || a == "delete");
        if is_shim && is_ours && helper == helpers {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Polls until `f` is true or `timeout` passes; returns whether it became true.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The host's kernel release (`uname -r`).
pub fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}
